"""The wrapper every patched call goes through, and what happens on the loop thread.

Off the loop the wrapper answers one question and calls through; everything else (predicate,
frame walk, report) happens only for calls made on a thread that drives an event loop.
"""

from __future__ import annotations

import inspect
import logging
import sys
import time
from asyncio import _get_running_loop
from collections.abc import Callable
from dataclasses import replace
from types import MethodType
from typing import TYPE_CHECKING, Any

from ._loop import current_task_name, trio_state
from ._policy import Mode, Site, locate
from ._report import (
    BlockingCallError,
    BlockingCallWarning,
    Violation,
    current_thread_name,
    format_message,
    logger,
    render_stack,
    warn_violation,
)
from ._state import exempt, reentrant, request_context, state

if TYPE_CHECKING:
    from ._guard import Guard
    from ._patching import Target

__all__ = ["checked_call", "make_handler", "make_method"]

Handler = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]

_failures_logged: set[tuple[str, type[BaseException]]] = set()
# Reading an Enum member through its class costs ~100 ns on Python 3.11; the hot path uses this.
_OFF = Mode.OFF


def make_handler(target: Target) -> Handler:
    """Build the wrapt wrapper for one target: ``(wrapped, instance, args, kwargs)``.

    On the loop, a call the predicate clears (a non-blocking socket, a set event) goes straight
    through before any guard is consulted: that is the path asyncio's own transports take.
    A predicate that fails is run again by checked_call, which reports the failure.
    """
    predicate = target.predicate

    def handler(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _get_running_loop() is None:
            run_context = trio_state.run_context
            if run_context is None or "runner" not in run_context.__dict__:
                return wrapped(*args, **kwargs)
        if predicate is not None:
            try:
                blocks = predicate(instance, args, kwargs)
            except Exception:
                blocks = True
            if not blocks:  # the call stays outside the try: its errors are the caller's
                return wrapped(*args, **kwargs)
        return checked_call(target, wrapped, instance, args, kwargs)

    return handler


def make_method(target: Target, original: Any) -> Callable[..., Any]:
    """A plain function replacing a method on a class.

    It binds like any method, in C; a wrapt proxy would build a bound wrapper object on every
    attribute access (about 0.7 us per ``sock.send``), which every socket call would pay.
    """
    predicate = target.predicate
    if target.positional_only or _takes_positional_only(original):
        return _make_positional_method(target, original)

    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if _get_running_loop() is None:
            run_context = trio_state.run_context
            if run_context is None or "runner" not in run_context.__dict__:
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


def _make_positional_method(target: Target, original: Any) -> Callable[..., Any]:
    """``make_method`` for a method that takes no keywords: no ``**kwargs`` to pack (~50 ns)."""
    predicate = target.predicate
    no_kwargs: dict[str, Any] = {}

    def method(self: Any, *args: Any) -> Any:
        if _get_running_loop() is None:
            run_context = trio_state.run_context
            if run_context is None or "runner" not in run_context.__dict__:
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


def checked_call(
    target: Target, wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A patched call made on a loop thread: decide, then act by the innermost guard's mode."""
    guards = state.guards
    if not guards or reentrant.get() or exempt.get():
        return wrapped(*args, **kwargs)
    guard = guards[-1]
    if guard.mode is _OFF:
        return wrapped(*args, **kwargs)
    site: Site | None = None
    try:
        predicate = target.predicate
        blocking = predicate is None or predicate(instance, args, kwargs)
        if blocking:
            site = locate(sys._getframe(1), guard.allow, guard.scope)
    except Exception as exc:  # a bug in a predicate never reaches the user's program
        _log_failure(target.call, exc)
        blocking = False
    if not blocking:
        return wrapped(*args, **kwargs)
    if site is None:  # the machinery, an allow rule, or out of scope: calls made inside are too
        token = reentrant.set(True)
        try:
            return wrapped(*args, **kwargs)
        finally:
            reentrant.reset(token)
    return _act(guard, target, site, wrapped, instance, args, kwargs)


def _act(
    guard: Guard,
    target: Target,
    site: Site,
    wrapped: Any,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    mode = guard.effective_mode()
    advice = target.advice
    call = _call_name(target, instance, args, kwargs)
    if mode is Mode.OFFLOAD:
        from ._offload import try_offload

        offloaded, result, reason = try_offload(
            guard, target, site, wrapped, args, kwargs, call=call
        )
        if offloaded:
            return result
        mode = Mode.WARN
        advice = f"could not offload: {reason}; {advice}"
    try:
        violation = _build(target, site, mode, advice, call)
    except Exception as exc:
        _log_failure(target.call, exc)
        return wrapped(*args, **kwargs)
    if mode is Mode.RAISE:
        record(violation)
        if guard.first_report(violation):
            logger.warning("%s", format_message(violation))
        raise BlockingCallError(violation)
    if mode is Mode.WARN and guard.first_report(violation):
        _warn(violation, site)
    token = reentrant.set(True)
    start = time.perf_counter()
    try:
        return wrapped(*args, **kwargs)
    finally:
        duration = time.perf_counter() - start
        reentrant.reset(token)
        _after_call(violation, mode, duration)


def _after_call(violation: Violation, mode: Mode, duration: float) -> None:
    try:
        violation = replace(violation, duration_s=duration)
        record(violation)
        if mode is Mode.LOG:
            logger.warning("%s (blocked %.1f ms)", format_message(violation), duration * 1000)
    except Exception as exc:
        _log_failure(violation.call, exc)


def _call_name(
    target: Target, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    describe = target.describe
    if describe is None:
        return target.call
    try:
        return describe(instance, args, kwargs)
    except Exception as exc:
        _log_failure(f"describe {target.call}", exc)
        return target.call


def _build(
    target: Target, site: Site, mode: Mode, advice: str, call: str | None = None
) -> Violation:
    context = request_context.get()
    return Violation(
        call=call or target.call,
        filename=site.info.filename,
        lineno=site.frame.f_lineno,
        function=site.info.qualname,
        stack=render_stack(site.frame),
        action=mode,
        thread_name=current_thread_name(),
        task_name=current_task_name(),
        context=dict(context) if context else {},
        advice=advice,
    )


def _warn(violation: Violation, site: Site) -> None:
    token = reentrant.set(True)
    try:
        warn_violation(violation, site.info.module)
    except BlockingCallWarning:
        raise  # -W error::BlockingCallWarning: the user asked for an exception
    except Exception as exc:
        _log_failure("the warning", exc)
    finally:
        reentrant.reset(token)


def record(violation: Violation) -> None:
    """Add a violation to every active guard and tell the observers."""
    token = reentrant.set(True)
    try:
        for guard in state.guards:
            guard._record(violation)
        for observer in state.observers:
            try:
                observer(violation)
            except Exception as exc:
                _log_failure(f"observer {observer!r}", exc)
    finally:
        reentrant.reset(token)


def _log_failure(what: str, exc: BaseException) -> None:
    key = (what, type(exc))
    if key in _failures_logged:
        return
    _failures_logged.add(key)
    token = reentrant.set(True)
    try:
        logger.log(
            logging.ERROR,
            "blockbuster_lite: internal error while checking %s; the call proceeded unchecked",
            what,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
    except Exception:
        pass
    finally:
        reentrant.reset(token)
