"""Fuzzing through the real stack: schemathesis against the bridge's OpenAPI document, and
hypothesis over WebSocket frames, with the real bridge, gRPC server and knowledge base (the real
embedder), over the fake engine: what the fuzzers probe is the stack's handling of input.

The server runs with a 48-token context and 6 new tokens by default. Checks: no 5xx, every response documented
(status, content type, JSON schema), the token honoured, no request hangs (per-request timeout),
and a normal question still gets its answer afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
import schemathesis
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatllm.bridge.openapi import DOCUMENT_FILE
from chatllm.proto import SERVICE_NAME, pb
from tests.fake_engine import FakeEngine
from tests.hostile_payloads import deep_struct_request
from tests.stack import StackThread, fake_config

pytestmark = pytest.mark.model  # the knowledge base's embedder

TOKEN = "fuzz-token-3c9d"
ANSWER = "The capital of France is Paris."
AUTH = {"Authorization": TOKEN}
EOS = "<EOS>"
# Client side: a request that takes longer is a hang. Generous, because a generated request may ask
# for the whole 48-token context and the two cores may be shared with other jobs.
REQUEST_TIMEOUT_S = 90
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "ignored_auth",
]

schema = schemathesis.openapi.from_path(DOCUMENT_FILE)
schema.config.update(request_timeout=REQUEST_TIMEOUT_S)
schema.config.generation.update(max_examples=12, database="none")
schema.config.checks.update(included_check_names=CHECKS)
schema.config.phases.update(phases=["examples", "fuzzing"])


@schema.auth()
class BridgeToken:
    """The server's token on every request, as explicit auth: ignored_auth then also checks that the
    same request without it, or with a wrong one, is refused."""

    def get(self, case: schemathesis.Case, context: schemathesis.AuthContext) -> str:
        return TOKEN

    def set(self, case: schemathesis.Case, data: str, context: schemathesis.AuthContext) -> None:
        case.headers = {**(case.headers or {}), "Authorization": data}


@pytest.fixture(scope="module")
def stack(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackThread]:
    config = fake_config(
        data_dir,
        token=TOKEN,
        max_round=0,  # WebSocket history would soon fill the 48-token context and turn every frame into a 400
        max_new_tokens=6,
        temperature=0.0,
        knowledge_base=True,
        milvus_uri=str(tmp_path_factory.mktemp("fuzz-kb") / "kb.db"),
        max_upload_bytes=64 * 1024,
        request_timeout=0,  # no server-side 504: a slow answer must still be an answer
        ws_max_pending=4,
    )
    with StackThread(config, FakeEngine(answer=ANSWER, context_length=48)) as running:
        yield running


@schema.parametrize()
def test_bridge_conforms_to_its_openapi_document(case: schemathesis.Case, stack: StackThread) -> None:
    case.call_and_validate(base_url=stack.http_url)


def test_openapi_document_is_served_without_the_token(stack: StackThread) -> None:
    response = requests.get(stack.http_url + "/openapi.json", timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200
    assert response.json() == json.loads(DOCUMENT_FILE.read_text())


# Lone surrogates survive json.dumps as `\udXXX` escapes: valid UTF-8 frames whose JSON is not Unicode.
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF, categories=None, exclude_categories=[])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30) | st.text(surrogates, max_size=2),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
LEGACY_KEYS = ["prompt", "history", "max_new_tokens", "use_stream_chat", "temperature", "top_k", "top_p", "stop"]
legacy_objects = st.dictionaries(
    st.sampled_from([*LEGACY_KEYS, "langchain", "kb", "stream_format", "seed", "system_prompt"]) | st.text(max_size=8),
    json_values,
    max_size=6,
)
frames = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80),
    legacy_objects.map(json.dumps),
    st.builds(lambda prompt, extra: json.dumps({"prompt": prompt, **extra}), st.text(min_size=1), legacy_objects),
)


@pytest.fixture(scope="module")
def socket(stack: StackThread) -> Iterator[websocket.WebSocket]:
    ws = websocket.create_connection(stack.ws_url + "/", header=[f"Authorization: {TOKEN}"], timeout=REQUEST_TIMEOUT_S)
    yield ws
    ws.close()


def read_round(ws: websocket.WebSocket) -> list[Any]:
    """The frames of one answer, up to and without `<EOS>` (a timeout or a close fails the test)."""
    frames: list[Any] = []
    while (frame := ws.recv()) != EOS:
        frames.append(frame)
    return frames


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=frames)
def test_every_websocket_frame_gets_an_answer_or_an_error_then_eos(socket: websocket.WebSocket, frame: Any) -> None:
    if isinstance(frame, bytes):
        socket.send_binary(frame)
    else:
        socket.send(frame)
    answer = read_round(socket)
    errors = [json.loads(f)["error"] for f in answer if isinstance(f, str) and f.startswith('{"error"')]
    assert all(400 <= e["status"] < 500 for e in errors), errors  # the client's fault, never the server's
    if errors:
        assert len(answer) == 1, "an error is the whole round"
        assert ":" in errors[0]["message"] or errors[0]["param"] is None


# Inputs the fuzzers found that once ended in a 500 or a silent WebSocket; each is now a 400 naming the problem.
LONE_SURROGATE = b'{"prompt": "\\udc80"}'


@pytest.mark.parametrize("path", ["/", "/v1/chat/completions", "/v1/completions"])
def test_lone_surrogate_escapes_in_json_are_400(stack: StackThread, path: str) -> None:
    body = (
        LONE_SURROGATE if path != "/v1/chat/completions" else b'{"messages": [{"role": "user", "content": "\\udc80"}]}'
    )
    reply = requests.post(
        stack.http_url + path,
        data=body,
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_encoding" and "\\udc80" in reply.json()["error"]["message"]


def test_lone_surrogate_in_a_websocket_frame_is_an_error_frame(socket: websocket.WebSocket) -> None:
    socket.send(LONE_SURROGATE.decode())
    (frame,) = read_round(socket)
    assert json.loads(frame)["error"]["code"] == "invalid_encoding"


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"no boundary"),
        ("multipart/form-data; boundary=zz", b"not the boundary"),
        (
            "multipart/form-data; boundary=zz",
            b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\ncut',
        ),
        (
            "multipart/form-data; boundary=zz",
            b'--zz\r\nContent-Disposition: form-data; name="file"; filename="\xed\xb2\x80.txt"\r\n\r\nx\r\n--zz--\r\n',
        ),
    ],
)
def test_malformed_multipart_uploads_are_400(stack: StackThread, content_type: str, body: bytes) -> None:
    reply = requests.post(
        stack.http_url + "/api/kb/fuzz/documents",
        data=body,
        headers={**AUTH, "Content-Type": content_type},
        timeout=REQUEST_TIMEOUT_S,
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == "file" and reply.json()["documents"] == []


@pytest.mark.parametrize("name", ["missing.js", "vendor", "..%2F..%2Fpyproject.toml"])
def test_static_files_that_are_not_there_are_a_json_404(stack: StackThread, name: str) -> None:
    reply = requests.get(f"{stack.http_url}/static/{name}", timeout=REQUEST_TIMEOUT_S)
    assert reply.status_code == 404 and reply.json()["error"]["status"] == 404
    assert requests.get(f"{stack.http_url}/static/app.js", timeout=REQUEST_TIMEOUT_S).status_code == 200


def test_the_socket_and_the_server_still_answer_afterwards(socket: websocket.WebSocket, stack: StackThread) -> None:
    socket.send(json.dumps({"prompt": "What is the capital of France?", "max_new_tokens": 12}))
    assert "Paris" in "".join(read_round(socket))
    reply = requests.post(
        stack.http_url + "/",
        json={"prompt": "What is the capital of France?", "max_new_tokens": 12},
        headers=AUTH,
        timeout=REQUEST_TIMEOUT_S,
    )
    assert reply.status_code == 200 and "Paris" in reply.json()["response"]


# Nesting 200,000 deep: Python's JSON decoder would recurse once per level (RecursionError, once a 500 on
# every route); each surface measures the depth first and answers 400 naming what it could not read.
DEEP = "[" * 200_000 + "]" * 200_000
DEEP_BODIES = {
    "/": '{"prompt": "hi", "history": ' + DEEP + "}",
    "/api/predict/svc": '{"prompt": "hi", "history": ' + DEEP + "}",
    "/v1/chat/completions": '{"model": "m", "messages": ' + DEEP + "}",
    "/v1/completions": '{"model": "m", "prompt": ' + DEEP + "}",
    "/v1/embeddings": '{"model": "m", "input": ' + DEEP + "}",
    "/tokenize": '{"prompt": ' + DEEP + "}",
    "/detokenize": '{"tokens": ' + DEEP + "}",
}


@pytest.mark.parametrize("content_type", ["application/json", None])
@pytest.mark.parametrize("path", list(DEEP_BODIES))
def test_json_nested_200000_deep_is_a_400_on_every_route(
    stack: StackThread, path: str, content_type: str | None
) -> None:
    headers = {**AUTH, **({"Content-Type": content_type} if content_type else {})}
    reply = requests.post(stack.http_url + path, data=DEEP_BODIES[path], headers=headers, timeout=REQUEST_TIMEOUT_S)
    assert reply.status_code == 400, reply.text[:300]
    error = reply.json()["error"]
    assert error["param"] == "body" and "nested deeper than 128" in error["message"]


def test_json_nested_200000_deep_in_a_websocket_frame_is_an_error_frame(socket: websocket.WebSocket) -> None:
    socket.send(DEEP_BODIES["/"])
    (frame,) = read_round(socket)
    error = json.loads(frame)["error"]
    assert error["status"] == 400 and error["param"] == "body" and "nested deeper" in error["message"]


def test_template_variables_deeper_than_protobuf_carries_are_a_400(stack: StackThread) -> None:
    """Within the body's depth limit, but chat_template_kwargs travel as a protobuf Struct, which
    protobuf refuses past 100 nested messages."""
    kwargs: Any = "x"
    for _ in range(60):
        kwargs = {"a": kwargs}
    for path, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/tokenize", {"messages": [{"role": "user", "content": "hi"}]}),
    ):
        reply = requests.post(
            stack.http_url + path,
            json={**body, "chat_template_kwargs": kwargs},
            headers=AUTH,
            timeout=REQUEST_TIMEOUT_S,
        )
        assert reply.status_code == 400, reply.text[:300]
        assert reply.json()["error"]["param"] == "chat_template_kwargs"


def multipart(*parts: tuple[str, str | None, bytes]) -> tuple[bytes, str]:
    """A multipart/form-data body of (field name, filename or None, value) parts."""
    boundary = "hostile-boundary"
    body = b""
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize(
    "parts",
    [
        (("meta", None, DEEP.encode()), ("file", "deep.txt", b"a document")),  # deep JSON as a form value
        (("file", "deep.txt", DEEP[180_000:220_000].encode()),),  # deep JSON as a document: stored as text
        ((DEEP[:100], None, b"x"), ("file", "named.txt", b"a document")),  # brackets as a field name
        ((DEEP, None, b"x"),),  # a field name longer than a part header may be
    ],
)
def test_deep_nesting_in_upload_form_fields_is_never_a_500(stack: StackThread, parts: tuple[Any, ...]) -> None:
    """Form fields are never decoded as JSON: a deep value is text, a document is stored as its text,
    and a part header too long to read is a 400 naming the upload."""
    body, content_type = multipart(*parts)
    reply = requests.post(
        stack.http_url + "/api/kb/fuzz/documents",
        data=body,
        headers={**AUTH, "Content-Type": content_type},
        timeout=REQUEST_TIMEOUT_S,
    )
    files = [filename for _, filename, _ in parts if filename]
    if len(parts[0][0]) > 8000:
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "file", reply.text[:300]
    else:
        assert reply.status_code == 200, reply.text[:300]
        assert [d["filename"] for d in reply.json()["documents"]] == files


def test_a_protobuf_message_nested_200000_deep_is_invalid_argument(stack: StackThread) -> None:
    """gRPC has no JSON decoder: protobuf's own recursion limit refuses the message, which the server
    answers INVALID_ARGUMENT naming the request (grpcio alone would answer UNKNOWN)."""
    data = deep_struct_request(200_000)
    assert len(data) < 16 * 1024 * 1024  # under the server's message size limit: the parser sees it
    with grpc.insecure_channel(f"127.0.0.1:{stack.port}") as channel:
        generate = channel.unary_stream(f"/{SERVICE_NAME}/Generate")
        with pytest.raises(grpc.RpcError) as err:
            list(generate(data, metadata=(("authorization", TOKEN),), timeout=REQUEST_TIMEOUT_S))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
        assert err.value.details().startswith("request: not a valid protobuf message")
        shallow = list(generate(deep_struct_request(3), metadata=(("authorization", TOKEN),), timeout=60))
    assert pb.GenerateResponse.FromString(shallow[-1]).HasField("final")  # the same shape, not deep, is answered
