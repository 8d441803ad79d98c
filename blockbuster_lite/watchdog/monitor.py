"""The process's one monitor thread: it learns of loops from the run hooks, samples their
threads while a turn could become a stall, and turns long turns into stalls (see the package
docstring for how)."""

from __future__ import annotations

import _thread
import asyncio
import sys
import threading
import time
from collections.abc import Mapping
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from ..core.state import state
from .hooks import hooked_kinds
from .hooks import install as install_hooks
from .hooks import uninstall as uninstall_hooks
from .loops import LoopWatch, Watcher, running_here
from .reporting import log_failure
from .sampler import busy_interval, forget_samples, sample, sampled_interval, settle_beat, track
from .stacks import callback_frames, loops_on_stack, task_boundary_asyncio
from .stalls import StallBook

if TYPE_CHECKING:
    from ..core.state import ActiveGuard

__all__ = ["DISCOVERY_INTERVAL", "Monitor"]

#: How often threads are scanned for loops when a loop family has no run hook (a trio release
#: without ``setup_runner``); with every hook in place the scan runs once, at start.
DISCOVERY_INTERVAL = 0.5
#: Longest sleep with nothing to look at (the thread is woken by a loop that starts a turn).
_IDLE_SLEEP = 60.0

_perf = time.perf_counter


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
        self.next_discovery = 0.0  # the first tick scans for loops already running
        self.next_pool_sample = 0.0
        self.pools_in_use = False
        #: Asleep with nothing to look at; a hooked loop that starts a turn wakes it.
        self.dormant = False
        self.book = StallBook()
        self.thread = threading.Thread(
            target=self._run, name="blockbuster_lite.watchdog", daemon=True
        )

    def set_threshold(self, threshold: float) -> None:
        with self.lock:
            self.threshold = threshold
            for watch in self.watches.values():
                watch.threshold = threshold

    # -- finding loops ------------------------------------------------------------------------
    def loop_started(self, target: Any, kind: str) -> None:
        """Run hook, on the loop thread before its first callback: watch it from now."""
        if self.stopping:
            return
        with self.lock:
            known = self.watches.get(id(target))
            if known is not None and known.target is target and not known.closed():
                # Found by the scan, and now run again: what it did before it stopped is
                # told now, its next turn starts at its next poll (the time it was stopped is
                # no stall), and its stop will be reported.
                if not known.hooked:
                    settle_beat(known, self.threshold)
                self.book.report_gaps(known, self.threshold)
                known.notified = True
                known.turn_start = None
                known.polling = False
                if not known.hooked:
                    known.free_at, known.free_cpu = _perf(), time.thread_time()
                    known.busy_at = known.busy_cpu = None
                forget_samples(known)
                return
        watch = self._add(target, kind, threading.get_ident(), None, "start")
        if watch is None:
            return
        watch.notified = True
        if not watch.hooked:  # sampled: idle until the monitor sees it in a callback
            watch.free_at = _perf()
            watch.free_cpu = time.thread_time()
            self.ring()  # a hooked loop rings itself when it starts a turn

    def loop_stopped(self, target: Any) -> None:
        """Run hook, on the loop thread once it stopped: end its last turn, report, forget it."""
        with self.lock:
            watch = self.watches.get(id(target))
            if watch is None or watch.target is not target:
                return
            self._end_turn(watch, _perf())
            self.book.report_gaps(watch, self.threshold)
            watch.ended = True
            watch.stop()
            forget_samples(watch)
            del self.watches[id(target)]

    def _end_turn(self, watch: LoopWatch, now: float) -> None:
        """On the loop thread: the turn running now ends here (the loop stops, or a guard)."""
        if not watch.hooked:
            if watch.turn_start is not None and watch.beat_ran is None:
                watch.beat_cpu, watch.beat_ran = time.thread_time(), now
            settle_beat(watch, self.threshold)
        elif not watch.polling:
            start = watch.turn_start
            if start is not None and now - start >= self.threshold:
                watch.gaps.append((start, now))
            watch.turn_start = now

    def watch_current_thread(self) -> None:
        """Watch the loop running on this thread, if any (a guard started inside async code)."""
        loop = asyncio._get_running_loop()
        if loop is not None:
            watch = self._add(
                loop, "asyncio", threading.get_ident(), task_boundary_asyncio(loop), "here"
            )
        else:
            from ..core.loop import trio_state

            run_context = trio_state.run_context
            runner = run_context.__dict__.get("runner") if run_context is not None else None
            if runner is None:
                return
            watch = self._add(runner, "trio", threading.get_ident(), None, "here")
        if watch is not None:
            # The callback running now may be the one that stalls: time it from here.
            watch.turn_start = _perf()
            if not watch.hooked:
                watch.free_at = watch.busy_at = watch.turn_start
                watch.free_cpu = watch.busy_cpu = time.thread_time()

    def _add(
        self, target: Any, kind: str, thread_id: int | None, boundary: CodeType | None, where: str
    ) -> LoopWatch | None:
        with self.lock:
            known = self.watches.get(id(target))
            if known is not None and known.target is target and not known.closed():
                return None
            watch = LoopWatch(target, kind, thread_id, boundary)
            watch.threshold = self.threshold
            watch.monitor = self
            if not watch.install(where):
                return None
            if known is not None:
                known.stop()
            self.watches[id(target)] = watch
            return watch

    def discover(self, frames: Mapping[int, FrameType]) -> None:
        """Watch the loops other threads are running (once at start: they began before us)."""
        running = {w.thread_id for w in self.watches.values() if w.running()}
        own = threading.get_ident()
        for thread_id, top in frames.items():
            if thread_id != own and thread_id not in running:
                for target, kind, boundary in loops_on_stack(top):
                    self._add(target, kind, thread_id, boundary, "other")

    # -- the thread -----------------------------------------------------------------------------
    def start(self) -> None:
        state.observers = (*state.observers, self.book.note_violation)
        install_hooks(self)
        self.thread.start()

    def ring(self) -> None:
        """Wake the thread now (a loop started a turn, a new loop to watch, or stop)."""
        # (Also called on a loop thread as a turn starts: plain try beats contextlib.suppress.)
        try:  # noqa: SIM105
            self.bell.release()
        except RuntimeError:  # already rung
            pass

    def stop(self) -> None:
        uninstall_hooks()
        self.stopping = True
        self.ring()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)
        state.observers = tuple(o for o in state.observers if o != self.book.note_violation)

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
            self.bell.acquire(timeout=min(interval, _IDLE_SLEEP))

    def tick(self, now: float) -> float:
        """One round: report finished stalls, sample busy loops; returns the next interval.

        With every hooked loop waiting in its poll and no thread pool in use there is nothing to
        look at until a loop starts a turn: the thread then sleeps (``dormant``), and the first
        loop to leave its poll wakes it.
        """
        frames: dict[int, FrameType] | None = None
        with self.lock:
            self.dormant = True  # before reading the loops: a turn that starts later rings
            interval = _IDLE_SLEEP
            if now >= self.next_discovery:
                frames = sys._current_frames()
                self.discover(frames)
                self.next_discovery = (
                    now + DISCOVERY_INTERVAL
                    if not _needed() <= hooked_kinds()
                    else float("inf")
                )
                interval = min(interval, self.next_discovery - now)
            if self.watches:
                interval = min(interval, self._sample_pools(now))
            for key, watch in list(self.watches.items()):
                # Read before reporting: the loop queues a long turn's gap before it polls.
                polling, start = watch.polling, watch.turn_start
                if not watch.hooked:  # no hook to wake us: look at it regularly
                    self.dormant = False
                    interval = min(interval, sampled_interval(self.threshold))
                    settle_beat(watch, self.threshold)
                self.book.report_gaps(watch, self.threshold)
                if not watch.running():  # a loop found by the scan, which no hook reports
                    watch.stop()
                    forget_samples(watch)
                    del self.watches[key]
                    continue
                if watch.thread_id is None:
                    continue
                if watch.hooked:
                    if polling or start is None:
                        forget_samples(watch)
                        continue
                    self.dormant = False
                    wait = start + self.threshold / 2 - now
                    if wait > 0:  # too young to matter yet: look again when it could
                        forget_samples(watch)
                        interval = min(interval, wait)
                        continue
                if frames is None:
                    frames = sys._current_frames()
                top = frames.get(watch.thread_id)
                if top is None:
                    continue
                in_turn = watch.hooked or watch.notified
                callback = callback_frames(top, watch.boundary, in_turn)
                if not watch.hooked:
                    if not track(watch, not callback, now):
                        continue
                    # A busy loop is busy at most looks: read its stack only once a turn
                    # could become a stall, and look again no sooner than a stall could
                    # still be running (our beat tells us meanwhile whether the turn ended).
                    wait = (watch.turn_start or now) + self.threshold / 4 - now
                    if wait > 0:
                        interval = min(interval, max(wait, self.threshold / 4))
                        continue
                watch.samples.append(sample(watch, callback, now))
                interval = min(interval, busy_interval(self.threshold))
        return interval

    def _sample_pools(self, now: float) -> float:
        """Check the watched loops' thread pools for saturation; returns when to look again.

        A pool fills up only while its loop hands it work, and a loop does that in a turn, which
        wakes the monitor: idle pools need no timer (``inf``), pools in use one every
        ``_pools``' interval. A wake-up before the next sample is due (a turn, which may have
        handed out work) keeps that sample.
        """
        if now < self.next_pool_sample:
            return self.next_pool_sample - now
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

    # -- stalls -----------------------------------------------------------------------------------
    def flush(self, guard: ActiveGuard | None = None) -> None:
        """Report what is pending now, on the calling thread: for a guard that stops (the
        monitor may be gone already), or a test phase that ends (the pytest plugin)."""
        with self.lock:
            for watch in list(self.watches.values()):
                if guard is not None and running_here(watch) and watch.turn_start is not None:
                    # Stopping from inside the loop: the turn running now may be the stall,
                    # and it cannot end while we are in it.
                    self._end_turn(watch, _perf())
                elif not watch.hooked:
                    settle_beat(watch, self.threshold)
                self.book.report_gaps(watch, self.threshold, guard)


def _needed() -> set[str]:
    """The loop families this process can run now, each of which needs its run hook."""
    kinds = {"asyncio"}
    if "uvloop" in sys.modules:
        kinds.add("uvloop")
    if "trio" in sys.modules:
        kinds.add("trio")
    return kinds
