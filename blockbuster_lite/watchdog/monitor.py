"""The process's one monitor thread: it samples every watched loop's thread and turns long turns
into stalls (see the package docstring for how)."""

from __future__ import annotations

import _thread
import asyncio
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from ..core.config import Mode
from ..core.policy import INTERNAL, code_info
from ..core.report import Violation, capture_frames
from ..core.state import state
from .loops import LoopWatch, Sample, Watcher, cpu_bound_start, running_here
from .reporting import STALL_ADVICE, emit, log_failure
from .stacks import (
    TaskInfo,
    call_name,
    callback_frames,
    excluded_by_guard,
    loops_on_stack,
    running_task,
    site_index,
    task_boundary_asyncio,
)

if TYPE_CHECKING:
    from ..core.state import ActiveGuard

__all__ = ["Monitor"]

#: How often threads are scanned for loops that started after the guard.
DISCOVERY_INTERVAL = 0.5
#: A loop that stays stopped this long is forgotten (found again if it runs again).
IDLE_FORGET = 30.0

_perf = time.perf_counter
#: A stall seen inside these modules is a checked call: the catalogue reported it already.
_CHECKED_CALL_MODULES = frozenset(
    {"blockbuster_lite.core.hotpath", "blockbuster_lite.core.actions"}
)


def _sampled_interval(threshold: float) -> float:
    return min(max(threshold / 3, 0.005), 0.25)


def _busy_interval(threshold: float) -> float:
    return min(max(threshold / 10, 0.005), 0.1)



class Monitor:
    """The process's one watchdog thread and the loops it watches."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.handles: list[Watcher] = []
        self.watches: dict[int, LoopWatch] = {}
        # _thread's own locks: the catalogue's checked locks would cost a Python call per use.
        self.lock = _thread.RLock()  # watches, stall processing
        # Held while the thread sleeps; release() wakes it. Cheaper per wake-up than an Event.
        self.bell = _thread.allocate_lock()
        self.bell.acquire()
        self.stopping = False
        self.next_discovery = 0.0
        self.next_pool_sample = 0.0
        self.pools_in_use = False
        #: Asleep until the next scan for loops; a hooked loop that starts a turn wakes it.
        self.dormant = False
        self.groups: dict[tuple[str, str, str], int] = {}
        self.recent_calls: dict[tuple[str, int], float] = {}
        self.thread = threading.Thread(
            target=self._run, name="blockbuster_lite.watchdog", daemon=True
        )

    def set_threshold(self, threshold: float) -> None:
        with self.lock:
            self.threshold = threshold
            for watch in self.watches.values():
                watch.threshold = threshold

    def note_violation(self, violation: Violation) -> None:
        """Observer: where the catalogue reported a call, so the stall it caused is not doubled."""
        if violation.kind == "call":
            self.recent_calls[(violation.filename, violation.lineno)] = _perf()

    # -- finding loops ------------------------------------------------------------------------
    def watch_current_thread(self) -> None:
        """Watch the loop running on this thread, if any (a guard started inside async code)."""
        loop = asyncio._get_running_loop()
        if loop is not None:
            watch = self._add(
                loop, "asyncio", threading.get_ident(), task_boundary_asyncio(loop), True
            )
        else:
            from ..core.loop import trio_state

            run_context = trio_state.run_context
            runner = run_context.__dict__.get("runner") if run_context is not None else None
            if runner is None:
                return
            watch = self._add(runner, "trio", threading.get_ident(), None, True)
        if watch is not None:
            # The callback running now may be the one that stalls: time it from here.
            watch.turn_start = _perf()
            if not watch.hooked:
                watch.free_at = watch.busy_at = watch.turn_start
                watch.free_cpu = watch.busy_cpu = time.thread_time()

    def _add(
        self, target: Any, kind: str, thread_id: int | None, boundary: CodeType | None, here: bool
    ) -> LoopWatch | None:
        with self.lock:
            known = self.watches.get(id(target))
            if known is not None and known.target is target and not known.closed():
                return None
            watch = LoopWatch(target, kind, thread_id, boundary)
            watch.threshold = self.threshold
            watch.monitor = self
            if not watch.install(here):
                return None
            if known is not None:
                known.stop()
            self.watches[id(target)] = watch
            return watch

    def discover(self, frames: Mapping[int, FrameType]) -> None:
        running = {w.thread_id for w in self.watches.values() if w.running()}
        own = threading.get_ident()
        for thread_id, top in frames.items():
            if thread_id != own and thread_id not in running:
                for target, kind, boundary in loops_on_stack(top):
                    self._add(target, kind, thread_id, boundary, False)

    # -- the thread -----------------------------------------------------------------------------
    def start(self) -> None:
        state.observers = (*state.observers, self.note_violation)
        self.thread.start()

    def ring(self) -> None:
        """Wake the thread now (a loop started a turn, a new loop to watch, or stop)."""
        # (Also called on a loop thread as a turn starts: plain try beats contextlib.suppress.)
        try:  # noqa: SIM105
            self.bell.release()
        except RuntimeError:  # already rung
            pass

    def stop(self) -> None:
        self.stopping = True
        self.ring()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)
        state.observers = tuple(o for o in state.observers if o != self.note_violation)

    def unhook_all(self) -> None:
        with self.lock:
            for watch in self.watches.values():
                watch.stop()
            self.watches.clear()

    def _run(self) -> None:
        while not self.stopping:
            start = _perf()
            try:
                interval = self.tick(start)
            except Exception as exc:  # the watchdog never takes the program down
                log_failure(exc)
                interval = 1.0
            self.bell.acquire(timeout=interval)

    def tick(self, now: float) -> float:
        """One round: report finished stalls, sample busy loops; returns the next interval.

        With every hooked loop waiting in its poll and no thread pool in use there is nothing to
        look at until a loop starts a turn: the thread then sleeps until the next scan for loops
        (``dormant``), and the first loop to leave its poll wakes it.
        """
        frames: dict[int, FrameType] | None = None
        with self.lock:
            self.dormant = True  # before reading the loops: a turn that starts later rings
            if now >= self.next_discovery:
                frames = sys._current_frames()
                self.discover(frames)
                self.next_discovery = now + DISCOVERY_INTERVAL
            interval = self.next_discovery - now
            if self.watches:
                interval = min(interval, self._sample_pools(now))
            for key, watch in list(self.watches.items()):
                # Read before reporting: the loop queues a long turn's gap before it polls.
                polling, start = watch.polling, watch.turn_start
                if not watch.hooked:  # no hook to wake us: look at it regularly
                    self.dormant = False
                    interval = min(interval, _sampled_interval(self.threshold))
                    self._settle_beat(watch)
                self._report_gaps(watch)
                if not watch.running():
                    if watch.kind == "asyncio":  # it may run again: its next turn is not a stall
                        self._report_gaps(watch)  # (a last one may have come in meanwhile)
                        watch.paused = True
                        if not watch.hooked:
                            watch.turn_start = watch.free_at = watch.busy_at = None
                        self._forget_samples(watch)
                    # A trio run shutting down still times its last turn: keep what we saw.
                    if watch.stopped_since is None:
                        watch.stopped_since = now
                    if watch.closed() or now - watch.stopped_since > IDLE_FORGET:
                        watch.stop()
                        del self.watches[key]
                    continue
                watch.stopped_since = None
                if watch.thread_id is None:
                    continue
                if watch.hooked:
                    if polling or start is None:
                        self._forget_samples(watch)
                        continue
                    self.dormant = False
                    wait = start + self.threshold / 2 - now
                    if wait > 0:  # too young to matter yet: look again when it could
                        self._forget_samples(watch)
                        interval = min(interval, wait)
                        continue
                if frames is None:
                    frames = sys._current_frames()
                top = frames.get(watch.thread_id)
                if top is None:
                    continue
                callback = callback_frames(top, watch.boundary)
                if not watch.hooked:
                    if not self._track(watch, not callback, now):
                        continue
                    # A busy loop is busy at most looks: read its stack only once a turn
                    # could become a stall, and look again no sooner than a stall could
                    # still be running (our beat tells us meanwhile whether the turn ended).
                    wait = (watch.turn_start or now) + self.threshold / 4 - now
                    if wait > 0:
                        interval = min(interval, max(wait, self.threshold / 4))
                        continue
                watch.samples.append(self._sample(watch, callback, now))
                interval = min(interval, _busy_interval(self.threshold))
        return interval

    def _sample_pools(self, now: float) -> float:
        """Check the watched loops' thread pools for saturation; returns when to look again.

        A pool fills up only while its loop hands it work, and a loop does that in a turn, which
        wakes the monitor: idle pools need no timer (``inf``), pools in use one every
        ``_pools``' interval.
        """
        if now < self.next_pool_sample:
            return self.next_pool_sample - now if self.pools_in_use else float("inf")
        from ..offload import pools as _pools

        in_use = False
        for pools in list(_pools._known):
            stats = pools.statistics()
            episode = getattr(pools, "_waiting_since", None)  # its saturation bookkeeping
            if episode is None or any(s.waiting for s in stats) or any(episode.values()):
                pools.sample()
            in_use = in_use or any(s.busy or s.waiting for s in stats)
        every: float = _pools._interval()
        self.next_pool_sample = now + every
        self.pools_in_use = in_use
        if not in_use:
            return float("inf")
        self.dormant = False
        return every

    def _forget_samples(self, watch: LoopWatch) -> None:
        if watch.samples or watch.task is not None:
            watch.samples.clear()
            watch.task = None

    def _settle_beat(self, watch: LoopWatch) -> None:
        """A sampled loop ran our beat: the turn we saw busy is over; was it a stall?"""
        ran = watch.beat_ran
        if ran is None:
            return
        watch.beat_ran = None
        watch.beat_posted = False
        start = watch.turn_start
        if start is not None:
            start = cpu_bound_start(watch, ran) or start
            if ran - start >= self.threshold:
                watch.gaps.append((start, ran))
        watch.turn_start = watch.busy_at = watch.busy_cpu = None
        watch.free_at, watch.free_cpu = ran, watch.beat_cpu

    def _track(self, watch: LoopWatch, idle: bool, now: float) -> bool:
        """Follow a sampled loop; True when it is busy in a turn (a callback is running)."""
        if idle:
            if not watch.beat_posted:
                watch.free_at, watch.free_cpu = now, watch.thread_cpu()
                watch.turn_start = watch.busy_at = watch.busy_cpu = None
                self._forget_samples(watch)
            return False
        if watch.turn_start is None:
            # Started at some point since the loop was last seen free: take the middle (a
            # CPU-bound turn is dated more precisely by the loop thread's CPU time when it ends).
            free_at = watch.free_at if watch.free_at is not None else now
            watch.turn_start = (free_at + now) / 2
            watch.busy_at, watch.busy_cpu = now, watch.thread_cpu()
        if not watch.beat_posted:
            try:
                watch.target.call_soon_threadsafe(watch.beat)
                watch.beat_posted = True
            except RuntimeError:  # closed
                watch.ended = True
                return False
        return True

    # -- samples ----------------------------------------------------------------------------------
    def _sample(self, watch: LoopWatch, frames: list[FrameType], now: float) -> Sample:
        if not frames:
            return Sample(now, idle=True)
        infos = [code_info(frame) for frame in frames]
        index = site_index(infos)
        frame, info = frames[index], infos[index]
        if watch.task is None:
            watch.task = running_task(watch.kind, watch.target, frames)
        return Sample(
            time=now,
            idle=False,
            filename=info.filename,
            lineno=frame.f_lineno,
            function=info.qualname,
            module=info.module,
            call=call_name(frames, infos, index),
            stack=capture_frames(frame),
            catalogue=any(i.kind == INTERNAL and i.module in _CHECKED_CALL_MODULES for i in infos),
            excluded=watch.task.exempt or excluded_by_guard(infos),
        )

    # -- stalls -----------------------------------------------------------------------------------
    def _report_gaps(self, watch: LoopWatch, extra: ActiveGuard | None = None) -> None:
        while watch.gaps:
            start, end = watch.gaps.popleft()
            busy = [s for s in watch.samples if start <= s.time <= end and not s.idle]
            self._stall(watch, start, end, busy, extra)

    def _stall(
        self, watch: LoopWatch, start: float, end: float, busy: list[Sample], extra: ActiveGuard | None
    ) -> None:
        duration = end - start
        if duration < self.threshold or not busy:
            return
        votes = Counter(s.group for s in busy)
        best = max(votes.values())
        chosen = next(s for s in reversed(busy) if votes[s.group] == best)
        if chosen.catalogue or chosen.excluded:
            return
        seen = self.recent_calls.get((chosen.filename, chosen.lineno))
        if seen is not None and start <= seen <= end + self.threshold:
            return
        lineno = self.groups.setdefault(chosen.group, chosen.lineno)
        task = watch.task or TaskInfo()
        violation = Violation(
            call=chosen.call,
            filename=chosen.filename,
            lineno=lineno,
            function=chosen.function,
            stack=chosen.stack,
            action=Mode.WARN,
            thread_name=watch.thread_name,
            task_name=task.name,
            duration_s=duration,
            context=dict(task.request),
            advice=STALL_ADVICE,
            kind="stall",
        )
        emit(violation, chosen.module, task.context, extra)

    def flush(self, guard: ActiveGuard) -> None:
        """Report what is pending for a guard that stops (the monitor may be gone already)."""
        with self.lock:
            for watch in list(self.watches.values()):
                # Stopping from inside the loop: the turn running now may be the stall, and it
                # cannot end while we are in it.
                inside = running_here(watch) and watch.turn_start is not None
                if not watch.hooked:
                    if inside and watch.beat_ran is None:
                        watch.beat_cpu, watch.beat_ran = time.thread_time(), _perf()
                    self._settle_beat(watch)
                elif inside and not watch.polling:
                    start, now = watch.turn_start, _perf()
                    if start is not None and now - start >= self.threshold:
                        watch.gaps.append((start, now))
                        watch.turn_start = now
                self._report_gaps(watch, guard)


