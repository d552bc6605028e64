"""One fleet for the whole session: two `chatllm server` replicas (vLLM, one CPU thread each, a small
KV cache, fp32 so answers are exact) as subprocesses, and bridges in front of them on demand.

Every fleet test shares it (the suite may start only a few models): `kill(i)` (SIGKILL, a lost
machine) and `restart(i)` (the same ports again, so bridges that list the replica by address see it
come back) are the only things a test may do to a replica, and a test that kills one revives it
before it ends (`revive()`). What the replicas and bridges are started with lives in one place,
`FleetSettings` (the `fleet_settings` fixture): extend it there (a state store, a token file, a
service started first) and every fleet test runs against that.

    def test_x(fleet: Fleet) -> None:
        with fleet.bridge("--routing", "prefix") as bridge:
            requests.post(bridge.http_url + "/v1/chat/completions", ...)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from chatllm.proto import SERVICE_NAME
from chatllm.server.engines.vllm_setup import vllm_build
from tests.conftest import OUTPUT, ChatllmProcess
from tests.redis_server import FLEET_DATABASE, RedisServer

REPLICAS = 2
MODEL = "SmolLM2-135M-Instruct"  # the built-in model's served name
START_TIMEOUT_S = 600.0  # two engines loading at once on a busy 2-core machine
MAX_NEW_TOKENS = 32


@dataclass
class FleetSettings:
    """What every replica and every bridge of the fleet is started with (besides ports)."""

    replica_args: list[str] = field(
        default_factory=lambda: [
            "--backend",
            "vllm",
            "--precision",
            "fp32",  # exact, repeatable answers
            "--num-threads",
            "1",
            "--kv-cache-space",
            "0.5",
            "--max-model-len",
            "4096",
            "--max-new-tokens",
            str(MAX_NEW_TOKENS),
            "--no-knowledge-base",
            "--shutdown-grace",
            "5",
        ]
    )
    bridge_args: list[str] = field(default_factory=lambda: ["--shutdown-grace", "5"])
    env: dict[str, str] = field(default_factory=dict)  # for replicas and bridges alike


@dataclass
class FleetReplica:
    index: int
    process: ChatllmProcess
    grpc_port: int = 0
    metrics_port: int = 0
    starts: int = 1

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """The replica's HTTP side: /metrics, /health, /load."""
        return f"http://127.0.0.1:{self.metrics_port}"

    @property
    def alive(self) -> bool:
        return self.process.proc.poll() is None


@dataclass
class FleetBridge:
    process: ChatllmProcess
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.process.log()


class Fleet:
    def __init__(self, settings: FleetSettings, data_dir: Path, logs: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.logs = logs
        self.replicas: list[FleetReplica] = []
        self._bridges = 0
        self._cpus = sorted(os.sched_getaffinity(0))

    @property
    def upstream(self) -> str:
        """`--upstream` for a bridge in front of every replica (an address list)."""
        return ",".join(replica.target for replica in self.replicas)

    @property
    def model_starts(self) -> int:
        return sum(replica.starts for replica in self.replicas)

    def start(self) -> None:
        for index in range(REPLICAS):
            # The HTTP side's port is chosen here: 0 would turn it off.
            metrics_port = free_port()
            self.replicas.append(FleetReplica(index, self._launch(index, 0, metrics_port), metrics_port=metrics_port))
        for replica in self.replicas:
            self._wait_listening(replica)
        for replica in self.replicas:
            self._wait_serving(replica)

    def kill(self, index: int) -> None:
        """SIGKILL replica `index` and its engine processes, as a lost machine."""
        replica = self.replicas[index]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(replica.process.proc.pid, signal.SIGKILL)
        replica.process.proc.wait(30)
        replica.process.stop()

    def restart(self, index: int) -> None:
        """Start replica `index` again on its old ports; returns once it is SERVING."""
        replica = self.replicas[index]
        if replica.alive:
            raise AssertionError(f"replica {index} is still running")
        replica.process = self._launch(index, replica.grpc_port, replica.metrics_port)
        replica.starts += 1
        self._wait_listening(replica)
        self._wait_serving(replica)

    def revive(self) -> None:
        """Restart whatever replica a test killed (tests that kill call this before they end)."""
        for replica in self.replicas:
            if not replica.alive:
                self.restart(replica.index)

    def stop(self) -> None:
        for replica in self.replicas:
            replica.process.stop()

    @contextlib.contextmanager
    def bridge(self, *args: str, upstream: str | None = None) -> Iterator[FleetBridge]:
        """A `chatllm bridge` in front of the fleet (or `upstream`), with the settings' bridge args plus `args`."""
        argv = ["bridge", "--host", "127.0.0.1", "--port", "0", "--upstream", upstream or self.upstream]
        argv += [*self.settings.bridge_args, *args]
        self._bridges += 1
        process = ChatllmProcess(argv, self.logs / f"bridge-{self._bridges}.log", self.settings.env)
        try:
            port = int(process.wait_for_log(r"HTTP listening on [^:\s]+:(\d+)", 60).group(1))
            yield FleetBridge(process, port)
        finally:
            process.stop()

    def _launch(self, index: int, grpc_port: int, metrics_port: int) -> ChatllmProcess:
        argv = ["server", "--grpc-host", "127.0.0.1", "--grpc-port", str(grpc_port)]
        argv += ["--metrics-port", str(metrics_port), "--data-dir", str(self.data_dir), *self.settings.replica_args]
        # One core each: two engines spinning OpenMP threads on the same cores slow each other many times over.
        env = {"VLLM_CPU_OMP_THREADS_BIND": str(self._cpus[index % len(self._cpus)]), **self.settings.env}
        starts = self.replicas[index].starts + 1 if index < len(self.replicas) else 1
        return ChatllmProcess(argv, self.logs / f"replica-{index}-start-{starts}.log", env)

    def _wait_listening(self, replica: FleetReplica) -> None:
        process = replica.process
        replica.grpc_port = int(process.wait_for_log(r"gRPC listening on [^:\s]+:(\d+)", START_TIMEOUT_S).group(1))

    def _wait_serving(self, replica: FleetReplica) -> None:
        replica.process.wait_for_log(r"ready: ", START_TIMEOUT_S)
        deadline = time.monotonic() + 30
        while readiness(replica.target) != health_pb2.HealthCheckResponse.SERVING:
            if time.monotonic() > deadline:
                raise AssertionError(f"replica {replica.index} logged ready but is not SERVING")
            time.sleep(0.1)


def free_port() -> int:
    """A loopback port nothing listens on now (for the flags where 0 means off, not any)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def readiness(target: str) -> int:
    """The replica's `chatllm.v1.ChatLLM` health status (UNKNOWN when it cannot be reached)."""
    with grpc.insecure_channel(target) as channel:
        try:
            request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
            return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status
        except grpc.RpcError:
            return health_pb2.HealthCheckResponse.UNKNOWN


# What the fleet's tests ask and read through a bridge.


def ask(url: str, messages: list[dict[str, str]], max_tokens: int = 8) -> dict:
    """A greedy OpenAI chat answer through the bridge at `url` (it must succeed)."""
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    response = requests.post(url + "/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def handbook(owner: str) -> str:
    """A system prompt of about 700 tokens, unique to `owner` from its first words."""
    rules = " ".join(f"Rule {i} of {owner}: staff log every visit in the blue ledger before noon." for i in range(40))
    return f"You answer questions for {owner}. {rules}"


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of a series' samples whose labels include `labels` (0 when there is none)."""
    total = 0.0
    for match in re.finditer(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def bridge_metrics(bridge: FleetBridge) -> str:
    return requests.get(bridge.http_url + "/metrics", timeout=10).text


@pytest.fixture(scope="session")
def fleet_settings(redis_server: RedisServer) -> FleetSettings:
    """Every replica and bridge share the session's Redis as their state store (usage, limits, stored
    responses), as a deployed fleet does."""
    settings = FleetSettings()
    store = ["--state-store", redis_server.url(FLEET_DATABASE)]
    settings.replica_args += store
    settings.bridge_args += store
    return settings


@pytest.fixture(scope="session")
def fleet(fleet_settings: FleetSettings, data_dir: Path, model_dir: Path) -> Iterator[Fleet]:
    """The session's fleet, started on first use (a test that kills a replica revives it before it ends)."""
    if vllm_build() is None:
        pytest.skip("vLLM is not installed (make install puts it in .venv)")
    logs = OUTPUT / "fleet"
    logs.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(fleet_settings, data_dir, logs)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
