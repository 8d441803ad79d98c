"""Calls made inside a library: the library frame, the allow rule to copy, known-trivial calls."""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import time
import warnings
from pathlib import Path
from types import ModuleType

import asyncpg.connect_utils
import pytest
from helpers import call_on, marked_line, raised

import blockbuster_lite as bl
from blockbuster_lite.core.config import ConfigError, settings_from_env
from blockbuster_lite.core.policy import KNOWN_TRIVIAL

LIBRARY = """
import os


def read_config(path):
    return os.stat(path)  # LIBRARY-STAT
"""


@pytest.fixture
def library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    from helpers import write_module

    (tmp_path / "site-packages").mkdir()
    return write_module(tmp_path / "site-packages", "vendorlib.config", LIBRARY, monkeypatch)


def user_calls_library(library: ModuleType) -> os.stat_result:
    return library.read_config(".")  # USER-CALL


def test_the_message_names_the_user_frame_the_library_frame_and_the_allow_rule(
    library: ModuleType,
) -> None:
    with bl.intercept("raise"):
        violation = raised(lambda: call_on("asyncio", lambda: user_calls_library(library)))
    assert (violation.filename, violation.lineno) == (__file__, marked_line(__file__, "USER-CALL"))
    assert violation.function == "user_calls_library"
    library_file = library.__file__
    assert library_file is not None
    assert violation.library_frame == (
        library_file, marked_line(library_file, "LIBRARY-STAT"), "read_config"
    )
    message = violation.message
    assert f"in user_calls_library (inside vendorlib/config.py:{violation.library_frame[1]} in " \
        "read_config); allow it with BLOCKBUSTER_LITE_ALLOW=vendorlib.config or " \
        'allow=["vendorlib.config"]' in message  # fmt: skip
    assert "anyio.Path" not in message  # the fix for the user's own line does not apply


def test_the_allow_rule_it_gives_works(library: ModuleType) -> None:
    with bl.intercept("raise", allow=["vendorlib.config"]) as guard:
        call_on("asyncio", lambda: user_calls_library(library))
    assert guard.violations == []


def test_a_direct_call_has_no_library_frame() -> None:
    with bl.intercept("raise"):
        violation = raised(lambda: call_on("asyncio", lambda: os.stat(".")))
    assert violation.library_frame is None
    assert "(inside" not in violation.message and "anyio.Path" in violation.message


def read_pgpass(path: pathlib.Path) -> object:
    return asyncpg.connect_utils._read_password_file(path)  # type: ignore[attr-defined]


@pytest.fixture
def pgpass(tmp_path: Path) -> pathlib.Path:
    path = tmp_path / ".pgpass"
    path.write_text("127.0.0.1:5432:db:user:secret\n")
    path.chmod(0o600)
    return path


def test_known_trivial_calls_pass_in_raise_mode_with_a_debug_line(
    pgpass: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, "blockbuster_lite"), bl.intercept("raise") as guard:
        passwords = call_on("asyncio", lambda: read_pgpass(pgpass))
        violation = raised(lambda: call_on("asyncio", lambda: os.stat(pgpass)))  # still refused
    assert passwords  # the file was stat'ed, opened and read
    assert guard.violations == [violation]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("known-trivial os.stat() in asyncpg.connect_utils._read_password_file" in m
               for m in debug), debug  # fmt: skip


@pytest.mark.parametrize("mode", ["warn", "log"])
def test_known_trivial_calls_are_never_warned_or_logged(pgpass: pathlib.Path, mode: str) -> None:
    with warnings.catch_warnings(record=True) as caught, bl.intercept(mode) as guard:
        warnings.simplefilter("always")
        call_on("asyncio", lambda: read_pgpass(pgpass))
    assert guard.violations == [] and caught == []


def test_default_allow_false_checks_them(pgpass: pathlib.Path) -> None:
    with bl.intercept("raise", default_allow=False):
        violation = raised(lambda: call_on("asyncio", lambda: read_pgpass(pgpass)))
    assert violation.call == "os.stat"
    assert violation.library_frame is not None
    assert violation.library_frame[2] == "_read_password_file"
    assert "BLOCKBUSTER_LITE_ALLOW=asyncpg.connect_utils" in violation.message


def test_the_table_names_a_reason_for_each_entry() -> None:
    assert KNOWN_TRIVIAL
    for entry in KNOWN_TRIVIAL:
        assert entry.reason and entry.calls and entry.functions
        module = __import__(entry.module, fromlist=["_"])
        for function in entry.functions:  # the library still has these functions
            assert callable(getattr(module, function)), (entry.module, function)


def test_default_allow_from_the_environment() -> None:
    env = {"BLOCKBUSTER_LITE_MODE": "raise", "BLOCKBUSTER_LITE_DEFAULT_ALLOW": "0"}
    settings = settings_from_env(env)
    assert settings is not None and settings["default_allow"] is False
    with pytest.raises(ConfigError, match="'nah' from BLOCKBUSTER_LITE_DEFAULT_ALLOW"):
        settings_from_env({**env, "BLOCKBUSTER_LITE_DEFAULT_ALLOW": "nah"})


def test_activate_default_allow_false() -> None:
    guard = bl.activate("warn", default_allow=False)
    try:
        assert guard.default_allow is False
        assert bl.activate("warn", default_allow=True) is guard and guard.default_allow
    finally:
        bl.deactivate()


# -- severity: warn mode warns after the call, with its duration ------------------------------


def test_warn_mode_warns_after_the_call_with_its_duration() -> None:
    with bl.intercept("warn") as guard, pytest.warns(bl.BlockingCallWarning) as record:
        call_on("asyncio", lambda: time.sleep(0.02))
    message = str(record[0].message)
    blocked_ms = float(message.rsplit("(blocked ", 1)[1].split(" ms)")[0])
    assert blocked_ms >= 19
    (violation,) = guard.violations
    assert violation.duration_s is not None and violation.duration_s >= 0.019


def test_warn_mode_still_warns_when_the_call_raises(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with bl.intercept("warn"), pytest.warns(bl.BlockingCallWarning, match="os.stat"), \
            pytest.raises(FileNotFoundError):  # fmt: skip
        call_on("asyncio", lambda: os.stat(missing))


def test_an_offloaded_call_reports_the_time_it_ran_off_the_loop() -> None:
    async def main() -> None:
        async with bl.intercept("offload") as guard:
            time.sleep(0.02)
        (violation,) = guard.violations
        assert violation.action is bl.Mode.OFFLOAD
        assert "in a worker thread, off the loop)" in violation.message
        assert "blocked" not in violation.message.rsplit(";", 1)[1]

    asyncio.run(main())
