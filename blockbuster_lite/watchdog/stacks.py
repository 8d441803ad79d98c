"""Reading an event-loop thread's stack from another thread: what runs, where, in which task.

The watchdog's monitor thread calls these on the frames ``sys._current_frames()`` gives it for a
loop thread. Nothing here runs user code. Frame locals are read only where the frame waits in a
call (a loop's run frame, greenback's trampoline, an idle uvloop thread's innermost frame at a
call instruction): CPython 3.11 can crash reading the locals of a frame caught elsewhere.

- ``callback_frames``: the frames of the callback the loop runs now ([] when it waits in its
  poll), cut at the loop's dispatch frame (``Handle._run``, trio's ``unrolled_run``, or the
  frame that called uvloop's C ``run_forever``).
- ``site_index``: the frame a stall is attributed to (the innermost user frame, as for patched
  calls); ``calls`` names what it was doing.
- ``running_task``: the asyncio or trio task, with a copy of its ``contextvars`` context.
- ``loops_on_stack``: the loops a thread runs, for loops that started before the watchdog.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

from ..core.policy import INTERNAL, LIBRARY, USER, CodeInfo, in_packages
from ..core.state import exempt, request_context, state
from .calls import PYTHON_CODE, call_name, suspended_locals, top_call
from .hooks import RUN_CODES

__all__ = [
    "DISPATCH",
    "LOOP_INTERNALS",
    "PYTHON_CODE",
    "TaskInfo",
    "call_name",
    "callback_frames",
    "current_tasks",
    "excluded_by_guard",
    "loops_on_stack",
    "running_task",
    "site_index",
    "task_boundary_asyncio",
    "top_call",
    "trio_machinery",
]

def _codes(*functions: Any) -> frozenset[CodeType]:
    return frozenset(
        code
        for code in (getattr(f, "__code__", None) for f in functions)
        if isinstance(code, CodeType)
    )


_BaseEventLoop = asyncio.base_events.BaseEventLoop
#: Frames that call a loop callback: everything above them is the running callback.
DISPATCH = _codes(asyncio.events.Handle._run)
#: Frames of the loop itself: a stack that reaches one of these before a dispatch frame is idle.
LOOP_INTERNALS = _codes(
    getattr(_BaseEventLoop, "_run_once", None),
    _BaseEventLoop.run_forever,
    _BaseEventLoop.run_until_complete,
)
_RUN_FOREVER = _BaseEventLoop.run_forever.__code__
#: ``asyncio.Runner.run`` (3.11+) holds its loop in ``self._loop``, uvloop's included.
_RUNNER_RUN = next(iter(_codes(getattr(getattr(asyncio, "Runner", None), "run", None))), None)


@dataclass(frozen=True)
class _TrioCodes:
    unrolled_run: CodeType | None = None
    run: CodeType | None = None


_trio_codes = _TrioCodes()


def trio_machinery() -> _TrioCodes:
    """trio's run-loop code objects once trio is imported (this module never imports it)."""
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


@dataclass
class TaskInfo:
    name: str | None = None
    context: contextvars.Context | None = None
    request: dict[str, Any] = field(default_factory=dict)
    exempt: bool = False


def callback_frames(
    top: FrameType, boundary: CodeType | None, in_turn: bool = False
) -> list[FrameType]:
    """The frames of the callback running on a loop thread, innermost first ([] if idle).

    ``in_turn``: the loop's own hook says a callback is running. A stack that then ends
    without reaching the loop's dispatch frame belongs to a greenlet whose parent we cannot
    reach (the frames of a greenlet stop at its first one): it is the callback.
    """
    trio_codes = trio_machinery()
    frames: list[FrameType] = []
    frame: FrameType | None = top
    while frame is not None:
        code = frame.f_code
        if (
            code is boundary
            or code in DISPATCH
            or code in RUN_CODES
            or code is trio_codes.unrolled_run
        ):
            return frames
        if code in LOOP_INTERNALS or code is trio_codes.run:
            return []
        frames.append(frame)
        # (A frame with a callee above it waits in that call: its locals are safe to read.)
        frame = frame.f_back or (_greenlet_parent(frame) if frame is not top else None)
    # Not inside this loop at all (it stopped between two looks), or inside a greenlet.
    return frames if in_turn else []


def _greenlet_parent(frame: FrameType) -> FrameType | None:
    """Where a greenback portal's greenlet came from: the task's own frames, suspended.

    In offload mode a task's coroutine runs in a greenlet (``greenback``'s ``trampoline``, or
    the pooled one of ``offload.greenlets._serve``) so that sync code can wait for a worker
    thread. A greenlet's stack ends at its first frame,
    not at the loop; its parent greenlet, suspended while it runs, holds the task's frames
    (``greenback_shim``) down to the loop's dispatch frame.
    """
    impl = sys.modules.get("greenback._impl")
    trampoline = getattr(getattr(impl, "trampoline", None), "__code__", None)
    pooled = getattr(sys.modules.get("blockbuster_lite.offload.greenlets"), "SERVE_CODE", None)
    if frame.f_code is not trampoline and (pooled is None or frame.f_code is not pooled):
        return None
    try:
        frame_locals = suspended_locals(frame, innermost=False)  # it waits in a switch
        portal = frame_locals.get("portal_greenlet") if frame_locals is not None else None
        parent = getattr(portal, "gr_frame", None)
    except Exception:
        return None
    return parent if isinstance(parent, FrameType) else None


def site_index(infos: list[CodeInfo]) -> int:
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


def excluded_by_guard(infos: list[CodeInfo]) -> bool:
    """The innermost guard's allow rules and scope apply to stalls as to calls."""
    guards = state.guards
    if not guards:
        return False
    guard = guards[-1]
    if any(rule.matches(i.module, i.filename, i.qualname) for i in infos for rule in guard.allow):
        return True
    scope = guard.scope
    if scope is None:
        return False
    return not any(in_packages(i.module, scope) for i in infos)


def task_boundary_asyncio(loop: asyncio.AbstractEventLoop) -> CodeType | None:
    """The code under the current task's coroutine: uvloop's callers have no fixed name."""
    task = current_tasks().get(loop)
    frame = getattr(task.get_coro(), "cr_frame", None) if task is not None else None
    caller = frame.f_back if frame is not None else None
    return caller.f_code if caller is not None else None


def current_tasks() -> dict[Any, Any]:
    tasks = getattr(asyncio.tasks, "_current_tasks", None)
    return tasks if isinstance(tasks, dict) else {}


def _task_context(task: Any) -> contextvars.Context | None:
    get_context = getattr(task, "get_context", None)  # asyncio 3.12+
    if get_context is not None:
        context = get_context()
        return context if isinstance(context, contextvars.Context) else None
    context = getattr(task, "context", None)  # trio
    if isinstance(context, contextvars.Context):
        return context
    # asyncio 3.10/3.11: the C Task keeps its context private but reports it to the garbage
    # collector, first among its references.
    for referent in gc.get_referents(task):
        if isinstance(referent, contextvars.Context):
            return referent
    return None


def running_task(kind: str, target: Any, frames: list[FrameType]) -> TaskInfo:
    """The task running the callback ``frames`` belong to: ``target`` is the asyncio loop or the
    trio runner. Its context is copied now, while the task is still in the stall."""
    task: Any = None
    try:
        if kind == "asyncio":
            task = current_tasks().get(target)
            name = task.get_name() if task is not None else None
        else:
            on_stack = {id(frame) for frame in frames}
            for candidate in list(target.tasks):
                coro_frame = getattr(candidate.coro, "cr_frame", None)
                if coro_frame is not None and id(coro_frame) in on_stack:
                    task = candidate
                    break
            name = getattr(task, "name", None)
        context = _task_context(task) if task is not None else None
    except Exception:  # a set changed size under us, a task type we do not know
        return TaskInfo()
    if context is None:
        return TaskInfo(name=name)
    snapshot = context.copy()  # the task goes on: keep what it was in during the stall
    request = snapshot.get(request_context)
    try:
        details = {k: v for k, v in dict(request or {}).items() if v is not None}
    except Exception:
        details = {}
    return TaskInfo(name, snapshot, details, bool(snapshot.get(exempt, False)))


def loops_on_stack(top: FrameType) -> Iterator[tuple[Any, str, CodeType | None]]:
    """``(loop or trio runner, kind, dispatch code)`` for what a thread is running.

    Only frames under the innermost one are read (each waits in its call to the next): the
    innermost frame of another thread is never read here. CPython 3.11 crashed twice in the test
    suite reading it (a uvloop thread's top frame, found waiting in uvloop's C loop, read while
    that thread had gone on into our run hook), even with the check and the read back to back.
    So a uvloop loop already running in another thread when the watchdog starts, whose only
    Python frame is that top one, is watched from its next run (the run hooks), not found here.
    """
    trio_codes = trio_machinery()
    frame: FrameType | None = top.f_back
    depth = 0
    while frame is not None and depth < 500:
        code = frame.f_code
        if code is _RUN_FOREVER or code is _RUNNER_RUN:
            frame_locals = suspended_locals(frame, innermost=False)
            owner = frame_locals.get("self") if frame_locals is not None else None
            loop = owner if code is _RUN_FOREVER else getattr(owner, "_loop", None)
            if isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running():
                yield loop, "asyncio", code
        elif code is trio_codes.run:
            frame_locals = suspended_locals(frame, innermost=False)
            runner = frame_locals.get("runner") if frame_locals is not None else None
            if runner is not None and hasattr(runner, "current_trio_token"):
                yield runner, "trio", None
        frame = frame.f_back
        depth += 1


