"""Catalogue: sqlite3 connect, queries and fetches."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
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


class AuditedConnection(sqlite3.Connection):
    """A user's own connection factory."""

    def audit(self) -> str:
        return "audited"


@pytest.fixture
def database(tmp_path: Path) -> str:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table users (id integer primary key, name text)")
        conn.executemany("insert into users (name) values (?)", [("ada",), ("alan",)])
    conn.close()
    return str(path)


@pytest.fixture
def guarded_connection(database: str) -> Iterator[sqlite3.Connection]:
    """A connection made (off the loop) while a log-mode guard is active, so it is checked."""
    with bl.intercept("log"):
        conn = sqlite3.connect(database)
        try:
            yield conn
        finally:
            conn.close()


def query(database: str) -> list[tuple[str]]:
    conn = sqlite3.connect(database)
    try:
        return conn.execute("select name from users order by id").fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_connect_on_a_loop_is_caught(loop: str, database: str) -> None:
    error = raises_on(loop, lambda: sqlite3.connect(database))
    assert error.violation.call == "sqlite3.connect"
    assert "aiosqlite" in str(error)


def test_connect_execute_and_fetchall_are_each_caught(database: str) -> None:
    with bl.intercept("log") as guard:
        assert call_on("asyncio", lambda: query(database)) == [("ada",), ("alan",)]
    assert calls(guard) == [
        "sqlite3.connect",
        "sqlite3.Connection.execute(SELECT ...)",
        "sqlite3.Cursor.fetchall",
    ]


def test_cursor_methods_are_caught(guarded_connection: sqlite3.Connection) -> None:
    def use_cursor() -> list[object]:
        cursor = guarded_connection.cursor()
        cursor.execute("select name from users order by id")
        first = cursor.fetchone()
        rest = cursor.fetchmany(5)
        guarded_connection.commit()
        return [first, rest]

    with bl.intercept("log") as guard:
        assert call_on("asyncio", use_cursor) == [("ada",), [("alan",)]]
    assert calls(guard) == [
        "sqlite3.Cursor.execute(SELECT ...)",
        "sqlite3.Cursor.fetchone",
        "sqlite3.Cursor.fetchmany",
        "sqlite3.Connection.commit",
    ]


def test_raise_mode_runs_no_statement(guarded_connection: sqlite3.Connection) -> None:
    error = raises_on(
        "asyncio", lambda: guarded_connection.execute("insert into users (name) values ('eve')")
    )
    assert error.violation.call == "sqlite3.Connection.execute(INSERT ...)"
    rows = guarded_connection.execute("select count(*) from users").fetchall()  # off the loop
    assert rows == [(2,)]


def test_connections_and_cursors_keep_their_types(
    guarded_connection: sqlite3.Connection,
) -> None:
    assert isinstance(guarded_connection, sqlite3.Connection)
    cursor = guarded_connection.execute("select 1")
    assert isinstance(cursor, sqlite3.Cursor)
    assert cursor.fetchall() == [(1,)]
    assert isinstance(guarded_connection.cursor(), sqlite3.Cursor)
    with guarded_connection:  # the context manager still commits
        guarded_connection.execute("insert into users (name) values ('grace')")
    assert guarded_connection.execute("select count(*) from users").fetchone() == (3,)


@pytest.mark.parametrize("how", ["keyword", "positional"])
def test_a_custom_factory_is_respected(how: str, database: str) -> None:
    with bl.intercept("log") as guard:
        if how == "keyword":
            conn = sqlite3.connect(database, factory=AuditedConnection)
        else:
            conn = sqlite3.connect(database, 5.0, 0, None, True, AuditedConnection)
        try:
            assert isinstance(conn, AuditedConnection)
            assert isinstance(conn, sqlite3.Connection)
            assert call_on("asyncio", conn.audit) == "audited"
            rows = call_on("asyncio", lambda: conn.execute("select count(*) from users").fetchall())
            assert rows == [(2,)]
        finally:
            conn.close()
    assert calls(guard) == ["sqlite3.Connection.execute(SELECT ...)", "sqlite3.Cursor.fetchall"]


def test_sqlite3_on_trio_backends(guarded_connection: sqlite3.Connection) -> None:
    for loop in ("trio", "anyio-trio", "uvloop"):
        error = raises_on(loop, lambda: guarded_connection.execute("select 1"))
        assert error.violation.call == "sqlite3.Connection.execute(SELECT ...)"


@pytest.mark.parametrize("where", OFF_LOOP)
def test_sqlite3_off_the_loop_is_not_caught(where: str, database: str) -> None:
    assert seen_off_loop(where, lambda: query(database)) == []


def test_sqlite3_through_anyio_to_thread_is_not_caught(database: str) -> None:
    async def main() -> list[tuple[str]]:
        return await anyio.to_thread.run_sync(query, database)

    with bl.intercept("raise") as guard:
        assert run_on("anyio-trio", main) == [("ada",), ("alan",)]
    assert guard.violations == []


def test_a_connection_made_before_activation_is_not_checked(database: str) -> None:
    # Documented limit: sqlite3's C types cannot be patched; only new connections are checked.
    conn = sqlite3.connect(database)
    try:
        assert seen_on("asyncio", lambda: conn.execute("select 1").fetchall()) == []
    finally:
        conn.close()


def test_allowed_sqlite3(database: str) -> None:
    with bl.intercept("raise") as guard, bl.allow_blocking():
        assert call_on("asyncio", lambda: query(database)) == [("ada",), ("alan",)]
    assert guard.violations == []
    assert seen_on("asyncio", lambda: query(database), mode="raise", allow=[FILENAME]) == []


def test_uninstalled_connect_is_the_original(database: str) -> None:
    original = sqlite3.connect
    check_uninstalled("sqlite3", lambda: query(database))
    assert sqlite3.connect is original
    conn = sqlite3.connect(database)
    try:
        assert type(conn) is sqlite3.Connection
    finally:
        conn.close()


def _answer(call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # compared with the plain connection's answer
        return type(exc), str(exc)


CALLS: dict[str, Any] = {
    "execute()": lambda c: c.execute(),
    "execute(sql)": lambda c: c.execute("select name from users order by id").fetchall(),
    "execute(sql, params)": lambda c: c.execute("select ?", (7,)).fetchall(),
    "execute(sql, params, extra)": lambda c: c.execute("select ?", (7,), 1),
    "execute(sql, params, 2 extra)": lambda c: c.execute("select ?", (7,), 1, 2),
    "executemany": lambda c: c.executemany("select ?", [(1,)]).fetchall(),
    "executescript": lambda c: c.executescript("select 1;").fetchall(),
    "commit()": lambda c: c.commit(),
    "commit(extra)": lambda c: c.commit(1),
    "cursor.execute(sql, params)": lambda c: c.cursor().execute("select ?", (8,)).fetchall(),
    "cursor.execute(sql, params, extra)": lambda c: c.cursor().execute("select ?", (8,), 1),
    "cursor.fetchall(extra)": lambda c: c.cursor().fetchall(1),
    "cursor.fetchmany(size=1)": lambda c: c.execute("select 1 union select 2").fetchmany(size=1),
}


@pytest.mark.parametrize("where", ["off the loop", "on the loop"])
@pytest.mark.parametrize("name", CALLS)
def test_checked_methods_answer_every_argument_count_as_the_originals(
    name: str, where: str, database: str
) -> None:
    """The checked methods take their arguments in fixed slots: results and errors stay the
    originals', with any number of arguments, off the loop and on it."""
    use = CALLS[name]
    plain = sqlite3.connect(database)
    try:
        expected = _answer(lambda: use(plain))
    finally:
        plain.close()
    with bl.intercept("log"):
        checked = sqlite3.connect(database)
        try:
            if where == "off the loop":
                got = _answer(lambda: use(checked))
            else:
                got = call_on("asyncio", lambda: _answer(lambda: use(checked)))
        finally:
            checked.close()
    if name == "execute(sql, params, 2 extra)":  # Python's own count message, not the C one
        assert got[0] is expected[0] is TypeError
    else:
        assert got == expected


# -- connections bound to a thread that drives no loop: quiet until one starts there ----------


def _in_a_thread(fn: Any) -> Any:
    import threading

    result: list[Any] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def test_a_thread_bound_connection_made_off_the_loop_runs_the_c_methods(database: str) -> None:
    """No checks at all on a connection no loop can reach yet (a sync endpoint's, a worker's)."""

    def make() -> tuple[type, type, list[tuple[str]]]:
        conn = sqlite3.connect(database)
        try:
            rows = conn.execute("select name from users order by id").fetchall()
            return type(conn), type(conn.cursor()), rows
        finally:
            conn.close()

    with bl.intercept("raise") as guard:
        connection_class, cursor_class, rows = _in_a_thread(make)
    assert rows == [("ada",), ("alan",)]
    assert issubclass(connection_class, sqlite3.Connection) and connection_class is not sqlite3.Connection
    for name in ("execute", "executemany", "executescript", "commit", "rollback", "backup"):
        assert getattr(connection_class, name) is getattr(sqlite3.Connection, name), name
    for name in ("execute", "executemany", "executescript", "fetchone", "fetchmany", "fetchall"):
        assert getattr(cursor_class, name) is getattr(sqlite3.Cursor, name), name
    assert guard.violations == []


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_made_before_its_threads_loop_starts_is_caught_on_it(
    loop: str, database: str
) -> None:
    """The module-global connection of an app: made at import, used by the app's loop later."""

    def app() -> list[str]:
        conn = sqlite3.connect(database)
        cursor = conn.cursor()
        try:

            async def endpoint() -> None:
                conn.execute("select 1").fetchall()
                cursor.execute("select name from users").fetchone()

            run_on(loop, endpoint)
        finally:
            conn.close()
        return []

    with bl.intercept("log") as guard:
        _in_a_thread(app)
    assert calls(guard) == [
        "sqlite3.Connection.execute(SELECT ...)",
        "sqlite3.Cursor.fetchall",
        "sqlite3.Cursor.execute(SELECT ...)",
        "sqlite3.Cursor.fetchone",
    ]


def test_a_loop_started_while_inactive_still_sees_an_earlier_connection(database: str) -> None:
    """A quiet connection from an earlier activation, a loop started while nothing was active,
    a guard entered on that loop: the connection is checked again."""
    original_hooks = sys.set_asyncgen_hooks
    with bl.intercept("log"):
        conn = sqlite3.connect(database)
        assert sys.set_asyncgen_hooks is not original_hooks  # the loop-start hook is in place
    assert sys.set_asyncgen_hooks is original_hooks  # and put back exactly

    async def main() -> bl.Guard:
        with bl.intercept("log") as guard:
            conn.execute("select 1")
        return guard

    try:
        guard = asyncio.run(main())
    finally:
        conn.close()
    assert sys.set_asyncgen_hooks is original_hooks
    assert calls(guard) == ["sqlite3.Connection.execute(SELECT ...)"]


def test_the_loop_start_hook_keeps_the_originals_behaviour() -> None:
    original = sys.set_asyncgen_hooks
    before = sys.get_asyncgen_hooks()
    with bl.intercept("raise"):
        wrapped = sys.set_asyncgen_hooks
        assert wrapped.__name__ == original.__name__ and wrapped.__doc__ == original.__doc__
        assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]

        def firstiter(agen: Any) -> None:
            pass

        sys.set_asyncgen_hooks(firstiter=firstiter)
        try:
            assert sys.get_asyncgen_hooks().firstiter is firstiter
            with pytest.raises(TypeError):
                sys.set_asyncgen_hooks(firstiter=1)  # the original's own error
        finally:
            sys.set_asyncgen_hooks(*before)
    assert sys.get_asyncgen_hooks() == before
