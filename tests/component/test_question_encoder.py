"""Questions embedded on ONNX Runtime (the real all-MiniLM-L6-v2 model) agree with the torch model
the documents go through, concurrently and in any language; `torch` and a failed export fall back."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from chatllm.retrieval.embedder import Embedder
from chatllm.retrieval.errors import RetrievalError
from chatllm.retrieval.query_encoder import OnnxQueryEncoder

pytestmark = pytest.mark.model  # the real embedder

QUESTIONS = [
    "How long is the warranty of the pump?",
    "What is the capital of France?",
    "泵的保修期是多久？",
    "x",
    "A much longer question that goes on for a while about pumps, valves, pipes and the many ways "
    "they fail in winter when the water freezes inside them and nobody drained the system.",
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(question_runtime="onnx")


def test_questions_run_on_onnx_runtime_and_agree_with_the_document_path(embedder: Embedder) -> None:
    assert embedder.question_runtime == "onnxruntime"
    documents = embedder.encode(QUESTIONS)  # the batched torch path the stored chunks take
    for text, document in zip(QUESTIONS, documents, strict=True):
        onnx = embedder.encode_query(text)
        torch = embedder.encode_query_with_torch(text)
        assert onnx.dtype == np.float32 and onnx.shape == (embedder.dimension,)
        assert abs(float(np.linalg.norm(onnx)) - 1.0) < 1e-5
        assert float(onnx @ torch) > 0.999, text
        assert float(onnx @ document) > 0.999, text
    # Different questions stay different: the vectors are not all one constant.
    first, second = (embedder.encode_query(q) for q in QUESTIONS[:2])
    assert float(first @ second) < 0.9


def test_concurrent_questions_get_their_own_answers(embedder: Embedder) -> None:
    alone = {q: embedder.encode_query(q) for q in QUESTIONS}
    asked = QUESTIONS * 8
    with ThreadPoolExecutor(8) as pool:
        futures = [embedder.encode_query_soon(q) for q in asked]
        direct = list(pool.map(embedder.encode_query, asked))
    for text, future, vector in zip(asked, futures, direct, strict=True):
        assert np.allclose(future.result(), alone[text], atol=1e-5)
        assert np.allclose(vector, alone[text], atol=1e-5)


def test_torch_runtime_is_honoured() -> None:
    embedder = Embedder(question_runtime="torch")
    assert embedder.question_runtime == "torch"
    future = embedder.encode_query_soon(QUESTIONS[0])
    assert future.done()
    assert np.allclose(future.result(), embedder.encode_query_with_torch(QUESTIONS[0]), atol=1e-6)


def test_an_export_that_fails_falls_back_or_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_export(self: OnnxQueryEncoder, *args: object) -> None:
        raise RuntimeError("the exporter cannot trace this architecture")

    monkeypatch.setattr(OnnxQueryEncoder, "_export", broken_export)
    assert Embedder(question_runtime="auto").question_runtime == "torch"
    with pytest.raises(RetrievalError, match=r"cannot run .* on ONNX Runtime: the exporter cannot trace"):
        Embedder(question_runtime="onnx")
