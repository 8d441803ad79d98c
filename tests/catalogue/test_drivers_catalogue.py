"""The driver families as a whole: patched on import, never imported by us, named safely."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg.sql
import psycopg2.sql
import pytest
from helpers import call_on, temporary_targets, write_module

import blockbuster_lite as bl
from blockbuster_lite.catalogue import FAMILIES
from blockbuster_lite.catalogue._describe import http_origin, redis_command, sql_words
from blockbuster_lite.core.targets import Target

DRIVER_FAMILIES = ("psycopg2", "psycopg", "pymysql", "redis", "sqlalchemy", "http_clients")
LIBRARIES = (
    "psycopg2",
    "psycopg",
    "pymysql",
    "redis",
    "sqlalchemy",
    "requests",
    "urllib3",
    "httpx",
)


def run_python(source: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_every_driver_family_is_registered_with_library_module_names() -> None:
    for family in DRIVER_FAMILIES:
        targets = FAMILIES[family]
        assert targets, family
        for target in targets:
            assert target.module.split(".")[0] in LIBRARIES, target
            assert target.advice.endswith("anyio.to_thread.run_sync(...)"), target


def test_libraries_are_patched_when_imported_and_restored_after() -> None:
    output = run_python(
        f"""
        import sys
        import wrapt
        import blockbuster_lite as bl
        from blockbuster_lite.catalogue import FAMILIES

        libraries = {LIBRARIES!r}
        guard = bl.activate("warn")
        assert not [name for name in libraries if name in sys.modules], "imported by us"
        for name in (*libraries, "sqlalchemy.orm"):
            __import__(name)

        def current():
            found = {{}}
            for family in {DRIVER_FAMILIES!r}:
                for target in FAMILIES[family]:
                    owner = sys.modules[target.module]
                    *parents, name = target.path.split(".")
                    for part in parents:
                        owner = getattr(owner, part)
                    found[target.module + ":" + target.path] = vars(owner).get(name)
            return found

        during = current()
        applied = set(bl._patcher.applied())
        missing = [key for key, value in during.items() if key not in applied]
        assert not missing, missing
        not_wrapped = [key for key, value in during.items() if not hasattr(value, "__wrapped__")]
        assert not not_wrapped, not_wrapped
        bl.deactivate()
        assert bl._patcher.applied() == []
        left = [key for key, value in current().items() if value is during[key]]
        assert not left, left
        print(len(during))
        """
    )
    assert int(output) >= 50


def test_a_missing_library_costs_nothing() -> None:
    output = run_python(
        """
        import sys
        for name in ("psycopg2", "redis", "httpx"):
            sys.modules[name] = None  # as if not installed: importing it raises ImportError
        import blockbuster_lite as bl

        with bl.intercept("raise") as guard:
            try:
                import redis
            except ImportError:
                print("absent")
        assert guard.violations == []
        """
    )
    assert output.strip() == "absent"


def test_a_failing_describe_falls_back_to_the_plain_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = write_module(tmp_path, "drv_fake", "def query(sql):\n    return sql\n", monkeypatch)

    def broken(instance: object, args: tuple[object, ...], kwargs: dict[str, object]) -> str:
        raise ZeroDivisionError

    target = Target("drv_fake", "query", "drv_fake.query", describe=broken)
    with temporary_targets(target), bl.intercept("log") as guard:
        assert call_on("asyncio", lambda: module.query("select 1")) == "select 1"
    assert [v.call for v in guard.violations] == ["drv_fake.query"]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("select pg_sleep(0.5)", "SELECT ..."),
        ("SELECT md5('secret')", "SELECT ..."),
        ("  SELECT id, name, password FROM users WHERE token = 'x'", "SELECT ..."),
        ("-- report\n/* nightly */ UPDATE accounts SET", "UPDATE ..."),
        ("/* a */ -- b\n ( (select 1))", "SELECT ..."),
        (b"INSERT INTO t VALUES (1)", "INSERT ..."),
        ("commit", "COMMIT"),
        ("select" + "x" * 60, "..."),  # not a keyword: nothing of it is shown
        ("hunter2 is my password", "..."),
        ("'secret' select", "..."),
        (
            psycopg.sql.SQL("select {} from t").format(psycopg.sql.Literal("pw")),
            "SELECT ...",
        ),
        (psycopg2.sql.SQL("delete from {}").format(psycopg2.sql.Identifier("t")), "DELETE ..."),
        (None, ""),
        ("   ", ""),
    ],
)
def test_sql_is_named_by_its_first_keyword_only(query: object, words: str) -> None:
    assert sql_words(query) == words


def test_http_origin_and_redis_command_drop_everything_secret() -> None:
    assert http_origin("get", "https://user:pw@api.example.com:8443/v1/me?token=t") == (
        "GET https://api.example.com:8443"
    )
    assert http_origin(b"POST", "http://[::1]/x") == "POST http://[::1]"
    assert redis_command(("AUTH", "s3cr3t")) == "AUTH"
    assert redis_command(("SET key s3cr3t",)) == "SET"  # redis-py splits it: only the name
    assert redis_command(("CONFIG SET requirepass s3cr3t",)) == "CONFIG SET"
    assert redis_command(("\x1b[31m",)) == "?"
    assert http_origin("GET", "http://u:s3cr3t@127.0.0.1:8000/p?token=s3cr3t#f") == (
        "GET http://127.0.0.1:8000"
    )
    assert http_origin("G\r\nET", "http://127.0.0.1/") == "? http://127.0.0.1"
    assert http_origin("GET", "not a url\x1b") == "GET"
    assert redis_command((b"get", b"key")) == "GET"
    assert redis_command(()) == ""


def test_a_described_call_is_shown_without_extra_parentheses() -> None:
    violation = bl.Violation(
        call="psycopg2.cursor.execute(SELECT ...)", filename="app.py", lineno=3, function="f"
    )
    assert violation.message.startswith("Blocking call to psycopg2.cursor.execute(SELECT ...) in")
    plain = bl.Violation(call="psycopg2.connect", filename="app.py", lineno=3, function="f")
    assert plain.message.startswith("Blocking call to psycopg2.connect() in")
