"""The exit summary: every call site that blocked the loop, with count and blocked time.

``BLOCKBUSTER_LITE_SUMMARY=1`` (or the runner's ``--summary``) installs a ``Summary`` as an
observer of recorded violations; at interpreter exit it prints one line per (call, site) to
stderr, worst first (total blocked time, then maximum, then count). Raise mode never runs the
call, so its entries have a count but no time. Forked workers start with an empty summary and
each prints its own, headed by its pid.

uvicorn workers end by re-raising the signal that stopped them, which skips ``atexit``; so the
summary is also printed when uvicorn's ``Server.shutdown()`` returns (each print covers what
happened since the previous one). A process killed by a signal otherwise prints nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, TextIO

import wrapt

from ._report import Violation, display_path
from ._state import state

__all__ = ["SiteStats", "Summary", "install_summary"]


@dataclass
class SiteStats:
    """What one call site did: how often, and how long it held the loop."""

    call: str
    site: str
    kind: str
    count: int = 0
    timed: int = 0
    total_s: float = 0.0
    max_s: float = 0.0

    def add(self, duration_s: float | None) -> None:
        self.count += 1
        if duration_s is not None:
            self.timed += 1
            self.total_s += duration_s
            self.max_s = max(self.max_s, duration_s)


class Summary:
    """An observer (``state.observers``) aggregating violations per call site."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sites: dict[tuple[str, str, str, int, str], SiteStats] = {}

    def __call__(self, violation: Violation) -> None:
        key = (violation.kind, violation.call, violation.filename, violation.lineno,
               violation.function)  # fmt: skip
        with self._lock:
            stats = self._sites.get(key)
            if stats is None:
                site = (
                    f"{display_path(violation.filename)}:{violation.lineno} in {violation.function}"
                )
                stats = self._sites[key] = SiteStats(violation.call, site, violation.kind)
            stats.add(violation.duration_s)

    def clear(self) -> None:
        with self._lock:
            self._sites.clear()

    def rows(self) -> list[SiteStats]:
        """Every call site, worst first."""
        with self._lock:
            rows = list(self._sites.values())
        return sorted(rows, key=lambda s: (s.total_s, s.max_s, s.count), reverse=True)

    def render(self) -> str:
        rows = self.rows()
        if not rows:
            return ""
        lines = [
            f"blockbuster_lite summary (pid {os.getpid()}): {len(rows)} call site(s) "
            "blocked the event loop, worst first",
            f"  {'total ms':>10} {'max ms':>9} {'count':>6}  call at site",
        ]
        for row in rows:
            total = f"{row.total_s * 1000:.1f}" if row.timed else "-"
            worst = f"{row.max_s * 1000:.1f}" if row.timed else "-"
            call = row.call if row.kind == "stall" else f"{row.call}()"
            label = "stall in " if row.kind == "stall" else ""
            lines.append(f"  {total:>10} {worst:>9} {row.count:>6}  {label}{call} at {row.site}")
        return "\n".join(lines)

    def print(self, stream: TextIO | None = None) -> None:
        """Print what happened since the last print (nothing if nothing did)."""
        text = self.render()
        if not text:
            return
        self.clear()
        with contextlib.suppress(OSError, ValueError):  # stderr closed at exit: nothing to do
            print(text, file=stream or sys.stderr, flush=True)


_installed: Summary | None = None


def install_summary() -> Summary:
    """Start aggregating (idempotent) and print the summary to stderr at exit."""
    global _installed
    if _installed is None:
        summary = _installed = Summary()
        state.observers = (*state.observers, summary)
        atexit.register(summary.print)
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=summary.clear)
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
