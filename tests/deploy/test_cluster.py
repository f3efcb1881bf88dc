"""``faceoff deploy apply|status`` against a fake API server speaking the Kubernetes REST format.

No real API server can be had here (see fake_apiserver.py); the client side is real: the
official ``kubernetes`` client loads a kubeconfig, discovers the API and sends server-side
apply requests, and the fake checks them as the API server would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from faceoff.cli import main
from faceoff.cli.deploy import DeployError, render
from faceoff.cli.deploy.cluster import apply, connect, rollout_status, wait_for_rollout
from tests.deploy.conftest import DEPLOY
from tests.deploy.fake_apiserver import FakeApiServer, fake_apiserver

NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "faceoff"}}


@pytest.fixture()
def server() -> Iterator[FakeApiServer]:
    with fake_apiserver() as fake:
        yield fake


@pytest.fixture()
def kubeconfig(server: FakeApiServer, tmp_path: Path) -> Path:
    return server.kubeconfig(tmp_path)


def _path(obj: dict[str, Any]) -> str:
    group_version = obj["apiVersion"]
    prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
    plural = {"Ingress": "ingresses", "NetworkPolicy": "networkpolicies"}.get(
        obj["kind"], obj["kind"].lower() + "s"
    )
    if obj["kind"] == "Namespace":
        return f"{prefix}/namespaces/{obj['metadata']['name']}"
    return f"{prefix}/namespaces/{obj['metadata']['namespace']}/{plural}/{obj['metadata']['name']}"


def test_apply_sends_every_object_as_a_server_side_apply(
    server: FakeApiServer, kubeconfig: Path
) -> None:
    objects = render("gpu", monitoring=True, root=DEPLOY)
    results = apply(objects, connect(str(kubeconfig)))
    assert [r.error for r in results if not r.ok] == []
    assert [r.ref for r in results][:2] == ["namespace/faceoff", "serviceaccount/detector"]
    assert "deployment.apps/masker" in [r.ref for r in results]
    patches = server.patches()
    assert [p.path for p in patches] == [_path(o) for o in objects]
    for patch, obj in zip(patches, objects, strict=True):
        assert patch.headers["content-type"] == "application/apply-patch+yaml"
        assert patch.query == {"fieldManager": ["faceoff"]}
        assert patch.headers["authorization"] == "Bearer fake-token-for-tests"
        assert json.loads(patch.body) == obj  # the manifest, exactly
    stored = server.get("Deployment", "faceoff", "masker")
    assert stored is not None and stored["metadata"]["managedFields"][0]["manager"] == "faceoff"
    assert (
        stored["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
        == "1"
    )


def test_apply_twice_changes_nothing(server: FakeApiServer, kubeconfig: Path) -> None:
    objects = render("cpu", root=DEPLOY)
    client = connect(str(kubeconfig))
    apply(objects, client)
    stored = set(server.objects)
    assert len(stored) == len(objects)
    assert all(r.ok for r in apply(objects, client))
    assert set(server.objects) == stored
    assert {o["metadata"].get("generation") for o in server.objects.values()} == {
        1
    }  # no spec changed


def test_server_dry_run_stores_nothing(
    server: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.store(NAMESPACE)
    rc = main(["deploy", "apply", "--dry-run=server", "--kubeconfig", str(kubeconfig)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "deployment.apps/detector serverside-applied (server dry run)" in out.splitlines()
    assert all(p.query["dryRun"] == ["All"] for p in server.patches())
    assert list(server.objects) == [("Namespace", "namespaces", None, "faceoff")]


def test_dry_run_into_a_missing_namespace_explains_itself(
    server: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["deploy", "apply", "--dry-run=server", "--kubeconfig", str(kubeconfig)])
    captured = capsys.readouterr()
    assert rc == 1
    assert "namespace/faceoff serverside-applied (server dry run)" in captured.out
    assert (
        'deployment.apps/detector: error: NotFound: namespaces "faceoff" not found' in captured.err
    )
    assert "24 of 25 objects failed" in captured.err
    assert "create it first, or apply once without --dry-run" in captured.err


def test_a_cluster_without_the_prometheus_operator_fails_only_its_objects(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with fake_apiserver(with_prometheus_operator=False) as server:
        rc = main(
            ["deploy", "apply", "--monitoring", "--kubeconfig", str(server.kubeconfig(tmp_path))]
        )
        assert server.get("Deployment", "faceoff", "masker") is not None
        assert server.get("ConfigMap", "faceoff", "faceoff-grafana-dashboard") is not None
    err = capsys.readouterr().err
    assert rc == 1
    assert (
        "servicemonitor.monitoring.coreos.com/faceoff: error: the cluster does not serve monitoring.coreos.com/v1 ServiceMonitor (is its CRD installed?)"
        in err
    )
    assert "2 of 28 objects failed" in err


def test_fields_owned_by_another_manager_need_force_conflicts(
    server: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    objects = render("cpu", root=DEPLOY)
    server.store(NAMESPACE)
    hpa = next(
        o
        for o in objects
        if o["kind"] == "HorizontalPodAutoscaler" and o["metadata"]["name"] == "masker"
    )
    hand_edited = json.loads(json.dumps(hpa))
    hand_edited["spec"]["maxReplicas"] = 20
    server.store(hand_edited, manager="kubectl-edit")
    assert main(["deploy", "apply", "--kubeconfig", str(kubeconfig)]) == 1
    assert (
        'horizontalpodautoscaler.autoscaling/masker: error: Conflict: Apply failed with 1 conflict: conflict with "kubectl-edit"'
        in capsys.readouterr().err
    )
    assert main(["deploy", "apply", "--force-conflicts", "--kubeconfig", str(kubeconfig)]) == 0
    assert server.patches()[-1].query["force"] == ["true"]
    stored = server.get("HorizontalPodAutoscaler", "faceoff", "masker")
    assert stored is not None and stored["spec"]["maxReplicas"] == 8


def _rolled_out(replicas: int, generation: int = 1) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }


def test_status_reports_each_rollout_like_kubectl(
    server: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apply(render("cpu", root=DEPLOY), connect(str(kubeconfig)))
    assert main(["deploy", "status", "--kubeconfig", str(kubeconfig)]) == 1
    assert (
        capsys.readouterr().out.count("waiting for the deployment spec update to be observed") == 3
    )

    server.get("Deployment", "faceoff", "detector")["spec"]["replicas"] = 2  # type: ignore[index]  # the HPA scaled it
    server.set_status("faceoff", "detector", _rolled_out(2))
    server.get("Deployment", "faceoff", "masker")["spec"]["replicas"] = 2  # type: ignore[index]
    server.set_status(
        "faceoff",
        "masker",
        {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2},
    )
    server.set_status("faceoff", "evaluator", {
        "observedGeneration": 1, "replicas": 1, "updatedReplicas": 0, "availableReplicas": 1,
        "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                        "message": 'ReplicaSet "evaluator-5d9" has timed out progressing.'}],
    })  # fmt: skip
    statuses = {
        s.name: s
        for s in rollout_status(
            connect(str(kubeconfig)), [("faceoff", n) for n in ("detector", "masker", "evaluator")]
        )
    }
    assert statuses["detector"].state == "done" and (
        statuses["detector"].available,
        statuses["detector"].desired,
    ) == (
        2,
        2,
    )
    assert (
        statuses["masker"].state == "progressing"
        and statuses["masker"].message == "1 out of 2 new replicas have been updated"
    )
    assert (
        statuses["evaluator"].state == "failed"
        and "timed out progressing" in statuses["evaluator"].message
    )

    server.set_status(
        "faceoff",
        "masker",
        {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2},
    )
    assert (
        rollout_status(connect(str(kubeconfig)), [("faceoff", "masker")])[0].message
        == "1 old replicas are pending termination"
    )
    server.set_status(
        "faceoff",
        "masker",
        {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1},
    )
    assert (
        rollout_status(connect(str(kubeconfig)), [("faceoff", "masker")])[0].message
        == "1 of 2 updated replicas are available"
    )

    server.set_status("faceoff", "masker", _rolled_out(2))
    server.set_status("faceoff", "evaluator", _rolled_out(1))
    assert main(["deploy", "status", "--kubeconfig", str(kubeconfig)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["detector", "done"],
        ["evaluator", "done"],
        ["masker", "done"],
    ]
    assert "2/2 available, 2 updated" in lines[0] and lines[0].endswith("successfully rolled out")


def test_status_of_deployments_not_applied(
    server: FakeApiServer, kubeconfig: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["deploy", "status", "--kubeconfig", str(kubeconfig)]) == 1
    out = capsys.readouterr().out
    assert out.count("missing") == 3 and "not found in namespace faceoff (not applied yet?)" in out


def test_wait_polls_until_every_rollout_is_done(server: FakeApiServer, kubeconfig: Path) -> None:
    apply(render("cpu", root=DEPLOY), connect(str(kubeconfig)))
    server.set_status("faceoff", "detector", _rolled_out(1))
    server.set_status("faceoff", "evaluator", _rolled_out(1))
    now = [0.0]
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds
        if len(sleeps) == 3:  # the masker's model has loaded
            server.set_status("faceoff", "masker", _rolled_out(1))

    deployments = [("faceoff", n) for n in ("detector", "masker", "evaluator")]
    statuses = wait_for_rollout(
        connect(str(kubeconfig)),
        deployments,
        timeout=600,
        interval=2,
        clock=lambda: now[0],
        sleep=sleep,
    )
    assert all(s.done for s in statuses) and sleeps == [2, 2, 2]
    # And gives up at the timeout.
    server.set_status(
        "faceoff",
        "masker",
        {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 0},
    )
    now[0], sleeps[:] = 0.0, []

    def just_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    statuses = wait_for_rollout(
        connect(str(kubeconfig)),
        deployments,
        timeout=5,
        interval=2,
        clock=lambda: now[0],
        sleep=just_sleep,
    )
    assert not all(s.done for s in statuses) and sum(sleeps) == 5


def test_context_and_credentials_come_from_the_kubeconfig(
    server: FakeApiServer, tmp_path: Path
) -> None:
    kubeconfig = server.kubeconfig(tmp_path)
    with pytest.raises(DeployError, match="cannot reach the Kubernetes API at http://127.0.0.1:9"):
        apply(render("cpu", root=DEPLOY), connect(str(kubeconfig), context="unreachable"))
    with pytest.raises(DeployError, match="no usable Kubernetes context"):
        connect(str(kubeconfig), context="nope")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    with pytest.raises(DeployError, match="Unauthorized"):
        apply(render("cpu", root=DEPLOY), connect(str(server.kubeconfig(wrong, token="stolen"))))
    assert not server.patches()
