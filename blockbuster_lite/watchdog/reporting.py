"""How a stall is told: recorded in every guard and observer (core's ``record``), then warned or
logged once per guard and site, in the context of the task that stalled."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from ..core.actions import record
from ..core.config import Mode
from ..core.report import Violation, format_message, logger
from ..core.state import reentrant, state
from ..core.warn import warn_violation

if TYPE_CHECKING:
    from ..core.state import ActiveGuard

__all__ = ["NOT_INTERCEPTED", "STALL_ADVICE", "emit", "log_failure", "register_pools", "stall_advice"]

STALL_ADVICE = (
    "move the work off the loop: await anyio.to_thread.run_sync(...) for blocking calls, a "
    "process pool for CPU-bound code, or the library's async API"
)
#: What a stall report says about itself: no wrapper saw the call, so no mode acted on it.
NOT_INTERCEPTED = (
    "seen by the watchdog, not intercepted: no wrapper saw this call, so no mode could stop or "
    "offload it and an allow rule would only hide this report"
)


def stall_advice(call: str, top: str) -> str:
    """The tail of a stall's message: the top of the stack when the call went deeper, how the
    stall was seen, and the fix."""
    head = f"top of the stack: {top}; " if top and top != call else ""
    return f"{head}{NOT_INTERCEPTED}; {STALL_ADVICE}"


def register_pools(library: str) -> None:
    """On a loop thread: make this loop's thread pools known to the monitor (see ``_pools``).

    This is how anyio's default limiter, FastAPI's pool for sync endpoints, gets its occupancy
    read and its saturation warned about without offload mode. The monitor thread samples it:
    no timer on the loop. anyio finds the loop through sniffio, which a plain callback has to be
    told about. A program that has not imported anyio has no such pool (and importing it here
    would count its import time in the loop's turn).
    """
    if "anyio" not in sys.modules:
        return
    try:
        import sniffio

        from ..offload import pools as _pools
    except ImportError:
        return

    def register() -> None:
        sniffio.current_async_library_cvar.set(library)
        _pools.pools_here()

    try:
        contextvars.copy_context().run(register)
    except Exception as exc:
        log_failure(exc)


def log_failure(exc: BaseException) -> None:
    with contextlib.suppress(Exception):
        logger.log(
            logging.ERROR,
            "blockbuster_lite: internal error in the watchdog",
            exc_info=(type(exc), exc, exc.__traceback__),
        )


def emit(
    violation: Violation,
    module: str,
    context: contextvars.Context | None,
    extra: ActiveGuard | None,
) -> None:
    guards = state.guards
    guard = guards[-1] if guards else extra
    if guard is None:
        return
    mode = guard.effective_mode()
    if mode in (Mode.LOG, Mode.OFF):
        violation = replace(violation, action=Mode.LOG)

    def report() -> None:
        record(violation)
        if extra is not None and extra not in state.guards:
            extra._record(violation)
        if guard.first_report(violation):
            _tell(violation, module)

    try:
        if context is not None:
            context.copy().run(report)
        else:
            report()
    except Exception as exc:
        log_failure(exc)


def _tell(violation: Violation, module: str) -> None:
    token = reentrant.set(True)
    try:
        if violation.action is Mode.LOG:
            logger.warning("%s", format_message(violation))
            return
        try:
            warn_violation(violation, module)
        except Exception:  # a warnings filter made it an error on our thread: log it instead
            logger.warning("%s", format_message(violation))
    finally:
        reentrant.reset(token)
