"""The exit summary: every call site that blocked the loop, worst first; or one line saying clean.

Env-var and runner activation install a ``Summary`` (``BLOCKBUSTER_LITE_SUMMARY=0`` turns it
off) as an observer of recorded violations. At interpreter exit it prints to stderr either

    blockbuster_lite: no blocking calls on the event loop (warn mode, 12,345 checked calls, 210 requests)

so a clean run can be told from a sanitizer that is off, or a table per group of call sites,
sorted by total time blocked (then maximum, then count), with count, total and maximum blocked
time and the route(s) that made the call:

- *during requests*: calls made while the ASGI middleware served a request (zero-code
  instrumentation adds it);
- *outside any request*: start-up (imports, lifespan), background tasks, plain asyncio programs;
- *offloaded*: calls offload mode ran in a worker thread; their time is loop time saved, not
  time blocked.

Raise mode never runs the call, so its entries have a count but no time. "checked calls" counts
the patched calls made on a loop thread under an active guard. Forked workers start with an
empty summary and zero counts; in a worker process (forked or spawned), and in gunicorn's
arbiter, every line carries its pid. uvicorn workers end by re-raising the signal that stopped them, which skips ``atexit``; so
the summary is also printed when uvicorn's ``Server.shutdown()`` returns (each print covers what
happened since the previous one; the clean line is printed once).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import wrapt

from ..core.config import Mode
from ..core.guard import process_guard
from ..core.report import Violation, display_path, format_ms, worker_tag
from ..core.state import state
from ..core.stats import SiteStats, StatsCollector

__all__ = ["Summary", "SummaryRow", "install_summary"]

REQUESTS, OUTSIDE, OFFLOADED = "during requests", "outside any request", "offloaded"
_TITLES = {
    REQUESTS: "during requests",
    OUTSIDE: "outside any request (start-up, background tasks)",
    OFFLOADED: "offloaded to worker threads (time = loop time saved, not blocked)",
}


@dataclass(frozen=True)
class SummaryRow:
    """One call site of one group: count, total and maximum seconds, routes (most calls first)."""

    group: str
    kind: str
    call: str
    filename: str
    lineno: int
    function: str
    count: int
    timed: int
    total_s: float
    max_s: float | None
    routes: tuple[str, ...]

    @property
    def site(self) -> str:
        return f"{display_path(self.filename)}:{self.lineno}"


class _Entry:
    __slots__ = ("count", "maximum", "routes", "timed", "total")

    def __init__(self) -> None:
        self.count = self.timed = 0
        self.total = self.maximum = 0.0
        self.routes: Counter[str] = Counter()


def _route(violation: Violation) -> str:
    context = violation.context
    route = context.get("route") or context.get("path")
    if not route:
        return ""
    method = context.get("method")
    return f"{method} {route}" if method else str(route)


class Summary(StatsCollector):
    """An observer (``state.observers``) aggregating violations per group and call site."""

    def __init__(self) -> None:
        super().__init__()
        self._entries: dict[tuple[str, str, str, str, int, str], _Entry] = {}
        self._printed = False

    def add(self, violation: Violation) -> None:
        super().add(violation)
        route = _route(violation)
        group = OFFLOADED if violation.action is Mode.OFFLOAD else (REQUESTS if route else OUTSIDE)
        key = (group, violation.kind, violation.call, violation.filename, violation.lineno,
               violation.function)  # fmt: skip
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = _Entry()
            entry.count += 1
            if route:
                entry.routes[route] += 1
            if violation.duration_s is not None:
                entry.timed += 1
                entry.total += violation.duration_s
                entry.maximum = max(entry.maximum, violation.duration_s)

    __call__ = add

    def clear(self) -> None:
        super().clear()
        with self._lock:
            self._entries.clear()

    def rows(self) -> list[SiteStats]:
        """Every call site (all groups together), worst first."""
        return self.snapshot()

    def summary_rows(self) -> list[SummaryRow]:
        """Every (group, call site), each group worst first: total, then maximum, then count."""
        with self._lock:
            entries = [(key, e.count, e.timed, e.total, e.maximum, [r for r, _ in e.routes.most_common()])
                       for key, e in self._entries.items()]  # fmt: skip
        rows = []
        for (group, kind, call, filename, lineno, function), count, timed, total, top, routes in entries:
            rows.append(SummaryRow(group, kind, call, filename, lineno, function, count, timed,
                                   total, top if timed else None, tuple(routes)))  # fmt: skip
        order = list(_TITLES)
        rows.sort(key=lambda r: (order.index(r.group), -r.total_s, -(r.max_s or 0.0), -r.count))
        return rows

    def render(self) -> str:
        rows = self.summary_rows()
        guard = process_guard()
        mode = guard.mode.value if guard is not None else "off"
        counts = (f"{mode} mode, {state.checked_calls:,} checked calls, "
                  f"{state.requests_served:,} requests")  # fmt: skip
        if not rows:
            return f"blockbuster_lite: no blocking calls on the event loop ({counts}){worker_tag()}"
        blocked = sum(1 for r in rows if r.group != OFFLOADED)
        offloaded = len(rows) - blocked
        head = f"blockbuster_lite summary (pid {os.getpid()}): {blocked} call site(s) blocked the event loop"
        if offloaded:
            head += f", {offloaded} offloaded"
        lines = [f"{head} ({counts}), worst first"]
        for group in _TITLES:
            shown = [r for r in rows if r.group == group]
            if shown:
                lines.append(f"  {_TITLES[group]}:")
                lines.extend(format_rows(shown, saved=group == OFFLOADED))
        return "\n".join(lines)

    def print(self, stream: TextIO | None = None) -> None:
        """Print what happened since the last print; the clean line only if nothing was printed."""
        with self._lock:
            empty = not self._entries
        if empty and self._printed:
            return
        text = self.render()
        self.clear()
        self._printed = True
        with contextlib.suppress(OSError, ValueError):  # stderr closed at exit: nothing to do
            print(text, file=stream or sys.stderr, flush=True)

    def after_fork(self) -> None:
        self.clear()
        self._printed = False


def _ms(value: float | None) -> str:
    return "-" if value is None else format_ms(value)


def format_rows(rows: Iterable[SummaryRow], *, saved: bool = False) -> list[str]:
    """The table of one group; ``saved``: the time column is loop time saved (offloaded)."""
    column = "saved ms" if saved else "total ms"
    lines = [f"    {'count':>6} {column:>10} {'max ms':>8}  {'route':<24} call at site"]
    for row in rows:
        what = f"stall in {row.call}" if row.kind == "stall" else (
            row.call if "(" in row.call else f"{row.call}()")  # fmt: skip
        route = row.routes[0] if row.routes else "-"
        if len(row.routes) > 1:
            route += f" (+{len(row.routes) - 1})"
        total = _ms(row.total_s if row.timed else None)
        lines.append(f"    {row.count:>6} {total:>10} {_ms(row.max_s):>8}  {route:<24} "
                     f"{what} at {row.site} in {row.function}")  # fmt: skip
    return lines


_installed: Summary | None = None


def _reset_counts_in_child() -> None:
    state.checked_calls = 0
    state.requests_served = 0


def install_summary() -> Summary:
    """Start aggregating (idempotent) and print the summary to stderr at exit."""
    global _installed
    if _installed is None:
        summary = _installed = Summary()
        state.observers = (*state.observers, summary)
        atexit.register(summary.print)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=summary.after_fork)
            os.register_at_fork(after_in_child=_reset_counts_in_child)
        wrapt.register_post_import_hook(_print_after_uvicorn_shutdown, "uvicorn.server")
    return _installed


def _print_after_uvicorn_shutdown(module: Any) -> None:
    def shutdown(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        async def run() -> Any:
            try:
                return await wrapped(*args, **kwargs)
            finally:
                if _installed is not None:
                    _installed.print()

        return run()

    if hasattr(getattr(module, "Server", None), "shutdown"):
        wrapt.wrap_function_wrapper(module, "Server.shutdown", shutdown)
