"""Talking to a cluster with the official ``kubernetes`` client: server-side apply and rollout status.

:func:`apply` sends every rendered object as a server-side apply (``PATCH`` with
``Content-Type: application/apply-patch+yaml``, field manager ``faceoff``), optionally as a
server dry run (``dryRun=All``); resources are found through API discovery, so a kind the
cluster does not serve (a missing CRD) is reported per object instead of aborting the rest.
:func:`rollout_status` reads the Deployments and judges their rollout the way
``kubectl rollout status`` does.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from faceoff.cli.deploy import DeployError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = [
    "FIELD_MANAGER",
    "ApplyResult",
    "RolloutStatus",
    "apply",
    "connect",
    "rollout_status",
    "wait_for_rollout",
]

#: The field manager of every server-side apply, as ``kubectl apply --server-side`` uses "kubectl".
FIELD_MANAGER = "faceoff"


@dataclass(frozen=True)
class ApplyResult:
    """What happened to one object: ``ref`` is ``kind.group/name`` as kubectl prints it."""

    ref: str
    namespace: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class RolloutStatus:
    """The rollout of one Deployment.

    Attributes:
        name: Deployment name.
        state: ``done``, ``progressing``, ``failed`` (progress deadline exceeded) or ``missing``.
        message: kubectl's wording of the state.
        desired, updated, available: replica counts from the spec and the status.
    """

    name: str
    state: str
    message: str
    desired: int = 0
    updated: int = 0
    available: int = 0

    @property
    def done(self) -> bool:
        return self.state == "done"


def connect(kubeconfig: str | None = None, context: str | None = None) -> ApiClient:
    """An API client for ``context`` of ``kubeconfig`` (default: $KUBECONFIG or ~/.kube/config,
    current context), or the in-cluster service account when there is no kubeconfig."""
    from kubernetes import config

    try:
        client: ApiClient = config.new_client_from_config(config_file=kubeconfig, context=context)
        return client
    except (config.ConfigException, FileNotFoundError) as exc:
        if kubeconfig is None and context is None and "KUBERNETES_SERVICE_HOST" in os.environ:
            from kubernetes.client import ApiClient, Configuration

            configuration = Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return ApiClient(configuration)
        raise DeployError(f"no usable Kubernetes context: {exc}") from None


def _ref(obj: dict[str, Any]) -> str:
    api_version = obj["apiVersion"]
    group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    kind = obj["kind"].lower()
    return (
        f"{kind}.{group}/{obj['metadata']['name']}"
        if group
        else f"{kind}/{obj['metadata']['name']}"
    )


def _api_error(exc: Exception) -> str:
    """The API server's Status message of a failed request, else the exception's text."""
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            status = json.loads(body)
        except ValueError:
            status = None
        if isinstance(status, dict) and status.get("message"):
            return f"{status.get('reason') or getattr(exc, 'status', '')}: {status['message']}"
    status_code = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    return f"{status_code} {reason}" if status_code else str(exc)


def apply(
    objects: Iterable[dict[str, Any]],
    api_client: ApiClient,
    *,
    dry_run: bool = False,
    force_conflicts: bool = False,
    on_result: Callable[[ApplyResult], None] | None = None,
) -> list[ApplyResult]:
    """Server-side apply each object in order; a failure is recorded and the rest still go.

    ``dry_run`` asks the API server to validate and admit everything without persisting it
    (``dryRun=All``). ``force_conflicts`` takes over fields another manager owns.
    """
    from kubernetes.client.exceptions import ApiException
    from kubernetes.dynamic import DynamicClient
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    results: list[ApplyResult] = []
    # A fresh discovery cache per run: never a stale one from another cluster or an old CRD set.
    with tempfile.TemporaryDirectory(prefix="faceoff-deploy-") as tmp:
        try:
            dynamic = DynamicClient(api_client, cache_file=os.path.join(tmp, "discovery.json"))
        except Exception as exc:  # noqa: BLE001 - any failure to reach the API server
            raise DeployError(
                f"cannot reach the Kubernetes API at {api_client.configuration.host}: {_api_error(exc)}"
            ) from None
        for obj in objects:
            namespace = obj["metadata"].get("namespace")
            try:
                resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
                dynamic.server_side_apply(
                    resource,
                    body=obj,
                    name=obj["metadata"]["name"],
                    namespace=namespace if resource.namespaced else None,
                    field_manager=FIELD_MANAGER,
                    force_conflicts=True if force_conflicts else None,
                    dry_run="All" if dry_run else None,
                )
                result = ApplyResult(_ref(obj), namespace)
            except ResourceNotFoundError:
                result = ApplyResult(
                    _ref(obj), namespace,
                    f"the cluster does not serve {obj['apiVersion']} {obj['kind']} (is its CRD installed?)",
                )  # fmt: skip
            except ApiException as exc:
                result = ApplyResult(_ref(obj), namespace, _api_error(exc))
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def _deployment_status(deployment: Any) -> RolloutStatus:
    """kubectl's DeploymentStatusViewer, on a V1Deployment."""
    name = deployment.metadata.name
    spec_replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status

    def count(field: str) -> int:
        value = getattr(status, field, None) if status is not None else None
        return int(value or 0)

    updated, available, replicas = (
        count("updated_replicas"),
        count("available_replicas"),
        count("replicas"),
    )
    counts = {"desired": spec_replicas, "updated": updated, "available": available}
    observed = getattr(status, "observed_generation", None)
    if observed is None or (deployment.metadata.generation or 0) > observed:
        return RolloutStatus(
            name, "progressing", "waiting for the deployment spec update to be observed", **counts
        )
    for condition in getattr(status, "conditions", None) or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return RolloutStatus(
                name, "failed", f"exceeded its progress deadline: {condition.message}", **counts
            )
    if updated < spec_replicas:
        msg = f"{updated} out of {spec_replicas} new replicas have been updated"
        return RolloutStatus(name, "progressing", msg, **counts)
    if replicas > updated:
        return RolloutStatus(
            name,
            "progressing",
            f"{replicas - updated} old replicas are pending termination",
            **counts,
        )
    if available < updated:
        return RolloutStatus(
            name,
            "progressing",
            f"{available} of {updated} updated replicas are available",
            **counts,
        )
    return RolloutStatus(name, "done", "successfully rolled out", **counts)


def rollout_status(
    api_client: ApiClient, deployments: Sequence[tuple[str, str]]
) -> list[RolloutStatus]:
    """The rollout of each ``(namespace, name)`` Deployment."""
    from kubernetes.client import AppsV1Api
    from kubernetes.client.exceptions import ApiException

    apps = AppsV1Api(api_client)
    statuses = []
    for namespace, name in deployments:
        try:
            statuses.append(_deployment_status(apps.read_namespaced_deployment(name, namespace)))
        except ApiException as exc:
            if exc.status == 404:
                statuses.append(
                    RolloutStatus(
                        name, "missing", f"not found in namespace {namespace} (not applied yet?)"
                    )
                )
            else:
                raise DeployError(
                    f"cannot read deployment {namespace}/{name}: {_api_error(exc)}"
                ) from None
        except Exception as exc:  # noqa: BLE001 - connection refused, TLS, DNS ...
            raise DeployError(
                f"cannot reach the Kubernetes API at {api_client.configuration.host}: {exc}"
            ) from None
    return statuses


def wait_for_rollout(
    api_client: ApiClient,
    deployments: Sequence[tuple[str, str]],
    timeout: float,
    interval: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[RolloutStatus]:
    """Poll :func:`rollout_status` until every rollout is done, one failed, or ``timeout`` passes."""
    deadline = clock() + timeout
    while True:
        statuses = rollout_status(api_client, deployments)
        if (
            all(s.done for s in statuses)
            or any(s.state == "failed" for s in statuses)
            or clock() >= deadline
        ):
            return statuses
        sleep(min(interval, max(0.0, deadline - clock())))
