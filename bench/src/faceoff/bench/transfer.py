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
it no longer identifies top-1 after protection. A targeted protection pulls each face towards a
decoy, and the masker's decoys are this set's own identities: each probe's decoy is held out of
every recogniser's gallery (clean, protected and platform copy alike; ``decoy_per_face`` in the
JSON), so a face counts as protected only if it passes for one of the *other* identities, as it
would have to with a platform that does not know the decoy. Recognisers whose model the attack
ran on (a surrogate, alone or in an ensemble) are marked ``"white_box": true``, and those consulted by
adaptive amplification ``"in_loop": true``: neither says anything about transfer. Each result row
says whether it meets the goal on the remaining, independent recognisers (``goal``): top-1
evasion >= 90% on each, at most 5 points lost after the platform copy, and a face that still
looks like the photo: face Butteraugli (box + 25%, as displayed, longer side <= 1080 px) median
<= 5.5 and p90 <= 10 (mean face PSNR >= 32 dB when the ``butteraugli`` tool is not installed).

Visibility is reported per row: Butteraugli median and p90 as displayed and at native resolution,
the blotch as displayed (median and p90: the largest low-frequency brightness change, in 0..255
levels, the receipts' :func:`faceoff.masker.quality.blotch` — what Butteraugli does not see), and the face
region's native PSNR and SSIM. The JSON also gives the probes' face size as displayed (median,
and how many are under 150 and 200 px): visibility targets read differently on small faces. ``--sheet PNG`` writes a contact sheet of the first
alpha's faces (original | protected, as displayed), the worst and the best by Butteraugli;
``--plot PNG`` the frontier: evasion of each independent recogniser against face Butteraugli.
``faceoff bench frontier A.json B.json ... --plot PNG`` puts several runs on one frontier plot.

Face size. ``--face-size small`` protects each probe photo scaled down so that its face's
longer box side is about :data:`SMALL_FACE_PX` pixels (as in many web photos and thumbnails;
a photo whose face is already smaller is kept as it is), re-encoded as a JPEG of quality 95;
the references and the recognisers' galleries stay the photos as they are. ``large`` (the
default) protects the photos as they are.

Any protection option can be set with ``--set NAME=VALUE`` (repeatable), e.g.
``--set momentum=1 --set surrogates=facenet,facenet512 --set adaptive_alpha=true``.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import platform
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from faceoff.bench.report import emit, print_table
from faceoff.cli.paths import CELEBS
from faceoff.faces.whitebox import is_white_box
from faceoff.sdk import DEFAULT_PROFILE

if TYPE_CHECKING:
    from faceoff.faces.recognizers import EmbeddingRecognizer

SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
#: The goal: evasion on every independent recogniser, points lost on the platform copy, and the
#: face's visibility: Butteraugli median and p90 as displayed (mean PSNR without the tool).
GOAL_EVASION, GOAL_PLATFORM_LOSS = 0.90, 0.05
GOAL_BUTTERAUGLI_MEDIAN, GOAL_BUTTERAUGLI_P90, GOAL_PSNR = 5.5, 10.0, 32.0
#: Faces shown on the contact sheet: this many worst and this many best by Butteraugli.
SHEET_EACH = 6
#: Height of a face on the contact sheet, at most (displayed faces are scaled down to it; the
#: native 1:1 view is the face's centre, this many pixels square at most).
SHEET_HEIGHT = 320
DEFAULT_DATA = CELEBS / "photos"
#: Attacks are run for this many probes at once (one compiled batch).
ATTACK_BATCH = 8
#: ``--face-size small``: the probe's face box is scaled to about this longer side, in pixels.
SMALL_FACE_PX = 115
#: The JSON counts the probes whose face, as displayed, is under each of these sizes (px).
DISPLAYED_FACE_THRESHOLDS = (150, 200)
FACE_SIZES = ("large", "small")


def shrink_to_face(data: bytes, box: tuple[float, float, float, float], side: int) -> bytes:
    """The photo scaled so that ``box``'s longer side is ``side`` px (never enlarged), as a
    JPEG of quality 95 (``data`` itself when it would not shrink)."""
    scale = side / max(box[2], box[3], 1.0)
    if scale >= 1:
        return data
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        small = rgb.resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=95)
        return buf.getvalue()


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

    def rank(
        self, embedding: np.ndarray | None, leave_out: Path, hold_out: Collection[str] = ()
    ) -> list[str]:
        """Identity names by centroid distance, nearest first (empty if there is no embedding),
        without the identities in ``hold_out``."""
        if embedding is None:
            return []
        scored = []
        for name in self.names:
            if name in hold_out:
                continue
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
    profile: str = DEFAULT_PROFILE,
    alphas: Sequence[float] = (1, 1.5, 2, 3, 4),
    kappas: Sequence[float | None] = (None,),
    probes_per_identity: int = 0,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    sheet: list[dict[str, Any]] | None = None,
    face_size: str = "large",
) -> dict[str, Any]:
    """Run the experiment; returns the JSON-ready result (see the module docstring).

    ``sheet``, when given, receives the first alpha's faces for :func:`contact_sheet` (probe,
    Butteraugli, and the original and protected face as displayed).
    """
    from faceoff.common.imaging import decode
    from faceoff.detector.detection import FaceDetector
    from faceoff.faces.recognizers import get_local
    from faceoff.masker.options import resolve
    from faceoff.masker.protection import Protector
    from faceoff.masker.quality import display_faces, display_size

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
    if face_size not in FACE_SIZES:
        raise ValueError(f"face_size must be one of {', '.join(FACE_SIZES)}, got {face_size!r}")
    # What is protected: each probe photo as it is, or shrunk to a small face.
    probe_data = {p: photos[p] for _, p in probes}
    probe_detections = {p: detections[p] for _, p in probes}
    if face_size == "small":
        for _, p in probes:
            if detections[p].faces:
                probe_data[p] = shrink_to_face(photos[p], detections[p].faces[0].box, SMALL_FACE_PX)
                probe_detections[p] = detector.detect(probe_data[p])
    probe_face_px = [
        max(d.faces[0].box[2], d.faces[0].box[3]) for d in probe_detections.values() if d.faces
    ]
    # the same as a platform displays the photo (longer side <= 1080 px), where Butteraugli looks
    shown_face_px = np.array(
        [
            max(d.faces[0].box[2], d.faces[0].box[3]) * display_size(d.width, d.height)[0]
            for d in probe_detections.values()
            if d.faces
        ]
    )
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
                chunk.append(
                    protector.prepare(probe_data[probe], options, probe_detections[probe], refs)
                )
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
            seen: list[float] = []
            seen_native: list[float] = []
            blotches: list[float] = []
            faces_of: dict[str, float] = {}
            blotch_of: dict[str, float] = {}
            alpha_of: dict[str, float] = {}
            decoy_of: dict[str, str] = {}
            outcome: dict[str, dict[str, list[Any]]] = {
                n: {"clean": [], "top1": [], "top3": [], "platform": [], "decoy": []}
                for n in recognizers
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
                    if face.butteraugli is not None:
                        seen.append(face.butteraugli)
                        faces_of[f"{probe.name}#{face.index}"] = face.butteraugli
                    if face.butteraugli_native is not None:
                        seen_native.append(face.butteraugli_native)
                    blotches.append(face.blotch)
                    blotch_of[f"{probe.name}#{face.index}"] = round(face.blotch, 2)
                    alpha_of[f"{probe.name}#{face.index}"] = round(face.alpha, 3)
                    if face.target:
                        decoy_of[f"{probe.name}#{face.index}"] = face.target
                if sheet is not None and alpha == alphas[0] and result.faces and job.photo:
                    shown = decode(result.data, max_pixels=protector.max_pixels).pixels
                    boxes = [f.box for f in result.faces]
                    pairs = display_faces(job.photo.pixels, shown, boxes)
                    natives = native_faces(job.photo.pixels, shown, boxes, SHEET_HEIGHT)
                    for face, (before, after), (close, close_after) in zip(
                        result.faces, pairs, natives
                    ):
                        sheet.append(
                            {
                                "label": f"{probe.name} face {face.index}",
                                "butteraugli": face.butteraugli,
                                "psnr": face.psnr,
                                "config": _label(profile, overrides, face_size),
                                "original": before,
                                "protected": after,
                                "native_original": close,
                                "native_protected": close_after,
                            }
                        )
                degraded = platform_copy(result.data)
                # a face pulled towards a decoy must not count as protected for being taken for
                # the decoy: the judges rank the identities without it (a platform need not
                # know the decoy), so the face must pass for someone else
                decoys = {face.target for face in result.faces if face.target}
                for rec_name, gallery in galleries.items():
                    clean_embedding = (
                        gallery.embeddings[probe]
                        if face_size == "large"
                        else gallery.embed(probe_data[probe])
                    )
                    clean = gallery.rank(clean_embedding, probe, decoys)
                    protected_embedding = gallery.embed(result.data)
                    protected = gallery.rank(protected_embedding, probe, decoys)
                    after_platform = gallery.rank(gallery.embed(degraded), probe, decoys)
                    o = outcome[rec_name]
                    o["clean"].append(bool(clean) and clean[0] == name)
                    o["top1"].append(bool(protected) and protected[0] == name)
                    o["top3"].append(name in protected[:3])
                    if decoys:  # and with the decoy in the gallery: was the face taken for it?
                        named = gallery.rank(protected_embedding, probe)
                        o["decoy"].append(bool(named) and named[0] in decoys)
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
                    # targeted: the share of protected faces taken for their decoy when the
                    # gallery holds it (what a platform that knows the decoy would answer)
                    "taken_for_decoy": float(np.mean(o["decoy"])) if o["decoy"] else None,
                    "evasion_rate": float((clean_ok & ~top1).sum() / n_clean)
                    if n_clean
                    else float("nan"),
                    "evasion_rate_jpeg75_half": float((clean_ok & ~plat).sum() / n_clean)
                    if n_clean
                    else float("nan"),
                    "probes_clean_correct": n_clean,
                }
            psnr_mean = float(np.mean(psnrs)) if psnrs else float("nan")
            visibility = {
                "butteraugli_median": _quantile(seen, 0.5),
                "butteraugli_p90": _quantile(seen, 0.9),
                "butteraugli_native_median": _quantile(seen_native, 0.5),
                "butteraugli_native_p90": _quantile(seen_native, 0.9),
                "blotch_median": _quantile(blotches, 0.5),
                "blotch_p90": _quantile(blotches, 0.9),
            }
            results.append(
                {
                    "alpha": float(alpha),
                    "kappa": float(options.kappa),
                    "alpha_applied_mean": float(np.mean(chosen)) if chosen else float("nan"),
                    "goal": goal(per_rec, psnr_mean, visibility),
                    **visibility,
                    "butteraugli_per_face": {k: round(v, 3) for k, v in faces_of.items()},
                    "blotch_per_face": blotch_of,
                    "alpha_per_face": alpha_of,
                    # targeted: each face's decoy, held out of the judges' galleries
                    "decoy_per_face": decoy_of,
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
        "face_size": face_size,
        "probe_face_px_median": float(np.median(probe_face_px)) if probe_face_px else None,
        "probe_face_px_displayed_median": (
            float(np.median(shown_face_px)) if len(shown_face_px) else None
        ),
        "probes_face_displayed_under": {
            str(px): int((shown_face_px < px).sum()) for px in DISPLAYED_FACE_THRESHOLDS
        },
        "label": _label(profile, overrides, face_size),
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
            "warp": resolved.warp,
            "balance": resolved.balance,
            "align": resolved.align,
            "visibility": resolved.visibility,
            "dropout": resolved.dropout,
            "visibility_map": resolved.visibility_map,
            "surrogate_subset": resolved.surrogate_subset,
            "feature_level": resolved.feature_level,
            "skip_gradient": resolved.skip_gradient,
            "variance": resolved.variance,
            "blotch": resolved.blotch,
            "visibility_min_face": resolved.visibility_min_face,
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


def _quantile(values: Sequence[float], q: float) -> float | None:
    return float(np.quantile(values, q)) if values else None


def _label(profile: str, overrides: dict[str, Any] | None, face_size: str = "large") -> str:
    """A configuration's name on plots and sheets: the profile, its overrides, small faces."""
    parts = [
        f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}"
        for k, v in sorted((overrides or {}).items())
        if k != "seed"
    ]
    return " ".join([profile, *parts, *(["(small faces)"] if face_size == "small" else [])])


def goal(
    per_rec: dict[str, dict[str, Any]],
    psnr_mean: float,
    visibility: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """Whether a result row meets the goal on its independent recognisers and visibility.

    Visibility is judged on the face Butteraugli as displayed (median and p90) when it was
    measured, else on the mean face PSNR.
    """
    judged = {n: v for n, v in per_rec.items() if not v["white_box"] and not v["in_loop"]}
    evasion = {n: v["evasion_rate"] for n, v in judged.items()}
    lost = {n: v["evasion_rate"] - v["evasion_rate_jpeg75_half"] for n, v in judged.items()}
    median = (visibility or {}).get("butteraugli_median")
    p90 = (visibility or {}).get("butteraugli_p90")
    if median is not None and p90 is not None:
        looks = median <= GOAL_BUTTERAUGLI_MEDIAN and p90 <= GOAL_BUTTERAUGLI_P90
        judged_by = "butteraugli"
    else:
        looks = psnr_mean >= GOAL_PSNR
        judged_by = "psnr"
    met = (
        bool(judged)
        and looks
        and all(e >= GOAL_EVASION and lost[n] <= GOAL_PLATFORM_LOSS for n, e in evasion.items())
    )
    return {
        "judged_on": sorted(judged),
        "visibility_judged_by": judged_by,
        "min_evasion": min(evasion.values()) if evasion else None,
        "max_platform_loss": max(lost.values()) if lost else None,
        "met": met,
    }


def judged_recognizers(result: dict[str, Any]) -> list[str]:
    """The recognisers a run's rows are judged on (neither white-box nor in the loop)."""
    rows = result["results"]
    if not rows:
        return []
    return [n for n, v in rows[0]["recognizers"].items() if not v["white_box"] and not v["in_loop"]]


def plot(results: Sequence[dict[str, Any]], path: Path) -> None:
    """The frontier: top-1 evasion of each independent recogniser against face Butteraugli.

    One panel per recogniser that some run is judged on, one curve per run (its alphas are the
    points; the x value is the median face Butteraugli as displayed, the bar reaches the p90).
    Runs without Butteraugli figures are plotted against mean face PSNR instead.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    for result in results:
        names += [n for n in judged_recognizers(result) if n not in names]
    names = names or ["(none independent)"]
    fig, axes = plt.subplots(1, len(names), figsize=(5.6 * len(names), 4.4), squeeze=False)
    by_psnr = any(r.get("butteraugli_median") is None for res in results for r in res["results"])
    colours = plt.get_cmap("tab10" if len(results) <= 10 else "tab20")
    for ax, name in zip(axes[0], names):
        for i, result in enumerate(results):
            colour = colours(i % colours.N)
            rows = sorted(result["results"], key=lambda r: r["alpha"])
            rows = [r for r in rows if name in r["recognizers"]]
            if not rows or name not in judged_recognizers(result):
                continue
            ev = [100 * r["recognizers"][name]["evasion_rate"] for r in rows]
            if by_psnr:
                xs = [r["psnr_face_mean"] for r in rows]
                line = ax.plot(xs, ev, marker="o", color=colour, label=result.get("label", "run"))
            else:
                xs = [r["butteraugli_median"] for r in rows]
                p90 = [r["butteraugli_p90"] for r in rows]
                line = ax.plot(xs, ev, marker="o", color=colour, label=result.get("label", "run"))
                ax.hlines(ev, xs, p90, colors=line[0].get_color(), alpha=0.35, linewidth=3)
            platform = [100 * r["recognizers"][name]["evasion_rate_jpeg75_half"] for r in rows]
            ax.plot(xs, platform, ":", color=line[0].get_color(), alpha=0.8)
        if by_psnr:
            ax.set_xlabel("mean face PSNR (dB)")
            ax.invert_xaxis()
        else:
            ax.set_xlabel("face Butteraugli as displayed: median (dot) to p90 (bar)")
            ax.axvline(GOAL_BUTTERAUGLI_MEDIAN, color="grey", linestyle="--", linewidth=1)
            ax.set_xlim(left=0)
        ax.axhline(100 * GOAL_EVASION, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{name} (not attacked); dotted: after JPEG 75 + 1/2")
        ax.set_ylabel("top-1 evasion (%)")
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    # one legend for every panel, below them, so that it hides no point
    handles: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    columns = 2
    legend_rows = max(1, math.ceil(len(handles) / columns))
    bottom = min(0.5, (0.3 + 0.28 * legend_rows) / fig.get_figheight())
    fig.set_figheight(fig.get_figheight() + 0.28 * legend_rows)
    if handles:
        fig.legend(
            list(handles.values()), list(handles), loc="lower center", ncol=columns, fontsize=8
        )
    probes = sorted({r["probes"] for r in results})
    fig.suptitle(f"Face-Off frontier: evasion vs visibility, {'/'.join(map(str, probes))} probes")
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def native_faces(
    original: np.ndarray,
    protected: np.ndarray,
    boxes: Sequence[tuple[float, float, float, float]],
    side: int,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each face window (box + 25%) of two full-resolution photos at native size, 1:1: its
    centre, at most ``side`` pixels square (what someone who zooms into the photo sees)."""
    from faceoff.masker.quality import _window

    height, width = original.shape[:2]
    out = []
    for box in boxes:
        left, top, right, bottom = _window(box, width, height, 1.0)
        w, h = min(side, right - left), min(side, bottom - top)
        x0, y0 = left + (right - left - w) // 2, top + (bottom - top - h) // 2
        out.append((original[y0 : y0 + h, x0 : x0 + w], protected[y0 : y0 + h, x0 : x0 + w]))
    return out


def contact_sheet(faces: Sequence[dict[str, Any]], path: Path, each: int = SHEET_EACH) -> None:
    """Original | protected face pairs: the ``each`` worst and best by Butteraugli.

    Faces without a Butteraugli figure are ordered by PSNR instead. Each pair is shown at its
    displayed size (capped at :data:`SHEET_HEIGHT` px high) and, when the face carries them,
    beside it the centre of the face at native size (1:1), labelled with the probe and the
    figures.
    """
    from PIL import ImageDraw, ImageFont

    def badness(f: dict[str, Any]) -> float:
        if f["butteraugli"] is not None:
            return float(f["butteraugli"])
        return -float(f["psnr"]) if np.isfinite(f["psnr"]) else -100.0

    ranked = sorted(faces, key=badness, reverse=True)
    picked = ranked if len(ranked) <= 2 * each else ranked[:each] + ranked[-each:]
    font = ImageFont.load_default(size=13)
    cells = []
    for f in picked:
        pair = [Image.fromarray(f["original"]), Image.fromarray(f["protected"])]
        scale = min(1.0, SHEET_HEIGHT / pair[0].height)
        size = (max(1, round(pair[0].width * scale)), max(1, round(pair[0].height * scale)))
        tiles = [p.resize(size, Image.Resampling.LANCZOS) for p in pair]
        caption = "original | protected, as displayed"
        if "native_original" in f and f["native_original"].shape == f["original"].shape:
            caption += " (native size)"  # the photo is shown as it is: nothing more to see
        elif "native_original" in f:
            tiles += [Image.fromarray(f["native_original"]), Image.fromarray(f["native_protected"])]
            caption += "   |   the same, native 1:1 (centre)"
        seen = f["butteraugli"]
        text = f"{f['label']}: Butteraugli {seen:.1f}" if seen is not None else f["label"]
        text += f", PSNR {f['psnr']:.1f} dB" if np.isfinite(f["psnr"]) else ""
        tall = max(t.height for t in tiles)
        across = sum(t.width + 6 for t in tiles) + (12 if len(tiles) > 2 else 0)
        width = max(
            across, math.ceil(font.getlength(text)) + 4, math.ceil(font.getlength(caption)) + 4
        )
        cell = Image.new("RGB", (width, tall + 36), "white")
        x = 0
        for k, tile in enumerate(tiles):
            x += 12 if k == 2 else 0  # a wider gap between the displayed and the native pair
            cell.paste(tile, (x, 0))
            x += tile.width + 6
        ImageDraw.Draw(cell).text((2, tall + 2), text, fill="black", font=font)
        ImageDraw.Draw(cell).text((2, tall + 18), caption, fill="dimgray", font=font)
        cells.append(cell)
    columns = 2 if any("native_original" in f for f in picked) else 3
    width = max((c.width for c in cells), default=200)
    rows = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    heights = [max(c.height for c in row) for row in rows]
    title = 28
    sheet = Image.new(
        "RGB", (columns * (width + 10), title + sum(h + 10 for h in heights)), "white"
    )
    config = faces[0]["config"] if faces else ""
    ImageDraw.Draw(sheet).text(
        (4, 6),
        f"{config}: the {min(each, len(picked))} worst, then the best, by face Butteraugli",
        fill="black",
        font=ImageFont.load_default(size=16),
    )
    y = title
    for row, h in zip(rows, heights):
        for i, cell in enumerate(row):
            sheet.paste(cell, (i * (width + 10), y))
        y += h + 10
    sheet.save(path, "PNG")


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
                f"faceoff bench: --set takes NAME=VALUE with NAME one of "
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
    faces: list[dict[str, Any]] | None = [] if args.sheet else None
    result = run(
        Path(args.data) if args.data else DEFAULT_DATA,
        recognizers,
        args.profile,
        _floats(args.alpha) or [1, 1.5, 2, 3, 4],
        kappas,
        args.probes_per_identity,
        args.seed,
        parse_settings(args.set or []),
        faces,
        getattr(args, "face_size", "large"),
    )
    if getattr(args, "label", None):
        result["label"] = args.label
        for face in faces or []:
            face["config"] = args.label
    emit(result, args.json_out)
    print_summary(result)
    if args.plot:
        plot([result], Path(args.plot))
        print(f"plot: {args.plot}")
    if args.sheet and faces is not None:
        contact_sheet(faces, Path(args.sheet))
        print(f"contact sheet: {args.sheet}")
    return 0


def print_summary(result: dict[str, Any]) -> None:
    """The short table: per row and recogniser, visibility and evasion."""

    def fig(v: float | None) -> Any:
        return "-" if v is None else round(v, 2)

    rows = []
    for r in result["results"]:
        for name, v in r["recognizers"].items():
            mark = " (wb)" if v["white_box"] else " (loop)" if v["in_loop"] else ""
            rows.append(
                [
                    r["alpha"],
                    fig(r["butteraugli_median"]),
                    fig(r["butteraugli_p90"]),
                    fig(r.get("blotch_median")),
                    fig(r.get("blotch_p90")),
                    round(r["psnr_face_mean"], 1),
                    round(r["ssim_face_mean"], 3),
                    name + mark,
                    v["clean_top1"],
                    v["evasion_rate"],
                    v["evasion_rate_jpeg75_half"],
                    "yes" if r["goal"]["met"] else "no",
                ]
            )
    print(result.get("label", ""))
    print_table(
        [
            "alpha",
            "B median",
            "B p90",
            "blotch",
            "blotch p90",
            "PSNR dB",
            "SSIM",
            "recogniser",
            "clean top1",
            "evasion",
            "evasion jpeg75/2",
            "goal",
        ],
        rows,
    )


def frontier_main(args: Any) -> int:
    """``faceoff bench frontier RUN.json ... --plot PNG``: several runs on one frontier plot."""
    import json

    results = []
    for name in args.runs:
        try:
            doc = json.loads(Path(name).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"faceoff bench frontier: cannot read {name}: {exc}") from None
        if not isinstance(doc, dict) or "results" not in doc:
            raise SystemExit(
                f"faceoff bench frontier: {name} is not the JSON of faceoff bench transfer"
            )
        doc.setdefault("label", Path(name).stem)
        results.append(doc)
        print_summary(doc)
    plot(results, Path(args.plot))
    print(f"plot: {args.plot}")
    return 0
