"""Violations and how they are told: the exception, the warning, the log record, the message."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from .config import Mode

__all__ = [
    "BlockingCallError",
    "BlockingCallWarning",
    "Violation",
    "format_message",
    "logger",
]

logger = logging.getLogger("blockbuster_lite")

DEFAULT_ADVICE = "offload with await anyio.to_thread.run_sync(...)"
_MAX_STACK = 40


@dataclass(frozen=True)
class Violation:
    """One blocking call detected on an event-loop thread.

    ``filename``/``lineno``/``function`` name the innermost frame of the user's own code (not the
    stdlib, not site-packages, not blockbuster_lite); a library frame only when no user frame is on
    the stack. ``stack`` lists ``file:line in function`` from the outermost frame to that one.
    ``action`` is the mode that was applied (a watchdog stall uses ``Mode.LOG`` or ``Mode.WARN``).
    ``duration_s`` is how long the call blocked, None when it did not run (raise mode).
    """

    call: str
    filename: str
    lineno: int
    function: str
    stack: tuple[str, ...] = field(default=(), compare=False, repr=False)
    action: Mode = Mode.WARN
    thread_name: str = ""
    task_name: str | None = None
    duration_s: float | None = None
    context: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    advice: str = field(default=DEFAULT_ADVICE, compare=False, repr=False)
    kind: str = "call"  # "call" for a patched call, "stall" for a watchdog report

    @property
    def thread(self) -> str:
        return self.thread_name

    @property
    def task(self) -> str | None:
        return self.task_name

    @property
    def site(self) -> str:
        """``file:line`` of the attributed frame, the file relative to the working directory."""
        return f"{display_path(self.filename)}:{self.lineno}"

    @property
    def message(self) -> str:
        return format_message(self)

    def __str__(self) -> str:
        return format_message(self)


#: Bound at import, before any activation: showing a path must never reach a patched os.getcwd.
_getcwd = os.getcwd


def display_path(filename: str) -> str:
    if not os.path.isabs(filename):
        return filename
    try:
        relative = os.path.relpath(filename, _getcwd())
    except (ValueError, OSError):
        return filename
    return filename if relative.startswith("..") else relative


def format_message(violation: Violation) -> str:
    where = f"{violation.site} in {violation.function}"
    if violation.kind == "stall":
        duration = violation.duration_s or 0.0
        head = f"Event loop blocked for {duration * 1000:.0f} ms in {violation.call} at {where}"
    else:
        # a described call already shows its arguments: "psycopg2.cursor.execute(SELECT 1)"
        call = violation.call if "(" in violation.call else f"{violation.call}()"
        head = f"Blocking call to {call} in async context at {where}"
    route = violation.context.get("route") or violation.context.get("path")
    if route:
        head += f" (request {violation.context.get('method', '')} {route})".replace("( ", "(")
    return f"{head}; {violation.advice}"


class BlockingCallError(RuntimeError):
    """A blocking call was made on a thread running an event loop (raise mode)."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(format_message(violation))
        self.violation = violation


class BlockingCallWarning(RuntimeWarning):
    """A blocking call was made on a thread running an event loop (warn mode)."""


_WARNING_NAMES = frozenset(
    {"blockbuster_lite.BlockingCallWarning", "blockbuster_lite.core.report.BlockingCallWarning"}
)
_ACTIONS = ("default", "error", "ignore", "always", "module", "once")


def apply_warning_options(options: list[str]) -> None:
    """Apply ``-W``/``PYTHONWARNINGS`` entries that name our warning class.

    CPython parses those options before site-packages can be imported, so it drops a category
    from an installed package ("Invalid -W option ignored"); we apply them once we exist.
    """
    import warnings

    for option in options:
        parts = [part.strip() for part in option.split(":")]
        if len(parts) < 3 or parts[2] not in _WARNING_NAMES:
            continue
        action = next((a for a in _ACTIONS if parts[0] and a.startswith(parts[0])), None)
        lineno = parts[4] if len(parts) > 4 else ""
        if action is None or (lineno and not lineno.isdigit()):
            continue
        message = parts[1]
        module = parts[3] if len(parts) > 3 else ""
        warnings.filterwarnings(
            action,  # type: ignore[arg-type]
            message,
            BlockingCallWarning,
            f"{module}\\Z" if module else "",
            int(lineno or 0),
        )


def warn_violation(violation: Violation, module: str | None) -> None:
    """Issue the BlockingCallWarning for ``violation`` at its site, through ``warnings``' filters."""
    import warnings

    warnings.warn_explicit(
        format_message(violation),
        BlockingCallWarning,
        violation.filename,
        violation.lineno,
        module=module or None,
        registry=None,
    )


def render_stack(frame: FrameType | None) -> tuple[str, ...]:
    """``file:line in function`` lines, outermost first, without reading any source file."""
    lines: list[str] = []
    while frame is not None and len(lines) < _MAX_STACK:
        code = frame.f_code
        lines.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        frame = frame.f_back
    lines.reverse()
    return tuple(lines)


def current_thread_name() -> str:
    return threading.current_thread().name
