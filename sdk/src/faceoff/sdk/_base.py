"""What :class:`~faceoff.sdk.Client` and :class:`~faceoff.sdk.AsyncClient` share.

As httpx's ``Client`` and ``AsyncClient`` do, the two clients differ only in how a call is made
(blocking, or a coroutine); everything else is here once: the constructor's checks, the
remote backend's addresses, channels and stubs, ``local()`` (the in-process pipeline is a
*backend*, given to the constructor), the calls' signatures, documentation and requests, the
evaluation a ``check=`` sends, and ``repr``. A client implements ``_protect``, ``_detect`` and
``_evaluate``: the same request sent through its backend, blocking or awaited.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar, cast

from faceoff.sdk import _convert
from faceoff.sdk._convert import DEFAULT_PROFILE, ProtectOptions
from faceoff.sdk._grpc import Caller, TLSOption, metadata
from faceoff.sdk.config import RetryPolicy
from faceoff.sdk.photos import PhotoInput
from faceoff.sdk.types import Progress
from faceoff.v1 import (
    detector_pb2,
    detector_pb2_grpc,
    evaluator_pb2,
    evaluator_pb2_grpc,
    masker_pb2,
    masker_pb2_grpc,
)

if TYPE_CHECKING:
    from typing import Self, Unpack

    from faceoff.sdk.local import LocalPipeline

#: Default deadline of one attempt, in seconds: protecting a large photo on a CPU can take a minute.
DEFAULT_TIMEOUT = 300.0
#: Largest message the client sends or accepts (the services' own limit is 20 MiB by default).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

MASKER, DETECTOR, EVALUATOR = "faceoff.v1.Masker", "faceoff.v1.Detector", "faceoff.v1.Evaluator"
#: The service of each RPC the clients make.
SERVICE_OF = {"Protect": MASKER, "ProtectStream": MASKER, "Detect": DETECTOR, "Evaluate": EVALUATOR}

Channel = TypeVar("Channel")
Backend = TypeVar("Backend")
#: What protect, detect and evaluate return: the result (Client) or a coroutine of it (AsyncClient).
ProtectR = TypeVar("ProtectR")
DetectR = TypeVar("DetectR")
EvaluateR = TypeVar("EvaluateR")


class RemoteBase(Generic[Channel]):
    """The services over gRPC: one channel per distinct address, and retries.

    ``channel(address, tls, max_message_bytes)`` opens a channel (blocking or ``grpc.aio``); the
    subclass makes its stubs on them (their types follow the channel's kind).
    """

    def __init__(
        self,
        channel: Callable[[str, TLSOption, int], Channel],
        target: str,
        detector: str | None,
        evaluator: str | None,
        tls: TLSOption,
        token: str | None,
        timeout: float,
        retries: int | RetryPolicy,
        max_message_bytes: int,
    ) -> None:
        self.addresses = {
            MASKER: target,
            DETECTOR: detector or target,
            EVALUATOR: evaluator or target,
        }
        self._caller = Caller(RetryPolicy.of(retries), timeout, metadata(token))
        self._channels: dict[str, Channel] = {}
        for address in self.addresses.values():
            if address not in self._channels:
                self._channels[address] = channel(address, tls, max_message_bytes)
        # A stub's methods block or are coroutines as its channel does (the generated types have
        # one overload per kind; the clients' methods state the reply types).
        self._stubs: dict[str, Any] = {
            MASKER: masker_pb2_grpc.MaskerStub(cast(Any, self.channel(MASKER))),
            DETECTOR: detector_pb2_grpc.DetectorStub(cast(Any, self.channel(DETECTOR))),
            EVALUATOR: evaluator_pb2_grpc.EvaluatorStub(cast(Any, self.channel(EVALUATOR))),
        }
        self._masker = self._stubs[MASKER]

    def channel(self, service: str) -> Channel:
        """The channel to ``service`` (:data:`MASKER`, :data:`DETECTOR` or :data:`EVALUATOR`)."""
        return self._channels[self.addresses[service]]

    def route(self, method: str) -> tuple[str, str, str]:
        """``(service, address, method)`` of an RPC, as ``Caller.call`` / ``acall`` take them."""
        service = SERVICE_OF[method]
        return service, self.addresses[service], method

    def unary(self, method: str, request: Any) -> tuple[Callable[..., Any], str, str, str]:
        """The arguments of ``Caller.call`` / ``acall`` for the unary RPC ``method(request)``."""
        service, address, _ = self.route(method)
        rpc = getattr(self._stubs[service], method)
        return (
            lambda timeout, md: rpc(request, timeout=timeout, metadata=md),
            service,
            address,
            method,
        )


def check_request(
    request: masker_pb2.ProtectRequest, response: masker_pb2.ProtectResponse, recognizers: list[str]
) -> evaluator_pb2.EvaluateRequest:
    """The evaluation of a protected photo against the request's references (or the original photo).

    It names the models the protection has seen (its surrogates and, with adaptive
    amplification, the loop's recognisers), so the evaluator marks their verdicts white-box.
    """
    options = response.options
    attacked = [*options.surrogates, *(options.loop_recognizers if options.adaptive_alpha else ())]
    return evaluator_pb2.EvaluateRequest(
        image=response.image,
        reference_images=list(request.reference_images) or [request.image],
        recognizers=recognizers,
        attacked_models=list(dict.fromkeys(attacked)),
    )


class ProtectCall(NamedTuple):
    """One ``protect()``: its request (built when the call runs), the recognisers ``check=``
    names, the progress callback and the budget."""

    build: Callable[[], masker_pb2.ProtectRequest]
    checks: list[str]
    on_progress: Callable[[Progress], object] | None
    timeout: float | None

    def check(
        self, request: masker_pb2.ProtectRequest, response: masker_pb2.ProtectResponse
    ) -> evaluator_pb2.EvaluateRequest | None:
        """The evaluation ``check=`` asks for once the photo is protected (None without it)."""
        return check_request(request, response, self.checks) if self.checks else None


class ClientBase(Generic[Backend, ProtectR, DetectR, EvaluateR]):
    """The part of a client that does not depend on how calls are made (see the module docstring).

    The arguments are :class:`~faceoff.sdk.Client`'s; ``backend`` is what runs the calls instead
    of the services at ``target`` (``local()`` passes the in-process pipeline): give it or
    ``target``, not both.
    """

    _backend: Backend
    target: str | None

    def __init__(
        self,
        target: str | None = None,
        *,
        detector: str | None = None,
        evaluator: str | None = None,
        tls: TLSOption = None,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int | RetryPolicy = 3,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        backend: Backend | None = None,
    ) -> None:
        if backend is not None:
            if target is not None:
                raise ValueError("give target (the masker's address) or backend, not both")
            self._backend, self.target = backend, None
            return
        if not isinstance(target, str) or not target:
            raise ValueError(
                f"target must be the masker's address, host:port "
                f"(or use {type(self).__name__}.local())"
            )
        self._backend = self._remote(
            target, detector, evaluator, tls, token, timeout, retries, max_message_bytes
        )
        self.target = target

    #: The services at the constructor's addresses as this client's backend, made from
    #: ``(target, detector, evaluator, tls, token, timeout, retries, max_message_bytes)``:
    #: the client's :class:`RemoteBase` subclass.
    _remote: Callable[..., Backend]

    @classmethod
    def _local(cls, pipeline: LocalPipeline) -> Backend:
        """The in-process pipeline as this client's backend."""
        raise NotImplementedError

    @classmethod
    def local(
        cls,
        *,
        recognizers: Iterable[str] | None = None,
        detect_max_side: int = 1024,
        max_pixels: int | None = None,
        cloud_apis: bool = False,
    ) -> Self:
        """A client that runs the pipeline in this process: no servers, the same calls and results.

        Models load, and each kind of attack is traced, on first use (20-30 s before the
        first photo on a 2-core CPU: docs/speed.md) and stay loaded. With the same seed (and
        ``FACEOFF_DETERMINISTIC=1`` on both sides), a protection gives the same bytes as a masker
        service that ran the request, alone or batched with others. ``AsyncClient.local()``
        runs it on worker threads.

        Args:
            recognizers: Local recognisers ``evaluate`` may use (default dlib, sface,
                facenet).
            detect_max_side: Longer side of the copy faces are detected on.
            max_pixels: Largest photo accepted (default 50 megapixels).
            cloud_apis: Let ``evaluate`` call the cloud APIs this process's environment
                configures (the evaluator's variables: docs/evaluator.md); off, they answer
                ``configured=False``.

        Example::

            client = Client.local()
            client.protect("me.jpg", seed=1).save("me.protected.jpg")
        """
        from faceoff.sdk.local import LocalPipeline

        pipeline = LocalPipeline(
            list(recognizers) if recognizers is not None else None,
            detect_max_side,
            max_pixels,
            cloud_apis,
        )
        return cls(backend=cls._local(pipeline))

    # -- how a call is made: blocking (Client) or a coroutine (AsyncClient) --------------------
    # Each takes a thunk that builds the request, so that a bad argument is raised where the
    # call is made: at once for Client, when awaited for AsyncClient.

    def _protect(self, call: ProtectCall) -> ProtectR:
        raise NotImplementedError

    def _detect(
        self, build: Callable[[], detector_pb2.DetectRequest], timeout: float | None
    ) -> DetectR:
        raise NotImplementedError

    def _evaluate(
        self, build: Callable[[], evaluator_pb2.EvaluateRequest], timeout: float | None
    ) -> EvaluateR:
        raise NotImplementedError

    # -- the calls -------------------------------------------------------------------------------

    def protect(
        self,
        photo: PhotoInput,
        *,
        profile: str = DEFAULT_PROFILE,
        reference_photos: Iterable[PhotoInput] | PhotoInput = (),
        target: str | None = None,
        check: str | Iterable[str] = (),
        on_progress: Callable[[Progress], object] | None = None,
        seed: int | None = None,
        timeout: float | None = None,
        **options: Unpack[ProtectOptions],
    ) -> ProtectR:
        """Protect every face of ``photo`` against face recognition.

        On an :class:`~faceoff.sdk.AsyncClient` this call, like the others, is a coroutine:
        ``protected = await client.protect(...)``.

        Args:
            photo: A path, bytes, a binary file object, a PIL image or a uint8 ``(H, W, 3)`` array
                (images and arrays are sent as PNG).
            profile: One of :data:`~faceoff.sdk.PROFILES` (``low``, ``medium``, ``high``): how
                strong (and slow) the protection is; default :data:`~faceoff.sdk.DEFAULT_PROFILE`.
            reference_photos: Other photos of the person (their set A_y); without them the face
                itself and light augmentations of it stand in.
            target: A decoy identity to make the face look like (implies targeted mode).
            check: Recognisers to ask about the protected photo afterwards, e.g.
                ``"dlib,mobilefacenet"`` or ``["dlib", "mobilefacenet"]``; their verdicts are in
                :attr:`ProtectedPhoto.verdicts`. The person is the reference photos, or the
                original photo without them; each local recogniser says whether it still picks
                them out of its gallery of public figures (:attr:`Verdict.identified`,
                :attr:`Verdict.rank`).
            on_progress: Called with each :class:`Progress` event (stage detect, attack
                iteration k of N, paste), in order. The call streams when it is given.
            seed: Random seed; the same seed, photo and options give the same photo.
            timeout: This call's budget in seconds (default: the client's ``timeout``), the
                protection and the ``check`` together, retries included. ``Client.local()``
                runs in this process and takes no deadline.
            **options: Explicit settings that override the profile's (see :class:`ProtectOptions`):
                ``attack``, ``norm``, ``loss``, ``targeted``, ``epsilon``, ``iterations``,
                ``learning_rate``, ``kappa``, ``alpha``, ``initial_const``, ``search_steps``,
                ``faces``, ``strip_gps``, ``min_face_size``, ``min_confidence``, ``max_faces``.

        Returns:
            The protected photo (same format and size; GIF becomes PNG) with a receipt per face.

        Raises:
            InvalidArgumentError: a bad photo or option (the message names it and what is accepted).
            UnavailableError, ResourceExhaustedError, DeadlineExceededError: after the retries.
            TypeError: an unknown keyword.

        Example::

            protected = client.protect(Path("me.jpg"), profile="low", on_progress=print, check="sface")
            print(protected.faces[0].psnr, [v.match for v in protected.verdicts])
        """
        build = functools.partial(
            _convert.protect_request,
            photo,
            profile=profile,
            reference_photos=reference_photos,
            target=target,
            seed=seed,
            options=options,
        )
        return self._protect(
            ProtectCall(build, _convert.recognizer_names(check), on_progress, timeout)
        )

    def detect(
        self,
        photo: PhotoInput,
        *,
        min_face_size: int | None = None,
        min_confidence: float | None = None,
        timeout: float | None = None,
    ) -> DetectR:
        """Find the faces in ``photo``, largest first (``timeout``: this call's budget).

        ``min_face_size`` (the shorter side of a box, in pixels; default 20) and
        ``min_confidence`` (default 0.9) leave out smaller or less certain faces.

        Example::

            for face in client.detect("group.jpg").faces:
                print(face.box, face.confidence)
        """
        build = functools.partial(_convert.detect_request, photo, min_face_size, min_confidence)
        return self._detect(build, timeout)

    def evaluate(
        self,
        photo: PhotoInput,
        reference_photos: Iterable[PhotoInput] | PhotoInput = (),
        recognizers: str | Iterable[str] = (),
        *,
        gallery: Mapping[str, Iterable[PhotoInput]] | None = None,
        top_k: int = 0,
        use_api_threshold: bool = False,
        attacked_models: str | Iterable[str] = (),
        timeout: float | None = None,
    ) -> EvaluateR:
        """Ask recognisers whether ``photo`` still shows the person of ``reference_photos``.

        Args:
            photo: The (protected) photo.
            reference_photos: Photos of the person to verify against.
            recognizers: ``"dlib,sface"`` or a list; empty asks every one the evaluator runs.
            gallery: Identity name -> photos, to rank identities (``Verdict.top_k``).
            top_k: How many identities to rank (default 3).
            use_api_threshold: Judge cloud APIs by their own threshold instead of 0.5.
            attacked_models: The models the photo's protection used (its surrogates and loop
                recognisers), ``"facenet,sface"`` or a list: their verdicts are marked
                white-box (default: the default profile's surrogates).
            timeout: This call's budget in seconds (default: the client's ``timeout``).

        Returns:
            One :class:`Verdict` per recogniser, in request order; a failing recogniser's verdict
            carries its error instead of failing the call.

        Example::

            verdicts = client.evaluate("me.protected.jpg", ["me1.jpg", "me2.jpg"], "dlib,sface")
            fooled = [v.recognizer for v in verdicts if v.match is False]
        """
        build = functools.partial(
            _convert.evaluate_request,
            photo,
            reference_photos,
            recognizers,
            gallery=gallery,
            top_k=top_k,
            use_api_threshold=use_api_threshold,
            attacked_models=attacked_models,
        )
        return self._evaluate(build, timeout)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.target!r})" if self.target else f"{name}.local()"
