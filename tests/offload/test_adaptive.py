"""Adaptive offload: a site measured fast runs inline; slow and unknown sites are offloaded.

The decision is behavioural, not timed here: a call that takes no time becomes inline after
``INLINE_WINDOW`` measured calls, one that sleeps 2 ms (far above ``INLINE_BELOW_S``) never does.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import temporary_targets

import blockbuster_lite as bl
from blockbuster_lite import offload
from blockbuster_lite.core.targets import Target
from blockbuster_lite.offload.adaptive import INLINE_BELOW_S, INLINE_WINDOW

MODULE = "bbl_adaptive_fake"


@pytest.fixture
def fake() -> Iterator[types.ModuleType]:
    """A module whose ``work(seconds)`` is a patched blocking call recording its thread."""
    module = types.ModuleType(MODULE)
    threads: list[int] = []

    def work(seconds: float) -> int:
        threads.append(threading.get_ident())
        if seconds:
            time.sleep(seconds)
        return len(threads)

    module.work = work  # type: ignore[attr-defined]
    module.threads = threads  # type: ignore[attr-defined]
    sys.modules[MODULE] = module
    try:
        with temporary_targets(Target(MODULE, "work", f"{MODULE}.work", None, "advice")):
            yield module
    finally:
        del sys.modules[MODULE]


def run(calls: list[float], module: Any) -> tuple[int, bl.Guard]:
    """Make ``calls`` (their durations) from one site of a task with a portal; the loop thread."""

    async def main() -> int:
        for seconds in calls:
            module.work(seconds)  # the one site
        return threading.get_ident()

    with bl.intercept("offload") as guard:
        loop_thread = asyncio.run(offload.with_portal(main)())
    return loop_thread, guard


def test_a_fast_site_runs_inline_after_its_window(fake: Any) -> None:
    loop_thread, guard = run([0.0] * (INLINE_WINDOW + 6), fake)
    on_loop = [ident == loop_thread for ident in fake.threads]
    assert on_loop == [False] * INLINE_WINDOW + [True] * 6
    messages = [v.message for v in guard.violations]
    assert all("offloaded to a worker thread" in m for m in messages[:INLINE_WINDOW])
    assert all("ran inline: measured" in m for m in messages[INLINE_WINDOW:])
    assert "cheaper than a thread hop" in messages[-1]
    assert {v.action for v in guard.violations} == {bl.Mode.OFFLOAD}
    assert len(guard.violations) == INLINE_WINDOW + 6


def test_a_slow_site_stays_offloaded(fake: Any) -> None:
    assert INLINE_BELOW_S < 0.002
    loop_thread, guard = run([0.002] * (INLINE_WINDOW + 4), fake)
    assert loop_thread not in fake.threads
    assert all("offloaded to a worker thread" in v.message for v in guard.violations)


def test_a_site_that_turns_slow_goes_back_to_the_workers(fake: Any) -> None:
    calls = [0.0] * (INLINE_WINDOW + 2) + [0.002] * (INLINE_WINDOW + 4)
    loop_thread, _ = run(calls, fake)
    on_loop = [ident == loop_thread for ident in fake.threads]
    assert on_loop[INLINE_WINDOW] is True  # it had become inline
    assert on_loop[-1] is False  # measured slow again: offloaded
    # it ran inline only until the median of its window went over the bar
    assert sum(on_loop) <= 2 + INLINE_WINDOW // 2 + 1


def test_an_os_stat_site_becomes_inline_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        for _ in range(INLINE_WINDOW + 4):
            os.stat(".")

    caplog.set_level(logging.WARNING, "blockbuster_lite")
    with bl.intercept("offload") as guard:
        asyncio.run(offload.with_portal(main)())
    stats = [v for v in guard.violations if v.call == "os.stat"]
    assert len(stats) == INLINE_WINDOW + 4
    assert "ran inline" in stats[-1].message
    inline_lines = [r for r in caplog.records if "ran inline" in r.getMessage()]
    assert len(inline_lines) == 1
    offloaded_lines = [r for r in caplog.records if "offloaded to a worker" in r.getMessage()]
    assert len(offloaded_lines) == 1  # the first offload at the site; repeats are recorded only


def test_unknown_sites_are_offloaded_each_on_their_own(fake: Any) -> None:
    async def main() -> int:
        for _ in range(INLINE_WINDOW):
            fake.work(0.0)  # site one
        fake.work(0.0)  # site two: unknown, offloaded
        return threading.get_ident()

    with bl.intercept("offload"):
        loop_thread = asyncio.run(offload.with_portal(main)())
    assert loop_thread not in fake.threads
