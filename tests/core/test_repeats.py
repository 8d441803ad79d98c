"""Repeated detections at a site already reported: counted, every one still recorded.

The first detection at a site gets the full report; later ones in warn and log mode are counted
(no new warning, log mode at most one line per site per interval with the count), and raise mode
still raises on every one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import warnings
from typing import Any

import pytest
from helpers import LOOPS, run_on

import blockbuster_lite as bl
from blockbuster_lite.core import repeats
from blockbuster_lite.core.report import Violation
from blockbuster_lite.core.state import state


def stat_many(times: int) -> None:
    for _ in range(times):
        os.stat(".")  # the one site


async def stat_task(times: int) -> None:
    stat_many(times)


def records(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "blockbuster_lite"]


@pytest.mark.parametrize("loop", LOOPS)
def test_warn_mode_warns_once_and_records_every_repeat(loop: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bl.intercept("warn") as guard:
            run_on(loop, lambda: stat_task(5))
    told = [w for w in caught if issubclass(w.category, bl.BlockingCallWarning)]
    assert len(told) == 1
    assert [v.call for v in guard.violations] == ["os.stat"] * 5
    assert {v.lineno for v in guard.violations} == {guard.violations[0].lineno}
    assert all(v.duration_s is not None and v.duration_s >= 0 for v in guard.violations)
    assert all(v.action is bl.Mode.WARN for v in guard.violations)
    [row] = guard.stats()
    assert (row.count, row.timed) == (5, 5)


def test_repeats_keep_the_first_stack_and_their_own_task() -> None:
    async def main() -> None:
        async def one(name: str) -> None:
            os.stat(".")

        for index in range(3):
            await asyncio.create_task(one("x"), name=f"task-{index}")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with bl.intercept("warn") as guard:
            asyncio.run(main())
    first, *rest = guard.violations
    assert [v.task_name for v in guard.violations] == ["task-0", "task-1", "task-2"]
    assert first.stack and all(v.stack == first.stack for v in rest)
    # built once: reading the list again gives the same objects
    assert [id(v) for v in guard.violations] == [id(v) for v in guard.violations]


def test_raise_mode_raises_on_every_occurrence() -> None:
    async def main() -> int:
        raised = 0
        for _ in range(4):
            try:
                os.stat(".")
            except bl.BlockingCallError:
                raised += 1
        return raised

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == 4
    assert len(guard.violations) == 4
    assert all(v.action is bl.Mode.RAISE and v.duration_s is None for v in guard.violations)


def test_log_mode_logs_once_then_the_count_when_the_guard_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "blockbuster_lite")
    with bl.intercept("log") as guard:
        asyncio.run(stat_task(6))
        assert len(records(caplog)) == 1
    lines = records(caplog)
    assert len(lines) == 2
    assert "os.stat()" in lines[0] and "blocked" in lines[0]
    assert "5 more since the last report" in lines[1]
    assert len(guard.violations) == 6


def test_log_mode_emits_one_line_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repeats, "LOG_INTERVAL_S", 0.05)

    async def main() -> None:
        for _ in range(3):
            stat_many(4)
            time.sleep(0.06)  # another site: also reported once, then counted

    caplog.set_level(logging.WARNING, "blockbuster_lite")
    with bl.intercept("log"):
        asyncio.run(main())
    stat_lines = [line for line in records(caplog) if "os.stat()" in line]
    counts = [line for line in stat_lines if "more since the last report" in line]
    assert len(stat_lines) - len(counts) == 1  # the first occurrence's full line
    # at most one line per interval: the 4 calls of a burst share one
    assert 1 <= len(counts) <= 3
    total = sum(int(line.split(" more since")[0].rsplit("(", 1)[1]) for line in counts)
    assert total == 11


def test_past_the_kept_limit_repeats_are_counted_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repeats, "KEPT_PER_SITE", 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with bl.intercept("warn") as guard:
            asyncio.run(stat_task(500))
    assert len(guard.violations) == 3
    [row] = guard.stats()
    assert (row.count, row.timed) == (500, 500)
    assert row.max_s is not None and row.p50_s is not None


def test_observers_see_every_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repeats, "KEPT_PER_SITE", 2)
    seen: list[Violation] = []
    observers = state.observers
    state.observers = (*observers, seen.append)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with bl.intercept("warn"):
                asyncio.run(stat_task(10))
    finally:
        state.observers = observers
    assert len(seen) == 10
    assert all(v.call == "os.stat" and v.duration_s is not None for v in seen)


def test_each_site_is_reported_once_by_itself() -> None:
    async def main() -> None:
        for _ in range(3):
            os.stat(".")
            os.stat(".")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bl.intercept("warn") as guard:
            asyncio.run(main())
    assert len([w for w in caught if issubclass(w.category, bl.BlockingCallWarning)]) == 2
    assert len({v.lineno for v in guard.violations}) == 2
    assert len(guard.violations) == 6


def test_nested_guards_both_record_repeats() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with bl.intercept("warn") as outer, bl.intercept("log") as inner:
            asyncio.run(stat_task(4))
    assert len(inner.violations) == 4
    assert len(outer.violations) == 4
    assert outer.stats()[0].count == inner.stats()[0].count == 4


def test_allow_rules_still_apply_to_repeats() -> None:
    calls: list[Any] = []

    async def main() -> None:
        for _ in range(3):
            os.stat(".")
            calls.append(1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with bl.intercept("warn", allow=[f"{__name__}"]) as guard:
            asyncio.run(main())
    assert calls == [1, 1, 1]
    assert guard.violations == []


def test_clear_forgets_the_reported_sites() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bl.intercept("warn") as guard:
            asyncio.run(stat_task(3))
            guard.clear()
            asyncio.run(stat_task(2))
    assert len([w for w in caught if issubclass(w.category, bl.BlockingCallWarning)]) == 2
    assert len(guard.violations) == 2
    assert guard.stats()[0].count == 2


def test_reconfiguring_the_process_guard_rejudges_counted_sites(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(repeats, "KEPT_PER_SITE", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guard = bl.activate("warn")
        try:
            asyncio.run(stat_task(50))  # the site is counting: the shortcut knows it
            before = guard.stats()[0].count
            bl.activate("warn", scope=["some_other_package"])  # now out of scope
            asyncio.run(stat_task(50))
            assert guard.stats()[0].count == before == 50
        finally:
            bl.deactivate()


def _cursor_site(cursor: Any, times: int) -> None:
    for _ in range(times):
        cursor.execute("select 1")  # the one site


def _socket_site(sock: Any, times: int) -> None:
    for _ in range(times):
        sock.send(b"x")  # the one site


@pytest.mark.parametrize("kind", ["sqlite3 cursor (fixed slots)", "blocking socket"])
def test_repeats_through_method_replacements_skip_the_stack_walk(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Methods reach ``checked_call`` through one or two shared tail frames; it must still find
    the user's frame as the site, so a repeat is counted without walking the stack again."""
    import socket
    import sqlite3

    from blockbuster_lite.core import hotpath

    walks: list[int] = []
    real_locate = hotpath.locate

    def counting_locate(*args: Any, **kwargs: Any) -> Any:
        walks.append(1)
        return real_locate(*args, **kwargs)

    monkeypatch.setattr(hotpath, "locate", counting_locate)

    async def main() -> None:
        if kind.startswith("sqlite3"):
            connection = sqlite3.connect(":memory:")
            try:
                _cursor_site(connection.cursor(), 50)
            finally:
                connection.close()
        else:
            a, b = socket.socketpair()
            try:
                a.setblocking(True)
                _socket_site(a, 50)
            finally:
                a.close()
                b.close()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        with bl.intercept("warn") as guard:
            asyncio.run(main())
    at_site = [v for v in guard.violations if v.function.startswith("_")]
    assert len(at_site) == 50  # every one recorded...
    assert len({(v.filename, v.lineno) for v in at_site}) == 1  # ... at the user's line
    assert len(walks) <= 2  # the first one walked the stack; the 49 repeats did not


# -- the wrapt handler's own counting shortcut (past KEPT_PER_SITE) -------------------------


def _stat_here(times: int) -> None:
    for _ in range(times):
        os.stat(".")


def _stat_there(times: int) -> None:
    for _ in range(times):
        os.stat(".")  # the same instruction offset as in _stat_here: one handler table slot


def test_counted_sites_at_the_same_offset_in_two_functions_are_counted_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    here, there = _stat_here.__code__, _stat_there.__code__
    assert here.co_code == there.co_code  # the same f_lasti for both calls
    monkeypatch.setattr(repeats, "KEPT_PER_SITE", 2)

    async def main() -> None:
        for _ in range(30):
            _stat_here(3)
            _stat_there(2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        with bl.intercept("warn") as guard:
            asyncio.run(main())
    counts = {row.function: row.count for row in guard.stats()}
    assert counts == {"_stat_here": 90, "_stat_there": 60}


def test_a_counted_site_is_counted_by_the_handler_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from blockbuster_lite.core import hotpath

    monkeypatch.setattr(repeats, "KEPT_PER_SITE", 2)
    slow: list[int] = []
    code = hotpath.checked_call.__code__

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code is code:
            slow.append(1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        with bl.intercept("warn") as guard:
            sys.setprofile(profile)
            try:
                asyncio.run(stat_task(200))
            finally:
                sys.setprofile(None)
    assert guard.stats()[0].count == 200
    assert len(slow) <= 3  # reported, kept, counting: then the handler's table takes over


def test_log_mode_lines_keep_their_interval_once_a_site_is_counted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repeats, "KEPT_PER_SITE", 2)
    monkeypatch.setattr(repeats, "LOG_INTERVAL_S", 0.05)

    async def main() -> None:
        for _ in range(4):
            _stat_here(100)
            await asyncio.sleep(0.06)

    caplog.set_level(logging.WARNING, "blockbuster_lite")
    with bl.intercept("log") as guard:
        asyncio.run(main())
    lines = [line for line in records(caplog) if "os.stat()" in line]
    counts = [line for line in lines if "more since the last report" in line]
    assert len(lines) - len(counts) == 1
    assert 3 <= len(counts) <= 5  # one per interval (and the rest when the guard stops)
    total = sum(int(line.split(" more since")[0].rsplit("(", 1)[1]) for line in counts)
    assert total == 399
    assert guard.stats()[0].count == 400


def test_an_observer_registered_later_sees_the_repeats_of_a_counted_site(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(repeats, "KEPT_PER_SITE", 2)
    seen: list[Violation] = []
    observers = state.observers

    async def main() -> None:
        _stat_here(20)  # counted by the shortcut from here on
        state.observers = (*observers, seen.append)
        _stat_here(7)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bl.BlockingCallWarning)
            with bl.intercept("warn") as guard:
                asyncio.run(main())
    finally:
        state.observers = observers
    assert len(seen) == 7
    assert guard.stats()[0].count == 27


def test_a_raise_guard_counting_in_its_start_up_grace_raises_after_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(repeats, "KEPT_PER_SITE", 2)

    async def main(guard: bl.Guard) -> None:
        guard.in_startup = True
        _stat_here(20)  # warned and counted, not raised
        guard.in_startup = False
        with pytest.raises(bl.BlockingCallError):
            _stat_here(1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        with bl.intercept("raise") as guard:
            asyncio.run(main(guard))


def test_a_stopped_guard_is_freed_by_reference_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A counted site points at its guard; stopping the guard lets go (no cycle left for the
    garbage collector: a long run's guards would otherwise keep every kept violation)."""
    import gc
    import weakref

    monkeypatch.setattr(repeats, "KEPT_PER_SITE", 2)
    gc.disable()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bl.BlockingCallWarning)
            guard = bl.intercept("warn")
            with guard:
                asyncio.run(stat_task(20))
        assert guard.stats()[0].count == 20
        ref = weakref.ref(guard)
        del guard
        assert ref() is None
    finally:
        gc.enable()


def test_a_stopped_guards_sites_leave_the_handlers_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The patcher keeps a stopped wrapper for the next activation: a stopped guard's counted
    sites must not stay in its handler's table (each holds its site's first violation)."""
    monkeypatch.setattr(repeats, "KEPT_PER_SITE", 2)

    def tables(wrapper: Any) -> list[dict[Any, Any]]:
        cells = wrapper._self_wrapper.__closure__ or ()
        return [c.cell_contents for c in cells if isinstance(c.cell_contents, dict)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        with bl.intercept("warn") as guard:
            wrapper = os.stat
            asyncio.run(stat_task(20))
            assert any(tables(wrapper))  # the site was counted from the handler's table
    assert guard.stats()[0].count == 20
    assert tables(wrapper) and not any(tables(wrapper))
