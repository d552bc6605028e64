"""TLS through the real stack: the gRPC server with mutual TLS (over the fake engine), a bridge that reaches
it over mutual TLS and serves HTTPS/wss, certificates re-read without dropping connections, and
CORS. Every certificate is made here by `tests.certificates` (nothing is committed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
import requests
import websocket
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatllm.bridge.runner import BridgeServer
from chatllm.clients import AsyncChatClient
from chatllm.server.app import ChatLLMServer
from tests.certificates import CertificateAuthority, Issued
from tests.fake_engine import FakeEngine
from tests.servers import grpc_server, make_config
from tests.stack import fake_config

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "tls-test-token"
QUESTION = "What is the capital of France?"
ANSWER = "The capital of France is Paris."
BODY = {"prompt": QUESTION, "max_new_tokens": 8, "temperature": 0}
APP_ORIGIN = "https://app.example"


@dataclass
class Pki:
    folder: Path
    ca: CertificateAuthority
    other: CertificateAuthority
    grpc_server: Issued  # the gRPC server's files (overwritten by the reload test)
    bridge_server: Issued  # the bridge's HTTPS files (overwritten by the reload test)
    client: Issued  # signed by `ca`: accepted where client certificates are required
    stranger: Issued  # a client certificate from another CA


def copy(issued: Issued, folder: Path, name: str) -> Issued:
    target = Issued(folder / f"{name}.crt", folder / f"{name}.key")
    shutil.copy(issued.cert, target.cert)
    shutil.copy(issued.key, target.key)
    return target


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, other = CertificateAuthority(folder, "main"), CertificateAuthority(folder, "other")
    server = ca.issue("server")
    return Pki(
        folder,
        ca,
        other,
        copy(server, folder, "grpc"),
        copy(server, folder, "https"),
        ca.issue("bridge-client", client=True),
        other.issue("stranger", client=True),
    )


@dataclass
class SecureStack:
    server: ChatLLMServer
    bridge: BridgeServer

    @property
    def grpc_target(self) -> str:
        return f"localhost:{self.server.port}"

    @property
    def https_url(self) -> str:
        return f"https://localhost:{self.bridge.port}"

    @property
    def wss_url(self) -> str:
        return f"wss://localhost:{self.bridge.port}"


@pytest_asyncio.fixture(scope="module")
async def stack(data_dir: Path, pki: Pki) -> AsyncIterator[SecureStack]:
    """gRPC server with mutual TLS; a separate bridge that reaches it over mutual TLS and serves HTTPS."""
    server_config = fake_config(
        data_dir,
        token=TOKEN,
        tls_cert=str(pki.grpc_server.cert),
        tls_key=str(pki.grpc_server.key),
        tls_client_ca=str(pki.ca.cert),
        temperature=0.0,
    )
    bridge_config = make_config(
        data_dir,
        token=TOKEN,
        tls_cert=str(pki.bridge_server.cert),
        tls_key=str(pki.bridge_server.key),
        tls_ca=str(pki.ca.cert),
        upstream_tls_cert=str(pki.client.cert),
        upstream_tls_key=str(pki.client.key),
        cors_origins=(APP_ORIGIN,),
    )
    async with grpc_server(server_config, FakeEngine(answer=ANSWER, stall=0.01)) as server:
        bridge = BridgeServer(bridge_config, f"localhost:{server.port}")
        await bridge.start()
        try:
            yield SecureStack(server, bridge)
        finally:
            await bridge.stop()


def client(stack: SecureStack, ca: Path | None, cert: Issued | None = None) -> AsyncChatClient:
    return AsyncChatClient(
        stack.grpc_target,
        token=TOKEN,
        timeout=60,
        tls_ca=ca,
        tls_cert=cert.cert if cert else None,
        tls_key=cert.key if cert else None,
    )


# ---------------------------------------------------------------- gRPC


async def test_grpc_over_mutual_tls_answers(stack: SecureStack, pki: Pki) -> None:
    async with client(stack, pki.ca.cert, pki.client) as secure:
        assert "Paris" in (await secure.chat(QUESTION, max_new_tokens=8)).text


@pytest.mark.parametrize(
    ("trust", "certificate", "why"),
    [
        ("other", "client", "trusts another CA"),
        ("main", None, "shows no client certificate"),
        ("main", "stranger", "shows a client certificate from another CA"),
    ],
)
async def test_grpc_refuses_the_handshake(
    stack: SecureStack, pki: Pki, trust: str, certificate: str | None, why: str
) -> None:
    ca = pki.ca.cert if trust == "main" else pki.other.cert
    async with client(stack, ca, getattr(pki, certificate) if certificate else None) as refused:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await refused.chat(QUESTION, max_new_tokens=2, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, why


async def test_a_plaintext_client_gets_nothing_from_the_tls_port(stack: SecureStack) -> None:
    async with AsyncChatClient(stack.grpc_target, token=TOKEN, timeout=10) as plain:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await plain.server_info()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_tls_without_client_certificates(data_dir: Path, pki: Pki) -> None:
    """--tls-cert/--tls-key alone: any client that trusts the CA connects (the server's health answers
    while the model is not even loaded), one that trusts another CA does not."""
    config = make_config(data_dir, tls_cert=str(pki.grpc_server.cert), tls_key=str(pki.grpc_server.key))
    server = ChatLLMServer(config)
    await server.start()
    try:
        for ca, works in ((pki.ca.cert, True), (pki.other.cert, False)):
            credentials = grpc.ssl_channel_credentials(ca.read_bytes())
            async with grpc.aio.secure_channel(f"localhost:{server.port}", credentials) as channel:
                check = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
                if works:
                    assert (await check).status == health_pb2.HealthCheckResponse.SERVING
                else:
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await check
                    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop()


# ---------------------------------------------------------------- HTTPS and wss


def https(method: str, url: str, ca: Path, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": TOKEN, **kwargs.pop("headers", {})}
    return requests.request(method, url, headers=headers, verify=str(ca), timeout=120, **kwargs)


async def test_https_answers_through_the_mutual_tls_upstream(stack: SecureStack, pki: Pki) -> None:
    reply = await asyncio.to_thread(https, "POST", stack.https_url + "/", pki.ca.cert, json=BODY)
    assert reply.status_code == 200 and "Paris" in reply.json()["response"]
    with pytest.raises(requests.exceptions.SSLError):
        await asyncio.to_thread(https, "POST", stack.https_url + "/", pki.other.cert, json=BODY)
    with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP on the HTTPS port
        await asyncio.to_thread(requests.get, f"http://localhost:{stack.bridge.port}/healthz", timeout=10)


def wss_round(url: str, ca: Path, origin: str | None = None) -> list[str]:
    ws = websocket.create_connection(
        url, header=[f"Authorization: {TOKEN}"], sslopt={"ca_certs": str(ca)}, origin=origin, timeout=120
    )
    try:
        ws.send(json.dumps(BODY))
        frames = [ws.recv()]
        while frames[-1] != "<EOS>":
            frames.append(ws.recv())
        return frames
    finally:
        ws.close()


async def test_wss_answers(stack: SecureStack, pki: Pki) -> None:
    frames = await asyncio.to_thread(wss_round, stack.wss_url + "/", pki.ca.cert)
    assert "Paris" in "".join(frames[:-1]) and frames[-1] == "<EOS>"


async def test_https_with_client_certificates(stack: SecureStack, data_dir: Path, pki: Pki) -> None:
    config = make_config(
        data_dir,
        tls_cert=str(pki.bridge_server.cert),
        tls_key=str(pki.bridge_server.key),
        tls_client_ca=str(pki.ca.cert),
        tls_ca=str(pki.ca.cert),
        upstream_tls_cert=str(pki.client.cert),
        upstream_tls_key=str(pki.client.key),
    )
    bridge = BridgeServer(config, stack.grpc_target)
    await bridge.start()
    url = f"https://localhost:{bridge.port}/healthz"
    try:
        mine = (str(pki.client.cert), str(pki.client.key))
        reply = await asyncio.to_thread(requests.get, url, verify=str(pki.ca.cert), cert=mine, timeout=30)
        assert reply.status_code == 200
        for certificate in (None, (str(pki.stranger.cert), str(pki.stranger.key))):
            with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
                await asyncio.to_thread(requests.get, url, verify=str(pki.ca.cert), cert=certificate, timeout=30)
    finally:
        await bridge.stop()


# ---------------------------------------------------------------- certificates re-read


def swap_in(target: Issued, new: Issued) -> None:
    shutil.copy(new.cert, target.cert)
    shutil.copy(new.key, target.key)


@contextlib.contextmanager
def certificates_from(target: Issued, new: Issued) -> Iterator[None]:
    """Put `new`'s files where `target`'s are, and the old ones back afterwards."""
    keep = Issued(target.cert.with_suffix(".crt.keep"), target.key.with_suffix(".key.keep"))
    swap_in(keep, target)
    swap_in(target, new)
    try:
        yield
    finally:
        swap_in(target, keep)


async def test_grpc_certificates_reload_without_dropping_connections(stack: SecureStack, pki: Pki) -> None:
    """Reload (what SIGHUP calls): a stream that was running finishes on its old TLS session, the old
    channel's connection still takes calls, new connections get the new certificate."""
    async with client(stack, pki.ca.cert, pki.client) as old:
        running = old.stream("Count from one to fifty in words.", max_new_tokens=48, ignore_eos=True)
        first = await running.read()
        assert first.text
        with certificates_from(pki.grpc_server, pki.other.issue("server-2")):
            stack.server.reload_certificates()
            async with client(stack, pki.other.cert, pki.client) as renewed:
                assert "Paris" in (await renewed.chat(QUESTION, max_new_tokens=8)).text
            async with client(stack, pki.ca.cert, pki.client) as stale:
                with pytest.raises(grpc.aio.AioRpcError):
                    await stale.server_info()
            rest = []
            while (response := await running.read()) is not grpc.aio.EOF:
                rest.append(response)
            assert rest[-1].HasField("final") and rest[-1].final.usage.completion_tokens == 48
            assert (await old.server_info()).max_queue > 0  # same connection, still open
        stack.server.reload_certificates()  # the original files are back


async def test_https_certificates_reload_without_dropping_connections(stack: SecureStack, pki: Pki) -> None:
    session = requests.Session()  # one kept-alive connection (verify per request: REQUESTS_CA_BUNDLE wins over
    ca = str(pki.ca.cert)  # a session's own `verify`)
    body = {"prompt": "Count from one to fifty in words.", "max_new_tokens": 40, "use_stream_chat": True}
    streaming = await asyncio.to_thread(
        session.post, stack.https_url + "/", json=body, headers={"Authorization": TOKEN}, stream=True, verify=ca
    )
    pieces = streaming.iter_lines(delimiter=b"\0")
    assert json.loads(await asyncio.to_thread(next, pieces))["response"] is not None
    try:
        with certificates_from(pki.bridge_server, pki.other.issue("https-2")):
            stack.bridge.reload_certificates()
            reply = await asyncio.to_thread(https, "GET", stack.https_url + "/healthz", pki.other.cert)
            assert reply.status_code == 200
            with pytest.raises(requests.exceptions.SSLError):
                await asyncio.to_thread(https, "GET", stack.https_url + "/healthz", pki.ca.cert)
            rest = [json.loads(p) for p in await asyncio.to_thread(list, pieces) if p]
            assert rest[-1]["usage"]["completion_tokens"] > 0  # the open stream ended normally
            again = await asyncio.to_thread(session.get, stack.https_url + "/healthz", verify=ca, timeout=30)
            assert again.status_code == 200  # the kept-alive connection still works
    finally:
        stack.bridge.reload_certificates()
        session.close()


async def test_a_broken_certificate_file_keeps_the_current_one(
    stack: SecureStack, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Issued(pki.folder / "broken.crt", pki.folder / "broken.key")
    broken.cert.write_text("not a certificate")
    broken.key.write_text("not a key")
    with certificates_from(pki.bridge_server, broken), certificates_from(pki.grpc_server, broken):
        stack.bridge.reload_certificates()
        stack.server.reload_certificates()
    assert "HTTPS: kept the current certificate" in caplog.text and "gRPC TLS: kept" in caplog.text
    reply = await asyncio.to_thread(https, "GET", stack.https_url + "/healthz", pki.ca.cert)
    assert reply.status_code == 200
    async with client(stack, pki.ca.cert, pki.client) as fresh:
        assert (await fresh.server_info()).max_queue > 0


# ---------------------------------------------------------------- CORS


def preflight(url: str, ca: Path, origin: str, method: str = "POST") -> requests.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
    }
    return requests.options(url, headers=headers, verify=str(ca), timeout=30)


@pytest.mark.parametrize("path", ["/", "/v1/chat/completions", "/api/kb/docs/documents"])
async def test_a_preflight_from_an_allowed_origin_passes(stack: SecureStack, pki: Pki, path: str) -> None:
    reply = await asyncio.to_thread(preflight, stack.https_url + path, pki.ca.cert, APP_ORIGIN)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "POST" in reply.headers["Access-Control-Allow-Methods"]
    assert reply.headers["Access-Control-Allow-Headers"] == "authorization, content-type, x-stainless-os"
    assert int(reply.headers["Access-Control-Max-Age"]) > 0
    assert "Origin" in reply.headers["Vary"]


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example:8443", "http://app.example", "null"])
async def test_a_preflight_from_another_origin_is_refused(stack: SecureStack, pki: Pki, origin: str) -> None:
    reply = await asyncio.to_thread(preflight, stack.https_url + "/", pki.ca.cert, origin)
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in reply.headers


async def test_a_preflight_for_a_method_the_api_has_not_is_refused(stack: SecureStack, pki: Pki) -> None:
    reply = await asyncio.to_thread(preflight, stack.https_url + "/", pki.ca.cert, APP_ORIGIN, "PUT")
    assert reply.status_code == 405 and reply.json()["error"]["param"] == "Access-Control-Request-Method"


async def test_responses_to_an_allowed_origin_carry_cors_headers(stack: SecureStack, pki: Pki) -> None:
    origin = {"Origin": APP_ORIGIN}
    answered = await asyncio.to_thread(https, "POST", stack.https_url + "/", pki.ca.cert, json=BODY, headers=origin)
    streamed = await asyncio.to_thread(
        https, "POST", stack.https_url + "/", pki.ca.cert, json={**BODY, "use_stream_chat": True}, headers=origin
    )
    refused = await asyncio.to_thread(
        requests.post, stack.https_url + "/", json=BODY, headers=origin, verify=str(pki.ca.cert), timeout=30
    )
    assert answered.status_code == 200 and "Paris" in answered.json()["response"]
    assert streamed.status_code == 200 and streamed.content.endswith(b"\0")
    assert refused.status_code == 401  # no token: the page can read why
    for reply in (answered, streamed, refused):
        assert reply.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert "Retry-After" in reply.headers["Access-Control-Expose-Headers"]
        assert "Origin" in reply.headers["Vary"]


async def test_requests_from_another_origin_are_refused(stack: SecureStack, pki: Pki) -> None:
    """A cross-site page's "simple" POST (no preflight) never runs, even with a valid token."""
    evil = {"Origin": "https://evil.example"}
    reply = await asyncio.to_thread(https, "POST", stack.https_url + "/", pki.ca.cert, json=BODY, headers=evil)
    assert reply.status_code == 403 and reply.json()["error"]["param"] == "Origin"
    assert "Access-Control-Allow-Origin" not in reply.headers
    upload = await asyncio.to_thread(
        https,
        "POST",
        stack.https_url + "/api/kb/docs/documents",
        pki.ca.cert,
        files={"file": ("a.txt", b"hello")},
        headers=evil,
    )
    assert upload.status_code == 403


async def test_the_bridges_own_origin_always_works(stack: SecureStack, pki: Pki) -> None:
    own = {"Origin": stack.https_url}
    reply = await asyncio.to_thread(https, "POST", stack.https_url + "/", pki.ca.cert, json=BODY, headers=own)
    assert reply.status_code == 200 and "Paris" in reply.json()["response"]
    frames = await asyncio.to_thread(wss_round, stack.wss_url + "/", pki.ca.cert, stack.https_url)
    assert "Paris" in "".join(frames[:-1])


async def test_the_websocket_handshake_is_checked_against_the_same_origins(stack: SecureStack, pki: Pki) -> None:
    frames = await asyncio.to_thread(wss_round, stack.wss_url + "/", pki.ca.cert, APP_ORIGIN)
    assert "Paris" in "".join(frames[:-1])
    for origin in ("https://evil.example", "null"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            await asyncio.to_thread(wss_round, stack.wss_url + "/", pki.ca.cert, origin)
        assert refused.value.status_code == 403, origin
