"""The recogniser interface: verify a photo against references, identify it in a gallery.

Every recogniser, local model or cloud API, answers the two questions the paper asks of a
protected photo with a *confidence* in [0, 1] and a threshold on it:

- **verify**: is the largest face of the photo the person of the reference photos?
- **identify**: which identities of a gallery is it closest to (ranked, top-k)?

Local recognisers also answer the question a person protecting a photo asks: would this
recogniser still pick me out of a crowd? :meth:`EmbeddingRecognizer.rank_among_decoys` ranks the
photo's face among the person (the centroid of their references) and a gallery of decoys (public
figures), leaving out any decoy that is the same person as the user (:class:`DecoyRank`).

Local recognisers (:class:`EmbeddingRecognizer`) embed the largest face of each photo and compare
embeddings: verification measures the distance from the photo's embedding to the centroid of the
references' embeddings, identification ranks the gallery identities by the distance to their
centroids (nearest centroid). Their confidence is the documented monotone map
:func:`distance_confidence` of that distance, built so that ``confidence >= 0.5`` exactly when the
distance is within the model's standard verification threshold; their threshold is therefore
always 0.5, with or without ``use_api_threshold``.

Errors are domain errors (:mod:`faceoff.common.errors`) whose message names the backend and the
photo: a photo in which a backend finds no face raises :class:`~faceoff.common.errors.NoFaceFound`.
Nothing here logs pixels or embeddings.
"""

from __future__ import annotations

import abc
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from faceoff.common.errors import InvalidOption, NoFaceFound
from faceoff.common.imaging import DEFAULT_MAX_PIXELS, Photo, decode

#: The paper's decision threshold on a normalised confidence.
PAPER_TAU = 0.5
#: How many identities :meth:`Recognizer.identify` ranks when not told.
DEFAULT_TOP_K = 3


@dataclass(frozen=True)
class FacePhoto:
    """A photo as a recogniser gets it: the bytes as received and the decoded, upright pixels.

    Attributes:
        data: The encoded file (cloud adapters upload it when the API accepts it as is).
        photo: The decoded photo (local recognisers use its pixels).
        label: What to call it in an error message, e.g. ``"the photo"``, ``"reference 2"``.
    """

    data: bytes
    photo: Photo
    label: str = "the photo"

    @classmethod
    def from_bytes(
        cls, data: bytes, label: str = "the photo", max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> FacePhoto:
        """Decode ``data`` (raises :class:`~faceoff.common.errors.InvalidImage` naming ``label``)."""
        from faceoff.common.errors import InvalidImage

        try:
            photo = decode(data, max_pixels=max_pixels)
        except InvalidImage as exc:
            raise InvalidImage(f"{label}: {exc.message}") from None
        return cls(data=bytes(data), photo=photo, label=label)


@dataclass(frozen=True)
class Verification:
    """The answer to "is this the person of the references?".

    Attributes:
        confidence: In [0, 1]; higher means more likely the same person.
        threshold: The threshold applied to ``confidence``.
        match: ``confidence >= threshold``.
        distance: Distance from the photo's embedding to the references' centroid, in the
            model's embedding space (local recognisers only).
    """

    confidence: float
    threshold: float
    match: bool
    distance: float | None = None


@dataclass(frozen=True)
class IdentityScore:
    """One gallery identity and how close the photo is to it.

    Attributes:
        name: The identity's name from the gallery.
        confidence: In [0, 1] that the photo shows this identity.
        distance: Distance to the identity's centroid (local recognisers only).
    """

    name: str
    confidence: float
    distance: float | None = None


@dataclass(frozen=True)
class DecoyRank:
    """Where the person ranks when the photo's face is identified among them and the decoys.

    Attributes:
        rank: 1-based rank of the person among ``gallery_size`` identities by nearest centroid;
            1 means the recogniser still identifies the photo as the person.
        gallery_size: Identities ranked: the person plus the decoys kept.
        excluded: Decoys left out as the same person as the user (their centroid is within the
            recogniser's verification threshold of the person's).
    """

    rank: int
    gallery_size: int
    excluded: tuple[str, ...] = ()

    @property
    def identified(self) -> bool:
        """True when the person ranks first: the photo is not protected against this recogniser."""
        return self.rank == 1


@dataclass(frozen=True)
class Assessment:
    """A recogniser's answers for one photo: verification and/or identification.

    Attributes:
        verification: Against the references, or None when none were given.
        ranking: The best gallery identities, best first (empty without a gallery).
        decoys: The person's rank among the decoys (local recognisers given references and
            decoys), else None.
    """

    verification: Verification | None
    ranking: list[IdentityScore]
    decoys: DecoyRank | None = None


#: A gallery: identity name -> photos of that identity.
Gallery = Mapping[str, Sequence[FacePhoto]]
#: Decoy identities for :meth:`EmbeddingRecognizer.rank_among_decoys`: name -> the recogniser's
#: centroid embedding of that identity.
Decoys = Mapping[str, np.ndarray]


def distance_confidence(distance: float, threshold: float, scale: float) -> float:
    """Map a distance to a confidence in [0, 1] with a logistic curve centred on ``threshold``.

    ``confidence = 1 / (1 + exp((distance - threshold) / scale))``: strictly decreasing in the
    distance, exactly 0.5 at the model's verification threshold (so ``confidence >= 0.5`` if and
    only if ``distance <= threshold``), near 1 for distances well inside it and near 0 well
    outside. ``scale`` (in distance units) sets how quickly it turns.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    z = (distance - threshold) / scale
    if z > 700:  # exp overflows past ~709; the answer is 0 to double precision anyway
        return 0.0
    return 1.0 / (1.0 + math.exp(z))


def check_top_k(top_k: int) -> int:
    """Validate ``top_k`` (0 means :data:`DEFAULT_TOP_K`)."""
    if not isinstance(top_k, int) or top_k < 0:
        raise InvalidOption(
            f"top_k must be an integer >= 0 (0 means {DEFAULT_TOP_K}), got {top_k!r}"
        )
    return top_k or DEFAULT_TOP_K


class Recognizer(abc.ABC):
    """A face recogniser the evaluator can ask.

    Attributes:
        name: Registry name (``"dlib"``, ``"rekognition"``, ...). Whether a verdict is
            white-box is decided per request from this name (:mod:`faceoff.faces.whitebox`).
    """

    name: str = "recognizer"

    @property
    def configured(self) -> bool:
        """False when the backend cannot be asked (a cloud API without credentials)."""
        return True

    def threshold(self, use_api_threshold: bool = False) -> float:
        """The threshold on confidence: the paper's tau = 0.5, or the backend's own."""
        return PAPER_TAU

    def load(self) -> None:  # noqa: B027 - an optional hook, empty for remote backends
        """Load models now rather than on first use (blocking; safe to call more than once)."""

    @abc.abstractmethod
    def verify(
        self,
        probe: FacePhoto,
        references: Sequence[FacePhoto],
        *,
        use_api_threshold: bool = False,
        deadline: float | None = None,
    ) -> Verification:
        """Is the largest face of ``probe`` the person of ``references``?

        Args:
            probe: The photo to check.
            references: At least one photo of the person.
            use_api_threshold: Apply the backend's own threshold instead of tau = 0.5.
            deadline: ``time.monotonic()`` value by which a remote backend must give up.

        Raises:
            NoFaceFound: the backend found no face in the probe or in a reference.
            InvalidOption: no references were given.
        """

    @abc.abstractmethod
    def identify(
        self,
        probe: FacePhoto,
        gallery: Gallery,
        top_k: int = DEFAULT_TOP_K,
        *,
        deadline: float | None = None,
    ) -> list[IdentityScore]:
        """Rank the gallery's identities for the largest face of ``probe``, best first (at most ``top_k``).

        Raises:
            NoFaceFound: the backend found no face in the probe or in a gallery photo.
            InvalidOption: the gallery is empty or an identity has no photos.
        """

    def assess(
        self,
        probe: FacePhoto,
        references: Sequence[FacePhoto],
        gallery: Gallery,
        top_k: int = DEFAULT_TOP_K,
        *,
        use_api_threshold: bool = False,
        deadline: float | None = None,
        decoys: Decoys | None = None,
    ) -> Assessment:
        """Verify against ``references`` when there are any and identify in ``gallery`` when there is one.

        ``decoys`` (embeddings in a local recogniser's own space) are for
        :class:`EmbeddingRecognizer`; other recognisers ignore them.
        """
        verification = (
            self.verify(probe, references, use_api_threshold=use_api_threshold, deadline=deadline)
            if references
            else None
        )
        ranking = self.identify(probe, gallery, top_k, deadline=deadline) if gallery else []
        return Assessment(verification=verification, ranking=ranking)


def check_references(references: Sequence[FacePhoto]) -> None:
    """Refuse an empty reference list."""
    if not references:
        raise InvalidOption("verification needs at least one reference photo")


def check_gallery(gallery: Gallery) -> None:
    """Refuse an empty gallery or an identity without photos."""
    if not gallery:
        raise InvalidOption("identification needs a gallery with at least one identity")
    for name, photos in gallery.items():
        if not photos:
            raise InvalidOption(f"gallery identity {name!r} has no photos")


class EmbeddingRecognizer(Recognizer):
    """A local recogniser built on a face-embedding model.

    Subclasses implement :meth:`_load` (build the models) and :meth:`_embed` (find the largest
    face and embed it, or return None when there is no face), and set :attr:`distance_threshold`,
    :attr:`confidence_scale` and :attr:`metric`. Models load once, lazily and thread-safely;
    calls into them are serialised by a per-recogniser lock.

    Attributes:
        metric: ``"euclidean"`` (L2 between embeddings) or ``"cosine"`` (1 - cosine similarity).
        distance_threshold: The model's standard verification threshold, as a distance.
        confidence_scale: Scale of :func:`distance_confidence`, in distance units.
        detector_name: How error messages call the face detector this recogniser uses.
    """

    metric: str = "euclidean"
    distance_threshold: float = 1.0
    confidence_scale: float = 0.1
    detector_name: str = "its face detector"
    #: Re-normalise centroids to unit length (for models whose embeddings are compared unit-length).
    unit_centroids: bool = False

    def __init__(self) -> None:
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()
        self._loaded = False

    # -- loading ---------------------------------------------------------------------------

    def load(self) -> None:
        """Build the models once (later calls return at once)."""
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                self._load()
                self._loaded = True

    @property
    def loaded(self) -> bool:
        """True once :meth:`load` has finished."""
        return self._loaded

    @abc.abstractmethod
    def _load(self) -> None:
        """Build the models (called once, under a lock)."""

    @abc.abstractmethod
    def _embed(self, photo: Photo) -> np.ndarray | None:
        """The embedding of the largest face in ``photo`` (1-D float32), or None without a face."""

    # -- embeddings ------------------------------------------------------------------------

    def embed(self, photo: FacePhoto | Photo) -> np.ndarray:
        """Embed the largest face of a photo.

        Raises:
            NoFaceFound: naming this recogniser, its detector and the photo.
        """
        self.load()
        label = photo.label if isinstance(photo, FacePhoto) else "the photo"
        pixels = photo.photo if isinstance(photo, FacePhoto) else photo
        with self._lock:
            embedding = self._embed(pixels)
        if embedding is None:
            raise NoFaceFound(f"{self.name}: no face found in {label} by {self.detector_name}")
        return np.asarray(embedding, dtype=np.float32)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Distance between two embeddings in this model's metric."""
        a = np.asarray(a, dtype=np.float64)
        b = np.asarray(b, dtype=np.float64)
        if self.metric == "cosine":
            denom = float(np.linalg.norm(a) * np.linalg.norm(b)) or 1e-12
            return float(1.0 - np.dot(a, b) / denom)
        return float(np.linalg.norm(a - b))

    def centroid(self, embeddings: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """The mean of ``(n, D)`` embeddings (re-normalised for unit-length models)."""
        arr = np.asarray(embeddings, dtype=np.float64).reshape(
            -1, np.asarray(embeddings[0]).shape[-1]
        )
        if self.metric == "cosine":  # cosine compares directions: average the directions
            arr = arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)
        c: np.ndarray = arr.mean(axis=0)
        if self.unit_centroids:
            c = c / max(float(np.linalg.norm(c)), 1e-12)
        return c

    def confidence(self, distance: float) -> float:
        """:func:`distance_confidence` with this model's threshold and scale."""
        return distance_confidence(distance, self.distance_threshold, self.confidence_scale)

    def verify_embeddings(
        self, probe: np.ndarray, references: np.ndarray | Sequence[np.ndarray]
    ) -> Verification:
        """Verification from embeddings: distance to the references' centroid, mapped to confidence."""
        d = self.distance(probe, self.centroid(references))
        confidence = self.confidence(d)
        return Verification(
            confidence=confidence, threshold=PAPER_TAU, match=confidence >= PAPER_TAU, distance=d
        )

    def rank_among_decoys(self, probe: np.ndarray, person: np.ndarray, decoys: Decoys) -> DecoyRank:
        """Rank the person among themselves and ``decoys`` for the face embedded as ``probe``.

        Nearest centroid: the person's rank is 1 plus the number of decoys strictly nearer to
        ``probe`` than ``person`` is (a tie counts as identified: an evaluator must not overstate
        the protection). A decoy whose centroid is within :attr:`distance_threshold` of
        ``person`` is the same person as the user (say, a photo of a public figure who is also
        a decoy) and is left out, so that nobody competes with themselves.

        Args:
            probe: The embedding of the photo's face.
            person: The person's centroid (:meth:`centroid` of their references' embeddings).
            decoys: Decoy name -> this recogniser's centroid of that identity.
        """
        own = self.distance(probe, person)
        kept: list[float] = []
        excluded: list[str] = []
        for name, centroid in decoys.items():
            if self.distance(person, centroid) < self.distance_threshold:
                excluded.append(name)
            else:
                kept.append(self.distance(probe, centroid))
        rank = 1 + sum(1 for d in kept if d < own)
        return DecoyRank(rank=rank, gallery_size=1 + len(kept), excluded=tuple(excluded))

    def identify_embeddings(
        self,
        probe: np.ndarray,
        gallery: Mapping[str, np.ndarray | Sequence[np.ndarray]],
        top_k: int = DEFAULT_TOP_K,
    ) -> list[IdentityScore]:
        """Nearest-centroid ranking from embeddings, best first, at most ``top_k``."""
        top_k = check_top_k(top_k)
        scores = []
        for name, embeddings in gallery.items():
            d = self.distance(probe, self.centroid(embeddings))
            scores.append(IdentityScore(name=name, confidence=self.confidence(d), distance=d))
        scores.sort(key=lambda s: (s.distance, s.name))
        return scores[:top_k]

    # -- the Recognizer interface ----------------------------------------------------------

    def verify(
        self,
        probe: FacePhoto,
        references: Sequence[FacePhoto],
        *,
        use_api_threshold: bool = False,
        deadline: float | None = None,
    ) -> Verification:
        """See :meth:`Recognizer.verify`; the threshold is 0.5 either way (see module docstring)."""
        check_references(references)
        return self.verify_embeddings(self.embed(probe), [self.embed(r) for r in references])

    def identify(
        self,
        probe: FacePhoto,
        gallery: Gallery,
        top_k: int = DEFAULT_TOP_K,
        *,
        deadline: float | None = None,
    ) -> list[IdentityScore]:
        """See :meth:`Recognizer.identify`."""
        check_gallery(gallery)
        embedded = {name: [self.embed(p) for p in photos] for name, photos in gallery.items()}
        return self.identify_embeddings(self.embed(probe), embedded, top_k)

    def assess(
        self,
        probe: FacePhoto,
        references: Sequence[FacePhoto],
        gallery: Gallery,
        top_k: int = DEFAULT_TOP_K,
        *,
        use_api_threshold: bool = False,
        deadline: float | None = None,
        decoys: Decoys | None = None,
    ) -> Assessment:
        """As :meth:`Recognizer.assess`, embedding the probe once; with references and
        ``decoys``, also the person's rank among the decoys (:meth:`rank_among_decoys`)."""
        top_k = check_top_k(top_k)
        if gallery:
            check_gallery(gallery)
        probe_embedding = self.embed(probe)
        verification = None
        decoy_rank = None
        if references:
            embedded_references = [self.embed(r) for r in references]
            verification = self.verify_embeddings(probe_embedding, embedded_references)
            if decoys:
                decoy_rank = self.rank_among_decoys(
                    probe_embedding, self.centroid(embedded_references), decoys
                )
        ranking: list[IdentityScore] = []
        if gallery:
            embedded = {name: [self.embed(p) for p in photos] for name, photos in gallery.items()}
            ranking = self.identify_embeddings(probe_embedding, embedded, top_k)
        return Assessment(verification=verification, ranking=ranking, decoys=decoy_rank)
