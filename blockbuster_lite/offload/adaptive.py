"""Adaptive offload: a call site measured fast runs inline; slow or unknown sites are offloaded.

A thread hop costs far more than a quick call: offloading a 2 us ``os.stat`` adds a few hundred
microseconds of latency (two loop iterations, a worker thread wake-up, the portal switches), and a
burst of them costs the loop more than the calls themselves. So offload mode measures each call
site (the call family, the code object and the line of the user's frame): how long the call itself
took, in the worker or in place. Once the last ``INLINE_WINDOW`` calls of a site have a median
below ``INLINE_BELOW_S`` (50 us, well under a thread hop), the site runs inline on the loop, and is
reported as such: "ran inline: measured 3 us, cheaper than a thread hop". Inline calls are
measured too, so a site that turns slow (a cold cache, a slow disk) goes back to the worker after
a few calls. Unknown sites (fewer than ``INLINE_WINDOW`` measured calls) and slow sites are
offloaded.

The table is per guard (``Guard`` objects are weakly referenced here) and also holds each site's
first report, so a repeat is recorded without rendering the stack again (see core/repeats.py).
"""

from __future__ import annotations

import weakref
from collections import deque

from ..core.repeats import SeenSite
from ..core.state import ActiveGuard

__all__ = ("INLINE_BELOW_S", "INLINE_WINDOW", "SiteTimes", "sites_of")

#: A site whose median call time over its last INLINE_WINDOW calls is below this runs inline.
INLINE_BELOW_S = 50e-6
#: How many measured calls a site needs before it may run inline, and the window measured.
INLINE_WINDOW = 8

SiteKey = tuple[str, int, int]


class SiteTimes:
    """One call site under offload mode: its recent call times and its first reports."""

    __slots__ = ("code", "durations", "inline", "offloaded")

    def __init__(self, code: object) -> None:
        self.code = code  # keeps id(code), in the key, unique while the entry lives
        self.durations: deque[float] = deque(maxlen=INLINE_WINDOW)
        self.offloaded: SeenSite | None = None  # the first offloaded report, for repeats
        self.inline: SeenSite | None = None  # the first inline report, for repeats

    def note(self, seconds: float) -> None:
        self.durations.append(seconds)

    def median(self) -> float | None:
        durations = self.durations
        if len(durations) < INLINE_WINDOW:
            return None
        return sorted(durations)[len(durations) // 2]

    def runs_inline(self) -> bool:
        """Measured fast: the last INLINE_WINDOW calls' median is under INLINE_BELOW_S."""
        median = self.median()
        return median is not None and median < INLINE_BELOW_S


_tables: weakref.WeakKeyDictionary[ActiveGuard, dict[SiteKey, SiteTimes]] = (
    weakref.WeakKeyDictionary()
)


def sites_of(guard: ActiveGuard) -> dict[SiteKey, SiteTimes]:
    """The site table of ``guard`` (made on first use)."""
    table = _tables.get(guard)
    if table is None:
        table = _tables.setdefault(guard, {})
    return table


def forget(guard: ActiveGuard) -> None:
    _tables.pop(guard, None)
