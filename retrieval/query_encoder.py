"""A question's embedding on ONNX Runtime, beside the torch model that embeds documents.

Why: torch's thread count is one setting for the whole process (the document batches of an
ingest, and the hf engine when it runs in the same process, want every core), and its
OpenMP threads wait at every barrier for a thread that was descheduled: a question embedded
while anything else used a core (another question, an ingest, the LLM engine, other
processes) took p50 15 ms and p99 172 ms with torch's two threads on this 2-core machine with
one core kept busy, against 5 ms quiet. ONNX Runtime gives each session its own thread pool;
with one thread per core and spinning off (`session.intra_op.allow_spinning` 0: an idle
worker sleeps instead of burning the core another thread needs), the same question took p50
4.3 ms quiet and 5.5 ms with one core busy (one thread: 5.5 / 5.3 ms; two spinning threads:
3.2 / 8.4 ms). In fp32 it agrees with torch fp32 to a cosine of 0.99999.

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
import os
import warnings
from typing import Any

import numpy as np

OPSET = 17
SAMPLE_QUESTION = "How long is the warranty of the pump?"


class OnnxQueryEncoder:
    """Embeds one text at a time; thread-safe (concurrent calls run in parallel)."""

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
        options.intra_op_num_threads = os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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
