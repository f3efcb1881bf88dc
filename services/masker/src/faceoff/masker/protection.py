"""The Face-Off pipeline for one photo, independent of gRPC.

    photo bytes -> faces (detector) -> crops (box + margin -> 160 px) -> reference sets A_y
      -> [targeted: decoy] -> loss + attack on the surrogate -> amplify by alpha
      -> resize each perturbation to its crop -> add to the full-resolution photo -> encode
      -> receipts (norms, face-region PSNR/SSIM, surrogate distance before/after)

It is split into :meth:`Protector.prepare`, :meth:`Protector.attack` and
:meth:`Protector.finish` so that the masker service can run the attack of several requests
in one batch; :func:`faceoff.masker.pipeline.protect` runs them in order for every caller.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from faceoff.common.crops import CropRegion, crop_region, extract_crop, paste_delta
from faceoff.common.errors import InvalidImage, InvalidOption
from faceoff.common.imaging import DEFAULT_MAX_PIXELS, Photo, decode, encode, output_format
from faceoff.detector.detection import DetectionResult
from faceoff.faces.models import EmbeddingModel, load_surrogate
from faceoff.faces.models.ensemble import Ensemble
from faceoff.masker.adaptive import Choice, Verdict, choose_alphas
from faceoff.masker.attacks import make_attack, make_loss
from faceoff.masker.decoys import SAME_PERSON_DISTANCE, DecoyGallery
from faceoff.masker.options import ProtectionOptions
from faceoff.masker.quality import psnr, ssim
from faceoff.masker.references import augment_probe

log = logging.getLogger(__name__)

#: ``progress(stage, iteration, iterations)``; stages: "adapt", "paste", "encode".
Progress = Callable[[str, int, int], None]

#: A reference photo without a detectable face is used whole when it is at most this large
#: (it is then taken to be a face crop already, like the shared ``aligned160`` crops).
MAX_CROP_SIDE = 400


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
        }
        if self.verdicts:
            out["verdicts"] = [v.to_json() for v in self.verdicts]
        return out


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
                **(
                    {"psnr_floor": o.psnr_floor, "loop_recognizers": list(o.loop_recognizers)}
                    if o.adaptive_alpha
                    else {}
                ),
            },
            "faces": [f.to_json() for f in self.faces],
        }


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

    @property
    def size(self) -> int:
        """Faces to protect."""
        return len(self.indices)


def _mean_distance(model: EmbeddingModel, embedding: np.ndarray, refs: np.ndarray) -> float:
    return float(np.mean(model.distance_numpy(refs - embedding[None, :])))


class Protector:
    """Runs the Face-Off pipeline on the surrogates the options name.

    Args:
        model: The default surrogate, used when the options name none (default: FaceNet from
            the verified model cache).
        decoys: The decoy gallery of the default surrogate for targeted mode (default: its
            committed one).
        max_pixels: Pixel limit for photos and reference photos.

    Other surrogates (``options.surrogates``) are loaded on first use and kept; two or more
    form an :class:`~faceoff.faces.models.ensemble.Ensemble`, kept per (names, weights). Loop
    recognisers for adaptive alpha are loaded on first use too.
    """

    def __init__(
        self,
        model: EmbeddingModel | None = None,
        decoys: DecoyGallery | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.model = model or load_surrogate("facenet")
        self.decoys = decoys or DecoyGallery.for_model(self.model)
        self.max_pixels = max_pixels
        self.size = self.model.input_size
        self._lock = threading.Lock()
        self._members: dict[str, EmbeddingModel] = {self.model.name: self.model}
        self._models: dict[tuple[Any, ...], EmbeddingModel] = {}
        self._galleries: dict[int, DecoyGallery] = {id(self.model): self.decoys}
        self._recognizers: dict[str, Any] = {}
        self._generalised: set[tuple[Any, ...]] = set()
        self._trace_lock = threading.Lock()

    def resolved(self, options: ProtectionOptions) -> ProtectionOptions:
        """``options`` naming the surrogates it will run on (empty means the default surrogate)."""
        if options.surrogates:
            return options
        return dataclasses.replace(options, surrogates=(self.model.name,))

    def model_for(self, options: ProtectionOptions) -> EmbeddingModel:
        """The surrogate, or ensemble of surrogates, ``options`` asks for (loaded on first use)."""
        names = tuple(options.surrogates) or (self.model.name,)
        if len(names) == 1 and names[0] == self.model.name:
            return self.model
        key = (names, tuple(options.surrogate_weights))
        with self._lock:
            if key not in self._models:
                members = []
                for name in names:
                    if name not in self._members:
                        self._members[name] = load_surrogate(name)
                    members.append(self._members[name])
                weights = options.surrogate_weights or None
                model = members[0] if len(members) == 1 else Ensemble(members, weights)
                self._models[key] = model
                self._galleries[id(model)] = DecoyGallery.for_model(model)
            return self._models[key]

    def gallery_for(self, model: EmbeddingModel) -> DecoyGallery:
        """The decoy gallery in ``model``'s embedding space."""
        with self._lock:
            if id(model) not in self._galleries:
                self._galleries[id(model)] = DecoyGallery.for_model(model)
            return self._galleries[id(model)]

    def recognizers_for(self, options: ProtectionOptions) -> dict[str, Any]:
        """The loaded loop recognisers of ``options`` (adaptive alpha), by name."""
        from faceoff.faces.recognizers import get_local

        out = {}
        for name in options.loop_recognizers:
            with self._lock:
                if name not in self._recognizers:
                    rec = get_local(name)
                    rec.load()
                    self._recognizers[name] = rec
                out[name] = self._recognizers[name]
        return out

    def warm_up(self, options: ProtectionOptions | None = None) -> None:
        """Load the options' surrogates (and loop recognisers) and trace their attack, so the first request does not pay for it."""
        from faceoff.masker.options import PROFILES, resolve

        o = self.resolved(options or resolve())
        self._generalise(self.model_for(o), o)
        if o.adaptive_alpha:
            self.recognizers_for(o)
        if (
            options is None
        ):  # also every other profile whose surrogates are loaded by now (low: FaceNet)
            for name in PROFILES:
                p = self.resolved(resolve(name))
                if all(s in self._members for s in p.surrogates):
                    self._generalise(self.model_for(p), p)

    def _generalise(self, model: EmbeddingModel, o: ProtectionOptions) -> None:
        """Trace ``model``'s compiled attack steps for ``o``'s attack and loss with general shapes, once.

        TensorFlow traces a step once per input shape and then once more with the shapes
        generalised, after which every batch reuses that trace. The specific and the general trace
        may round differently, so a process's results would depend on the shapes it happened to
        see first; running two batches of different shapes (faces, reference-set sizes,
        identities) before any real attack makes every attack use the general trace, and the same
        seed give the same pixels in any process (the masker, ``Client.local()``).
        """
        key = (id(model), o.attack, o.norm, o.loss)
        if key in self._generalised:
            return
        with (
            self._trace_lock
        ):  # a concurrent first attack of the same kind waits for the general trace
            if key not in self._generalised:
                self._trace_general(model, o)
                self._generalised.add(key)

    def _trace_general(self, model: EmbeddingModel, o: ProtectionOptions) -> None:
        loss_params: dict[str, Any] = {"targeted": o.targeted}
        if o.loss == "hinge":
            loss_params["kappa"] = o.kappa
        params = {**o.attack_params(), "iterations": 2}
        gallery = self.gallery_for(model)
        for faces, extra in ((1, 0), (2, 3)):  # faces, reference-set size and identities all vary
            crops = np.full((faces, self.size, self.size, 3), 0.5, np.float32)
            refs = model.embed_numpy(
                np.concatenate([crops[:1], augment_probe(crops[0])[: 4 + extra]])
            )
            others = gallery.others(None, refs)[: len(gallery.names) - 3 + extra // 3]
            loss = make_loss(o.loss, model, [refs] * faces, [others] * faces, **loss_params)
            make_attack(o.attack, o.norm, **params).attack(crops, loss, seed=0)

    # -- preparation ---------------------------------------------------------------------------

    def decode_references(self, references: Sequence[tuple[bytes, DetectionResult]]) -> list[Photo]:
        """Each reference photo decoded (an undecodable one is refused naming its index)."""
        photos = []
        for i, (data, _) in enumerate(references):
            try:
                photos.append(decode(data, max_pixels=self.max_pixels))
            except InvalidImage as exc:
                raise InvalidImage(f"reference photo {i}: {exc.message}") from None
        return photos

    def reference_embeddings(
        self,
        photos: Sequence[Photo],
        detections: Sequence[DetectionResult],
        model: EmbeddingModel | None = None,
    ) -> np.ndarray | None:
        """Embeddings ``(M, D)`` of the largest face of each decoded reference photo (None if none given)."""
        if not photos:
            return None
        crops = []
        for i, (photo, detection) in enumerate(zip(photos, detections)):
            if detection.faces:
                region = crop_region(detection.faces[0].box, photo.width, photo.height)
            elif max(photo.width, photo.height) <= MAX_CROP_SIDE:
                region = CropRegion(0, 0, photo.width, photo.height)  # already a face crop
            else:
                raise InvalidImage(
                    f"reference photo {i} ({photo.width}x{photo.height} px) has no detectable face; "
                    f"send photos of the person's face, or face crops of at most {MAX_CROP_SIDE} px"
                )
            crops.append(extract_crop(photo.pixels, region, self.size))
        return (model or self.model).embed_numpy(np.stack(crops))

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
        options = self.resolved(options)
        photo = decode(data, max_pixels=self.max_pixels)
        if (detection.width, detection.height) != (photo.width, photo.height):
            raise InvalidImage(
                f"detector saw {detection.width}x{detection.height} px but the photo is {photo.width}x{photo.height}"
            )
        found = len(detection.faces)
        indices = list(options.face_indices) if options.face_indices else list(range(found))
        bad = [i for i in indices if i >= found]
        if bad:
            raise InvalidOption(
                f"face_indices {bad} out of range: the photo has {found} face(s) (indices 0..{found - 1})"
            )
        indices = sorted(set(indices))
        boxes = [detection.faces[i].box for i in indices]
        regions = [crop_region(b, photo.width, photo.height, options.margin) for b in boxes]
        crops = (
            np.stack([extract_crop(photo.pixels, r, self.size) for r in regions])
            if regions
            else np.zeros((0, self.size, self.size, 3), np.float32)
        )
        model = self.model_for(options)
        reference_photos = self.decode_references(references)
        embeddings = self.reference_embeddings(reference_photos, [d for _, d in references], model)
        user_refs = self.user_sets(crops, embeddings, model)
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
        )

    def crop_job(
        self,
        crops: np.ndarray,
        options: ProtectionOptions,
        references: Sequence[np.ndarray] | None = None,
    ) -> Job:
        """A job of bare ``(n, S, S, 3)`` face crops in [0, 1], for :meth:`attack` (no photo to finish).

        ``references`` gives each face's A_y embeddings; by default each face's own augmentations.
        """
        crops = np.asarray(crops, np.float32)
        options = self.resolved(options)
        model = self.model_for(options)
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
        self, crops: np.ndarray, user: np.ndarray | None, model: EmbeddingModel | None = None
    ) -> list[np.ndarray]:
        """Each face's reference set A_y.

        With the user's reference embeddings ``user``, a face that looks like the user (or the
        only face) gets them; any other face, or every face without ``user``, gets its own crop
        and light augmentations of it.
        """
        model = model or self.model
        probe = model.embed_numpy(crops) if user is not None and len(crops) > 1 else None
        sets: list[np.ndarray] = []
        for k in range(len(crops)):
            if user is not None and (
                probe is None
                or model.distance_numpy(probe[k] - user.mean(0)) < SAME_PERSON_DISTANCE + 0.2
            ):
                sets.append(user)
            else:
                sets.append(model.embed_numpy(augment_probe(crops[k])))
        return sets

    def goals(
        self,
        user_refs: Sequence[np.ndarray],
        options: ProtectionOptions,
        model: EmbeddingModel | None = None,
    ) -> tuple[list[np.ndarray], list[list[np.ndarray]], list[str | None]]:
        """Each face's loss anchor, other identities and decoy name (targeted mode)."""
        decoys = self.gallery_for(model or self.model)
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

    # -- the attack ----------------------------------------------------------------------------

    def attack(
        self, jobs: Sequence[Job], progress: Callable[[int, int], None] | None = None
    ) -> list[np.ndarray]:
        """Run one attack over every face of ``jobs`` (which must share ``options.batch_key()``).

        Returns each job's ``(n, S, S, 3)`` perturbation before amplification.
        """
        if not jobs:
            return []
        options = jobs[0].options
        if any(j.options.batch_key() != options.batch_key() for j in jobs):
            raise ValueError("jobs of one attack batch must share their attack options")
        sizes = [j.size for j in jobs]
        if sum(sizes) == 0:
            return [np.zeros((0, self.size, self.size, 3), np.float32) for _ in jobs]
        crops = np.concatenate([j.crops for j in jobs])
        anchors = [a for j in jobs for a in j.anchors]
        others = [o for j in jobs for o in j.others]
        loss_params: dict[str, Any] = {"targeted": options.targeted}
        if options.loss == "hinge":
            loss_params["kappa"] = options.kappa
        model = jobs[0].model or self.model
        if any((j.model or self.model) is not model for j in jobs):
            raise ValueError("jobs of one attack batch must share their surrogate")
        self._generalise(model, options)
        loss = make_loss(options.loss, model, anchors, others, **loss_params)
        attack = make_attack(options.attack, options.norm, **options.attack_params())
        result = attack.attack(crops, loss, seed=options.seed, progress=progress)
        return np.split(result.delta, np.cumsum(sizes)[:-1])

    # -- amplification, paste-back and receipts ----------------------------------------------

    def finish(
        self,
        job: Job,
        delta: np.ndarray,
        progress: Progress | None = None,
        should_stop: Callable[[], None] = lambda: None,
    ) -> ProtectionResult:
        """Amplify (by the options' alpha, or adaptively), paste back into the full photo, encode, and measure.

        ``should_stop`` is called between the adaptive search's recogniser calls; it may raise
        to abort a cancelled request.
        """
        if job.photo is None:
            raise ValueError("a job made with crop_job has no photo to finish")
        o = job.options
        model = job.model or self.model
        if o.adaptive_alpha and job.size:
            if progress:
                progress("adapt", 0, 0)
            choices = choose_alphas(
                job.photo.pixels,
                job.boxes,
                job.regions,
                job.crops,
                delta,
                self.recognizers_for(o),
                o.alpha,
                o.psnr_floor,
                job.references,
                should_stop,
            )
        else:
            choices = [Choice(o.alpha, ()) for _ in range(job.size)]
        if progress:
            progress("paste", 0, 0)
        alphas = np.asarray([c.alpha for c in choices], np.float32).reshape(-1, 1, 1, 1)
        applied = np.clip(job.crops + alphas * delta, 0.0, 1.0) - job.crops if job.size else delta
        pixels = job.photo.pixels
        for k, region in enumerate(job.regions):
            pixels = paste_delta(pixels, region, applied[k])
        if progress:
            progress("encode", 0, 0)
        out = encode(job.photo, pixels, remove_gps=o.strip_gps)
        receipts: list[FaceReceipt] = []
        if job.size:
            # Measure what the user actually gets: the encoded output, decoded and re-cropped.
            shown = decode(out, max_pixels=self.max_pixels).pixels
            after_crops = np.stack([extract_crop(shown, r, self.size) for r in job.regions])
            before = model.embed_numpy(job.crops)
            after = model.embed_numpy(after_crops)
            for k, region in enumerate(job.regions):
                original = job.photo.pixels[region.slices]
                protected = shown[region.slices]
                receipts.append(
                    FaceReceipt(
                        index=job.indices[k],
                        box=job.boxes[k],
                        target=job.targets[k],
                        l2=float(np.linalg.norm(applied[k])),
                        linf=float(np.abs(applied[k]).max()),
                        psnr=psnr(original, protected),
                        ssim=ssim(original, protected),
                        distance_before=_mean_distance(model, before[k], job.user_refs[k]),
                        distance_after=_mean_distance(model, after[k], job.user_refs[k]),
                        alpha=choices[k].alpha,
                        verdicts=choices[k].verdicts,
                    )
                )
        return ProtectionResult(
            data=out,
            format=output_format(job.photo.format),
            width=job.photo.width,
            height=job.photo.height,
            faces=receipts,
            faces_found=job.faces_found,
            options=o,
            seconds=time.perf_counter() - job.started,
        )
