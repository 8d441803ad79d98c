"""Catalogue: time.sleep."""

from __future__ import annotations

import os
import time

import pytest
from helpers import LOOPS, OFF_LOOP, call_on, check_uninstalled, raises_on, seen_off_loop, seen_on

import blockbuster_lite as bl

FILENAME = os.path.basename(__file__)


def nap() -> None:
    time.sleep(0.001)


@pytest.mark.parametrize("loop", LOOPS)
def test_sleep_on_a_loop_is_caught(loop: str) -> None:
    error = raises_on(loop, nap)
    assert error.violation.call == "time.sleep"
    assert error.violation.function == "nap"
    assert "use await asyncio.sleep() / anyio.sleep()" in str(error)


@pytest.mark.parametrize("where", OFF_LOOP)
def test_sleep_off_the_loop_is_not_caught(where: str) -> None:
    assert seen_off_loop(where, nap) == []


@pytest.mark.parametrize("seconds", [0, 0.0])
def test_sleep_zero_cannot_block(seconds: float) -> None:
    assert seen_on("asyncio", lambda: time.sleep(seconds), mode="raise") == []


def test_warn_mode_still_sleeps() -> None:
    def timed() -> float:
        started = time.perf_counter()
        time.sleep(0.02)
        return time.perf_counter() - started

    with bl.intercept("warn") as guard, pytest.warns(bl.BlockingCallWarning, match="time.sleep"):
        assert call_on("asyncio", timed) >= 0.019
    assert guard.violations[0].duration_s is not None
    assert guard.violations[0].duration_s >= 0.019


def test_allow_blocking_exempts_sleep() -> None:
    @bl.allow_blocking
    def exempt_nap() -> None:
        nap()

    assert seen_on("asyncio", exempt_nap, mode="raise") == []


def test_an_allow_rule_exempts_sleep() -> None:
    assert seen_on("trio", nap, mode="raise", allow=[f"{FILENAME}:nap"]) == []


def test_uninstalled_sleep_is_the_original() -> None:
    original = time.sleep
    check_uninstalled("time", nap)
    assert time.sleep is original
