"""The wrapper every patched call goes through: ask, decide, hand to an action.

Off the loop the wrapper answers one question (``_get_running_loop()``, or trio's run context)
and calls through. A wrapper left in place after the last guard stopped (a mock that was started
while we were active puts it back when it stops) is inert: with no guard it calls through before
any predicate runs. On the loop: the target's predicate (can this call block at all?), then the
policy's decision (where was it made: user code, machinery, an allowed module, out of scope?),
then ``actions.act`` by the innermost guard's mode. Data flows one way from here: nothing in
``actions`` or below calls back into this module.
"""

from __future__ import annotations

import inspect
import sys
import time
from asyncio import _get_running_loop
from collections.abc import Callable
from types import MethodType
from typing import TYPE_CHECKING, Any

from .actions import act, act_again, fold, log_failure, note_trivial
from .config import Mode
from .loop import trio_state
from .policy import Site, locate
from .repeats import FOLD_EVERY, SeenSite
from .state import exempt, reentrant, state

if TYPE_CHECKING:
    from .targets import Target

__all__ = ["checked_call", "make_handler", "make_method"]

Handler = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]

# Reading an Enum member through its class costs ~100 ns on Python 3.11; the hot path uses this.
_OFF, _WARN, _LOG, _RAISE = Mode.OFF, Mode.WARN, Mode.LOG, Mode.RAISE
_BUILTIN = type(len)
_perf_counter = time.perf_counter


def make_handler(target: Target, loop_checked: bool = False) -> Handler:
    """Build the wrapt wrapper for one target: ``(wrapped, instance, args, kwargs)``.

    On the loop, a call the predicate clears (a non-blocking socket, a set event) goes straight
    through before any guard is consulted: that is the path asyncio's own transports take.
    A predicate that fails is run again by checked_call, which reports the failure.
    ``loop_checked``: wrapt only calls it with an asyncio loop running (its ``enabled`` is
    ``_get_running_loop``), so it need not ask again.
    """
    predicate = target.predicate
    call = target.call

    def handler(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        __tracebackhide__ = True  # pytest: the traceback ends at the user's call
        if not loop_checked and _get_running_loop() is None:
            run_context = trio_state.run_context
            if run_context is None or "runner" not in run_context.__dict__:
                return wrapped(*args, **kwargs)
        guards = state.guards
        if not guards:  # left behind after the last guard stopped: inert
            return wrapped(*args, **kwargs)
        if predicate is not None:
            try:
                blocks = predicate(instance, args, kwargs)
            except Exception:
                blocks = True
            if not blocks:  # the call stays outside the try: its errors are the caller's
                return wrapped(*args, **kwargs)
        # A repeat at a counting site, from the very call instruction seen counting before
        # (core/repeats.py; checked_call fills guard._fast): the counter bump without
        # checked_call's frame, nor the caller's line number (decoding a line table).
        fast = guards[-1]._fast
        if fast and len(guards) == 1:
            caller = sys._getframe(1)
            seen = fast.get((call, id(caller.f_code), caller.f_lasti))
            guard = guards[-1]
            mode = guard.mode
            if (
                seen is not None
                and (mode is _WARN or mode is _LOG)
                and not guard.allow
                and not state.observers
                and not reentrant.get()
                and not exempt.get()
            ):
                state.checked_calls += 1
                start = _perf_counter()
                try:
                    return wrapped(*args, **kwargs)
                finally:
                    end = _perf_counter()
                    pending = seen.pending
                    pending.append(end - start)
                    if len(pending) >= FOLD_EVERY or (
                        mode is _LOG and end - seen.last_log >= seen.log_interval
                    ):
                        fold(seen, call, mode, end)
        return checked_call(target, wrapped, instance, args, kwargs)

    return handler


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
        if socket_method:  # non-blocking (asyncio's and trio's transports) passes at once
            try:
                nonblocking = self.timeout == 0.0
            except Exception:
                nonblocking = False
            if nonblocking:
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
    predicate = target.predicate
    socket_method = target.socket_method
    no_kwargs: dict[str, Any] = {}

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
        if socket_method:  # non-blocking (asyncio's and trio's transports) passes at once
            try:
                nonblocking = self.timeout == 0.0
            except Exception:
                nonblocking = False
            if nonblocking:
                if b is _NO:
                    return original(self) if a is _NO else original(self, a)
                if c is _NO:
                    return original(self, a, b)
                return original(self, a, b, c, *rest)
        args = (
            () if a is _NO else (a,) if b is _NO else (a, b) if c is _NO else (a, b, c, *rest)
        )
        if predicate is not None:
            try:
                blocks = predicate(self, args, no_kwargs)
            except Exception:
                blocks = True
            if not blocks:
                return original(self, *args)
        return checked_call(target, MethodType(original, self), self, args, {})

    return method


def _make_fixed_method(target: Target, original: Any, direct: Any) -> Callable[..., Any]:
    """``_make_positional_method`` for a method known to take at most three arguments
    (``cursor.execute(sql, params)``, ``fetchall()``): no ``*rest``, so CPython 3.11 calls it on
    its specialised path for Python functions (~70 ns less per call than with ``*rest``).

    Its on-loop tail (predicate, then ``checked_call``) is written out here as in the other
    variants rather than shared: ``checked_call`` reads its caller's caller as the user's frame
    (``sys._getframe(2)``, the counted-repeat key), so one more frame in between would change
    what it sees."""
    predicate = target.predicate
    socket_method = target.socket_method
    no_kwargs: dict[str, Any] = {}

    def method(self: Any, a: Any = _NO, b: Any = _NO, c: Any = _NO, /) -> Any:
        __tracebackhide__ = True
        if _get_running_loop() is None:
            run_context = trio_state.run_context
            if run_context is None or "runner" not in run_context.__dict__:
                if b is _NO:
                    return direct(self) if a is _NO else direct(self, a)
                return direct(self, a, b) if c is _NO else direct(self, a, b, c)
        args = () if a is _NO else (a,) if b is _NO else (a, b) if c is _NO else (a, b, c)
        if not state.guards:  # left behind after the last guard stopped: inert
            return direct(self, *args)
        if socket_method:  # non-blocking (asyncio's and trio's transports) passes at once
            try:
                nonblocking = self.timeout == 0.0
            except Exception:
                nonblocking = False
            if nonblocking:
                return original(self, *args)
        if predicate is not None:
            try:
                blocks = predicate(self, args, no_kwargs)
            except Exception:
                blocks = True
            if not blocks:
                return original(self, *args)
        return checked_call(target, MethodType(original, self), self, args, {})

    return method


def _make_socket_method(target: Target, original: Any) -> Callable[..., Any]:
    """A socket method taking at most three arguments, none by keyword (``send``, ``recv``...).

    The cheapest check first: a non-blocking socket (``timeout == 0.0``, what asyncio's and
    trio's transports use) passes before the loop is asked about, then any call off the loop.
    Fixed slots and no ``*rest``: CPython calls such a function on its fastest path.
    """
    predicate = target.predicate
    no_kwargs: dict[str, Any] = {}

    def method(self: Any, a: Any = _NO, b: Any = _NO, c: Any = _NO, /) -> Any:
        __tracebackhide__ = True
        try:
            passes = self.timeout == 0.0
        except Exception:
            passes = False
        if not passes and _get_running_loop() is None:
            run_context = trio_state.run_context
            passes = run_context is None or "runner" not in run_context.__dict__
        if not passes and not state.guards:  # left behind after the last guard stopped
            passes = True
        if passes:
            if b is _NO:
                return original(self) if a is _NO else original(self, a)
            return original(self, a, b) if c is _NO else original(self, a, b, c)
        args = () if a is _NO else (a,) if b is _NO else (a, b) if c is _NO else (a, b, c)
        if predicate is not None:
            try:
                blocks = predicate(self, args, no_kwargs)
            except Exception:
                blocks = True
            if not blocks:
                return original(self, *args)
        return checked_call(target, MethodType(original, self), self, args, {})

    return method


def checked_call(
    target: Target, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A patched call made on a loop thread: decide, then act by the innermost guard's mode."""
    __tracebackhide__ = True
    guards = state.guards
    if not guards or reentrant.get() or exempt.get():
        return wrapped(*args, **kwargs)
    guard = guards[-1]
    if guard.mode is _OFF:
        return wrapped(*args, **kwargs)
    state.checked_calls += 1  # not atomic across threads: a count for the summary, not a ledger
    site: Site | None = None
    seen: SeenSite | None = None
    try:
        predicate = target.predicate
        blocking = predicate is None or predicate(instance, args, kwargs)
        if blocking:
            if guard._seen and not guard.allow and guard.scope is None:
                # Called straight from a user frame this guard has reported at (warn, log):
                # locate() would pick that very frame, so the counted path needs no walk.
                caller = sys._getframe(2)
                seen = guard._seen.get((target.call, id(caller.f_code), caller.f_lineno))
            if seen is None or not seen.user:
                seen = None
                site = locate(sys._getframe(1), guard.allow, guard.scope, target.call,
                              guard.default_allow)  # fmt: skip
    except Exception as exc:  # a bug in a predicate never reaches the user's program
        log_failure(target.call, exc)
        blocking = False
    if not blocking:
        return wrapped(*args, **kwargs)
    if seen is not None:
        mode = guard.mode  # guard.effective_mode(), inlined
        if mode is _RAISE and guard.in_startup:
            mode = _WARN
        if mode is _WARN or mode is _LOG:
            if (
                seen.counting
                and type(wrapped) is _BUILTIN
                and len(guards) == 1
                and not state.observers
            ):  # act_again's counter bump, inlined: ~150 ns less
                if not guard.allow:  # from now on the wrapt handler takes it by itself
                    guard._fast[(target.call, id(caller.f_code), caller.f_lasti)] = seen
                start = _perf_counter()
                try:
                    return wrapped(*args, **kwargs)
                finally:
                    end = _perf_counter()
                    pending = seen.pending
                    pending.append(end - start)
                    if len(pending) >= FOLD_EVERY or (
                        mode is _LOG and end - seen.last_log >= seen.log_interval
                    ):
                        fold(seen, target.call, mode, end)
            return act_again(seen, target, mode, wrapped, instance, args, kwargs)
        site = locate(sys._getframe(1), guard.allow, guard.scope, target.call, guard.default_allow)
    if site is None or site.trivial is not None:
        # the machinery, an allow rule, out of scope, or known-trivial: calls made inside are too
        if site is not None:
            note_trivial(target, site)
        token = reentrant.set(True)
        try:
            return wrapped(*args, **kwargs)
        finally:
            reentrant.reset(token)
    return act(guard, target, site, wrapped, instance, args, kwargs)
