"""Fuzzing through the real stack: schemathesis against the bridge's OpenAPI document, and
hypothesis over WebSocket frames, with the real bridge, gRPC server, knowledge base and model.

The server runs with a 48-token context and 6 new tokens by default, so a generated request
costs at most a second of generation on two cores. Checks: no 5xx, every response documented
(status, content type, JSON schema), the token honoured, no request hangs (per-request timeout),
and a normal question still gets its answer afterwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatllm.bridge.openapi import DOCUMENT_FILE
from tests.servers import make_config
from tests.stack import StackThread

TOKEN = "fuzz-token-3c9d"
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
def stack(data_dir: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackThread]:
    config = make_config(
        data_dir,
        token=TOKEN,
        max_model_len=48,
        max_round=0,  # WebSocket history would soon fill the 48-token context and turn every frame into a 400
        max_new_tokens=6,
        temperature=0.0,
        knowledge_base=True,
        milvus_uri=str(tmp_path_factory.mktemp("fuzz-kb") / "kb.db"),
        max_upload_bytes=64 * 1024,
        request_timeout=0,  # no server-side 504: a slow answer must still be an answer
        ws_max_pending=4,
    )
    with StackThread(config) as running:
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
