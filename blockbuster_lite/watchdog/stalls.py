"""Long turns into stalls: attributed to the site most samples saw, deduplicated against the
catalogue, grouped per site, and handed to ``reporting.emit``."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from ..core.config import Mode
from ..core.report import Violation
from .loops import LoopWatch, Sample
from .reporting import emit, stall_advice
from .stacks import TaskInfo

if TYPE_CHECKING:
    from ..core.state import ActiveGuard

__all__ = ["StallBook"]

_perf = time.perf_counter
#: How many catalogue call sites are remembered (the most recent), so a stall they caused is
#: not reported twice.
_MAX_RECENT_CALLS = 1024


class StallBook:
    """The stall groups seen so far and the catalogue's recent call sites."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, str, str], int] = {}
        self.recent_calls: dict[tuple[str, int], float] = {}
        #: The last stall told per thread: (watch, start, end). A trio guest run's turn runs
        #: inside its host loop's: one block, one report.
        self.last_on_thread: dict[int | None, tuple[int, float, float]] = {}

    def note_violation(self, violation: Violation) -> None:
        """Observer: where the catalogue reported a call, so the stall it caused is not doubled."""
        if violation.kind == "call":
            recent = self.recent_calls
            recent.pop((violation.filename, violation.lineno), None)
            recent[(violation.filename, violation.lineno)] = _perf()
            if len(recent) > _MAX_RECENT_CALLS:
                del recent[next(iter(recent))]

    def report_gaps(
        self, watch: LoopWatch, threshold: float, extra: ActiveGuard | None = None
    ) -> None:
        """Report each long turn the loop has queued (the caller holds the monitor's lock)."""
        while watch.gaps:
            start, end = watch.gaps.popleft()
            busy = [s for s in watch.samples if start <= s.time <= end and not s.idle]
            self._stall(watch, start, end, busy, threshold, extra)

    def _stall(
        self,
        watch: LoopWatch,
        start: float,
        end: float,
        busy: list[Sample],
        threshold: float,
        extra: ActiveGuard | None,
    ) -> None:
        duration = end - start
        if duration < threshold or not busy:
            return
        votes = Counter(s.group for s in busy)
        best = max(votes.values())
        chosen = next(s for s in reversed(busy) if votes[s.group] == best)
        if chosen.catalogue or chosen.excluded:
            return
        seen = self.recent_calls.get((chosen.filename, chosen.lineno))
        if seen is not None and start <= seen <= end + threshold:
            return
        last = self.last_on_thread.get(watch.thread_id)
        if last is not None and last[0] != id(watch) and last[1] < end and start < last[2]:
            return
        if len(self.last_on_thread) > 1024:
            self.last_on_thread.clear()
        self.last_on_thread[watch.thread_id] = (id(watch), start, end)
        if len(self.groups) < 10_000 or chosen.group in self.groups:
            lineno = self.groups.setdefault(chosen.group, chosen.lineno)
        else:
            lineno = chosen.lineno
        task = watch.task or TaskInfo()
        violation = Violation(
            call=chosen.call,
            filename=chosen.filename,
            lineno=lineno,
            function=chosen.function,
            stack=chosen.stack,
            action=Mode.WARN,
            thread_name=watch.thread_name,
            task_name=task.name,
            duration_s=duration,
            context=dict(task.request),
            advice=stall_advice(chosen.call, chosen.top),
            kind="stall",
        )
        emit(violation, chosen.module, task.context, extra)
