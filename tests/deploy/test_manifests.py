"""The rendered manifests: valid Kubernetes objects, and the properties the deployment promises.

Schemas come from kubernetes-validate (the Kubernetes OpenAPI schemas as JSON schemas, bundled,
offline), strict: an unknown or misspelt field is an error. The Prometheus Operator CRDs get a
minimal hand-written schema. The rest checks what a schema cannot: security settings, probes
on the gRPC health service, drain times, selectors that select, autoscalers that target, and
what the NetworkPolicies let through.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.conftest import DEPLOY, OVERLAYS, REPO, Obj, by_kind, containers, env

#: Oldest and newest Kubernetes minor versions the manifests are validated against.
K8S_VERSIONS = ("1.30", "1.37")

#: What the services listen on (the brief of each service's settings).
PORTS = {"detector": (50051, 9101), "masker": (50052, 9102), "evaluator": (50053, 9103)}
SERVICES = tuple(PORTS)

CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": {
                        "type": "object",
                        "properties": {"matchLabels": {"type": "object"}},
                    },
                    "namespaceSelector": {"type": "object"},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "additionalProperties": False,
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "scrapeTimeout": {
                                    "type": "string",
                                    "pattern": "^[0-9]+(ms|s|m|h)$",
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "metadata": {"type": "object", "required": ["name", "namespace"]},
            "spec": {
                "type": "object",
                "required": ["groups"],
                "additionalProperties": False,
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "interval": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "oneOf": [
                                            {"required": ["record"]},
                                            {"required": ["alert"]},
                                        ],
                                        "additionalProperties": False,
                                        "properties": {
                                            "record": {"type": "string"},
                                            "alert": {"type": "string"},
                                            "expr": {"type": "string"},
                                            "for": {"type": "string"},
                                            "labels": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                            "annotations": {
                                                "type": "object",
                                                "additionalProperties": {"type": "string"},
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def _all_rendered(rendered: dict[str, list[Obj]]) -> list[tuple[str, Obj]]:
    return [(name, obj) for name, objs in rendered.items() for obj in objs]


# ---- schemas ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schema(
    rendered: dict[str, list[Obj]], version: str
) -> None:
    errors = []
    crds = 0
    for name, obj in _all_rendered(rendered):
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in CRD_SCHEMAS:
            crds += 1
            continue
        if obj["apiVersion"].startswith(GATEWAY_API):
            continue  # test_gateway_api_objects_validate_against_the_gateway_api_schemas
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: no schema ({exc.message})")
    assert not errors, "\n".join(errors)
    assert crds == 2 * len(
        OVERLAYS
    )  # a ServiceMonitor and a PrometheusRule in each +monitoring render


#: The Gateway API's group: its objects are checked with its own schemas (not kubernetes-validate's).
GATEWAY_API = "gateway.networking.k8s.io/"
NODE_MODULES = REPO / ".venv" / "node" / "node_modules"


def _gateway_api_errors(objects: list[Obj], tmp_path: Path) -> list[dict[str, Any]]:
    """``[{kind, name, error}]`` from @kubernetes-models/gateway-api's validators (node)."""
    if not (NODE_MODULES / "@kubernetes-models" / "gateway-api").is_dir():
        pytest.fail("the Gateway API schemas are missing: run ./dev setup (npm installs them)")
    file = tmp_path / "objects.json"
    file.write_text(json.dumps(objects))
    script = Path(__file__).with_name("gateway_validate.mjs")
    out = subprocess.run(
        ["node", str(script), str(NODE_MODULES), str(file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def test_gateway_api_objects_validate_against_the_gateway_api_schemas(
    rendered: dict[str, list[Obj]], tmp_path: Path
) -> None:
    objects = [o for _n, o in _all_rendered(rendered) if o["apiVersion"].startswith(GATEWAY_API)]
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == ["GRPCRoute", "Gateway"], kinds
    results = _gateway_api_errors(objects, tmp_path)
    assert [r for r in results if r["error"]] == []
    # and the check can fail: a route to a named port, a misspelt match type
    (route,) = [o for o in objects if o["kind"] == "GRPCRoute"][:1]
    bad = json.loads(json.dumps(route))
    bad["spec"]["rules"][0]["backendRefs"][0]["port"] = "grpc"
    bad["spec"]["rules"][0]["matches"][0]["method"]["type"] = "Prefix"
    (refused,) = _gateway_api_errors([bad], tmp_path)
    assert "port must be integer" in refused["error"]
    assert "type must be equal to one of the allowed values" in refused["error"]


def test_the_schema_check_catches_a_misspelt_field(rendered: dict[str, list[Obj]]) -> None:
    deployment = dict(by_kind(rendered["cpu"], "Deployment")["detector"])
    deployment["spec"] = {**deployment["spec"], "replica": 2}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


def test_prometheus_operator_objects_match_their_minimal_schema(
    rendered: dict[str, list[Obj]],
) -> None:
    for overlay in OVERLAYS:
        objects = rendered[f"{overlay}+monitoring"]
        found = {o["kind"] for o in objects if o["kind"] in CRD_SCHEMAS}
        assert found == set(CRD_SCHEMAS)
        for obj in objects:
            if obj["kind"] in CRD_SCHEMAS:
                jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])


def test_the_example_secret_is_valid_and_holds_only_placeholders() -> None:
    path = DEPLOY / "k8s" / "examples" / "cloud-credentials.secret.example.yaml"
    (secret,) = [d for d in yaml.safe_load_all(path.read_text()) if d]
    kubernetes_validate.validate(secret, K8S_VERSIONS[-1], strict=True)
    assert "EXAMPLE ONLY" in path.read_text().splitlines()[0]
    values = re.findall(
        r'"(?:access_key_id|secret_access_key|key|api_key|api_secret)": "([^"]*)"',
        secret["stringData"]["credentials.json"],
    )
    assert values and set(values) == {"REPLACE-ME"}
    # No kustomization refers to the examples folder.
    for kfile in DEPLOY.rglob("kustomization.yaml"):
        assert "examples" not in kfile.read_text()


# ---- what every service's pod must be -----------------------------------------------------------


def _deployments(objects: list[Obj]) -> dict[str, Obj]:
    deployments = by_kind(objects, "Deployment")
    assert sorted(deployments) == sorted(SERVICES)
    return deployments


def test_namespace_first_and_everything_in_it(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    assert objects[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "faceoff", "labels": {"app.kubernetes.io/part-of": "faceoff"}},
    }
    for obj in objects[1:]:
        assert obj["metadata"]["namespace"] == "faceoff", obj["metadata"]["name"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "faceoff"


def test_pods_run_as_non_root_on_a_read_only_root_filesystem_without_capabilities(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    for name, deployment in _deployments(rendered[overlay]).items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER (test_docker checks)
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == name
        writable = set()
        for c in containers(deployment):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]} and not sc.get("privileged")
            writable |= {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert writable == {"/tmp"}, f"{name}: writable paths {writable}"
        assert "emptyDir" in volumes["tmp"]


def _quantity(value: str | int) -> float:
    units = {
        "m": 1e-3,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
    }
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, value
    return float(match.group(1)) * units.get(match.group(2), 1)


def test_every_container_has_requests_within_limits(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    for deployment in _deployments(rendered[overlay]).values():
        for c in containers(deployment):
            requests, limits = c["resources"]["requests"], c["resources"]["limits"]
            assert {"cpu", "memory"} <= set(requests) and {"cpu", "memory"} <= set(limits), c[
                "name"
            ]
            for resource, amount in requests.items():
                assert _quantity(amount) <= _quantity(limits[resource]), f"{c['name']} {resource}"


def _proto_services() -> dict[str, str]:
    """service folder -> fully-qualified gRPC service, from protos/."""
    names = {}
    for proto in (REPO / "protos" / "faceoff" / "v1").glob("*.proto"):
        for service in re.findall(r"^service (\w+) \{", proto.read_text(), flags=re.M):
            names[service.lower()] = f"faceoff.v1.{service}"
    return names


def test_probes_use_the_grpc_health_service_and_allow_for_model_loading(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    services = _proto_services()
    for name, deployment in _deployments(rendered[overlay]).items():
        (c,) = containers(deployment)
        grpc_port, metrics_port = PORTS[name]
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": grpc_port, "metrics": metrics_port}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert c[probe]["grpc"]["port"] == grpc_port, f"{name} {probe}"
        assert c["readinessProbe"]["grpc"]["service"] == services[name]
        assert c["startupProbe"]["grpc"]["service"] == services[name]
        startup = c["startupProbe"]
        # Models take 10-30 s on CPU; give at least four times that before liveness may act.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_grace_period_outlasts_the_pre_stop_sleep_and_the_servers_drain(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    for name, deployment in _deployments(rendered[overlay]).items():
        pod = deployment["spec"]["template"]["spec"]
        (c,) = containers(deployment)
        drain = float(env(c).get("FACEOFF_GRACE_SECONDS", 20))
        command = c["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "/bin/sleep"
        pre_stop = float(command[1])
        assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + 10, name


def test_settings_match_the_ports_and_the_scrape_annotations(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    services = by_kind(objects, "Service")
    for name, deployment in _deployments(objects).items():
        (c,) = containers(deployment)
        grpc_port, metrics_port = PORTS[name]
        assert c["args"] == ["serve", name]
        values = env(c)
        assert values["FACEOFF_PORT"] == str(grpc_port) and values["FACEOFF_METRICS_PORT"] == str(
            metrics_port
        )
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(metrics_port),
            "prometheus.io/path": "/metrics",
        }
        service_ports = {
            p["name"]: (p["port"], p["targetPort"]) for p in services[name]["spec"]["ports"]
        }
        assert service_ports == {"grpc": (grpc_port, "grpc"), "metrics": (metrics_port, "metrics")}
    masker = containers(by_kind(objects, "Deployment")["masker"])[0]
    # every detector pod, through the headless Service, balanced by the masker (round_robin)
    assert env(masker)["FACEOFF_DETECTOR_ADDRESS"] == (
        f"dns:///detector-headless:{PORTS['detector'][0]}"
    )
    headless = services["detector-headless"]["spec"]
    assert (
        headless["clusterIP"] == "None"
        and headless["selector"] == services["detector"]["spec"]["selector"]
    )
    assert [(p["name"], p["port"]) for p in headless["ports"]] == [("grpc", PORTS["detector"][0])]
    assert "detector" in services


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_selectors_select_and_references_resolve(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    deployments = _deployments(objects)
    pod_labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments.items()}
    for name, deployment in deployments.items():
        assert _selects(deployment["spec"]["selector"]["matchLabels"], pod_labels[name])
    for kind, selector_of in (
        ("Service", lambda o: o["spec"]["selector"]),
        ("PodDisruptionBudget", lambda o: o["spec"]["selector"]["matchLabels"]),
        ("NetworkPolicy", lambda o: o["spec"]["podSelector"].get("matchLabels", {})),
    ):
        for name, obj in by_kind(objects, kind).items():
            selected = [n for n, labels in pod_labels.items() if _selects(selector_of(obj), labels)]
            expected = list(SERVICES) if name in ("default-deny", "allow-dns") else [name]
            if name == "detector-headless":
                expected = ["detector"]
            assert sorted(selected) == sorted(expected), f"{kind}/{name} selects {selected}"
    accounts = by_kind(objects, "ServiceAccount")
    for deployment in deployments.values():
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] in accounts
    # The public entry point: a Gateway, and a GRPCRoute per public service whose backend is a
    # Service port that exists; the detector stays internal.
    (gateway,) = by_kind(objects, "Gateway").values()
    (listener,) = gateway["spec"]["listeners"]
    assert listener["tls"]["certificateRefs"] == [{"kind": "Secret", "name": "faceoff-tls"}]
    routes = by_kind(objects, "GRPCRoute")
    services = by_kind(objects, "Service")
    served = {}
    for route in routes.values():
        assert route["spec"]["parentRefs"] == [
            {"name": gateway["metadata"]["name"], "sectionName": listener["name"]}
        ]
        assert route["spec"]["hostnames"] == [listener["hostname"]]
        for rule in route["spec"]["rules"]:
            (backend,) = rule["backendRefs"]
            ports = [p["port"] for p in services[backend["name"]]["spec"]["ports"]]
            assert backend["port"] in ports and backend["port"] == PORTS[backend["name"]][0]
            for match in rule["matches"]:
                served[match["method"]["service"]] = backend["name"]
    assert served == {"faceoff.v1.Masker": "masker", "faceoff.v1.Evaluator": "evaluator"}


def test_autoscalers_own_the_replica_counts(rendered: dict[str, list[Obj]], overlay: str) -> None:
    objects = rendered[overlay]
    deployments = _deployments(objects)
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    assert sorted(hpas) == sorted(SERVICES)
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
        }
        assert "replicas" not in deployments[name]["spec"], (
            f"{name}: a fixed replica count fights the HPA on every apply"
        )
        assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
        (metric,) = hpa["spec"]["metrics"]
        if name == "masker":
            assert (
                metric["type"] == "Pods"
                and metric["pods"]["metric"]["name"] == "faceoff_masker_queue_depth"
            )
            assert metric["pods"]["target"]["type"] == "AverageValue"
        else:
            assert metric == {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 70},
                },
            }
    assert sorted(by_kind(objects, "PodDisruptionBudget")) == sorted(SERVICES)


def test_masker_scales_when_more_than_one_batch_waits_per_pod(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    (c,) = containers(by_kind(objects, "Deployment")["masker"])
    batch, queue = int(env(c)["FACEOFF_MAX_BATCH_FACES"]), int(env(c)["FACEOFF_MAX_QUEUE_FACES"])
    (metric,) = by_kind(objects, "HorizontalPodAutoscaler")["masker"]["spec"]["metrics"]
    assert _quantity(metric["pods"]["target"]["averageValue"]) == batch
    # The queue holds several batches, so the HPA acts well before the queue refuses photos.
    assert queue >= 4 * batch


def test_no_secret_values_are_committed_only_references(rendered: dict[str, list[Obj]]) -> None:
    for name, obj in _all_rendered(rendered):
        assert obj["kind"] != "Secret", f"{name}: a Secret in the manifests"
    evaluator = by_kind(rendered["cpu"], "Deployment")["evaluator"]
    volumes = {v["name"]: v for v in evaluator["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cloud-credentials"]["secret"]["secretName"] == "faceoff-cloud-credentials"
    # Not optional: the evaluator refuses an unreadable FACEOFF_CLOUD_SECRETS_FILE at start-up.
    assert not volumes["cloud-credentials"]["secret"].get("optional", False)
    (c,) = containers(evaluator)
    mount = next(m for m in c["volumeMounts"] if m["name"] == "cloud-credentials")
    assert mount["readOnly"] is True
    assert env(c)["FACEOFF_CLOUD_SECRETS_FILE"] == f"{mount['mountPath']}/credentials.json"
    assert "secretKeyRef" not in str(rendered)


def test_images_are_tagged(rendered: dict[str, list[Obj]], overlay: str) -> None:
    for deployment in _deployments(rendered[overlay]).values():
        for c in containers(deployment):
            assert re.fullmatch(r"[a-z0-9./-]+(:[0-9][\w.-]*|@sha256:[0-9a-f]{64})", c["image"]), c[
                "image"
            ]


def test_gpu_overlay_changes_only_the_masker_and_gives_it_a_gpu(
    rendered: dict[str, list[Obj]],
) -> None:
    cpu, gpu = rendered["cpu"], rendered["gpu"]
    differ = [(a["kind"], a["metadata"]["name"]) for a, b in zip(cpu, gpu, strict=True) if a != b]
    assert differ == [("Deployment", "masker"), ("HorizontalPodAutoscaler", "masker")]
    masker = by_kind(gpu, "Deployment")["masker"]
    pod = masker["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert (
        c["resources"]["requests"]["nvidia.com/gpu"]
        == c["resources"]["limits"]["nvidia.com/gpu"]
        == "1"
    )
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
        "tolerations"
    ]
    assert c["image"].startswith("faceoff-gpu:")
    # Everything else of the CPU masker is still there (the patch merged, it did not replace).
    cpu_c = containers(by_kind(cpu, "Deployment")["masker"])[0]
    gpu_only = {
        "TF_FORCE_GPU_ALLOW_GROWTH": "true",
        "FACEOFF_MAX_BATCH_FACES": "32",
        "FACEOFF_MAX_QUEUE_FACES": "256",
    }
    assert env(c) == env(cpu_c) | gpu_only
    assert (
        c["startupProbe"] == cpu_c["startupProbe"]
        and c["securityContext"] == cpu_c["securityContext"]
    )
    assert by_kind(gpu, "HorizontalPodAutoscaler")["masker"]["spec"]["minReplicas"] == 1
    for objects in (cpu, gpu):
        for name, deployment in _deployments(objects).items():
            if objects is gpu and name == "masker":
                continue
            assert "nvidia.com/gpu" not in str(deployment), name


# ---- NetworkPolicies, evaluated ----------------------------------------------------------------

Peer = dict[str, Any]


def _pod(namespace: str, labels: dict[str, str]) -> Peer:
    return {"namespace": namespace, "labels": labels}


def _ip(address: str) -> Peer:
    return {"ip": address}


def _peer_matches(peer_rule: dict[str, Any], policy_namespace: str, peer: Peer) -> bool:
    if "ipBlock" in peer_rule:
        if "ip" not in peer:
            return False
        ip = ipaddress.ip_address(peer["ip"])
        block = peer_rule["ipBlock"]
        if ip.version != ipaddress.ip_network(block["cidr"]).version:
            return False
        return ip in ipaddress.ip_network(block["cidr"]) and not any(
            ip.version == ipaddress.ip_network(e).version and ip in ipaddress.ip_network(e)
            for e in block.get("except", [])
        )
    if "ip" in peer:
        return False
    ns_selector = peer_rule.get("namespaceSelector")
    pod_selector = peer_rule.get("podSelector")
    if ns_selector is None:
        in_namespace = peer["namespace"] == policy_namespace
    else:
        in_namespace = _selects(
            ns_selector.get("matchLabels", {}), {"kubernetes.io/metadata.name": peer["namespace"]}
        )
    return in_namespace and (
        pod_selector is None or _selects(pod_selector.get("matchLabels", {}), peer["labels"])
    )


def _rule_allows(
    rule: dict[str, Any],
    direction: str,
    policy_namespace: str,
    peer: Peer,
    port: int,
    protocol: str,
) -> bool:
    peers = rule.get("to" if direction == "Egress" else "from")
    if peers is not None and not any(_peer_matches(p, policy_namespace, peer) for p in peers):
        return False
    ports = rule.get("ports")
    return ports is None or any(
        p.get("port") == port and p.get("protocol", "TCP") == protocol for p in ports
    )


def _side_allows(
    policies: list[Obj], pod: Peer, direction: str, peer: Peer, port: int, protocol: str
) -> bool:
    if "ip" in pod:
        return True
    selecting = [
        p for p in policies
        if p["metadata"]["namespace"] == pod["namespace"]
        and direction in p["spec"]["policyTypes"]
        and _selects(p["spec"]["podSelector"].get("matchLabels", {}), pod["labels"])
    ]  # fmt: skip
    if not selecting:
        return True
    key = "egress" if direction == "Egress" else "ingress"
    return any(
        _rule_allows(rule, direction, p["metadata"]["namespace"], peer, port, protocol)
        for p in selecting for rule in p["spec"].get(key, [])
    )  # fmt: skip


def _connects(policies: list[Obj], src: Peer, dst: Peer, port: int, protocol: str = "TCP") -> bool:
    return _side_allows(policies, src, "Egress", dst, port, protocol) and _side_allows(
        policies, dst, "Ingress", src, port, protocol
    )


def test_network_policies_allow_exactly_the_intended_paths(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    policies = list(by_kind(objects, "NetworkPolicy").values())
    pods = {
        n: _pod("faceoff", d["spec"]["template"]["metadata"]["labels"])
        for n, d in _deployments(objects).items()
    }
    dns = _pod("kube-system", {"k8s-app": "kube-dns"})
    monitoring = _pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    ingress_controller = _pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    other_app = _pod("default", {"app": "shop"})
    cloud_api, private_host, metadata_service = (
        _ip("52.94.236.248"),
        _ip("10.0.0.5"),
        _ip("169.254.169.254"),
    )

    # Only the masker reaches the detector.
    assert _connects(policies, pods["masker"], pods["detector"], PORTS["detector"][0])
    for caller in (pods["evaluator"], ingress_controller, other_app, monitoring):
        assert not _connects(policies, caller, pods["detector"], PORTS["detector"][0])
    # The masker and the evaluator are the API: any client may call them, on the gRPC port only.
    for name in ("masker", "evaluator"):
        assert _connects(policies, ingress_controller, pods[name], PORTS[name][0])
        assert _connects(policies, other_app, pods[name], PORTS[name][0])
        assert not _connects(policies, ingress_controller, pods[name], PORTS[name][1])
    # Metrics: from the monitoring namespace only.
    for name, (_grpc, metrics) in PORTS.items():
        assert _connects(policies, monitoring, pods[name], metrics)
        assert not _connects(policies, other_app, pods[name], metrics)
    # DNS for everyone; egress out of the cluster only for the evaluator, only HTTPS, only public.
    for name, pod in pods.items():
        assert _connects(policies, pod, dns, 53, "UDP") and _connects(policies, pod, dns, 53, "TCP")
        assert not _connects(policies, pod, dns, 80)
        for port in (80, 443, 8080):
            assert _connects(policies, pod, cloud_api, port) == (
                name == "evaluator" and port == 443
            ), (name, port)
        assert not _connects(policies, pod, private_host, 443)
        assert not _connects(policies, pod, metadata_service, 443)
        assert not _connects(policies, pod, _ip("2600:1f18::1"), 80)
    assert _connects(policies, pods["evaluator"], _ip("2600:1f18::1"), 443)
    # No faceoff pod calls another except masker -> detector.
    for a, src in pods.items():
        for b, dst in pods.items():
            if a != b:
                allowed = any(_connects(policies, src, dst, port) for port in PORTS[b])
                assert allowed == ((a, b) == ("masker", "detector")), (a, b)


def test_kustomizations_list_every_manifest_file() -> None:
    """A manifest file that no kustomization lists would silently never be applied."""
    listed = set()
    for kfile in DEPLOY.rglob("kustomization.yaml"):
        k = yaml.safe_load(kfile.read_text())
        for entry in k.get("resources", []) + [
            p["path"] for p in k.get("patches", []) if "path" in p
        ]:
            listed.add((kfile.parent / entry).resolve())
    for path in (DEPLOY / "k8s").rglob("*.yaml"):
        if path.name == "kustomization.yaml" or "examples" in path.parts:
            continue
        assert path.resolve() in listed, f"{path.relative_to(DEPLOY)} is in no kustomization"
    for path in (DEPLOY / "observability").glob("*.yaml"):
        if path.name != "kustomization.yaml":
            assert path.resolve() in listed, f"{path.relative_to(DEPLOY)} is in no kustomization"


def test_rendered_objects_are_what_apply_would_send(rendered: dict[str, list[Obj]]) -> None:
    # No status, no server-set metadata: the server-side apply body is exactly the manifest.
    for name, obj in _all_rendered(rendered):
        assert "status" not in obj, name
        assert not {"uid", "resourceVersion", "creationTimestamp", "managedFields"} & set(
            obj["metadata"]
        ), name
