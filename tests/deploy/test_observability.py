"""Prometheus rules, scrape configuration, prometheus-adapter rule and Grafana dashboard.

- The rules pass ``promtool check rules`` and their unit tests (``promtool test rules``).
- Every expression of the dashboard and of the adapter rule parses (promtool, as a rule).
- Every metric the rules, the dashboard and the adapter query is one the services export: the
  detector's are scraped from a real detector after an RPC; the masker's and the evaluator's
  come from the lists declared below until those services can be started here (fill STARTERS).
- The plain scrape configuration keeps exactly one target per pod, with the labels the
  ServiceMonitor gives (its relabelling is simulated on the rendered pods).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from faceoff.common.settings import ServerSettings
from faceoff.detector import server as detector_server
from faceoff.v1 import common_pb2, detector_pb2, detector_pb2_grpc
from tests.conftest import LoopThread, encode
from tests.deploy import promql
from tests.deploy.conftest import DEPLOY, REPO, Obj, by_kind, containers, tool
from tests.unit.test_imaging import PIXELS

OBSERVABILITY = DEPLOY / "observability"
PROMTOOL_FIX = (
    "run ./dev setup (it unpacks promtool from Debian's prometheus package into .venv/bin)"
)

#: Labels Prometheus adds to every scraped series (target labels), and `up`, which it makes.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "container", "endpoint"}
PROMETHEUS_METRICS: dict[str, set[str]] = {"up": set()}

#: What the cluster's standard exporters publish, as their documentation names it, for the
#: dashboard's pod and GPU rows: the kubelet's cAdvisor, kube-state-metrics, and NVIDIA's DCGM
#: exporter with its Kubernetes pod mapping (its pod labels arrive as ``exported_*`` when the
#: scrape does not honour them, as with the GPU Operator's ServiceMonitor).
_DCGM_LABELS = {"gpu", "UUID", "device", "modelName", "Hostname"} | {
    "exported_namespace",
    "exported_pod",
    "exported_container",
}
EXTERNAL_METRICS: dict[str, set[str]] = {
    "container_memory_working_set_bytes": {"namespace", "pod", "container", "image", "name", "id"},
    "container_cpu_usage_seconds_total": {
        "namespace",
        "pod",
        "container",
        "cpu",
        "image",
        "name",
        "id",
    },
    "kube_deployment_status_replicas_available": {"namespace", "deployment"},
    "kube_horizontalpodautoscaler_status_desired_replicas": {
        "namespace",
        "horizontalpodautoscaler",
    },
    "kube_horizontalpodautoscaler_spec_max_replicas": {"namespace", "horizontalpodautoscaler"},
    "DCGM_FI_DEV_GPU_UTIL": _DCGM_LABELS,
    "DCGM_FI_DEV_FB_USED": _DCGM_LABELS,
}


def _histogram(name: str, labels: set[str]) -> dict[str, set[str]]:
    return {
        f"{name}_bucket": labels | {"le"},
        f"{name}_sum": set(labels),
        f"{name}_count": set(labels),
    }


#: The gRPC ecosystem's server metrics (go-grpc-prometheus / py-grpc-prometheus names).
GRPC_LABELS = {"grpc_type", "grpc_service", "grpc_method"}


def _server_metrics(namespace: str) -> dict[str, set[str]]:
    """What faceoff.common.interceptors.metrics and the process collectors export for every service."""
    return {
        f"{namespace}_requests_total": {"method", "code"},
        **_histogram(f"{namespace}_request_seconds", {"method"}),
        f"{namespace}_requests_in_progress": {"method"},
        "grpc_server_started_total": GRPC_LABELS,
        "grpc_server_handled_total": GRPC_LABELS | {"grpc_code"},
        **_histogram("grpc_server_handling_seconds", GRPC_LABELS),
        # prometheus_client's process and platform collectors
        "process_cpu_seconds_total": set(),
        "process_resident_memory_bytes": set(),
        "process_start_time_seconds": set(),
    }


#: Exported for the dashboards and rules people already have, no longer queried by ours: the
#: request counts of grpc_server_handled_total under each service's own name (docs/operations.md).
SUPERSEDED = {f"faceoff_{s}_requests_total" for s in ("detector", "evaluator")}

#: The metrics each service declares (sample name -> label names); every service is also
#: scraped live below, and must export what it declares.
DECLARED: dict[str, dict[str, set[str]]] = {
    "detector": _server_metrics("faceoff_detector"),
    "masker": {
        **_server_metrics("faceoff_masker"),
        "faceoff_masker_faces_protected_total": set(),
        "faceoff_masker_photos_protected_total": set(),
        "faceoff_masker_queue_depth": set(),
        "faceoff_masker_queue_capacity": set(),
        "faceoff_masker_queue_work": set(),
        "faceoff_masker_queue_work_capacity": set(),
        "faceoff_masker_interleaved_batches_total": set(),
        **_histogram("faceoff_masker_batch_size", set()),
        "faceoff_masker_attack_iterations_total": set(),
        **_histogram("faceoff_masker_attack_seconds", set()),
    },
    "evaluator": {
        **_server_metrics("faceoff_evaluator"),
        "faceoff_evaluator_backend_calls_total": {"backend", "outcome"},
        **_histogram("faceoff_evaluator_backend_seconds", {"backend"}),
    },
}


@dataclass
class Scrape:
    """What a service exports: sample name -> label names, and the /metrics text if scraped."""

    samples: dict[str, set[str]]
    text: str | None = None

    def label_values(self, name: str, label: str) -> set[str]:
        assert self.text is not None, "not scraped"
        return {
            s.labels[label] for f in text_string_to_metric_families(self.text) for s in f.samples
            if s.name == name and label in s.labels
        }  # fmt: skip


Starter = Callable[[LoopThread], Generator[Scrape, None, None]]


def _scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return Scrape(samples, text)


def _detector_metrics(loop_thread: LoopThread) -> Generator[Scrape, None, None]:
    settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=0, grace_seconds=1)
    running = loop_thread.run(
        detector_server.serve(
            settings, detector_server.DetectorSettings(), registry=CollectorRegistry()
        )
    )
    try:
        loop_thread.run(running.wait_ready(timeout=300))
        with grpc.insecure_channel(running.address) as channel:
            request = detector_pb2.DetectRequest(image=common_pb2.Image(data=encode(PIXELS)))
            detector_pb2_grpc.DetectorStub(channel).Detect(request, timeout=60)
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
        yield _scrape(running.metrics_port)
    finally:
        loop_thread.run(running.stop(0))


def _masker_metrics(loop_thread: LoopThread) -> Generator[Scrape, None, None]:
    from faceoff.masker import server as masker_server
    from faceoff.v1 import masker_pb2, masker_pb2_grpc

    settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=0, grace_seconds=1)
    detector = loop_thread.run(
        detector_server.serve(
            settings, detector_server.DetectorSettings(), registry=CollectorRegistry()
        )
    )
    masker = loop_thread.run(
        masker_server.serve(
            settings,
            masker_server.MaskerSettings(detector_address=detector.address),
            registry=CollectorRegistry(),
        )
    )
    try:
        loop_thread.run(detector.wait_ready(timeout=300))
        loop_thread.run(masker.wait_ready(timeout=600))
        photo = (REPO.parent / "shared/data/faceoff-celebs/photos/bill/bill_03.jpg").read_bytes()
        with grpc.insecure_channel(masker.address) as channel:
            request = masker_pb2.ProtectRequest(
                image=common_pb2.Image(data=photo),
                options=masker_pb2.ProtectOptions(profile="low", iterations=2),
            )
            masker_pb2_grpc.MaskerStub(channel).Protect(request, timeout=300)
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
        yield _scrape(masker.metrics_port)
    finally:
        loop_thread.run(masker.stop(0))
        loop_thread.run(detector.stop(0))


def _evaluator_metrics(loop_thread: LoopThread) -> Generator[Scrape, None, None]:
    from faceoff.evaluator import server as evaluator_server
    from faceoff.v1 import evaluator_pb2, evaluator_pb2_grpc

    settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=0, grace_seconds=1)
    _, evaluator_settings = evaluator_server.load_settings(env={}, local_recognizers="sface")
    running = loop_thread.run(
        evaluator_server.serve(settings, evaluator_settings, registry=CollectorRegistry())
    )
    try:
        loop_thread.run(running.wait_ready(timeout=300))
        photos = REPO.parent / "shared/data/faceoff-celebs/photos/bill"
        with grpc.insecure_channel(running.address) as channel:
            request = evaluator_pb2.EvaluateRequest(
                image=common_pb2.Image(data=(photos / "bill_03.jpg").read_bytes()),
                reference_images=[common_pb2.Image(data=(photos / "bill_04.jpg").read_bytes())],
                recognizers=["sface"],
            )
            evaluator_pb2_grpc.EvaluatorStub(channel).Evaluate(request, timeout=300)
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
        yield _scrape(running.metrics_port)
    finally:
        loop_thread.run(running.stop(0))


#: How to start each service and make it export every metric: a generator that starts the
#: server, does an RPC, yields the scrape and stops it.
STARTERS: dict[str, Starter | None] = {
    "detector": _detector_metrics,
    "masker": _masker_metrics,
    "evaluator": _evaluator_metrics,
}


@pytest.fixture(scope="module")
def scrapes(loop_thread: LoopThread) -> dict[str, Scrape]:
    """service -> what it exports: scraped from a live server, or as declared."""
    out = {}
    for service, starter in STARTERS.items():
        if starter is None:
            out[service] = Scrape(DECLARED[service])
            continue
        gen = starter(loop_thread)
        out[service] = next(gen)
        gen.close()
    return out


@pytest.fixture(scope="module")
def exported(scrapes: dict[str, Scrape]) -> dict[str, dict[str, set[str]]]:
    """service -> sample name -> label names."""
    return {service: scrape.samples for service, scrape in scrapes.items()}


# ---- the rules ------------------------------------------------------------------------------------


def _rules() -> dict[str, Any]:
    (rule,) = [
        d for d in yaml.safe_load_all((OBSERVABILITY / "prometheusrule.yaml").read_text()) if d
    ]
    return dict(rule["spec"])


def _all_rules() -> list[dict[str, Any]]:
    return [r for g in _rules()["groups"] for r in g["rules"]]


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the rules as a plain rule file and the promtool unit tests beside it."""
    folder = tmp_path_factory.mktemp("rules")
    (folder / "faceoff.rules.yml").write_text(yaml.safe_dump(_rules(), sort_keys=False))
    shutil.copy(OBSERVABILITY / "tests" / "faceoff-rules.test.yml", folder)
    return folder


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool", PROMTOOL_FIX), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_promtool_checks_the_rules(rules_dir: Path) -> None:
    proc = _promtool("check", "rules", "faceoff.rules.yml", cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_all_rules())} rules found" in proc.stdout


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    broken = {
        "groups": [
            {"name": "x", "rules": [{"alert": "Broken", "expr": "sum by (method (rate(x[5m]))"}]}
        ]
    }
    (tmp_path / "broken.yml").write_text(yaml.safe_dump(broken))
    assert _promtool("check", "rules", "broken.yml", cwd=tmp_path).returncode != 0


def test_alert_unit_tests_pass(rules_dir: Path) -> None:
    proc = _promtool("test", "rules", "faceoff-rules.test.yml", cwd=rules_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tested = set(
        re.findall(r"alertname: (\w+)", (rules_dir / "faceoff-rules.test.yml").read_text())
    )
    assert tested == {r["alert"] for r in _all_rules() if "alert" in r}, (
        "every alert has a unit test"
    )


def test_the_required_alerts_exist() -> None:
    alerts = {r["alert"]: r for r in _all_rules() if "alert" in r}
    assert {
        "FaceoffHighErrorRatio",
        "FaceoffHighLatencyP95",
        "FaceoffMaskerQueueSaturated",
        "FaceoffMaskerStalled",
    } <= set(alerts)
    for alert in alerts.values():
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
    stalled = alerts["FaceoffMaskerStalled"]["expr"]
    assert (
        "faceoff_masker_faces_protected_total" in stalled
        and "faceoff_masker_requests_total" in stalled
    )
    saturation = next(
        r for r in _all_rules() if r.get("record") == "faceoff_masker:queue_saturation:ratio"
    )
    assert (
        "faceoff_masker_queue_depth" in saturation["expr"]
        and "faceoff_masker_queue_capacity" in saturation["expr"]
    )


# ---- expressions from the dashboard and the adapter, parsed by promtool ---------------------------


def _dashboard() -> dict[str, Any]:
    return dict(json.loads((OBSERVABILITY / "grafana" / "faceoff-overview.json").read_text()))


def _dashboard_targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in _dashboard()["panels"] if p["type"] != "row" for t in p["targets"]]


def _grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "5m").replace("$namespace", "faceoff")


def _adapter_rule() -> dict[str, Any]:
    (rule,) = yaml.safe_load((OBSERVABILITY / "prometheus-adapter" / "config.yaml").read_text())[
        "rules"
    ]
    return dict(rule)


def _adapter_queries() -> list[str]:
    rule = _adapter_rule()
    metric = rule["name"]["as"]
    query = rule["metricsQuery"].replace("<<.Series>>", metric)
    query = query.replace("<<.LabelMatchers>>", 'namespace="faceoff",pod=~"masker-.*"').replace(
        "<<.GroupBy>>", "pod"
    )
    assert "<<" not in query
    return [rule["seriesQuery"], query]


def test_every_dashboard_and_adapter_expression_parses(tmp_path: Path) -> None:
    exprs = [_grafana_to_promql(t["expr"]) for _p, t in _dashboard_targets()] + _adapter_queries()
    rules = [{"record": f"check:expr_{i}", "expr": e} for i, e in enumerate(exprs)]
    (tmp_path / "exprs.yml").write_text(
        yaml.safe_dump({"groups": [{"name": "exprs", "rules": rules}]})
    )
    proc = _promtool("check", "rules", "exprs.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- every queried metric is exported -----------------------------------------------------------


def _queries() -> list[tuple[str, str]]:
    """(where, PromQL) of every query the rules, the dashboard and the adapter make."""
    out = [(r.get("record") or r.get("alert") or "", r["expr"]) for r in _all_rules()]
    out += [
        (f"dashboard: {p['title']}", _grafana_to_promql(t["expr"])) for p, t in _dashboard_targets()
    ]
    variable = next(v for v in _dashboard()["templating"]["list"] if v["name"] == "namespace")
    out.append(
        (
            "dashboard: $namespace",
            re.sub(r"^label_values\((.*), \w+\)$", r"\1", variable["definition"]),
        )
    )
    out += [("prometheus-adapter", q) for q in _adapter_queries()]
    return out


def _recorded() -> dict[str, set[str]]:
    """Recorded series -> the labels they carry (their grouping labels and their rule labels)."""
    recorded: dict[str, set[str]] = {}
    for rule in _all_rules():
        if "record" in rule:
            labels = promql.grouping_labels(rule["expr"]) - {"le"} | set(rule.get("labels", {}))
            recorded.setdefault(rule["record"], set()).update(labels)
    return recorded


@pytest.mark.parametrize(
    ("service", "rpc"), [("detector", "Detect"), ("masker", "Protect"), ("evaluator", "Evaluate")]
)
def test_each_live_service_exports_what_it_declares_and_counts_health_checks(
    scrapes: dict[str, Scrape], service: str, rpc: str
) -> None:
    scrape = scrapes[service]
    assert scrape.text is not None, f"the {service} is scraped live"
    for name, labels in DECLARED[service].items():
        assert name in scrape.samples and labels <= scrape.samples[name], name
    # Kubelet's gRPC probes call Check, which is counted like any RPC: hence method!~"Check|Watch".
    assert {rpc, "Check"} <= scrape.label_values(f"faceoff_{service}_requests_total", "method")


def test_every_queried_metric_is_exported_with_the_labels_used(
    exported: dict[str, dict[str, set[str]]],
) -> None:
    available: dict[str, set[str]] = {**PROMETHEUS_METRICS, **EXTERNAL_METRICS}
    for samples in exported.values():
        available.update(samples)
    recorded = _recorded()
    problems = []
    used = set()
    for where, expr in _queries():
        for name in promql.metric_names(expr):
            used.add(name)
            if name not in available and name not in recorded:
                problems.append(f"{where}: {name} is neither exported nor recorded")
        for metric, matchers in promql.selectors(expr):
            labels = available.get(metric or "", recorded.get(metric or "", set())) | TARGET_LABELS
            for label, _op, _value in matchers:
                if label not in labels:
                    problems.append(f"{where}: {metric} has no label {label!r}")
        names = promql.metric_names(expr)
        known = (
            set().union(*(available.get(n, recorded.get(n, set())) for n in names))
            if names
            else set()
        )
        known |= promql.created_labels(expr)
        for label in promql.grouping_labels(expr) - known - TARGET_LABELS:
            problems.append(f"{where}: groups by {label!r}, which none of {sorted(names)} has")
    assert not problems, "\n".join(problems)
    # The dashboard and rules use every metric the services export (histograms by any series),
    # but the per-service request counters that grpc_server_handled_total superseded.
    for service, samples in DECLARED.items():
        families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in samples} - SUPERSEDED
        unused = {
            f
            for f in families
            if not any(re.sub(r"_(bucket|sum|count)$", "", u) == f for u in used)
        }
        assert not unused, f"{service}: never queried: {sorted(unused)}"


def test_method_names_in_queries_are_rpcs() -> None:
    rpcs = set(
        re.findall(
            r"^\s*rpc (\w+)\(",
            "".join(p.read_text() for p in (REPO / "protos").rglob("*.proto")),
            flags=re.M,
        )
    )
    health = {"Check", "Watch"}
    for where, expr in _queries():
        for _metric, matchers in promql.selectors(expr):
            for label, _op, value in matchers:
                if label == "method":
                    for name in value.split("|"):
                        assert name in rpcs | health, f"{where}: method {name!r} is no RPC"


#: Labels with a fixed set of values: gRPC status names, and the evaluator's backend outcomes
#: (faceoff.evaluator.evaluation.OUTCOMES).
LABEL_VALUES = {
    "code": {c.name for c in grpc.StatusCode},
    "outcome": {
        "ok", "not_configured", "no_face", "timeout", "auth", "throttled", "unavailable", "bad_response", "rejected",
        "invalid", "internal",
    },
}  # fmt: skip


def test_fixed_label_values_in_queries_exist() -> None:
    checked = set()
    for where, expr in _queries():
        for _metric, matchers in promql.selectors(expr):
            for label, _op, value in matchers:
                if label in LABEL_VALUES:
                    checked.add(label)
                    assert set(value.split("|")) <= LABEL_VALUES[label], f"{where}: {label} {value}"
    assert checked == set(LABEL_VALUES)


# ---- the dashboard ------------------------------------------------------------------------------


def test_dashboard_is_a_well_formed_grafana_dashboard() -> None:
    dash = _dashboard()
    assert dash["uid"] == "faceoff-overview" and dash["title"] and dash["schemaVersion"] >= 36
    assert dash["id"] is None  # importable anywhere
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert (
        variables["datasource"]["type"] == "datasource"
        and variables["datasource"]["query"] == "prometheus"
    )
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert 'namespace=~"$namespace"' in target["expr"], (
                f"{panel['title']}: not filtered by namespace"
            )
            if "rate(" in target["expr"] or "increase(" in target["expr"]:
                assert "[$__rate_interval]" in target["expr"], panel["title"]


def test_dashboard_legends_name_labels_the_queries_return(
    exported: dict[str, dict[str, set[str]]],
) -> None:
    available: dict[str, set[str]] = {**PROMETHEUS_METRICS, **EXTERNAL_METRICS, **_recorded()}
    for samples in exported.values():
        available.update(samples)
    for panel, target in _dashboard_targets():
        expr = _grafana_to_promql(target["expr"])
        returned = promql.top_level_grouping(expr)
        if returned is None:
            returned = (
                set().union(*(available[n] for n in promql.metric_names(expr))) | TARGET_LABELS
            )
        if target.get("format") == "heatmap":
            returned = returned | {"le"}
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")):
            assert label in returned, (
                f"{panel['title']}: legend uses {label!r}; the query returns {sorted(returned)}"
            )


def test_dashboard_shows_what_the_issue_asks_for() -> None:
    exprs = [t["expr"] for _p, t in _dashboard_targets()]
    joined = "\n".join(exprs)
    for needle in (
        "rate(faceoff_masker_faces_protected_total",
        "rate(faceoff_masker_photos_protected_total",
        "faceoff_masker_queue_depth",
        "faceoff_masker_batch_size_bucket",
        # ops' questions (issue 14): one gRPC metric set, pods, replicas, GPUs
        "rate(grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "process_resident_memory_bytes",
        "container_memory_working_set_bytes",
        "container_cpu_usage_seconds_total",
        "kube_deployment_status_replicas_available",
        "kube_horizontalpodautoscaler_status_desired_replicas",
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
    ):
        assert needle in joined, needle
    for service in ("detector", "masker", "evaluator"):
        for quantile in ("0.5", "0.95"):
            assert any(
                f"histogram_quantile({quantile}, sum by (method, le) (rate(faceoff_{service}_request_seconds_bucket"
                in e
                for e in exprs
            )
        assert any(
            "sum by (grpc_service, grpc_code) (rate(grpc_server_handled_total" in e for e in exprs
        ), f"{service}: errors by code"


# ---- scraping: ServiceMonitor, plain scrape config, adapter ------------------------------------


def test_service_monitor_selects_the_three_services_and_their_metrics_port(
    rendered: dict[str, list[Obj]],
) -> None:
    objects = rendered["cpu+monitoring"]
    (monitor,) = by_kind(objects, "ServiceMonitor").values()
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    matching = [
        s
        for s in by_kind(objects, "Service").values()
        if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]
    # detector-headless matches the labels but has no metrics port: it adds no target
    selected = [s for s in matching if endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}]
    assert sorted(s["metadata"]["name"] for s in selected) == ["detector", "evaluator", "masker"]
    assert sorted(s["metadata"]["name"] for s in matching if s not in selected) == [
        "detector-headless"
    ]
    for service in selected:
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        assert (
            job == f"faceoff-{service['metadata']['name']}"
        )  # the job the alerts and dashboard use
    dashboard_map = by_kind(objects, "ConfigMap")["faceoff-grafana-dashboard"]
    assert json.loads(dashboard_map["data"]["faceoff-overview.json"]) == _dashboard()
    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"


def _relabel(labels: dict[str, str], configs: list[dict[str, Any]]) -> dict[str, str] | None:
    """Prometheus relabelling (actions keep and replace), as documented."""
    labels = dict(labels)
    for cfg in configs:
        action = cfg.get("action", "replace")
        value = cfg.get("separator", ";").join(
            labels.get(s, "") for s in cfg.get("source_labels", [])
        )
        match = re.fullmatch(cfg.get("regex", "(.*)"), value)
        if action == "keep":
            if not match:
                return None
        elif action == "replace":
            if match:
                replacement = re.sub(r"\$\{?(\d+)\}?", r"\\g<\1>", cfg.get("replacement", "$1"))
                result = match.expand(replacement)
                if result:
                    labels[cfg["target_label"]] = result
                else:
                    labels.pop(cfg["target_label"], None)
        else:
            raise AssertionError(f"relabel action {action} not simulated")
    return labels


def _sanitize(name: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", name)


def _pod_targets(
    pod_name: str, namespace: str, template: dict[str, Any], job: str
) -> list[dict[str, str]]:
    """What Prometheus's Kubernetes pod discovery yields for a pod: one target per container port."""
    meta = {
        "__meta_kubernetes_namespace": namespace,
        "__meta_kubernetes_pod_name": pod_name,
        "__metrics_path__": "/metrics",
        "job": job,
    }
    meta |= {
        f"__meta_kubernetes_pod_label_{_sanitize(k)}": v
        for k, v in template["metadata"].get("labels", {}).items()
    }
    meta |= {
        f"__meta_kubernetes_pod_annotation_{_sanitize(k)}": v
        for k, v in template["metadata"].get("annotations", {}).items()
    }
    targets = []
    for c in template["spec"]["containers"]:
        for port in c.get("ports", []):
            targets.append(meta | {
                "__address__": f"10.1.2.3:{port['containerPort']}",
                "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
            })  # fmt: skip
    return targets


def test_plain_scrape_config_keeps_one_target_per_pod_with_the_service_monitor_labels(
    rendered: dict[str, list[Obj]],
) -> None:
    config = yaml.safe_load((OBSERVABILITY / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    for name, deployment in by_kind(rendered["cpu"], "Deployment").items():
        template = deployment["spec"]["template"]
        kept = [
            t
            for t in (
                _relabel(t, job["relabel_configs"])
                for t in _pod_targets(f"{name}-abc", "faceoff", template, job["job_name"])
            )
            if t
        ]
        assert len(kept) == 1, name
        (target,) = kept
        metrics_port = next(
            p["containerPort"] for p in containers(deployment)[0]["ports"] if p["name"] == "metrics"
        )
        assert target["__address__"] == f"10.1.2.3:{metrics_port}"
        assert target["__metrics_path__"] == "/metrics"
        assert {k: target[k] for k in ("job", "namespace", "pod")} == {
            "job": f"faceoff-{name}",
            "namespace": "faceoff",
            "pod": f"{name}-abc",
        }
    # A pod of another application, even with the scrape annotation, is not scraped.
    other = {"metadata": {"labels": {"app": "shop"}, "annotations": {"prometheus.io/scrape": "true"}},
             "spec": {"containers": [{"name": "c", "ports": [{"name": "metrics", "containerPort": 8080}]}]}}  # fmt: skip
    assert not [
        t
        for t in (
            _relabel(t, job["relabel_configs"])
            for t in _pod_targets("shop-1", "default", other, "faceoff")
        )
        if t
    ]


def test_promtool_checks_the_scrape_config(tmp_path: Path) -> None:
    # Debian's promtool is built without Kubernetes discovery: check everything else with the
    # discovery block swapped for a static target (the test above checks the relabelling).
    config = yaml.safe_load((OBSERVABILITY / "prometheus" / "prometheus.yml").read_text())
    for job in config["scrape_configs"]:
        job.pop("kubernetes_sd_configs")
        job["static_configs"] = [{"targets": ["127.0.0.1:9101"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (tmp_path / "faceoff.rules.yml").write_text(yaml.safe_dump(_rules(), sort_keys=False))
    proc = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_adapter_rule_serves_the_metric_the_masker_hpa_asks_for(
    rendered: dict[str, list[Obj]],
) -> None:
    rule = _adapter_rule()
    for overlay in ("cpu", "gpu"):
        hpa = by_kind(rendered[overlay], "HorizontalPodAutoscaler")["masker"]
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "Pods" and metric["pods"]["metric"]["name"] == rule["name"]["as"]
    assert re.fullmatch(rule["name"]["matches"], "faceoff_masker_queue_depth")
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    assert promql.metric_names(rule["seriesQuery"]) == {"faceoff_masker_queue_depth"}


def test_operations_doc_lists_every_dashboard_panel_with_its_queries() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    for panel in _dashboard()["panels"]:
        if panel["type"] == "row":
            assert f"**{panel['title']}**" in doc, panel["title"]
            continue
        exprs = [t["expr"] for t in panel.get("targets", [])]
        query = "<br>".join("`" + e.replace("|", "\\|") + "`" for e in exprs)
        assert f"| {panel['title']} | {query} |" in doc, f"docs/operations.md: {panel['title']}"
