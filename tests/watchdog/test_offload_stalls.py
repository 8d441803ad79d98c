"""Offload mode and the watchdog: a task with a greenback portal runs its coroutine in a
greenlet, whose stack does not reach the loop; a stall there is still a stall, and a call moved
to a worker thread is not one (the loop is free while it waits)."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator

import anyio
import pytest
from fastapi import FastAPI
from helpers import run_on
from test_watchdog import ORIGINAL_SLEEP, assert_close, serve, spin, stalls_of

import blockbuster_lite as bl
from blockbuster_lite.core.state import state

BLOCK = 0.3


@pytest.fixture(autouse=True)
def _restored() -> Iterator[None]:
    before = (state.guards, state.observers)
    yield
    assert (state.guards, state.observers) == before
    assert time.sleep is ORIGINAL_SLEEP
    assert not [t for t in threading.enumerate() if t.name == "blockbuster_lite.watchdog"]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "trio"])
def test_a_cpu_stall_in_an_offload_mode_task_is_reported(loop: str) -> None:
    truth: list[float] = []

    async def main() -> bl.Guard:
        async with bl.intercept("offload", watchdog=0.1) as guard:
            await anyio.sleep(0.05)
            truth.append(spin(BLOCK))
            await anyio.sleep(0.05)
        return guard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        guard: bl.Guard = run_on(loop, main)
    (stall,) = stalls_of(guard)
    assert stall.function == "spin"
    assert stall.task_name  # the task is found through the portal's parent greenlet
    assert_close(stall.duration_s, truth[0])


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_an_offloaded_sleep_is_not_a_stall(loop: str) -> None:
    async def main() -> bl.Guard:
        async with bl.intercept("offload", watchdog=0.1) as guard:
            await anyio.sleep(0.05)
            time.sleep(BLOCK)  # runs in a worker thread while the task waits
            await anyio.sleep(0.05)
        return guard

    guard: bl.Guard = run_on(loop, main)
    assert [(v.kind, v.call, v.action) for v in guard.violations] == [
        ("call", "time.sleep", bl.Mode.OFFLOAD)
    ]


@pytest.mark.filterwarnings("ignore::blockbuster_lite.BlockingCallWarning")
@pytest.mark.parametrize(
    "server", [("asyncio", "h11"), ("uvloop", "httptools")], ids=["asyncio", "uvloop"]
)
def test_a_cpu_stall_in_a_route_under_the_middleware_in_offload_mode(
    server: tuple[str, str],
) -> None:
    from blockbuster_lite.asgi import BlockBusterMiddleware

    app = FastAPI()
    app.add_middleware(BlockBusterMiddleware)

    @app.get("/cpu/{n}")
    async def cpu(n: int) -> dict[str, float]:
        return {"took": spin(BLOCK)}

    @app.get("/sleep")
    async def sleep() -> dict[str, str]:
        time.sleep(BLOCK)  # offloaded: the loop serves others meanwhile
        return {"ok": "yes"}

    guard = bl.activate("offload", watchdog=0.1)
    try:
        with serve(app, server) as client:
            assert client.get("/sleep").json() == {"ok": "yes"}
            took = client.get("/cpu/3").json()["took"]
            ORIGINAL_SLEEP(0.1)
            found = stalls_of(guard)
            calls = [v for v in guard.violations if v.kind == "call"]
    finally:
        bl.deactivate()
    (stall,) = found
    assert stall.function == "spin"
    assert stall.context == {"method": "GET", "path": "/cpu/3", "route": "/cpu/{n}"}
    assert_close(stall.duration_s, took)
    assert [(v.call, v.action) for v in calls] == [("time.sleep", bl.Mode.OFFLOAD)]
