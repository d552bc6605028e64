"""ops/k8s, checked without a cluster: Kubernetes' own OpenAPI schemas (kubernetes-validate,
strict: unknown fields are errors), the Prometheus Operator's CRD models for ServiceMonitor and
PrometheusRule, the real `chatllm` argument parser for container args, and the wiring between
the resources (probes, ports, selectors, grace periods, the bridge's upstream)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring

from chatllm.clients.cli import build_parser
from chatllm.clients.config import Config, from_args
from chatllm.proto import SERVICE_NAME

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "ops" / "k8s"
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
DRAIN_MARGIN_S = 5  # engine stop after the drain
CRD_MODELS = {"ServiceMonitor": monitoring.ServiceMonitor, "PrometheusRule": monitoring.PrometheusRule}


def load_resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = []
    for name in kustomization["resources"]:
        resources.extend(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    return resources


RESOURCES = load_resources()


def resource(kind: str, name: str) -> dict[str, Any]:
    return next(r for r in RESOURCES if r["kind"] == kind and r["metadata"]["name"] == name)


def container(deployment: str) -> dict[str, Any]:
    return resource("Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]


def chatllm_config(argv: list[str]) -> Config:
    return from_args(build_parser().parse_args(argv), env={})


def port_numbers(spec: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in spec["ports"]}


def matches_crd(doc: dict[str, Any]) -> bool:
    """Valid for the CRD model, and nothing in it unknown to the CRD (the models drop unknown fields)."""
    model = CRD_MODELS[doc["kind"]].model_validate(doc)
    return bool(model.model_dump(by_alias=True, mode="json", exclude_unset=True) == doc)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_resources_match_the_kubernetes_schema(version: str) -> None:
    checked = 0
    for doc in RESOURCES:
        if doc["kind"] in CRD_MODELS:
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 6


def test_the_schema_check_can_fail() -> None:
    deployment = yaml.safe_load((K8S / "server.yaml").read_text().split("\n---\n")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["servcie"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("kind", sorted(CRD_MODELS))
def test_monitoring_resources_match_the_prometheus_operator_crds(kind: str) -> None:
    documents = [d for d in RESOURCES if d["kind"] == kind]
    assert documents
    for doc in documents:
        assert matches_crd(doc), doc["metadata"]["name"]


def test_the_crd_check_can_fail() -> None:
    monitor = yaml.safe_load((K8S / "servicemonitor.yaml").read_text().split("\n---\n")[0])
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert not matches_crd(monitor)
    monitor["spec"]["endpoints"][0] = {"port": 8001}
    with pytest.raises(ValueError):
        matches_crd(monitor)


def test_prometheusrule_is_alerts_yml_regenerated() -> None:
    spec = importlib.util.spec_from_file_location("prometheusrule", K8S / "prometheusrule.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (K8S / "prometheusrule.yaml").read_text() == module.render(), "run: python ops/k8s/prometheusrule.py"


def test_server_probes_use_the_standard_grpc_health_service_on_the_grpc_port() -> None:
    server = container("chatllm-server")
    config = chatllm_config(server["args"])
    assert port_numbers(server)["grpc"] == config.server.grpc_port
    assert port_numbers(server)["metrics"] == config.server.metrics_port
    assert server["livenessProbe"]["grpc"] == {"port": config.server.grpc_port, "service": ""}
    assert server["startupProbe"]["grpc"] == {"port": config.server.grpc_port, "service": ""}
    assert server["readinessProbe"]["grpc"] == {"port": config.server.grpc_port, "service": SERVICE_NAME}
    assert server["resources"]["limits"]["nvidia.com/gpu"] == server["resources"]["requests"]["nvidia.com/gpu"]
    assert config.engine.engine_backend == "vllm"


@pytest.mark.parametrize("deployment", ["chatllm-server", "chatllm-bridge"])
def test_termination_grace_covers_prestop_and_the_drain(deployment: str) -> None:
    pod = resource("Deployment", deployment)["spec"]["template"]["spec"]
    main = pod["containers"][0]
    pre_stop = main["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    config = chatllm_config(main["args"])
    assert pod["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + config.limits.shutdown_grace + DRAIN_MARGIN_S


def test_history_goes_to_a_per_pod_directory_on_the_shared_volume() -> None:
    pod = resource("Deployment", "chatllm-server")["spec"]["template"]["spec"]
    main = pod["containers"][0]
    config = chatllm_config(main["args"])
    mount = next(m for m in main["volumeMounts"] if m["mountPath"] == config.history.export_history_path)
    assert mount["subPathExpr"] == "$(POD_NAME)"
    assert any(
        e["name"] == "POD_NAME" and e["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" for e in main["env"]
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    claim = resource("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # several replicas mount it


def test_bridge_reaches_every_replica_through_the_headless_service() -> None:
    service = resource("Service", "chatllm-server-headless")
    assert service["spec"]["clusterIP"] == "None"
    pod_labels = resource("Deployment", "chatllm-server")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    server_ports = port_numbers(container("chatllm-server"))
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in server_ports and server_ports[port["targetPort"]] == port["port"]
    grpc_port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    bridge = chatllm_config(container("chatllm-bridge")["args"])
    assert bridge.bridge.upstream == f"dns:///{service['metadata']['name']}:{grpc_port}"


def test_bridge_probes_and_service_use_its_http_port() -> None:
    bridge = container("chatllm-bridge")
    config = chatllm_config(bridge["args"])
    assert port_numbers(bridge)["http"] == config.bridge.port
    assert bridge["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert bridge["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    service = resource("Service", "chatllm-bridge")
    pod_labels = resource("Deployment", "chatllm-bridge")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_service_monitors_select_the_services_and_name_the_jobs_like_prometheus_yml() -> None:
    scrape = yaml.safe_load((REPO / "ops" / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    jobs = {job["job_name"] for job in scrape}
    services = [r for r in RESOURCES if r["kind"] == "Service"]
    for monitor in (r for r in RESOURCES if r["kind"] == "ServiceMonitor"):
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [s for s in services if selector.items() <= s["metadata"]["labels"].items()]
        assert len(selected) == 1, monitor["metadata"]["name"]
        port_names = {p["name"] for p in selected[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
            assert endpoint["path"] == "/metrics"
            job = next(r["replacement"] for r in endpoint["relabelings"] if r["targetLabel"] == "job")
            assert job in jobs
