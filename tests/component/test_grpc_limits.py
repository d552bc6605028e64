"""Auth, admission control, request timeout and fuzzed requests against the real gRPC server, over the
fake engine (what is tested here is the server's, not the model's)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatllm.clients import ChatClient
from chatllm.proto import SERVICE_NAME, pb, pb_grpc
from tests.fake_engine import FakeEngine
from tests.servers import ServerThread, make_config
from tests.stack import fake_config

TOKEN = "s3cret-token-value"
ANSWER = "The capital of France is Paris."


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[ServerThread]:
    config = fake_config(data_dir, token=TOKEN, max_concurrent=1, max_queue=1, request_timeout=3.0)
    # A word every 10 ms: a long answer is still running while the test sends the next requests.
    with ServerThread(config, FakeEngine(answer=ANSWER, stall=0.01)) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[ChatClient]:
    with ChatClient(f"127.0.0.1:{server.port}", token=TOKEN) as c:
        yield c


@pytest.fixture
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    """A plain blocking channel, for calls no client makes (raw bytes, any request message)."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as raw:
        yield raw


def wait_idle(client: ChatClient, within: float = 2.0) -> pb.ServerInfo:
    deadline = time.monotonic() + within
    while True:
        info = client.server_info()
        if (info.active_requests == 0 and info.waiting_requests == 0) or time.monotonic() > deadline:
            return info
        time.sleep(0.05)


def test_missing_or_wrong_token_is_unauthenticated(server: ServerThread, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for token in (None, "wrong", f"Bearer {TOKEN}x"):
        with ChatClient(f"127.0.0.1:{server.port}", token=token) as anonymous:
            for call in (lambda c: c.chat("hi", max_new_tokens=2), lambda c: c.server_info()):
                with pytest.raises(grpc.RpcError) as err:
                    call(anonymous)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with ChatClient(f"127.0.0.1:{server.port}", token=f"Bearer {TOKEN}") as bearer:
        assert bearer.chat("Say hi", max_new_tokens=2).usage.completion_tokens == 2
    assert TOKEN not in caplog.text


def test_health_and_reflection_stay_open_without_token(server: ServerThread) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_overload_is_refused_at_once(client: ChatClient) -> None:
    """max_concurrent=1 and max_queue=1: the third concurrent request is refused immediately."""
    running = client.stream("Tell a long story.", max_new_tokens=500, ignore_eos=True)
    assert next(running).text  # generating
    queued = client.stream("Another long story.", max_new_tokens=500, ignore_eos=True)

    def wait_in_queue() -> None:
        with contextlib.suppress(grpc.RpcError):  # cancelled below
            next(queued, None)

    waiter = threading.Thread(target=wait_in_queue, daemon=True)
    waiter.start()  # blocks in the server's queue
    deadline = time.monotonic() + 5
    while client.server_info().waiting_requests < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        client.chat("third", max_new_tokens=2)
    refused_after = time.monotonic() - t0
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "capacity" in err.value.details()
    assert refused_after < 2.0, "refusal must not wait for a slot"
    running.cancel()
    queued.cancel()
    waiter.join(10)
    info = wait_idle(client)
    assert info.active_requests == 0 and info.waiting_requests == 0


def test_request_timeout_ends_the_stream_and_frees_the_engine(client: ChatClient) -> None:
    with pytest.raises(grpc.RpcError) as err:
        for _ in client.stream("Write an endless poem.", max_new_tokens=5000, ignore_eos=True):
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "--request-timeout" in err.value.details()
    assert wait_idle(client).active_requests == 0


turns = st.builds(pb.Turn, user=st.text(max_size=50), assistant=st.text(max_size=50))
sampling = st.builds(
    pb.SamplingParams,
    max_new_tokens=st.one_of(st.none(), st.integers(0, 4), st.just(2**32 - 1)),
    temperature=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32)),
    top_k=st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1)),
    top_p=st.one_of(st.none(), st.floats(width=32)),
    do_sample=st.one_of(st.none(), st.booleans()),
    stop=st.lists(st.text(max_size=300), max_size=20),
    ignore_eos=st.booleans(),
)
requests = st.builds(
    pb.GenerateRequest,
    prompt=st.text(max_size=200),
    system_prompt=st.text(max_size=100),
    history=st.lists(turns, max_size=5),
    sampling=sampling,
    request_id=st.text(max_size=200),
    use_knowledge_base=st.booleans(),
    knowledge_base=st.text(max_size=80),
    retrieval_top_k=st.integers(0, 100),
    raw_prompt=st.booleans(),
)
ALLOWED = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=requests)
def test_fuzzed_generate_requests_never_fail_internally(channel: grpc.Channel, request: pb.GenerateRequest) -> None:
    """Any request is accepted (a stream starts) or refused with a client-error code, never INTERNAL."""
    stub = pb_grpc.ChatLLMStub(channel)
    call = stub.Generate(request, metadata=(("authorization", TOKEN),), timeout=30)
    try:
        next(call, None)
    except grpc.RpcError as err:
        assert err.code() in ALLOWED, (err.code(), err.details())
        if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert ":" in err.details()  # names the field
    finally:
        call.cancel()


RAW_METHODS = ("Generate", "GetServerInfo", "ListModels", "Retrieve", "ListDocuments")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(RAW_METHODS), payload=st.binary(max_size=300))
def test_fuzzed_request_bytes_are_refused_as_invalid_argument(
    channel: grpc.Channel, method: str, payload: bytes
) -> None:
    """Arbitrary bytes on the wire: a message that parses is served or refused as above; one that
    does not parse is INVALID_ARGUMENT (grpcio alone answers UNKNOWN, which reads as a server fault)."""
    path = f"/{SERVICE_NAME}/{method}"
    if method == "Generate":
        call = channel.unary_stream(path)(payload, metadata=(("authorization", TOKEN),), timeout=30)
        try:
            next(call, None)
        except grpc.RpcError as err:
            assert err.code() in ALLOWED, (err.code(), err.details())
        finally:
            call.cancel()
        return
    try:
        channel.unary_unary(path)(payload, metadata=(("authorization", TOKEN),), timeout=30)
    except grpc.RpcError as err:
        assert err.code() in ALLOWED | {grpc.StatusCode.NOT_FOUND}, (err.code(), err.details())


@pytest.mark.parametrize("method", ["GetServerInfo", "Generate"])
def test_corrupt_request_bytes_are_invalid_argument(channel: grpc.Channel, method: str) -> None:
    """A truncated varint cannot parse as any message: the answer says so, with INVALID_ARGUMENT."""
    path = f"/{SERVICE_NAME}/{method}"
    corrupt = b"\x08\xff"  # field 1, varint, then a continuation byte with nothing after it
    with pytest.raises(grpc.RpcError) as raised:
        if method == "Generate":
            list(channel.unary_stream(path)(corrupt, metadata=(("authorization", TOKEN),), timeout=30))
        else:
            channel.unary_unary(path)(corrupt, metadata=(("authorization", TOKEN),), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid protobuf message" in raised.value.details()


def test_server_still_answers_after_fuzzing(client: ChatClient) -> None:
    assert wait_idle(client, within=10).active_requests == 0
    assert client.chat("What is the capital of France?", temperature=0.0, max_new_tokens=12).text == ANSWER


async def test_server_metrics_endpoint_is_open_by_default_and_protectable(data_dir: Path) -> None:
    import aiohttp

    from chatllm.server.metrics_http import MetricsEndpoint

    for protect, expected in ((False, 200), (True, 401)):
        endpoint = MetricsEndpoint(make_config(data_dir, token=TOKEN, protect_metrics=protect).security, "127.0.0.1", 0)
        await endpoint.start()
        try:
            url = f"http://127.0.0.1:{endpoint.port}/metrics"
            async with aiohttp.ClientSession() as session:
                async with session.get(url) as anonymous:
                    assert anonymous.status == expected
                    if expected == 200:
                        assert "chatllm_requests_total" in await anonymous.text()
                async with session.get(url, headers={"Authorization": f"Bearer {TOKEN}"}) as with_token:
                    assert with_token.status == 200
                    assert TOKEN not in await with_token.text()
        finally:
            await endpoint.stop()
