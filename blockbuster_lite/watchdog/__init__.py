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
then every threshold / 10 while the turn lasts, and sleeps again once every loop polls and no
thread pool is in use, until a loop starts a turn: an idle asyncio or trio program, with one
loop or a hundred, costs no wake-up at all. A uvloop loop is looked at every threshold / 3. Each sample reads
the loop thread's stack (``sys._current_frames()``; see ``_stacks``) and keeps the frames
above the loop's dispatch point (``Handle._run``, trio's ``unrolled_run``, the run hook's frame
under uvloop's C ``run_forever``): the running callback. In offload mode a task with a greenback
portal runs its coroutine in a greenlet, whose frames end at the greenlet's first one instead of
reaching the loop (this is what used to make offload mode look idle): the walk goes on from
the portal's parent greenlet (suspended in the task's ``greenback_shim``), and a stack that
still ends short of the loop while the loop's own hook says a turn runs is taken as the
callback. A call offloaded to a worker thread is not a stall: the loop polls while it waits. The site is the innermost user frame, as for patched
calls. The call is the function that frame called (``json.dumps``), or for a C function in
progress the callee of the call expression at the frame's current instruction, resolved through
its module, the frame's variables and instance dictionaries, never by running code (``from time
import sleep`` then ``sleep(0.3)`` reports ``time.sleep``, ``self._lock.acquire()`` reports
``_thread.lock.acquire``), or ``Python code`` when the frame runs its own bytecode. When the
call went deeper (the user's frame called ``vialib.wait_for_data``, which waits in
``select.poll.poll``), the message also names the top of the stack. Every stall message says it
was seen by the watchdog, not intercepted: no wrapper saw the call, so no mode could stop or
offload it, and an allow rule would only hide the report; the fix is to move the work. The site seen most often wins. A stall that
no sample saw inside a callback (the whole process was descheduled, or a C callback with no
Python frame at all) is not reported.

*Request and task.* At the first sample of a stall the running task is looked up (asyncio's
``_current_tasks``, the trio task whose coroutine frame is on the stack) and its
``contextvars`` context copied. The report runs in that copy: the ASGI middleware's request
context (method, path, route) lands in ``Violation.context``, ``allow_blocking()`` in that task
silences the stall, and an OpenTelemetry observer sees the request's span as the current one.

*Finding loops.* Loops say when they start and stop (``hooks``): while a watchdog runs,
``asyncio.BaseEventLoop.run_forever``, ``uvloop.Loop.run_forever`` and trio's ``setup_runner``
(``trio.run`` and guest mode) are wrapped, reversibly (the originals are put back exactly when
the last watchdog stops). Every ``asyncio.run``, ``Runner``, ``run_until_complete``,
``uvloop.run``, anyio run on either backend and trio run, in any thread, is watched from before
its first callback, and forgotten as soon as it stops: its last turn is closed and reported on
the loop thread before the run returns, and nothing keeps a reference to it (``LoopWatch``
holds a weak one). Loops already running when the watchdog starts are found once, by a scan
of every thread's frames: ``BaseEventLoop.run_forever`` (its ``self``), ``asyncio.Runner.run``
(``self._loop``), ``trio.run`` (``runner``) and, last, an event loop among the locals of a
thread's innermost frame (uvloop run by hand). The scan repeats every 0.5 s only if a loop
library is imported whose entry point could not be hooked (a trio without ``setup_runner``).

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
The pytest plugin fails a raise-mode test in which a stall ended (``integrations.pytest_watchdog``).
A trio guest run's turn runs inside its host loop's: one block there is one report.
Guards with a watchdog share the one monitor; the smallest threshold applies.
A C function that holds the GIL keeps the monitor from sampling until it returns; the sample
taken then usually still shows the calling line.
"""

from __future__ import annotations

import _thread
import os
from typing import TYPE_CHECKING

from ..core.extensions import extensions
from ..core.state import reentrant, state
from . import hooks
from .monitor import Monitor
from .reporting import STALL_ADVICE
from .stacks import PYTHON_CODE

if TYPE_CHECKING:
    from ..core.state import ActiveGuard

__all__ = [
    "PYTHON_CODE",
    "STALL_ADVICE",
    "WatchdogHandle",
    "report_pending",
    "start_watchdog",
    "watched_loops",
]


class WatchdogHandle:
    """What ``ActiveGuard.start()`` keeps: ``stop()`` ends this guard's watch (and the thread, if last)."""

    def __init__(self, guard: ActiveGuard, threshold: float) -> None:
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


_monitor: Monitor | None = None
_lock = _thread.allocate_lock()


def start_watchdog(guard: ActiveGuard, seconds: float) -> WatchdogHandle:
    """Watch every event loop of the process for stalls longer than ``seconds``."""
    if not seconds > 0:
        raise ValueError(f"watchdog threshold must be > 0, got {seconds!r}")
    from ..offload.settings import saturation_threshold

    saturation_threshold()  # the pool sampling reads it: a bad variable is refused now
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
            monitor = _monitor = Monitor(handle.threshold)
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


def report_pending() -> None:
    """Report, on this thread and now, the stalls that ended but the monitor has not told yet
    (the pytest plugin calls it as a test phase ends, so a stall lands in its own test)."""
    monitor = _monitor
    if monitor is None:
        return
    token = reentrant.set(True)
    try:
        monitor.flush()
    finally:
        reentrant.reset(token)


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
    hooks.reset_after_fork()
    old = _monitor
    if old is None:
        return
    state.observers = tuple(o for o in state.observers if o != old.book.note_violation)
    monitor = _monitor = Monitor(old.threshold)
    monitor.handles = list(old.handles)
    monitor.start()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_after_fork)


extensions.start_watchdog = start_watchdog
