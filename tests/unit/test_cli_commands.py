"""The command line as small rooms: one module per sub-command, plugins by entry point."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

# the module (faceoff.cli's attribute ``main`` is the entry-point function)
cli_main = importlib.import_module("faceoff.cli.main")

CLI = Path(cli_main.__file__).resolve().parent


def test_without_faceoff_bench_the_bench_command_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [])
    assert cli_main.main(["bench", "transfer", "--alpha", "1"]) == 2
    assert "pip install ./bench" in capsys.readouterr().err


def test_faceoff_bench_plugs_its_benchmarks_in() -> None:
    parser = cli_main.build_parser()
    args = parser.parse_args(["bench", "transfer", "--alpha", "1", "--face-size", "small"])
    assert args.bench == "transfer" and args.face_size == "small" and callable(args.run)


def test_the_cli_has_small_rooms() -> None:
    """No module over 300 lines and no function over 80 lines anywhere in the command's
    package (issue 26)."""
    long = []
    for file in sorted(CLI.rglob("*.py")):
        text = file.read_text()
        if len(text.splitlines()) > 300:
            long.append(f"{file.relative_to(CLI)} ({len(text.splitlines())} lines)")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > 80:
                    long.append(f"{file.relative_to(CLI)}:{node.name} ({lines} lines)")
    assert not long, long
