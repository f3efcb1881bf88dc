"""A fake Kubernetes API server on 127.0.0.1 that speaks the documented REST format.

There is no Kubernetes API server to be had here (no kube-apiserver or etcd in the package
registries), so ``faceoff deploy apply|status`` are tested against this stand-in. It answers:

- discovery: ``GET /version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>/<version>``
  (``APIVersions``, ``APIGroupList``, ``APIResourceList``), for the kinds the manifests use;
  the Prometheus Operator group only when asked to (a cluster with or without its CRDs);
- server-side apply: ``PATCH`` of an object's path with ``Content-Type:
  application/apply-patch+yaml`` and ``fieldManager``; ``dryRun=All`` validates and answers
  without storing; ``force=true`` takes over objects another manager applied; namespaced
  objects need their namespace; 201 for a new object, 200 for an existing one;
- ``GET`` of an object (the Deployments, for rollout status), with a status the test sets;
- errors as ``Status`` objects (401 without the bearer token, 404, 409, 415, 400).

It is simplified where the tests do not look: field ownership is per object (not per field),
and only ``spec.replicas`` is defaulted (to 1, as the real API server does).
"""

from __future__ import annotations

import copy
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

TOKEN = "fake-token-for-tests"


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


CORE = [
    Kind("", "v1", "Namespace", "namespaces", namespaced=False),
    Kind("", "v1", "ServiceAccount", "serviceaccounts"),
    Kind("", "v1", "Service", "services"),
    Kind("", "v1", "ConfigMap", "configmaps"),
    Kind("", "v1", "Secret", "secrets"),
    Kind("apps", "v1", "Deployment", "deployments"),
    Kind("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    Kind("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    Kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies"),
    Kind("gateway.networking.k8s.io", "v1", "Gateway", "gateways"),
    Kind("gateway.networking.k8s.io", "v1", "GRPCRoute", "grpcroutes"),
]
PROMETHEUS_OPERATOR = [
    Kind("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors"),
    Kind("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules"),
]


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any = None


@dataclass
class FakeApiServer:
    """State of the fake: the kinds it serves, the stored objects, the requests it got."""

    kinds: list[Kind]
    port: int = 0
    objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = field(default_factory=dict)
    managers: dict[tuple[str, str, str | None, str], str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _version: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kubeconfig(self, folder: Path, token: str = TOKEN) -> Path:
        """A kubeconfig with context ``fake`` (current) and ``unreachable`` (a closed port)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "fake", "cluster": {"server": self.url}},
                {"name": "unreachable", "cluster": {"server": "http://127.0.0.1:9"}},
            ],
            "users": [{"name": "tester", "user": {"token": token}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "tester"}},
                {"name": "unreachable", "context": {"cluster": "unreachable", "user": "tester"}},
            ],
            "current-context": "fake",
        }
        path = folder / "kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    # ---- what tests set up and inspect ----

    def store(self, obj: dict[str, Any], manager: str = "kubectl") -> None:
        """Put an object in as if ``manager`` had applied it."""
        kind = self._kind_of(obj["apiVersion"], obj["kind"])
        assert kind is not None
        key = self._key(kind, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        with self.lock:
            self.objects[key] = self._persisted(kind, obj, None, manager)
            self.managers[key] = manager

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        for (k, _plural, ns, n), obj in self.objects.items():
            if k == kind and ns == namespace and n == name:
                return obj
        return None

    def set_status(
        self, namespace: str, name: str, status: dict[str, Any], generation: int | None = None
    ) -> None:
        with self.lock:
            obj = self.get("Deployment", namespace, name)
            assert obj is not None, f"no deployment {namespace}/{name}"
            obj["status"] = status
            if generation is not None:
                obj["metadata"]["generation"] = generation

    def patches(self) -> list[Request]:
        return [r for r in self.requests if r.method == "PATCH"]

    # ---- internals ----

    def _kind_of(self, api_version: str, kind: str) -> Kind | None:
        return next(
            (k for k in self.kinds if k.group_version == api_version and k.kind == kind), None
        )

    @staticmethod
    def _key(kind: Kind, namespace: str | None, name: str) -> tuple[str, str, str | None, str]:
        return (kind.kind, kind.plural, namespace if kind.namespaced else None, name)

    def _persisted(
        self, kind: Kind, body: dict[str, Any], existing: dict[str, Any] | None, manager: str
    ) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        self._version += 1
        if existing is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = "2026-01-01T00:00:00Z"
            meta["generation"] = 1
        else:
            meta["uid"] = existing["metadata"]["uid"]
            meta["creationTimestamp"] = existing["metadata"]["creationTimestamp"]
            changed = {k: v for k, v in body.get("spec", {}).items() if k != "replicas"} != {
                k: v for k, v in existing.get("spec", {}).items() if k != "replicas"
            }
            meta["generation"] = existing["metadata"]["generation"] + (1 if changed else 0)
            if "status" in existing:
                obj["status"] = existing["status"]
        if kind.kind == "Deployment":
            spec = obj.setdefault("spec", {})
            if "replicas" not in spec:
                spec["replicas"] = existing["spec"]["replicas"] if existing else 1
        meta["resourceVersion"] = str(self._version)
        meta["managedFields"] = [
            {
                "manager": manager,
                "operation": "Apply",
                "apiVersion": body["apiVersion"],
                "fieldsType": "FieldsV1",
                "fieldsV1": {},
            }
        ]
        return obj


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default logging
        pass

    def _send(self, code: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self, body: Any = None) -> Request:
        parts = urlsplit(self.path)
        request = Request(
            self.command,
            parts.path,
            parse_qs(parts.query),
            {k.lower(): v for k, v in self.headers.items()},
            body,
        )
        self.server.fake.requests.append(request)
        return request

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            return False
        return True

    def do_GET(self) -> None:
        request = self._record()
        if not self._authorized():
            return
        fake = self.server.fake
        path = request.path.rstrip("/")
        if path == "/version":
            return self._send(
                200,
                {"major": "1", "minor": "37", "gitVersion": "v1.37.0", "platform": "linux/amd64"},
            )
        if path == "/api":
            return self._send(
                200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
            )
        if path == "/apis":
            groups: dict[str, dict[str, Any]] = {}
            for k in fake.kinds:
                if k.group:
                    gv = {"groupVersion": k.group_version, "version": k.version}
                    groups.setdefault(
                        k.group, {"name": k.group, "versions": [gv], "preferredVersion": gv}
                    )
            return self._send(
                200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": list(groups.values())}
            )
        if path == "/api/v1":
            group_version: str | None = "v1"
        elif path.startswith("/apis/") and path.count("/") == 3:
            group_version = path[len("/apis/") :]
        else:
            group_version = None
        if group_version is not None:
            kinds = [k for k in fake.kinds if k.group_version == group_version]
            if not kinds:
                return self._send(
                    404,
                    _status(404, "NotFound", "the server could not find the requested resource"),
                )
            resources = [
                {"name": k.plural, "singularName": k.kind.lower(), "namespaced": k.namespaced, "kind": k.kind,
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                for k in kinds
            ]  # fmt: skip
            resources += [
                {
                    "name": f"{k.plural}/status",
                    "singularName": "",
                    "namespaced": k.namespaced,
                    "kind": k.kind,
                    "verbs": ["get", "patch", "update"],
                }
                for k in kinds
            ]
            return self._send(
                200,
                {
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": group_version,
                    "resources": resources,
                },
            )
        target = self._target(path)
        if target is None:
            return self._send(
                404, _status(404, "NotFound", "the server could not find the requested resource")
            )
        kind, namespace, name = target
        with fake.lock:
            obj = fake.objects.get(fake._key(kind, namespace, name))
            if obj is None:
                return self._send(
                    404,
                    _status(
                        404, "NotFound", f'{kind.plural}.{kind.group or "core"} "{name}" not found'
                    ),
                )
            return self._send(200, obj)

    def do_PATCH(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        request = self._record(raw)
        if not self._authorized():
            return
        fake = self.server.fake
        target = self._target(request.path.rstrip("/"))
        if target is None:
            return self._send(
                404, _status(404, "NotFound", "the server could not find the requested resource")
            )
        kind, namespace, name = target
        if self.headers.get("Content-Type") != "application/apply-patch+yaml":
            return self._send(
                415,
                _status(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types include: application/apply-patch+yaml (got {self.headers.get('Content-Type')})",
                ),
            )
        manager = (request.query.get("fieldManager") or [""])[0]
        if not manager:
            return self._send(
                400,
                _status(400, "BadRequest", "PATCH /: fieldManager is required for apply requests"),
            )
        dry_run = request.query.get("dryRun")
        if dry_run not in (None, ["All"]):
            return self._send(400, _status(400, "BadRequest", f"Invalid dryRun value: {dry_run}"))
        force = request.query.get("force") == ["true"]
        try:
            body = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            return self._send(400, _status(400, "BadRequest", f"error decoding YAML: {exc}"))
        if (
            not isinstance(body, dict)
            or body.get("apiVersion") != kind.group_version
            or body.get("kind") != kind.kind
        ):
            return self._send(
                400,
                _status(400, "BadRequest", f"the body is not a {kind.group_version} {kind.kind}"),
            )
        meta = body.get("metadata") or {}
        if meta.get("name") != name:
            return self._send(
                400,
                _status(
                    400, "BadRequest", "the name of the object does not match the name on the URL"
                ),
            )
        if kind.namespaced and meta.get("namespace") not in (None, namespace):
            return self._send(
                400,
                _status(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                ),
            )
        with fake.lock:
            if kind.namespaced and fake.get("Namespace", None, namespace or "") is None:
                return self._send(
                    404, _status(404, "NotFound", f'namespaces "{namespace}" not found')
                )
            key = fake._key(kind, namespace, name)
            existing = fake.objects.get(key)
            owner = fake.managers.get(key)
            applied = body.get("spec", {})
            theirs = {k: v for k, v in (existing or {}).get("spec", {}).items() if k in applied}
            if (
                existing is not None
                and owner not in (None, manager)
                and applied != theirs
                and not force
            ):
                message = f'Apply failed with 1 conflict: conflict with "{owner}": .spec'
                return self._send(409, _status(409, "Conflict", message))
            body.setdefault("metadata", {})
            if kind.namespaced:
                body["metadata"]["namespace"] = namespace
            persisted = fake._persisted(kind, body, existing, manager)
            if not dry_run:
                fake.objects[key] = persisted
                fake.managers[key] = manager
        return self._send(200 if existing is not None else 201, persisted)

    def _target(self, path: str) -> tuple[Kind, str | None, str] | None:
        """(kind, namespace, name) of an object path, or None."""
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "v1"]:
            group_version, rest = "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        namespace = None
        if len(rest) == 4 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if len(rest) != 2:
            return None
        plural, name = rest
        kind = next(
            (
                k
                for k in self.server.fake.kinds
                if k.group_version == group_version and k.plural == plural
            ),
            None,
        )
        if kind is None or kind.namespaced != (namespace is not None):
            return None
        return kind, namespace, name


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeApiServer


@contextmanager
def fake_apiserver(with_prometheus_operator: bool = True) -> Iterator[FakeApiServer]:
    """Run a fake API server on a free port of 127.0.0.1 for the duration of the block."""
    fake = FakeApiServer(kinds=CORE + (PROMETHEUS_OPERATOR if with_prometheus_operator else []))
    httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
    httpd.fake = fake
    fake.port = int(httpd.server_address[1])
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
