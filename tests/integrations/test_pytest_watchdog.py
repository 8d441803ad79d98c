"""The pytest plugin's watchdog: option, ini, environment and marker, in real pytest runs."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
{extra}
"""

# A stall the catalogue cannot see: CPU-bound Python, and a C wait outside the catalogue (a name
# bound before activation is caught by the wrappers now: the plugin patches before collection).
STALL_TESTS = """
import asyncio
import time
import signal

import anyio
import pytest
import trio


def spin(seconds):
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


@pytest.mark.asyncio
async def test_asyncio_stall():
    spin(0.3)  # <- the first step of the test's loop


def test_trio_run_stall():
    async def main():
        signal.sigtimedwait([signal.SIGUSR2], 0.3)
    trio.run(main)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_anyio_trio_stall(anyio_backend):
    spin(0.3)


@pytest.mark.asyncio
async def test_clean():
    await asyncio.sleep(0.01)
"""


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODE", "ALLOW", "SCOPE", "WATCHDOG_MS", "STRICT_STARTUP", "SUMMARY"):
        monkeypatch.delenv(f"BLOCKBUSTER_LITE_{name}", raising=False)


def write(pytester: pytest.Pytester, tests: str = STALL_TESTS, ini: str = "") -> None:
    pytester.makeini(INI.format(extra=ini))
    pytester.makepyfile(test_stalls=tests)


def test_option_in_raise_mode_fails_each_stalled_test_with_its_stack(
    pytester: pytest.Pytester,
) -> None:
    write(pytester)
    result = pytester.runpytest_subprocess(
        "--blockbuster-mode=raise", "--blockbuster-watchdog-ms=100", "-v"
    )
    result.stdout.fnmatch_lines_random(
        [
            "*blockbuster_lite: mode=raise (from --blockbuster-mode), watchdog=100 ms "
            "(from --blockbuster-watchdog-ms)*",
            "*test_asyncio_stall FAILED*",
            "*test_trio_run_stall FAILED*",
            "*test_anyio_trio_stall?trio? FAILED*",
            "*test_clean PASSED*",
            "*blockbuster_lite: the event loop stalled (raise mode):*",
            "*Event loop blocked for * ms in * from test_stalls.py:12 in spin*",
            "*Event loop blocked for * ms in signal.sigtimedwait from test_stalls.py:23 in test_trio_run_stall.<locals>.main*",
            "*seen by the watchdog, not intercepted*",
            "*stalled stack (most recent call last):*",
            "*test_stalls.py:18 in test_asyncio_stall",
        ]
    )
    result.assert_outcomes(passed=1, failed=3)


def test_warn_mode_reports_the_stall_and_the_test_passes(pytester: pytest.Pytester) -> None:
    write(pytester)
    result = pytester.runpytest_subprocess(
        "--blockbuster-mode=warn", "--blockbuster-watchdog-ms=100"
    )
    result.stdout.fnmatch_lines_random(
        [
            "*warnings summary*",
            "test_stalls.py::test_asyncio_stall",
            "test_stalls.py::test_trio_run_stall",
            "*BlockingCallWarning: Event loop blocked for * ms in * from test_stalls.py:12 in spin*",
        ]
    )
    result.assert_outcomes(passed=4, warnings=3)


def test_ini_sets_the_threshold(pytester: pytest.Pytester) -> None:
    write(pytester, ini="blockbuster_mode = raise\nblockbuster_watchdog_ms = 100")
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["*watchdog=100 ms (from ini option blockbuster_watchdog_ms)*"])
    result.assert_outcomes(passed=1, failed=3)


def test_a_threshold_above_the_stall_reports_nothing(pytester: pytest.Pytester) -> None:
    write(pytester, ini="blockbuster_mode = raise\nblockbuster_watchdog_ms = 1000")
    pytester.runpytest_subprocess().assert_outcomes(passed=4)


def test_precedence_option_over_env_over_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(pytester, ini="blockbuster_mode = raise\nblockbuster_watchdog_ms = 1000")
    monkeypatch.setenv("BLOCKBUSTER_LITE_WATCHDOG_MS", "100")
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["*watchdog=100 ms (from BLOCKBUSTER_LITE_WATCHDOG_MS)*"])
    result.assert_outcomes(passed=1, failed=3)
    result = pytester.runpytest_subprocess("--blockbuster-watchdog-ms=2000")
    result.stdout.fnmatch_lines(["*watchdog=2000 ms (from --blockbuster-watchdog-ms)*"])
    result.assert_outcomes(passed=4)


def test_the_marker_beats_the_option(pytester: pytest.Pytester) -> None:
    write(pytester, """
import time

import pytest


def spin(seconds):
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


@pytest.mark.asyncio
@pytest.mark.blockbuster(watchdog=0.1)
async def test_marker_turns_it_on():
    spin(0.3)


@pytest.mark.asyncio
@pytest.mark.blockbuster(mode="warn", watchdog=0.1)
async def test_marker_in_warn_mode():
    spin(0.3)


@pytest.mark.asyncio
@pytest.mark.blockbuster(watchdog=1.0)
async def test_marker_raises_the_threshold():
    spin(0.3)


@pytest.mark.asyncio
@pytest.mark.blockbuster(watchdog=None)
async def test_marker_turns_it_off():
    spin(0.3)


@pytest.mark.asyncio
async def test_no_marker_no_watchdog():
    spin(0.3)
""")  # fmt: skip
    result = pytester.runpytest_subprocess("-v")
    result.stdout.fnmatch_lines_random(
        [
            "*test_marker_turns_it_on FAILED*",
            "*test_marker_in_warn_mode PASSED*",
            "*test_marker_raises_the_threshold PASSED*",
            "*test_marker_turns_it_off PASSED*",
            "*test_no_marker_no_watchdog PASSED*",
        ]
    )
    result.assert_outcomes(passed=4, failed=1, warnings=2)  # raise mode warns as well
    result = pytester.runpytest_subprocess("--blockbuster-watchdog-ms=100", "-v")
    result.stdout.fnmatch_lines_random(
        [
            "*test_marker_raises_the_threshold PASSED*",
            "*test_marker_turns_it_off PASSED*",
            "*test_no_marker_no_watchdog PASSED*",  # mode off: the stall is only logged
        ]
    )
    result.assert_outcomes(passed=4, failed=1, warnings=2)  # raise mode warns as well


@pytest.mark.parametrize(
    ("args", "ini", "env", "message"),
    [
        (["--blockbuster-watchdog-ms=fast"], "", "",
         "invalid watchdog threshold 'fast' from --blockbuster-watchdog-ms: expected a finite "
         "number of milliseconds*"),
        (["--blockbuster-watchdog-ms=-5"], "", "",
         "invalid watchdog threshold '-5' from --blockbuster-watchdog-ms: expected*"),
        ([], "", "inf",
         "invalid watchdog threshold 'inf' from BLOCKBUSTER_LITE_WATCHDOG_MS: expected a finite*"),
        ([], "blockbuster_watchdog_ms = nan", "",
         "invalid watchdog threshold 'nan' from ini option blockbuster_watchdog_ms*"),
    ],
    ids=["option-text", "option-negative", "env-inf", "ini-nan"],
)  # fmt: skip
def test_invalid_thresholds_are_usage_errors_naming_their_source(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    ini: str,
    env: str,
    message: str,
) -> None:
    write(pytester, ini=ini)
    if env:
        monkeypatch.setenv("BLOCKBUSTER_LITE_WATCHDOG_MS", env)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: blockbuster_lite: {message}"])


def test_an_invalid_marker_threshold_fails_that_test(pytester: pytest.Pytester) -> None:
    write(pytester, """
import pytest


@pytest.mark.blockbuster(watchdog="100ms")
def test_text():
    pass


@pytest.mark.blockbuster(watchdog=0)
def test_zero():
    pass


@pytest.mark.blockbuster(watchdog=float("inf"))
def test_infinite():
    pass
""")  # fmt: skip
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines_random(
        [
            "*invalid watchdog threshold '100ms' from @pytest.mark.blockbuster on "
            "test_stalls.py::test_text: expected a finite number of seconds*",
            "*invalid watchdog threshold 0 from @pytest.mark.blockbuster on "
            "test_stalls.py::test_zero*",
            "*invalid watchdog threshold inf from @pytest.mark.blockbuster on*",
        ]
    )
    result.assert_outcomes(errors=3)
