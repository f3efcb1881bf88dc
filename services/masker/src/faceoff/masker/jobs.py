"""Preparing a protection: each face's crop, the user's reference set A_y and the loss goals.

:class:`Preparer` turns a decoded photo, its detection and the reference photos into a
:class:`Job`, the unit the attack runs on (several jobs can share one attack batch).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from faceoff.common import tracing
from faceoff.common.crops import CropRegion, crop_region, extract_crop
from faceoff.common.errors import InvalidImage, InvalidOption
from faceoff.common.imaging import DEFAULT_MAX_PIXELS, Photo, decode
from faceoff.detector.detection import DetectionResult
from faceoff.faces.alignment import IDENTITY, crop_alignment
from faceoff.faces.models import EmbeddingModel
from faceoff.masker import budget
from faceoff.masker.cost import REFERENCE_MAX_SIDE
from faceoff.masker.decoys import SAME_PERSON_DISTANCE
from faceoff.masker.options import ProtectionOptions
from faceoff.masker.references import augment_probe
from faceoff.masker.surrogates import Surrogates

#: A reference photo without a detectable face is used whole when it is at most this large
#: (it is then taken to be a face crop already, like the shared ``aligned160`` crops).
MAX_CROP_SIDE = 400


@dataclass
class Job:
    """One request, prepared for the attack: its faces' crops and loss inputs."""

    data: bytes
    photo: Photo | None  # None for a job made of face crops only (benchmarks, tests)
    options: ProtectionOptions
    faces_found: int
    indices: list[int]
    boxes: list[tuple[float, float, float, float]]
    regions: list[CropRegion]
    crops: np.ndarray  # (n, S, S, 3) float32 in [0, 1]
    user_refs: list[np.ndarray]  # per face (k, D): the set A_y the distances are reported against
    anchors: list[np.ndarray]  # per face: A_y (untargeted) or the decoy's A_t (targeted)
    others: list[list[np.ndarray]]  # per face: the other identities the hinge loss compares with
    targets: list[str | None]
    model: EmbeddingModel | None = None  # the surrogate (or ensemble) the embeddings come from
    references: list[Photo] = field(
        default_factory=list
    )  # decoded reference photos (adaptive alpha)
    started: float = field(default_factory=time.perf_counter)
    #: ``(n, W, W, 3)`` the faces at the options' work size, when it differs from the crop's
    #: (the attack runs on these and the perturbation is pasted back from them).
    work: np.ndarray | None = None
    #: ``(n, 6)`` each face's alignment (:mod:`faceoff.faces.alignment`); None: the identity
    #: (the options do not align, or the job is of bare crops).
    aligns: np.ndarray | None = None

    @property
    def attacked(self) -> np.ndarray:
        """The faces the attack perturbs: the work-size crops, or the surrogate crops."""
        return self.crops if self.work is None else self.work

    @property
    def size(self) -> int:
        """Faces to protect."""
        return len(self.indices)


class Preparer:
    """Builds :class:`Job` objects on ``surrogates``, decoding photos up to ``max_pixels``."""

    def __init__(self, surrogates: Surrogates, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.surrogates = surrogates
        self.max_pixels = max_pixels

    def decode_references(self, references: Sequence[tuple[bytes, DetectionResult]]) -> list[Photo]:
        """Each reference photo decoded at most :data:`~faceoff.masker.cost.REFERENCE_MAX_SIDE`
        on its longer side (only its face is used; an undecodable one is refused naming its index)."""
        photos = []
        for i, (data, _) in enumerate(references):
            try:
                photos.append(decode(data, max_pixels=self.max_pixels, max_side=REFERENCE_MAX_SIDE))
            except InvalidImage as exc:
                raise InvalidImage(
                    f"reference photo {i}: {exc.message}", field=f"reference_images[{i}]"
                ) from None
        return photos

    def reference_embeddings(
        self,
        photos: Sequence[Photo],
        detections: Sequence[DetectionResult],
        model: EmbeddingModel | None = None,
        align: bool = False,
    ) -> np.ndarray | None:
        """Embeddings ``(M, D)`` of the largest face of each decoded reference photo (None if none
        given); with ``align``, each through its own landmarks' alignment."""
        if not photos:
            return None
        crops, aligns = [], []
        for i, (photo, detection) in enumerate(zip(photos, detections)):
            alignment = IDENTITY
            if detection.faces:  # the box is in full-size coordinates; the photo may be reduced
                x, y, w, h = detection.faces[0].box
                s = photo.scale
                region = crop_region((x * s, y * s, w * s, h * s), photo.width, photo.height)
                if align and detection.faces[0].landmarks:
                    alignment = _alignment(detection.faces[0].landmarks, region, s)
            elif max(photo.full_width, photo.full_height) <= MAX_CROP_SIDE:
                region = CropRegion(0, 0, photo.width, photo.height)  # already a face crop
            else:
                raise InvalidImage(
                    f"reference photo {i} ({photo.full_width}x{photo.full_height} px) has no detectable face; "
                    f"send photos of the person's face, or face crops of at most {MAX_CROP_SIDE} px",
                    field=f"reference_images[{i}]",
                )
            crops.append(extract_crop(photo.pixels, region, self.surrogates.size))
            aligns.append(alignment)
        return (model or self.surrogates.model).embed_numpy(
            np.stack(crops), align=np.stack(aligns) if align else None
        )

    def prepare(
        self,
        data: bytes,
        options: ProtectionOptions,
        detection: DetectionResult,
        references: Sequence[tuple[bytes, DetectionResult]] = (),
        started: float | None = None,
    ) -> Job:
        """Decode, crop, and build each face's reference set and target.

        ``detection`` holds the faces of ``data``; ``references`` pairs each reference photo
        with its detection.
        """
        started = time.perf_counter() if started is None else started
        options = self.surrogates.resolved(options)
        if options.visibility and not budget.available():
            raise InvalidOption(
                f"visibility={options.visibility:g} needs the butteraugli tool on the masker, "
                "which this one does not have (apt-get install butteraugli); send visibility=0",
                field="options.visibility",
            )
        with tracing.span("decode", bytes=len(data)):
            photo = decode(data, max_pixels=self.max_pixels)
        if (detection.width, detection.height) != (photo.width, photo.height):
            raise InvalidImage(
                f"detector saw {detection.width}x{detection.height} px but the photo is {photo.width}x{photo.height}"
            )
        found = len(detection.faces)
        indices = list(options.faces) if options.faces else list(range(found))
        bad = [i for i in indices if i >= found]
        if bad:
            raise InvalidOption(
                f"face_indices {bad} out of range: the photo has {found} face(s) (indices 0..{found - 1})",
                field="options.face_indices",
            )
        indices = sorted(set(indices))
        boxes = [detection.faces[i].box for i in indices]
        regions = [crop_region(b, photo.width, photo.height, options.margin) for b in boxes]
        crops = (
            np.stack([extract_crop(photo.pixels, r, self.surrogates.size) for r in regions])
            if regions
            else np.zeros((0, self.surrogates.size, self.surrogates.size, 3), np.float32)
        )
        side = self.surrogates.work_side(options)
        work = (
            np.stack([extract_crop(photo.pixels, r, side) for r in regions])
            if regions and side != self.surrogates.size
            else None
        )
        aligns = (
            np.stack(
                [
                    _alignment(detection.faces[i].landmarks, r, 1.0)
                    if detection.faces[i].landmarks
                    else IDENTITY
                    for i, r in zip(indices, regions)
                ]
            )
            if options.align and regions
            else None
        )
        model = self.surrogates.model_for(options)
        reference_photos = self.decode_references(references)
        embeddings = self.reference_embeddings(
            reference_photos, [d for _, d in references], model, options.align
        )
        user_refs = self.user_sets(crops, embeddings, model, aligns)
        anchors, others, targets = self.goals(user_refs, options, model)
        kept = reference_photos if options.adaptive_alpha else []
        return Job(
            data=data,
            photo=photo,
            options=options,
            faces_found=found,
            indices=indices,
            boxes=boxes,
            regions=regions,
            crops=crops,
            user_refs=user_refs,
            anchors=anchors,
            others=others,
            targets=targets,
            model=model,
            references=kept,
            started=started,
            work=work,
            aligns=aligns,
        )

    def crop_job(
        self,
        crops: np.ndarray,
        options: ProtectionOptions,
        references: Sequence[np.ndarray] | None = None,
    ) -> Job:
        """A job of bare ``(n, S, S, 3)`` face crops in [0, 1], for :meth:`attack` (no photo to finish).

        ``references`` gives each face's A_y embeddings; by default each face's own augmentations.
        Bare crops have no larger region to work on: they are attacked at their own size
        (``work_size`` 0).
        """
        crops = np.asarray(crops, np.float32)
        options = dataclasses.replace(self.surrogates.resolved(options), work_size=0)
        model = self.surrogates.model_for(options)
        user_refs = (
            list(references) if references is not None else self.user_sets(crops, None, model)
        )
        anchors, others, targets = self.goals(user_refs, options, model)
        n = len(crops)
        return Job(
            data=b"",
            photo=None,
            options=options,
            faces_found=n,
            indices=list(range(n)),
            boxes=[],
            regions=[],
            crops=crops,
            user_refs=user_refs,
            anchors=anchors,
            others=others,
            targets=targets,
            model=model,
        )

    def user_sets(
        self,
        crops: np.ndarray,
        user: np.ndarray | None,
        model: EmbeddingModel | None = None,
        aligns: np.ndarray | None = None,
    ) -> list[np.ndarray]:
        """Each face's reference set A_y.

        With the user's reference embeddings ``user``, a face that looks like the user (or the
        only face) gets them; any other face, or every face without ``user``, gets its own crop
        and light augmentations of it (each embedded through the face's alignment, when
        ``aligns`` gives them).
        """
        model = model or self.surrogates.model
        probe = (
            model.embed_numpy(crops, align=aligns) if user is not None and len(crops) > 1 else None
        )
        sets: list[np.ndarray] = []
        for k in range(len(crops)):
            if user is not None and (
                probe is None
                or model.distance_numpy(probe[k] - user.mean(0)) < SAME_PERSON_DISTANCE + 0.2
            ):
                sets.append(user)
            else:
                augmented = augment_probe(crops[k])
                sets.append(
                    model.embed_numpy(
                        augmented,
                        align=None
                        if aligns is None
                        else np.repeat(aligns[k : k + 1], len(augmented), 0),
                    )
                )
        return sets

    def goals(
        self,
        user_refs: Sequence[np.ndarray],
        options: ProtectionOptions,
        model: EmbeddingModel | None = None,
    ) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[str | None]]:
        """Each face's loss anchor, other identities and decoy name (targeted mode)."""
        decoys = self.surrogates.gallery_for(model or self.surrogates.model)
        anchors: list[np.ndarray] = []
        others: list[list[np.ndarray]] = []
        targets: list[str | None] = []
        for refs in user_refs:
            if options.targeted:
                name, centroid = decoys.pick(refs, options.target)
                anchors.append(centroid)
                others.append([refs, *decoys.others(name, refs)])
                targets.append(name)
            else:
                anchors.append(refs)
                others.append(decoys.others(None, refs))
                targets.append(None)
        return anchors, others, targets


def _alignment(
    landmarks: dict[str, tuple[float, float]], region: CropRegion, scale: float
) -> np.ndarray:
    """The alignment of a face with ``landmarks`` in full-size photo pixels, cropped at ``region``
    of the photo decoded at ``scale`` of its full size."""
    scaled = {k: (x * scale, y * scale) for k, (x, y) in landmarks.items()}
    return crop_alignment(scaled, (region.left, region.top, region.width, region.height))
