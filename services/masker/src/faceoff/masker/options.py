"""Protection options: named profiles, explicit overrides, and their validation.

A profile is a named bundle of attack, norm, loss, epsilon, iterations, kappa and alpha
(README, "Profiles", gives what each costs in time and PSNR). Every parameter can also be set
explicitly; :func:`resolve` applies the overrides to the profile and checks every value,
raising :class:`~faceoff.common.errors.InvalidOption` naming the field and the accepted range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from faceoff.common.errors import InvalidOption
from faceoff.masker.schema import (
    DEFAULT_PROFILE,
    DEFAULT_SURROGATES,
    OPTIONS,
    PROFILE_NAMES,
    bound,
)

#: What each option accepts comes from the contract (:mod:`faceoff.masker.schema`); these names
#: are kept for readers and callers that need one bound or list.
ATTACK_NAMES = OPTIONS["attack"].names
NORM_NAMES = OPTIONS["norm"].names
LOSS_NAMES = OPTIONS["loss"].names
MAX_ITERATIONS = int(bound("iterations"))
#: Surrogates the masker can run the attack on (see :mod:`faceoff.faces.models`).
SURROGATE_NAMES = OPTIONS["surrogates"].names
#: Local recognisers the adaptive-alpha search can consult (see :mod:`faceoff.faces.recognizers`).
LOOP_RECOGNIZER_NAMES = OPTIONS["loop_recognizers"].names
#: The linf norm's bound on epsilon (the contract declares the l2 norm's), in [0, 1] pixel units.
MAX_EPSILON_LINF = 1.0
#: Recognisers that only ever judge a protection: never a surrogate, never consulted in a loop.
INDEPENDENT_JUDGES = ("dlib", "mobilefacenet")
#: Surrogates accepted only with ``align``: they identify faces only when each is aligned.
ALIGNED_ONLY = ("mobileface",)
#: Wire names :func:`resolve` still takes for the options' own names (the contract's ``alias``,
#: the name the CLI, the SDK and the masker use): deprecated, for one release.
WIRE_NAMES = {
    spec.name: spec.keyword
    for spec in OPTIONS.values()
    if spec.keyword != spec.name and spec.kind != "enum"  # mode's values differ from targeted's
}
#: Each option's wire field by its own name, for the field paths errors name.
_FIELDS = {spec.keyword: spec.name for spec in OPTIONS.values()}


@dataclass(frozen=True, kw_only=True)
class ProtectionOptions:
    """Everything that decides how a photo is protected (after resolving the profile).

    Built by :func:`resolve` only. The fields every profile sets (:data:`PROFILES`) have no
    default here, so the one place their values are written is the profile.

    Attributes:
        profile: The profile the values started from.
        attack: ``"pgd"`` or ``"cw"``.
        norm: ``"l2"`` or ``"linf"``.
        loss: ``"target"`` or ``"hinge"``.
        targeted: Pull the face towards a decoy as well as away from the user.
        epsilon: Perturbation bound before amplification (PGD); CW reports against it.
        iterations: Optimiser iterations (per search step for CW).
        learning_rate: PGD step size (in the norm's units) or CW's Adam learning rate.
        kappa: Hinge margin, in normalised-embedding units (distances lie in [0, 2]).
        alpha: Amplification: the photo gets ``clip(x + alpha * delta) - x``.
        initial_const: CW's initial loss constant.
        search_steps: CW's binary-search steps.
        target: Decoy to imitate in targeted mode (None: the nearest that is not the user).
        faces: Faces to protect, as indices into the largest-first list (empty: all); on the
            wire ``face_indices``.
        seed: Random seed; the same seed, photo and options give the same output.
        strip_gps: Remove GPS tags from the output's EXIF.
        margin: Crop margin around each face box, as a fraction of its size.
        momentum: PGD transfer technique: MI-FGSM decay in [0, 1] (0: off).
        diversity: PGD transfer technique: input-diversity probability in [0, 1] (0: off).
        ti_kernel: PGD transfer technique: translation-invariance kernel side, 0 or odd 3..15.
        eot: PGD transfer technique: probability of a platform transform per step (0: off).
        surrogates: The surrogate models the attack runs on (two or more: an ensemble; empty:
            the masker's configured surrogate).
        surrogate_weights: One weight > 0 per surrogate (empty: equal weights).
        adaptive_alpha: Search the smallest alpha in [1, alpha] at which ``loop_recognizers``
            no longer match the face, keeping face PSNR >= ``psnr_floor``.
        psnr_floor: Lowest face-region PSNR (dB) adaptive alpha may go to.
        loop_recognizers: Local recognisers the adaptive search checks (they are then no
            longer independent judges of the result).
        work_size: Side of the square the face region is attacked at (0: the surrogate's crop).
        feather: PGD shaping: the soft elliptical mask's fade (0: the rectangular crop).
        chroma: PGD shaping: chroma budget relative to luminance (1: unshaped).
        texture: PGD shaping: texture-masking strength (0: a uniform budget).
        ssim: PGD shaping: weight of the perceptual penalty, 1 - SSIM of the face's luminance
            at the work size, added to the loss (0: none).
        warp: PGD transfer technique: probability of a random alignment warp per step (0: off).
        balance: PGD ensemble: normalise each surrogate's gradient before combining them.
        align: Surrogates trained on aligned faces read each face through its own landmarks'
            alignment (:mod:`faceoff.faces.alignment`) instead of one fixed window.
        visibility: Per face, the largest alpha up to ``alpha`` whose face Butteraugli as
            displayed stays within this target (:mod:`faceoff.masker.budget`; 0: off).
        dropout: PGD transfer technique: dropout rate on the surrogates' feature maps (0: off).
        visibility_map: With ``visibility``, reshape each face's change by Butteraugli's
            difference map before the alpha search (:mod:`faceoff.masker.budget`).
        surrogate_subset: PGD ensemble: each iteration each face attacks a random subset of
            this many surrogates (0: all of them).
        feature_level: PGD: fraction of each surrogate's step that pushes its mid-level
            features away from the clean face's (0: off; needs ``balance``).
        skip_gradient: PGD transfer technique: SGM's gamma on the residual surrogates' branches
            (0: off).
        blotch: Per face, the largest low-frequency brightness change as displayed, in 0..255
            levels (:func:`faceoff.masker.quality.blotch`); alpha is capped to keep it
            (:mod:`faceoff.masker.budget`; 0: off).
        visibility_min_face: With ``visibility``, faces whose box as displayed is smaller than
            this on its longer side (px) keep alpha at most 1 and no map (0: every face).
        variance: PGD transfer technique: neighbours whose gradients tune each step (VMI;
            0: off); each costs one more gradient per iteration.
    """

    profile: str = DEFAULT_PROFILE
    attack: str
    norm: str
    loss: str
    targeted: bool = False
    epsilon: float
    iterations: int
    learning_rate: float
    kappa: float = 0.2
    alpha: float
    initial_const: float = 0.3
    search_steps: int
    target: str | None = None
    faces: tuple[int, ...] = field(default_factory=tuple)
    seed: int = 0
    strip_gps: bool = False
    margin: float = 0.1
    momentum: float
    diversity: float
    ti_kernel: int
    eot: float
    surrogates: tuple[str, ...]
    surrogate_weights: tuple[float, ...] = ()
    adaptive_alpha: bool = False
    psnr_floor: float = 32.0
    loop_recognizers: tuple[str, ...] = ("sface",)
    work_size: int
    feather: float
    chroma: float
    texture: float
    ssim: float
    warp: float = 0.0
    balance: bool = False
    align: bool = False
    visibility: float = 0.0
    dropout: float = 0.0
    visibility_map: bool = False
    surrogate_subset: int = 0
    feature_level: float = 0.0
    skip_gradient: float = 0.0
    blotch: float = 0.0
    visibility_min_face: int = 0
    variance: int = 0

    def attack_params(self) -> dict[str, Any]:
        """Constructor arguments of the optimiser."""
        if self.attack == "pgd":
            from faceoff.masker.attacks.shape import Shape
            from faceoff.masker.attacks.transfer import Transfer

            transfer = Transfer(
                momentum=self.momentum,
                diversity=self.diversity,
                ti_kernel=self.ti_kernel,
                eot=self.eot,
                warp=self.warp,
                dropout=self.dropout,
                subset=self.surrogate_subset,
                feature_level=self.feature_level,
                skip_gradient=self.skip_gradient,
                variance=self.variance,
            )
            return {
                "epsilon": self.epsilon,
                "step_size": self.learning_rate,
                "iterations": self.iterations,
                "transfer": transfer,
                "shape": Shape(
                    feather=self.feather, chroma=self.chroma, texture=self.texture, ssim=self.ssim
                ),
                "balance": self.balance,
            }
        return {
            "iterations": self.iterations,
            "search_steps": self.search_steps,
            "learning_rate": self.learning_rate,
            "initial_const": self.initial_const,
        }

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one attack batch (the options the contract marks
        as part of the attack)."""
        return tuple(getattr(self, OPTIONS[name].keyword) for name in _ATTACK_FIELDS)

    @property
    def total_iterations(self) -> int:
        """Iterations the optimiser runs at most (CW: all search steps)."""
        return self.iterations * (self.search_steps if self.attack == "cw" else 1)

    @property
    def gradients_per_iteration(self) -> int:
        """Gradients each iteration takes: its own and one per variance-tuning neighbour."""
        return 1 + self.variance


_ATTACK_FIELDS = tuple(name for name, spec in OPTIONS.items() if spec.attack)
#: The options that only shape a visibility target, and what each does with it.
_NEED_VISIBILITY = {
    "visibility_map": "reshapes the change within",
    "visibility_min_face": "leaves small faces out of",
}

#: The named profiles. Epsilon is given per norm (the profile's attack runs in its own norm, but
#: a caller who switches the norm gets that norm's bound). Unless set explicitly, PGD's step size
#: follows Madry et al. (2.5 * epsilon / iterations) and CW's Adam learning rate is
#: :data:`CW_LEARNING_RATE`.
#: The transfer techniques every profile uses (docs/results.md measures what each buys).
#: EOT is off: on the shaped, native-resolution perturbation it bought nothing after JPEG 75 + 1/2.
_TRANSFER: dict[str, Any] = {"momentum": 1.0, "diversity": 0.7, "ti_kernel": 5, "eot": 0.0}
#: How every profile shapes its perturbation for the eye (docs/results.md, "Visibility"): the
#: face region attacked at 512 px, a soft ellipse, a third of the budget in colour, and a
#: uniform budget (texture masking cost more visibility than it saved).
_VISIBILITY: dict[str, Any] = {
    "work_size": 512,
    "feather": 0.2,
    "chroma": 0.3,
    "texture": 0.0,
    "ssim": 0.0,
}
PROFILES: dict[str, dict[str, Any]] = {
    "low": {
        "attack": "pgd",
        "norm": "linf",
        "loss": "target",
        "iterations": 20,
        "alpha": 1.0,
        "search_steps": 2,
        "epsilon": {"l2": 4.0, "linf": 3 / 255},
        "surrogates": ("facenet",),
        **_TRANSFER,
        **_VISIBILITY,
    },
    "medium": {
        "attack": "pgd",
        "norm": "linf",
        "loss": "target",
        # The transfer engine's levers together at the old default's look and time: 15
        # iterations on three surrogates (SFace reading each face through its own landmarks),
        # warped, with balanced gradients, protect 5-12 points more than 30 on FaceNet + SFace
        # did, on both face sizes (docs/results.md, "The transfer engine")
        "iterations": 15,
        "alpha": 1.0,
        "search_steps": 3,
        "epsilon": {"l2": 7.0, "linf": 5 / 255},
        "surrogates": DEFAULT_SURROGATES,  # the contract's: the evaluator assumes them too
        "align": True,
        "warp": 0.7,
        "balance": True,
        **_TRANSFER,
        **_VISIBILITY,
    },
    "high": {
        "attack": "pgd",
        "norm": "linf",
        "loss": "target",
        "iterations": 80,
        "alpha": 1.0,
        "search_steps": 5,
        "epsilon": {"l2": 8.5, "linf": 10 / 255},
        "surrogates": ("facenet", "facenet512", "sface"),
        **_TRANSFER,
        **_VISIBILITY,
    },
}
if tuple(PROFILES) != PROFILE_NAMES:  # the contract names the profiles; this module fills them
    raise RuntimeError(f"profiles {tuple(PROFILES)} differ from the contract's {PROFILE_NAMES}")
CW_LEARNING_RATE = 0.01


def resolve(profile: str | None = None, **overrides: Any) -> ProtectionOptions:
    """The options of ``profile`` (default: the contract's :data:`DEFAULT_PROFILE`) with ``overrides`` applied and checked.

    Overrides whose value is None are ignored (an unset field takes the profile's value). Options
    go by their own names (``targeted``, ``faces``); ``face_indices``, the wire's name, is still
    taken (deprecated).

    Raises:
        InvalidOption: naming the field and the accepted values.
    """
    name = profile or DEFAULT_PROFILE
    if not isinstance(name, str) or name not in PROFILES:
        raise InvalidOption(f"profile must be one of {', '.join(PROFILES)}, got {name!r}")
    overrides = {WIRE_NAMES.get(k, k): v for k, v in overrides.items()}
    known = {f.name for f in dataclasses.fields(ProtectionOptions)} - {"profile"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InvalidOption(
            f"unknown option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(known))}"
        )
    explicit = {k: v for k, v in overrides.items() if v is not None}
    values: dict[str, Any] = {**PROFILES[name], **explicit}
    norm = values.get("norm")
    if "epsilon" not in explicit and isinstance(values["epsilon"], dict):
        if not isinstance(norm, str) or norm not in values["epsilon"]:  # before validation
            raise InvalidOption(f"norm must be one of {', '.join(NORM_NAMES)}, got {norm!r}")
        values["epsilon"] = values["epsilon"][norm]
    if "learning_rate" not in explicit:
        if values.get("attack") == "cw":
            values["learning_rate"] = CW_LEARNING_RATE
        elif (
            isinstance(values.get("epsilon"), (int, float))
            and isinstance(values.get("iterations"), int)
            and values["iterations"] > 0
        ):
            values["learning_rate"] = 2.5 * float(values["epsilon"]) / values["iterations"]
        else:  # epsilon or iterations is malformed: validate() refuses it, naming it, first
            values["learning_rate"] = 0.0
    if values.get("attack") == "cw":  # a profile's PGD techniques do not carry over to CW
        for key in (
            "momentum",
            "diversity",
            "ti_kernel",
            "eot",
            "warp",
            "dropout",
            "surrogate_subset",
            "feature_level",
            "skip_gradient",
            "variance",
            "feather",
            "texture",
            "ssim",
            "work_size",
        ):
            if key not in explicit:
                values[key] = 0
        if "chroma" not in explicit:
            values["chroma"] = 1
        if "balance" not in explicit:
            values["balance"] = False
    for key in ("faces", "surrogates", "surrogate_weights", "loop_recognizers"):
        value = values.get(key)
        if isinstance(value, str):
            values[key] = tuple(v.strip() for v in value.split(",") if v.strip())
        elif isinstance(value, (list, tuple)):
            values[key] = tuple(value)
        elif value is not None:
            raise InvalidOption(
                f"{key} must be a list (or a comma-separated string), got {value!r}",
                field=f"options.{_FIELDS.get(key, key)}",
            )
    for key in ("surrogates", "loop_recognizers"):
        if not all(isinstance(v, str) for v in values.get(key, ())):
            raise InvalidOption(
                f"{key} must be model names, got {list(values[key])!r}",
                field=f"options.{_FIELDS.get(key, key)}",
            )
        judges = sorted(set(values.get(key, ())) & set(INDEPENDENT_JUDGES))
        if judges:
            raise InvalidOption(
                f"{', '.join(judges)} is an independent judge: it never enters the attack or its "
                f"loop (a model the protection consults stops being a judge); {key} accepts "
                f"{', '.join(OPTIONS[key].names)}",
                field=f"options.{_FIELDS.get(key, key)}",
            )
    options = ProtectionOptions(profile=name, **values)
    return validate(options)


def validate(o: ProtectionOptions) -> ProtectionOptions:
    """Check every field of ``o``; returns it unchanged or raises InvalidOption.

    Each field is checked against what the contract declares it accepts, then the rules that
    tie fields together.
    """
    for name, spec in OPTIONS.items():
        if spec.kind == "enum" and spec.keyword != name:  # mode: here the bool ``targeted``
            continue
        value = getattr(o, spec.keyword)
        if name == "target" and value is None:
            continue
        shown = list(value) if spec.repeated else value
        for element in value if spec.repeated else (value,):
            problem = spec.problem(element)
            if problem is not None:
                raise InvalidOption(f"{problem}, got {shown!r}", field=f"options.{name}")
        if spec.repeated and spec.accepts.distinct and len(set(value)) != len(value):
            raise InvalidOption(
                f"{name} must be {spec.accepted()}, got {shown!r}", field=f"options.{name}"
            )
    if not isinstance(o.targeted, bool):
        raise InvalidOption(
            f"targeted must be true or false, got {o.targeted!r}", field="options.mode"
        )
    margin = o.margin
    if (
        isinstance(margin, bool)
        or not isinstance(margin, (int, float))
        or not math.isfinite(margin)
        or not 0 <= margin <= 1
    ):
        raise InvalidOption(
            f"margin must be a number in [0, 1], got {margin!r}", field="options.margin"
        )
    if o.norm == "linf" and o.epsilon > MAX_EPSILON_LINF:
        raise InvalidOption(
            f"epsilon must be in (0, {MAX_EPSILON_LINF:g}] for the linf norm, got {o.epsilon!r}",
            field="options.epsilon",
        )
    if o.iterations * (o.search_steps if o.attack == "cw" else 1) > MAX_ITERATIONS:
        raise InvalidOption(
            f"iterations x search_steps must be at most {MAX_ITERATIONS}, "
            f"got {o.iterations} x {o.search_steps}",
            field="options.iterations",
        )
    if o.attack != "pgd" and (
        o.momentum
        or o.diversity
        or o.ti_kernel
        or o.eot
        or o.warp
        or o.dropout
        or o.balance
        or o.surrogate_subset
        or o.feature_level
        or o.skip_gradient
        or o.variance
    ):
        raise InvalidOption(
            "momentum, diversity, ti_kernel, eot, warp, dropout, balance, surrogate_subset, "
            f"feature_level, skip_gradient and variance are PGD techniques; attack "
            f"{o.attack} takes none of them (set them to 0 / false)",
            field="options.attack",
        )
    if o.attack != "pgd" and (o.feather or o.chroma != 1 or o.texture or o.ssim):
        raise InvalidOption(
            f"feather, chroma, texture and ssim shape PGD's perturbation; attack {o.attack} "
            "takes none of them (set feather, texture and ssim to 0, chroma to 1)",
            field="options.attack",
        )
    if o.surrogate_weights and len(o.surrogate_weights) != len(o.surrogates):
        raise InvalidOption(
            f"surrogate_weights must give one weight per surrogate ({len(o.surrogates)}), "
            f"got {len(o.surrogate_weights)}",
            field="options.surrogate_weights",
        )
    needy = sorted(set(o.surrogates) & set(ALIGNED_ONLY))
    if needy and not o.align:
        raise InvalidOption(
            f"{', '.join(needy)} knows faces only when each is aligned by its own landmarks "
            "(leave-one-out 64% through the fixed window, 100% aligned): set align (--align), or "
            f"choose other surrogates",
            field="options.surrogates",
        )
    if o.surrogate_subset and o.surrogate_subset >= len(o.surrogates):
        raise InvalidOption(
            f"surrogate_subset must be 0 (all) or fewer than the surrogates "
            f"({len(o.surrogates)}: {', '.join(o.surrogates)}), got {o.surrogate_subset}",
            field="options.surrogate_subset",
        )
    if o.feature_level and not o.balance:
        raise InvalidOption(
            "feature_level splits each surrogate's normalised step between its embedding and its "
            "features, and balance is off: set balance (--balance) or leave feature_level at 0",
            field="options.feature_level",
        )
    if o.adaptive_alpha and o.visibility:
        raise InvalidOption(
            "visibility and adaptive_alpha each choose alpha per face; set one of them "
            f"(visibility={o.visibility:g}, adaptive_alpha=true)",
            field="options.visibility",
        )
    if o.adaptive_alpha and o.blotch:
        raise InvalidOption(
            "blotch caps the alpha that visibility or the profile chose, and adaptive_alpha "
            f"chooses its own; set one of them (blotch={o.blotch:g}, adaptive_alpha=true)",
            field="options.blotch",
        )
    for name, what in _NEED_VISIBILITY.items():
        if getattr(o, name) and not o.visibility:
            raise InvalidOption(
                f"{name} {what} a visibility target, and visibility is 0: set visibility "
                f"(--visibility B, e.g. 5) or leave {name} unset",
                field=f"options.{name}",
            )
    if o.adaptive_alpha and not o.loop_recognizers:
        raise InvalidOption(
            "adaptive_alpha needs at least one loop recogniser (loop_recognizers is empty)",
            field="options.loop_recognizers",
        )
    if o.adaptive_alpha and o.alpha < 1:
        raise InvalidOption(
            "with adaptive_alpha, alpha is the largest amplification tried and must be >= 1, "
            f"got {o.alpha!r}",
            field="options.alpha",
        )
    if o.target is not None and not o.targeted:
        raise InvalidOption(
            "target names a decoy, which only targeted mode uses; set mode to targeted",
            field="options.target",
        )
    return o
