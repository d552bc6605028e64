"""ops/k8s, checked without a cluster: Kubernetes' own OpenAPI schemas (kubernetes-validate,
strict: unknown fields are errors), the Prometheus Operator's CRD models for ServiceMonitor and
PrometheusRule, the real `chatllm` argument parser for container args, and the wiring between
the resources (probes, ports, selectors, grace periods, the bridge's upstream)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring

from chatllm.clients.cli import build_parser
from chatllm.kernel.config import Config
from chatllm.kernel.flags import from_args
from chatllm.proto import SERVICE_NAME
from tests.metric_names import exported_series_names, series_names_in

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


def test_every_replica_and_bridge_share_the_redis_state_store() -> None:
    service = resource("Service", "chatllm-redis")
    redis = resource("StatefulSet", "chatllm-redis")
    pod = redis["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    redis_ports = port_numbers(pod["spec"]["containers"][0])
    port = service["spec"]["ports"][0]
    assert redis_ports[port["targetPort"]] == port["port"]
    assert "--appendonly" in pod["spec"]["containers"][0]["args"]  # usage survives a Redis restart
    assert resource("Deployment", "chatllm-bridge")["spec"]["replicas"] == 2
    for deployment in ("chatllm-server", "chatllm-bridge"):
        config = chatllm_config(container(deployment)["args"])
        assert config.state.state_store == f"redis://{service['metadata']['name']}:{port['port']}/0", deployment


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


# ---------------------------------------------------------------------- autoscaling
TOLERATED_WAIT_S = 2.0  # the extra time to first token server-hpa.yaml's target stands for


def adapter_rules() -> list[dict[str, Any]]:
    config_map = resource("ConfigMap", "chatllm-prometheus-adapter-rules")
    return yaml.safe_load(config_map["data"]["config.yaml"])["rules"]


def test_the_autoscaler_scales_the_server_deployment_on_a_metric_the_adapter_serves() -> None:
    hpa = resource("HorizontalPodAutoscaler", "chatllm-server")["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "chatllm-server")
    assert "replicas" not in resource("Deployment", "chatllm-server")["spec"]  # the HPA owns the count
    assert 1 <= hpa["minReplicas"] < hpa["maxReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    served = {rule["name"]["as"] for rule in adapter_rules()}
    assert metric["pods"]["metric"]["name"] in served
    # Scale-down waits longer than scale-up: a removed replica drains, a re-added one reloads its model.
    assert (
        hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"]
        > hpa["behavior"]["scaleUp"]["stabilizationWindowSeconds"]
    )


def test_the_autoscaling_target_comes_from_the_measured_throughput_per_replica() -> None:
    """averageValue = tolerated wait x answers/s per replica, from the serving benchmark the file names (a
    later run, e.g. one on a busy machine, does not move the target until someone re-derives it)."""
    named = re.search(r"bench/results/(serving-[\w-]+)\.md", (REPO / "ops" / "k8s" / "server-hpa.yaml").read_text())
    assert named is not None, "server-hpa.yaml names the serving benchmark its target comes from"
    serving = json.loads((REPO / "bench" / "results" / f"{named.group(1)}.json").read_text())
    saturated = max((row for row in serving["rows"] if row["leg"] == "chatllm serve, gRPC"), key=lambda row: row["N"])
    answers_per_second = saturated["best_tokens_per_second"] / serving["tokens"]
    hpa = resource("HorizontalPodAutoscaler", "chatllm-server")["spec"]
    target = float(hpa["metrics"][0]["pods"]["target"]["averageValue"])
    assert target == round(TOLERATED_WAIT_S * answers_per_second), (target, answers_per_second)


def test_the_adapter_rules_name_exported_series_and_parse_as_promql(tmp_path: Path) -> None:
    exported = exported_series_names()
    rules = []
    for rule in adapter_rules():
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        assert series_names_in(rule["seriesQuery"]) <= exported
        assert series_names_in(rule["metricsQuery"]) <= exported
        assert re.fullmatch(rule["name"]["matches"], series_names_in(rule["seriesQuery"]).pop())
        # The adapter fills these in per request; promtool parses the result.
        query = (
            rule["metricsQuery"]
            .replace("<<.GroupBy>>", "namespace, pod")
            .replace("<<.LabelMatchers>>", 'namespace="chat", pod=~"chatllm-server-.*"')
        )
        rules.append({"record": rule["name"]["as"], "expr": query})
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": rules}]}))
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test-system` installs Debian's prometheus package"
    result = subprocess.run([promtool, "check", "rules", "rules.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
