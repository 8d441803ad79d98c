"""The one hot-path question: is this thread driving an event loop right now?

asyncio (and uvloop, and anyio's asyncio backend) record the running loop per thread, and
``asyncio._get_running_loop`` answers from C in about 30 ns. Trio has no asyncio loop; it keeps its
run state in a ``threading.local`` whose per-thread ``__dict__`` holds ``runner`` while ``trio.run``
is active on that thread. We learn about that object only once trio is imported, so a process that
never imports trio pays nothing for it.
"""

from __future__ import annotations

import sys
import threading
from asyncio import _get_running_loop
from typing import Any

__all__ = ["current_library", "current_task_name", "loop_gate", "on_loop_thread"]


class _TrioState:
    """Holds trio's run-context object once trio has been imported (None before).

    A slot, not a class attribute: every wrapper reads it on every call, and CPython 3.11
    specialises a slot read (~15 ns) but not a class attribute read through an instance (~45 ns).
    """

    __slots__ = ("run_context",)

    def __init__(self) -> None:
        self.run_context: Any = None


trio_state = _TrioState()


def note_trio_imported(module: object = None) -> None:
    """Find trio's per-thread run context; called at activation and from the import hook."""
    for name in ("trio._core._run_context", "trio._core._run"):
        candidate = getattr(sys.modules.get(name), "GLOBAL_RUN_CONTEXT", None)
        if isinstance(candidate, threading.local):
            trio_state.run_context = candidate
            return


def on_loop_thread() -> bool:
    """True when the calling thread is running an asyncio/uvloop/anyio loop or a trio run."""
    if _get_running_loop() is not None:
        return True
    run_context = trio_state.run_context
    return run_context is not None and "runner" in run_context.__dict__


def loop_gate() -> Any:
    """The ``enabled`` callable for a ``wrapt.FunctionWrapper`` whose handler acts only on a loop
    thread: asyncio's C ``_get_running_loop`` until trio is imported (off the loop wrapt then
    calls the original from C, with no Python frame), ``on_loop_thread`` after. The patcher
    rebuilds wrappers gated by asyncio's alone once trio is imported."""
    return _get_running_loop if trio_state.run_context is None else on_loop_thread


def current_library() -> str | None:
    """``"asyncio"`` or ``"trio"`` for the loop this thread drives, else None."""
    if _get_running_loop() is not None:
        return "asyncio"
    run_context = trio_state.run_context
    if run_context is not None and "runner" in run_context.__dict__:
        return "trio"
    return None


def current_task_name() -> str | None:
    """Name of the task running on this thread's loop, if any (asyncio or trio)."""
    library = current_library()
    if library == "asyncio":
        import asyncio

        try:
            task = asyncio.current_task()
        except RuntimeError:
            return None
        return task.get_name() if task is not None else None
    if library == "trio":
        task = trio_state.run_context.__dict__.get("task")
        return getattr(task, "name", None)
    return None
