"""The markdown and JSON of bench/retrieval.py (bench/results/retrieval-<date>.md / .json)."""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

from bench.common import markdown_table, write_results

PACKAGES = ("pymilvus", "milvus-lite", "faiss-cpu", "sentence-transformers", "jieba", "scipy", "numpy", "torch")


def p50_p99(part: dict[str, float]) -> str:
    return f"{part['p50_ms']:.2f} / {part['p99_ms']:.2f}"


def quality_section(quality: dict[str, Any]) -> list[str]:
    answers = sorted(a["score"] for a in quality["answers"])
    off_topic = sorted(o["score"] for o in quality["off_topic"])
    return [
        "## Quality on the labelled sets (tests/data), default configuration",
        "",
        "Fused: with the default relevance threshold; one leg alone: without it (the threshold is on fused scores).",
        "",
        markdown_table(
            ["set", "legs", "questions", "recall@3"],
            [[r["set"], r["legs"], r["questions"], r["recall"]] for r in quality["recall"]],
        ),
        "",
        markdown_table(
            ["set", "off-topic questions", "retrieved nothing"],
            [[r["set"], r["questions"], r["rejected"]] for r in quality["rejection"]],
        ),
        "",
        f"Fused score of the chunk that answers each labelled question (top 3, {len(answers)} questions): "
        f"lowest {answers[0]:.3f}, then {', '.join(f'{a:.3f}' for a in answers[1:5])}; median "
        f"{answers[len(answers) // 2]:.3f}. Top fused score of each off-topic question ({len(off_topic)}): highest "
        f"{off_topic[-1]:.3f}, then {', '.join(f'{o:.3f}' for o in off_topic[-5:-1][::-1])}; median "
        f"{off_topic[len(off_topic) // 2]:.3f}. The default `--kb-min-score` {quality['min_score']} sits in the gap "
        f"between the highest off-topic score and the lowest answering score (midpoint "
        f"{quality['midpoint']:.4f}, rounded down to two decimals).",
    ]


def ingest_section(ingest: list[dict[str, Any]]) -> list[str]:
    rows = []
    for run in ingest:
        rows.append(
            [
                f"{run['documents']} documents of {run['chunks'] / run['documents']:.0f} chunks",
                run["chunks"],
                run["ingest_chunks_per_second"],
                run["encode_chunks_per_second"],
                f"{run['ingest_chunks_per_second'] / run['encode_chunks_per_second']:.2f}",
            ]
        )
    return [
        f"## Ingest throughput (500-character chunks, all-MiniLM-L6-v2 in {ingest[0]['precision']})",
        "",
        "The whole ingest (parse, split, jieba, embed, milvus-lite writes, commit, indexes) against "
        "`SentenceTransformer.encode` alone on the same chunks, document by document, the two legs "
        "taking turns at going first.",
        "",
        markdown_table(["documents", "chunks", "ingest chunks/s", "bare encode chunks/s", "ratio"], rows),
    ]


def latency_section(latency: list[dict[str, Any]]) -> list[str]:
    return [
        "## Retrieval latency and start-up (top-3, fused; corpus vectors: mixtures of real chunk embeddings)",
        "",
        "After a restart and 30 warm-up questions; p50 / p99 in ms. `dense` is the in-process FAISS HNSW search "
        "(top 20), `lexical` BM25 over the saved index (top 20), `texts` reading the texts of the top 3 from the "
        "copy held beside the indexes (what a retrieve does), `milvus-lite get` the same from milvus-lite (what it "
        "did before); `query embedding` is the question on ONNX Runtime (`--embedding-question-runtime auto` on a "
        "CPU); `milvus-lite search` is milvus-lite's own search on the same collection (what the dense "
        "leg was before).",
        "",
        markdown_table(
            [
                "chunks",
                "retrieve",
                "query embedding",
                "dense (HNSW)",
                "lexical (BM25)",
                "texts",
                "milvus-lite get",
                "dense recall@10 vs exact",
                "start-up s",
                "first query s",
                "milvus-lite search",
                "process RSS MiB",
            ],
            [
                [
                    r["chunks"],
                    p50_p99(r["retrieve"]),
                    p50_p99(r["query_embedding"]),
                    p50_p99(r["dense"]),
                    p50_p99(r["lexical"]),
                    p50_p99(r["texts"]),
                    p50_p99(r["milvus_lite_get"]),
                    f"{r['dense_recall_at_10']:.3f}",
                    f"{r['startup_seconds']:.2f}",
                    f"{r['first_query_seconds']:.3f}",
                    p50_p99(r["milvus_lite_search"]),
                    f"{r['rss_mib']:.0f}",
                ]
                for r in latency
            ],
        ),
        "",
        "Dense recall@10 and HNSW search p50 (ms) of the same index at other `--hnsw-ef-search` values:",
        "",
        markdown_table(
            ["chunks", *(f"ef {r['ef_search']}" for r in latency[0]["ef_search_sweep"])],
            [
                [r["chunks"], *(f"{e['recall_at_10']:.3f} / {e['search_p50_ms']:.2f}" for e in r["ef_search_sweep"])]
                for r in latency
            ],
        ),
        "",
        "HNSW parameters: "
        + ", ".join(f"{k} {v}" for k, v in latency[0]["hnsw"].items())
        + "; writing and indexing the generated chunks took "
        + ", ".join(f"{r['fill_seconds']:.0f} s at {r['chunks']}" for r in latency)
        + ".",
    ]


def write_report(
    name: str,
    ingest: list[dict[str, Any]],
    latency: list[dict[str, Any]],
    quality: dict[str, Any],
    before: tuple,
    after: tuple,
) -> None:
    versions = {p: importlib.metadata.version(p) for p in PACKAGES}
    body = [
        f"Libraries: {', '.join(f'{k} {v}' for k, v in versions.items())}. Load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.1f}' for x in before)}, after {'/'.join(f'{x:.1f}' for x in after)} "
        f"on {os.cpu_count()} cores (above the core count, other work shared them and absolute numbers are "
        "pessimistic); ratios within one run are the comparison.",
        "",
        *quality_section(quality),
        "",
        *ingest_section(ingest),
        "",
        *latency_section(latency),
    ]
    path = write_results(
        name,
        "Knowledge-base retrieval benchmark",
        "\n".join(body),
        {
            "quality": quality,
            "ingest": ingest,
            "latency": latency,
            "versions": versions,
            "load_before": before,
            "load_after": after,
        },
    )
    print(path.read_text())
