"""One watched loop: how its turns are timed (a selector hook on asyncio, an instrument on trio,
sampling on uvloop) and what the monitor thread has seen of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import CodeType
from typing import TYPE_CHECKING, Any, Protocol

from ..core.loop import trio_state
from .reporting import register_pools
from .stacks import TaskInfo

if TYPE_CHECKING:
    from ..core.state import ActiveGuard


class Watcher(Protocol):
    """One guard's watch (``watchdog.WatchdogHandle``): whose, and its threshold in seconds."""

    guard: ActiveGuard
    threshold: float


class Bell(Protocol):
    """The monitor thread as a watched loop sees it: asleep or not, how to wake it, and where
    a loop that ends says so."""

    dormant: bool

    def ring(self) -> None: ...

    def loop_stopped(self, target: Any) -> None: ...


__all__ = [
    "MAX_SAMPLES",
    "Bell",
    "LoopWatch",
    "Sample",
    "Watcher",
    "cpu_bound_start",
    "running_here",
]

#: Samples kept per stall (the most recent).
MAX_SAMPLES = 200

_perf = time.perf_counter


@dataclass
class Sample:
    time: float
    idle: bool
    filename: str = ""
    lineno: int = 0
    function: str = ""
    module: str = ""
    call: str = ""
    top: str = ""  # the call at the top of the stack, when not ``call``
    stack: tuple[Any, ...] = ()  # core.report.Frames: rendered only if reported
    catalogue: bool = False  # inside blockbuster_lite's hot path: the catalogue reports it
    excluded: bool = False  # an allow rule, out of scope, or allow_blocking() in the task

    @property
    def group(self) -> tuple[str, str, str]:
        return (self.filename, self.function, self.call)


class _TrioHooks:
    """A trio instrument (duck-typed: trio is imported only by programs that use it)."""

    def __init__(self, watch: LoopWatch) -> None:
        self.watch = watch

    def before_io_wait(self, timeout: float) -> None:
        self.watch.before_poll()

    def after_io_wait(self, timeout: float) -> None:
        self.watch.after_poll()

    def after_run(self) -> None:
        self.watch.ended = True
        monitor = self.watch.monitor
        target = self.watch.target
        if monitor is not None and target is not None:
            monitor.loop_stopped(target)


class LoopWatch:
    """One watched loop (an asyncio/uvloop loop, or a trio ``Runner``)."""

    def __init__(
        self, target: Any, kind: str, thread_id: int | None, boundary: CodeType | None
    ) -> None:
        try:  # a loop that ends is forgotten: nothing here keeps it alive
            self._target: Callable[[], Any] = weakref.ref(target)
        except TypeError:
            self._target = lambda: target
        self.kind = kind  # "asyncio" or "trio"
        #: Started through a run hook: its stop is reported by the loop itself (``hooks``).
        self.notified = False
        self.monitor: Bell | None = None
        self.hooked = False  # True: the loop times its own turns; False: sampled (uvloop)
        self.thread_id = thread_id
        self.thread_name = _thread_name(thread_id)
        self.boundary = boundary  # code of the frame under the callbacks, when not a known one
        self.threshold = 0.0
        self.turn_start: float | None = None  # when the loop left its poll; None: unknown yet
        self.polling = False
        self.gaps: deque[tuple[float, float]] = deque(maxlen=64)  # (start, end) of long turns
        self.samples: deque[Sample] = deque(maxlen=MAX_SAMPLES)
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

    @property
    def target(self) -> Any:
        """The loop (or trio runner); None once it has been garbage-collected."""
        return self._target()

    # -- loop thread -------------------------------------------------------------------------
    def before_poll(self) -> None:
        now = _perf()
        start = self.turn_start
        if start is not None and now - start >= self.threshold:
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
    def install(self, where: str) -> bool:
        """Hook the loop; False when it is gone. ``where``: ``"start"`` (on the loop thread,
        before its first callback: a run hook), ``"here"`` (on the loop thread, inside a
        callback) or ``"other"`` (from another thread, a loop found on its stack)."""
        target = self.target
        try:
            if self.kind == "trio":
                if where == "start":
                    self._add_instrument(target.instruments.add_instrument)
                    target.current_trio_token().run_sync_soon(register_pools, "trio")
                elif where == "here":
                    self._add_instrument()
                    register_pools("trio")
                else:
                    target.current_trio_token().run_sync_soon(self._add_instrument)
                self.hooked = True
                return True
            self.hooked = self._hook_selector()
            if where == "here":
                register_pools("asyncio")
            elif where == "start":  # on the loop thread, before it runs: no wake-up needed
                if "anyio" in sys.modules:
                    target.call_soon(register_pools, "asyncio")
            else:
                target.call_soon_threadsafe(register_pools, "asyncio")
                if not self.hooked and where == "other":
                    self.beat_posted = True
                    target.call_soon_threadsafe(self.beat)
        except Exception:
            return False
        return True

    def _add_instrument(self, add: Callable[[Any], None] | None = None) -> None:
        import trio

        if self.stopped:  # the watch ended before the run got to this callback
            return
        hooks = _TrioHooks(self)
        if add is None:
            trio.lowlevel.add_instrument(hooks)  # type: ignore[arg-type]
            register_pools("trio")
        else:
            add(hooks)
        target = weakref.ref(self.target)

        def remove() -> None:
            with contextlib.suppress(Exception):
                trio.lowlevel.remove_instrument(hooks)  # type: ignore[arg-type]

        def unhook() -> None:
            runner = target()
            if runner is None or self.ended:
                return
            if self.thread_id == threading.get_ident():
                remove()
            else:
                with contextlib.suppress(Exception):
                    runner.current_trio_token().run_sync_soon(remove)

        self.unhook = unhook

    def _hook_selector(self) -> bool:
        loop = self.target
        selector: Any = getattr(loop, "_selector", None) or getattr(loop, "_proactor", None)
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
        target = self.target
        if target is None:
            return False
        if self.notified:  # it says itself when it stops
            return True
        if self.kind == "trio":  # a run is over once its main task is (it then shuts down)
            return getattr(target, "main_task_outcome", None) is None
        try:
            return bool(target.is_running())
        except Exception:
            return False

    def closed(self) -> bool:
        target = self.target
        if self.ended or target is None:
            return True
        if self.kind == "trio":
            return False
        try:
            return bool(target.is_closed())
        except Exception:
            return True


def _thread_name(thread_id: int | None) -> str:
    for thread in threading.enumerate():
        if thread.ident == thread_id:
            return thread.name
    return ""


# --- the monitor -------------------------------------------------------------------------------


def running_here(watch: LoopWatch) -> bool:
    """Whether the calling thread is inside the watched loop's run right now."""
    if watch.thread_id != threading.get_ident():
        return False
    if watch.kind == "asyncio":
        return asyncio._get_running_loop() is watch.target

    run_context = trio_state.run_context
    return run_context is not None and run_context.__dict__.get("runner") is watch.target


def cpu_bound_start(watch: LoopWatch, end: float) -> float | None:
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


