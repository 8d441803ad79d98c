"""Offload mode and sqlite3's thread-bound objects: what moves, and what must run in place.

A connection made with ``check_same_thread=True`` (the default) raises ProgrammingError from any
thread but its own: offload mode must not move its calls, nor ``sqlite3.connect`` itself. Real
sqlite3 databases in files, real worker threads.
"""

from __future__ import annotations

import asyncio
import sqlite3
import warnings
from pathlib import Path
from typing import Any

import pytest

import blockbuster_lite as bl
from blockbuster_lite import offload

ORIGINAL_CONNECT = sqlite3.connect
BOUND = "could not offload: sqlite3 objects are bound to the thread that made them"


@pytest.fixture(autouse=True)
def _restored() -> Any:
    yield
    assert sqlite3.connect is ORIGINAL_CONNECT


def run(main: Any) -> tuple[Any, bl.Guard, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with bl.intercept("offload") as guard:
            result = asyncio.run(offload.with_portal(main)())
    return result, guard, [str(w.message) for w in caught]


def test_a_default_connection_runs_in_place_and_the_program_still_works(tmp_path: Path) -> None:
    database = str(tmp_path / "db.sqlite")

    async def main() -> tuple[list[Any], Any]:
        connection = sqlite3.connect(database)
        connection.execute("create table t (x)")
        cursor = connection.cursor()
        cursor.executemany("insert into t values (?)", [(1,), (2,)])
        connection.commit()
        rows = connection.execute("select x from t order by x").fetchall()
        connection.close()
        return rows, type(connection)

    (rows, kind), guard, messages = run(main)
    assert rows == [(1,), (2,)]  # no ProgrammingError from a worker thread
    assert issubclass(kind, sqlite3.Connection)
    calls = {v.call: v.action for v in guard.violations}
    assert calls["sqlite3.connect"] is bl.Mode.WARN
    assert calls["sqlite3.Connection.execute(CREATE ...)"] is bl.Mode.WARN
    assert calls["sqlite3.Cursor.executemany(INSERT ...)"] is bl.Mode.WARN
    assert all(action is not bl.Mode.OFFLOAD for action in calls.values())
    assert any(BOUND in message for message in messages), messages


def test_a_connection_made_for_any_thread_moves_to_the_workers(tmp_path: Path) -> None:
    database = str(tmp_path / "db.sqlite")

    async def main() -> list[Any]:
        connection = sqlite3.connect(database, check_same_thread=False)
        connection.execute("create table t (x)")
        connection.execute("insert into t values (7)")
        connection.commit()
        rows = connection.cursor().execute("select x from t").fetchall()
        connection.close()
        return rows

    rows, guard, _ = run(main)
    assert rows == [(7,)]
    calls = {v.call: v.action for v in guard.violations}
    assert calls["sqlite3.connect"] is bl.Mode.OFFLOAD
    assert calls["sqlite3.Connection.execute(INSERT ...)"] is bl.Mode.OFFLOAD
    assert calls["sqlite3.Cursor.execute(SELECT ...)"] is bl.Mode.OFFLOAD


def test_positional_check_same_thread_is_read_too(tmp_path: Path) -> None:
    database = str(tmp_path / "db.sqlite")

    async def main() -> Any:
        connection = sqlite3.connect(database, 5.0, 0, "DEFERRED", False)
        try:
            return connection.execute("select 1").fetchone()
        finally:
            connection.close()

    row, guard, _ = run(main)
    assert row == (1,)
    assert {v.call: v.action for v in guard.violations}["sqlite3.connect"] is bl.Mode.OFFLOAD


#: Made at import, before any activation, and held by a module global: rebound to a checked
#: proxy while active (its thread is this module's importer's: the main thread).
PREMADE = sqlite3.connect(":memory:")


def test_a_module_global_connection_made_before_activation_runs_in_place() -> None:
    async def main() -> Any:
        return PREMADE.execute("select 41 + 1").fetchone(), PREMADE.cursor().execute(
            "select 2"
        ).fetchall()

    (row, rows), guard, messages = run(main)
    assert row == (42,) and rows == [(2,)]
    assert guard.violations  # it was seen...
    assert all(v.action is not bl.Mode.OFFLOAD for v in guard.violations)  # ... and not moved
    assert any(BOUND in message for message in messages), messages
