"""Warn mode never raises into the program under a blanket error filter; only a filter that names
BlockingCallWarning does. The warning is then shown as the default action shows it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
from helpers import call_on, calls

import blockbuster_lite as bl

pytest_plugins = ["pytester"]

SCRIPT = """
import asyncio
import time

import blockbuster_lite as bl


async def main():
    time.sleep(0.001)  # the blocking call
    return "the program ran on"


with bl.intercept("warn") as guard:
    print(asyncio.run(main()))
print("violations:", [v.call for v in guard.violations])
"""


def run_script(
    tmp_path: Path, *options: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, *options, str(script)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("options", "env"),
    [
        (["-W", "error"], {}),
        (["-W", "error::RuntimeWarning"], {}),
        (["-W", "error::Warning"], {}),
        ([], {"PYTHONWARNINGS": "error"}),
    ],
    ids=["-W error", "-W error::RuntimeWarning", "-W error::Warning", "PYTHONWARNINGS=error"],
)
def test_a_blanket_error_filter_leaves_warn_mode_a_warning(
    tmp_path: Path, options: list[str], env: dict[str, str]
) -> None:
    result = run_script(tmp_path, *options, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["the program ran on", "violations: ['time.sleep']"]
    assert "app.py:9: BlockingCallWarning: Blocking call to time.sleep()" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "category",
    ["blockbuster_lite.BlockingCallWarning", "blockbuster_lite.core.report.BlockingCallWarning"],
)
def test_a_filter_naming_the_warning_makes_it_an_error(tmp_path: Path, category: str) -> None:
    for options, env in (
        (["-W", "error", "-W", f"error::{category}"], {}),
        ([], {"PYTHONWARNINGS": f"error::{category}"}),
    ):
        result = run_script(tmp_path, *options, env=env)
        assert result.returncode == 1
        assert "the program ran on" not in result.stdout
        assert "BlockingCallWarning: Blocking call to time.sleep()" in result.stderr


def test_simplefilter_error_in_process_shows_the_warning_instead() -> None:
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("error")
        with bl.intercept("warn") as guard:
            assert call_on("asyncio", lambda: time.sleep(0.001) or "ran") == "ran"
    assert calls(guard) == ["time.sleep"]
    assert [w.category for w in shown] == [bl.BlockingCallWarning]
    assert "Blocking call to time.sleep()" in str(shown[0].message)


@pytest.mark.parametrize(
    "blanket",
    [
        lambda: warnings.simplefilter("error", RuntimeWarning),
        lambda: warnings.filterwarnings("error", message="Blocking call"),  # names no category
        lambda: warnings.filterwarnings("error", module="test_warning_filters"),
    ],
    ids=["RuntimeWarning", "message", "module"],
)
def test_other_error_filters_are_blanket_too(blanket: object) -> None:
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("error")
        blanket()  # type: ignore[operator]
        with bl.intercept("warn"):
            call_on("asyncio", lambda: time.sleep(0.001))
    assert [w.category for w in shown] == [bl.BlockingCallWarning]


def test_simplefilter_error_naming_the_warning_raises_in_process() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("error", bl.BlockingCallWarning)
        with bl.intercept("warn"), pytest.raises(bl.BlockingCallWarning):
            call_on("asyncio", lambda: time.sleep(0.001))


def test_a_later_ignore_filter_still_wins() -> None:
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        with bl.intercept("warn") as guard:
            call_on("asyncio", lambda: time.sleep(0.001))
    assert shown == [] and calls(guard) == ["time.sleep"]


INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\nblockbuster_mode = warn\n"

PYTEST_TESTS = textwrap.dedent("""
    import asyncio
    import time


    def test_blocks_in_warn_mode():
        async def main():
            time.sleep(0.001)
            return "ran"

        assert asyncio.run(main()) == "ran"
""")


def test_pytest_filterwarnings_error_reports_in_the_summary(pytester: pytest.Pytester) -> None:
    pytester.makeini(f"{INI}filterwarnings = error\n")
    pytester.makepyfile(test_app=PYTEST_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*warnings summary*", "*BlockingCallWarning: Blocking call to time.sleep()*"]
    )


def test_pytest_filterwarnings_naming_the_warning_fails_the_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(
        f"{INI}filterwarnings =\n    error\n    error::blockbuster_lite.BlockingCallWarning\n"
    )
    pytester.makepyfile(test_app=PYTEST_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*BlockingCallWarning: Blocking call to time.sleep()*"])
