"""Kubernetes deployment of the three services: ``faceoff deploy render|apply|status``.

The manifests live in the repository's ``deploy/`` folder (not in the wheel): ``deploy/k8s/base``
with the overlays ``deploy/k8s/overlays/cpu`` and ``.../gpu``, and the Prometheus Operator
objects in ``deploy/observability``. :func:`render` builds them with kustomize (``kubectl
kustomize``, :mod:`faceoff.cli.deploy.kustomize`); :mod:`faceoff.cli.deploy.cluster` applies them (server-side apply)
and reports the Deployments' rollout, with the official ``kubernetes`` client.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from faceoff.cli.paths import CHECKOUT

__all__ = ["DeployError", "deploy_dir", "overlays", "render"]


class DeployError(RuntimeError):
    """The manifests cannot be found, rendered or applied; the message says what to do."""


def deploy_dir() -> Path:
    """The ``deploy/`` folder: ``$FACEOFF_DEPLOY_DIR``, else the checkout's, else ``./deploy``."""
    explicit = os.environ.get("FACEOFF_DEPLOY_DIR")
    if explicit:
        candidates: tuple[Path, ...] = (Path(explicit).expanduser(),)
    else:
        # The checkout this package was installed from (editable installs), then ./deploy.
        candidates = (CHECKOUT / "deploy", Path.cwd() / "deploy")
    for candidate in candidates:
        if (candidate / "k8s" / "base").is_dir():
            return candidate
    raise DeployError(
        f"no Kubernetes manifests (k8s/base) in {', '.join(str(c) for c in candidates)}; run from the "
        "repository root or set FACEOFF_DEPLOY_DIR to its deploy/ folder"
    )


def overlays(root: Path | None = None) -> list[str]:
    """Names of the overlays under ``deploy/k8s/overlays`` (``cpu``, ``gpu``)."""
    base = (root or deploy_dir()) / "k8s" / "overlays"
    return sorted(p.name for p in base.iterdir() if (p / "kustomization.yaml").is_file())


def render(
    overlay: str = "cpu", *, monitoring: bool = False, root: Path | None = None
) -> list[dict[str, Any]]:
    """The objects of ``overlay``, plus the Prometheus Operator objects when ``monitoring``.

    Raises:
        DeployError: unknown overlay, no kubectl, or a kustomization kustomize refuses.
    """
    from faceoff.cli.deploy.kustomize import KustomizeError, build

    root = root or deploy_dir()
    known = overlays(root)
    if overlay not in known:
        raise DeployError(f"unknown overlay {overlay!r}; known overlays: {', '.join(known)}")
    try:
        objects = build(root / "k8s" / "overlays" / overlay)
        if monitoring:
            objects += build(root / "observability")
    except KustomizeError as exc:
        raise DeployError(str(exc)) from None
    return objects
