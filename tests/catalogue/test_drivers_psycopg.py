"""psycopg 3 against a real PostgreSQL: the sync API is flagged on the loop, the async API never."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import psycopg
import pytest
from _services import PostgresInfo
from helpers import call_on, marked_line, raised

import blockbuster_lite as bl

CLASSES = (psycopg.Connection, psycopg.Cursor, psycopg.ServerCursor, psycopg.Copy, psycopg.Pipeline)


line_of = functools.partial(marked_line, __file__)



def logged(call: Callable[[], Any]) -> tuple[Any, list[str]]:
    """Run ``call`` on the loop in log mode: its result and the calls reported, in order."""
    with bl.intercept("log") as guard:
        result = call_on("asyncio", call)
    return result, [violation.call for violation in guard.violations]


@pytest.fixture
def conn(postgres: PostgresInfo) -> Iterator[psycopg.Connection[Any]]:
    connection = psycopg.connect(postgres.dsn)
    try:
        yield connection
    finally:
        connection.close()


def test_connect_is_flagged_by_either_name(postgres: PostgresInfo) -> None:
    def connect() -> None:
        psycopg.connect(postgres.dsn)  # flag: connect

    with bl.intercept("raise"):
        violation = call_on("asyncio", lambda: raised(connect))
        assert (violation.call, violation.lineno) == ("psycopg.connect", line_of("flag: connect"))
        assert "psycopg.AsyncConnection" in violation.message
        other = call_on("asyncio", lambda: raised(lambda: psycopg.Connection.connect(postgres.dsn)))
        assert other.call == "psycopg.Connection.connect"


def test_execute_is_refused_before_anything_is_sent(conn: psycopg.Connection[Any]) -> None:
    cur = conn.cursor()

    def execute() -> None:
        cur.execute("select pg_sleep(%s), 'x'", (0.01,))  # flag: execute

    with bl.intercept("raise"):
        violation = call_on("asyncio", lambda: raised(execute))
    assert violation.call == "psycopg.Cursor.execute(SELECT ...)"
    assert (violation.filename, violation.lineno) == (__file__, line_of("flag: execute"))
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert cur.execute("select 6 * 7").fetchone() == (42,)


def test_each_query_is_reported_once_at_the_users_level(conn: psycopg.Connection[Any]) -> None:
    def queries() -> Any:
        row = conn.execute("select 1").fetchone()
        cur = conn.cursor()
        cur.executemany("select %s", [(1,), (2,)])
        conn.commit()
        conn.commit()  # nothing left to commit: no round trip, not reported
        return row

    row, calls = logged(queries)
    assert row == (1,)
    assert calls == [
        "psycopg.Connection.execute(SELECT ...)",
        "psycopg.Cursor.executemany(SELECT ...)",
        "psycopg.Connection.commit",
    ]


def test_client_fetches_are_free_server_cursors_are_not(conn: psycopg.Connection[Any]) -> None:
    cur = conn.execute("select generate_series(1, 3)")

    def fetch_client() -> Any:
        return cur.fetchone(), cur.fetchmany(1), cur.fetchall()

    assert logged(fetch_client) == (((1,), [(2,)], [(3,)]), [])
    named = conn.cursor(name="server_side")
    named.itersize = 2

    def server_side() -> list[Any]:
        named.execute("select generate_series(1, 5)")
        first = named.fetchone()
        return [first, *named]  # flag: iterate

    rows, calls = logged(server_side)
    assert rows == [(1,), (2,), (3,), (4,), (5,)]
    assert calls[:2] == ["psycopg.ServerCursor.execute(SELECT ...)",
                         "psycopg.ServerCursor.fetchone"]  # fmt: skip
    assert set(calls[2:]) == {"psycopg.ServerCursor.fetch"} and len(calls) >= 4


def test_copy_stream_transaction_and_notifies(conn: psycopg.Connection[Any]) -> None:
    conn.execute("create temporary table t (a int)")
    conn.commit()

    def copy_in() -> None:
        with conn.cursor() as cur, cur.copy("copy t from stdin") as copy:  # flag: copy
            copy.write_row((1,))

    with bl.intercept("raise"):
        violation = call_on("asyncio", lambda: raised(copy_in))
    assert (violation.call, violation.lineno) == ("psycopg.Cursor.copy", line_of("flag: copy"))
    conn.rollback()

    def copy_out() -> list[Any]:
        with conn.cursor() as cur:
            with cur.copy("copy (select generate_series(1, 2)) to stdout") as copy:
                copy.set_types(["int4"])
                rows = [copy.read_row(), copy.read_row()]
                assert copy.read_row() is None
            return rows + list(cur.stream("select 3"))

    rows, calls = logged(copy_out)
    assert rows == [(1,), (2,), (3,)]
    assert calls[0] == "psycopg.Cursor.copy"
    assert calls[1:4] == ["psycopg.Copy.read_row"] * 3
    assert "psycopg.Cursor.stream" in calls

    def in_transaction() -> None:
        with conn.transaction():
            conn.execute("select 1")
        list(conn.notifies(timeout=0.01))

    _, calls = logged(in_transaction)
    assert calls == [
        "psycopg.Connection.transaction",
        "psycopg.Connection.execute(SELECT ...)",
        "psycopg.Connection.transaction (end of block)",
        "psycopg.Connection.notifies",
    ]


def test_pipeline_mode_flags_the_waits_not_the_queueing(conn: psycopg.Connection[Any]) -> None:
    def pipeline() -> list[Any]:
        with conn.pipeline() as p:
            cur1 = conn.execute("select 1")  # queued: nothing to wait for yet
            cur2 = conn.execute("select 2")
            p.sync()
            first = cur1.fetchone()
            cur3 = conn.execute("select 3")
            rows = [first, cur2.fetchone()]
        return [*rows, cur3.fetchone()]

    rows, calls = logged(pipeline)
    assert rows == [(1,), (2,), (3,)]
    assert calls == ["psycopg.Pipeline.sync", "psycopg.Connection.pipeline (end of block)"]

    def fetch_before_sync() -> Any:
        with conn.pipeline():
            cur = conn.execute("select 4")
            return cur.fetchone()

    row, calls = logged(fetch_before_sync)
    assert row == (4,)
    assert calls[0] == "psycopg.Cursor.fetch (pipeline results)"


def test_the_async_api_is_never_flagged(postgres: PostgresInfo) -> None:
    async def main() -> list[Any]:
        aconn = await psycopg.AsyncConnection.connect(postgres.dsn)
        async with aconn:
            cur = await aconn.execute("select pg_sleep(0.01), 1")
            rows = [await cur.fetchone()]
            async with aconn.cursor(name="async_server_side") as named:
                await named.execute("select generate_series(1, 3)")
                rows += [row async for row in named]
            async with aconn.cursor() as acur, acur.copy("copy (select 9) to stdout") as copy:
                rows.append(b"".join([bytes(data) async for data in copy]))
            async with aconn.pipeline():
                acur2 = await aconn.execute("select 10")
            rows.append(await acur2.fetchone())
            async with aconn.transaction():
                await aconn.execute("select 1")
            await aconn.commit()
        return rows

    with bl.intercept("raise") as guard:
        rows = asyncio.run(main())
    assert rows == [("", 1), (1,), (2,), (3,), b"9\n", (10,)]
    assert guard.violations == []


def test_clean_under_a_worker_thread(postgres: PostgresInfo) -> None:
    def work() -> Any:
        with psycopg.connect(postgres.dsn) as conn:
            return conn.execute("select pg_sleep(0.01), 2").fetchone()

    async def main() -> Any:
        return await anyio.to_thread.run_sync(work)

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == ("", 2)
    assert guard.violations == []


def test_flagged_under_trio(conn: psycopg.Connection[Any]) -> None:
    cur = conn.cursor()
    with bl.intercept("raise"):
        violation = call_on("trio", lambda: raised(lambda: cur.execute("select 1")))
    assert violation.call == "psycopg.Cursor.execute(SELECT ...)"


def test_restored_after_the_guard(conn: psycopg.Connection[Any]) -> None:
    before = {cls: dict(vars(cls)) for cls in CLASSES}
    connect = psycopg.connect
    with bl.intercept("raise"):
        assert vars(psycopg.Cursor)["execute"] is not before[psycopg.Cursor]["execute"]
        assert psycopg.connect is not connect
    assert psycopg.connect is connect
    for cls in CLASSES:
        after = vars(cls)
        assert after.keys() == before[cls].keys()
        assert all(after[name] is value for name, value in before[cls].items()), cls
    with bl.intercept("log") as guard:
        pass
    assert call_on("asyncio", lambda: conn.execute("select 1").fetchone()) == (1,)
    assert guard.violations == []
