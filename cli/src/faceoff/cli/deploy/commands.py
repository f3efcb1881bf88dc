"""The ``faceoff deploy`` sub-commands: render, apply, status.

- ``faceoff deploy render [--overlay cpu|gpu] [--monitoring]``: print the manifests as YAML.
- ``faceoff deploy apply [--overlay ...] [--monitoring] [--dry-run=server] [--context C]``:
  server-side apply to the current (or named) kube context, field manager ``faceoff``.
- ``faceoff deploy status [--overlay ...] [--wait SECONDS]``: rollout of the three Deployments.

Only argparse is imported here; PyYAML and the ``kubernetes`` client load when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

__all__ = ["add_deploy_parser", "run"]


def add_deploy_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``deploy`` and its sub-commands to the ``faceoff`` parser."""
    p = sub.add_parser("deploy", help="render, apply and check the Kubernetes manifests (deploy/)")
    deploy_sub = p.add_subparsers(dest="deploy_action", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--overlay", default="cpu", help="cpu (default) or gpu: where the masker runs"
        )
        q.add_argument(
            "--monitoring", action="store_true",
            help="include deploy/observability (ServiceMonitor, PrometheusRule, dashboard; needs the Prometheus Operator)",
        )  # fmt: skip

    def cluster(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
        )
        q.add_argument("--context", help="kube context (default: the current one)")

    q = deploy_sub.add_parser("render", help="print the rendered manifests as YAML")
    common(q)
    q = deploy_sub.add_parser(
        "apply", help="server-side apply the manifests (field manager 'faceoff')"
    )
    common(q)
    cluster(q)
    q.add_argument(
        "--dry-run", choices=("none", "server"), default="none",
        help="server: let the API server validate and admit everything without persisting it",
    )  # fmt: skip
    q.add_argument(
        "--force-conflicts", action="store_true", help="take over fields another manager owns"
    )
    q = deploy_sub.add_parser(
        "status", help="rollout status of the detector, masker and evaluator Deployments"
    )
    common(q)
    cluster(q)
    q.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="wait up to this long for the rollouts to finish",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``faceoff deploy <action>``; exit status 0 on success, 1 on failure, 2 on bad input."""
    from faceoff.cli.deploy import DeployError, render

    action = args.deploy_action
    try:
        objects = render(args.overlay, monitoring=args.monitoring)
        if action == "render":
            from faceoff.cli.deploy.kustomize import to_yaml

            sys.stdout.write(to_yaml(objects))
            return 0
        from faceoff.cli.deploy.cluster import connect

        api_client = connect(args.kubeconfig, args.context)
        if action == "apply":
            return _apply(objects, api_client, args)
        return _status(objects, api_client, args)
    except DeployError as exc:
        print(f"faceoff deploy {action}: {exc}", file=sys.stderr)
        return 2 if action == "render" else 1


def _apply(objects: list[dict[str, Any]], api_client: ApiClient, args: argparse.Namespace) -> int:
    from faceoff.cli.deploy.cluster import ApplyResult, apply

    dry_run = args.dry_run == "server"
    suffix = " (server dry run)" if dry_run else ""

    def report(result: ApplyResult) -> None:
        if result.ok:
            print(f"{result.ref} serverside-applied{suffix}")
        else:
            print(f"{result.ref}: error: {result.error}", file=sys.stderr)

    results = apply(
        objects, api_client, dry_run=dry_run, force_conflicts=args.force_conflicts, on_result=report
    )
    failed = [r for r in results if not r.ok]
    if failed:
        print(
            f"faceoff deploy apply: {len(failed)} of {len(results)} objects failed", file=sys.stderr
        )
        if dry_run and any(
            "namespaces" in (r.error or "") and "not found" in (r.error or "") for r in failed
        ):
            print(
                "  (a server dry run cannot create the namespace the other objects go into: "
                "create it first, or apply once without --dry-run)",
                file=sys.stderr,
            )
        return 1
    return 0


def _status(objects: list[dict[str, Any]], api_client: ApiClient, args: argparse.Namespace) -> int:
    from faceoff.cli.deploy.cluster import rollout_status, wait_for_rollout

    deployments = [
        (o["metadata"].get("namespace", "default"), o["metadata"]["name"])
        for o in objects
        if o["kind"] == "Deployment"
    ]
    if args.wait is not None:
        statuses = wait_for_rollout(api_client, deployments, timeout=args.wait)
    else:
        statuses = rollout_status(api_client, deployments)
    width = max(len(s.name) for s in statuses)
    for s in statuses:
        counts = (
            f"{s.available}/{s.desired} available, {s.updated} updated"
            if s.state != "missing"
            else ""
        )
        print(f"{s.name:<{width}}  {s.state:<11}  {counts:<28}  {s.message}".rstrip())
    return 0 if all(s.done for s in statuses) else 1
