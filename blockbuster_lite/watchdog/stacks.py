"""Reading an event-loop thread's stack from another thread: what runs, where, in which task.

The watchdog's monitor thread calls these on the frames ``sys._current_frames()`` gives it for a
loop thread. Nothing here runs user code: names are resolved through modules and classes only,
and frame locals are read only on the loop's own run frames (to find the loop object).

- ``callback_frames``: the frames of the callback the loop runs now ([] when it waits in its
  poll), cut at the loop's dispatch frame (``Handle._run``, trio's ``unrolled_run``, or the
  frame that called uvloop's C ``run_forever``).
- ``site_index`` / ``call_name``: the frame a stall is attributed to (the innermost user frame,
  as for patched calls) and what it was doing: the function it called, the C function its
  current instruction calls, or ``PYTHON_CODE``.
- ``running_task``: the asyncio or trio task, with a copy of its ``contextvars`` context.
- ``loops_on_stack``: the loops a thread runs, for loops started after the guard.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import dis
import gc
import linecache
import sys
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import CodeType, FrameType
from typing import Any

from ..core.policy import INTERNAL, LIBRARY, USER, CodeInfo
from ..core.state import exempt, request_context, state

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
    "trio_machinery",
]

#: The call of a stall spent in the attributed frame's own bytecode.
PYTHON_CODE = "Python code"


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


def callback_frames(top: FrameType, boundary: CodeType | None) -> list[FrameType]:
    """The frames of the callback running on a loop thread, innermost first ([] if idle)."""
    trio_codes = trio_machinery()
    frames: list[FrameType] = []
    frame: FrameType | None = top
    while frame is not None:
        code = frame.f_code
        if code is boundary or code in DISPATCH or code is trio_codes.unrolled_run:
            return frames
        if code in LOOP_INTERNALS or code is trio_codes.run:
            return []
        frames.append(frame)
        frame = frame.f_back
    return []  # not inside this loop at all (it stopped between two looks)


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
    return not any(i.module == p or i.module.startswith(p + ".") for i in infos for p in scope)


# 3.11 runs a specialized call to a builtin inside PRECALL, so the frame stops there.
_CALL_OPS = frozenset(
    op for name, op in dis.opmap.items() if name.startswith("CALL") or name == "PRECALL"
)


def call_name(frames: list[FrameType], infos: list[CodeInfo], index: int) -> str:
    """What the attributed frame is running: a callee's name, or ``Python code``."""
    if index > 0:
        callee = infos[index - 1]
        if callee.kind == INTERNAL or not callee.module:
            return callee.qualname
        return f"{callee.module}.{callee.qualname}"
    try:
        name = _c_callee(frames[0])
    except Exception:
        name = None
    return name or PYTHON_CODE


def _c_callee(frame: FrameType) -> str | None:
    """The callee of the call a frame is executing: a C function, which has no frame of its own."""
    code = frame.f_code
    lasti = frame.f_lasti
    raw = code.co_code
    positions = getattr(code, "co_positions", None)  # 3.11+
    if positions is None or not 0 <= lasti < len(raw) or raw[lasti] not in _CALL_OPS:
        return None
    for offset, position in enumerate(positions()):
        if offset == lasti // 2:
            lineno, _, column, _ = position
            break
    else:
        return None
    if lineno is None or column is None:
        return None
    line = linecache.getline(code.co_filename, lineno).encode()  # columns count UTF-8 bytes
    expression = line[column:].decode(errors="replace").split("(", 1)[0].strip()
    parts = expression.split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    return _resolve(parts, frame.f_globals) or expression


def _resolve(parts: list[str], namespace: Mapping[str, Any]) -> str | None:
    """``module.function`` for a dotted name, through modules and classes only (no user code runs)."""
    missing = object()
    obj = namespace.get(parts[0], missing)
    if obj is missing:
        obj = vars(builtins).get(parts[0], missing)
    if obj is missing:
        return None
    if isinstance(obj, types.ModuleType):
        return ".".join([obj.__name__, *parts[1:]])
    for part in parts[1:]:
        if not isinstance(obj, type):
            return None
        obj = next((vars(k)[part] for k in obj.__mro__ if part in vars(k)), None)
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    return qualname if module == "builtins" else f"{module}.{qualname}"


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
    """``(loop or trio runner, kind, dispatch code)`` for what a thread is running."""
    trio_codes = trio_machinery()
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
                yield loop, "asyncio", code
        elif code is trio_codes.run:
            runner = frame.f_locals.get("runner")
            if runner is not None and hasattr(runner, "current_trio_token"):
                found = True
                yield runner, "trio", None
        frame = frame.f_back
        depth += 1
    if not found and "uvloop" in sys.modules:
        # uvloop's run_forever is C: an idle uvloop thread's innermost frame is its caller.
        for value in list(top.f_locals.values()):
            if isinstance(value, asyncio.AbstractEventLoop) and value.is_running():
                yield value, "asyncio", top.f_code
