"""The Target type the catalogue tables are written in: what to patch and how to judge a call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .report import DEFAULT_ADVICE

__all__ = ["Predicate", "Target"]

#: ``(instance, args, kwargs) -> True`` when the call would really block.
Predicate = Callable[[Any, tuple[Any, ...], dict[str, Any]], bool]


@dataclass(frozen=True)
class Target:
    """One patched callable."""

    module: str
    path: str
    call: str
    predicate: Predicate | None = None
    advice: str = DEFAULT_ADVICE
    offload: bool = True  # safe to run in a worker thread in offload mode
    #: ``(instance, args, kwargs) -> why not``: a call offload mode must run in place after all
    #: (an object bound to the thread that made it: sqlite3's ``check_same_thread``); None: it
    #: can move. Asked only in offload mode, for calls that would be offloaded.
    offload_problem: Callable[[Any, tuple[Any, ...], dict[str, Any]], str | None] | None = None
    #: Builds a replacement from the original instead of a FunctionWrapper (C types, factories).
    replace: Callable[[Any], Any] | None = None
    #: ``(instance, args, kwargs) -> str``: the call's name in a report, when it depends on the
    #: arguments (``psycopg2.cursor.execute(SELECT ...)``); run only to build a violation.
    describe: Callable[[Any, tuple[Any, ...], dict[str, Any]], str] | None = None
    #: The method takes no keyword arguments (C methods whose signature Python cannot read).
    positional_only: bool = False
    #: A socket method: on the loop, a socket in non-blocking mode (``timeout == 0.0``, as
    #: asyncio's and trio's transports use) passes before the predicate is called.
    socket_method: bool = False
    #: At most this many positional arguments (C methods whose signature Python cannot read):
    #: a socket method's replacement then takes them in fixed slots.
    max_args: int | None = None
