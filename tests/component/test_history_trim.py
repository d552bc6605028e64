"""--max-round-trim through the real bridge and server over the fake engine: which rounds of a
WebSocket conversation and of a legacy `history` reach the model."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.fake_engine import FakeEngine
from tests.stack import fake_config, serving_stack


def rounds_seen(engine: FakeEngine) -> list[list[int]]:
    """For each request the engine got, the numbers of the earlier questions its prompt carries."""
    seen = []
    for prompt_ids, _, _ in engine.seen:
        words = engine.tokenizer.decode(prompt_ids).split()
        seen.append([int(w.removeprefix("q")) for w in words if w.startswith("q") and w[1:].isdigit()][:-1])
    return seen


async def test_stable_trim_keeps_the_window_start_for_max_round_turns(tmp_path: Path) -> None:
    engine = FakeEngine(answer="noted")
    config = fake_config(tmp_path, max_round=2, max_round_trim="stable")
    async with serving_stack(config, engine) as stack, aiohttp.ClientSession() as session:
        async with session.ws_connect(stack.ws_url + "/") as ws:
            for n in range(1, 8):
                await ws.send_str(json.dumps({"prompt": f"q{n}", "use_stream_chat": False}))
                while await ws.receive_str() != "<EOS>":
                    pass
        legacy = {"prompt": "q8", "history": [[f"q{n}", "noted"] for n in range(1, 8)], "use_stream_chat": False}
        async with session.post(stack.http_url + "/", json=legacy) as response:
            assert response.status == 200
    websocket, over_http = rounds_seen(engine)[:7], rounds_seen(engine)[7]
    # 0, 1, 2, 3 rounds; at 4 cut back to 2 (rounds 3-4); grows to 3; at 6 cut back to 2 (rounds 5-6).
    assert websocket == [[], [1], [1, 2], [1, 2, 3], [3, 4], [3, 4, 5], [5, 6]]
    assert over_http == [5, 6, 7]  # 7 rounds given: the server keeps the same window the socket would (5-7)


async def test_exact_trim_drops_the_oldest_round_every_turn(tmp_path: Path) -> None:
    engine = FakeEngine(answer="noted")
    async with serving_stack(fake_config(tmp_path, max_round=2), engine) as stack, aiohttp.ClientSession() as session:
        async with session.ws_connect(stack.ws_url + "/") as ws:
            for n in range(1, 6):
                await ws.send_str(json.dumps({"prompt": f"q{n}", "use_stream_chat": False}))
                while await ws.receive_str() != "<EOS>":
                    pass
    assert rounds_seen(engine) == [[], [1], [1, 2], [2, 3], [3, 4]]
