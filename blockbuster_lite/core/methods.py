"""Plain functions that replace methods on classes (sockets, raw files, sqlite3 cursors).

A method replaced by a plain function binds like any method, in C; a wrapt proxy would build a
bound wrapper object on every attribute access (about 0.7 us per ``sock.send``), which every
socket call would pay. Off the loop each variant answers the one question of ``hotpath`` and
calls the C original; on the loop it goes on to ``hotpath.checked_call``.
"""

from __future__ import annotations

import inspect
from asyncio import _get_running_loop
from collections.abc import Callable
from types import MethodType
from typing import TYPE_CHECKING, Any

from .hotpath import checked_call
from .loop import trio_state
from .state import state

if TYPE_CHECKING:
    from .targets import Target

__all__ = ["make_method"]


def make_method(target: Target, original: Any, direct: Any = None) -> Callable[..., Any]:
    """A plain function replacing a method on a class.

    It binds like any method, in C; a wrapt proxy would build a bound wrapper object on every
    attribute access (about 0.7 us per ``sock.send``), which every socket call would pay.
    ``direct`` is what runs off the loop (default: ``original``), for a method whose checked
    form on the loop differs from the C original (sqlite3's ``Connection.execute``).
    """
    if direct is None:
        direct = original
    if target.socket_method and target.max_args is not None and target.max_args <= 3:
        return _make_socket_method(target, original)
    if target.positional_only or _takes_positional_only(direct):
        most = target.max_args if target.max_args is not None else _most_positional(direct)
        if most is not None and most <= 3:
            return _make_fixed_method(target, original, direct)
        return _make_positional_method(target, original, direct)
    predicate = target.predicate
    socket_method = target.socket_method

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if _get_running_loop() is None:
            run_context = trio_state.run_context
            if run_context is None or "runner" not in run_context.__dict__:
                return direct(self, *args, **kwargs)
        if not state.guards:
            return direct(self, *args, **kwargs)
        if socket_method and _nonblocking(self):  # asyncio's and trio's transports: at once
            return original(self, *args, **kwargs)
        if predicate is not None:
            try:
                blocks = predicate(self, args, kwargs)
            except Exception:
                blocks = True
            if not blocks:
                return original(self, *args, **kwargs)
        return checked_call(target, MethodType(original, self), self, args, kwargs)

    return method


def _takes_positional_only(function: Any) -> bool:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL)
    return all(parameter.kind in kinds for parameter in parameters)


def _most_positional(function: Any) -> int | None:
    """How many arguments after ``self`` ``function`` takes (None: any number, or unknown)."""
    try:
        parameters = list(inspect.signature(function).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    if any(parameter.kind is inspect.Parameter.VAR_POSITIONAL for parameter in parameters):
        return None
    return len(parameters)


def _nonblocking(sock: Any) -> bool:
    """A socket in non-blocking mode (``timeout == 0.0``) cannot block; a failing read counts
    as blocking. (``_make_socket_method`` inlines this on its hot path.)"""
    try:
        return bool(sock.timeout == 0.0)
    except Exception:
        return False


#: Stands for an argument not passed in the positional replacements' fixed slots.
_NO: Any = object()


def _make_positional_method(target: Target, original: Any, direct: Any) -> Callable[..., Any]:
    """``make_method`` for a method that takes no keywords.

    The first three arguments arrive in fixed slots, so the common calls (``sock.send(data)``,
    ``sock.recv(n)``, ``cursor.execute(sql, params)``) are passed on without packing a tuple
    (``f(self, *args)`` costs ~45 ns more than ``f(self, a)`` on CPython 3.11); the rest come in
    ``rest``. A socket in non-blocking mode (``timeout == 0.0``) passes before anything else is
    asked on the loop.
    """
    socket_method = target.socket_method
    checked = _checked_tail(target, original, depth=3)

    def method(self: Any, a: Any = _NO, b: Any = _NO, c: Any = _NO, /, *rest: Any) -> Any:
        __tracebackhide__ = True
        if _get_running_loop() is None:
            run_context = trio_state.run_context
            off = run_context is None or "runner" not in run_context.__dict__
        else:
            off = not state.guards  # left behind after the last guard stopped: inert
        if off:
            if b is _NO:
                return direct(self) if a is _NO else direct(self, a)
            if c is _NO:
                return direct(self, a, b)
            return direct(self, a, b, c, *rest)
        if socket_method and _nonblocking(self):  # asyncio's and trio's transports: at once
            if b is _NO:
                return original(self) if a is _NO else original(self, a)
            if c is _NO:
                return original(self, a, b)
            return original(self, a, b, c, *rest)
        args = (
            () if a is _NO else (a,) if b is _NO else (a, b) if c is _NO else (a, b, c, *rest)
        )
        return checked(self, args)

    return method


def _make_fixed_method(target: Target, original: Any, direct: Any) -> Callable[..., Any]:
    """``_make_positional_method`` for a method known to take at most three arguments
    (``cursor.execute(sql, params)``, ``fetchall()``): no ``*rest``, so CPython 3.11 calls it on
    its specialised path for Python functions (~70 ns less per call than with ``*rest``).

    Off the loop with trio never imported (``trio_state.run_context is None``), one condition
    decides and the C method is called at once; a process that imported trio asks trio's run
    context too, in ``_on_loop_tail``. The tails are shared functions, one frame each:
    ``checked_call`` is told how far up the user's frame is (``depth``, the counted-repeat
    key), so they change nothing of what it sees."""
    on_loop = _on_loop_tail(target, original, direct)

    def method(self: Any, a: Any = _NO, b: Any = _NO, c: Any = _NO, /) -> Any:
        __tracebackhide__ = True
        if _get_running_loop() is None and trio_state.run_context is None:
            if b is _NO:
                return direct(self) if a is _NO else direct(self, a)
            return direct(self, a, b) if c is _NO else direct(self, a, b, c)
        args = () if a is _NO else (a,) if b is _NO else (a, b) if c is _NO else (a, b, c)
        return on_loop(self, args)

    return method


def _checked_tail(target: Target, original: Any, depth: int) -> Callable[[Any, tuple[Any, ...]], Any]:
    """The end every fixed-slot variant shares on a loop thread: the target's predicate (can
    this call block at all?), then ``checked_call``. ``depth``: the user's frame seen from
    ``checked_call`` (the counted-repeat key): 3 from a method through this tail, 4 from a
    method through ``_on_loop_tail`` and this."""
    predicate = target.predicate
    no_kwargs: dict[str, Any] = {}

    def checked(self: Any, args: tuple[Any, ...]) -> Any:
        __tracebackhide__ = True
        if predicate is not None:
            try:
                blocks = predicate(self, args, no_kwargs)
            except Exception:
                blocks = True
            if not blocks:
                return original(self, *args)
        return checked_call(target, MethodType(original, self), self, args, {}, depth=depth)

    return checked


def _on_loop_tail(target: Target, original: Any, direct: Any) -> Callable[[Any, tuple[Any, ...]], Any]:
    """What the fixed-slot methods do past their off-loop test: trio's run context when trio is
    imported, the inert case, a non-blocking socket, the predicate, then ``checked_call``.

    ``checked_call`` reads its caller's caller as the user's frame; called from here that is
    the fixed method's frame, not the user's: two tails deep, ``depth=4``."""
    socket_method = target.socket_method
    checked = _checked_tail(target, original, depth=4)

    def on_loop(self: Any, args: tuple[Any, ...]) -> Any:
        __tracebackhide__ = True
        if _get_running_loop() is None:
            run_context = trio_state.run_context
            if run_context is None or "runner" not in run_context.__dict__:
                return direct(self, *args)
        if not state.guards:  # left behind after the last guard stopped: inert
            return direct(self, *args)
        if socket_method and _nonblocking(self):  # asyncio's and trio's transports: at once
            return original(self, *args)
        return checked(self, args)

    return on_loop


def _make_socket_method(target: Target, original: Any) -> Callable[..., Any]:
    """A socket method taking at most three arguments, none by keyword (``send``, ``recv``...).

    A socket in non-blocking mode (``timeout == 0.0``, what asyncio's and trio's transports use)
    passes first, before anything else is asked: on a loop thread asyncio's
    ``_get_running_loop()`` costs a ``getpid()`` system call (~150 ns), which every transport
    call would pay. A blocking socket (``timeout`` None, no float built) then asks whether this
    thread drives a loop (a sync endpoint's worker: ~30 ns more than asking that first). Fixed
    slots and no ``*rest``: CPython calls such a function on its fastest path.
    """
    checked = _checked_tail(target, original, depth=3)

    def method(self: Any, a: Any = _NO, b: Any = _NO, c: Any = _NO, /) -> Any:
        __tracebackhide__ = True
        try:
            timeout = self.timeout
        except Exception:
            timeout = None
        if timeout is not None and not timeout:  # 0.0: non-blocking, cannot block
            passes = True
        elif _get_running_loop() is None:
            run_context = trio_state.run_context
            passes = run_context is None or "runner" not in run_context.__dict__
        else:
            passes = not state.guards  # left behind after the last guard stopped: inert
        if passes:
            if b is _NO:
                return original(self) if a is _NO else original(self, a)
            return original(self, a, b) if c is _NO else original(self, a, b, c)
        args = () if a is _NO else (a,) if b is _NO else (a, b) if c is _NO else (a, b, c)
        return checked(self, args)

    return method
