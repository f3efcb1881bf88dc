"""``faceoff protect PHOTO|DIR ... -o OUT``: protect photos, in-process or with a masker service
(through the SDK); resumable over a folder (:mod:`faceoff.cli.batch`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from faceoff.cli.flags import add_client_security_flags, client_security
from faceoff.cli.folders import read_reference_dir
from faceoff.sdk import DEFAULT_PROFILE, PROFILES, Client


def register(sub: Any, loud: argparse.ArgumentParser) -> None:
    """Add ``protect`` to the command's sub-parsers (``loud``: the shared ``--verbose`` flag)."""
    p = sub.add_parser(
        "protect", help="protect the faces in photos (in-process, or with --server)", parents=[loud]
    )
    p.add_argument(
        "photos",
        nargs="+",
        type=Path,
        metavar="PHOTO|DIR",
        help="photos, or folders of photos, to protect",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output folder (NAME.protected.EXT inside); with one input photo, a file name is also accepted",
    )
    p.add_argument(
        "--profile",
        choices=PROFILES,
        help=f"bundle of attack settings (default {DEFAULT_PROFILE}). Measured on the shared photos: medium "
        "stops independent recognisers identifying only about 1 face in 4 (dlib 22-30%%, "
        "MobileFaceNet 16-22%%, FaceNet-512 34-38%%, large and small faces; fewer after a "
        "platform's re-encode), low almost none, high about 3 "
        "in 4 (dlib 80%%) with a visible texture; add --check dlib,mobilefacenet to see what "
        "your photo got",
    )
    p.add_argument(
        "--reference", type=Path, help="folder of the person's own photos (the reference set A_y)"
    )
    p.add_argument("--server", help="masker HOST:PORT to use instead of the in-process pipeline")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="with --server: seconds each photo may take in all, retries included (default 300); "
        "a photo over it is reported failed and the batch goes on",
    )
    p.add_argument(
        "--evaluator",
        help="evaluator HOST:PORT for --check with --server (default: the --server address)",
    )
    p.add_argument(
        "--check",
        help="recognisers to ask whether each protected photo still picks you out among public "
        "figures, e.g. dlib,mobilefacenet (the independent ones: no profile attacks them)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="protect again photos whose output exists (default: skip them)",
    )
    p.add_argument("--json", action="store_true", help="print each photo's receipt as a JSON line")
    p.add_argument(
        "--receipts", type=Path, help="also write every receipt to this file (JSON lines)"
    )
    add_client_security_flags(p)
    add_protect_flags(p)
    p.set_defaults(run=run, traced=True)


def add_protect_flags(p: argparse.ArgumentParser) -> None:
    """Explicit attack settings, one flag per option the contract declares (its help and
    choices too); each overrides the profile's value."""
    from faceoff.masker.schema import OPTIONS

    for name, spec in OPTIONS.items():
        flag = "--" + spec.keyword.replace("_", "-")
        if name == "mode":
            p.add_argument(flag, action="store_true", default=None, help=spec.help)
        elif spec.kind == "enum":
            p.add_argument(flag, choices=spec.names, help=spec.help)
        elif spec.kind == "bool":
            action = argparse.BooleanOptionalAction if spec.optional else "store_true"
            p.add_argument(flag, action=action, default=None, help=spec.help)
        elif spec.repeated:
            p.add_argument(flag, help=f"{spec.help}; comma-separated")
        else:
            kind = {"int": int, "float": float, "str": str}[spec.kind]
            p.add_argument(flag, type=kind, help=spec.help)


def protect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The explicit option overrides given on the command line (None where unset), by
    :class:`~faceoff.masker.options.ProtectionOptions` attribute."""
    from faceoff.masker.schema import OPTIONS

    out: dict[str, Any] = {}
    for spec in OPTIONS.values():
        value = getattr(args, spec.keyword)
        if spec.repeated and value is not None:
            value = _list_flag("--" + spec.keyword.replace("_", "-"), spec.kind, value)
        out[spec.keyword] = value
    if out["targeted"] is None and args.target:
        out["targeted"] = True
    return out


def _list_flag(flag: str, kind: str, text: str) -> tuple[Any, ...]:
    """A comma-separated flag value as a tuple of ``kind`` ("int", "float" or "str")."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    if kind == "str":
        return tuple(items)
    try:
        return tuple(int(v) if kind == "int" else float(v) for v in items)
    except ValueError:
        what = "integers" if kind == "int" else "numbers"
        raise SystemExit(f"faceoff: {flag} takes comma-separated {what}, got {text!r}") from None


def print_receipt(receipt: dict[str, Any], output: Path) -> None:
    """A short human-readable receipt: the photo, the ``--check`` verdicts first (is it
    protected?), then per face what was done to it."""
    print(
        f"{output}: {receipt['width']}x{receipt['height']} {receipt['format']}, "
        f"{receipt['faces_protected']} of {receipt['faces_found']} face(s) perturbed in {receipt['seconds']:.1f} s "
        f"(profile {receipt['profile']})"
    )
    if receipt.get("verdicts"):
        print_verdict_lines(receipt["verdicts"], largest_face=receipt.get("faces_found", 1) > 1)
    for f in receipt["faces"]:
        target = f" -> looks like {f['target']}" if f["target"] else ""
        psnr = "unchanged" if f["psnr"] is None else f"{f['psnr']:.1f} dB"
        seen = f.get("butteraugli")
        butteraugli = (
            "Butteraugli n/a (install butteraugli)"
            if seen is None
            else f"Butteraugli {seen:.1f} as displayed, {f['butteraugli_native']:.1f} native"
        )
        if f.get("blotch") is not None:
            butteraugli += f", blotch {f['blotch']:.1f}/255"
        print(
            f"  face {f['index']}: PSNR {psnr}, SSIM {f['ssim']:.3f}, {butteraugli}, "
            f"|a*d|2 {f['l2']:.2f}, "
            f"surrogate distance to you {f['distance_before']:.2f} -> {f['distance_after']:.2f}{target}"
        )
    for note in receipt.get("notes", ()):
        print(f"  note: {note}")


def print_verdict_lines(verdicts: list[dict[str, Any]], largest_face: bool = False) -> None:
    """The ``--check`` verdicts of a receipt: whether the photo is protected, then one line per
    recogniser (:mod:`faceoff.cli.verdicts`); ``largest_face`` says they are about that face."""
    from faceoff.cli.verdicts import overall_line, verdict_line

    print(f"  {overall_line(verdicts)}{' (largest face)' if largest_face else ''}")
    for v in verdicts:
        print(f"    {verdict_line(v)}")


def _refusal(args: argparse.Namespace, overrides: dict[str, Any]) -> str | None:
    """Why the options cannot run (checked before the first photo, not once per photo)."""
    from faceoff.common.errors import InvalidOption
    from faceoff.masker.options import resolve

    try:
        resolve(args.profile, **overrides)
    except InvalidOption as exc:
        return exc.message
    if not args.server and (args.tls or args.ca or args.cert or args.key or args.token_file):
        return "--tls, --ca, --cert, --key and --token-file are for --server"
    if args.server and args.timeout is not None and not args.timeout > 0:
        return f"--timeout must be > 0 seconds, got {args.timeout:g}"
    return None


def _client(args: argparse.Namespace, checks: list[str]) -> Client | None:
    """The SDK client: of the masker at ``--server``, or the pipeline in this process (with the
    local recognisers ``--check`` names); None after saying why it cannot be made."""
    if args.server:
        from faceoff.common.settings import SettingsError

        try:
            tls, token = client_security(args)
        except SettingsError as exc:
            print(f"faceoff protect: {exc}", file=sys.stderr)
            return None
        return Client(
            args.server,
            evaluator=args.evaluator,
            tls=tls,
            token=token,
            **({"timeout": args.timeout} if args.timeout is not None else {}),
        )
    from faceoff.faces.recognizers import LOCAL_RECOGNIZERS

    print(
        "faceoff protect: loading the models in-process (the first photo takes 20-30 s on a "
        "2-core CPU, the next ones a few each; --server uses a running masker)",
        file=sys.stderr,
    )
    return Client.local(recognizers=[n for n in checks if n in LOCAL_RECOGNIZERS])


def run(args: argparse.Namespace) -> int:
    from faceoff.cli import batch
    from faceoff.sdk import Progress, ProtectedPhoto

    overrides = protect_overrides(args)
    problem = _refusal(args, overrides)
    if problem is not None:
        print(f"faceoff protect: {problem}", file=sys.stderr)
        return 2
    try:
        items, resume = batch.plan(args.photos, args.output)
    except batch.PlanError as exc:
        print(f"faceoff protect: {exc}", file=sys.stderr)
        return 2
    references = read_reference_dir(args.reference) if args.reference else []
    checks = [n.strip() for n in (args.check or "").split(",") if n.strip()]
    client = _client(args, checks)
    if client is None:
        return 2
    sdk_options = {k: v for k, v in overrides.items() if k not in ("target", "seed")}

    def protect(
        client: Client, source: Path, on_progress: Callable[[Progress], None]
    ) -> ProtectedPhoto:
        return client.protect(
            source,
            profile=args.profile or DEFAULT_PROFILE,
            reference_photos=references,
            target=overrides["target"],
            seed=overrides["seed"],
            check=checks,
            on_progress=on_progress,
            **sdk_options,
        )

    with client:
        return batch.run(
            client,
            items,
            protect,
            resume=resume and not args.overwrite,
            json_lines=args.json,
            receipts=args.receipts,
            checks=checks,
            on_receipt=print_receipt,
        )
