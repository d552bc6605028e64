"""Ingest as a pipeline: embedding (the cost) never waits for segmentation or the store.

The chunks of a document go through in batches. This thread embeds batch after
batch; one worker thread segments every batch (jieba, in Python) and writes each
embedded batch to the store while the next one is being embedded. torch releases
the GIL inside its kernels, so on two cores the embedding keeps its pace.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from chatllm.retrieval.embedder import Embedder
from chatllm.retrieval.lexical import tokenize

WRITE_BATCH = 64  # chunks per embedding call and per store insert

WriteBatch = Callable[[int, Sequence[str], list[list[str]], np.ndarray], None]


def embed_and_write(
    chunks: Sequence[str], embedder: Embedder, write: WriteBatch, workers: ThreadPoolExecutor, batch: int = WRITE_BATCH
) -> tuple[list[list[str]], np.ndarray]:
    """Segment, embed and `write(first_index, texts, terms, vectors)` every batch; the terms and vectors of all.

    `workers` is long-lived (a thread per document cost ~4 ms). Its queue is FIFO and every batch's
    segmentation is submitted before its write, so a write never waits on a task that has not started."""
    batches = [(start, chunks[start : start + batch]) for start in range(0, len(chunks), batch)]
    segmented = [workers.submit(_segment, texts) for _, texts in batches]
    written: list[Future[None]] = []
    vectors = []
    for (start, texts), terms in zip(batches, segmented, strict=True):
        if written and written[-1].done() and written[-1].exception() is not None:
            break  # the store failed: stop embedding, report it below
        embedded = embedder.encode(texts)
        vectors.append(embedded)
        written.append(workers.submit(_write, write, start, texts, terms, embedded))
    for done in written:
        done.result()
    all_terms = [t for future in segmented for t in future.result()]
    stacked = np.vstack(vectors) if vectors else np.zeros((0, embedder.dimension), dtype=np.float32)
    return all_terms, stacked


def _segment(texts: Sequence[str]) -> list[list[str]]:
    return [tokenize(t, for_index=True) for t in texts]


def _write(
    write: WriteBatch, start: int, texts: Sequence[str], terms: Future[list[list[str]]], vectors: np.ndarray
) -> None:
    write(start, texts, terms.result(), vectors)
