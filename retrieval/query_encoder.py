"""A question's embedding on ONNX Runtime with one thread, beside the torch model that embeds documents.

Why: a question is ~15 tokens, so its forward pass is a chain of small matrix products
that a second thread barely speeds up, and torch's thread count is one setting for the
whole process (the document batches of an ingest, and the hf engine when it runs in the
same process, want every core). With two OpenMP threads, a question embedded while
anything else used a core (another question, an ingest, the LLM engine, other
processes) waited at every barrier for the descheduled thread: on this 2-core machine
under load, p50 68 ms and p99 631 ms with two threads against 16 / 40 ms with one, and
about the same with either on a quiet machine. ONNX Runtime gives each session its own
thread pool, so questions run on one thread each (concurrent questions spread over the
cores) without touching torch's setting, and in fp32 it was faster than torch's bf16 on
one thread here (6.7 vs 8.6 ms p50 under the same load), agreeing with torch fp32 to a
cosine of 0.99999.

Only the transformer runs here; the sentence-transformers modules after it (pooling,
dense layers, normalisation) run in torch as they do for documents, so any model's
head is applied as its own configuration says. The graph (fp32, dynamic batch and
sequence axes) is exported in memory at start-up, about a second for the default
model. Why not sentence-transformers' own `backend="onnx"`: it needs `optimum`, whose
releases pin transformers ranges of their own, and it would run the document batches
on ONNX Runtime as well, where bf16 torch is about twice as fast on this CPU.
"""

from __future__ import annotations

import copy
import io
import warnings
from typing import Any

import numpy as np

OPSET = 17
SAMPLE_QUESTION = "How long is the warranty of the pump?"


class OnnxQueryEncoder:
    """Embeds one text at a time; thread-safe (concurrent calls run in parallel, one thread each)."""

    def __init__(self, model: Any) -> None:
        import onnxruntime
        import torch

        features = model.preprocess([SAMPLE_QUESTION])
        self._inputs = [k for k, v in features.items() if isinstance(v, torch.Tensor)]
        self._model = model
        self._transformer = model[0]
        self._head = list(model)[1:]
        self._dtype = next(model.parameters()).dtype  # a head with weights (a Dense layer) wants its own
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        graph = io.BytesIO()
        self._export(copy.deepcopy(self._transformer).float().eval(), features, graph)
        self._session = onnxruntime.InferenceSession(graph.getvalue(), options, providers=["CPUExecutionProvider"])
        self._output = self._session.get_outputs()[0].name

    def encode(self, text: str) -> np.ndarray:
        """The unit vector of `text` (float32)."""
        import torch

        features: dict[str, Any] = self._model.preprocess([text])
        feed = {k: features[k].numpy().astype(np.int64) for k in self._inputs}
        (hidden,) = self._session.run([self._output], feed)
        features[self._transformer.module_output_name] = torch.from_numpy(hidden).to(self._dtype)
        with torch.inference_mode():
            for module in self._head:
                features = module(features)
            vector = torch.nn.functional.normalize(features["sentence_embedding"][0].float(), dim=0)
        return vector.numpy()

    def _export(self, transformer: Any, features: dict[str, Any], target: Any) -> None:
        import torch

        names = self._inputs
        output = transformer.module_output_name

        class Wrapper(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.transformer = transformer

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                return self.transformer(dict(zip(names, tensors, strict=True)))[output]

        axes = {name: {0: "batch", 1: "tokens"} for name in [*names, output]}
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python values in the model's code
            torch.onnx.export(
                Wrapper(),
                tuple(features[k] for k in names),
                target,
                input_names=names,
                output_names=[output],
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
