"""Per-call-site statistics: how often each site blocked the loop, and for how long.

A ``StatsCollector`` takes violations (patched calls and watchdog stalls alike) and keeps, per
``Violation.report_key`` (kind, call family, file, line, function: bounded by the program's code,
whatever the arguments) the first sample's described call, the count, how many of them were timed (raise mode stops
the call before it runs, so it has a count but no duration), the total, and the maximum. The
median and the 99th percentile come from a bounded reservoir per site (a uniform sample of
1000 durations, kept by Li's algorithm L: once the reservoir is full it draws how many calls to
skip before the next one replaces a sample, so a call that is not sampled costs no random
number, and a batch of counted repeats is added in one step), so memory stays flat in a
long-running server and a snapshot sorts at most 1000 numbers per site; below 1000 timed calls
the percentiles are exact.

Every guard owns one (``guard.stats()``); a collector is also an observer, so
``state.observers`` can hold one to aggregate the whole process. ``format_stats()`` renders a
snapshot as the table the exit summary prints.
"""

from __future__ import annotations

import _thread
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .report import Violation, display_path, escape_control

__all__ = ["RESERVOIR_SIZE", "SiteStats", "StatsCollector", "format_stats", "percentile"]

#: Durations kept per site for the percentiles.
RESERVOIR_SIZE = 1000

_random = random.Random()
_uniform = _random.random


@dataclass(frozen=True)
class SiteStats:
    """What one call site did: how often, and how long it held the loop (seconds).

    ``timed`` counts the occurrences that ran and were measured; ``p50_s``, ``p99_s`` and
    ``max_s`` are None when none was (raise mode).
    """

    kind: str
    call: str
    filename: str
    lineno: int
    function: str
    count: int
    timed: int
    total_s: float
    p50_s: float | None
    p99_s: float | None
    max_s: float | None

    @property
    def site(self) -> str:
        """``file:line`` of the site, the file relative to the working directory."""
        return f"{escape_control(display_path(self.filename))}:{self.lineno}"


def percentile(ordered: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending, non-empty list (``fraction`` in 0..1)."""
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class _Site:
    __slots__ = (
        "call", "count", "lock", "maximum", "next", "reservoir", "size", "timed", "total", "weight",
    )  # fmt: skip

    def __init__(self, call: str, size: int, lock: Any) -> None:
        self.call = call  # the first sample's (described) call
        self.size = size
        self.lock = lock  # the collector's: held around add()
        self.count = 0
        self.timed = 0
        self.total = 0.0
        self.maximum = 0.0
        self.reservoir: list[float] = []
        #: Algorithm L's state: the (1-based) timed call that replaces a sample next, and W.
        self.next = _NEVER
        self.weight = 1.0

    def add(self, duration: float | None) -> None:
        self.count += 1
        if duration is None:
            return
        timed = self.timed = self.timed + 1
        self.total += duration
        if duration > self.maximum:
            self.maximum = duration
        if timed <= self.size:
            self.reservoir.append(duration)
            if timed == self.size:
                self._skip(timed)
        elif timed == self.next:
            self.reservoir[int(_uniform() * self.size)] = duration
            self._skip(timed)

    def add_timed(self, durations: list[float]) -> None:
        """``add`` for each of ``durations`` (all measured), in one step."""
        if not durations:
            return
        start = self.timed
        end = self.timed = start + len(durations)
        self.count += len(durations)
        self.total += sum(durations)
        longest = max(durations)
        if longest > self.maximum:
            self.maximum = longest
        if start < self.size:
            self.reservoir.extend(durations[: self.size - start])
            if end >= self.size:
                self._skip(self.size)
        while self.next <= end:
            self.reservoir[int(_uniform() * self.size)] = durations[self.next - start - 1]
            self._skip(self.next)

    def _skip(self, at: int) -> None:
        """Draw the next timed call to keep, after call number ``at`` (algorithm L)."""
        size = self.size
        self.weight *= math.exp(math.log(1.0 - _uniform()) / size)  # 1 - random(): in (0, 1]
        weight = min(self.weight, _BELOW_ONE)
        skip = math.log(1.0 - _uniform()) / math.log1p(-weight)
        self.next = at + 1 + (int(skip) if skip < _NEVER else _NEVER)


#: A call number no site reaches; and the largest float below 1 (log1p(-1) is undefined).
_NEVER = 1 << 62
_BELOW_ONE = 1.0 - 2.0**-53


_Key = tuple[str, str, str, int, str]


class StatsCollector:
    """Aggregates violations per call site; thread-safe; also usable as an observer."""

    def __init__(self, reservoir_size: int = RESERVOIR_SIZE) -> None:
        self._size = reservoir_size
        self._lock = _thread.allocate_lock()  # not the catalogue's checked lock
        self._sites: dict[_Key, _Site] = {}

    def add(self, violation: Violation) -> None:
        key = violation.report_key
        with self._lock:
            site = self._sites.get(key)
            if site is None:
                site = self._sites[key] = _Site(violation.call, self._size, self._lock)
            site.add(violation.duration_s)

    __call__ = add

    def add_repeat(self, first: Violation, call: str, duration: float) -> None:
        """``add`` for one more call at ``first``'s site, with no ``Violation`` built for it."""
        self.add_to(self.slot(first, call), duration)

    def slot(self, first: Violation, call: str | None = None) -> _Site:
        """The accumulator of ``first``'s site (for ``add_to``): found once, reused per call.

        Keyed by ``first.report_key`` (the call family and site): ``call``, the described call
        of a repeat, only names a new slot's first sample.
        """
        key = first.report_key
        with self._lock:
            site = self._sites.get(key)
            if site is None:
                site = self._sites[key] = _Site(call or first.call, self._size, self._lock)
            return site

    def add_to(self, site: _Site, duration: float) -> None:
        with self._lock:
            site.add(duration)

    def clear(self) -> None:  # slots handed out keep counting, unseen: guards forget their sites
        with self._lock:
            self._sites.clear()

    def snapshot(self) -> list[SiteStats]:
        """Every site, worst first: total blocked time, then maximum, then count."""
        with self._lock:
            items = [(key, site.call, site.count, site.timed, site.total, site.maximum,
                      list(site.reservoir)) for key, site in self._sites.items()]  # fmt: skip
        rows = []
        for (kind, _, filename, lineno, function), call, count, timed, total, maximum, kept in items:
            kept.sort()
            rows.append(
                SiteStats(
                    kind=kind,
                    call=call,
                    filename=filename,
                    lineno=lineno,
                    function=function,
                    count=count,
                    timed=timed,
                    total_s=total,
                    p50_s=percentile(kept, 0.5) if kept else None,
                    p99_s=percentile(kept, 0.99) if kept else None,
                    max_s=maximum if timed else None,
                )
            )
        rows.sort(key=lambda s: (s.total_s, s.max_s or 0.0, s.count), reverse=True)
        return rows


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def format_stats(stats: Iterable[SiteStats], *, limit: int | None = None) -> str:
    """A table of call sites, worst first; empty string when there are none.

    ::

          count   total ms  p50 ms  p99 ms  max ms  call at site
              3      900.4   300.1   300.2   300.2  stall in Python code at app.py:12 in work
             12       60.2     5.0     5.1     5.1  time.sleep() at app.py:30 in get_user

    ``limit`` keeps the worst rows and says how many were left out.
    """
    rows = list(stats)
    if not rows:
        return ""
    shown = rows if limit is None else rows[:limit]
    lines = [
        f"  {'count':>6} {'total ms':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  call at site"
    ]
    for row in shown:
        what = f"stall in {row.call}" if row.kind == "stall" else _call_text(row.call)
        lines.append(escape_control(
            f"  {row.count:>6} {_ms(row.total_s if row.timed else None):>10} {_ms(row.p50_s):>8} "
            f"{_ms(row.p99_s):>8} {_ms(row.max_s):>8}  {what} at {row.site} in {row.function}"
        ))  # fmt: skip
    if len(rows) > len(shown):
        lines.append(f"  ... and {len(rows) - len(shown)} more site(s)")
    return "\n".join(lines)


def _call_text(call: str) -> str:
    return call if "(" in call else f"{call}()"
