"""Violations and how they are told: the exception, the warning, the log record, the message."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import FrameType
from typing import Any

from .config import Mode

__all__ = [
    "BlockingCallError",
    "BlockingCallWarning",
    "Frames",
    "Violation",
    "capture_frames",
    "escape_control",
    "evolve",
    "format_message",
    "logger",
    "worker_tag",
]

logger = logging.getLogger("blockbuster_lite")

DEFAULT_ADVICE = "offload with await anyio.to_thread.run_sync(...)"
_MAX_STACK = 40

#: One frame of a kept stack: (filename, lineno, function).
Frame = tuple[str, int, str]


def escape_control(text: str) -> str:
    """``text`` with every non-printable character escaped: ``\\r``, ``\\n``, ``\\t``, ``\\x1b``...

    Applied to every user-controlled string a report prints, logs, returns or exports (request
    method, path and route, described calls, file and function names), so a request path cannot
    forge a log line or send terminal escape codes. C0 and C1 controls, DEL, line and paragraph
    separators, bidirectional overrides and other format characters are escaped; printable text
    (any script) is kept. Idempotent: an escaped string is printable.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


_SHORT_ESCAPES = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def _escape_char(ch: str) -> str:
    short = _SHORT_ESCAPES.get(ch)
    if short is not None:
        return short
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class Frames(tuple[Frame, ...]):
    """A stack kept compactly: ``(filename, lineno, function)`` per frame, outermost first.

    The strings are the code objects' own and the tuples are shared between violations made
    from the same place (``capture_frames``), so a kept violation costs a few pointers, not a
    rendered string per frame. ``render()`` gives the ``file:line in function`` lines.
    """

    __slots__ = ()

    def render(self) -> tuple[str, ...]:
        rendered = _Rendered(
            escape_control(f"{filename}:{lineno} in {function}")
            for filename, lineno, function in self
        )
        rendered.frames = self
        return rendered


class _Rendered(tuple[str, ...]):
    """Rendered lines that remember their frames: ``dataclasses.replace`` keeps them compact."""

    frames: Frames


class _StackField:
    """``Violation.stack``: stored as ``Frames``, read as a tuple of ``file:line in function``."""

    # Stored under STACK_SLOT with object.__setattr__, not through ``__dict__``: reading an
    # instance's ``__dict__`` would give it a real dict (64 bytes) instead of its inline values.

    def __get__(self, instance: object, owner: type | None = None) -> tuple[str, ...]:
        if instance is None:
            return ()
        stack = getattr(instance, STACK_SLOT, ())
        return stack.render() if isinstance(stack, Frames) else stack

    def __repr__(self) -> str:  # how the default shows in signatures
        return "()"

    def __set__(self, instance: object, value: object) -> None:
        if value is self:  # the dataclass default
            value = ()
        elif isinstance(value, _Rendered):
            value = value.frames
        object.__setattr__(instance, STACK_SLOT, value)


#: Where a Violation keeps its stack (``Frames``, or the lines it was given).
STACK_SLOT = "_stack"


# Frames and stacks seen recently, shared by the violations that repeat them; cleared when full
# (violations keep theirs), so this costs at most a few MiB whatever the load (1,024 stacks of
# at most 40 frames, 4,096 frames), and usually a few KiB.
_INTERN_LIMIT = 4096
_STACK_INTERN_LIMIT = 1024
_interned_frames: dict[Frame, Frame] = {}
_interned_stacks: dict[Frames, Frames] = {}


def capture_frames(frame: FrameType | None) -> Frames:
    """The compact stack from ``frame`` outward (innermost 40 frames), without reading files."""
    frames: list[Frame] = []
    interned = _interned_frames
    while frame is not None and len(frames) < _MAX_STACK:
        code = frame.f_code
        item = (code.co_filename, frame.f_lineno, code.co_name)
        shared = interned.get(item)
        if shared is None:
            if len(interned) >= _INTERN_LIMIT:
                interned.clear()
            shared = interned[item] = item
        frames.append(shared)
        frame = frame.f_back
    frames.reverse()
    stack = Frames(frames)
    shared_stack = _interned_stacks.get(stack)
    if shared_stack is None:
        if len(_interned_stacks) >= _STACK_INTERN_LIMIT:
            _interned_stacks.clear()
        shared_stack = _interned_stacks[stack] = stack
    return shared_stack


@dataclass(frozen=True)
class Violation:
    """One blocking call detected on an event-loop thread.

    ``filename``/``lineno``/``function`` name the innermost frame of the user's own code (not the
    stdlib, not site-packages, not blockbuster_lite); a library frame only when no user frame is on
    the stack. ``stack`` lists ``file:line in function`` from the outermost frame to that one.
    ``action`` is the mode that was applied (a watchdog stall uses ``Mode.LOG`` or ``Mode.WARN``).
    ``duration_s`` is how long the call blocked, None when it did not run (raise mode).
    ``library_frame`` is ``(filename, lineno, function)`` of the innermost library frame when a
    library (site-packages) made the call, else None.
    """

    call: str
    filename: str
    lineno: int
    function: str
    stack: tuple[str, ...] = field(  # kept as Frames, rendered when read (see _StackField)
        default=_StackField(),  # type: ignore[arg-type]
        compare=False,
        repr=False,
    )
    action: Mode = Mode.WARN
    thread_name: str = ""
    task_name: str | None = None
    duration_s: float | None = None
    context: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    advice: str = field(default=DEFAULT_ADVICE, compare=False, repr=False)
    kind: str = "call"  # "call" for a patched call, "stall" for a watchdog report
    #: The call's family when ``call`` is described with its arguments: ``Target.call``
    #: (``sqlite3.Cursor.execute`` for ``sqlite3.Cursor.execute(SELECT ...)``); "" when
    #: ``call`` is the family itself. Reports are deduplicated and counted per family and site.
    family: str = field(default="", compare=False, repr=False)
    library_frame: tuple[str, int, str] | None = field(default=None, compare=False)

    @property
    def thread(self) -> str:
        return self.thread_name

    @property
    def task(self) -> str | None:
        return self.task_name

    @property
    def site(self) -> str:
        """``file:line`` of the attributed frame, the file relative to the working directory."""
        return f"{escape_control(display_path(self.filename))}:{self.lineno}"

    @property
    def report_key(self) -> tuple[str, str, str, int, str]:
        """What repeats of one detection share: kind, call family, file, line, function.

        The described call (``socket.connect`` to one port, one SQL statement) is the detail of
        one sample, not an identity, so the number of keys is bounded by the program's code.
        """
        return (self.kind, self.family or self.call, self.filename, self.lineno, self.function)

    @property
    def message(self) -> str:
        return format_message(self)

    def __str__(self) -> str:
        return format_message(self)


def evolve(violation: Violation, **changes: Any) -> Violation:
    """``dataclasses.replace`` without rendering the stack (which ``replace`` would read) and
    without giving either object a ``__dict__`` (attributes set in ``__init__``'s order)."""
    copy = object.__new__(type(violation))
    setattr_ = object.__setattr__
    for name in _stored_names(type(violation)):
        value = changes[name] if name in changes else getattr(violation, name)
        setattr_(copy, name, value)
    return copy


def _stored_names(cls: type) -> tuple[str, ...]:
    names: tuple[str, ...] | None = cls.__dict__.get("_stored_names_cache")
    if names is None:
        names = tuple(STACK_SLOT if f.name == "stack" else f.name for f in fields(cls))
        type.__setattr__(cls, "_stored_names_cache", names)
    return names


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


def library_path(filename: str) -> str:
    """A library file as its import path shows it: ``asyncpg/connect_utils.py``."""
    for marker in ("site-packages", "dist-packages"):
        _, found, tail = filename.rpartition(marker + os.sep)
        if found:
            return tail.replace(os.sep, "/")
    return display_path(filename)


def library_advice(module: str, filename: str) -> str:
    """The fix for a call made inside a library: an allow rule to copy, or offload its caller."""
    rule = module or library_path(filename)
    package = rule.split(".", 1)[0].split("/", 1)[0]
    return (
        f'allow it with BLOCKBUSTER_LITE_ALLOW={rule} or allow=["{rule}"]; or use {package}\'s '
        "async API, or offload the call into it with await anyio.to_thread.run_sync(...)"
    )


def format_message(violation: Violation) -> str:
    where = f"{violation.site} in {violation.function}"
    call = violation.call
    if violation.kind == "stall":
        duration = violation.duration_s or 0.0
        head = f"Event loop blocked for {duration * 1000:.0f} ms in {call} from {where}"
    else:
        # a described call already shows its arguments: "psycopg2.cursor.execute(SELECT ...)"
        head = (
            f"Blocking call to {call if '(' in call else call + '()'} in async context at {where}"
        )
        library = violation.library_frame
        if library is not None and library[:2] != (violation.filename, violation.lineno):
            head += f" (inside {library_path(library[0])}:{library[1]} in {library[2]})"
    route = violation.context.get("route") or violation.context.get("path")
    if route:
        method = violation.context.get("method") or ""
        head += f" (request {method} {route})".replace("( ", "(")
    return escape_control(f"{head}; {violation.advice}{_duration_text(violation)}")


def _duration_text(violation: Violation) -> str:
    if violation.kind != "call" or violation.duration_s is None:
        return ""
    milliseconds = format_ms(violation.duration_s)
    if violation.action is Mode.OFFLOAD:
        return f" (ran {milliseconds} ms in a worker thread, off the loop)"
    return f" (blocked {milliseconds} ms)"


def format_ms(seconds: float) -> str:
    """Milliseconds, with the digits a short call needs: ``300.2``, ``0.004``."""
    milliseconds = seconds * 1000
    return (
        f"{milliseconds:.1f}" if milliseconds >= 1 or milliseconds == 0 else f"{milliseconds:.3f}"
    )


class BlockingCallError(RuntimeError):
    """A blocking call was made on a thread running an event loop (raise mode)."""

    def __init__(self, violation: Violation) -> None:
        super().__init__(format_message(violation))
        self.violation = violation


class BlockingCallWarning(RuntimeWarning):
    """A blocking call was made on a thread running an event loop (warn mode)."""


_forked = False


def _note_fork() -> None:
    global _forked
    _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_note_fork)


def worker_tag() -> str:
    """`` [pid N]`` in a worker process (forked, e.g. gunicorn, or spawned by multiprocessing,
    e.g. ``uvicorn --workers``) and in gunicorn's arbiter, so lines from several processes can
    be told apart; else ``""``."""
    if not _forked and "gunicorn.arbiter" not in sys.modules:
        multiprocessing = sys.modules.get("multiprocessing")
        parent = getattr(multiprocessing, "parent_process", None)
        if parent is None or parent() is None:
            return ""
    return f" [pid {os.getpid()}]"


def report_text(violation: Violation) -> str:
    """The message as warnings and log records show it: with the worker's pid, if any."""
    return format_message(violation) + worker_tag()


def render_stack(frame: FrameType | None) -> tuple[str, ...]:
    """``file:line in function`` lines, outermost first, without reading any source file."""
    return capture_frames(frame).render()


def current_thread_name() -> str:
    return threading.current_thread().name
