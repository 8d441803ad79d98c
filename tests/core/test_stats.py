"""Per-call-site statistics: counts, total, p50, p99 and maximum blocked time."""

from __future__ import annotations

import asyncio
import random
import time
import warnings

import pytest

import blockbuster_lite as bl
from blockbuster_lite.core.stats import (
    RESERVOIR_SIZE,
    SiteStats,
    StatsCollector,
    format_stats,
    percentile,
)


def violation(
    duration: float | None,
    *,
    call: str = "time.sleep",
    lineno: int = 10,
    kind: str = "call",
    action: bl.Mode = bl.Mode.WARN,
) -> bl.Violation:
    return bl.Violation(
        call=call,
        filename="/srv/app/routes.py",
        lineno=lineno,
        function="get_user",
        action=action,
        duration_s=duration,
        kind=kind,
    )


def test_percentiles_are_nearest_rank() -> None:
    ordered = [float(n) for n in range(1, 101)]
    assert percentile(ordered, 0.5) == 50.0
    assert percentile(ordered, 0.99) == 99.0
    assert percentile(ordered, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0


def test_one_row_per_site_with_exact_figures_below_the_reservoir_size() -> None:
    collector = StatsCollector()
    durations = [n / 1000 for n in range(1, 101)]
    random.shuffle(durations)
    for duration in durations:
        collector(violation(duration))  # an observer: called with each violation
    (row,) = collector.snapshot()
    assert (row.kind, row.call, row.function, row.lineno, row.count, row.timed) == (
        "call",
        "time.sleep",
        "get_user",
        10,
        100,
        100,
    )
    assert row.total_s == pytest.approx(5.05)
    assert (row.p50_s, row.p99_s, row.max_s) == (0.05, 0.099, 0.1)


def test_sites_are_apart_and_sorted_worst_first() -> None:
    collector = StatsCollector()
    collector.add(violation(0.01, lineno=1))
    collector.add(violation(0.5, lineno=2))
    collector.add(violation(0.3, lineno=3, kind="stall", call="Python code"))
    collector.add(violation(0.3, lineno=3, kind="stall", call="Python code"))
    rows = collector.snapshot()
    assert [(r.lineno, r.kind, r.count) for r in rows] == [
        (3, "stall", 2),
        (2, "call", 1),
        (1, "call", 1),
    ]
    collector.clear()
    assert collector.snapshot() == []


def test_raise_mode_counts_without_a_duration() -> None:
    collector = StatsCollector()
    collector.add(violation(None, action=bl.Mode.RAISE))
    collector.add(violation(None, action=bl.Mode.RAISE))
    (row,) = collector.snapshot()
    assert (row.count, row.timed, row.total_s, row.p50_s, row.p99_s, row.max_s) == (
        2,
        0,
        0.0,
        None,
        None,
        None,
    )


def test_memory_is_bounded_and_percentiles_stay_representative() -> None:
    collector = StatsCollector()
    rng = random.Random(7)
    values = [rng.random() for _ in range(20_000)]
    for value in values:
        collector.add(violation(value))
    (row,) = collector.snapshot()
    assert (row.count, row.timed) == (20_000, 20_000)
    assert row.total_s == pytest.approx(sum(values))
    assert row.max_s == max(values)  # exact, not sampled
    assert row.p50_s is not None and 0.42 < row.p50_s < 0.58
    assert row.p99_s is not None and row.p99_s > 0.95
    kept = collector._sites[next(iter(collector._sites))].reservoir
    assert len(kept) == RESERVOIR_SIZE


def test_format_stats_renders_a_table_worst_first() -> None:
    collector = StatsCollector()
    for _ in range(3):
        collector.add(violation(0.3, kind="stall", call="Python code", lineno=12))
    collector.add(violation(0.005, lineno=30))
    collector.add(violation(None, call="open", lineno=40, action=bl.Mode.RAISE))
    text = format_stats(collector.snapshot())
    lines = text.splitlines()
    assert lines[0].split() == [
        "count",
        "total",
        "ms",
        "p50",
        "ms",
        "p99",
        "ms",
        "max",
        "ms",
        "call",
        "at",
        "site",
    ]
    assert lines[1].split() == ["3", "900.0", "300.0", "300.0", "300.0", "stall", "in", "Python", "code", "at",
                                "/srv/app/routes.py:12", "in", "get_user"]  # fmt: skip
    assert "time.sleep() at /srv/app/routes.py:30 in get_user" in lines[2]
    assert lines[3].split()[:5] == ["1", "-", "-", "-", "-"]
    assert "open() at" in lines[3]
    limited = format_stats(collector.snapshot(), limit=1).splitlines()
    assert len(limited) == 3 and limited[-1].strip() == "... and 2 more site(s)"
    assert format_stats([]) == ""


def test_site_is_relative_to_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    row = SiteStats("call", "open", __file__, 5, "f", 1, 1, 0.1, 0.1, 0.1, 0.1)
    assert row.site.endswith("test_stats.py:5") and not row.site.startswith("/")


def test_the_guard_keeps_statistics_of_what_it_saw() -> None:
    def handler() -> None:
        time.sleep(0.02)

    async def main() -> bl.Guard:
        with bl.intercept("warn") as guard:
            for _ in range(3):
                handler()
            time.sleep(0.001)
        return guard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        guard = asyncio.run(main())
    first, second = guard.stats()
    assert (first.call, first.count, first.timed) == ("time.sleep", 3, 3)
    assert first.function.endswith("<locals>.handler")
    assert first.total_s >= 0.06 and first.max_s is not None and first.max_s >= 0.02
    assert first.p50_s is not None and first.p99_s is not None
    assert second.function.endswith("<locals>.main") and second.count == 1
    assert "time.sleep() at" in format_stats(guard.stats())
    guard.clear()
    assert guard.stats() == []


def test_statistics_outlive_the_violation_limit() -> None:
    guard = bl.Guard("warn", max_violations=2)
    for _ in range(5):
        guard._record(violation(0.01))
    assert len(guard.violations) == 2
    (row,) = guard.stats()
    assert row.count == 5


@pytest.mark.parametrize("batch", [1, 64])
def test_the_reservoir_is_a_uniform_sample_of_the_whole_stream(batch: int) -> None:
    """Position-valued stream: each quarter of it must hold about a quarter of the kept samples,
    whether durations arrive one by one or in the batches counted repeats are folded in."""
    from blockbuster_lite.core import stats

    state = stats._random.getstate()
    stats._random.seed(11)
    try:
        collector = StatsCollector()
        first = violation(0.0)
        site = collector.slot(first)
        total = 40_000
        stream = [float(i) for i in range(total)]
        for start in range(0, total, batch):
            if batch == 1:
                site.add(stream[start])
            else:
                site.add_timed(stream[start : start + batch])
    finally:
        stats._random.setstate(state)
    assert (site.count, site.timed, len(site.reservoir)) == (total, total, RESERVOIR_SIZE)
    assert site.maximum == total - 1 and site.total == pytest.approx(sum(stream))
    quarters = [0, 0, 0, 0]
    for value in site.reservoir:
        quarters[int(value * 4 // total)] += 1
    assert all(190 <= count <= 310 for count in quarters), quarters  # 250 each, ~4 sigma
    assert len(set(site.reservoir)) == RESERVOIR_SIZE  # each sample kept once
