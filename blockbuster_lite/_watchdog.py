"""The watchdog: report any stall of an event loop, whatever blocked it, with its stack.

Patching catches the blocking functions we know. The watchdog catches the rest (CPU-bound code,
C extensions outside the catalogue, a ``sleep`` bound with ``from time import sleep`` before
activation) without patching any function. ``intercept(watchdog=0.1)``, ``activate(watchdog=...)``
or ``BLOCKBUSTER_LITE_WATCHDOG_MS=100`` turn it on; it stops with its guard.

How a stall is timed
--------------------
A stall is one turn of the loop (from leaving its poll to entering it again) that takes longer
than the threshold. Where the loop lets us, the loop thread itself timestamps both ends, so the
duration is exact whatever the monitor thread is doing:

* asyncio (pure-Python loops): the loop's selector object gets an instance attribute ``select``
  that calls the original between two ``perf_counter()`` reads (no class, module or blocking
  function is patched; the attribute is deleted when the watch ends);
* trio: an instrument (``trio.lowlevel.add_instrument``) with ``before_io_wait`` and
  ``after_io_wait``, trio's public hooks for exactly this;
* uvloop (C, no Python-level hook): the monitor thread samples the loop thread, and the end is
  timed on the loop by a callback the monitor posts when it first sees the loop busy. The start
  lies between the last sample that saw the loop idle and the first that saw it busy. A turn
  that kept the thread on a CPU (Python code, ``json.dumps``) is dated from the CPU time the
  thread used since it was last seen idle (``pthread_getcpuclockid``): exact. A turn that waited
  (a sleep, a socket) gets the middle of that interval: off by at most threshold / 6 (17 ms).
  An earlier design beat a ``call_later`` timer every 10 ms on every loop: 1.75 % of a core for
  an idle loop on our 2-CPU test machine, against 0.3 % for the design above.

*Sampling.* One monitor thread per process. A hooked loop wakes it when it starts a turn while
the thread sleeps; the thread looks again when that turn could be half a stall (threshold / 2),
then every threshold / 10 while the turn lasts, and sleeps again (up to 0.5 s, the scan for new
loops) once every loop polls and no thread pool is in use: an idle asyncio or trio program
costs two wake-ups a second. A uvloop loop is looked at every threshold / 3. Each sample reads
the loop thread's stack (``sys._current_frames()``; see ``_stacks``) and keeps the frames
above the loop's dispatch point (``Handle._run``, trio's ``unrolled_run``, the frame that called
uvloop's run): the running callback. The site is the innermost user frame, as for patched
calls. The call is the function that frame called (``json.dumps``), or for a C function in
progress the callee of the call expression at the frame's current instruction, resolved through
its module (``from time import sleep`` then ``sleep(0.3)`` reports ``time.sleep``), or
``Python code`` when the frame runs its own bytecode. The site seen most often wins. A stall that
no sample saw inside a callback (the whole process was descheduled, or a C callback with no
Python frame at all) is not reported.

*Request and task.* At the first sample of a stall the running task is looked up (asyncio's
``_current_tasks``, the trio task whose coroutine frame is on the stack) and its
``contextvars`` context copied. The report runs in that copy: the ASGI middleware's request
context (method, path, route) lands in ``Violation.context``, ``allow_blocking()`` in that task
silences the stall, and an OpenTelemetry observer sees the request's span as the current one.

*Finding loops.* A loop running on the thread that starts the guard is watched at once. Loops
that start later or on other threads are found by a scan of every thread's frames every 0.5 s:
``BaseEventLoop.run_forever`` (its ``self``), ``asyncio.Runner.run`` (``self._loop``: uvloop,
uvicorn), ``trio.run`` (``runner``) and, last, an event loop among the locals of a thread's
innermost frame (uvloop run by hand: its C ``run_forever`` leaves no Python frame).

*Not twice, grouped.* A stall whose winning sample is inside blockbuster_lite's hot path, or
whose site had a catalogue violation recorded during the stall, was already reported by the
catalogue and is dropped. Stalls are grouped by ``(file, function, call)``: later ones keep the
first one's line, are recorded (``guard.violations``, statistics, observers) and are warned or
logged once per guard, like patched calls.

*Thread pools.* Each watched loop's pools are registered with ``_pools`` (on the loop thread,
once) and sampled by the monitor thread, so anyio's default limiter, where FastAPI runs sync
endpoints, reports occupancy (``_pools.pool_statistics()``) and is warned about when work waits
for a worker longer than ``BLOCKBUSTER_LITE_SATURATION_MS`` (100 ms), in every mode and with no
timer on the loop.

Stalls are never raised (they already happened): raise, warn and offload modes warn
(``BlockingCallWarning``, ``action=Mode.WARN``); log and off modes log (``action=Mode.LOG``).
Guards with a watchdog share the one monitor; the smallest threshold applies.
A C function that holds the GIL keeps the monitor from sampling until it returns; the sample
taken then usually still shows the calling line.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import contextvars
import logging
import os
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from ._policy import INTERNAL, Mode, code_info
from ._report import Violation, format_message, logger, render_stack, warn_violation
from ._stacks import (
    PYTHON_CODE,
    TaskInfo,
    call_name,
    callback_frames,
    excluded_by_guard,
    loops_on_stack,
    running_task,
    site_index,
    task_boundary_asyncio,
)
from ._state import reentrant, state

if TYPE_CHECKING:
    from ._guard import Guard

__all__ = ["PYTHON_CODE", "STALL_ADVICE", "WatchdogHandle", "start_watchdog", "watched_loops"]

STALL_ADVICE = (
    "move the work off the loop: await anyio.to_thread.run_sync(...) for blocking calls, a "
    "process pool for CPU-bound code, or the library's async API"
)

#: How often threads are scanned for loops that started after the guard.
DISCOVERY_INTERVAL = 0.5
#: A loop that stays stopped this long is forgotten (found again if it runs again).
IDLE_FORGET = 30.0
#: Samples kept per stall (the most recent).
MAX_SAMPLES = 200

_perf = time.perf_counter
_HOTPATH_MODULE = "blockbuster_lite._hotpath"


def _sampled_interval(threshold: float) -> float:
    return min(max(threshold / 3, 0.005), 0.25)


def _busy_interval(threshold: float) -> float:
    return min(max(threshold / 10, 0.005), 0.1)


# --- what the monitor records ----------------------------------------------------------------


@dataclass
class _Sample:
    time: float
    idle: bool
    filename: str = ""
    lineno: int = 0
    function: str = ""
    module: str = ""
    call: str = ""
    stack: tuple[str, ...] = ()
    catalogue: bool = False  # inside blockbuster_lite's hot path: the catalogue reports it
    excluded: bool = False  # an allow rule, out of scope, or allow_blocking() in the task

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.filename, self.function, self.call)


class _TrioHooks:
    """A trio instrument (duck-typed: trio is imported only by programs that use it)."""

    def __init__(self, watch: _LoopWatch) -> None:
        self.watch = watch

    def before_io_wait(self, timeout: float) -> None:
        self.watch.before_poll()

    def after_io_wait(self, timeout: float) -> None:
        self.watch.after_poll()

    def after_run(self) -> None:
        self.watch.ended = True


class _LoopWatch:
    """One watched loop (an asyncio/uvloop loop, or a trio ``Runner``)."""

    def __init__(
        self, target: Any, kind: str, thread_id: int | None, boundary: CodeType | None
    ) -> None:
        self.target = target
        self.kind = kind  # "asyncio" or "trio"
        self.monitor: _Monitor | None = None
        self.hooked = False  # True: the loop times its own turns; False: sampled (uvloop)
        self.thread_id = thread_id
        self.thread_name = _thread_name(thread_id)
        self.boundary = boundary  # code of the frame under the callbacks, when not a known one
        self.threshold = 0.0
        self.turn_start: float | None = None  # when the loop left its poll; None: unknown yet
        self.polling = False
        self.paused = False  # the loop stopped running since the last turn began
        self.gaps: deque[tuple[float, float]] = deque(maxlen=64)  # (start, end) of long turns
        self.samples: deque[_Sample] = deque(maxlen=MAX_SAMPLES)
        self.task: TaskInfo | None = None
        self.stopped_since: float | None = None
        self.ended = False
        self.stopped = False  # the watch is over (its hooks are being removed)
        self.unhook: Any = None
        # sampled loops only
        self.free_at: float | None = None  # last time the loop was seen idle or ran our beat
        self.busy_at: float | None = None  # first sample of the current turn that saw it busy
        self.beat_posted = False
        self.beat_ran: float | None = None
        # The loop thread's CPU time at free_at, busy_at and beat_ran (None: unknown).
        self.free_cpu: float | None = None
        self.busy_cpu: float | None = None
        self.beat_cpu: float | None = None
        self.cpu_clock: int | None = None

    # -- loop thread -------------------------------------------------------------------------
    def before_poll(self) -> None:
        now = _perf()
        start = self.turn_start
        if self.paused:
            self.paused = False  # the turn spans a time the loop was not running: no stall
        elif start is not None and now - start >= self.threshold:
            self.gaps.append((start, now))
        self.polling = True

    def after_poll(self) -> None:
        self.turn_start = _perf()
        self.polling = False
        monitor = self.monitor
        if monitor is not None and monitor.dormant:
            monitor.dormant = False
            monitor.ring()

    def beat(self) -> None:
        """Posted by the monitor to a sampled loop: the turn it saw has ended."""
        if self.thread_id != threading.get_ident():
            self.thread_id = threading.get_ident()
            self.thread_name = threading.current_thread().name
        self.beat_cpu = time.thread_time()
        self.beat_ran = _perf()

    def thread_cpu(self) -> float | None:
        """CPU time of the loop thread, read from another thread (None where unsupported)."""
        try:
            if self.cpu_clock is None:
                self.cpu_clock = time.pthread_getcpuclockid(self.thread_id)  # type: ignore[arg-type]
            return time.clock_gettime(self.cpu_clock)
        except (AttributeError, OSError, TypeError):
            return None

    # -- hooks ------------------------------------------------------------------------------------
    def install(self, on_loop_thread: bool) -> bool:
        """Hook the loop (or post the first beat of a sampled one); False when the loop is gone."""
        try:
            if self.kind == "trio":
                if on_loop_thread:
                    self._add_instrument()
                else:
                    self.target.current_trio_token().run_sync_soon(self._add_instrument)
                self.hooked = True
                return True
            self.hooked = self._hook_selector()
            if on_loop_thread:
                _register_pools("asyncio")
            else:
                self.target.call_soon_threadsafe(_register_pools, "asyncio")
                if not self.hooked:
                    self.beat_posted = True
                    self.target.call_soon_threadsafe(self.beat)
        except Exception:
            return False
        return True

    def _add_instrument(self) -> None:
        import trio

        if self.stopped:  # the watch ended before the run got to this callback
            return
        hooks = _TrioHooks(self)
        trio.lowlevel.add_instrument(hooks)  # type: ignore[arg-type]
        _register_pools("trio")

        def remove() -> None:
            with contextlib.suppress(Exception):
                trio.lowlevel.remove_instrument(hooks)  # type: ignore[arg-type]

        def unhook() -> None:
            if self.thread_id == threading.get_ident():
                remove()
            else:
                with contextlib.suppress(Exception):
                    self.target.current_trio_token().run_sync_soon(remove)

        self.unhook = unhook

    def _hook_selector(self) -> bool:
        selector: Any = getattr(self.target, "_selector", None) or getattr(
            self.target, "_proactor", None
        )
        original = getattr(selector, "select", None)
        if original is None or not hasattr(selector, "__dict__"):
            return False
        before, after = self.before_poll, self.after_poll

        def select(*args: Any, **kwargs: Any) -> Any:
            before()
            try:
                return original(*args, **kwargs)
            finally:
                after()

        select.__wrapped__ = original  # type: ignore[attr-defined]
        missing = object()
        previous = vars(selector).get("select", missing)
        selector.select = select

        def unhook() -> None:
            if vars(selector).get("select") is select:
                if previous is missing:
                    del selector.select
                else:
                    selector.select = previous

        self.unhook = unhook
        return True

    def stop(self) -> None:
        self.stopped = True
        unhook, self.unhook = self.unhook, None
        if unhook is not None:
            unhook()

    # -- monitor thread ---------------------------------------------------------------------------
    def running(self) -> bool:
        if self.ended:
            return False
        if self.kind == "trio":  # a run is over once its main task is (it then shuts down)
            return getattr(self.target, "main_task_outcome", None) is None
        try:
            return bool(self.target.is_running())
        except Exception:
            return False

    def closed(self) -> bool:
        if self.ended or self.kind == "trio":
            return self.ended
        try:
            return bool(self.target.is_closed())
        except Exception:
            return True


def _thread_name(thread_id: int | None) -> str:
    for thread in threading.enumerate():
        if thread.ident == thread_id:
            return thread.name
    return ""


# --- the monitor -------------------------------------------------------------------------------


class _Monitor:
    """The process's one watchdog thread and the loops it watches."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.handles: list[WatchdogHandle] = []
        self.watches: dict[int, _LoopWatch] = {}
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
            from ._loop import trio_state

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
    ) -> _LoopWatch | None:
        with self.lock:
            known = self.watches.get(id(target))
            if known is not None and known.target is target and not known.closed():
                return None
            watch = _LoopWatch(target, kind, thread_id, boundary)
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
                _log_failure(exc)
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
        from . import _pools

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

    def _forget_samples(self, watch: _LoopWatch) -> None:
        if watch.samples or watch.task is not None:
            watch.samples.clear()
            watch.task = None

    def _settle_beat(self, watch: _LoopWatch) -> None:
        """A sampled loop ran our beat: the turn we saw busy is over; was it a stall?"""
        ran = watch.beat_ran
        if ran is None:
            return
        watch.beat_ran = None
        watch.beat_posted = False
        start = watch.turn_start
        if start is not None:
            start = _cpu_bound_start(watch, ran) or start
            if ran - start >= self.threshold:
                watch.gaps.append((start, ran))
        watch.turn_start = watch.busy_at = watch.busy_cpu = None
        watch.free_at, watch.free_cpu = ran, watch.beat_cpu

    def _track(self, watch: _LoopWatch, idle: bool, now: float) -> bool:
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
    def _sample(self, watch: _LoopWatch, frames: list[FrameType], now: float) -> _Sample:
        if not frames:
            return _Sample(now, idle=True)
        infos = [code_info(frame) for frame in frames]
        index = site_index(infos)
        frame, info = frames[index], infos[index]
        if watch.task is None:
            watch.task = running_task(watch.kind, watch.target, frames)
        return _Sample(
            time=now,
            idle=False,
            filename=info.filename,
            lineno=frame.f_lineno,
            function=info.qualname,
            module=info.module,
            call=call_name(frames, infos, index),
            stack=render_stack(frame),
            catalogue=any(i.kind == INTERNAL and i.module == _HOTPATH_MODULE for i in infos),
            excluded=watch.task.exempt or excluded_by_guard(infos),
        )

    # -- stalls -----------------------------------------------------------------------------------
    def _report_gaps(self, watch: _LoopWatch, extra: Guard | None = None) -> None:
        while watch.gaps:
            start, end = watch.gaps.popleft()
            busy = [s for s in watch.samples if start <= s.time <= end and not s.idle]
            self._stall(watch, start, end, busy, extra)

    def _stall(
        self, watch: _LoopWatch, start: float, end: float, busy: list[_Sample], extra: Guard | None
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
        _emit(violation, chosen.module, task.context, extra)

    def flush(self, guard: Guard) -> None:
        """Report what is pending for a guard that stops (the monitor may be gone already)."""
        with self.lock:
            for watch in list(self.watches.values()):
                # Stopping from inside the loop: the turn running now may be the stall, and it
                # cannot end while we are in it.
                inside = _running_here(watch) and watch.turn_start is not None
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


def _running_here(watch: _LoopWatch) -> bool:
    """Whether the calling thread is inside the watched loop's run right now."""
    if watch.thread_id != threading.get_ident():
        return False
    if watch.kind == "asyncio":
        return asyncio._get_running_loop() is watch.target
    from ._loop import trio_state

    run_context = trio_state.run_context
    return run_context is not None and run_context.__dict__.get("runner") is watch.target


def _register_pools(library: str) -> None:
    """On a loop thread: make this loop's thread pools known to the monitor (see ``_pools``).

    This is how anyio's default limiter, FastAPI's pool for sync endpoints, gets its occupancy
    read and its saturation warned about without offload mode. The monitor thread samples it:
    no timer on the loop. anyio finds the loop through sniffio, which a plain callback has to be
    told about.
    """
    try:
        import sniffio

        from . import _pools
    except ImportError:
        return

    def register() -> None:
        sniffio.current_async_library_cvar.set(library)
        _pools.pools_here()

    try:
        contextvars.copy_context().run(register)
    except Exception as exc:
        _log_failure(exc)


def _cpu_bound_start(watch: _LoopWatch, end: float) -> float | None:
    """When a sampled loop's turn was CPU-bound, its start from the CPU time it used.

    Before the turn the thread slept in its poll, so the CPU it used since it was last seen
    free is the turn's; scaled by its share of a core while busy (other threads, other
    processes), that is the turn's length. None for a turn that mostly waited (a sleep, a
    socket): the middle of the interval stays the best guess.
    """
    free_at, free_cpu, busy_at, busy_cpu, end_cpu = (
        watch.free_at, watch.free_cpu, watch.busy_at, watch.busy_cpu, watch.beat_cpu
    )  # fmt: skip
    if None in (free_at, free_cpu, busy_at, end_cpu):
        return None
    assert free_at is not None and free_cpu is not None and busy_at is not None
    assert end_cpu is not None
    used = end_cpu - free_cpu
    if end <= free_at or used < 0.5 * (end - free_at):
        return None
    share = 1.0
    if busy_cpu is not None and end - busy_at >= 0.01:
        share = min(max((end_cpu - busy_cpu) / (end - busy_at), 0.05), 1.0)
    length = min(max(used / share, end - busy_at), end - free_at)
    return end - length


def _log_failure(exc: BaseException) -> None:
    with contextlib.suppress(Exception):
        logger.log(
            logging.ERROR,
            "blockbuster_lite: internal error in the watchdog",
            exc_info=(type(exc), exc, exc.__traceback__),
        )


# --- reporting -----------------------------------------------------------------------------------


def _emit(
    violation: Violation, module: str, context: contextvars.Context | None, extra: Guard | None
) -> None:
    guards = state.guards
    guard = guards[-1] if guards else extra
    if guard is None:
        return
    mode = guard.effective_mode()
    if mode in (Mode.LOG, Mode.OFF):
        violation = replace(violation, action=Mode.LOG)

    def report() -> None:
        from ._hotpath import record

        record(violation)
        if extra is not None and extra not in state.guards:
            extra._record(violation)
        if guard.first_report(violation):
            _tell(violation, module)

    try:
        if context is not None:
            context.copy().run(report)
        else:
            report()
    except Exception as exc:
        _log_failure(exc)


def _tell(violation: Violation, module: str) -> None:
    token = reentrant.set(True)
    try:
        if violation.action is Mode.LOG:
            logger.warning("%s", format_message(violation))
            return
        try:
            warn_violation(violation, module)
        except Exception:  # a warnings filter made it an error on our thread: log it instead
            logger.warning("%s", format_message(violation))
    finally:
        reentrant.reset(token)


# --- entry points ----------------------------------------------------------------------------------


class WatchdogHandle:
    """What ``Guard.start()`` keeps: ``stop()`` ends this guard's watch (and the thread, if last)."""

    def __init__(self, guard: Guard, threshold: float) -> None:
        self.guard = guard
        self.threshold = threshold
        self._stopped = False

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        token = reentrant.set(True)  # our locks and the join are not the user's blocking calls
        try:
            _remove(self)
        finally:
            reentrant.reset(token)

    def __repr__(self) -> str:
        status = "stopped" if self._stopped else "running"
        return f"<WatchdogHandle {self.threshold * 1000:.0f} ms {status}>"


_monitor: _Monitor | None = None
_lock = _thread.allocate_lock()


def start_watchdog(guard: Guard, seconds: float) -> WatchdogHandle:
    """Watch every event loop of the process for stalls longer than ``seconds``."""
    if not seconds > 0:
        raise ValueError(f"watchdog threshold must be > 0, got {seconds!r}")
    handle = WatchdogHandle(guard, float(seconds))
    token = reentrant.set(True)
    try:
        _add_handle(handle)
    finally:
        reentrant.reset(token)
    return handle


def _add_handle(handle: WatchdogHandle) -> None:
    global _monitor
    with _lock:
        monitor = _monitor
        if monitor is None:
            monitor = _monitor = _Monitor(handle.threshold)
            monitor.handles.append(handle)
            monitor.start()
        else:
            monitor.handles.append(handle)
            monitor.set_threshold(min(h.threshold for h in monitor.handles))
        monitor.watch_current_thread()
    monitor.ring()


def _remove(handle: WatchdogHandle) -> None:
    global _monitor
    with _lock:
        monitor = _monitor
        if monitor is None or handle not in monitor.handles:
            return
        monitor.handles.remove(handle)
        last = not monitor.handles
        if last:
            _monitor = None
        else:
            monitor.set_threshold(min(h.threshold for h in monitor.handles))
    if last:
        monitor.stop()
    monitor.flush(handle.guard)
    if last:
        monitor.unhook_all()


def watched_loops() -> list[tuple[str, str]]:
    """``(kind, thread name)`` of every loop watched now (diagnostics and tests)."""
    monitor = _monitor
    if monitor is None:
        return []
    with monitor.lock:
        return [(w.kind, w.thread_name) for w in monitor.watches.values() if w.running()]


def _restart_after_fork() -> None:
    # The monitor thread does not survive fork(): a forked worker (gunicorn) gets its own.
    global _monitor, _lock
    _lock = _thread.allocate_lock()
    old = _monitor
    if old is None:
        return
    state.observers = tuple(o for o in state.observers if o != old.note_violation)
    monitor = _monitor = _Monitor(old.threshold)
    monitor.handles = list(old.handles)
    monitor.start()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_after_fork)
