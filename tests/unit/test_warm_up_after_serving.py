"""A masker with ``FACEOFF_WARM_UP=profiles`` traces the default profile before SERVING and the
others right after, so a restarted masker serves again sooner (70 s before, ``bench chaos``)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from faceoff.masker.server import MaskerSettings, _after_serving


class Servicer:
    def __init__(self) -> None:
        self.warmed = threading.Event()
        self.held: list[asyncio.Future[None]] = []

    def warm_up_rest(self) -> None:
        self.warmed.set()

    def hold(self, task: asyncio.Future[None]) -> None:
        self.held.append(task)


def _run(mode: str) -> Servicer:
    servicer = Servicer()
    settings = MaskerSettings(warm_up=mode, detector_health_seconds=0)

    async def scenario() -> None:
        await _after_serving(None, servicer, None, settings)  # type: ignore[arg-type]
        await asyncio.gather(*servicer.held)

    asyncio.run(scenario())
    return servicer


def test_profiles_traces_the_other_profiles_after_serving() -> None:
    servicer = _run("profiles")
    assert servicer.warmed.is_set() and len(servicer.held) == 1


def test_default_and_off_trace_nothing_after_serving() -> None:
    for mode in ("default", "off"):
        assert not _run(mode).warmed.is_set()


def test_the_factory_warms_only_the_default_profile_before_serving(monkeypatch: Any) -> None:
    from faceoff.masker import server

    seen: list[str] = []

    class Protector:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def warm_up_as(self, mode: str) -> None:
            seen.append(mode)

        def attack(self, jobs: Any, progress: Any) -> list[Any]:
            return []

    monkeypatch.setattr(server, "Protector", Protector)
    monkeypatch.setattr("faceoff.faces.models.load_surrogate", lambda name: object())
    from prometheus_client import CollectorRegistry

    from faceoff.common.settings import ServerSettings

    spec = asyncio.run(_spec(ServerSettings(), MaskerSettings(), CollectorRegistry()))
    spec.load()
    assert seen == ["default"]


async def _spec(*args: Any) -> Any:
    from faceoff.masker.server import build_spec

    return build_spec(*args)
