"""Catalogue: subprocesses and waiting for child processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import trio
from helpers import (
    LOOPS,
    OFF_LOOP,
    call_on,
    calls,
    check_uninstalled,
    raises_on,
    run_on,
    seen_off_loop,
    seen_on,
)

import blockbuster_lite as bl

FILENAME = os.path.basename(__file__)


def run_true() -> int:
    return subprocess.run(["true"], check=True).returncode


@pytest.mark.parametrize("loop", LOOPS)
def test_subprocess_run_on_a_loop_is_caught(loop: str) -> None:
    error = raises_on(loop, run_true)
    assert error.violation.call == "subprocess.run"
    assert "asyncio.create_subprocess_exec()" in str(error)


def test_raise_mode_starts_no_process(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    raises_on("asyncio", lambda: subprocess.run(["touch", str(marker)]))
    assert not marker.exists()


def test_subprocess_run_is_reported_once() -> None:
    # run() waits through Popen.communicate/wait and os.waitpid: those are not reported again.
    assert seen_on("asyncio", lambda: subprocess.run(["true"], capture_output=True)) == [
        "subprocess.run"
    ]


@pytest.mark.parametrize(
    ("call_name", "call"),
    [
        ("subprocess.check_output", lambda: subprocess.check_output(["echo", "hi"])),
        ("subprocess.call", lambda: subprocess.call(["true"])),
        ("subprocess.check_call", lambda: subprocess.check_call(["true"])),
        ("subprocess.getoutput", lambda: subprocess.getoutput("true")),
        ("os.system", lambda: os.system("true")),
    ],
)
def test_other_process_runners_are_caught(call_name: str, call: object) -> None:
    assert raises_on("asyncio", call).violation.call == call_name  # type: ignore[arg-type]


def test_waiting_for_a_running_child_is_caught() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.05)"])
    try:
        assert (
            raises_on("asyncio", lambda: process.wait()).violation.call == "subprocess.Popen.wait"
        )
        assert raises_on("asyncio", lambda: os.waitpid(process.pid, 0)).violation.call == (
            "os.waitpid"
        )
        with bl.intercept("raise") as guard:  # WNOHANG only asks
            assert call_on("asyncio", lambda: os.waitpid(process.pid, os.WNOHANG)) == (0, 0)
        assert guard.violations == []
    finally:
        process.wait()


def test_communicate_is_caught() -> None:
    process = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        error = raises_on("asyncio", lambda: process.communicate(b"x"))
        assert error.violation.call == "subprocess.Popen.communicate"
    finally:
        process.communicate(b"x")


def test_waiting_for_a_child_that_has_finished_is_not_caught() -> None:
    reaped = subprocess.Popen(["true"])
    reaped.wait()  # returncode known
    exited = subprocess.Popen(["true"])
    # Exited, not reaped yet (what trio does before calling Popen.wait()).
    os.waitid(os.P_PID, exited.pid, os.WEXITED | os.WNOWAIT)
    with bl.intercept("raise") as guard:
        assert call_on("asyncio", lambda: reaped.wait()) == 0
        assert call_on("asyncio", lambda: exited.wait()) == 0
    assert guard.violations == []


# -- async process APIs never trip the sanitizer -----------------------------------------------


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "anyio-asyncio"])
def test_asyncio_create_subprocess_exec_is_never_caught(loop: str) -> None:
    async def main() -> bytes:
        process = await asyncio.create_subprocess_exec("echo", "hi", stdout=asyncio.subprocess.PIPE)
        out, _ = await process.communicate()
        assert await process.wait() == 0
        return out

    with bl.intercept("raise") as guard:
        assert run_on(loop, main) == b"hi\n"
    assert guard.violations == []


def test_asyncio_create_subprocess_shell_is_never_caught() -> None:
    async def main() -> int:
        process = await asyncio.create_subprocess_shell("exit 3")
        return await process.wait()

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == 3
    assert guard.violations == []


@pytest.mark.parametrize("loop", ["anyio-asyncio", "anyio-trio"])
def test_anyio_run_process_is_never_caught(loop: str) -> None:
    async def main() -> bytes:
        result = await anyio.run_process(["echo", "anyio"])
        return bytes(result.stdout)

    with bl.intercept("raise") as guard:
        assert run_on(loop, main) == b"anyio\n"
    assert guard.violations == []


def test_trio_run_process_is_never_caught() -> None:
    async def main() -> bytes:
        result = await trio.run_process(["echo", "trio"], capture_stdout=True)
        return bytes(result.stdout)

    with bl.intercept("raise") as guard:
        assert trio.run(main) == b"trio\n"
    assert guard.violations == []


# -- off the loop, allowed, uninstalled --------------------------------------------------------


@pytest.mark.parametrize("where", OFF_LOOP)
def test_processes_off_the_loop_are_not_caught(where: str) -> None:
    assert seen_off_loop(where, run_true) == []


def test_allowed_processes() -> None:
    with bl.intercept("raise") as guard, bl.allow_blocking():
        assert call_on("asyncio", run_true) == 0
    assert guard.violations == []
    assert seen_on("asyncio", run_true, mode="raise", allow=[f"{FILENAME}:run_true"]) == []


def test_uninstalled_process_calls_are_the_originals() -> None:
    run, wait, system = subprocess.run, subprocess.Popen.wait, os.system
    check_uninstalled("processes", run_true)
    assert subprocess.run is run
    assert subprocess.Popen.wait is wait
    assert os.system is system


def test_log_mode_reports_the_duration() -> None:
    with bl.intercept("log") as guard:
        call_on("asyncio", lambda: subprocess.run([sys.executable, "-c", "pass"]))
    assert calls(guard) == ["subprocess.run"]
    assert guard.violations[0].duration_s is not None and guard.violations[0].duration_s > 0
