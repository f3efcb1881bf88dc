"""What a protection reports: one receipt per face, and the protected photo with its receipts.

Receipts measure what the user actually gets: the encoded output, decoded and re-cropped.
They never hold image bytes of the user's face beyond the protected photo itself, nor
embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from faceoff.common.crops import CropRegion, extract_crop
from faceoff.faces.models import EmbeddingModel
from faceoff.masker.adaptive import Choice, Verdict
from faceoff.masker.options import ProtectionOptions
from faceoff.masker.quality import (
    BUTTERAUGLI_MISSING,
    blotch,
    display_faces,
    face_butteraugli,
    psnr,
    ssim,
)


@dataclass(frozen=True)
class FaceReceipt:
    """What was done to one face (see ``faceoff.v1.FaceReceipt``)."""

    index: int
    box: tuple[float, float, float, float]
    target: str | None
    l2: float
    linf: float
    psnr: float
    ssim: float
    distance_before: float
    distance_after: float
    alpha: float = 0.0
    verdicts: tuple[Verdict, ...] = ()
    #: Butteraugli of the face (box + 25%) as displayed (longer side <= 1080 px) and at native
    #: resolution; None when the tool is not installed (:data:`quality.BUTTERAUGLI_MISSING`).
    butteraugli: float | None = None
    butteraugli_native: float | None = None
    #: The largest low-frequency brightness change of the same window as displayed, 0..255
    #: levels (:func:`quality.blotch`).
    blotch: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (PSNR of an unchanged region is reported as null)."""
        out = {
            "index": self.index,
            "box": [round(v, 1) for v in self.box],
            "target": self.target,
            "l2": round(self.l2, 4),
            "linf": round(self.linf, 4),
            "psnr": None if not np.isfinite(self.psnr) else round(self.psnr, 2),
            "ssim": round(self.ssim, 4),
            "distance_before": round(self.distance_before, 4),
            "distance_after": round(self.distance_after, 4),
            "alpha": round(self.alpha, 4),
            "butteraugli": _rounded(self.butteraugli),
            "butteraugli_native": _rounded(self.butteraugli_native),
            "blotch": round(self.blotch, 2),
        }
        if self.butteraugli is None:
            out["butteraugli_note"] = BUTTERAUGLI_MISSING
        if self.verdicts:
            out["verdicts"] = [v.to_json() for v in self.verdicts]
        return out


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True)
class ProtectionResult:
    """A protected photo and its receipts."""

    data: bytes
    format: str
    width: int
    height: int
    faces: list[FaceReceipt]
    faces_found: int
    options: ProtectionOptions
    seconds: float
    notes: tuple[str, ...] = ()

    def receipt(self) -> dict[str, Any]:
        """The receipt as JSON-ready data."""
        o = self.options
        return {
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "bytes": len(self.data),
            "faces_found": self.faces_found,
            "faces_protected": len(self.faces),
            "seconds": round(self.seconds, 3),
            "profile": o.profile,
            "options": {
                "attack": o.attack,
                "norm": o.norm,
                "loss": o.loss,
                "targeted": o.targeted,
                "epsilon": o.epsilon,
                "iterations": o.iterations,
                "alpha": o.alpha,
                "kappa": o.kappa,
                "seed": o.seed,
                "surrogates": list(o.surrogates),
                "momentum": o.momentum,
                "diversity": o.diversity,
                "ti_kernel": o.ti_kernel,
                "eot": o.eot,
                "adaptive_alpha": o.adaptive_alpha,
                "work_size": o.work_size,
                "feather": o.feather,
                "chroma": o.chroma,
                "texture": o.texture,
                "ssim": o.ssim,
                "warp": o.warp,
                "balance": o.balance,
                "align": o.align,
                "visibility": o.visibility,
                "dropout": o.dropout,
                "visibility_map": o.visibility_map,
                "surrogate_subset": o.surrogate_subset,
                "feature_level": o.feature_level,
                "skip_gradient": o.skip_gradient,
                "variance": o.variance,
                "blotch": o.blotch,
                "visibility_min_face": o.visibility_min_face,
                **(
                    {"psnr_floor": o.psnr_floor, "loop_recognizers": list(o.loop_recognizers)}
                    if o.adaptive_alpha
                    else {}
                ),
            },
            "faces": [f.to_json() for f in self.faces],
            "notes": list(self.notes),
        }


def _mean_distance(model: EmbeddingModel, embedding: np.ndarray, refs: np.ndarray) -> float:
    return float(np.mean(model.distance_numpy(refs - embedding[None, :])))


def face_receipts(
    *,
    indices: list[int],
    boxes: list[tuple[float, float, float, float]],
    targets: list[str | None],
    regions: list[CropRegion],
    crops: np.ndarray,
    user_refs: list[np.ndarray],
    original: np.ndarray,
    shown: np.ndarray,
    applied: np.ndarray,
    choices: list[Choice],
    model: EmbeddingModel,
    size: int,
    aligns: np.ndarray | None = None,
) -> list[FaceReceipt]:
    """One receipt per face: the change applied, the face region's PSNR/SSIM and Butteraugli in
    the encoded output ``shown``, and the surrogate's distance to the user's references before
    and after."""
    after_crops = np.stack([extract_crop(shown, r, size) for r in regions])
    before = model.embed_numpy(crops, align=aligns)
    after = model.embed_numpy(after_crops, align=aligns)
    displayed = display_faces(original, shown, boxes)  # scaled once for both measures
    seen = face_butteraugli(original, shown, boxes, displayed)
    blotches = [blotch(a, b) for a, b in displayed]
    receipts = []
    for k, region in enumerate(regions):
        receipts.append(
            FaceReceipt(
                index=indices[k],
                box=boxes[k],
                target=targets[k],
                # at the surrogate's crop scale whatever the work size (per-pixel change equal)
                l2=float(np.linalg.norm(applied[k])) * size / applied.shape[1],
                linf=float(np.abs(applied[k]).max()),
                psnr=psnr(original[region.slices], shown[region.slices]),
                ssim=ssim(original[region.slices], shown[region.slices]),
                distance_before=_mean_distance(model, before[k], user_refs[k]),
                distance_after=_mean_distance(model, after[k], user_refs[k]),
                alpha=choices[k].alpha,
                verdicts=choices[k].verdicts,
                butteraugli=seen[k].display,
                butteraugli_native=seen[k].native,
                blotch=blotches[k],
            )
        )
    return receipts
