"""The masker's surrogate models: loaded once, combined into ensembles, traced once.

:class:`Surrogates` keeps every surrogate, ensemble, decoy gallery and loop recogniser a
protection has asked for, and traces each attack step with general shapes before its first
real use, so that the same seed gives the same pixels in every process.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from faceoff.faces.models import EmbeddingModel, load_surrogate
from faceoff.faces.models.ensemble import Ensemble
from faceoff.faces.models.resized import Resized
from faceoff.masker.attacks import make_attack, make_loss
from faceoff.masker.decoys import DecoyGallery
from faceoff.masker.options import ProtectionOptions
from faceoff.masker.references import augment_probe

log = logging.getLogger(__name__)

#: Work sizes are rounded up to a multiple of this many pixels (160..640: 16 sides at most).
WORK_SIZE_STEP = 32
#: Ensembles with explicit ``surrogate_weights`` kept at once (least recently used first out).
#: Each costs a trace of the attack (about 20 s on two cores) and about 330 MB, so a client
#: sending a new weight on every request makes the masker rebuild, never grow (with 4 kept,
#: ``faceoff bench chaos``'s six weights took the masker from 1.6 to 3.3 GB; with 2, at most
#: about 2.6); equal-weight ensembles are bounded by the surrogates there are.
MAX_WEIGHTED_ENSEMBLES = 2
#: A weighted ensemble no protection has used for this long is forgotten (memory back to rest).
WEIGHTED_IDLE_SECONDS = 60.0


class Surrogates:
    """The surrogate models (and loop recognisers) protections run on.

    Args:
        model: The default surrogate, used when the options name none (default: FaceNet from
            the verified model cache).
        decoys: The decoy gallery of the default surrogate for targeted mode (default: its
            committed one).

    Other surrogates (``options.surrogates``) are loaded on first use and kept; two or more
    form an :class:`~faceoff.faces.models.ensemble.Ensemble`, kept per (names, weights): every
    equal-weight one, and the :data:`MAX_WEIGHTED_ENSEMBLES` weighted ones used last (an evicted
    one takes its gallery, resize wrappers and traced steps with it). Loop recognisers for
    adaptive alpha are loaded on first use too.
    """

    def __init__(
        self, model: EmbeddingModel | None = None, decoys: DecoyGallery | None = None
    ) -> None:
        self.model = model or load_surrogate("facenet")
        self.decoys = decoys or DecoyGallery.for_model(self.model)
        self.size = self.model.input_size
        self._lock = threading.Lock()
        self._members: dict[str, EmbeddingModel] = {self.model.name: self.model}
        self._models: OrderedDict[tuple[Any, ...], EmbeddingModel] = OrderedDict()
        self._galleries: dict[int, DecoyGallery] = {id(self.model): self.decoys}
        self._recognizers: dict[str, Any] = {}
        self._resized: dict[tuple[int, int], EmbeddingModel] = {}
        self._traced: set[tuple[Any, ...]] = set()
        self._trace_lock = threading.Lock()
        self._used: dict[tuple[Any, ...], float] = {}  # weighted keys: when last asked for

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
            if key[1]:
                self._used[key] = time.monotonic()
            if key in self._models:
                self._models.move_to_end(key)
            else:
                members = []
                for name in names:
                    if name not in self._members:
                        self._members[name] = load_surrogate(name)
                    members.append(self._members[name])
                weights = options.surrogate_weights or None
                model = members[0] if len(members) == 1 else Ensemble(members, weights)
                self._models[key] = model
                self._galleries[id(model)] = DecoyGallery.for_model(model)
                self._evict_weighted()
            return self._models[key]

    def _evict_weighted(self) -> None:
        """Forget the least recently used weighted ensembles past the bound (lock held)."""
        weighted = [k for k in self._models if k[1]]
        for key in weighted[: max(0, len(weighted) - MAX_WEIGHTED_ENSEMBLES)]:
            self._forget(key)

    def expire_idle(self, idle: float = WEIGHTED_IDLE_SECONDS) -> int:
        """Forget the weighted ensembles not asked for in ``idle`` seconds; how many went."""
        now = time.monotonic()
        with self._lock:
            stale = [k for k in self._models if k[1] and now - self._used.get(k, 0.0) >= idle]
            for key in stale:
                self._forget(key)
        if stale:
            log.info("forgot %d weighted ensemble(s) idle for %.0f s or more", len(stale), idle)
        return len(stale)

    def _forget(self, key: tuple[Any, ...]) -> None:
        """Drop one weighted ensemble and everything made for it (lock held)."""
        self._used.pop(key, None)
        model = self._models.pop(key)
        ident = id(model)
        self._galleries.pop(ident, None)
        for side_key in [k for k in self._resized if k[0] == ident]:
            del self._resized[side_key]
        self._traced.difference_update([k for k in self._traced if k[0] == ident])
        log.info("forgot the surrogate ensemble %s with weights %s", key[0], list(key[1]))

    @property
    def weighted_ensembles(self) -> int:
        """Weighted ensembles held now (at most :data:`MAX_WEIGHTED_ENSEMBLES`)."""
        with self._lock:
            return sum(1 for k in self._models if k[1])

    def work_side(self, options: ProtectionOptions) -> int:
        """Side of the square crops the attack of ``options`` runs on: the work size rounded up
        to a multiple of :data:`WORK_SIZE_STEP` (each side costs a trace and a model wrapper, so
        a client cannot make the masker build hundreds), or the surrogate's crop side."""
        if not options.work_size:
            return self.size
        return max(self.size, -(-options.work_size // WORK_SIZE_STEP) * WORK_SIZE_STEP)

    def attack_model(self, model: EmbeddingModel, options: ProtectionOptions) -> EmbeddingModel:
        """The model the attack of ``options`` differentiates: ``model`` itself at the crop
        size, else ``model`` seeing the larger work crop through an anti-aliased resize."""
        side = self.work_side(options)
        if side == model.input_size:
            return model
        key = (id(model), side)
        with self._lock:
            if not self._held(model):  # evicted while in use: not cached under a reusable id
                return Resized(model, side)
            if key not in self._resized:
                self._resized[key] = Resized(model, side)
            return self._resized[key]

    def gallery_for(self, model: EmbeddingModel) -> DecoyGallery:
        """The decoy gallery in ``model``'s embedding space."""
        with self._lock:
            if not self._held(model):
                return DecoyGallery.for_model(model)
            if id(model) not in self._galleries:
                self._galleries[id(model)] = DecoyGallery.for_model(model)
            return self._galleries[id(model)]

    def _held(self, model: EmbeddingModel) -> bool:
        """Whether ``model`` is one this object keeps (lock held): only those are cached by id."""
        return any(m is model for m in (*self._members.values(), *self._models.values()))

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
        self.trace(self.model_for(o), o)
        if o.adaptive_alpha:
            self.recognizers_for(o)
        if (
            options is None
        ):  # also every other profile whose surrogates are loaded by now (low: FaceNet)
            for name in PROFILES:
                p = self.resolved(resolve(name))
                if all(s in self._members for s in p.surrogates):
                    self.trace(self.model_for(p), p)

    def trace(self, model: EmbeddingModel, o: ProtectionOptions) -> None:
        """Trace ``model``'s compiled attack steps for ``o``'s attack and loss, once.

        Every step is traced with the batch's dimensions open (:mod:`.attacks._compile`), so
        this is one small attack whose only use is that the first request does not wait for
        the trace; results do not depend on whether it ran.
        """
        shape = o.attack_params().get("shape")
        shaped = bool(shape is not None and shape.active)
        key = (id(model), o.attack, o.norm, o.loss, self.work_side(o), shaped)
        if key in self._traced:
            return
        with self._trace_lock:  # a concurrent warm-up of the same kind waits for this one
            if key not in self._traced:
                self._trace(model, o)
                with self._lock:
                    if self._held(model):  # an evicted model's id may be reused
                        self._traced.add(key)

    def _trace(self, model: EmbeddingModel, o: ProtectionOptions) -> None:
        loss_params: dict[str, Any] = {"targeted": o.targeted}
        if o.loss == "hinge":
            loss_params["kappa"] = o.kappa
        params = {**o.attack_params(), "iterations": 1}
        if "search_steps" in params:
            params["search_steps"] = 1
        gallery = self.gallery_for(model)
        attacked = self.attack_model(model, o)
        side = attacked.input_size
        crops = np.full((1, self.size, self.size, 3), 0.5, np.float32)
        refs = model.embed_numpy(np.concatenate([crops, augment_probe(crops[0])[:4]]))
        others = gallery.others(None, refs)
        loss = make_loss(o.loss, attacked, [refs], [others], **loss_params)
        work = np.full((1, side, side, 3), 0.5, np.float32)
        make_attack(o.attack, o.norm, **params).attack(work, loss, seed=0)
        loss.anchor_distance(work)  # the receipt's distance
