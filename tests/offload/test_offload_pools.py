"""The offload pool's capacity and occupancy, and saturation warnings for both thread pools."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import anyio
import anyio.to_thread
import pytest

import blockbuster_lite as bl
from blockbuster_lite import offload
from blockbuster_lite.offload import settings as _offload_settings


@pytest.fixture(autouse=True)
def fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_offload_settings, "_settings", _offload_settings._Settings())
    for name in (offload.ENV_OFFLOAD_THREADS, offload.ENV_SATURATION_MS):
        monkeypatch.delenv(name, raising=False)
    yield


def by_name(stats: tuple[offload.PoolStatistics, ...]) -> dict[str, offload.PoolStatistics]:
    return {s.name: s for s in stats}


def test_dedicated_capacity_occupancy_and_saturation(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="blockbuster_lite")
    offload.set_capacity(2)
    seen: dict[str, object] = {}

    async def sleeper() -> None:
        time.sleep(0.3)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(sleeper)
            await anyio.sleep(0.1)
            seen["loop"] = by_name(offload.pool_statistics())
            from_thread: list[tuple[offload.PoolStatistics, ...]] = []
            reader = threading.Thread(target=lambda: from_thread.append(offload.pool_statistics()))
            reader.start()
            reader.join()
            seen["thread"] = by_name(from_thread[0])

    start = time.perf_counter()
    with bl.intercept("offload"):
        asyncio.run(offload.with_portal(main)())
    wall = time.perf_counter() - start

    stats = seen["loop"]
    assert isinstance(stats, dict)
    pool = stats["offload"]
    assert (pool.capacity, pool.busy, pool.waiting) == (2, 2, 4)
    assert pool.saturated
    assert stats["anyio default"].busy == 0  # FastAPI's pool is left alone
    assert seen["thread"] == stats  # the same numbers, read from another thread
    assert wall >= 0.85  # 6 calls of 0.3 s, 2 at a time
    saturated = [r.getMessage() for r in caplog.records if "pool saturated" in r.getMessage()]
    assert len(saturated) == 1, saturated  # one warning per episode
    assert "offload pool 2/2 busy" in saturated[0]
    assert "waiting" in saturated[0] and "BLOCKBUSTER_LITE_OFFLOAD_THREADS" in saturated[0]
    assert offload.saturation_counts()["offload"] >= 1


def test_anyio_default_pool_saturation_is_sampled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="blockbuster_lite")

    async def main() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(anyio.to_thread.run_sync, time.sleep, 0.25)

    with bl.intercept("offload"):
        asyncio.run(offload.with_portal(main)())
    saturated = [r.getMessage() for r in caplog.records if "pool saturated" in r.getMessage()]
    assert saturated
    assert "anyio default pool 1/1 busy" in saturated[0]
    assert "run_in_threadpool" in saturated[0]


def test_no_warning_when_the_pool_keeps_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="blockbuster_lite")

    async def sleeper() -> None:
        time.sleep(0.2)

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(sleeper)

    with bl.intercept("offload"):
        asyncio.run(offload.with_portal(main)())
    assert not [r for r in caplog.records if "pool saturated" in r.getMessage()]


def test_capacity_change_reaches_a_running_loop() -> None:
    async def main() -> tuple[float, float]:
        time.sleep(0)  # not blocking: nothing offloaded
        time.sleep(0.01)
        before = by_name(offload.pool_statistics())["offload"].capacity
        offload.set_capacity(3)
        time.sleep(0.01)
        return before, by_name(offload.pool_statistics())["offload"].capacity

    with bl.intercept("offload"):
        before, after = asyncio.run(offload.with_portal(main)())
    assert (before, after) == (offload.DEFAULT_OFFLOAD_THREADS, 3)


def test_statistics_outside_any_loop_is_a_tuple() -> None:
    stats = offload.pool_statistics()
    assert isinstance(stats, tuple)
    assert all(isinstance(s, offload.PoolStatistics) for s in stats)
