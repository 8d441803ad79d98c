"""What a detection looks like: the error, the warning, the log record, the Violation, observers.

Also: a predicate or report step that fails never reaches the user's program.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
import types
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import call_on, calls, temporary_targets

import blockbuster_lite as bl
from blockbuster_lite.core.actions import _failures_logged
from blockbuster_lite.core.state import reentrant, request_context, state
from blockbuster_lite.core.targets import Target

HERE = os.path.relpath(__file__)
SLEEP_ADVICE = (
    "use await asyncio.sleep() / anyio.sleep(), or offload with await anyio.to_thread.run_sync(...)"
)


def nap() -> None:
    time.sleep(0.0001)


def line_after() -> int:
    """The line number of the line after the caller's current line."""
    return sys._getframe(1).f_lineno + 1


# -- raise -------------------------------------------------------------------------------------


def test_error_message_names_call_site_function_and_fix() -> None:
    async def get_user() -> tuple[bl.BlockingCallError, int]:
        try:
            line = line_after()
            time.sleep(0.5)
        except bl.BlockingCallError as exc:
            return exc, line
        raise AssertionError("not raised")

    with bl.intercept("raise"):
        started = time.perf_counter()
        error, line = asyncio.run(get_user())
        assert time.perf_counter() - started < 0.4  # raised before sleeping
    function = "test_error_message_names_call_site_function_and_fix.<locals>.get_user"
    assert str(error) == (
        f"Blocking call to time.sleep() in async context at {HERE}:{line} in {function}; "
        f"{SLEEP_ADVICE}"
    )
    assert isinstance(error, RuntimeError)
    violation = error.violation
    assert violation.call == "time.sleep"
    assert violation.filename == __file__
    assert violation.lineno == line
    assert violation.function == function
    assert violation.site == f"{HERE}:{line}"
    assert violation.message == str(error) == str(violation)
    assert violation.action is bl.Mode.RAISE
    assert violation.kind == "call"
    assert violation.duration_s is None
    assert violation.context == {}


def test_violation_names_thread_task_and_stack() -> None:
    async def handler() -> None:
        time.sleep(0.0001)

    async def main() -> None:
        await asyncio.create_task(handler(), name="request-42")

    with bl.intercept("log") as guard:
        asyncio.run(main())
    (violation,) = guard.violations
    assert violation.thread_name == "MainThread"
    assert violation.task_name == "request-42"
    assert violation.stack[-1].startswith(f"{__file__}:")
    assert violation.stack[-1].endswith("in handler")
    assert len(violation.stack) > 1


def test_site_is_the_innermost_user_frame_not_the_stdlib(tmp_path: Path) -> None:
    source, copy = tmp_path / "a.txt", tmp_path / "b.txt"
    source.write_text("data")
    import shutil

    def copy_file() -> None:
        shutil.copy(source, copy)  # shutil (stdlib) opens the files: the site is here

    line = copy_file.__code__.co_firstlineno + 1
    with bl.intercept("log") as guard:
        call_on("asyncio", copy_file)
    (violation,) = guard.violations
    assert violation.call == "shutil.copy"
    assert (violation.filename, violation.lineno) == (__file__, line)
    assert violation.function.endswith("copy_file")


def test_a_library_frame_is_the_site_when_no_user_frame_called_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library_dir = tmp_path / "site-packages"
    library_dir.mkdir()
    (library_dir / "bbl_fake_library.py").write_text(
        "import time\n\nasync def background():\n    time.sleep(0.0001)\n"
    )
    monkeypatch.syspath_prepend(str(library_dir))
    monkeypatch.delitem(sys.modules, "bbl_fake_library", raising=False)
    import bbl_fake_library  # type: ignore[import-not-found]

    monkeypatch.setitem(sys.modules, "bbl_fake_library", bbl_fake_library)

    async def main() -> None:
        # A task the library started: no frame of this file is on its stack.
        await asyncio.get_running_loop().create_task(bbl_fake_library.background())

    with bl.intercept("log") as guard:
        asyncio.run(main())
    assert [(v.call, os.path.basename(v.filename), v.lineno) for v in guard.violations] == [
        ("time.sleep", "bbl_fake_library.py", 4)
    ]
    assert guard.violations[0].function == "background"


def test_raise_mode_logs_each_site_once(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        for _ in range(3):
            with pytest.raises(bl.BlockingCallError):
                time.sleep(0.0001)

    with caplog.at_level(logging.WARNING, logger="blockbuster_lite"), bl.intercept("raise") as g:
        asyncio.run(main())
    records = [r for r in caplog.records if r.name == "blockbuster_lite"]
    assert len(records) == 1
    assert "time.sleep" in records[0].getMessage()
    assert len(g.violations) == 3


# -- warn --------------------------------------------------------------------------------------


def test_warn_mode_warns_at_the_user_line_and_runs_the_call(tmp_path: Path) -> None:
    async def main() -> tuple[list[warnings.WarningMessage], int]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            line = line_after()
            os.mkdir(tmp_path / "made")
        return caught, line

    with bl.intercept("warn") as guard:
        caught, line = asyncio.run(main())
    assert (tmp_path / "made").is_dir()  # the call ran
    (warning,) = [w for w in caught if issubclass(w.category, bl.BlockingCallWarning)]
    assert (warning.filename, warning.lineno) == (__file__, line)
    assert str(warning.message).startswith("Blocking call to os.mkdir() in async context at ")
    assert issubclass(bl.BlockingCallWarning, RuntimeWarning)
    assert guard.violations[0].action is bl.Mode.WARN
    assert guard.violations[0].duration_s is not None


def test_warn_mode_deduplicates_per_call_site() -> None:
    async def main() -> list[warnings.WarningMessage]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                time.sleep(0.0001)  # one site, three calls
            time.sleep(0.0001)  # another site
        return caught

    with bl.intercept("warn") as guard:
        caught = asyncio.run(main())
    assert len([w for w in caught if w.category is bl.BlockingCallWarning]) == 2
    assert len(guard.violations) == 4  # every call is recorded


def test_warn_mode_returns_the_real_result() -> None:
    with bl.intercept("warn"), pytest.warns(bl.BlockingCallWarning, match="os.listdir"):
        assert call_on("asyncio", lambda: os.listdir(os.path.dirname(__file__)))


@pytest.mark.filterwarnings("error::blockbuster_lite.BlockingCallWarning")
def test_filterwarnings_turns_the_warning_into_an_error(tmp_path: Path) -> None:
    with bl.intercept("warn") as guard, pytest.raises(bl.BlockingCallWarning):
        call_on("asyncio", lambda: os.mkdir(tmp_path / "never"))
    assert not (tmp_path / "never").exists()
    assert calls(guard) == []  # the call never ran


SCRIPT = """
import asyncio, time
import blockbuster_lite

async def main():
    time.sleep(0.0001)

with blockbuster_lite.intercept("warn"):
    asyncio.run(main())
print("finished")
"""


def run_script(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(SCRIPT)
    command = [sys.executable, *options, str(script)]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=60)


def test_without_filters_the_program_runs_on_and_warns(tmp_path: Path) -> None:
    passed = run_script(tmp_path)
    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.strip() == "finished"
    assert "app.py:6: BlockingCallWarning: Blocking call to time.sleep()" in passed.stderr


def test_dash_w_error_runtimewarning_is_a_blanket_filter_that_only_shows_it(
    tmp_path: Path,
) -> None:
    # a filter on a base class is not an opt-in: warn mode keeps the program running
    shown = run_script(tmp_path, "-W", "error::RuntimeWarning")
    assert shown.returncode == 0
    assert "BlockingCallWarning: Blocking call to time.sleep()" in shown.stderr
    assert "finished" in shown.stdout


def test_dash_w_error_with_the_dotted_category(tmp_path: Path) -> None:
    # CPython drops this option at start-up (the package is not importable yet); the package
    # applies it when it is imported.
    failed = run_script(tmp_path, "-W", "error::blockbuster_lite.BlockingCallWarning")
    assert failed.returncode != 0
    assert "BlockingCallWarning" in failed.stderr


def test_pytest_dash_w_with_the_dotted_category(tmp_path: Path) -> None:
    (tmp_path / "test_app.py").write_text(
        "import asyncio, time\n"
        "import blockbuster_lite\n\n"
        "def test_sleepy():\n"
        "    async def main():\n"
        "        time.sleep(0.0001)\n"
        "    with blockbuster_lite.intercept('warn'):\n"
        "        asyncio.run(main())\n"
    )
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    command += ["-W", "error::blockbuster_lite.BlockingCallWarning", "test_app.py"]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BlockingCallWarning: Blocking call to time.sleep()" in result.stdout
    assert "1 failed" in result.stdout


# -- log ---------------------------------------------------------------------------------------


def test_log_mode_logs_call_site_and_duration(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> int:
        line = line_after()
        time.sleep(0.02)
        return line

    with caplog.at_level(logging.WARNING, logger="blockbuster_lite"), bl.intercept("log") as g:
        line = asyncio.run(main())
    (record,) = [r for r in caplog.records if r.name == "blockbuster_lite"]
    message = record.getMessage()
    assert "time.sleep()" in message
    assert f"{HERE}:{line}" in message
    assert "blocked " in message and message.endswith(" ms)")
    blocked_ms = float(message.rsplit("blocked ", 1)[1].split(" ms")[0])
    assert blocked_ms >= 19
    (violation,) = g.violations
    assert violation.action is bl.Mode.LOG
    assert violation.duration_s is not None and violation.duration_s >= 0.019


def test_log_mode_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with bl.intercept("log") as guard:
            call_on("asyncio", lambda: time.sleep(0.0001))
    assert calls(guard) == ["time.sleep"]


def test_request_context_is_copied_into_violation_and_message() -> None:
    async def main() -> None:
        token = request_context.set({"method": "GET", "path": "/users/7", "route": "/users/{id}"})
        try:
            time.sleep(0.0001)
        finally:
            request_context.reset(token)

    with bl.intercept("log") as guard:
        asyncio.run(main())
    (violation,) = guard.violations
    assert violation.context == {"method": "GET", "path": "/users/7", "route": "/users/{id}"}
    assert "(request GET /users/{id})" in violation.message


# -- observers and failures --------------------------------------------------------------------


@pytest.fixture
def observers() -> Iterator[None]:
    saved = state.observers
    yield
    state.observers = saved


def test_observers_see_every_violation(observers: None) -> None:
    seen: list[bl.Violation] = []
    state.observers = (*state.observers, seen.append)
    with bl.intercept("raise"):
        with pytest.raises(bl.BlockingCallError):
            call_on("asyncio", lambda: time.sleep(0.0001))
        with bl.intercept("log"):
            call_on("asyncio", lambda: time.sleep(0.0001))
    assert [(v.call, v.action) for v in seen] == [
        ("time.sleep", bl.Mode.RAISE),
        ("time.sleep", bl.Mode.LOG),
    ]


def test_a_failing_observer_is_contained_and_logged_once(
    observers: None, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(violation: bl.Violation) -> None:
        raise ZeroDivisionError("observer bug")

    seen: list[bl.Violation] = []
    state.observers = (broken, seen.append)
    with caplog.at_level(logging.ERROR, logger="blockbuster_lite"), bl.intercept("log") as g:
        for _ in range(3):
            call_on("asyncio", nap)
    assert len(g.violations) == len(seen) == 3  # later observers still run
    errors = [
        r for r in caplog.records if r.levelno == logging.ERROR and "observer" in r.getMessage()
    ]
    assert len(errors) == 1


def _unique_module(name: str, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType(name)

    def work(value: int) -> int:
        return value * 2

    module.work = work  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)
    return module


@pytest.mark.parametrize("mode", ["raise", "warn", "log"])
def test_a_failing_predicate_lets_the_call_proceed_and_is_logged_once(
    mode: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"bbl_predicate_bug_{mode}"
    module = _unique_module(name, monkeypatch)

    def predicate(instance: object, args: tuple[object, ...], kwargs: dict[str, object]) -> bool:
        raise KeyError("predicate bug")

    target = Target(name, "work", f"{name}.work", predicate)
    with (
        temporary_targets(target),
        caplog.at_level(logging.ERROR, logger="blockbuster_lite"),
        bl.intercept(mode) as guard,
    ):
        assert call_on("asyncio", lambda: [module.work(i) for i in range(3)]) == [0, 2, 4]
    assert guard.violations == []
    errors = [r for r in caplog.records if r.name == "blockbuster_lite" and name in r.getMessage()]
    assert len(errors) == 1
    assert "the call proceeded unchecked" in errors[0].getMessage()
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is KeyError
    _failures_logged.discard((f"{name}.work", KeyError))


def test_a_failing_report_step_lets_the_call_proceed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> str:
        token = request_context.set(42)  # type: ignore[arg-type]  # not a mapping: building fails
        try:
            time.sleep(0.0001)
            return "slept"
        finally:
            request_context.reset(token)

    with caplog.at_level(logging.ERROR, logger="blockbuster_lite"), bl.intercept("raise") as guard:
        assert asyncio.run(main()) == "slept"
    assert guard.violations == []
    assert any("time.sleep" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    _failures_logged.discard(("time.sleep", TypeError))


# -- re-entrancy -------------------------------------------------------------------------------


def test_calls_made_inside_a_checked_call_are_not_checked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "bbl_reentrant_module"
    module = types.ModuleType(name)
    inner_flags: list[bool] = []

    def fetch() -> str:
        inner_flags.append(reentrant.get())
        time.sleep(0.0001)
        os.stat(__file__)
        return "fetched"

    module.fetch = fetch  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)
    with temporary_targets(Target(name, "fetch", f"{name}.fetch")), bl.intercept("log") as guard:
        assert call_on("asyncio", lambda: module.fetch()) == "fetched"
        assert call_on("asyncio", lambda: reentrant.get()) is False
        call_on("asyncio", lambda: time.sleep(0.0001))  # checked again afterwards
    assert inner_flags == [True]
    assert calls(guard) == [f"{name}.fetch", "time.sleep"]


def test_a_checked_call_on_one_loop_thread_does_not_hide_calls_on_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    name = "bbl_waiting_module"
    module = types.ModuleType(name)
    other_done = threading.Event()

    def wait_for_other() -> None:
        other_done.wait(5)  # inside a checked call on this thread

    module.wait_for_other = wait_for_other  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)

    def other() -> None:
        call_on("asyncio", lambda: time.sleep(0.0001))
        other_done.set()

    target = Target(name, "wait_for_other", f"{name}.wait_for_other")
    thread = threading.Thread(target=other, name="other-loop")

    async def main() -> None:
        thread.start()
        module.wait_for_other()

    with temporary_targets(target), bl.intercept("log") as guard:
        asyncio.run(main())
        thread.join()
    assert sorted(calls(guard)) == sorted([f"{name}.wait_for_other", "time.sleep"])
    assert {v.call: v.thread_name for v in guard.violations}["time.sleep"] == "other-loop"
