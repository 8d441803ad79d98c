"""What a guard does with a blocking call on the loop: raise, warn, log, record, or offload.

``act`` is called by the hot path once a call has been judged blocking and attributed to a site.
It builds the ``Violation``, dispatches by the guard's mode, and records it in every active guard
and observer. Offload is an action like the others, but its engine lives in ``offload/``: it
registers itself in ``extensions.offload`` when imported, so this module never imports it. The
offload engine and the watchdog report through the functions here (``build_violation``,
``record``, ``warn``, ``log_failure``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from .config import Mode
from .extensions import extensions
from .loop import current_task_name
from .policy import Site
from .report import (
    BlockingCallError,
    BlockingCallWarning,
    Violation,
    capture_frames,
    current_thread_name,
    escape_control,
    evolve,
    format_message,
    logger,
    warn_violation,
)
from .state import ActiveGuard, reentrant, request_context, state

if TYPE_CHECKING:
    from .targets import Target

__all__ = ["act", "build_violation", "log_failure", "record", "warn"]

NO_OFFLOAD = "offload support is not loaded (import blockbuster_lite.offload)"

#: A described call longer than this is cut (the description is a sample's detail).
MAX_DESCRIBED_CALL = 200

_failures_logged: set[tuple[str, type[BaseException]]] = set()


def act(
    guard: ActiveGuard,
    target: Target,
    site: Site,
    wrapped: Any,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    mode = guard.effective_mode()
    advice = target.advice
    call = call_name(target, instance, args, kwargs)
    if mode is Mode.OFFLOAD:
        offload = extensions.offload
        if offload is None:
            offloaded, result, reason = False, None, NO_OFFLOAD
        else:
            offloaded, result, reason = offload.try_offload(
                guard, target, site, wrapped, args, kwargs, call=call
            )
        if offloaded:
            return result
        mode = Mode.WARN
        advice = f"could not offload: {reason}; {advice}"
    try:
        violation = build_violation(target, site, mode, advice, call)
    except Exception as exc:
        log_failure(target.call, exc)
        return wrapped(*args, **kwargs)
    if mode is Mode.RAISE:
        record(violation)
        # once: a request served by the ASGI middleware logs its refusals itself (at ERROR, with
        # the response status); anything else is logged here, once per call family and site
        if not _request_logs_refusals() and guard.first_report(violation):
            logger.warning("%s", format_message(violation))
        raise BlockingCallError(violation)
    if mode is Mode.WARN and guard.first_report(violation):
        warn(violation, site)
    token = reentrant.set(True)
    start = time.perf_counter()
    try:
        return wrapped(*args, **kwargs)
    finally:
        duration = time.perf_counter() - start
        reentrant.reset(token)
        after_call(violation, mode, duration)


def after_call(violation: Violation, mode: Mode, duration: float) -> None:
    try:
        violation = evolve(violation, duration_s=duration)
        record(violation)
        if mode is Mode.LOG:
            logger.warning("%s (blocked %.1f ms)", format_message(violation), duration * 1000)
    except Exception as exc:
        log_failure(violation.family or violation.call, exc)


def call_name(
    target: Target, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str:
    describe = target.describe
    if describe is None:
        return target.call
    try:
        described = describe(instance, args, kwargs)
    except Exception as exc:
        log_failure(f"describe {target.call}", exc)
        return target.call
    if not isinstance(described, str) or not described:
        return target.call
    return escape_control(described[:MAX_DESCRIBED_CALL])


def _request_logs_refusals() -> bool:
    return bool(getattr(request_context.get(), "logs_refusals", False))


class _NoContext(dict[str, Any]):
    """The context of every violation made outside a request: one shared, empty, read-only dict
    (a fresh ``{}`` per violation would be a quarter of what a kept violation costs)."""

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("Violation.context is read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    update = setdefault = pop = popitem = clear = _read_only

    def __reduce__(self) -> Any:
        return (dict, ())  # a copy elsewhere is a plain empty dict


NO_CONTEXT: Mapping[str, Any] = _NoContext()


def _context_copy(context: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not context:
        return NO_CONTEXT
    snapshot = getattr(context, "snapshot", None)  # a request context shares one copy per state
    return snapshot() if snapshot is not None else dict(context)


def build_violation(
    target: Target, site: Site, mode: Mode, advice: str, call: str | None = None
) -> Violation:
    frames = capture_frames(site.frame)
    return Violation(
        call=call or target.call,
        filename=site.info.filename,
        lineno=frames[-1][1],  # the shared frame's int: no new object per violation
        function=site.info.qualname,
        stack=cast("tuple[str, ...]", frames),  # compact; read back as rendered lines
        action=mode,
        thread_name=current_thread_name(),
        task_name=current_task_name(),
        context=_context_copy(request_context.get()),
        advice=advice,
        family=target.call,
    )


def warn(violation: Violation, site: Site) -> None:
    token = reentrant.set(True)
    try:
        warn_violation(violation, site.info.module)
    except BlockingCallWarning:
        raise  # -W error::BlockingCallWarning: the user asked for an exception
    except Exception as exc:
        log_failure("the warning", exc)
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
                log_failure(f"observer {observer!r}", exc)
    finally:
        reentrant.reset(token)


def log_failure(what: str, exc: BaseException) -> None:
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
