"""The Evaluator RPC: messages in, domain calls, messages out. Nothing else."""

from __future__ import annotations

import asyncio
import time

import grpc

from faceoff.common.errors import ModelNotReady
from faceoff.evaluator.convert import request_from_proto, verdicts_to_proto
from faceoff.evaluator.evaluation import Evaluator
from faceoff.v1 import evaluator_pb2, evaluator_pb2_grpc


class EvaluatorServicer(evaluator_pb2_grpc.EvaluatorServicer):
    """Serves ``faceoff.v1.Evaluator`` with an :class:`Evaluator` built by ``factory``."""

    def __init__(self, factory: type[Evaluator] | object) -> None:
        self._factory = factory
        self._evaluator: Evaluator | None = None

    def load(self) -> None:
        """Build the evaluator and load its local models; the server calls this in a thread at start-up."""
        evaluator = self._factory()  # type: ignore[operator]
        evaluator.load()
        self._evaluator = evaluator

    def close(self) -> None:
        """Release the evaluator's worker threads."""
        if self._evaluator is not None:
            self._evaluator.close()

    def _ready(self) -> Evaluator:
        if self._evaluator is None:
            raise ModelNotReady("the evaluator is still loading its models; retry in a few seconds")
        return self._evaluator

    async def Evaluate(
        self,
        request: evaluator_pb2.EvaluateRequest,
        context: grpc.aio.ServicerContext[
            evaluator_pb2.EvaluateRequest, evaluator_pb2.EvaluateResponse
        ],
    ) -> evaluator_pb2.EvaluateResponse:
        evaluator = self._ready()
        domain = request_from_proto(request)
        remaining = context.time_remaining()
        # Leave a little of the client's deadline for the answer to travel back.
        deadline = time.monotonic() + max(0.0, remaining - 0.25) if remaining is not None else None
        verdicts = await asyncio.to_thread(evaluator.evaluate, domain, deadline)
        return verdicts_to_proto(verdicts)
