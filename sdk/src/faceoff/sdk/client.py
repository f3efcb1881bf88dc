"""The synchronous client: protect a photo before upload, detect faces, ask recognisers.

Example::

    from faceoff.sdk import Client

    with Client("localhost:50052", detector="localhost:50051", evaluator="localhost:50053") as client:
        protected = client.protect(
            "me.jpg", reference_photos=["me1.jpg", "me2.jpg"], check="dlib,mobilefacenet"
        )
        protected.save("me.protected.jpg")
        for verdict in protected.verdicts:  # rank 1 of gallery_size: still identified
            print(verdict.recognizer, verdict.identified, verdict.rank, verdict.gallery_size)

    local = Client.local()  # the same calls, in-process, no servers
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import grpc

from faceoff.sdk import _convert
from faceoff.sdk._base import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_TIMEOUT,
    DETECTOR,
    EVALUATOR,
    MASKER,
    ClientBase,
    RemoteBase,
    check_request,
)
from faceoff.sdk._convert import DEFAULT_PROFILE, ProtectOptions
from faceoff.sdk._grpc import Deadline, sync_channel
from faceoff.sdk.errors import InternalError
from faceoff.sdk.photos import PhotoInput
from faceoff.sdk.types import Detection, Progress, ProtectedPhoto, Verdict
from faceoff.v1 import (
    detector_pb2,
    detector_pb2_grpc,
    evaluator_pb2,
    evaluator_pb2_grpc,
    masker_pb2,
    masker_pb2_grpc,
)

if TYPE_CHECKING:
    from typing import Unpack

    from faceoff.sdk.local import LocalPipeline

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DEFAULT_TIMEOUT",
    "DETECTOR",
    "EVALUATOR",
    "MASKER",
    "Client",
    "check_request",
]

EventSink = Callable[[masker_pb2.ProtectProgress], None]


class _Backend(Protocol):
    """What runs the calls: the services over gRPC, or :class:`faceoff.sdk.local.LocalPipeline`."""

    def protect(
        self,
        request: masker_pb2.ProtectRequest,
        on_event: EventSink | None,
        timeout: float | None = None,
    ) -> masker_pb2.ProtectResponse: ...
    def detect(
        self, request: detector_pb2.DetectRequest, timeout: float | None = None
    ) -> detector_pb2.DetectResponse: ...
    def evaluate(
        self, request: evaluator_pb2.EvaluateRequest, timeout: float | None = None
    ) -> evaluator_pb2.EvaluateResponse: ...
    def close(self) -> None: ...


class _Remote(RemoteBase[grpc.Channel]):
    """The services over gRPC, with retries; one channel per distinct address."""

    def __init__(self, *args: Any) -> None:
        super().__init__(sync_channel, *args)
        self._masker = masker_pb2_grpc.MaskerStub(self.channel(MASKER))
        self._detector = detector_pb2_grpc.DetectorStub(self.channel(DETECTOR))
        self._evaluator = evaluator_pb2_grpc.EvaluatorStub(self.channel(EVALUATOR))

    def protect(
        self,
        request: masker_pb2.ProtectRequest,
        on_event: EventSink | None,
        timeout: float | None = None,
    ) -> masker_pb2.ProtectResponse:
        if on_event is None:
            return self._caller.call(
                lambda timeout, md: self._masker.Protect(request, timeout=timeout, metadata=md),
                MASKER,
                self.addresses[MASKER],
                "Protect",
                timeout,
            )

        def stream(timeout: float, md: tuple[tuple[str, str], ...]) -> masker_pb2.ProtectResponse:
            call = self._masker.ProtectStream(request, timeout=timeout, metadata=md)
            result = None
            try:
                for event in call:  # read to the end: the stream's status follows the result
                    if event.HasField("result"):
                        result = event.result
                    else:
                        on_event(event.progress)
            except BaseException:
                call.cancel()  # the callback raised (or Ctrl-C): stop the protection on the server
                raise
            if result is None:
                raise InternalError(
                    f"the masker at {self.addresses[MASKER]} ended its stream without a result"
                )
            return result

        return self._caller.call(stream, MASKER, self.addresses[MASKER], "ProtectStream", timeout)

    def detect(
        self, request: detector_pb2.DetectRequest, timeout: float | None = None
    ) -> detector_pb2.DetectResponse:
        return self._caller.call(
            lambda timeout, md: self._detector.Detect(request, timeout=timeout, metadata=md),
            DETECTOR,
            self.addresses[DETECTOR],
            "Detect",
            timeout,
        )

    def evaluate(
        self, request: evaluator_pb2.EvaluateRequest, timeout: float | None = None
    ) -> evaluator_pb2.EvaluateResponse:
        return self._caller.call(
            lambda timeout, md: self._evaluator.Evaluate(request, timeout=timeout, metadata=md),
            EVALUATOR,
            self.addresses[EVALUATOR],
            "Evaluate",
            timeout,
        )

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()


class Client(ClientBase[_Backend]):
    """A client of the Face-Off services (or, from :meth:`local`, of the same pipeline in-process).

    Args:
        target: The masker's address, ``host:port``.
        detector: The detector's address, for :meth:`detect` (default: ``target``, as behind a
            gateway that routes by gRPC service name).
        evaluator: The evaluator's address, for :meth:`evaluate` and ``check=`` (default: ``target``).
        tls: None for plaintext, True for TLS with the system's roots, or a :class:`TLSConfig`
            (a CA and, for mutual TLS, a client certificate and key).
        token: A bearer token, sent as ``authorization: Bearer <token>`` with every call (use TLS).
        timeout: Budget of each call, in seconds, retries and back-off included: each attempt
            gets what is left as its deadline, and no retry starts that could not end in it.
        retries: Retries after the first attempt on UNAVAILABLE, RESOURCE_EXHAUSTED and
            DEADLINE_EXCEEDED, with exponential backoff and jitter (or after the wait the
            server's retry hint asks for); or a :class:`RetryPolicy`.
        max_message_bytes: Largest message sent or received.

    Every failed call raises a :class:`FaceOffError` subclass named after its status
    (:class:`InvalidArgumentError`, :class:`UnavailableError`, ...) carrying the server's message.

    Example::

        client = Client("localhost:50052")
        protected = client.protect("me.jpg", profile="high", seed=7)
        protected.save("me.protected.jpg")
        client.close()
    """

    _remote = _Remote

    @classmethod
    def _local(cls, pipeline: LocalPipeline) -> _Backend:
        return pipeline

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
    ) -> ProtectedPhoto:
        """Protect every face of ``photo`` against face recognition.

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
        request = _convert.protect_request(
            photo,
            profile=profile,
            reference_photos=reference_photos,
            target=target,
            seed=seed,
            options=options,
        )
        on_event: EventSink | None = None
        if on_progress is not None:
            callback = on_progress

            def on_event(event: masker_pb2.ProtectProgress) -> None:
                callback(_convert.progress(event))

        budget = Deadline(timeout)
        response = self._backend.protect(request, on_event, budget.left())
        names = _convert.recognizer_names(check)
        verdicts = (
            _convert.verdicts(
                self._backend.evaluate(check_request(request, response, names), budget.left())
            )
            if names
            else []
        )
        return _convert.protected_photo(response, verdicts)

    def detect(
        self,
        photo: PhotoInput,
        *,
        min_face_size: int | None = None,
        min_confidence: float | None = None,
        timeout: float | None = None,
    ) -> Detection:
        """Find the faces in ``photo``, largest first (``timeout``: this call's budget).

        ``min_face_size`` (the shorter side of a box, in pixels; default 20) and
        ``min_confidence`` (default 0.9) leave out smaller or less certain faces.

        Example::

            for face in client.detect("group.jpg").faces:
                print(face.box, face.confidence)
        """
        request = _convert.detect_request(photo, min_face_size, min_confidence)
        return _convert.detection(self._backend.detect(request, timeout))

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
    ) -> list[Verdict]:
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
        request = _convert.evaluate_request(
            photo,
            reference_photos,
            recognizers,
            gallery=gallery,
            top_k=top_k,
            use_api_threshold=use_api_threshold,
            attacked_models=attacked_models,
        )
        return _convert.verdicts(self._backend.evaluate(request, timeout))

    def close(self) -> None:
        """Close the channels (or stop the embedded pipeline's worker threads)."""
        self._backend.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
