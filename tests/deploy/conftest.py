"""Fixtures for the deployment tests: rendered overlays, the deploy/ folder, external tools.

Everything here runs offline: manifests are rendered with kubectl's built-in kustomize
(`faceoff deploy render`), validated against the Kubernetes JSON schemas bundled in
kubernetes-validate, and checked with promtool and hadolint (./dev setup installs them all).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from faceoff.cli.deploy import overlays, render

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
OVERLAYS = overlays(DEPLOY)

Obj = dict[str, Any]


def tool(name: str, fix: str) -> str:
    """Path of an executable from the venv (next to this Python) or PATH; fail saying ``fix``."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: {fix}")
    return str(found)


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[Obj]]:
    """overlay -> its objects, without and with the monitoring objects (key ``<overlay>+monitoring``)."""
    out = {}
    for name in OVERLAYS:
        out[name] = render(name, root=DEPLOY)
        out[f"{name}+monitoring"] = render(name, monitoring=True, root=DEPLOY)
    return out


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    """The objects of one kind, by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def containers(deployment: Obj) -> list[Obj]:
    return list(deployment["spec"]["template"]["spec"]["containers"])


def env(container: Obj) -> dict[str, Any]:
    """A container's env as name -> value (or the valueFrom mapping)."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}
