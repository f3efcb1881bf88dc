"""What :class:`~faceoff.sdk.Client` and :class:`~faceoff.sdk.AsyncClient` share.

As httpx's ``Client`` and ``AsyncClient`` do, the two clients differ only in how a call is made
(blocking, or a coroutine); everything else is here once: the constructor's checks, the
remote backend's addresses, channels and stubs, ``local()`` (the in-process pipeline is a
*backend*, given to the constructor), the evaluation a ``check=`` sends, and ``repr``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Generic, TypeVar

from faceoff.sdk._grpc import Caller, TLSOption, metadata
from faceoff.sdk.config import RetryPolicy
from faceoff.v1 import evaluator_pb2, masker_pb2

if TYPE_CHECKING:
    from typing import Self

    from faceoff.sdk.local import LocalPipeline

#: Default deadline of one attempt, in seconds: protecting a large photo on a CPU can take a minute.
DEFAULT_TIMEOUT = 300.0
#: Largest message the client sends or accepts (the services' own limit is 20 MiB by default).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

MASKER, DETECTOR, EVALUATOR = "faceoff.v1.Masker", "faceoff.v1.Detector", "faceoff.v1.Evaluator"

Channel = TypeVar("Channel")
Backend = TypeVar("Backend")


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

    def channel(self, service: str) -> Channel:
        """The channel to ``service`` (:data:`MASKER`, :data:`DETECTOR` or :data:`EVALUATOR`)."""
        return self._channels[self.addresses[service]]


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


class ClientBase(Generic[Backend]):
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

        Models load, and each kind of attack is traced, on first use (about 20 s before the
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

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}({self.target!r})" if self.target else f"{name}.local()"
