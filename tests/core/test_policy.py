"""Modes, allow rules, scope, and the default exemptions for the framework's machinery."""

from __future__ import annotations

import asyncio
import functools
import importlib
import io
import linecache
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import pytest
from helpers import call_on, calls, write_module

import blockbuster_lite as bl
from blockbuster_lite.core.config import AllowRule, parse_allow, parse_mode, parse_scope

HERE = os.path.relpath(__file__)
FILENAME = os.path.basename(__file__)


def nap() -> None:
    time.sleep(0.0001)


def call_nap() -> None:
    nap()


# -- modes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("off", bl.Mode.OFF),
        ("log", bl.Mode.LOG),
        ("warn", bl.Mode.WARN),
        ("raise", bl.Mode.RAISE),
        (" RAISE ", bl.Mode.RAISE),
        ("Warn", bl.Mode.WARN),
        (bl.Mode.LOG, bl.Mode.LOG),
    ],
)
def test_a_mode_is_a_mode_or_its_string_value(value: str, expected: bl.Mode) -> None:
    assert parse_mode(value) is expected
    assert bl.intercept(value).mode is expected


def test_mode_is_a_str_enum() -> None:
    assert [mode.value for mode in bl.Mode] == ["off", "log", "warn", "raise", "offload"]
    assert bl.Mode.RAISE == "raise"  # type: ignore[comparison-overlap]
    assert str(bl.Mode.WARN) == "warn"
    assert f"{bl.Mode.LOG}" == "log"


@pytest.mark.parametrize("value", ["strcit", "", "warning", "1", None, 3, ["raise"]])
def test_an_unknown_mode_is_rejected_naming_value_and_source(value: object) -> None:
    with pytest.raises(bl.ConfigError) as excinfo:
        bl.intercept(value)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert f"invalid mode {value!r}" in message
    assert "intercept()" in message
    assert "raise" in message  # lists the choices
    assert isinstance(excinfo.value, ValueError)


def test_activate_names_itself_as_the_source_of_a_bad_mode() -> None:
    with pytest.raises(bl.ConfigError, match=r"invalid mode 'loud' from activate\(\)"):
        bl.activate("loud")
    assert bl.Guard is type(bl.intercept())


def test_parse_mode_names_any_source() -> None:
    with pytest.raises(bl.ConfigError, match=r"invalid mode 'x' from pyproject\.toml"):
        parse_mode("x", "pyproject.toml")


# -- allow rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "module", "path", "function"),
    [
        ("app", "app", None, None),
        ("app.db.legacy", "app.db.legacy", None, None),
        ("legacy.py", None, "legacy.py", None),
        ("app/db.py", None, "app/db.py", None),
        ("app/db.py:load", None, "app/db.py", "load"),
        ("app/db.py:Repo.load", None, "app/db.py", "Repo.load"),
        ("  app/db.py:load_all ", None, "app/db.py", "load_all"),
    ],
)
def test_allow_rule_forms(
    text: str, module: str | None, path: str | None, function: str | None
) -> None:
    (rule,) = parse_allow([text])
    assert (rule.module, rule.path, rule.function) == (module, path, function)


def test_allow_rules_from_a_comma_separated_string() -> None:
    rules = parse_allow("app, lib/io.py ,lib/io.py:read,")
    assert [rule.text for rule in rules] == ["app", "lib/io.py", "lib/io.py:read"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        ":load",
        "app/db.py:",
        "app/db.py:not valid",
        "app/data.txt",
        "app/data.txt:load",
        "app:load",
        "not a module",
        "app..db",
        "9app",
    ],
)
def test_a_malformed_allow_rule_is_rejected_naming_it_and_its_source(text: str) -> None:
    with pytest.raises(bl.ConfigError) as excinfo:
        bl.intercept("raise", allow=[text])
    assert repr(text) in str(excinfo.value)
    assert "intercept() argument 'allow'" in str(excinfo.value)


def test_allow_must_be_strings() -> None:
    with pytest.raises(bl.ConfigError, match="invalid allow rule 42"):
        bl.intercept("raise", allow=[42])  # type: ignore[list-item]
    with pytest.raises(bl.ConfigError, match="invalid allow rules 7"):
        bl.intercept("raise", allow=7)  # type: ignore[arg-type]


def test_allow_rule_matching() -> None:
    module_rule = AllowRule("app.db", module="app.db")
    assert module_rule.matches("app.db", "/x/app/db/__init__.py", "f")
    assert module_rule.matches("app.db.pool", "/x/app/db/pool.py", "f")
    assert not module_rule.matches("app.dbx", "/x/app/dbx.py", "f")
    assert not module_rule.matches("app", "/x/app/__init__.py", "f")
    file_rule = AllowRule("app/db.py", path="app/db.py")
    assert file_rule.matches("m", "/srv/app/db.py", "anything")
    assert not file_rule.matches("m", "/srv/myapp/db.py", "anything")
    function_rule = AllowRule("app/db.py:load", path="app/db.py", function="load")
    assert function_rule.matches("m", "/srv/app/db.py", "load")
    assert function_rule.matches("m", "/srv/app/db.py", "Repo.load")
    assert not function_rule.matches("m", "/srv/app/db.py", "load_all")
    method_rule = AllowRule("app/db.py:Repo.load", path="app/db.py", function="Repo.load")
    assert method_rule.matches("m", "/srv/app/db.py", "Repo.load")
    assert not method_rule.matches("m", "/srv/app/db.py", "Other.load")


@pytest.mark.parametrize(
    "rule",
    [
        FILENAME,
        f"tests/core/{FILENAME}",
        f"{FILENAME}:nap",
        f"core/{FILENAME}:nap",
        f"{FILENAME}:call_nap",  # an outer frame of the stack matches too
        "test_policy",  # the module name
    ],
)
def test_an_allow_rule_exempts_matching_calls(rule: str) -> None:
    with bl.intercept("raise", allow=[rule]) as guard:
        call_on("asyncio", call_nap)
    assert guard.violations == []


@pytest.mark.parametrize("rule", [f"{FILENAME}:other_function", "other_module", "other/file.py"])
def test_an_allow_rule_that_does_not_match_exempts_nothing(rule: str) -> None:
    with bl.intercept("raise", allow=[rule]) as guard, pytest.raises(bl.BlockingCallError):
        call_on("asyncio", call_nap)
    assert calls(guard) == ["time.sleep"]


def test_a_module_rule_exempts_a_whole_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    legacy = write_module(
        tmp_path,
        "bbl_legacy.storage",
        "import time\n\ndef save():\n    time.sleep(0.0001)\n    return 'saved'\n",
        monkeypatch,
    )
    with bl.intercept("raise", allow=["bbl_legacy"]) as guard:
        assert call_on("asyncio", legacy.save) == "saved"
        with pytest.raises(bl.BlockingCallError):
            call_on("asyncio", nap)
    assert calls(guard) == ["time.sleep"]
    assert guard.violations[0].function == "nap"


def test_allowed_calls_are_not_checked_inside_either(tmp_path: Path) -> None:
    # An allowed shutil.copytree makes many file calls; none of them is checked on its own.
    source = tmp_path / "src"
    source.mkdir()
    for index in range(3):
        (source / f"{index}.txt").write_text("x")

    def copy_tree() -> None:
        import shutil

        shutil.copytree(source, tmp_path / "dst")

    with bl.intercept("raise", allow=[f"{FILENAME}:copy_tree"]) as guard:
        call_on("asyncio", copy_tree)
    assert guard.violations == []
    assert sorted(os.listdir(tmp_path / "dst")) == ["0.txt", "1.txt", "2.txt"]


# -- scope -------------------------------------------------------------------------------------


@pytest.fixture
def scoped_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    return write_module(
        tmp_path,
        "bbl_myapp.routes",
        """
        import time

        def handler():
            time.sleep(0.0001)

        def call_back(func):
            return func()
        """,
        monkeypatch,
    )


def test_scope_checks_calls_made_from_the_scoped_packages(scoped_app: object) -> None:
    with bl.intercept("raise", scope=["bbl_myapp"]) as guard:
        with pytest.raises(bl.BlockingCallError):
            call_on("asyncio", scoped_app.handler)  # type: ignore[attr-defined]
        call_on("asyncio", nap)  # this file is out of scope
    assert [(v.call, v.function) for v in guard.violations] == [("time.sleep", "handler")]


def test_scope_sees_through_the_stdlib_to_the_scoped_package(scoped_app: object) -> None:
    with bl.intercept("raise", scope="bbl_myapp") as guard, pytest.raises(bl.BlockingCallError):
        # handler is reached through functools (stdlib) from this file; the site is handler.
        call_on("asyncio", functools.partial(scoped_app.handler))  # type: ignore[attr-defined]
    assert guard.violations[0].function == "handler"


def test_scope_covers_an_installed_library_called_from_user_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    library_dir = tmp_path / "site-packages"
    library_dir.mkdir()
    library = write_module(
        library_dir,
        "bbl_vendor_sdk",
        "import time\n\ndef fetch():\n    time.sleep(0.0001)\n",
        monkeypatch,
    )

    async def endpoint() -> None:
        with pytest.raises(bl.BlockingCallError):
            library.fetch()
        nap()  # not made from the library

    with bl.intercept("raise", scope=["bbl_vendor_sdk"]) as guard:
        asyncio.run(endpoint())
    (violation,) = guard.violations
    # The site is still the innermost frame of the user's code that called the library.
    assert (violation.filename, violation.function) == (__file__, endpoint.__qualname__)


def test_scope_from_a_comma_separated_string() -> None:
    assert parse_scope("app, lib.sub") == ("app", "lib.sub")
    assert parse_scope(["app"]) == ("app",)
    assert parse_scope(None) is None
    assert parse_scope([]) is None


@pytest.mark.parametrize("value", ["my-app", "app/routes.py", "9lives", [3]])
def test_a_bad_scope_is_rejected_naming_it(value: object) -> None:
    with pytest.raises(bl.ConfigError) as excinfo:
        bl.intercept("raise", scope=value)  # type: ignore[arg-type]
    message = str(excinfo.value)
    assert "invalid scope entry" in message
    assert "intercept() argument 'scope'" in message


# -- the machinery is never flagged ------------------------------------------------------------


def render_traceback() -> str:
    linecache.clearcache()  # force the source to be read from disk again
    try:
        raise ValueError("boom")
    except ValueError:
        return traceback.format_exc()


def test_traceback_rendering_on_the_loop_is_not_flagged() -> None:
    with bl.intercept("raise") as guard:
        text = call_on("asyncio", render_traceback)
    assert 'raise ValueError("boom")' in text  # the source line was read
    assert guard.violations == []


def test_logging_exception_to_a_stream_handler_is_not_flagged() -> None:
    stream = io.StringIO()
    logger = logging.getLogger("bbl_test_stream")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False

    def log_error() -> None:
        linecache.clearcache()
        try:
            raise KeyError("missing")
        except KeyError:
            logger.exception("request failed")

    try:
        with bl.intercept("raise") as guard:
            call_on("asyncio", log_error)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    assert "request failed" in stream.getvalue()
    assert 'raise KeyError("missing")' in stream.getvalue()
    assert guard.violations == []


def test_logging_to_a_file_handler_opened_on_the_loop_is_not_flagged(tmp_path: Path) -> None:
    logger = logging.getLogger("bbl_test_file")
    handler = logging.FileHandler(tmp_path / "app.log", delay=True)  # opens on first record
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with bl.intercept("raise") as guard:
            call_on("asyncio", lambda: logger.warning("written on the loop"))
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
    assert "written on the loop" in (tmp_path / "app.log").read_text()
    assert guard.violations == []


def test_importing_a_fresh_module_on_the_loop_is_not_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bbl_fresh_module.py").write_text("VALUE = 41 + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bbl_fresh_module", raising=False)
    importlib.invalidate_caches()

    def load() -> int:
        module = importlib.import_module("bbl_fresh_module")
        monkeypatch.setitem(sys.modules, "bbl_fresh_module", module)
        return int(module.VALUE)

    with bl.intercept("raise") as guard:
        assert call_on("asyncio", load) == 42
    assert guard.violations == []


def test_an_import_statement_on_the_loop_is_not_flagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bbl_fresh_import.py").write_text("import json\nVALUE = json.dumps(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bbl_fresh_import", raising=False)

    async def main() -> str:
        import bbl_fresh_import  # type: ignore[import-not-found]

        monkeypatch.setitem(sys.modules, "bbl_fresh_import", bbl_fresh_import)
        return str(bbl_fresh_import.VALUE)

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == "1"
    assert guard.violations == []


def test_the_loops_own_executor_and_self_pipe_are_not_flagged() -> None:
    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.run_in_executor(None, pow, 2, n) for n in range(8)))
        done = asyncio.Event()
        loop.call_soon_threadsafe(done.set)  # wakes the loop through its self-pipe
        await done.wait()
        return list(results)

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == [2**n for n in range(8)]
    assert guard.violations == []


def test_anyio_trio_test_runner_host_loop_is_not_flagged() -> None:
    # anyio's pytest plugin runs trio in guest mode on the test thread; between guest ticks its
    # host loop waits on a queue.Queue (trio's run context stays set). A flagged wait there raised
    # inside the runner, left trio half-running and failed every later test of the session.
    pytest.importorskip("trio")
    import anyio
    from anyio._core._eventloop import get_async_backend

    async def fixture() -> int:
        await anyio.sleep(0.05)  # the host loop must wait for trio's I/O thread meanwhile
        return 42

    runner = get_async_backend("trio").create_test_runner({})
    with bl.intercept("raise") as guard, runner:
        assert runner.run_fixture(fixture, {}) == 42
    assert guard.violations == []


def test_a_callback_the_loop_runs_is_still_checked() -> None:
    async def main() -> None:
        asyncio.get_running_loop().call_soon(nap)
        await asyncio.sleep(0.01)

    with bl.intercept("log") as guard:
        asyncio.run(main())
    assert [(v.call, v.function) for v in guard.violations] == [("time.sleep", "nap")]


def test_fastapi_first_request_is_not_flagged() -> None:
    fastapi = pytest.importorskip("fastapi")
    httpx = pytest.importorskip("httpx")
    app = fastapi.FastAPI()

    @app.get("/items/{item_id}")  # type: ignore[untyped-decorator]
    async def read_item(item_id: int, q: str | None = None) -> dict[str, object]:
        return {"item_id": item_id, "q": q}

    async def main() -> object:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/items/3", params={"q": "x"})
            return response.json()

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == {"item_id": 3, "q": "x"}
    assert guard.violations == []


def test_the_debugger_on_the_loop_is_not_flagged(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import pdb

    # pdb reads commands with input() from sys.stdin: a patched call, made by the debugger.
    monkeypatch.setattr(sys, "stdin", io.StringIO("p 6 * 7\ncontinue\n"))

    async def main() -> int:
        pdb.Pdb().set_trace()
        return 1

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == 1
    sys.settrace(None)
    assert "42" in capsys.readouterr().out
    assert guard.violations == []
