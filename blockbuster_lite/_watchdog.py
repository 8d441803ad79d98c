"""The watchdog: report any stall of an event loop, whatever blocked it, with its stack.

Patching catches the blocking functions we know. The watchdog catches the rest (CPU-bound code,
C extensions outside the catalogue, a ``sleep`` bound with ``from time import sleep`` before
activation) without patching anything. ``intercept(watchdog=0.1)``, ``activate(watchdog=...)`` or
``BLOCKBUSTER_LITE_WATCHDOG_MS=100`` turn it on; it stops with its guard.

How it works
------------
*Heartbeat.* Every watched loop runs a tiny callback every ``period`` (threshold / 10, 10 ms by
default): a ``call_later`` chain on asyncio and uvloop, a system task sleeping in a loop on
trio. Each beat stores ``perf_counter()``. When a beat finds that more than ``threshold +
period / 2`` passed since the previous one, the loop was held: the stall began at most
``period`` after the previous beat (the next beat was due then) and ended just before this one.
Both ends are read on the loop thread, so the duration (``now - previous - period / 2``) is off
by at most ``period / 2`` (5 % of the threshold) however late the monitor thread runs; pyleak-style
tools that time only from the moment they notice report a 0.2 s block as 0.1 s.

*Sampling.* One monitor thread per process wakes every threshold / 4. When a loop's beat is
overdue it samples that loop thread's stack (``sys._current_frames()``) every threshold / 10
until the beat comes back. A sample keeps the frames that sit above the loop's dispatch point
(``Handle._run`` on asyncio, trio's ``unrolled_run``, the frame that called uvloop's run): the
running callback. The site is the innermost user frame, as for patched calls; the call is
the function that frame is inside (``json.dumps``) or, for a C function in progress, the callee
of the call expression at the frame's current instruction, resolved through the module
(``from time import sleep`` then ``sleep(0.3)`` reports ``time.sleep``), or ``Python code``
when the frame runs its own bytecode. The site seen most often during the stall wins.
A loop whose thread is idle in its selector, or a stall with no sample showing a callback
(the process itself was descheduled), is not reported.

*Request and task.* At the first sample of a stall the running task is looked up (asyncio's
``_current_tasks``, trio's task whose coroutine frame is on the stack) and its ``contextvars``
context copied. The report runs in that copy: the ASGI middleware's request context
(method, path, route) lands in ``Violation.context``, ``allow_blocking()`` in that task silences
the stall, and an OpenTelemetry observer sees the request's span as the current one.

*Finding loops.* A loop running on the thread that starts the guard is watched at once. Loops
that start later or on other threads are found by a scan every 0.5 s of every thread's frames:
``BaseEventLoop.run_forever`` (its ``self``), ``asyncio.Runner.run`` (``self._loop``, which
covers uvloop and uvicorn), ``trio.run`` / ``unrolled_run`` (``runner``), and, as a last resort,
an event loop among the locals of a thread's innermost frame (uvloop run by hand: its C
``run_forever`` leaves no Python frame). The first beat tells which thread really runs the loop.

*Not twice, grouped.* A stall whose winning sample is inside blockbuster_lite's hot path, or
whose site had a catalogue violation recorded during the stall, was already reported by the
catalogue and is dropped. Stalls are grouped by ``(file, function, call)``: later ones reuse the
first report's line, are recorded (``guard.violations``, statistics, observers) but warned or
logged only once per guard, like patched calls.

Stalls are never raised (they already happened): raise, warn and offload modes warn
(``BlockingCallWarning``, ``action=Mode.WARN``), log and off modes log (``action=Mode.LOG``).
Several guards with a watchdog share the one monitor; the smallest threshold applies.
Limits: a C function that holds the GIL keeps the monitor from sampling until it returns (the
duration stays exact, the sample is taken right after, usually on the calling line); a stall in
a C callback with no Python frame at all (``loop.call_soon(time.sleep, 1)`` on uvloop) is not
attributed and not reported.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import contextvars
import dis
import gc
import linecache
import logging
import os
import sys
import threading
import time
import types
import warnings
from collections import Counter, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any

from ._policy import INTERNAL, LIBRARY, USER, Mode, code_info
from ._report import BlockingCallWarning, Violation, format_message, logger, render_stack
from ._state import exempt, reentrant, request_context, state

if TYPE_CHECKING:
    from ._guard import Guard

__all__ = ["STALL_ADVICE", "WatchdogHandle", "beat_period", "start_watchdog", "watched_loops"]

STALL_ADVICE = (
    "move the work off the loop: await anyio.to_thread.run_sync(...) for blocking calls, a "
    "process pool for CPU-bound code, or the library's async API"
)
PYTHON_CODE = "Python code"

#: How often threads are scanned for loops that started after the guard.
DISCOVERY_INTERVAL = 0.5
#: A loop that never answers its first beat within this time is forgotten (found again if alive).
FIRST_BEAT_TIMEOUT = 5.0
#: A loop that stays stopped this long is forgotten (found again if it runs again).
IDLE_FORGET = 30.0
#: Samples kept per stall (the most recent).
MAX_SAMPLES = 200

_perf = time.perf_counter
_HOTPATH_MODULE = "blockbuster_lite._hotpath"


def beat_period(threshold: float) -> float:
    """Heartbeat period for a threshold: threshold / 10, between 2 ms and 50 ms."""
    return min(max(threshold / 10, 0.002), 0.05)


def _tick_interval(threshold: float) -> float:
    return min(max(threshold / 4, 0.005), 0.25)


def _sample_interval(threshold: float) -> float:
    return min(max(threshold / 10, 0.005), _tick_interval(threshold))


# --- loop machinery, known by code object ------------------------------------------------------


def _codes(*functions: Any) -> frozenset[CodeType]:
    found = set()
    for function in functions:
        code = getattr(function, "__code__", None)
        if isinstance(code, CodeType):
            found.add(code)
    return frozenset(found)


#: Frames that call a loop callback: everything above them is the running callback.
_DISPATCH: frozenset[CodeType] = _codes(asyncio.events.Handle._run)
#: Frames of the loop itself: a thread whose innermost frames reach one of these first is idle.
_LOOP_INTERNALS: frozenset[CodeType] = _codes(
    getattr(asyncio.base_events.BaseEventLoop, "_run_once", None),
    asyncio.base_events.BaseEventLoop.run_forever,
    asyncio.base_events.BaseEventLoop.run_until_complete,
)
_RUN_FOREVER = asyncio.base_events.BaseEventLoop.run_forever.__code__
#: ``asyncio.Runner.run`` (3.11+): holds the loop in ``self._loop``, uvloop's included.
_RUNNER_RUN: CodeType | None = next(iter(_codes(getattr(getattr(asyncio, "Runner", None), "run", None))), None)


@dataclass(frozen=True)
class _TrioCodes:
    unrolled_run: CodeType | None = None
    run: CodeType | None = None


_trio_codes = _TrioCodes()


def _trio_machinery() -> _TrioCodes:
    """trio's run-loop code objects, once trio is imported (nothing is imported here)."""
    global _trio_codes
    if _trio_codes.run is None:
        module = sys.modules.get("trio._core._run")
        if module is not None:
            unrolled = getattr(module, "unrolled_run", None)
            run = getattr(module, "run", None)
            _trio_codes = _TrioCodes(
                getattr(unrolled, "__code__", None), getattr(run, "__code__", None)
            )
    return _trio_codes


# --- samples -------------------------------------------------------------------------------------


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


@dataclass
class _TaskInfo:
    name: str | None = None
    context: contextvars.Context | None = None
    request: dict[str, Any] = field(default_factory=dict)
    exempt: bool = False


class _LoopWatch:
    """One watched loop (asyncio/uvloop loop, or a trio ``Runner``) and its heartbeat."""

    def __init__(self, monitor: _Monitor, target: Any, kind: str) -> None:
        self.monitor = monitor
        self.target = target
        self.kind = kind  # "asyncio" or "trio"
        self.period = monitor.period
        self.trigger = monitor.threshold + self.period / 2
        self.thread_id: int | None = None
        self.thread_name = ""
        self.boundary: CodeType | None = None
        self.registered = _perf()
        self.last_beat = 0.0
        self.stopped_since: float | None = None
        self.gaps: deque[tuple[float, float]] = deque(maxlen=64)
        self.samples: deque[_Sample] = deque(maxlen=MAX_SAMPLES)
        self.task: _TaskInfo | None = None
        self.paused = False
        self.stopped = False  # set by the monitor: beat no more
        self.ended = False  # the trio run finished, or the loop is closed

    # -- loop thread ---------------------------------------------------------------------------
    def adopt(self, boundary: CodeType | None) -> None:
        """Register from the loop thread itself (the guard started inside async code)."""
        self.thread_id = threading.get_ident()
        self.thread_name = threading.current_thread().name
        self.boundary = boundary
        # The current callback may be the one that stalls: count it from now.
        self.last_beat = _perf() - self.period / 2

    def on_beat(self, caller: FrameType | None) -> None:
        now = _perf()
        if self.thread_id is None:
            self.thread_id = threading.get_ident()
            self.thread_name = threading.current_thread().name
        if self.boundary is None and caller is not None:
            self.boundary = caller.f_code
        if self.paused:
            self.paused = False  # the gap spans a time the loop was not running: no stall
        elif self.last_beat and now - self.last_beat >= self.trigger:
            self.gaps.append((self.last_beat, now))  # before last_beat: the monitor relies on it
        self.last_beat = now

    def asyncio_beat(self) -> None:
        if self.stopped:
            return
        self.on_beat(sys._getframe(1))
        try:
            self.target.call_later(self.period, self.asyncio_beat)
        except RuntimeError:  # closed
            self.ended = True

    def trio_install(self) -> None:
        import trio

        try:
            trio.lowlevel.spawn_system_task(self._trio_beat, name="blockbuster_lite.watchdog")
        except RuntimeError:
            self.ended = True

    async def _trio_beat(self) -> None:
        import trio

        try:
            self.on_beat(sys._getframe(1))
            while not self.stopped:
                await trio.sleep(self.period)
                self.on_beat(None)
        finally:
            # Cancelled at the end of the run: a stall that ended the run still gets its beat.
            self.on_beat(None)
            self.ended = True

    # -- monitor thread ------------------------------------------------------------------------
    def arm(self) -> bool:
        """Start the heartbeat from another thread; False when the loop is gone."""
        try:
            if self.kind == "trio":
                self.target.current_trio_token().run_sync_soon(self.trio_install)
            else:
                self.target.call_soon_threadsafe(self.asyncio_beat)
        except Exception:
            return False
        return True

    def running(self) -> bool:
        if self.kind == "trio":
            return not self.ended
        try:
            return bool(self.target.is_running())
        except Exception:
            return False

    def closed(self) -> bool:
        if self.ended:
            return True
        if self.kind == "trio":
            return False
        try:
            return bool(self.target.is_closed())
        except Exception:
            return True


# --- the monitor ---------------------------------------------------------------------------------


class _Monitor:
    """The process's one watchdog thread and the loops it watches."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.period = beat_period(threshold)
        self.handles: list[WatchdogHandle] = []
        self.watches: dict[int, _LoopWatch] = {}
        self.lock = threading.RLock()  # watches, gap processing, reporting
        self.wake = threading.Event()
        self.stopping = False
        self.next_discovery = 0.0
        self.groups: dict[tuple[str, str, str], int] = {}
        self.recent_calls: dict[tuple[str, int], float] = {}
        self.thread = threading.Thread(
            target=self._run, name="blockbuster_lite.watchdog", daemon=True
        )

    # -- configuration -------------------------------------------------------------------------
    def set_threshold(self, threshold: float) -> None:
        self.threshold = threshold
        self.period = beat_period(threshold)
        with self.lock:
            for watch in self.watches.values():
                watch.period = self.period
                watch.trigger = threshold + self.period / 2

    def note_violation(self, violation: Violation) -> None:
        """Observer: remember where the catalogue reported calls, so stalls are not doubled."""
        if violation.kind == "call":
            self.recent_calls[(violation.filename, violation.lineno)] = _perf()

    # -- registering loops ---------------------------------------------------------------------
    def watch_current_thread(self) -> None:
        """Watch the loop running on this thread, if any (the guard started in async code)."""
        loop = asyncio._get_running_loop()
        if loop is not None:
            watch = self._add(loop, "asyncio", arm=False)
            if watch is not None:
                watch.adopt(_task_boundary_asyncio(loop))
                with contextlib.suppress(RuntimeError):
                    loop.call_soon(watch.asyncio_beat)
            return
        from ._loop import trio_state

        run_context = trio_state.run_context
        runner = run_context.__dict__.get("runner") if run_context is not None else None
        if runner is not None:
            watch = self._add(runner, "trio", arm=False)
            if watch is not None:
                watch.adopt(_task_boundary_trio(run_context))
                watch.trio_install()

    def _add(self, target: Any, kind: str, *, arm: bool = True) -> _LoopWatch | None:
        with self.lock:
            known = self.watches.get(id(target))
            if known is not None and known.target is target and not known.closed():
                return None
            watch = _LoopWatch(self, target, kind)
            if arm and not watch.arm():
                return None
            self.watches[id(target)] = watch
            return watch

    def discover(self, frames: Mapping[int, FrameType]) -> None:
        busy = {w.thread_id for w in self.watches.values() if w.thread_id and w.running()}
        own = threading.get_ident()
        for thread_id, top in frames.items():
            if thread_id == own or thread_id in busy:
                continue
            for target, kind in _loops_on_stack(top):
                self._add(target, kind)

    # -- the thread ----------------------------------------------------------------------------
    def start(self) -> None:
        state.observers = (*state.observers, self.note_violation)
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout=5)
        state.observers = tuple(o for o in state.observers if o != self.note_violation)
        with self.lock:
            for watch in self.watches.values():
                watch.stopped = True

    def _run(self) -> None:
        while not self.stopping:
            try:
                interval = self.tick(_perf())
            except Exception as exc:  # the watchdog never takes the program down
                _log_failure(exc)
                interval = 1.0
            self.wake.wait(interval)
            self.wake.clear()

    def tick(self, now: float) -> float:
        """One round: report finished stalls, sample overdue loops; returns the next interval."""
        interval = _tick_interval(self.threshold)
        frames: dict[int, FrameType] | None = None
        with self.lock:
            if now >= self.next_discovery:
                frames = sys._current_frames()
                self.discover(frames)
                self.next_discovery = now + DISCOVERY_INTERVAL
            for key, watch in list(self.watches.items()):
                last_beat = watch.last_beat
                self._process_gaps(watch)
                if watch.thread_id is None:
                    if now - watch.registered > FIRST_BEAT_TIMEOUT:
                        self._forget(key, watch)
                    continue
                if not watch.running():
                    watch.paused = True
                    watch.samples.clear()
                    watch.task = None
                    if watch.stopped_since is None:
                        watch.stopped_since = now
                    if watch.closed() or now - watch.stopped_since > IDLE_FORGET:
                        self._forget(key, watch)
                    continue
                watch.stopped_since = None
                if now - last_beat - watch.period >= watch.period:
                    if frames is None:
                        frames = sys._current_frames()
                    top = frames.get(watch.thread_id)
                    if top is not None:
                        watch.samples.append(self._sample(watch, top, now))
                    interval = min(interval, _sample_interval(self.threshold))
                else:
                    while watch.samples and watch.samples[0].time < last_beat:
                        watch.samples.popleft()
                    if not watch.samples:
                        watch.task = None
            del frames  # frames of other threads must not outlive the tick
        return interval

    def _forget(self, key: int, watch: _LoopWatch) -> None:
        watch.stopped = True
        del self.watches[key]

    # -- samples -------------------------------------------------------------------------------
    def _sample(self, watch: _LoopWatch, top: FrameType, now: float) -> _Sample:
        frames = _callback_frames(top, watch)
        if not frames:
            return _Sample(now, idle=True)
        guards = state.guards
        guard = guards[-1] if guards else None
        infos = [code_info(frame) for frame in frames]
        catalogue = any(info.kind == INTERNAL and info.module == _HOTPATH_MODULE for info in infos)
        index = _site_index(infos)
        frame, info = frames[index], infos[index]
        excluded = False
        if guard is not None:
            if guard.allow:
                excluded = any(
                    rule.matches(i.module, i.filename, i.qualname) for i in infos for rule in guard.allow
                )
            if guard.scope is not None and not any(_in_packages(i.module, guard.scope) for i in infos):
                excluded = True
        if watch.task is None:
            watch.task = _running_task(watch, frames)
        if watch.task.exempt:
            excluded = True
        return _Sample(
            time=now,
            idle=False,
            filename=info.filename,
            lineno=frame.f_lineno,
            function=info.qualname,
            module=info.module,
            call=_call_name(frames, infos, index),
            stack=render_stack(frame),
            catalogue=catalogue,
            excluded=excluded,
        )

    # -- stalls --------------------------------------------------------------------------------
    def _process_gaps(self, watch: _LoopWatch, extra: Guard | None = None) -> None:
        while watch.gaps:
            start, end = watch.gaps.popleft()
            window = [s for s in watch.samples if start < s.time < end]
            self._stall(watch, start, end, window, extra)

    def _stall(
        self,
        watch: _LoopWatch,
        previous_beat: float,
        end: float,
        samples: list[_Sample],
        extra: Guard | None,
    ) -> None:
        duration = end - previous_beat - watch.period / 2
        busy = [s for s in samples if not s.idle]
        if duration < self.threshold or not busy:
            return
        votes = Counter(s.group for s in busy)
        best = max(votes.values())
        chosen = next(s for s in reversed(busy) if votes[s.group] == best)
        if chosen.catalogue or chosen.excluded:
            return
        seen = self.recent_calls.get((chosen.filename, chosen.lineno))
        if seen is not None and previous_beat <= seen <= end + self.threshold:
            return
        group = chosen.group
        lineno = self.groups.setdefault(group, chosen.lineno)
        task = watch.task or _TaskInfo()
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

    def flush(self, extra: Guard | None) -> None:
        """Report what is pending (called on stop, after the thread ended)."""
        with self.lock:
            loop = asyncio._get_running_loop()
            for watch in self.watches.values():
                if watch.thread_id == threading.get_ident() and (
                    watch.kind == "trio" or watch.target is loop
                ):
                    # Stopping from inside the loop: the current callback may be the stall,
                    # and its beat will never come while we are here.
                    now = _perf()
                    if now - watch.last_beat >= watch.trigger:
                        watch.gaps.append((watch.last_beat, now))
                        watch.last_beat = now
                self._process_gaps(watch, extra)


def _log_failure(exc: BaseException) -> None:
    with contextlib.suppress(Exception):
        logger.log(
            logging.ERROR,
            "blockbuster_lite: internal error in the watchdog",
            exc_info=(type(exc), exc, exc.__traceback__),
        )


# --- reporting -----------------------------------------------------------------------------------


def _emit(
    violation: Violation,
    module: str,
    context: contextvars.Context | None,
    extra: Guard | None,
) -> None:
    guards = state.guards
    guard = guards[-1] if guards else extra
    if guard is None:
        return
    mode = guard.effective_mode()
    action = Mode.LOG if mode in (Mode.LOG, Mode.OFF) else Mode.WARN
    if action is not violation.action:
        violation = _replace_action(violation, action)

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


def _replace_action(violation: Violation, action: Mode) -> Violation:
    from dataclasses import replace

    return replace(violation, action=action)


def _tell(violation: Violation, module: str) -> None:
    token = reentrant.set(True)
    try:
        if violation.action is Mode.LOG:
            logger.warning("%s", format_message(violation))
            return
        try:
            warnings.warn_explicit(
                format_message(violation),
                BlockingCallWarning,
                violation.filename,
                violation.lineno,
                module=module or None,
                registry=None,
            )
        except Exception:  # a warnings filter turned it into an error on our thread
            logger.warning("%s", format_message(violation))
    finally:
        reentrant.reset(token)


# --- reading another thread's stack --------------------------------------------------------------


def _callback_frames(top: FrameType, watch: _LoopWatch) -> list[FrameType]:
    """The frames of the callback running on the loop thread, innermost first ([] if idle)."""
    trio_codes = _trio_machinery()
    boundary = watch.boundary
    frames: list[FrameType] = []
    frame: FrameType | None = top
    while frame is not None:
        code = frame.f_code
        if code is boundary or code in _DISPATCH or code is trio_codes.unrolled_run:
            return frames
        if code in _LOOP_INTERNALS or code is trio_codes.run:
            return []
        frames.append(frame)
        frame = frame.f_back
    return []  # not inside this loop at all (it stopped between two looks)


def _site_index(infos: list[Any]) -> int:
    """The frame a stall is attributed to: innermost user frame, else library, else any."""
    first_library = first_other = None
    for index, info in enumerate(infos):
        if info.kind == USER:
            return index
        if info.kind == LIBRARY and first_library is None:
            first_library = index
        elif info.kind != INTERNAL and first_other is None:
            first_other = index
    if first_library is not None:
        return first_library
    return first_other if first_other is not None else 0


def _in_packages(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


_CALL_OPS = frozenset(
    op for name, op in dis.opmap.items() if name.startswith("CALL") or name == "PRECALL"
)


def _call_name(frames: list[FrameType], infos: list[Any], index: int) -> str:
    """What the attributed frame is running: a callee's name, or ``Python code``."""
    if index > 0:
        callee = infos[index - 1]
        qualname: str = callee.qualname
        if callee.kind == INTERNAL or not callee.module:
            return qualname
        return f"{callee.module}.{qualname}"
    frame = frames[0]
    try:
        name = _c_callee(frame)
    except Exception:
        name = None
    return name or PYTHON_CODE


def _c_callee(frame: FrameType) -> str | None:
    """The callee of the call instruction a frame is executing (a C function: no frame of its own)."""
    code = frame.f_code
    lasti = frame.f_lasti
    raw = code.co_code
    if lasti < 0 or lasti >= len(raw) or raw[lasti] not in _CALL_OPS:
        return None
    positions = getattr(code, "co_positions", None)
    if positions is None:
        return None
    for offset, position in enumerate(positions()):
        if offset == lasti // 2:
            lineno, _end, column, _end_column = position
            break
    else:
        return None
    if lineno is None or column is None:
        return None
    line = linecache.getline(code.co_filename, lineno).encode()
    text = line[column:].decode(errors="replace")
    expression = text.split("(", 1)[0].strip()
    parts = expression.split(".")
    if not expression or not all(part.isidentifier() for part in parts):
        return None
    return _resolve(parts, frame.f_globals) or expression


def _resolve(parts: list[str], namespace: Mapping[str, Any]) -> str | None:
    """``module.function`` for a dotted name, walking modules and classes only (no user code runs)."""
    sentinel = object()
    obj = namespace.get(parts[0], sentinel)
    if obj is sentinel:
        obj = getattr(builtins, parts[0], sentinel)
    if obj is sentinel:
        return None
    if isinstance(obj, types.ModuleType):
        return ".".join([obj.__name__, *parts[1:]])
    for part in parts[1:]:
        if not isinstance(obj, type):
            return None
        obj = inspect_static(obj, part)
        if obj is None:
            return None
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str):
        return qualname if module == "builtins" else f"{module}.{qualname}"
    return None


def inspect_static(owner: type, name: str) -> Any:
    for klass in owner.__mro__:
        if name in vars(klass):
            return vars(klass)[name]
    return None


def _task_boundary_asyncio(loop: asyncio.AbstractEventLoop) -> CodeType | None:
    task = _current_tasks().get(loop)
    frame = getattr(task.get_coro(), "cr_frame", None) if task is not None else None
    caller = frame.f_back if frame is not None else None
    return caller.f_code if caller is not None else None


def _task_boundary_trio(run_context: Any) -> CodeType | None:
    task = run_context.__dict__.get("task")
    frame = getattr(getattr(task, "coro", None), "cr_frame", None)
    caller = frame.f_back if frame is not None else None
    return caller.f_code if caller is not None else None


def _current_tasks() -> dict[Any, Any]:
    tasks = getattr(asyncio.tasks, "_current_tasks", None)
    return tasks if isinstance(tasks, dict) else {}


def _task_context(task: Any) -> contextvars.Context | None:
    get_context = getattr(task, "get_context", None)  # 3.12+
    if get_context is not None:
        context = get_context()
        return context if isinstance(context, contextvars.Context) else None
    context = getattr(task, "context", None)  # trio
    if isinstance(context, contextvars.Context):
        return context
    # 3.10/3.11: the C Task keeps its context private, but reports it to the garbage collector
    # first among its references.
    for referent in gc.get_referents(task):
        if isinstance(referent, contextvars.Context):
            return referent
    return None


def _running_task(watch: _LoopWatch, frames: list[FrameType]) -> _TaskInfo:
    task: Any = None
    try:
        if watch.kind == "asyncio":
            task = _current_tasks().get(watch.target)
            name = task.get_name() if task is not None else None
        else:
            on_stack = {id(frame) for frame in frames}
            for candidate in list(watch.target.tasks):
                coro_frame = getattr(candidate.coro, "cr_frame", None)
                if coro_frame is not None and id(coro_frame) in on_stack:
                    task = candidate
                    break
            name = getattr(task, "name", None)
        context = _task_context(task) if task is not None else None
    except Exception:  # a set changed size under us, a task type we do not know
        return _TaskInfo()
    if context is None:
        return _TaskInfo(name=name)
    snapshot = context.copy()  # the task goes on; keep what it was in during the stall
    request = snapshot.get(request_context)
    try:
        details = {k: v for k, v in dict(request or {}).items() if v is not None}
    except Exception:
        details = {}
    return _TaskInfo(name, snapshot, details, bool(snapshot.get(exempt, False)))


def _loops_on_stack(top: FrameType) -> Iterator[tuple[Any, str]]:
    """Loops (and trio runners) being run by a thread whose innermost frame is ``top``."""
    trio_codes = _trio_machinery()
    found = False
    frame: FrameType | None = top
    depth = 0
    while frame is not None and depth < 500:
        code = frame.f_code
        if code is _RUN_FOREVER or code is _RUNNER_RUN:
            owner = frame.f_locals.get("self")
            loop = owner if code is _RUN_FOREVER else getattr(owner, "_loop", None)
            if isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running():
                found = True
                yield loop, "asyncio"
        elif code is trio_codes.run or code is trio_codes.unrolled_run:
            runner = frame.f_locals.get("runner")
            if runner is not None and hasattr(runner, "current_trio_token"):
                found = True
                yield runner, "trio"
        frame = frame.f_back
        depth += 1
    if not found and "uvloop" in sys.modules:
        # uvloop's run_forever is C: an idle uvloop thread's innermost frame is its caller.
        for value in list(top.f_locals.values()):
            if isinstance(value, asyncio.AbstractEventLoop) and value.is_running():
                yield value, "asyncio"


# --- public entry points -------------------------------------------------------------------------


class WatchdogHandle:
    """What ``Guard.start()`` keeps: ``stop()`` ends this guard's watch (and the thread, if last)."""

    def __init__(self, guard: Guard, threshold: float) -> None:
        self.guard = guard
        self.threshold = threshold
        self._stopped = False

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            token = reentrant.set(True)
            try:
                _remove(self)
            finally:
                reentrant.reset(token)

    def __repr__(self) -> str:
        status = "stopped" if self._stopped else "running"
        return f"<WatchdogHandle {self.threshold * 1000:.0f} ms {status}>"


_monitor: _Monitor | None = None
_lock = threading.Lock()


def start_watchdog(guard: Guard, seconds: float) -> WatchdogHandle:
    """Watch every event loop of the process for stalls longer than ``seconds``."""
    if not seconds > 0:
        raise ValueError(f"watchdog threshold must be > 0, got {seconds!r}")
    handle = WatchdogHandle(guard, float(seconds))
    token = reentrant.set(True)  # our own locks and thread start are not the user's calls
    try:
        _start(handle)
    finally:
        reentrant.reset(token)
    return handle


def _start(handle: WatchdogHandle) -> None:
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
    monitor.wake.set()


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


def watched_loops() -> list[tuple[str, str]]:
    """``(kind, thread name)`` of every loop the watchdog watches now (diagnostics, tests)."""
    monitor = _monitor
    if monitor is None:
        return []
    with monitor.lock:
        return [(w.kind, w.thread_name) for w in monitor.watches.values() if w.thread_id]


def _restart_after_fork() -> None:
    # The monitor thread does not survive fork(); a forked worker gets its own.
    global _monitor, _lock
    _lock = threading.Lock()
    old = _monitor
    if old is None:
        return
    monitor = _monitor = _Monitor(min(h.threshold for h in old.handles))
    monitor.handles = list(old.handles)
    state.observers = tuple(o for o in state.observers if o != old.note_violation)
    monitor.start()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_restart_after_fork)

