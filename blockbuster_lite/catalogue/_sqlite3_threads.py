"""Which sqlite3 calls offload mode may move to a worker thread (``Target.offload_problem``).

A sqlite3 connection made with ``check_same_thread=True`` (the default) raises
``ProgrammingError`` when used from any other thread: moving its calls, or ``sqlite3.connect``
itself (the connection would then belong to the worker), would break the program. Those calls
run in place, reported as warn mode with the reason; connections made while active with
``check_same_thread=False`` move like any other call.
"""

from __future__ import annotations

import weakref
from typing import Any

__all__ = ("ANY_THREAD", "THREAD_BOUND", "connect_problem", "object_problem", "same_thread")

#: Why offload mode runs a call on a thread-bound sqlite3 object in place.
THREAD_BOUND = (
    "sqlite3 objects are bound to the thread that made them (check_same_thread=True): moved to "
    "a worker thread the call would raise ProgrammingError, so it runs in place (connect with "
    "check_same_thread=False to let offload mode move it)"
)

#: Connections made while active with ``check_same_thread=False``: usable from any thread, so
#: offload mode may move their calls (and their cursors') to a worker thread.
ANY_THREAD: weakref.WeakSet[Any] = weakref.WeakSet()


def same_thread(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    flag = args[4] if len(args) > 4 else kwargs.get("check_same_thread", True)
    return bool(flag)


def connect_problem(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Offload mode: a connection made in a worker thread would be usable only there."""
    return THREAD_BOUND if same_thread(args, kwargs) else None


def object_problem(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Offload mode: a connection's or cursor's call moves only if the connection was made with
    ``check_same_thread=False`` while active (others, made before, are taken as bound)."""
    connection = getattr(instance, "connection", instance)  # a cursor's, or the connection
    return None if connection in ANY_THREAD else THREAD_BOUND
