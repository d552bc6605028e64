"""--speculative and --speculative-config: from the command line to vLLM's engine arguments, and refused on hf."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from chatllm.kernel.config import Config
from chatllm.kernel.flags import add_config_arguments, from_args
from chatllm.server.engines.hf import HFEngine
from chatllm.server.engines.speculative import NGRAM_MAX_BATCH, ngram_preset, speculative_config
from chatllm.server.engines.vllm_setup import vllm_build
from chatllm.server.errors import StartupError
from chatllm.server.model_source import ModelSource

NEEDS_VLLM = "--speculative / --speculative-config need --backend vllm"


def parse(*argv: str) -> Config:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, "server")
    return from_args(parser.parse_args(list(argv)), env={})


def test_off_by_default() -> None:
    assert speculative_config(parse()) is None


def test_the_json_is_passed_through_as_vllm_serve_takes_it() -> None:
    given = {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 5, "prompt_lookup_min": 2}
    assert speculative_config(parse("--speculative-config", json.dumps(given))) == given
    draft_model = {"model": "/models/draft", "num_speculative_tokens": 3, "draft_tensor_parallel_size": 1}
    assert speculative_config(parse("--speculative_config", json.dumps(draft_model))) == draft_model


def test_the_ngram_preset_stops_drafting_above_its_batch_size() -> None:
    spec = speculative_config(parse("--speculative", "ngram", "--max-num-seqs", "64"))
    assert spec is not None and spec["method"] == "ngram" and spec["num_speculative_tokens"] >= 1
    k = spec["num_speculative_tokens"]
    assert spec["num_speculative_tokens_per_batch_size"] == [[1, NGRAM_MAX_BATCH, k], [NGRAM_MAX_BATCH + 1, 64, 0]]
    # A batch that never grows past the limit needs no schedule.
    assert "num_speculative_tokens_per_batch_size" not in ngram_preset(NGRAM_MAX_BATCH)


def test_json_keys_override_the_preset() -> None:
    spec = speculative_config(
        parse("--speculative", "ngram", "--speculative-config", '{"num_speculative_tokens": 2, "prompt_lookup_min": 2}')
    )
    assert spec == {**ngram_preset(256), "num_speculative_tokens": 2, "prompt_lookup_min": 2}


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"ngram"', "3"])
def test_anything_but_a_json_object_is_refused_at_start_up(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        parse("--speculative-config", text)
    assert "--speculative-config takes a JSON object, as vllm serve does" in str(refused.value)


@pytest.mark.parametrize("backend", ["hf", "none"])
@pytest.mark.parametrize("flags", [("--speculative", "ngram"), ("--speculative-config", '{"method": "ngram"}')])
def test_the_hf_backend_refuses_speculation_at_start_up(backend: str, flags: tuple[str, str]) -> None:
    with pytest.raises(SystemExit) as refused:
        parse("--backend", backend, *flags)
    assert NEEDS_VLLM in str(refused.value) and "transformers' continuous batching" in str(refused.value)


def test_the_hf_engine_refuses_speculation_before_loading_anything() -> None:
    # --backend auto falls back to hf where vLLM cannot run: the engine itself refuses then.
    config = Config.build(backend="auto", speculative="ngram")
    with pytest.raises(StartupError, match=NEEDS_VLLM):
        HFEngine._load(config, source=None)  # type: ignore[arg-type]  # refused before the model is read


@pytest.mark.skipif(vllm_build() is None, reason="needs vLLM")
def test_the_speculative_config_reaches_vllms_engine_arguments(tmp_path: Path) -> None:
    from chatllm.server.engines.vllm_setup import build_engine_args

    source = ModelSource("m", tmp_path, "")
    args, _ = build_engine_args(parse("--speculative", "ngram", "--max-num-seqs", "32"), source)
    assert args.speculative_config == ngram_preset(32)
    args, _ = build_engine_args(parse(), source)
    assert args.speculative_config is None
