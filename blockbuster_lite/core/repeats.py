"""Detections at a site a guard has already reported: counted, not rendered again.

The first detection of a call family at a site (``(target.call, code object, line)``) in warn or
log mode gets the full treatment: the stack is rendered, the warning or log line is emitted, the
``Violation`` is built. Each later one at the same site only bumps counters: the guard records a
compact entry (the site's first ``Violation``, the described call, the blocked time, thread, task
and request context) that ``Guard.violations`` turns into a ``Violation`` when it is read, and the
statistics get the duration. Their ``stack`` is the first occurrence's. While observers are
registered (the ASGI middleware during requests, OpenTelemetry, the exit summary, the watchdog),
each repeat is built at once for them, as a copy of the first's (still no stack rendering).

Log mode emits at most one line per site per ``LOG_INTERVAL_S`` with the number of calls since the
last one; the guard's pending counts are logged when it stops. Raise mode is not counted here:
each occurrence raises and is built in full.
"""

from __future__ import annotations

import math
import time
from asyncio import _get_running_loop, current_task
from types import CodeType
from typing import Any

from .config import Mode
from .loop import current_task_name
from .report import Violation, current_thread_name, evolve, format_message, logger
from .state import ActiveGuard, reentrant, request_context, state

__all__ = [
    "FOLD_EVERY",
    "KEPT_PER_SITE",
    "LOG_INTERVAL_S",
    "SeenSite",
    "SiteKey",
    "flush_log_counts",
    "log_counts",
    "note_repeat",
]

#: Log mode: at most one line per site per this many seconds for its repeats.
LOG_INTERVAL_S = 10.0
#: Warn and log modes: ``Guard.violations`` keeps this many detections per site (per guard
#: that reported it); later ones are counted in ``Guard.stats()`` only.
KEPT_PER_SITE = 10_000

#: (call family, id of the code object, line); the SeenSite holds the code, so the id stays its.
SiteKey = tuple[str, int, int]
#: What a guard keeps for a repeat: [first violation, call, action, duration, thread, task,
#: context, the Violation once built] (a list: the built Violation is cached in its last slot).
Repeat = list[Any]

try:  # asyncio's own table of each loop's running task: ~100 ns less than current_task()
    from asyncio.tasks import _current_tasks  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - other interpreters
    _current_tasks = None


class SeenSite:
    """One site a guard has reported: its first violation and the counts since.

    Once ``KEPT_PER_SITE`` detections are kept (and while this guard is the only one, with no
    observers), a repeat only appends its duration to ``pending`` (a list append is atomic);
    ``fold`` moves them into the statistics every ``FOLD_EVERY`` calls and whenever the guard's
    statistics are read.
    """

    __slots__ = (
        "blocked_since_log", "code", "count", "counting", "last_log", "log_interval", "next_log",
        "owner", "pending", "since_log", "stats", "user", "violation",
    )  # fmt: skip

    def __init__(
        self,
        violation: Violation,
        stats: Any = None,
        code: CodeType | None = None,
        user: bool = False,
        owner: Any = None,
    ) -> None:
        self.violation = violation
        #: The guard whose site this is (the wrapt handler's site table checks it).
        self.owner = owner
        self.code = code  # keeps the id in the site's key unique
        #: The site is a user frame: a call made straight from it is attributed to it.
        self.user = user
        #: The guard's statistics slot for this site (StatsCollector.slot), or None.
        self.stats = stats
        self.count = 1
        #: Repeats only append to ``pending`` (see the class docstring).
        self.counting = False
        self.pending: list[float] = []
        self.last_log = time.perf_counter()
        self.log_interval = LOG_INTERVAL_S
        #: Log mode: when the next line for this site's repeats is due (never, in other modes).
        self.next_log = self.last_log + self.log_interval if violation.action is Mode.LOG else math.inf
        self.since_log = 0
        self.blocked_since_log = 0.0

    def fold(self) -> None:
        """Move the pending durations into the counts and the statistics."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        self.count += len(pending)
        if self.violation.action is Mode.LOG:
            self.since_log += len(pending)
            self.blocked_since_log += sum(pending)
        slot = self.stats
        with slot.lock:
            slot.add_timed(pending)


#: A counting site folds its pending durations into the statistics every this many calls.
FOLD_EVERY = 64


def _task_name() -> str | None:
    loop = _get_running_loop()
    if loop is None:  # trio
        return current_task_name()
    task = _current_tasks.get(loop) if _current_tasks is not None else current_task(loop)
    return task.get_name() if task is not None else None


def materialize(entry: Repeat) -> Violation:
    """The ``Violation`` for a repeat entry: the site's first one with this call's facts.

    Built once: later reads of ``Guard.violations`` get the same object.
    """
    violation: Violation | None = entry[7]
    if violation is None:
        first, call, action, duration, thread, task, context, _ = entry
        violation = entry[7] = evolve(
            first,
            call=call,
            action=action,
            duration_s=duration,
            thread_name=thread,
            task_name=task,
            context=_context_of(context, first),
        )
    return violation


def _context_of(context: Any, first: Violation) -> Any:
    """The request context as ``build_violation`` copies it (actions._context_copy)."""
    if not context:  # outside a request: the first's shared empty context when it has one
        return first.context if not first.context else {}
    snapshot = getattr(context, "snapshot", None)  # a request context shares one copy per state
    return snapshot() if snapshot is not None else dict(context)


def note_repeat(
    seen: SeenSite, call: str, mode: Mode, duration: float, now: float
) -> Violation | None:
    """Record one more detection at a known site in every active guard and its statistics.

    Returns the built ``Violation`` when observers are registered (the caller tells them).
    """
    seen.fold()
    count = seen.count = seen.count + 1
    first = seen.violation
    if count >= KEPT_PER_SITE and seen.stats is not None:
        seen.counting = True
    guards = state.guards
    observers = state.observers
    violation: Violation | None = None
    if count <= KEPT_PER_SITE or observers:
        entry = [
            first, call, mode, duration, current_thread_name(), _task_name(),
            request_context.get(), None,
        ]  # fmt: skip
        if observers:
            violation = materialize(entry)
        if count <= KEPT_PER_SITE:
            for guard in guards:
                guard._keep_repeat(entry)
    slot = seen.stats
    if slot is not None and len(guards) == 1:  # the common case
        with slot.lock:
            slot.add(duration)
    else:
        for guard in guards:
            guard._stats.add_repeat(first, call, duration)
    if mode is Mode.LOG:
        seen.since_log += 1
        seen.blocked_since_log += duration
        if now >= seen.next_log:  # now: time.perf_counter() after the call
            log_counts(seen, call, now)
    return violation


def log_counts(seen: SeenSite, call: str, now: float) -> None:
    """Log mode: the line for a site's repeats since its last one."""
    token = reentrant.set(True)
    try:
        _log_counts(seen, call, now)
    finally:
        reentrant.reset(token)


def _log_counts(seen: SeenSite, call: str, now: float) -> None:
    count, blocked = seen.since_log, seen.blocked_since_log
    seen.since_log, seen.blocked_since_log, seen.last_log = 0, 0.0, now
    seen.next_log = now + seen.log_interval
    first = seen.violation if call == seen.violation.call else evolve(seen.violation, call=call)
    logger.warning(
        "%s (%d more since the last report, blocked %.1f ms in all)",
        format_message(first),
        count,
        blocked * 1000,
    )


def flush_log_counts(guard: ActiveGuard) -> None:
    """Log the repeats counted since each site's last line (log mode; when a guard stops)."""
    token = reentrant.set(True)
    try:
        for seen in guard._seen_sites():
            seen.fold()
            if seen.since_log and seen.violation.action is Mode.LOG:
                _log_counts(seen, seen.violation.call, time.perf_counter())
    except Exception:
        logger.debug("blockbuster_lite: could not log the pending repeat counts", exc_info=True)
    finally:
        reentrant.reset(token)
