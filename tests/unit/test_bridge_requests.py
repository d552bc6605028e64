"""Bridge request parsing and the error table, without servers."""

from __future__ import annotations

import grpc
import pytest

from chatllm.bridge import errors
from chatllm.bridge.errors import ApiError
from chatllm.bridge.legacy_request import from_http_body, from_text_or_json
from chatllm.bridge.openai_request import CHAT_FIELDS, chat_request, completion_request


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


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
    assert legacy.stream is True and legacy.history == [("a", "b"), ("c", "")]
    request = legacy.to_grpc("http", "rid", legacy.history or [])
    assert request.prompt == "q" and request.system_prompt == "s" and request.channel == "http"
    assert [(t.user, t.assistant) for t in request.history] == [("a", "b"), ("c", "")]
    s = request.sampling
    assert (s.max_new_tokens, s.top_k, s.do_sample, list(s.stop), s.seed, s.ignore_eos) == (7, 3, False, ["x"], 5, True)
    assert s.temperature == pytest.approx(0.5) and s.top_p == pytest.approx(0.9)
    assert request.use_knowledge_base and request.knowledge_base == "default"
    named = from_text_or_json('{"prompt": "q", "langchain": true, "kb": "manuals"}').to_grpc("ws", "r", [])
    assert named.knowledge_base == "manuals"
    unset = from_text_or_json('{"prompt": "q", "kb": "manuals", "temperature": null}').to_grpc("ws", "r", [])
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


def test_chat_messages_become_system_prompt_history_and_prompt() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "I am Zorblax."}]},
            {"role": "assistant", "content": "Hello Zorblax."},
            {"role": "developer", "content": "No emojis."},
            {"role": "user", "content": "Who am I?"},
        ],
        "max_tokens": 9,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    spec = chat_request(body, "rid")
    request = spec.generate
    assert request.system_prompt == "Be brief.\n\nNo emojis."
    assert [(t.user, t.assistant) for t in request.history] == [("Hi\n\nI am Zorblax.", "Hello Zorblax.")]
    assert request.prompt == "Who am I?" and request.sampling.max_new_tokens == 9 and request.channel == "openai"
    assert spec.stream and spec.include_usage


def test_completions_are_raw_and_default_to_16_tokens() -> None:
    spec = completion_request({"prompt": ["Once upon a time"], "echo": True}, "rid")
    assert spec.generate.raw_prompt and spec.generate.sampling.max_new_tokens == 16
    assert spec.echo == "Once upon a time"
    with pytest.raises(ApiError) as err:
        completion_request({"prompt": ["a", "b"]}, "rid")
    assert err.value.param == "prompt"


@pytest.mark.parametrize(
    ("code", "details", "status", "retry_after"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, "prompt: must not be empty", 400, None),
        (grpc.StatusCode.UNAUTHENTICATED, "missing token", 401, None),
        (grpc.StatusCode.NOT_FOUND, "no such knowledge base", 404, None),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "server at capacity", 429, errors.RETRY_AFTER_OVERLOADED_S),
        (grpc.StatusCode.UNAVAILABLE, "the model is still loading; retry shortly", 503, 5),
        (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; last error: ...", 502, None),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", 504, None),
        (grpc.StatusCode.INTERNAL, "the engine failed this request: boom", 502, None),
    ],
)
def test_grpc_status_table(code: grpc.StatusCode, details: str, status: int, retry_after: int | None) -> None:
    error = errors.from_rpc(rpc_error(code, details))
    assert (error.status, error.retry_after) == (status, retry_after)
    response = error.response()
    assert response.status == status
    assert response.headers.get("Retry-After") == (str(retry_after) if retry_after else None)


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_no_grpc_status_becomes_a_500(code: grpc.StatusCode) -> None:
    error = errors.from_rpc(rpc_error(code, "x"))
    assert 400 <= error.status < 600 and error.status != 500
    assert error.body()["error"]["code"] == code.name


def test_invalid_argument_names_the_clients_field() -> None:
    legacy = errors.from_rpc(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "sampling.top_p: must be in (0, 1]"))
    assert legacy.param == "top_p" and legacy.message == "top_p: must be in (0, 1]"
    openai = errors.from_rpc(
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "sampling.max_new_tokens: must be >= 1"), CHAT_FIELDS
    )
    assert openai.param == "max_tokens" and openai.message.startswith("max_tokens:")
