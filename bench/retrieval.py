"""Knowledge-base benchmark: ingest throughput, retrieval latency at 10k/100k chunks, recall@3.

1. Ingest: the same generated English documents go through the whole ingest
   (parse, split, segment, embed, write to milvus-lite, flush, commit) and, in
   the same run, through bare `SentenceTransformer.encode` of the same chunks.
   The ratio says what the pipeline costs on top of the embedding model.
2. Retrieval latency: knowledge bases of 10k and 100k chunks (generated
   English and Chinese text; random unit vectors stand in for the corpus
   embeddings, because embedding 100k chunks on 2 cores takes hours; queries are
   embedded for real). p50/p99 of the whole `retrieve` and of each leg alone.
3. Recall@3 on the labelled sets in tests/data with the default configuration,
   fused and per leg.

    .venv/bin/python bench/retrieval.py [--sizes 10000 100000] [--queries 200] [--ingest-docs 40]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import markdown_table, percentile, write_results
from chatllm.clients.config import Config
from chatllm.retrieval.evaluation import documents, load_questions, recall_at_k
from chatllm.retrieval.knowledge_bases import KnowledgeBases
from chatllm.retrieval.lexical import join_terms, tokenize
from chatllm.retrieval.loaders import load_document
from chatllm.retrieval.store import ChunkRow, DocumentRecord, MilvusStore
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
PACKAGES = ("pymilvus", "milvus-lite", "sentence-transformers", "jieba", "scipy", "torch")


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


def bench_ingest(knowledge: KnowledgeBases, docs: int, rng: random.Random) -> dict[str, Any]:
    """Document by document, alternating the full ingest and a bare encode of the same chunks, so both
    legs see the same batch sizes and the same background load."""
    texts = [document_text(rng, 60).replace("。", ". ") for _ in range(docs + 1)]
    english = ["".join(ch for ch in t if ord(ch) < 128) for t in texts]  # the default model reads English
    model = knowledge.embedder._model  # the very SentenceTransformer the pipeline uses
    ingest_seconds = encode_seconds = 0.0
    chunks = 0
    for i, text in enumerate(english):
        loaded = load_document(f"doc{i}.txt", text.encode())
        pieces = knowledge.splitter.split(loaded.text, loaded.kind)
        result, ingest_time = timed(lambda t=text, n=i: knowledge.ingest("ingest", f"doc{n}.txt", t.encode()))
        _, encode_time = timed(lambda p=pieces: model.encode(p, batch_size=32, show_progress_bar=False))
        assert result.chunks == len(pieces)
        if i == 0:
            continue  # warm-up
        ingest_seconds, encode_seconds, chunks = (
            ingest_seconds + ingest_time,
            encode_seconds + encode_time,
            chunks + len(pieces),
        )
    return {
        "documents": docs,
        "chunks": chunks,
        "ingest_seconds": ingest_seconds,
        "ingest_chunks_per_second": chunks / ingest_seconds,
        "encode_seconds": encode_seconds,
        "encode_chunks_per_second": chunks / encode_seconds,
    }


def fill(knowledge: KnowledgeBases, name: str, chunks: int, rng: random.Random) -> float:
    """Write `chunks` generated chunks (random unit vectors) as committed documents of 100 chunks."""
    dim = knowledge.embedder.dimension
    started = time.perf_counter()
    for start in range(0, chunks, 100):
        document_id, generation = uuid.uuid4().hex * 2, uuid.uuid4().hex
        texts = [" ".join(sentence(rng) for _ in range(4)) for _ in range(min(100, chunks - start))]
        vectors = np.random.default_rng(start).standard_normal((len(texts), dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [
            ChunkRow(document_id, generation, i, f"doc{start}.txt", t, join_terms(tokenize(t)), v)
            for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
        ]
        knowledge.store.insert_chunks(name, rows)
        knowledge.store.commit_document(
            DocumentRecord(name, document_id, generation, f"doc{start}.txt", len(rows), 0, 0, time.time())
        )
    knowledge.store.flush(name)
    return time.perf_counter() - started


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(samples, 50) * 1000, "p99_ms": percentile(samples, 99) * 1000}


def bench_latency(config: Config, sizes: list[int], queries: int, rng: random.Random) -> list[dict[str, Any]]:
    results = []
    for size in sizes:
        uri = str(Path(config.common.data_dir) / f"lat{size}.db")
        knowledge = open_knowledge_bases(config.replace(milvus_uri=uri).kb, config.common.kb_dir)
        fill_seconds = fill(knowledge, "big", size, rng)
        knowledge.store.close()
        # A restart: what a server start-up costs at this size (lexical index rebuilt from the store).
        store = MilvusStore(uri, knowledge.embedder.dimension)
        restarted = KnowledgeBases(store, knowledge.embedder, knowledge.splitter)
        _, recover_seconds = timed(restarted.recover)
        asked = [sentence(rng) for _ in range(queries)]
        _, first_query_seconds = timed(lambda k=restarted, q=asked[0]: k.retrieve("big", q, 3))
        for q in asked[:WARM_UP_QUERIES]:  # lite loads and indexes the reopened collection in the background
            restarted.retrieve("big", q, 3)
        row = {
            "chunks": size,
            "fill_seconds": fill_seconds,
            "recover_seconds": recover_seconds,
            "first_query_seconds": first_query_seconds,
            "warm_up_queries": WARM_UP_QUERIES,
        }
        row |= measure(restarted, asked)
        results.append(row)
        store.close()
        print(f"latency at {size}: {row}", flush=True)
    return results


def measure(knowledge: KnowledgeBases, asked: list[str]) -> dict[str, Any]:
    """Each query through the whole retrieve and through each part alone, interleaved so that all
    legs see the same background load."""
    legs: dict[str, Callable[[str], Any]] = {
        "retrieve": lambda q: knowledge.retrieve("big", q, 3),
        "query_embedding": lambda q: knowledge.embedder.encode([q])[0],
        "lexical_only": lambda q: knowledge._lexical["big"].search(tokenize(q), 20),
    }
    samples: dict[str, list[float]] = {name: [] for name in [*legs, "dense_search_only"]}
    for query in asked:
        for name, leg in legs.items():
            result, seconds = timed(lambda f=leg, q=query: f(q))
            samples[name].append(seconds)
            if name == "query_embedding":
                samples["dense_search_only"].append(timed(lambda v=result: knowledge.store.search("big", v, 20))[1])
    return {name: summary(values) for name, values in samples.items()}


def bench_recall(config: Config) -> list[dict[str, Any]]:
    knowledge = open_knowledge_bases(
        config.replace(milvus_uri=str(Path(config.common.data_dir) / "recall.db")).kb, config.common.kb_dir
    )
    rows = []
    for name in ("en", "zh"):
        folder = DATA / f"kb_{name}"
        for path in documents(folder):
            knowledge.ingest(name, path.name, path.read_bytes())
        questions = load_questions(folder)
        for legs in (("dense", "lexical"), ("dense",), ("lexical",)):
            report = recall_at_k(lambda q, k, n=name, lg=legs: knowledge.retrieve(n, q, k, legs=lg), questions, k=3)
            rows.append(
                {"set": name, "legs": "+".join(legs), "questions": report.questions, "recall_at_3": report.recall}
            )
    knowledge.store.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ingest-docs", type=int, default=40)
    args = parser.parse_args()
    rng = random.Random(7)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="chatllm-bench-kb-") as tmp:
        config = Config.build(data_dir=tmp)
        recall = bench_recall(config)
        print(f"recall: {recall}", flush=True)
        knowledge = open_knowledge_bases(
            config.replace(milvus_uri=str(Path(tmp) / "ingest.db")).kb, config.common.kb_dir
        )
        ingest = bench_ingest(knowledge, args.ingest_docs, rng)
        knowledge.store.close()
        print(f"ingest: {ingest}", flush=True)
        latency = bench_latency(config, args.sizes, args.queries, rng)
    load_after = os.getloadavg()
    write_report(ingest, latency, recall, load_before, load_after)


def write_report(ingest: dict, latency: list[dict], recall: list[dict], before: tuple, after: tuple) -> None:
    versions = {p: importlib.metadata.version(p) for p in PACKAGES}
    body = [
        f"Libraries: {', '.join(f'{k} {v}' for k, v in versions.items())}. Load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.1f}' for x in before)}, after {'/'.join(f'{x:.1f}' for x in after)}: other work shared "
        "the 2 cores, so absolute numbers are pessimistic; ratios within one run are the comparison.",
        "",
        "## Ingest throughput (default: 500-character chunks, all-MiniLM-L6-v2)",
        "",
        markdown_table(
            ["leg", "chunks", "seconds", "chunks/s"],
            [
                [
                    "full ingest (parse, split, jieba, embed, milvus-lite write + flush, commit)",
                    ingest["chunks"],
                    ingest["ingest_seconds"],
                    ingest["ingest_chunks_per_second"],
                ],
                [
                    "SentenceTransformer.encode alone, same chunks",
                    ingest["chunks"],
                    ingest["encode_seconds"],
                    ingest["encode_chunks_per_second"],
                ],
            ],
        ),
        "",
        f"Pipeline / bare encode rate: {ingest['ingest_chunks_per_second'] / ingest['encode_chunks_per_second']:.2f}",
        "",
        f"## Retrieval latency (top-3, fused; corpus vectors random, queries embedded for real; after a restart "
        f"and {WARM_UP_QUERIES} warm-up queries)",
        "",
        markdown_table(
            [
                "chunks",
                "retrieve p50 ms",
                "retrieve p99 ms",
                "dense search p50/p99 ms",
                "BM25 p50/p99 ms",
                "query embedding p50 ms",
                "start-up recovery s",
                "first query after start-up s",
            ],
            [
                [
                    r["chunks"],
                    r["retrieve"]["p50_ms"],
                    r["retrieve"]["p99_ms"],
                    f"{r['dense_search_only']['p50_ms']:.1f} / {r['dense_search_only']['p99_ms']:.1f}",
                    f"{r['lexical_only']['p50_ms']:.1f} / {r['lexical_only']['p99_ms']:.1f}",
                    r["query_embedding"]["p50_ms"],
                    r["recover_seconds"],
                    r["first_query_seconds"],
                ]
                for r in latency
            ],
        ),
        "",
        "## Recall@3 on the labelled sets (tests/data), default configuration",
        "",
        markdown_table(
            ["set", "legs", "questions", "recall@3"],
            [[r["set"], r["legs"], r["questions"], r["recall_at_3"]] for r in recall],
        ),
    ]
    path = write_results(
        "retrieval",
        "Knowledge-base retrieval benchmark",
        "\n".join(body),
        {
            "ingest": ingest,
            "latency": latency,
            "recall": recall,
            "versions": versions,
            "load_before": before,
            "load_after": after,
        },
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
