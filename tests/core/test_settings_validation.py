"""Every bad value of every setting, from every source, is refused naming value and source.

One table per source: function arguments, environment variables (as ``activate_from_env`` and the
start-up hook read them), the runner's options, and pytest's option, ini keys and marker (real
pytest runs in a subprocess).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from helpers import process_state

import blockbuster_lite as bl
from blockbuster_lite import offload
from blockbuster_lite.asgi import BlockBusterMiddleware
from blockbuster_lite.core.config import parse_count, parse_seconds, parse_watchdog_ms
from blockbuster_lite.integrations import cli, startup

pytest_plugins = ["pytester"]


async def _app(scope: Any, receive: Any, send: Any) -> None:
    return None


# -- arguments -----------------------------------------------------------------------------------

ARGUMENTS: list[tuple[str, Callable[[], Any], str, str]] = [
    # (id, the call, the value as the error shows it, the source it names)
    ("scope=5", lambda: bl.intercept(scope=5), "5", "argument 'scope'"),  # type: ignore[arg-type]
    ("scope=['']", lambda: bl.intercept(scope=[""]), "''", "argument 'scope'"),
    ("scope=[5]", lambda: bl.intercept(scope=[5]), "5", "argument 'scope'"),  # type: ignore[list-item]
    ("scope=' '", lambda: bl.intercept(scope=" "), "' '", "argument 'scope'"),
    ("scope=b'app'", lambda: bl.intercept(scope=b"app"), "b'app'", "argument 'scope'"),  # type: ignore[arg-type]
    ("watchdog=inf", lambda: bl.intercept(watchdog=math.inf), "inf", "argument 'watchdog'"),
    ("watchdog=nan", lambda: bl.intercept(watchdog=math.nan), "nan", "argument 'watchdog'"),
    ("watchdog=True", lambda: bl.intercept(watchdog=True), "True", "argument 'watchdog'"),
    ("watchdog='0.1'", lambda: bl.intercept(watchdog="0.1"), "'0.1'", "argument 'watchdog'"),  # type: ignore[arg-type]
    ("watchdog=0", lambda: bl.intercept(watchdog=0), "0", "argument 'watchdog'"),
    ("watchdog=-1", lambda: bl.intercept(watchdog=-1), "-1", "argument 'watchdog'"),
    ("watchdog=10**400", lambda: bl.intercept(watchdog=10**400), "1000", "argument 'watchdog'"),
    ("watchdog=1e-9", lambda: bl.intercept(watchdog=1e-9), "1e-09", "argument 'watchdog'"),
    ("activate watchdog", lambda: bl.activate(watchdog=math.inf), "inf", "activate() argument"),
    ("mode=' '", lambda: bl.intercept(" "), "' '", "argument 'mode'"),
    ("mode=''", lambda: bl.intercept(""), "''", "argument 'mode'"),
    ("mode=5", lambda: bl.intercept(5), "5", "argument 'mode'"),  # type: ignore[arg-type]
    ("mode=None", lambda: bl.intercept(None), "None", "argument 'mode'"),  # type: ignore[arg-type]
    ("allow=5", lambda: bl.intercept(allow=5), "5", "argument 'allow'"),  # type: ignore[arg-type]
    ("allow=None", lambda: bl.intercept(allow=None), "None", "argument 'allow'"),  # type: ignore[arg-type]
    ("allow=[5]", lambda: bl.intercept(allow=[5]), "5", "argument 'allow'"),  # type: ignore[list-item]
    ("allow=['']", lambda: bl.intercept(allow=[""]), "''", "argument 'allow'"),
    ("allow=b'x'", lambda: bl.intercept(allow=b"x"), "b'x'", "argument 'allow'"),
    ("allow={'a': 1}", lambda: bl.intercept(allow={"a": 1}), "{'a': 1}", "argument 'allow'"),  # type: ignore[arg-type]
    ("allow=CRLF", lambda: bl.intercept(allow=["app\r\n.py"]), "'app\\r\\n.py'", "argument 'allow'"),
    ("middleware mode", lambda: BlockBusterMiddleware(_app, mode=" "), "' '", "BlockBusterMiddleware"),
    ("set_capacity(0)", lambda: offload.set_capacity(0), "0", "set_capacity()"),
    ("set_capacity(True)", lambda: offload.set_capacity(True), "True", "set_capacity()"),
    ("set_capacity(2.5)", lambda: offload.set_capacity(2.5), "2.5", "set_capacity()"),  # type: ignore[arg-type]
    ("set_capacity('4')", lambda: offload.set_capacity("4"), "'4'", "set_capacity()"),  # type: ignore[arg-type]
    ("set_file_capacity(-1)", lambda: offload.set_file_capacity(-1), "-1", "set_file_capacity()"),
    ("saturation inf", lambda: offload.set_saturation_threshold(math.inf), "inf", "set_saturation_threshold()"),
    ("saturation nan", lambda: offload.set_saturation_threshold(math.nan), "nan", "set_saturation_threshold()"),
    ("saturation 0", lambda: offload.set_saturation_threshold(0), "0", "set_saturation_threshold()"),
    ("saturation '0.1'", lambda: offload.set_saturation_threshold("0.1"), "'0.1'", "set_saturation_threshold()"),  # type: ignore[arg-type]
]  # fmt: skip


@pytest.mark.parametrize(
    ("call", "value", "source"), [case[1:] for case in ARGUMENTS], ids=[c[0] for c in ARGUMENTS]
)
def test_a_bad_argument_is_refused_naming_value_and_source(
    call: Callable[[], Any], value: str, source: str
) -> None:
    before = process_state()
    capacities = (offload.capacity(), offload.file_capacity(), offload.saturation_threshold())
    with pytest.raises(bl.ConfigError) as excinfo:
        call()
    message = str(excinfo.value)
    assert value in message and source in message, message
    assert "expected" in message  # and what is allowed
    assert process_state() == before
    assert (offload.capacity(), offload.file_capacity(), offload.saturation_threshold()) == (
        capacities
    )


# -- environment -----------------------------------------------------------------------------

ENVIRONMENT = [
    ("WATCHDOG_MS", value) for value in ("inf", "1e400", "nan", "-1", "0", "abc", " ", "-inf")
] + [
    ("SATURATION_MS", value) for value in ("abc", "-1", "nan", "inf", "0", " ")
] + [
    (name, value)
    for name in ("OFFLOAD_THREADS", "OFFLOAD_FILE_THREADS")
    for value in ("lots", "0", "-1", "1.5", " ", "1e3", "99999")
] + [
    ("SCOPE", value) for value in (" ", "my-app", "b c", "a.")
] + [
    ("ALLOW", value) for value in ("app/data.txt", "not a module", ":f")
] + [
    ("OTEL", value) for value in ("maybe", " ", "2")
]  # fmt: skip


@pytest.mark.parametrize(("name", "value"), ENVIRONMENT)
def test_a_bad_environment_value_is_refused_at_activation(name: str, value: str) -> None:
    variable = f"BLOCKBUSTER_LITE_{name}"
    before = process_state()
    with pytest.raises(bl.ConfigError) as excinfo:
        bl.activate_from_env({"BLOCKBUSTER_LITE_MODE": "warn", variable: value})
    message = str(excinfo.value)
    assert variable in message and repr(value) in message, message
    assert process_state() == before


@pytest.mark.parametrize("name", ["SUMMARY", "STRICT_STARTUP"])
@pytest.mark.parametrize("value", ["maybe", " ", "2", "ja"])
def test_a_bad_startup_flag_is_refused(name: str, value: str) -> None:
    variable = f"BLOCKBUSTER_LITE_{name}"
    before = process_state()
    with pytest.raises(bl.ConfigError) as excinfo:
        startup._activate({"BLOCKBUSTER_LITE_MODE": "warn", variable: value})
    assert variable in str(excinfo.value) and repr(value) in str(excinfo.value)
    assert process_state() == before


def test_the_documented_watchdog_message() -> None:
    with pytest.raises(bl.ConfigError) as excinfo:
        parse_watchdog_ms("inf", "BLOCKBUSTER_LITE_WATCHDOG_MS")
    assert str(excinfo.value) == (
        "invalid watchdog threshold 'inf' from BLOCKBUSTER_LITE_WATCHDOG_MS: "
        "expected a finite number of milliseconds from 1 to 3600000"
    )


def test_good_values_are_still_taken() -> None:
    assert parse_watchdog_ms(" 250 ", "X") == pytest.approx(0.25)
    assert parse_watchdog_ms("", "X") is None  # an empty variable is "not set"
    assert parse_seconds(1, "X") == 1.0 and parse_seconds(0.001, "X") == 0.001
    assert parse_count(" 8 ", "X", "threads") == 8
    guard = bl.intercept("warn", watchdog=0.25, scope="app, lib", allow="pkg")
    assert (guard.watchdog, guard.scope, guard.allow[0].text) == (0.25, ("app", "lib"), "pkg")
    assert bl.intercept(scope=[]).scope is None  # no scope: everything is checked


def test_a_bad_saturation_variable_is_refused_when_a_watchdog_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from blockbuster_lite.offload import settings

    monkeypatch.setattr(settings._settings, "threshold", None)
    monkeypatch.setenv("BLOCKBUSTER_LITE_SATURATION_MS", "nan")
    before = process_state()
    with pytest.raises(bl.ConfigError, match="'nan' from BLOCKBUSTER_LITE_SATURATION_MS"):
        bl.intercept("warn", watchdog=0.1).start()
    assert process_state() == before


# -- the runner --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [("--watchdog-ms", "inf"), ("--watchdog-ms", "nan"), ("--watchdog-ms", "0"),
     ("--mode", " "), ("--scope", " "), ("--allow", "a/b.txt")],
)  # fmt: skip
def test_the_runner_refuses_bad_options(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.build_parser().parse_args([f"{option}={value}", "--", "true"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert option in err and repr(value) in err, err


# -- pytest: option, ini, marker ---------------------------------------------------------------

PYTEST_CASES = [
    # (id, command-line args, ini lines, marker, what the error names)
    ("option blank", ["--blockbuster-mode= "], "", "", "' ' from --blockbuster-mode"),
    ("option empty", ["--blockbuster-mode="], "", "", "'' from --blockbuster-mode"),
    ("option typo", ["--blockbuster-mode=strcit"], "", "", "'strcit' from --blockbuster-mode"),
    ("ini empty", [], "blockbuster_mode =", "", "'' from ini option blockbuster_mode"),
    ("ini typo", [], "blockbuster_mode = loud", "", "'loud' from ini option blockbuster_mode"),
    ("ini allow", [], "blockbuster_allow = a/b.txt", "", "'a/b.txt' from ini option blockbuster_allow"),
    ("marker mode", [], "", "mode=5", "invalid mode 5 from @pytest.mark.blockbuster"),
    ("marker blank", [], "", "mode=' '", "invalid mode ' ' from @pytest.mark.blockbuster"),
    ("marker allow", [], "", "allow=5", "invalid allow rules 5 from @pytest.mark.blockbuster"),
    ("marker allow item", [], "", "allow=[5]", "invalid allow rule 5 from @pytest.mark.blockbuster"),
    ("marker scope", [], "", "scope=5", "invalid scope 5 from @pytest.mark.blockbuster"),
    ("marker scope item", [], "", "scope=['']", "invalid scope entry '' from @pytest.mark.blockbuster"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "ini", "marker", "named"), [c[1:] for c in PYTEST_CASES], ids=[c[0] for c in PYTEST_CASES]
)
def test_pytest_refuses_bad_settings(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    ini: str,
    marker: str,
    named: str,
) -> None:
    for name in ("MODE", "ALLOW", "SCOPE"):
        monkeypatch.delenv(f"BLOCKBUSTER_LITE_{name}", raising=False)
    pytester.makeini(f"[pytest]\n{ini}\n")
    decorator = f"@pytest.mark.blockbuster({marker})\n" if marker else ""
    pytester.makepyfile(test_it=f"import pytest\n\n{decorator}def test_it():\n    pass\n")
    result = pytester.runpytest_subprocess(*args)
    output = result.stdout.str() + result.stderr.str()
    assert named in output, output
    assert result.ret != 0
    assert " passed" not in result.stdout.str()
