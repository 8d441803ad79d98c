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
    #: Builds a replacement from the original instead of a FunctionWrapper (C types, factories).
    replace: Callable[[Any], Any] | None = None
    #: ``(instance, args, kwargs) -> str``: the call's name in a report, when it depends on the
    #: arguments (``psycopg2.cursor.execute(SELECT ...)``); run only to build a violation.
    describe: Callable[[Any, tuple[Any, ...], dict[str, Any]], str] | None = None
    #: The method takes no keyword arguments (C methods whose signature Python cannot read).
    positional_only: bool = False
