"""PyMySQL against a real MariaDB: reported at the query, once, not at the socket underneath."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pymysql
import pymysql.connections
import pymysql.cursors
import pytest
from _services import MySQLInfo
from helpers import call_on, marked_line, raised

import blockbuster_lite as bl

CLASSES = (pymysql.connections.Connection, pymysql.cursors.Cursor, pymysql.cursors.SSCursor)


line_of = functools.partial(marked_line, __file__)



def logged(call: Callable[[], Any], loop: str = "asyncio") -> tuple[Any, list[str]]:
    with bl.intercept("log") as guard:
        result = call_on(loop, call)
    return result, [violation.call for violation in guard.violations]


@pytest.fixture
def conn(mariadb: MySQLInfo) -> Iterator[pymysql.connections.Connection[Any]]:
    connection = pymysql.connect(**mariadb.connect_kwargs)
    try:
        yield connection
    finally:
        connection.close()


def test_connect_is_flagged(mariadb: MySQLInfo) -> None:
    def connect() -> None:
        pymysql.connect(**mariadb.connect_kwargs)  # flag: connect

    with bl.intercept("raise"):
        violation = call_on("asyncio", lambda: raised(connect))
    assert (violation.call, violation.lineno) == ("pymysql.connect", line_of("flag: connect"))
    assert "aiomysql" in violation.message


def test_a_query_is_reported_once_at_the_query_not_the_socket(
    conn: pymysql.connections.Connection[Any],
) -> None:
    def query() -> Any:
        with conn.cursor() as cur:
            cur.execute("select sleep(%s), %s", (0.01, "secret"))  # flag: execute
            return cur.fetchone()

    with bl.intercept("log") as guard:
        row = call_on("asyncio", query)
    assert row == (0, "secret")
    [violation] = guard.violations
    assert violation.call == "pymysql.Cursor.execute(SELECT ...)"
    assert (violation.filename, violation.lineno) == (__file__, line_of("flag: execute"))
    assert "secret" not in violation.message


def test_refused_before_sending_and_the_connection_still_works(
    conn: pymysql.connections.Connection[Any],
) -> None:
    cur = conn.cursor()
    with bl.intercept("raise"):
        violation = call_on("asyncio", lambda: raised(lambda: cur.execute("select 1")))
    assert violation.call == "pymysql.Cursor.execute(SELECT ...)"
    cur.execute("select 6 * 7")
    assert cur.fetchone() == (42,)


def test_buffered_fetches_are_free_unbuffered_ones_are_not(
    conn: pymysql.connections.Connection[Any],
) -> None:
    cur = conn.cursor()
    cur.execute("select 1 union all select 2 union all select 3")
    assert logged(lambda: (cur.fetchone(), cur.fetchall())) == (((1,), ((2,), (3,))), [])

    streaming = conn.cursor(pymysql.cursors.SSCursor)
    streaming.execute("select 1 union all select 2 union all select 3")

    def iterate() -> list[Any]:
        first = streaming.fetchone()
        return [first, *streaming]  # flag: iterate

    with bl.intercept("log") as guard:
        rows = call_on("asyncio", iterate)
    assert rows == [(1,), (2,), (3,)]
    assert [v.call for v in guard.violations] == ["pymysql.SSCursor.fetchone"] * 4
    assert guard.violations[-1].lineno == line_of("flag: iterate")


def test_transactions(conn: pymysql.connections.Connection[Any]) -> None:
    def work() -> None:
        conn.begin()
        conn.commit()
        conn.rollback()
        conn.autocommit(False)  # unchanged: nothing is sent
        conn.autocommit(True)
        conn.ping()

    _, calls = logged(work)
    assert calls == [
        "pymysql.Connection.begin",
        "pymysql.Connection.commit",
        "pymysql.Connection.rollback",
        "pymysql.Connection.autocommit",
        "pymysql.Connection.ping",
    ]


def test_the_async_driver_is_never_flagged(mariadb: MySQLInfo) -> None:
    aiomysql = pytest.importorskip("aiomysql", reason="aiomysql (the async counterpart)")

    async def main() -> Any:
        aconn = await aiomysql.connect(
            host=mariadb.host, port=mariadb.port, user=mariadb.user, password=mariadb.password,
            db=mariadb.database,
        )  # fmt: skip
        try:
            async with aconn.cursor() as cur:
                await cur.execute("select sleep(0.01), 1")
                row = await cur.fetchone()
            await aconn.commit()
            return row
        finally:
            aconn.close()

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == (0, 1)
    assert guard.violations == []


def test_clean_under_a_worker_thread(mariadb: MySQLInfo) -> None:
    def work() -> Any:
        conn = pymysql.connect(**mariadb.connect_kwargs)
        try:
            with conn.cursor() as cur:
                cur.execute("select 2")
                return cur.fetchone()
        finally:
            conn.close()

    async def main() -> Any:
        return await anyio.to_thread.run_sync(work)

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == (2,)
    assert guard.violations == []


def test_flagged_under_uvloop(conn: pymysql.connections.Connection[Any]) -> None:
    cur = conn.cursor()
    _, calls = logged(lambda: cur.execute("select 1"), loop="uvloop")
    assert calls == ["pymysql.Cursor.execute(SELECT ...)"]


def test_restored_after_the_guard() -> None:
    before = {cls: dict(vars(cls)) for cls in CLASSES}
    with bl.intercept("raise"):
        assert (
            vars(pymysql.cursors.Cursor)["execute"] is not before[pymysql.cursors.Cursor]["execute"]
        )
    for cls in CLASSES:
        after = vars(cls)
        assert after.keys() == before[cls].keys()
        assert all(after[name] is value for name, value in before[cls].items()), cls
