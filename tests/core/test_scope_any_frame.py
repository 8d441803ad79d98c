"""Scope: a call is in scope when any frame of its stack belongs to a scoped package."""

from __future__ import annotations

import re
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


RUNNER = """
    def run_test(test):
        test()
"""


@pytest.mark.parametrize("loop", LOOPS)
def test_an_excluded_subpackage_does_not_bring_a_call_into_scope(
    loop: str, framework: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """blockbuster's excluded_modules: a test that the scoped package's own test runner drives
    is not the package's code; the package's code under that runner still is."""
    runner = write_module(tmp_path, "scopedframework.testing", RUNNER, monkeypatch)
    scope = ["scopedframework", "-scopedframework.testing"]
    with bl.intercept("log", scope=scope) as guard:
        call_on(loop, lambda: runner.run_test(user_shutdown_handler))
    assert calls(guard) == []
    with bl.intercept("log", scope=scope) as guard:
        call_on(loop, lambda: runner.run_test(lambda: framework.run_handlers([user_shutdown_handler])))
    assert calls(guard) == ["time.sleep"]
    with bl.intercept("log", scope=["scopedframework"]) as guard:  # without the exclusion
        call_on(loop, lambda: runner.run_test(user_shutdown_handler))
    assert calls(guard) == ["time.sleep"]


@pytest.mark.parametrize(
    ("scope", "message"),
    [
        (["-scopedframework"], "only exclusions ('-package'), so nothing would be checked"),
        (["scopedframework", "-"], "invalid scope entry '-' from intercept() argument 'scope'"),
    ],
)
def test_a_scope_of_exclusions_only_or_a_bare_dash_is_refused(scope: list[str], message: str) -> None:
    with pytest.raises(bl.ConfigError, match=re.escape(message)):
        bl.intercept("log", scope=scope)
