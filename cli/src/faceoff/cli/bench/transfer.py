"""``faceoff bench transfer``: the paper's transferability experiment as one command.

``DIR`` holds one folder per identity with photos (full photos or face crops). For each probe
photo, the identity's other photos are the user's reference set and its gallery entry. The probe
is protected through the real pipeline (in-process MTCNN detector -> masker; the attack runs
once per probe and per kappa, then each alpha is applied to the same perturbation), and the
clean and protected probes are identified top-1 and top-3 against the gallery of all identities
(nearest centroid, the probe itself left out) by each recogniser. The same is done after
re-encoding the protected photo as JPEG quality 75 and downscaling it to 50%, as a platform
might. A recogniser that finds no face in a protected photo did not identify it.

``evasion_rate`` is, among the probes a recogniser identified correctly when clean, the fraction
it no longer identifies top-1 after protection. Recognisers whose model the attack ran on (a
surrogate, alone or in an ensemble) are marked ``"white_box": true``, and those consulted by
adaptive amplification ``"in_loop": true``: neither says anything about transfer. Each result row
says whether it meets the transfer goal on the remaining, independent recognisers (``goal``):
evasion >= 95% on each, mean face PSNR >= 32 dB, at most 5 points lost after the platform copy.

Any protection option can be set with ``--set NAME=VALUE`` (repeatable), e.g.
``--set momentum=1 --set surrogates=facenet,facenet512 --set adaptive_alpha=true``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from faceoff.cli.bench.report import emit, print_table
from faceoff.cli.paths import CELEBS
from faceoff.faces.whitebox import is_white_box

if TYPE_CHECKING:
    from faceoff.faces.recognizers import EmbeddingRecognizer

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: The transfer goal: evasion on every independent recogniser, mean face PSNR, points lost on the platform copy.
GOAL_EVASION, GOAL_PSNR, GOAL_PLATFORM_LOSS = 0.95, 32.0, 0.05
DEFAULT_DATA = CELEBS / "photos"
#: Attacks are run for this many probes at once (one compiled batch).
ATTACK_BATCH = 8


def platform_copy(data: bytes) -> bytes:
    """What a platform might keep of an upload: JPEG quality 75 at half the size."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        half = rgb.resize(
            (max(1, rgb.width // 2), max(1, rgb.height // 2)), Image.Resampling.BILINEAR
        )
        buf = io.BytesIO()
        half.save(buf, "JPEG", quality=75)
        return buf.getvalue()


def _identities(data: Path) -> dict[str, list[Path]]:
    out = {}
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
        if len(photos) >= 2:
            out[folder.name] = photos
    if len(out) < 2:
        raise SystemExit(
            f"faceoff bench transfer: {data} needs at least 2 identity folders with 2+ photos each"
        )
    return out


class _Gallery:
    """One recogniser's clean embeddings of every photo, and nearest-centroid ranking."""

    def __init__(
        self,
        recognizer: EmbeddingRecognizer,
        identities: dict[str, list[Path]],
        photos: dict[Path, bytes],
    ) -> None:
        from faceoff.common.errors import NoFaceFound
        from faceoff.faces.recognizers import FacePhoto

        self.recognizer = recognizer
        self.names = list(identities)
        self.embeddings: dict[Path, np.ndarray | None] = {}
        for paths in identities.values():
            for p in paths:
                try:
                    self.embeddings[p] = recognizer.embed(
                        FacePhoto.from_bytes(photos[p], label=p.name)
                    )
                except NoFaceFound:
                    self.embeddings[p] = None
        self.identities = identities

    def rank(self, embedding: np.ndarray | None, leave_out: Path) -> list[str]:
        """Identity names by centroid distance, nearest first (empty if there is no embedding)."""
        if embedding is None:
            return []
        scored = []
        for name in self.names:
            embs = [
                emb
                for p in self.identities[name]
                if p != leave_out and (emb := self.embeddings[p]) is not None
            ]
            if embs:
                centroid = self.recognizer.centroid(np.stack(embs))
                scored.append((self.recognizer.distance(embedding, centroid), name))
        return [name for _, name in sorted(scored)]

    def embed(self, data: bytes) -> np.ndarray | None:
        from faceoff.common.errors import NoFaceFound
        from faceoff.faces.recognizers import FacePhoto

        try:
            return self.recognizer.embed(FacePhoto.from_bytes(data))
        except NoFaceFound:
            return None


def _progress(total: int, desc: str) -> Any:
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        file=sys.stderr,
        dynamic_ncols=tty,
        mininterval=1.0 if tty else 10.0,
        ascii=not tty,
    )


def run(
    data: Path,
    recognizers: Sequence[str],
    profile: str = "medium",
    alphas: Sequence[float] = (1, 1.5, 2, 3, 4),
    kappas: Sequence[float | None] = (None,),
    probes_per_identity: int = 0,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the experiment; returns the JSON-ready result (see the module docstring)."""
    from faceoff.detector.detection import FaceDetector
    from faceoff.faces.recognizers import get_local
    from faceoff.masker.options import resolve
    from faceoff.masker.protection import Protector

    identities = _identities(data)
    photos = {p: p.read_bytes() for paths in identities.values() for p in paths}
    probes = [
        (name, p)
        for name, paths in identities.items()
        for p in (paths[:probes_per_identity] if probes_per_identity else paths)
    ]
    detector = FaceDetector()
    protector = Protector()
    detections = {p: detector.detect(photos[p]) for p in photos}
    galleries = {}
    for name in recognizers:
        rec = get_local(name)
        rec.load()
        galleries[name] = _Gallery(rec, identities, photos)

    results = []
    for kappa in kappas:
        options = resolve(
            profile,
            seed=seed,
            **({"kappa": kappa} if kappa is not None else {}),
            **(overrides or {}),
        )
        # One attack per probe (in batches), then every alpha from the same perturbation.
        jobs, deltas, attack_seconds = [], [], 0.0
        bar = _progress(len(probes), f"attack (kappa={options.kappa:g})")
        for start in range(0, len(probes), ATTACK_BATCH):
            chunk = []
            for name, probe in probes[start : start + ATTACK_BATCH]:
                refs = [(photos[r], detections[r]) for r in identities[name] if r != probe]
                chunk.append(protector.prepare(photos[probe], options, detections[probe], refs))
            t0 = time.perf_counter()
            deltas += protector.attack(chunk)
            attack_seconds += time.perf_counter() - t0
            jobs += chunk
            bar.update(len(chunk))
        bar.close()
        faces = sum(j.size for j in jobs) or 1
        surrogates = set(jobs[0].options.surrogates) if jobs else set(options.surrogates)
        in_loop = set(options.loop_recognizers) if options.adaptive_alpha else set()
        for alpha in alphas:
            bar = _progress(len(probes), f"alpha={alpha:g}")
            psnrs, ssims, l2s, chosen, finish_seconds = [], [], [], [], 0.0
            outcome: dict[str, dict[str, list[Any]]] = {
                n: {"clean": [], "top1": [], "top3": [], "platform": []} for n in recognizers
            }
            for (name, probe), job, delta in zip(probes, jobs, deltas):
                t0 = time.perf_counter()
                result = protector.finish(
                    dataclasses.replace(job, options=dataclasses.replace(job.options, alpha=alpha)),
                    delta,
                )
                finish_seconds += time.perf_counter() - t0
                for face in result.faces:
                    psnrs.append(face.psnr if np.isfinite(face.psnr) else 100.0)
                    ssims.append(face.ssim)
                    l2s.append(face.l2)
                    chosen.append(face.alpha)
                degraded = platform_copy(result.data)
                for rec_name, gallery in galleries.items():
                    clean = gallery.rank(gallery.embeddings[probe], probe)
                    protected = gallery.rank(gallery.embed(result.data), probe)
                    after_platform = gallery.rank(gallery.embed(degraded), probe)
                    o = outcome[rec_name]
                    o["clean"].append(bool(clean) and clean[0] == name)
                    o["top1"].append(bool(protected) and protected[0] == name)
                    o["top3"].append(name in protected[:3])
                    o["platform"].append(bool(after_platform) and after_platform[0] == name)
                bar.update(1)
            bar.close()
            per_rec = {}
            for rec_name, o in outcome.items():
                clean_ok = np.array(o["clean"], bool)
                top1 = np.array(o["top1"], bool)
                plat = np.array(o["platform"], bool)
                n_clean = int(clean_ok.sum())
                per_rec[rec_name] = {
                    "white_box": is_white_box(rec_name, surrogates),
                    "in_loop": rec_name in in_loop,
                    "clean_top1": float(clean_ok.mean()),
                    "protected_top1": float(top1.mean()),
                    "protected_top3": float(np.mean(o["top3"])),
                    "evasion_rate": float((clean_ok & ~top1).sum() / n_clean)
                    if n_clean
                    else float("nan"),
                    "evasion_rate_jpeg75_half": float((clean_ok & ~plat).sum() / n_clean)
                    if n_clean
                    else float("nan"),
                    "probes_clean_correct": n_clean,
                }
            psnr_mean = float(np.mean(psnrs)) if psnrs else float("nan")
            results.append(
                {
                    "alpha": float(alpha),
                    "kappa": float(options.kappa),
                    "alpha_applied_mean": float(np.mean(chosen)) if chosen else float("nan"),
                    "goal": goal(per_rec, psnr_mean),
                    "psnr_face_mean": psnr_mean,
                    "ssim_face_mean": float(np.mean(ssims)) if ssims else float("nan"),
                    "l2_mean": float(np.mean(l2s)) if l2s else float("nan"),
                    "seconds_per_face": (attack_seconds + finish_seconds) / faces,
                    "recognizers": per_rec,
                }
            )
    resolved = protector.resolved(resolve(profile, seed=seed, **(overrides or {})))
    return {
        "dataset": str(data),
        "identities": len(identities),
        "probes": len(probes),
        "config": {
            "profile": profile,
            "attack": resolved.attack,
            "norm": resolved.norm,
            "loss": resolved.loss,
            "targeted": resolved.targeted,
            "epsilon": resolved.epsilon,
            "iterations": resolved.iterations,
            "alphas": [float(a) for a in alphas],
            "surrogates": list(resolved.surrogates),
            "surrogate_weights": list(resolved.surrogate_weights),
            "momentum": resolved.momentum,
            "diversity": resolved.diversity,
            "ti_kernel": resolved.ti_kernel,
            "eot": resolved.eot,
            "adaptive_alpha": resolved.adaptive_alpha,
            "psnr_floor": resolved.psnr_floor if resolved.adaptive_alpha else None,
            "loop_recognizers": list(resolved.loop_recognizers) if resolved.adaptive_alpha else [],
            "overrides": {
                k: (list(v) if isinstance(v, tuple) else v) for k, v in (overrides or {}).items()
            },
            "kappas": [float(k) if k is not None else resolved.kappa for k in kappas],
            "seed": seed,
            "probes_per_identity": probes_per_identity or "all",
            "recognizers": list(recognizers),
            "platform_copy": "JPEG quality 75 at 50% size",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
    }


def goal(per_rec: dict[str, dict[str, Any]], psnr_mean: float) -> dict[str, Any]:
    """Whether a result row meets the transfer goal on its independent recognisers."""
    judged = {n: v for n, v in per_rec.items() if not v["white_box"] and not v["in_loop"]}
    evasion = {n: v["evasion_rate"] for n, v in judged.items()}
    lost = {n: v["evasion_rate"] - v["evasion_rate_jpeg75_half"] for n, v in judged.items()}
    met = (
        bool(judged)
        and psnr_mean >= GOAL_PSNR
        and all(e >= GOAL_EVASION and lost[n] <= GOAL_PLATFORM_LOSS for n, e in evasion.items())
    )
    return {
        "judged_on": sorted(judged),
        "min_evasion": min(evasion.values()) if evasion else None,
        "max_platform_loss": max(lost.values()) if lost else None,
        "met": met,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    """Evasion rate against ||alpha*delta||_2 and against PSNR, one line per recogniser (paper Fig. 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = sorted(result["results"], key=lambda r: r["alpha"])
    for name in result["config"]["recognizers"]:
        white = rows[0]["recognizers"][name]["white_box"] if rows else False
        label = f"{name} (white-box)" if white else name
        ev = [100 * r["recognizers"][name]["evasion_rate"] for r in rows]
        style = "--" if white else "-"
        axes[0].plot([r["l2_mean"] for r in rows], ev, style, marker="o", label=label)
        axes[1].plot([r["psnr_face_mean"] for r in rows], ev, style, marker="o", label=label)
    axes[0].set_xlabel("mean ||alpha * delta||_2 (160 px crop, [0, 1] units)")
    axes[1].set_xlabel("mean face-region PSNR (dB)")
    axes[1].invert_xaxis()
    for ax in axes:
        ax.set_ylabel("top-1 evasion rate (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"Face-Off transfer, profile {result['config']['profile']}, {result['probes']} probes"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _floats(text: str | None) -> list[float]:
    return [float(v) for v in text.split(",")] if text else []


def parse_settings(items: Sequence[str]) -> dict[str, Any]:
    """``["momentum=1", "surrogates=facenet,facenet512"]`` as typed protection-option overrides."""
    from faceoff.masker.options import ProtectionOptions

    kinds = {f.name: str(f.type) for f in dataclasses.fields(ProtectionOptions)}
    out: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in kinds or name == "profile":
            raise SystemExit(
                f"faceoff bench transfer: --set takes NAME=VALUE with NAME one of "
                f"{', '.join(sorted(set(kinds) - {'profile'}))}; got {item!r}"
            )
        kind = kinds[name]
        try:
            if kind.startswith("tuple"):
                parts = [v.strip() for v in raw.split(",") if v.strip()]
                out[name] = (
                    tuple(float(v) for v in parts)
                    if "float" in kind
                    else (tuple(int(v) for v in parts) if "int" in kind else tuple(parts))
                )
            elif kind == "bool":
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                out[name] = raw.lower() in ("true", "1", "yes")
            elif kind == "int":
                out[name] = int(raw)
            elif kind == "float":
                out[name] = float(raw)
            else:
                out[name] = raw
        except ValueError:
            raise SystemExit(
                f"faceoff bench transfer: --set {name}= needs a {kind}, got {raw!r}"
            ) from None
    return out


def main(args: Any) -> int:
    """Run, print and optionally plot the benchmark (``args`` from the CLI parser)."""
    recognizers = [r.strip() for r in args.recognizers.split(",") if r.strip()]
    kappas: list[float | None] = list(_floats(args.kappa)) or [None]
    result = run(
        Path(args.data) if args.data else DEFAULT_DATA,
        recognizers,
        args.profile,
        _floats(args.alpha) or [1, 1.5, 2, 3, 4],
        kappas,
        args.probes_per_identity,
        args.seed,
        parse_settings(args.set or []),
    )
    emit(result, args.json_out)
    rows = []
    for r in result["results"]:
        for name, v in r["recognizers"].items():
            mark = " (wb)" if v["white_box"] else " (loop)" if v["in_loop"] else ""
            rows.append(
                [
                    r["alpha"],
                    round(r["alpha_applied_mean"], 2),
                    round(r["psnr_face_mean"], 1),
                    name + mark,
                    v["clean_top1"],
                    v["protected_top1"],
                    v["evasion_rate"],
                    v["evasion_rate_jpeg75_half"],
                    "yes" if r["goal"]["met"] else "no",
                ]
            )
    print_table(
        [
            "alpha",
            "alpha used",
            "PSNR dB",
            "recogniser",
            "clean top1",
            "prot top1",
            "evasion",
            "evasion jpeg75/2",
            "goal",
        ],
        rows,
    )
    if args.plot:
        plot(result, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0
