"""Bridge request parsing and the error table, without servers."""

from __future__ import annotations

import re

import grpc
import pytest

from chatllm.bridge import errors
from chatllm.bridge.errors import ApiError
from chatllm.bridge.legacy.request import from_http_body, from_text_or_json
from chatllm.bridge.openai.request import ChatCompletionRequest, CompletionRequest
from chatllm.bridge.validation import parse
from chatllm.server.errors import Reason, rich_status


def rpc_error(
    code: grpc.StatusCode, details: str, reason: Reason | None = None, field: str | None = None
) -> grpc.aio.AioRpcError:
    """A failed call as the bridge sees it; with `reason`, carrying the server's google.rpc details."""
    trailing = grpc.aio.Metadata()
    if reason is not None:
        description = details.partition(": ")[2] if field else ""
        for key, value in rich_status(code, details, reason, field, description).trailing_metadata:
            trailing.add(key, value)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details=details)


@pytest.mark.parametrize(
    ("body", "content_type", "prompt"),
    [
        (b"What is the capital of France?\n", "application/x-www-form-urlencoded", "What is the capital of France?\n"),
        (b"\xef\xbb\xbfHello", "text/plain", "Hello"),  # a BOM is not part of the prompt
        (b'{"prompt": "as text"}', "text/plain", '{"prompt": "as text"}'),  # text/plain is always the prompt
        (b"42", "application/octet-stream", "42"),  # JSON, but not an object: a prompt
        (b"{x} is a set", "", "{x} is a set"),
        (b'{"prompt": "hi"}', "application/octet-stream", "hi"),
        (b'{"prompt": "hi"}', "application/json", "hi"),
    ],
)
def test_body_is_json_or_the_prompt(body: bytes, content_type: str, prompt: str) -> None:
    assert from_http_body(body, content_type).prompt == prompt


def test_json_fields_map_to_the_grpc_request() -> None:
    body = (
        b'{"prompt": "q", "system_prompt": "s", "history": [["a", "b"], ["c", null]], "max_new_tokens": 7.0,'
        b' "use_stream_chat": "True", "temperature": 0.5, "top_k": 3, "top_p": 0.9, "do_sample": "false",'
        b' "use_cache": true, "stop": "x", "langchain": "true", "seed": 5, "ignore_eos": true, "unknown": [1]}'
    )
    legacy = from_http_body(body, "application/json")
    assert legacy.stream is True and legacy.history_pairs() == [("a", "b"), ("c", "")]
    request = legacy.to_generate_request("http", "rid", legacy.history_pairs() or [])
    assert request.prompt == "q" and request.system_prompt == "s" and request.channel == "http"
    assert [(t.user, t.assistant) for t in request.history] == [("a", "b"), ("c", "")]
    s = request.sampling
    assert (s.max_new_tokens, s.top_k, s.do_sample, list(s.stop), s.seed, s.ignore_eos) == (7, 3, False, ["x"], 5, True)
    assert s.temperature == pytest.approx(0.5) and s.top_p == pytest.approx(0.9)
    assert request.use_knowledge_base and request.knowledge_base == "default"
    named = from_text_or_json('{"prompt": "q", "langchain": true, "kb": "manuals"}').to_generate_request("ws", "r", [])
    assert named.knowledge_base == "manuals"
    unset = from_text_or_json('{"prompt": "q", "kb": "manuals", "temperature": null}').to_generate_request(
        "ws", "r", []
    )
    assert not unset.use_knowledge_base and not unset.sampling.HasField("temperature")


@pytest.mark.parametrize(
    ("text", "param"),
    [
        ('{"prompt": "q", "do_sample": "perhaps"}', "do_sample"),
        ('{"prompt": "q", "top_k": -1}', "top_k"),
        ('{"prompt": "q", "seed": -1}', "seed"),
        ('{"prompt": "q", "temperature": true}', "temperature"),
        ('{"prompt": "q", "stop": ["a", 1]}', "stop"),
        ('{"prompt": "q", "history": [["a", "b", "c"]]}', "history[0]"),
        ('{"prompt": "q", "system_prompt": ["x"]}', "system_prompt"),
        ('{"prompt": "q",}', "body"),
    ],
)
def test_wrong_types_name_the_field(text: str, param: str) -> None:
    with pytest.raises(ApiError) as err:
        from_text_or_json(text)
    assert err.value.status == 400 and err.value.param == param and str(err.value).startswith(param + ":")


def test_chat_messages_reach_the_server_exactly_as_sent() -> None:
    """No folding into pairs, no merging of same-role neighbours, no trimming (issue: the deep contract)."""
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": [{"type": "text", "text": "I am Zorblax."}]},
        {"role": "assistant", "content": "Hello Zorblax."},
        {"role": "developer", "content": "No emojis."},
        {"role": "user", "content": "Who am I?"},
    ]
    body = {"messages": messages, "max_tokens": 9, "stream": True, "stream_options": {"include_usage": True}}
    spec = parse(ChatCompletionRequest, body)
    request = spec.to_generate_request("rid")
    sent = [(m.role, m.content) for m in request.messages]
    assert sent == [
        ("system", "Be brief."),
        ("user", "Hi"),
        ("user", "I am Zorblax."),
        ("assistant", "Hello Zorblax."),
        ("developer", "No emojis."),
        ("user", "Who am I?"),
    ]
    assert not request.prompt and not request.history and not request.system_prompt
    assert request.sampling.max_new_tokens == 9 and request.channel == "openai"
    assert spec.stream and spec.include_usage


def test_completions_are_raw_and_default_to_16_tokens() -> None:
    spec = parse(CompletionRequest, {"prompt": ["Once upon a time"], "echo": True})
    generate = spec.to_generate_request("rid")
    assert generate.raw_prompt and generate.sampling.max_new_tokens == 16
    assert spec.echo and spec.text == "Once upon a time"
    with pytest.raises(ApiError) as err:
        parse(CompletionRequest, {"prompt": ["a", "b"]})
    assert err.value.param == "prompt"


@pytest.mark.parametrize(
    ("code", "details", "status", "retry_after", "reason"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "prompt: must not be empty", 400, None, Reason.INVALID_FIELD),
        (grpc.StatusCode.UNAUTHENTICATED, "missing token", 401, None, Reason.UNAUTHENTICATED),
        (grpc.StatusCode.NOT_FOUND, "no such knowledge base", 404, None, Reason.KNOWLEDGE_BASE_NOT_FOUND),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "server at capacity",
            429,
            errors.RETRY_AFTER_OVERLOADED_S,
            Reason.OVERLOADED,
        ),
        (grpc.StatusCode.UNAVAILABLE, "the model is still loading; retry shortly", 503, 5, Reason.LOADING),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: ...", 502, None, None),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", 504, None, None),
        (grpc.StatusCode.INTERNAL, "the engine failed this request: boom", 502, None, Reason.ENGINE_FAILED),
    ],
)
def test_grpc_status_table(
    code: grpc.StatusCode, details: str, status: int, retry_after: int | None, reason: Reason | None
) -> None:
    field = "prompt" if code is grpc.StatusCode.INVALID_ARGUMENT else None
    error = errors.from_rpc(rpc_error(code, details, reason, field))
    assert (error.status, error.retry_after) == (status, retry_after)
    response = error.response()
    assert response.status == status
    assert response.headers.get("Retry-After") == (str(retry_after) if retry_after else None)


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_no_grpc_status_becomes_a_500(code: grpc.StatusCode) -> None:
    error = errors.from_rpc(rpc_error(code, "x"))
    assert 400 <= error.status < 600 and error.status != 500
    # One snake_case `code` vocabulary on every route (issue: the EAS ecosystem's clients, part 4).
    assert re.fullmatch(r"[a-z_]+", error.body()["error"]["code"])


def test_invalid_argument_names_the_clients_field() -> None:
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    legacy = errors.from_rpc(
        rpc_error(invalid, "sampling.top_p: must be in (0, 1]", Reason.INVALID_FIELD, "sampling.top_p")
    )
    assert legacy.param == "top_p" and legacy.message == "top_p: must be in (0, 1]"
    chat = parse(ChatCompletionRequest, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0.0 + 5})
    openai = errors.from_rpc(
        rpc_error(invalid, "sampling.max_new_tokens: must be >= 1", Reason.INVALID_FIELD, "sampling.max_new_tokens"),
        chat.client_field,
    )
    assert openai.param == "max_tokens" and openai.message.startswith("max_tokens:")
