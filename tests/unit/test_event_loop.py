"""--event-loop: every `chatllm` process runs on uvloop unless asked for asyncio's own loop."""

from __future__ import annotations

import argparse
import asyncio

import pytest
import uvloop

from chatllm.clients.cli.serve import event_loop_factory
from chatllm.kernel.flags import add_config_arguments, from_args


@pytest.mark.parametrize("command", ["serve", "server", "bridge"])
def test_uvloop_is_the_default_and_asyncio_can_be_asked_for(command: str) -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, command)
    assert from_args(parser.parse_args([])).common.event_loop == "uvloop"
    assert from_args(parser.parse_args(["--event-loop", "asyncio"])).common.event_loop == "asyncio"


def test_the_factory_makes_the_loop_asked_for() -> None:
    factory = event_loop_factory("uvloop")
    assert factory is not None
    with asyncio.Runner(loop_factory=factory) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
    assert event_loop_factory("asyncio") is None  # asyncio.Runner's default loop
