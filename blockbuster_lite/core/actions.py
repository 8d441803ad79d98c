"""What a guard does with a blocking call on the loop: raise, warn, log, record, or offload.

``act`` is called by the hot path once a call has been judged blocking and attributed to a site.
It builds the ``Violation``, dispatches by the guard's mode, and records it in every active guard
and observer. Offload is an action like the others, but its engine lives in ``offload/``: it
registers itself in ``extensions.offload`` when imported, so this module never imports it. The
offload engine and the watchdog report through the functions here (``build_violation``,
``record``, ``warn``, ``log_failure``).
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from .config import Mode
from .extensions import extensions
from .loop import current_task_name
from .policy import USER, Site
from .repeats import FOLD_EVERY, SeenSite, log_counts, note_repeat
from .report import (
    BlockingCallError,
    BlockingCallWarning,
    Violation,
    capture_frames,
    current_thread_name,
    escape_control,
    evolve,
    format_message,
    library_advice,
    logger,
    report_text,
)
from .state import ActiveGuard, reentrant, request_context, state
from .warn import warn_violation

if TYPE_CHECKING:
    from .targets import Target

__all__ = ["act", "build_violation", "log_failure", "note_trivial", "record", "warn"]

NO_OFFLOAD = "offload support is not loaded (import blockbuster_lite.offload)"

#: A described call longer than this is cut (the description is a sample's detail).
MAX_DESCRIBED_CALL = 200

_failures_logged: set[tuple[str, type[BaseException]]] = set()
_trivial_logged: set[tuple[str, object]] = set()
_WARN, _LOG = Mode.WARN, Mode.LOG
_perf_counter = time.perf_counter
_BUILTIN = type(len)


def act(
    guard: ActiveGuard,
    target: Target,
    site: Site,
    wrapped: Any,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Apply the guard's mode to one blocking call.

    Warn mode warns *after* the call, so the warning carries how long it blocked; when the
    warnings filters turn our warning into an error (``-W error::BlockingCallWarning``) it warns
    before the call instead, so the call never runs, as in raise mode. Either way warn mode
    never changes what the program does unless the user asked for the error.
    """
    __tracebackhide__ = True
    mode = guard.effective_mode()
    counted = mode is _WARN or mode is _LOG
    if counted:  # a site this guard has reported: a counter bump, nothing rendered
        frame = site.frame
        key = (target.call, id(frame.f_code), frame.f_lineno)
        seen = guard._seen.get(key)
        if seen is not None:
            return act_again(seen, target, mode, wrapped, instance, args, kwargs)
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
    if counted:
        user = site.info.kind == USER
        guard._seen[key] = SeenSite(
            violation, guard._stats.slot(violation), frame.f_code, user, owner=guard
        )
    if mode is Mode.RAISE:
        record(violation)
        # once: a request served by the ASGI middleware logs its refusals itself (at ERROR, with
        # the response status); anything else is logged here, once per call family and site
        if not _request_logs_refusals() and guard.first_report(violation):
            logger.warning("%s", report_text(violation))
        raise BlockingCallError(violation)
    deferred = False
    if mode is Mode.WARN and guard.first_report(violation):
        if _warning_is_error(violation, site):
            warn(violation, site)
        else:
            deferred = True
    token = reentrant.set(True)
    start = time.perf_counter()
    try:
        result = wrapped(*args, **kwargs)
    except BaseException:
        with contextlib.suppress(BlockingCallWarning):  # the call's own exception wins
            after_call(violation, mode, time.perf_counter() - start, site if deferred else None,
                       token)  # fmt: skip
        raise
    after_call(violation, mode, time.perf_counter() - start, site if deferred else None, token)
    return result


def act_again(
    seen: SeenSite,
    target: Target,
    mode: Mode,
    wrapped: Any,
    instance: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Warn or log mode at a site already reported: run the call, then count it.

    A builtin function (``os.stat``, ``time.sleep``) runs no Python code of its own, so it runs
    without marking the context re-entrant (two context-variable writes).
    """
    token = None if type(wrapped) is _BUILTIN else reentrant.set(True)
    start = _perf_counter()
    try:
        return wrapped(*args, **kwargs)
    finally:
        end = _perf_counter()
        if token is not None:
            reentrant.reset(token)
        try:
            if seen.counting and len(state.guards) == 1 and not state.observers:
                pending = seen.pending  # the counter bump: nothing kept, built or observed
                pending.append(end - start)
                if len(pending) >= FOLD_EVERY or end >= seen.next_log:
                    fold(seen, target.call, end)
            else:
                call = target.call
                if target.describe is not None:
                    call = call_name(target, instance, args, kwargs)
                violation = note_repeat(seen, call, mode, end - start, end)
                if violation is not None:
                    tell_observers(violation)
        except Exception as exc:
            log_failure(target.call, exc)


def fold(seen: SeenSite, call: str, now: float) -> None:
    """Fold a counting site's pending durations into the statistics; log mode's line when due
    (``seen.next_log``: never in warn mode)."""
    try:
        seen.fold()
        if now >= seen.next_log:
            log_counts(seen, call, now)
    except Exception as exc:
        log_failure(call, exc)


def after_call(
    violation: Violation, mode: Mode, duration: float, warn_at: Site | None, token: Any
) -> None:
    """Record the call with its duration; log it (log mode) or warn (warn mode, deferred)."""
    reentrant.reset(token)
    try:
        violation = evolve(violation, duration_s=duration)
        record(violation)
        if mode is Mode.LOG:
            logger.warning("%s", report_text(violation))
    except Exception as exc:
        log_failure(violation.family or violation.call, exc)
        return
    if warn_at is not None:
        warn(violation, warn_at)


def _warning_is_error(violation: Violation, site: Site) -> bool:
    """Would ``warnings`` raise our warning at this site? (The first matching filter decides.)"""
    try:
        text = format_message(violation)
        module = site.info.module
        for action, message, category, module_re, lineno in warnings.filters:
            if (
                issubclass(BlockingCallWarning, category)
                and (message is None or message.match(text))
                and (module_re is None or module_re.match(module))
                and (lineno == 0 or lineno == violation.lineno)
            ):
                return action == "error"
    except Exception as exc:
        log_failure("the warnings filters", exc)
    return False


def note_trivial(target: Target, site: Site) -> None:
    """A KNOWN_TRIVIAL library call: logged once per call site at DEBUG, never reported."""
    key = (target.call, site.frame.f_code)
    if key in _trivial_logged:
        return
    _trivial_logged.add(key)
    token = reentrant.set(True)
    try:
        library = site.library.info if site.library is not None else site.info
        logger.debug(
            "blockbuster_lite: known-trivial %s() in %s.%s allowed (%s); "
            "default_allow=False / BLOCKBUSTER_LITE_DEFAULT_ALLOW=0 checks it",
            target.call, library.module, library.qualname, site.trivial,
        )  # fmt: skip
    except Exception as exc:
        log_failure(f"known-trivial {target.call}", exc)
    finally:
        reentrant.reset(token)


def call_name(target: Target, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
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
    library = site.library
    library_frame = None
    if library is not None:
        library_frame = (library.info.filename, library.frame.f_lineno, library.info.qualname)
        advice = advice.replace(target.advice, library_advice(library.info.module,
                                                              library.info.filename))  # fmt: skip
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
        library_frame=library_frame,
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
    finally:
        reentrant.reset(token)
    tell_observers(violation)


def tell_observers(violation: Violation) -> None:
    observers = state.observers
    if not observers:
        return
    token = reentrant.set(True)
    try:
        for observer in observers:
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
