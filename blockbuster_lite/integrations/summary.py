"""The exit summary: every call site that blocked the loop, with count and blocked time.

``BLOCKBUSTER_LITE_SUMMARY=1`` (or the runner's ``--summary``) installs a ``Summary`` as an
observer of recorded violations; at interpreter exit it prints one line per (call, site) to
stderr, worst first (total blocked time, then maximum, then count), with count, total, p50, p99
and maximum blocked time. Raise mode never runs the
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
from typing import Any, TextIO

import wrapt

from ..core.state import state
from ..core.stats import SiteStats, StatsCollector, format_stats

__all__ = ["Summary", "install_summary"]


class Summary(StatsCollector):
    """An observer (``state.observers``) aggregating violations per call site, for the exit."""

    def rows(self) -> list[SiteStats]:
        """Every call site, worst first."""
        return self.snapshot()

    def render(self) -> str:
        rows = self.snapshot()
        if not rows:
            return ""
        return (
            f"blockbuster_lite summary (pid {os.getpid()}): {len(rows)} call site(s) "
            f"blocked the event loop, worst first\n{format_stats(rows)}"
        )

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
