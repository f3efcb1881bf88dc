"""Generate the Python protobuf/gRPC modules and .pyi stubs of the contract from ``faceoff/v1/*.proto``.

The build of the ``faceoff-contract`` distribution runs this (``setup.py``), so ``pip install
./protos`` and ``pip wheel ./protos`` work from a clean clone; ``python protos/generate.py``
runs it by hand. The output, ``protos/src/faceoff/v1/``, is git-ignored and never edited by hand.
Needs grpcio-tools and mypy-protobuf (the build's own requirements).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
OUT_ROOT = PROTO_ROOT / "src"
OUT_PACKAGE = OUT_ROOT / "faceoff" / "v1"


def _plugin(name: str) -> str | None:
    """The protoc plugin ``name`` installed beside this Python, or on PATH."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)


def generate() -> int:
    """Write ``OUT_PACKAGE``; returns protoc's exit code (0 on success)."""
    from grpc_tools import protoc  # imported here: only the build needs grpcio-tools

    protos = sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "faceoff" / "v1").glob("*.proto")
    )
    if not protos:
        print(f"no .proto files under {PROTO_ROOT}", file=sys.stderr)
        return 1
    mypy_plugin, mypy_grpc_plugin = _plugin("protoc-gen-mypy"), _plugin("protoc-gen-mypy_grpc")
    if mypy_plugin is None or mypy_grpc_plugin is None:
        print(
            "protoc-gen-mypy / protoc-gen-mypy_grpc not found: pip install mypy-protobuf",
            file=sys.stderr,
        )
        return 1
    if OUT_PACKAGE.exists():
        shutil.rmtree(OUT_PACKAGE)
    OUT_PACKAGE.mkdir(parents=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--plugin=protoc-gen-mypy={mypy_plugin}",
        f"--plugin=protoc-gen-mypy_grpc={mypy_grpc_plugin}",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={OUT_ROOT}",
        f"--grpc_python_out={OUT_ROOT}",
        f"--mypy_out=quiet:{OUT_ROOT}",
        f"--mypy_grpc_out=quiet:{OUT_ROOT}",
        *protos,
    ]
    rc = protoc.main(args)
    if rc != 0:
        print(f"protoc failed with exit code {rc}", file=sys.stderr)
        return int(rc)
    (OUT_PACKAGE / "__init__.py").write_text(
        '"""Generated from protos/faceoff/v1 by protos/generate.py; do not edit."""\n'
    )
    (OUT_PACKAGE / "py.typed").write_text("")
    return 0


if __name__ == "__main__":
    raise SystemExit(generate())
