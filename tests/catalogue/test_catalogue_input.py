"""Catalogue: input() waits for the user."""

from __future__ import annotations

import builtins
import io
import sys

import pytest
from helpers import LOOPS, OFF_LOOP, call_on, check_uninstalled, raises_on, seen_off_loop, seen_on

import blockbuster_lite as bl


@pytest.fixture(autouse=True)
def typed_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n" * 20))


def ask() -> str:
    return input()


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_input_on_a_loop_is_caught_before_it_reads(loop: str) -> None:
    error = raises_on(loop, ask)
    assert error.violation.call == "input"
    assert "read input before starting the loop" in str(error)
    assert sys.stdin.read() == "yes\n" * 20  # nothing was read


@pytest.mark.parametrize("loop", LOOPS)
def test_input_in_log_mode_reads_the_line(loop: str) -> None:
    with bl.intercept("log") as guard:
        assert call_on(loop, ask) == "yes"
    assert [v.call for v in guard.violations] == ["input"]


@pytest.mark.parametrize("where", OFF_LOOP)
def test_input_off_the_loop_is_not_caught(where: str) -> None:
    assert seen_off_loop(where, ask) == []


def test_allowed_input() -> None:
    with bl.intercept("raise") as guard, bl.allow_blocking():
        assert call_on("asyncio", ask) == "yes"
    assert seen_on("asyncio", ask, mode="raise", allow=["test_catalogue_input"]) == []
    assert guard.violations == []


def test_uninstalled_input_is_the_original() -> None:
    original = builtins.input
    check_uninstalled("input", ask)
    assert builtins.input is original
