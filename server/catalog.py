"""The seed's model table (models, `--model-type`, recommended GPUs), shipped as data."""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

from chatllm.proto import pb


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    model_path: str
    model_type: str
    recommended_hardware: str
    seed_accelerated: bool


@functools.cache
def entries() -> tuple[CatalogEntry, ...]:
    text = resources.files("chatllm.server").joinpath("data/seed-models.tsv").read_text(encoding="utf-8")
    rows = csv.DictReader(text.splitlines(), delimiter="\t")
    return tuple(
        CatalogEntry(
            name=row["name"],
            model_path=row["model_path"],
            model_type=row["model_type"] or "",
            recommended_hardware=row["recommended_hardware"],
            seed_accelerated=row["seed_accelerated"].strip().lower() == "yes",
        )
        for row in rows
    )


def catalog_pb() -> list[pb.CatalogModel]:
    return [
        pb.CatalogModel(
            name=e.name,
            model_path=e.model_path,
            model_type=e.model_type,
            recommended_hardware=e.recommended_hardware,
            seed_accelerated=e.seed_accelerated,
        )
        for e in entries()
    ]
