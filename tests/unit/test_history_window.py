"""--max-round-trim: which rounds reach the model (kernel.history_window), in the server's Chat too."""

from __future__ import annotations

import pytest

from chatllm.kernel.history_window import kept_rounds, trim_history
from chatllm.server.chat import Chat, ChatInput, ChatTurn
from tests.unit.test_chat import WordTokenizer


def test_exact_keeps_the_last_max_round_rounds() -> None:
    assert [kept_rounds(total, 3, "exact") for total in range(8)] == [0, 1, 2, 3, 3, 3, 3, 3]
    assert trim_history(list(range(1, 8)), 3, "exact") == [5, 6, 7]


def test_stable_grows_to_twice_max_round_then_cuts_back() -> None:
    assert [kept_rounds(total, 3, "stable") for total in range(13)] == [0, 1, 2, 3, 4, 5, 3, 4, 5, 3, 4, 5, 3]


def first_kept_round(total: int, max_round: int) -> int:
    return total - kept_rounds(total, max_round, "stable") + 1


@pytest.mark.parametrize("max_round", [1, 2, 5])
def test_stable_window_starts_at_the_same_round_for_max_round_turns(max_round: int) -> None:
    starts = [first_kept_round(total, max_round) for total in range(2 * max_round, 6 * max_round)]
    runs = [starts[i : i + max_round] for i in range(0, len(starts), max_round)]
    assert all(len(set(run)) == 1 for run in runs)  # the prefix stays put for max_round turns...
    assert len({run[0] for run in runs}) == len(runs)  # ...then moves on by max_round rounds
    assert all(kept_rounds(total, max_round, "stable") < 2 * max_round for total in range(100))


def test_stable_on_an_already_cut_window_keeps_the_same_rounds() -> None:
    """The WebSocket keeps only the window; cutting it again turn by turn gives the whole history's window."""
    window: list[int] = []
    for round_number in range(1, 40):
        window = trim_history([*window, round_number], 4, "stable")
        assert window == trim_history(list(range(1, round_number + 1)), 4, "stable")


def test_zero_rounds_and_unknown_mode() -> None:
    assert trim_history([1, 2], 0, "stable") == []
    with pytest.raises(ValueError, match="max-round-trim"):
        kept_rounds(3, 2, "sometimes")


def test_chat_with_stable_trim_keeps_the_prompt_prefix_between_turns() -> None:
    chat = Chat(WordTokenizer(), 4096, max_round=2, max_round_trim="stable")
    history = [ChatTurn(f"q{i}", f"a{i}") for i in range(1, 8)]
    texts = [chat.render(ChatInput(f"now{n}?", history=history[:n]))[0] for n in (4, 5)]
    assert "q3" in texts[0] and "q2" not in texts[0]  # 4 rounds: cut back to the last 2
    assert texts[1].startswith(texts[0].rsplit("<user>now4?", 1)[0])  # turn 5 extends turn 4's prompt
    exact = Chat(WordTokenizer(), 4096, max_round=2)
    assert "q3" not in exact.render(ChatInput("now?", history=history[:5]))[0]
