"""What a sampled frame is doing: the function its caller called, or the C function its
current instruction calls, named through modules, classes, the frame's variables and instance
dictionaries only (no user code runs: no property, no ``__getattr__``)."""

from __future__ import annotations

import builtins
import dis
import linecache
import os
import sys
import types
from types import FrameType
from typing import Any

from ..core.policy import INTERNAL, CodeInfo

__all__ = ["CALL_OPS", "PYTHON_CODE", "call_name", "suspended_locals", "top_call"]

#: The call of a stall spent in the attributed frame's own bytecode.
PYTHON_CODE = "Python code"

# 3.11 runs a specialized call to a builtin inside PRECALL, so the frame stops there.
CALL_OPS = frozenset(
    op for name, op in dis.opmap.items() if name.startswith("CALL") or name == "PRECALL"
)

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def suspended_locals(frame: FrameType, innermost: bool = True) -> dict[str, Any] | None:
    """The locals of another thread's frame, read only where that is safe; None: not now.

    A frame under the innermost one waits in the call to it, its state saved: it is read. The
    innermost frame is read only while it waits in a call to C, and never if it is ours, with
    the check and the read back to back (attribute reads, subscripts and comparisons, no call
    between them, so this thread offers no GIL switch in between). That narrows the risk
    without removing it: CPython 3.11 still crashed once reading a uvloop thread's innermost
    frame this way, so loop discovery (``stacks.loops_on_stack``) reads no innermost frame at
    all. The one innermost read left is naming the callee of a stalled frame, which has been
    waiting in that C call for at least the watchdog's threshold.
    """
    if not innermost:
        try:
            return frame.f_locals
        except Exception:
            return None
    code = frame.f_code
    if code.co_filename.startswith(_PACKAGE_DIR):
        return None  # our own innermost frames: never read from another thread
    raw = code.co_code
    lasti = frame.f_lasti
    if lasti < 0:
        return None
    try:
        if raw[lasti] not in CALL_OPS:
            return None
        return frame.f_locals
    except Exception:  # lasti past the end, a frame torn down meanwhile
        return None


def call_name(frames: list[FrameType], infos: list[CodeInfo], index: int) -> str:
    """What the attributed frame is running: a callee's name, or ``Python code``."""
    if index > 0:
        return _qualified(infos[index - 1])
    try:
        name = _c_callee(frames[0])
    except Exception:
        name = None
    return name or PYTHON_CODE


def top_call(frames: list[FrameType], infos: list[CodeInfo], index: int, call: str) -> str:
    """The call at the very top of the stack when it is not ``call`` itself ("" otherwise):
    ``_thread.lock.acquire`` under the ``queue.Queue.get`` the user's frame called."""
    if index == 0:
        return ""
    try:
        name = _c_callee(frames[0]) or _qualified(infos[0])
    except Exception:
        return ""
    return "" if name == call else name


def _qualified(info: CodeInfo) -> str:
    if info.kind == INTERNAL or not info.module:
        return info.qualname
    return f"{info.module}.{info.qualname}"


def _c_callee(frame: FrameType) -> str | None:
    """The callee of the call a frame is executing: a C function, which has no frame of its own."""
    code = frame.f_code
    lasti = frame.f_lasti
    raw = code.co_code
    positions = getattr(code, "co_positions", None)  # 3.11+
    if positions is None or not 0 <= lasti < len(raw) or raw[lasti] not in CALL_OPS:
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
    return _resolve(parts, frame) or expression


_MISSING = object()


def _resolve(parts: list[str], frame: FrameType) -> str | None:
    """``module.function`` for a dotted name, through the frame's variables, modules, classes
    and instance dictionaries only: no user code runs (no property, no ``__getattr__``)."""
    first = parts[0]
    obj: Any = _MISSING
    code = frame.f_code
    if first in code.co_varnames or first in code.co_cellvars or first in code.co_freevars:
        frame_locals = suspended_locals(frame)
        if frame_locals is None:
            return None
        obj = frame_locals.get(first, _MISSING)
    if obj is _MISSING:
        obj = frame.f_globals.get(first, _MISSING)
    if obj is _MISSING:
        obj = vars(builtins).get(first, _MISSING)
    owner: type | None = None  # the class the last attribute was found on
    for number, part in enumerate(parts[1:], 2):
        last = number == len(parts)
        if obj is _MISSING:
            return None
        owner = None
        if isinstance(obj, types.ModuleType):
            obj = vars(obj).get(part, _MISSING)
            continue
        klass = obj if isinstance(obj, type) else type(obj)
        found = next((k for k in klass.__mro__ if part in vars(k)), None)
        attribute = vars(found)[part] if found is not None else _MISSING
        if found is not None and (isinstance(obj, type) or last):
            obj, owner = attribute, found
        elif isinstance(attribute, types.MemberDescriptorType):  # a __slots__ member
            obj = attribute.__get__(obj, klass)
        elif found is not None and hasattr(type(attribute), "__set__"):
            return None  # a property: reading it would run code
        else:
            try:
                namespace = object.__getattribute__(obj, "__dict__")
            except AttributeError:
                return None
            obj = namespace.get(part, _MISSING) if isinstance(namespace, dict) else _MISSING
    if obj is _MISSING:
        return None
    if isinstance(obj, types.ModuleType):
        return obj.__name__
    module: object
    qualname: object
    if owner is not None and getattr(obj, "__module__", None) is None:  # a C method
        module, qualname = owner.__module__, f"{owner.__qualname__}.{parts[-1]}"
    else:
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None
    if module.startswith("_") and "." not in qualname:  # _signal.sigtimedwait: signal's
        public = sys.modules.get(module[1:])
        if public is not None and vars(public).get(qualname) is obj:
            module = module[1:]
    return qualname if module == "builtins" else f"{module}.{qualname}"
