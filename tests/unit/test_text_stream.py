from __future__ import annotations

from chatllm.server.engines.text_stream import IncrementalDetokenizer, StopMatcher


class ByteTokenizer:
    """One token per UTF-8 byte, so multi-byte characters span several tokens."""

    def decode(self, tokens: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(tokens).decode("utf-8", errors="replace")


def test_detokenizer_never_splits_a_character() -> None:
    text = "Hi 北京, ok"
    tokens = list(text.encode())
    detok = IncrementalDetokenizer(ByteTokenizer())
    deltas = [detok.push(tokens[: i + 1]) for i in range(len(tokens))]
    assert "".join(deltas) + detok.flush(tokens) == text
    assert all("\ufffd" not in d for d in deltas)


def test_stop_matcher_cuts_before_the_stop_even_across_deltas() -> None:
    matcher = StopMatcher(["STOP"])
    out = [matcher.feed(d) for d in ["Hello ST", "O", "P and more"]]
    assert "".join(out) == "Hello "
    assert matcher.stopped


def test_stop_matcher_releases_held_text_that_was_not_a_stop() -> None:
    matcher = StopMatcher(["STOP"])
    out = [matcher.feed(d) for d in ["Hello ST", "ONE"]]
    assert "".join(out) + matcher.flush() == "Hello STONE"
    assert out[0] == "Hello "  # "ST" held back while it could start "STOP"
    assert not matcher.stopped


def test_earliest_of_several_stops_wins() -> None:
    matcher = StopMatcher(["world", "lo"])
    assert matcher.feed("hello world") == "hel"
    assert matcher.feed("more") == ""


def test_no_stops_is_a_passthrough() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("abc") == "abc" and matcher.flush() == ""


def test_flush_drops_a_character_cut_in_half_by_the_token_limit() -> None:
    tokens = list("答案".encode())[:-1]  # the last character's final byte never came
    detok = IncrementalDetokenizer(ByteTokenizer())
    text = "".join(detok.push(tokens[: i + 1]) for i in range(len(tokens))) + detok.flush(tokens)
    assert text == "答"
