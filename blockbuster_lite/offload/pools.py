"""Thread pools: occupancy of the offload pool and of anyio's default pool, and saturation warnings.

A service can freeze without a single blocking call on the loop: when every worker thread of a pool
is busy, new work queues up and its requests hang. Two pools matter here:

- ``offload``: blockbuster_lite's own limiter for calls moved off the loop in offload mode
  (``BLOCKBUSTER_LITE_OFFLOAD_THREADS``, default 40, one limiter per event loop). It is separate
  from anyio's default limiter, so offloaded calls cannot starve FastAPI's sync endpoints.
- ``offload files``: a narrower lane of it for bulk reads and writes on files opened by an
  offloaded ``open()`` (``BLOCKBUSTER_LITE_OFFLOAD_FILE_THREADS``, default: the CPU count, 2 to 8).
  Reading page-cached files is memory-bound: more threads do not make it faster, and twenty
  parallel 64 MiB reads on two cores stalled the loop thread for 400 ms (mmap lock and CPU
  contention), against 10-20 ms with two to four. It is a throttle, so waiting there is not
  reported as saturation.
- ``anyio default``: the limiter that ``anyio.to_thread.run_sync`` uses by default, and so
  FastAPI/Starlette for sync endpoints, sync dependencies and ``run_in_threadpool`` (40 tokens
  unless the app changed ``total_tokens``).

A pool is reported saturated (a WARNING on the ``blockbuster_lite`` logger, with its size and queue
length) when an offloaded call waited longer than the threshold for a worker
(``BLOCKBUSTER_LITE_SATURATION_MS``, default 100 ms), or when a pool has had work waiting at every
sample over at least the threshold. Waiting time in anyio's pool cannot be seen per call, so a
monitor on each event loop samples both limiters every half threshold (a timer on asyncio, a system
task on trio); it runs while a guard is active and is started by the first offloaded call or
portal on that loop. One warning per pool per episode: the next comes after the queue has drained.
"""

from __future__ import annotations

import _thread
import contextlib
import math
import time
import weakref
from asyncio import _get_running_loop
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core.loop import current_library
from ..core.report import logger
from ..core.state import state
from .settings import (
    file_capacity,
    offload_capacity,
    saturation_threshold,
)

__all__ = (
    "PoolStatistics",
    "ensure_pool_monitor",
    "pool_statistics",
    "saturation_counts",
)

OFFLOAD = "offload"
FILES = "offload files"
ANYIO_DEFAULT = "anyio default"

_HINTS = {
    OFFLOAD: (
        "raise BLOCKBUSTER_LITE_OFFLOAD_THREADS / blockbuster_lite.offload.set_capacity(), "
        "or make the blocking calls async"
    ),
    ANYIO_DEFAULT: (
        "this pool runs FastAPI/Starlette sync endpoints and dependencies, run_in_threadpool and "
        "anyio.to_thread.run_sync; raise anyio.to_thread.current_default_thread_limiter()"
        ".total_tokens, or make the slow sync code async"
    ),
}


@dataclass(frozen=True)
class PoolStatistics:
    """One thread pool of one event loop at one moment."""

    name: str  # "offload", "offload files" or "anyio default"
    capacity: float  # worker threads the pool may use at once (its limiter's total tokens)
    busy: int  # tokens borrowed: calls running (an abandoned, cancelled call gives its token back)
    waiting: int  # calls queued for a worker

    @property
    def saturated(self) -> bool:
        return self.waiting > 0 and self.busy >= self.capacity

    def describe(self) -> str:
        capacity = int(self.capacity) if math.isfinite(self.capacity) else self.capacity
        return f"{self.name} pool {self.busy}/{capacity} busy, {self.waiting} waiting"


# --- per-loop state ---------------------------------------------------------------------------


def _read(name: str, limiter: Any) -> PoolStatistics:
    # From another thread the limiter may change while read; a torn read is retried, not raised.
    for _ in range(3):
        try:
            stats = limiter.statistics()
            return PoolStatistics(
                name, float(stats.total_tokens), int(stats.borrowed_tokens), stats.tasks_waiting
            )
        except RuntimeError:
            continue
    return PoolStatistics(name, float(limiter.total_tokens), int(limiter.borrowed_tokens), 0)


class LoopPools:
    """The offload limiter, anyio's default limiter, and saturation episodes of one event loop."""

    def __init__(
        self, library: str, offload_limiter: Any, file_limiter: Any, default_limiter: Any
    ) -> None:
        self.library = library
        self.offload_limiter = offload_limiter
        self.file_limiter = file_limiter
        self.default_limiter = default_limiter
        self._lock = _thread.allocate_lock()  # never patched: worker threads report waits too
        self._waiting_since: dict[str, float | None] = {OFFLOAD: None, ANYIO_DEFAULT: None}
        self._warned: dict[str, bool] = {OFFLOAD: False, ANYIO_DEFAULT: False}
        self.monitoring = False
        self.is_alive: Callable[[], bool] = lambda: True

    def statistics(self) -> tuple[PoolStatistics, ...]:
        return (
            _read(OFFLOAD, self.offload_limiter),
            _read(FILES, self.file_limiter),
            _read(ANYIO_DEFAULT, self.default_limiter),
        )

    def sync_capacity(self) -> None:
        """Apply changed capacities; on the loop thread (a limiter wakes its waiters)."""
        for limiter, capacity in (
            (self.offload_limiter, offload_capacity()),
            (self.file_limiter, file_capacity()),
        ):
            if limiter.total_tokens != capacity:
                limiter.total_tokens = capacity

    # -- detection -----------------------------------------------------------------------------
    def note_wait(self, waited: float) -> None:
        """An offloaded call started after waiting ``waited`` seconds (called in the worker)."""
        if waited < saturation_threshold():
            return
        stats = _read(OFFLOAD, self.offload_limiter)
        if stats.busy >= stats.capacity or stats.waiting:
            self._saturated(
                stats, f"an offloaded call waited {waited * 1000:.0f} ms for a worker thread"
            )

    def sample(self, now: float | None = None) -> None:
        """Check both pools once: work waiting at every sample for >= the threshold is reported."""
        now = time.monotonic() if now is None else now
        threshold = saturation_threshold()
        for stats in self.statistics():
            if stats.name not in self._warned:  # the file lane is a throttle: waiting is normal
                continue
            with self._lock:
                if not stats.waiting:
                    self._waiting_since[stats.name] = None
                    self._warned[stats.name] = False
                    continue
                since = self._waiting_since[stats.name]
                if since is None:
                    self._waiting_since[stats.name] = now
                    continue
            if now - since >= threshold:
                self._saturated(
                    stats, f"work has waited for a worker thread for {(now - since) * 1000:.0f} ms"
                )

    def _saturated(self, stats: PoolStatistics, detail: str) -> None:
        with self._lock:
            if self._warned[stats.name]:
                return
            self._warned[stats.name] = True
        with _saturations_lock:
            _saturations[stats.name] += 1
        logger.warning(
            "blockbuster_lite: thread pool saturated: %s; %s; %s",
            stats.describe(),
            detail,
            _HINTS[stats.name],
        )

    # -- the monitor ---------------------------------------------------------------------------
    def ensure_monitor(self) -> None:
        """Start sampling on this loop (called on its thread, in a task) unless already running."""
        if self.monitoring or not state.guards:
            return
        self.monitoring = True
        try:
            if self.library == "trio":
                import trio

                trio.lowlevel.spawn_system_task(self._trio_monitor, name="blockbuster_lite pools")
            else:
                import asyncio

                loop = asyncio.get_running_loop()
                loop.call_later(_interval(), self._tick, loop)
        except Exception:
            self.monitoring = False
            logger.exception("blockbuster_lite: could not start the thread-pool monitor")

    def _tick(self, loop: Any) -> None:
        # A timer, not a task: a loop closed while it is pending drops it without a warning.
        if not state.guards:
            self.monitoring = False
            return
        try:
            self.sample()
        except Exception:
            self.monitoring = False
            logger.exception("blockbuster_lite: the thread-pool monitor failed and stopped")
            return
        loop.call_later(_interval(), self._tick, loop)

    async def _trio_monitor(self) -> None:
        import trio

        try:
            while state.guards:
                await trio.sleep(_interval())
                self.sample()
        finally:
            self.monitoring = False


def _interval() -> float:
    return min(max(saturation_threshold() / 2, 0.01), 1.0)


_known: weakref.WeakSet[LoopPools] = weakref.WeakSet()
_saturations: dict[str, int] = {OFFLOAD: 0, ANYIO_DEFAULT: 0}
_saturations_lock = _thread.allocate_lock()
_pools_var: Any = None  # an anyio RunVar, made on first use


#: asyncio (and uvloop) loops -> their pools: found without anyio's RunVar (which asks sniffio
#: and anyio's backend first, ~2 us on every offloaded call).
_by_loop: weakref.WeakKeyDictionary[Any, LoopPools] = weakref.WeakKeyDictionary()


def pools_here() -> LoopPools:
    """This event loop's pools; call on the loop thread, inside a task."""
    loop = _get_running_loop()
    if loop is not None:
        found = _by_loop.get(loop)
        if found is not None:
            return found
    pools = _pools_from_run_var()
    if loop is not None:
        with contextlib.suppress(TypeError):  # a loop that takes no weak references
            _by_loop[loop] = pools
    return pools


def _pools_from_run_var() -> LoopPools:
    global _pools_var
    if _pools_var is None:
        from anyio.lowlevel import RunVar

        _pools_var = RunVar("blockbuster_lite.pools")
    pools: LoopPools | None = _pools_var.get(None)
    if pools is None:
        import anyio
        import anyio.to_thread

        library = current_library() or "asyncio"
        # asyncio: one future per call (lanes.py); trio, and the bulk file lane (a throttle for
        # transfers whose cost dwarfs a thread hop), keep anyio's limiters and worker threads
        offload_limiter: Any
        if library == "asyncio":
            from .lanes import ThreadLane

            offload_limiter = ThreadLane(offload_capacity(), OFFLOAD)
        else:
            offload_limiter = anyio.CapacityLimiter(offload_capacity())
        file_limiter = anyio.CapacityLimiter(file_capacity())
        pools = LoopPools(
            library,
            offload_limiter,
            file_limiter,
            anyio.to_thread.current_default_thread_limiter(),
        )
        pools.is_alive = _run_liveness()
        _pools_var.set(pools)
        _known.add(pools)
    return pools


def _run_liveness() -> Callable[[], bool]:
    """A check, usable from any thread, that the current loop (or trio run) is still running."""
    if current_library() == "trio":
        import trio

        root = trio.lowlevel.current_root_task()
        return lambda: root is not None and root.coro.cr_frame is not None
    import asyncio

    loop_ref = weakref.ref(asyncio.get_running_loop())

    def alive() -> bool:
        loop = loop_ref()
        return loop is not None and loop.is_running()

    return alive


def ensure_pool_monitor() -> LoopPools:
    """Make sure this loop's pools are sampled; call on the loop thread, inside a task."""
    pools = pools_here()
    pools.ensure_monitor()
    return pools


def _in_task() -> bool:
    try:
        import sniffio

        sniffio.current_async_library()
    except Exception:
        return False
    return True


def pool_statistics() -> tuple[PoolStatistics, ...]:
    """Occupancy of the offload pool and of anyio's default pool (FastAPI's thread pool).

    Inside a task on an event-loop thread: this loop's pools (``offload``, ``offload files``,
    ``anyio default``). Anywhere else (a watchdog thread, a sync endpoint): the pools of every loop
    that has used offload mode, read across threads, three per loop. Empty when there are none.
    """
    if current_library() is not None and _in_task():
        return pools_here().statistics()
    return tuple(
        stats for pools in list(_known) if pools.is_alive() for stats in pools.statistics()
    )


def saturation_counts() -> dict[str, int]:
    """How many saturation episodes were reported per pool since the process started."""
    with _saturations_lock:
        return dict(_saturations)
