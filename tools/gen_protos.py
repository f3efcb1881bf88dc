"""Regenerate the Python protobuf/gRPC modules and .pyi stubs from ``protos/``.

Usage: ``python tools/gen_protos.py`` (needs grpcio-tools and mypy-protobuf). Writes the
package ``faceoff/v1/`` (git-ignored), which the services and the SDK import as ``faceoff.v1``.
Generated files are never edited by hand.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT_PACKAGE = ROOT / "faceoff" / "v1"


def main() -> int:
    from grpc_tools import protoc  # imported here: only this tool needs grpcio-tools

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / "faceoff" / "v1").glob("*.proto"))
    if not protos:
        print(f"no .proto files under {PROTO_ROOT}", file=sys.stderr)
        return 1
    if OUT_PACKAGE.exists():
        shutil.rmtree(OUT_PACKAGE)
    OUT_PACKAGE.mkdir(parents=True)
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        f"--mypy_out={ROOT}",
        f"--mypy_grpc_out={ROOT}",
        *protos,
    ]
    plugin = shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent))
    if plugin is None:
        print("protoc-gen-mypy not found next to this Python: pip install mypy-protobuf", file=sys.stderr)
        return 1
    args.insert(1, f"--plugin=protoc-gen-mypy={plugin}")
    grpc_plugin = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    if grpc_plugin:
        args.insert(1, f"--plugin=protoc-gen-mypy_grpc={grpc_plugin}")
    rc = protoc.main(args)
    if rc != 0:
        print(f"protoc failed with exit code {rc}", file=sys.stderr)
        return rc
    (OUT_PACKAGE / "__init__.py").write_text(
        '"""Generated from protos/faceoff/v1 by tools/gen_protos.py; do not edit."""\n'
    )
    (OUT_PACKAGE / "py.typed").write_text("")
    print(f"generated {len(list(OUT_PACKAGE.glob('*.py')))} modules in {OUT_PACKAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
