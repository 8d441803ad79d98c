"""Scope: a call is in scope when any frame of its stack belongs to a scoped package."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from helpers import LOOPS, call_on, calls, write_module

import blockbuster_lite as bl

FRAMEWORK = """
    def run_handlers(handlers):
        for handler in handlers:
            handler()
"""


@pytest.fixture
def framework(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    return write_module(tmp_path, "scopedframework.router", FRAMEWORK, monkeypatch)


def user_shutdown_handler() -> None:
    time.sleep(0.001)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_user_handler_called_by_the_scoped_framework_is_in_scope(loop: str, framework: Any) -> None:
    with bl.intercept("log", scope=["scopedframework"]) as guard:
        call_on(loop, lambda: framework.run_handlers([user_shutdown_handler]))
    assert calls(guard) == ["time.sleep"]
    assert guard.violations[0].function == "user_shutdown_handler"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_call_with_no_scoped_frame_is_out_of_scope(loop: str, framework: Any) -> None:
    with bl.intercept("log", scope=["scopedframework"]) as guard:
        call_on(loop, user_shutdown_handler)
    assert calls(guard) == []


def test_an_allow_rule_still_wins_over_scope(framework: Any) -> None:
    allow = [f"{Path(__file__).name}:user_shutdown_handler"]
    with bl.intercept("log", scope=["scopedframework"], allow=allow) as guard:
        call_on("asyncio", lambda: framework.run_handlers([user_shutdown_handler]))
    assert calls(guard) == []
