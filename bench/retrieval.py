"""Knowledge-base benchmark: relevance, ingest throughput, retrieval latency and start-up at 10k/100k chunks.

1. Quality on the labelled sets in tests/data, default configuration: recall@3 fused and
   per leg; the fused score of each answering chunk and the top score of each off-topic
   question, and the relevance threshold those put where (`--kb-min-score`'s default).
2. Ingest: the same generated English documents through the whole ingest (parse, split,
   segment, embed, write, commit) and, in the same run, through bare
   `SentenceTransformer.encode` of the same chunks (same model, same precision). The ratio
   says what the pipeline costs on top of the embedding model.
3. Latency: knowledge bases of 10k and 100k chunks (generated English and Chinese text),
   written through the store and indexed as an ingest would. Their vectors are mixtures of
   2,000 real embeddings of such chunks plus noise: the neighbourhood structure of real
   embeddings without embedding 100k chunks per run (uniformly random vectors have none:
   every chunk is about equally far from every question, and "exact top 10" is noise).
   Questions are embedded for real. Then a restart (start-up time: open the store, load the saved
   indexes), then p50/p99 of the whole `retrieve` and of each part, dense recall@10 of the
   HNSW index against exact search over the same vectors, and milvus-lite's own search
   (what the dense leg used before) on the same collection.

    .venv/bin/python bench/retrieval.py [--sizes 10000 100000] [--queries 200] [--ingest-docs 40]
    taskset -c 0 .venv/bin/python bench/retrieval.py --name retrieval-1core   # the same on one core
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import percentile
from bench.retrieval_report import write_report
from chatllm.kernel.config import Config
from chatllm.retrieval.evaluation import (
    documents,
    load_off_topic,
    load_questions,
    off_topic_rejection,
    one_leg,
    recall_at_k,
)
from chatllm.retrieval.knowledge_bases import KnowledgeBases
from chatllm.retrieval.lexical import join_terms, tokenize
from chatllm.retrieval.loaders import load_document
from chatllm.retrieval.store import ChunkRow, DocumentRecord, chunk_key
from chatllm.server.knowledge import open_knowledge_bases

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
EN_WORDS = (
    "pump valve sensor crew hall inspection pressure filter motor cable relay panel schedule shift report "
    "battery charger firmware router antenna signal warranty invoice travel hotel budget policy leave "
    "manager badge password network printer ticket incident backup server storage license contract"
).split()
ZH_WORDS = (
    "水泵 阀门 传感器 班组 车间 巡检 压力 过滤器 电机 电缆 继电器 面板 排班 报告 电池 充电器 固件 路由器 "
    "天线 信号 保修 发票 差旅 酒店 预算 制度 年假 经理 工牌 密码 网络 打印机 工单 故障 备份 服务器 存储 合同"
).split()
WARM_UP_QUERIES = 30
MILVUS_LITE_QUERIES = 40  # its own search is slow; fewer samples are enough
BASE_EMBEDDINGS = 2000
EF_SEARCH_SWEEP = (32, 64, 128, 192, 256)


def sentence(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return "".join(rng.choices(ZH_WORDS, k=rng.randint(6, 14))) + "。"
    words = rng.choices(EN_WORDS, k=rng.randint(8, 16))
    return f"{' '.join(words).capitalize()} {rng.randint(1, 999)}."


def document_text(rng: random.Random, sentences: int) -> str:
    paragraphs = [" ".join(sentence(rng) for _ in range(5)) for _ in range(sentences // 5)]
    return "\n\n".join(paragraphs)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples, 50) * 1000, "p99_ms": percentile(samples, 99) * 1000}


# --- 1. quality ----------------------------------------------------------------------
def open_stored(config: Config, name: str, embedder: Any = None) -> KnowledgeBases:
    """The knowledge bases of a milvus-lite file `name` in the data dir."""
    kb = config.replace(milvus_uri=str(Path(config.common.data_dir) / name)).kb
    return open_knowledge_bases(kb, config.common.kb_dir, embedder)


def bench_quality(config: Config) -> dict[str, Any]:
    knowledge = open_stored(config, "quality.db")
    recall, answers, off_topic, rejection = [], [], [], []
    for name in ("en", "zh"):
        folder = DATA / f"kb_{name}"
        for path in documents(folder):
            knowledge.ingest(name, path.name, path.read_bytes())
        questions = load_questions(folder)
        # The threshold is on the fused score: a leg alone is measured without it.
        retrievers = {"dense+lexical": lambda q, k, n=name: knowledge.retrieve(n, q, k)}
        retrievers |= {leg: one_leg(knowledge, name, leg) for leg in ("dense", "lexical")}
        for legs, retrieve in retrievers.items():
            report = recall_at_k(retrieve, questions, k=3)
            recall.append({"set": name, "legs": legs, "questions": report.questions, "recall": report.recall})
        for q in questions:
            ranked = knowledge.ranked(name, q.question, 3)
            scores = [f.score for f, c in ranked if c.file == q.file and q.evidence in c.text]
            answers.append({"set": name, "question": q.question, "score": max(scores, default=0.0)})
        for question in load_off_topic(folder):
            ranked = knowledge.ranked(name, question, 3)
            off_topic.append({"set": name, "question": question, "score": ranked[0][0].score if ranked else 0.0})
        report = off_topic_rejection(lambda q, k, n=name: knowledge.retrieve(n, q, k), load_off_topic(folder))
        rejection.append({"set": name, "questions": report.questions, "rejected": report.rejected})
    knowledge.close()
    highest_off_topic = max(o["score"] for o in off_topic)
    lowest_answer = min(a["score"] for a in answers)
    return {
        "recall": recall,
        "answers": answers,
        "off_topic": off_topic,
        "rejection": rejection,
        "highest_off_topic": highest_off_topic,
        "lowest_answer": lowest_answer,
        "midpoint": (highest_off_topic + lowest_answer) / 2,
        "min_score": config.kb.kb_min_score,
    }


# --- 2. ingest -----------------------------------------------------------------------
def bench_ingest(knowledge: KnowledgeBases, docs: int, rng: random.Random, sentences: int) -> dict[str, Any]:
    """Document by document, the full ingest and a bare encode of the same chunks, so both legs see the
    same background load. Which goes first alternates: the first torch call after other Python work
    (splitting the next document) is ~10% slower than one right after another, so a fixed order
    charges that to one leg only (measured: ingest first 0.88x, encode first 1.05x, same code)."""
    texts = [document_text(rng, sentences).replace("。", ". ") for _ in range(docs + 1)]
    english = ["".join(ch for ch in t if ord(ch) < 128) for t in texts]  # the default model reads English
    model = knowledge.embedder._model  # the very SentenceTransformer (and precision) the pipeline uses
    ingest_seconds = encode_seconds = 0.0
    chunks = 0
    for i, text in enumerate(english):
        loaded = load_document(f"doc{i}.txt", text.encode())
        pieces = knowledge.splitter.split(loaded.text, loaded.kind)

        def ingest(t: str = text, n: int = i) -> Any:
            return knowledge.ingest(f"ingest{sentences}", f"d{n}.txt", t.encode())

        def encode(p: list[str] = pieces) -> Any:
            return model.encode(p, batch_size=32, show_progress_bar=False)

        if i % 2:
            _, encode_time = timed(encode)
        result, ingest_time = timed(ingest)
        if not i % 2:
            _, encode_time = timed(encode)
        assert result.chunks == len(pieces)
        if i == 0:
            continue  # warm-up
        ingest_seconds += ingest_time
        encode_seconds += encode_time
        chunks += len(pieces)
    return {
        "documents": docs,
        "sentences_per_document": sentences,
        "chunks": chunks,
        "precision": knowledge.embedder.precision,
        "ingest_seconds": ingest_seconds,
        "ingest_chunks_per_second": chunks / ingest_seconds,
        "encode_seconds": encode_seconds,
        "encode_chunks_per_second": chunks / encode_seconds,
    }


# --- 3. latency and start-up -----------------------------------------------------------
def corpus_vectors(base: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Unit vectors, each a random mixture of two real chunk embeddings plus noise."""
    generator = np.random.default_rng(seed)
    first, second = generator.integers(0, len(base), count), generator.integers(0, len(base), count)
    weight = generator.uniform(0.5, 1.0, (count, 1)).astype(np.float32)
    noise = generator.standard_normal((count, base.shape[1]), dtype=np.float32) * (0.3 / np.sqrt(base.shape[1]))
    vectors = weight * base[first] + (1 - weight) * base[second] + noise
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fill(
    knowledge: KnowledgeBases, name: str, chunks: int, rng: random.Random, base: np.ndarray
) -> tuple[float, np.ndarray, list[str]]:
    """Write `chunks` generated chunks as committed documents of 100 chunks, indexed as an ingest indexes
    them. Returns the seconds, the vectors and their keys (for exact search)."""
    all_vectors, all_keys = [], []
    started = time.perf_counter()
    for start in range(0, chunks, 100):
        document_id, generation = uuid.uuid4().hex * 2, uuid.uuid4().hex
        texts = [" ".join(sentence(rng) for _ in range(4)) for _ in range(min(100, chunks - start))]
        vectors = corpus_vectors(base, len(texts), start)
        terms = [tokenize(t, for_index=True) for t in texts]
        rows = [
            ChunkRow(document_id, generation, i, f"doc{start}.txt", t, join_terms(tt), v)
            for i, (t, tt, v) in enumerate(zip(texts, terms, vectors, strict=True))
        ]
        knowledge.store.insert_chunks(name, rows)
        record = DocumentRecord(name, document_id, generation, f"doc{start}.txt", len(rows), 0, 0, time.time())
        knowledge.store.commit_document(record)
        knowledge._committed.setdefault(name, {})[document_id] = record
        keys = [chunk_key(document_id, generation, i) for i in range(len(rows))]
        knowledge.indexes(name).add(keys, terms, vectors, texts)
        all_vectors.append(vectors)
        all_keys += keys
    knowledge.store.flush(name)
    knowledge.save_snapshot(name)
    return time.perf_counter() - started, np.vstack(all_vectors), all_keys


def bench_size(config: Config, size: int, queries: int, rng: random.Random, base: np.ndarray) -> dict[str, Any]:
    knowledge = open_stored(config, f"lat{size}.db")
    fill_seconds, vectors, keys = fill(knowledge, "big", size, rng, base)
    embedder, settings = knowledge.embedder, knowledge.settings
    knowledge.close()
    # A restart: what a server start-up costs at this size (open the store, load the saved indexes).
    restarted, startup_seconds = timed(lambda: open_stored(config, f"lat{size}.db", embedder))
    asked = [sentence(rng) for _ in range(queries)]
    _, first_query_seconds = timed(lambda: restarted.retrieve("big", asked[0], 3))
    for q in asked[:WARM_UP_QUERIES]:
        restarted.retrieve("big", q, 3)
    row = {
        "chunks": size,
        "fill_seconds": fill_seconds,
        "startup_seconds": startup_seconds,
        "first_query_seconds": first_query_seconds,
        "hnsw": vars(settings.hnsw),
    }
    row["rss_mib"] = psutil.Process().memory_info().rss / 2**20  # the whole process, model included
    row |= measure(restarted, asked)
    row["dense_recall_at_10"] = dense_recall(restarted, asked, vectors, keys)
    row["ef_search_sweep"] = ef_search_sweep(restarted, asked, vectors, keys)
    lite_vectors = [embedder.encode_query(q) for q in asked[:MILVUS_LITE_QUERIES]]
    row["milvus_lite_search"] = summary(
        [timed(lambda v=v: restarted.store.search("big", v, 20))[1] for v in lite_vectors]
    )
    restarted.close()
    print(f"latency at {size}: {row}", flush=True)
    return row


def measure(knowledge: KnowledgeBases, asked: list[str]) -> dict[str, Any]:
    """Each question through the whole retrieve and through each part alone, interleaved so that all
    parts see the same background load."""
    indexes = knowledge.indexes("big")
    assert indexes.dense is not None
    parts: dict[str, Callable[[str], Any]] = {
        "retrieve": lambda q: knowledge.retrieve("big", q, 3),
        "query_embedding": lambda q: knowledge.embedder.encode_query(q),
        "lexical": lambda q: indexes.lexical.scores(tokenize(q)).top(20),
    }
    samples: dict[str, list[float]] = {name: [] for name in [*parts, "dense", "texts", "milvus_lite_get"]}
    for query in asked:
        for name, part in parts.items():
            result, seconds = timed(lambda f=part, q=query: f(q))
            samples[name].append(seconds)
            if name == "query_embedding":
                hits, seconds = timed(lambda v=result: indexes.dense.search(v, 20))  # type: ignore[union-attr]
                samples["dense"].append(seconds)
                top = [k for k, _ in hits[:3]]
                samples["texts"].append(timed(lambda t=top: knowledge.chunks("big", t))[1])
                samples["milvus_lite_get"].append(timed(lambda t=top: knowledge.store.get_chunks("big", t))[1])
    return {name: summary(values) for name, values in samples.items()}


def dense_recall(knowledge: KnowledgeBases, asked: list[str], vectors: np.ndarray, keys: list[str]) -> float:
    """Share of the exact top 10 (brute force inner product over the same vectors) that HNSW returns."""
    dense = knowledge.indexes("big").dense
    assert dense is not None
    found = 0
    for query in asked:
        vector = knowledge.embedder.encode_query(query)
        exact = {keys[i] for i in np.argpartition(-(vectors @ vector), 10)[:10]}
        found += len(exact & {k for k, _ in dense.search(vector, 10)})
    return found / (10 * len(asked))


def ef_search_sweep(
    knowledge: KnowledgeBases, asked: list[str], vectors: np.ndarray, keys: list[str]
) -> list[dict[str, float]]:
    """Recall@10 and search p50 of the same index at other efSearch values (what --hnsw-ef-search trades)."""
    dense = knowledge.indexes("big").dense
    assert dense is not None
    default = dense.params
    rows = []
    for ef in EF_SEARCH_SWEEP:
        dense.params = replace(default, ef_search=ef)
        vectors_asked = [knowledge.embedder.encode_query(q) for q in asked[:100]]
        seconds = [timed(lambda v=v: dense.search(v, 10))[1] for v in vectors_asked]
        recall = dense_recall(knowledge, asked[:100], vectors, keys)
        rows.append({"ef_search": ef, "recall_at_10": recall, "search_p50_ms": percentile(seconds, 50) * 1000})
    dense.params = default
    return rows


def base_embeddings(config: Config, rng: random.Random) -> np.ndarray:
    knowledge = open_stored(config, "base.db")
    texts = [" ".join(sentence(rng) for _ in range(4)) for _ in range(BASE_EMBEDDINGS)]
    base = knowledge.embedder.encode(texts)
    knowledge.close()
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest-docs", type=int, default=40)
    parser.add_argument("--name", default="retrieval", help="results file stem (e.g. retrieval-1core)")
    args = parser.parse_args()
    rng = random.Random(7)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="chatllm-bench-kb-") as tmp:
        config = Config.build(data_dir=tmp)
        quality = bench_quality(config)
        print(f"quality: recall {quality['recall']}, rejection {quality['rejection']}", flush=True)
        knowledge = open_stored(config, "ingest.db")
        # Documents of ~11 chunks (as in the previous result) and of ~55 (a typical manual or handbook).
        ingest = [
            bench_ingest(knowledge, args.ingest_docs, rng, 60),
            bench_ingest(knowledge, args.ingest_docs // 4, rng, 300),
        ]
        knowledge.close()
        print(f"ingest: {ingest}", flush=True)
        base = base_embeddings(config, rng)
        latency = [bench_size(config, size, args.queries, rng, base) for size in args.sizes]
    write_report(args.name, ingest, latency, quality, load_before, os.getloadavg())


if __name__ == "__main__":
    main()
