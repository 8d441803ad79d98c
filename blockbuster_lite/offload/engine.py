"""Offload mode: a blocking call made on the loop thread runs in a worker thread, and its task waits
for it without blocking the loop.

The engine is greenback (the ``offload`` extra). A task with a greenback *portal* can suspend from
synchronous code, so the patched call, however deep in sync code, awaits
``anyio.to_thread.run_sync(call, abandon_on_cancel=True, limiter=<the offload pool>)`` and the loop
serves other tasks meanwhile. Works on asyncio, uvloop, anyio (either backend) and trio.

What is offloaded: calls whose catalogue entry is safe to move (``Target.offload``): sleeps, files
and the filesystem, DNS, sockets and HTTP clients, subprocesses, database drivers. A file object
returned by an offloaded ``open()`` moves its large reads and writes too (``read()`` of the whole
file, reads and writes of 64 KiB or more, ``readlines()``, ``writelines()``); line iteration, small
reads and writes, and ``close()`` stay on the loop, where they cost less than a thread hop. Bulk
file transfers run in a narrower lane of the pool (see ``_pools``): they are bandwidth-bound.

What falls back to warn mode, with the reason in the message: lock acquires and thread waits (a
contended ``threading.Lock`` moved to another thread can deadlock the process), calls outside any
task (a ``call_soon`` callback cannot wait), calls in a task without a portal, and calls made while
the task's cancel scope is already cancelled (the call runs in place so clean-up code completes).
A contended ``Lock``/``RLock``/``Semaphore`` acquire in a task with a portal is warned about and
then waited for by polling it from the loop thread, the task suspended: its holder may be another
task suspended in an offloaded call, which could never resume to release it if the loop thread
blocked (the deadlock offload mode would otherwise create).

Offloaded calls are still reported: the first per call site is logged at WARNING with the fix, and
every one is recorded (``action=Mode.OFFLOAD``, ``duration_s`` = how long the task waited), so offload
mode rescues the service without hiding the bug.

Semantics:
- Atomicity: other tasks run while the call is in the worker, exactly as if an ``await`` stood
  there. A read-modify-write of shared state spanning the call can lose updates. A threading lock
  held across an offloaded call and wanted by another task on the same loop stalls the loop until
  the call ends.
- Cancellation: a task cancelled while its call runs gets ``CancelledError`` (trio: ``Cancelled``)
  at once, raised from the blocking call; the worker thread finishes the call on its own and its
  result is dropped.
- Context variables: the call runs in a copy of the task's context; the values it sets are copied
  back into the task when it returns or raises (not when cancelled). A ``Token`` made in the worker
  cannot reset a variable in the task.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from ..core.actions import build_violation, log_failure, record, tell_observers, warn
from ..core.config import Mode
from ..core.repeats import SeenSite, note_repeat
from ..core.report import Violation, evolve, logger, report_text
from ..core.state import reentrant
from .adaptive import SiteTimes, sites_of
from .files import OffloadingFile
from .greenlets import await_
from .portal import (
    BEING_CANCELLED,
    NO_GREENBACK,
    NO_PORTAL,
    NOT_IN_TASK,
    ensure_portal,
    portal_problem,
    require_offload,
)
from .portal import greenback as greenback
from .worker import run_offloaded

if TYPE_CHECKING:
    from ..core.policy import Site
    from ..core.state import ActiveGuard
    from ..core.targets import Target

__all__ = (
    "BEING_CANCELLED",
    "NOT_IN_TASK",
    "NO_GREENBACK",
    "NO_PORTAL",
    "OFFLOADED",
    "WAITED",
    "ensure_portal",
    "require_offload",
    "try_offload",
)

OFFLOADED = "offloaded to a worker thread (offload mode)"
WAITED = "the task waited for it without blocking the loop (offload mode)"
#: Acquires that a task suspended in an offloaded call may hold: polled, never moved to a worker.
POLLED_ACQUIRES = frozenset({"threading.Lock.acquire", "threading.RLock.acquire"})


def never_offloaded(call: str) -> str:
    return (
        f"{call}() is never offloaded (a lock or thread wait moved to a worker thread can "
        "deadlock the process)"
    )


def try_offload(
    guard: ActiveGuard,
    target: Target,
    site: Site,
    wrapped: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    call: str | None = None,
) -> tuple[bool, Any, str]:
    """Offload one checked call: ``(True, result, "")``, or ``(False, None, why not)``.

    ``call`` is the described call name (``psycopg2.cursor.execute(SELECT ...)``).

    Exceptions raised by the call itself (and the task's cancellation) propagate.
    """
    if not target.offload:
        if target.call in POLLED_ACQUIRES:
            return _acquire_cooperatively(guard, target, site, wrapped, args, kwargs)
        return False, None, never_offloaded(target.call)
    check = target.offload_problem
    if check is not None:
        try:
            bound = check(getattr(wrapped, "__self__", None), args, kwargs)
        except Exception as exc:
            log_failure(f"offload of {target.call}", exc)
            bound = "internal error while checking whether it can move (logged)"
        if bound is not None:
            return False, None, bound
    try:
        frame = site.frame
        key = (target.call, id(frame.f_code), frame.f_lineno)
        table = sites_of(guard)
        times = table.get(key)
        if times is None:
            times = table[key] = SiteTimes(frame.f_code)
        elif times.runs_inline():
            return _run_inline(guard, target, site, times, wrapped, args, kwargs, call)
        problem = portal_problem()
        if problem is not None:
            return False, None, problem
        seen = times.offloaded
        violation: Violation | None = None
        if seen is None:
            advice = f"{OFFLOADED}; {target.advice}"
            violation = build_violation(target, site, Mode.OFFLOAD, advice, call)
            seen = times.offloaded = SeenSite(violation, None, frame.f_code)
            if guard.first_report(violation):
                _log_offloaded(violation)
    except Exception as exc:
        log_failure(f"offload of {target.call}", exc)
        return False, None, "internal error while preparing the offload (logged)"
    start = time.perf_counter()
    timing: list[float] = []
    try:
        result = run_offloaded(wrapped, args, kwargs, timing=timing)
    finally:
        end = time.perf_counter()
        if timing:
            times.note(timing[0])
        _report(seen, violation, call or target.call, Mode.OFFLOAD, end - start, end)
    if target.call == "open" and isinstance(result, io.IOBase):
        result = OffloadingFile(result)
    return True, result, ""


def _run_inline(
    guard: ActiveGuard,
    target: Target,
    site: Site,
    times: SiteTimes,
    wrapped: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call: str | None,
) -> tuple[bool, Any, str]:
    """Run a call measured fast in place, on the loop, measuring it again (see adaptive.py)."""
    seen = times.inline
    violation: Violation | None = None
    try:
        if seen is None:
            median = times.median() or 0.0
            advice = f"{ran_inline(median)}; {target.advice}"
            violation = build_violation(target, site, Mode.OFFLOAD, advice, call)
            seen = times.inline = SeenSite(violation, None, site.frame.f_code)
            guard.first_report(violation)
            _log_offloaded(violation)  # once per site: it stopped moving to the workers
    except Exception as exc:
        log_failure(f"offload of {target.call}", exc)
        return False, None, "internal error while preparing the offload (logged)"
    token = reentrant.set(True)
    start = time.perf_counter()
    try:
        result = wrapped(*args, **kwargs)
    finally:
        end = time.perf_counter()
        reentrant.reset(token)
        times.note(end - start)
        _report(seen, violation, call or target.call, Mode.OFFLOAD, end - start, end)
    if target.call == "open" and isinstance(result, io.IOBase):
        result = OffloadingFile(result)
    return True, result, ""


def ran_inline(median: float) -> str:
    return (
        f"ran inline: measured {median * 1e6:.0f} us, cheaper than a thread hop (offload mode)"
    )


def _report(
    seen: SeenSite, first: Violation | None, call: str, mode: Mode, duration: float, now: float
) -> None:
    """Record an offloaded or inline call: the site's first in full, later ones as repeats."""
    try:
        if first is not None:
            record(evolve(first, duration_s=duration))
            return
        violation = note_repeat(seen, call, mode, duration, now)
        if violation is not None:
            tell_observers(violation)
    except Exception as exc:
        log_failure(f"offload of {call}", exc)


def _acquire_cooperatively(
    guard: ActiveGuard,
    target: Target,
    site: Site,
    wrapped: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[bool, Any, str]:
    """Wait for a contended lock by polling it from the loop thread, the task suspended meanwhile.

    The holder may be another task suspended in an offloaded call: blocking the loop thread here
    would stop it from ever resuming to release the lock (a deadlock offload mode would have made).
    Polling keeps the loop running and the owner the loop thread; it is reported as warn mode.
    """
    reason = never_offloaded(target.call)
    try:
        if portal_problem() is not None:
            return False, None, reason
        timeout = args[1] if len(args) > 1 else kwargs.get("timeout", -1)
        advice = f"could not offload: {reason}; {WAITED}; {target.advice}"
        violation = build_violation(target, site, Mode.WARN, advice)
        if guard.first_report(violation):
            warn(violation, site)
    except Exception as exc:
        log_failure(f"cooperative wait for {target.call}", exc)
        return False, None, reason
    start = time.perf_counter()
    try:
        acquired = _poll(wrapped, timeout)
    finally:
        _record(violation, time.perf_counter() - start)
    return True, acquired, ""


def _poll(acquire: Callable[[bool], bool], timeout: float | None) -> bool:
    assert greenback is not None
    deadline = None if timeout is None or timeout < 0 else time.monotonic() + timeout
    delay = 0.0005
    token = reentrant.set(True)
    try:
        while not acquire(False):
            pause = delay
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                pause = min(delay, remaining)
            await_(anyio.sleep(pause))
            delay = min(delay * 2, 0.02)
        return True
    finally:
        reentrant.reset(token)


def _log_offloaded(violation: Violation) -> None:
    token = reentrant.set(True)
    try:
        logger.warning("%s", report_text(violation))
    finally:
        reentrant.reset(token)


def _record(violation: Violation, duration: float) -> None:
    try:
        record(evolve(violation, duration_s=duration))
    except Exception as exc:
        log_failure(f"offload of {violation.family or violation.call}", exc)


