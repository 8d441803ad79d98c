"""psycopg2 against a real PostgreSQL: flagged on the loop, clean elsewhere, restored after."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.to_thread
import psycopg2
import psycopg2.extensions
import psycopg2.extras
import pytest
from _services import PostgresInfo
from helpers import call_on, marked_line, raised

import blockbuster_lite as bl

ORIGINAL_CONNECT = psycopg2.connect


line_of = functools.partial(marked_line, __file__)



@pytest.fixture
def guard() -> Iterator[bl.Guard]:
    with bl.intercept("raise") as active:
        yield active


@pytest.fixture
def conn(postgres: PostgresInfo, guard: bl.Guard) -> Iterator[Any]:
    """A connection made while the guard is active (off the loop: not flagged)."""
    connection = psycopg2.connect(postgres.dsn)
    try:
        yield connection
    finally:
        connection.close()


def test_connect_is_flagged_on_the_loop(postgres: PostgresInfo, guard: bl.Guard) -> None:
    def connect() -> None:
        psycopg2.connect(postgres.dsn)  # flag: connect

    violation = call_on("asyncio", lambda: raised(connect))
    assert violation.call == "psycopg2.connect"
    assert (violation.filename, violation.lineno) == (__file__, line_of("flag: connect"))
    assert "asyncpg" in violation.message and "AsyncConnection" in violation.message


def test_execute_is_refused_before_libpq_and_the_connection_still_works(conn: Any) -> None:
    cur = conn.cursor()

    def execute() -> None:
        cur.execute("select pg_sleep(0.01), 'secret'")  # flag: execute

    violation = call_on("asyncio", lambda: raised(execute))
    assert violation.call == "psycopg2.cursor.execute(SELECT ...)"
    assert violation.lineno == line_of("flag: execute")
    assert violation.function.endswith("execute")
    assert violation.message.startswith(
        "Blocking call to psycopg2.cursor.execute(SELECT ...) in async"
    )
    # decided before the call: nothing was sent, the connection is intact
    assert conn.status == psycopg2.extensions.STATUS_READY
    cur.execute("select 41 + 1")
    assert cur.fetchone() == (42,)


def test_parameters_never_reach_the_report(conn: Any) -> None:
    cur = conn.cursor()
    violation = call_on(
        "asyncio",
        lambda: raised(lambda: cur.execute("select %s::text as password", ("hunter2",))),
    )
    assert "hunter2" not in violation.call + violation.message
    assert violation.call == "psycopg2.cursor.execute(SELECT ...)"


def test_warn_mode_reports_once_and_the_query_runs(postgres: PostgresInfo) -> None:
    with bl.intercept("warn") as guard:
        conn = psycopg2.connect(postgres.dsn)
        cur = conn.cursor()

        def query() -> Any:
            cur.execute("select pg_sleep(0.05), 7")
            return cur.fetchone()

        with pytest.warns(bl.BlockingCallWarning, match=r"psycopg2\.cursor\.execute"):
            assert call_on("asyncio", query) == ("", 7)
        conn.close()
    [violation] = guard.violations
    assert violation.action is bl.Mode.WARN
    assert violation.duration_s is not None and violation.duration_s >= 0.04


def test_client_side_fetches_are_not_flagged_but_named_cursor_fetches_are(conn: Any) -> None:
    cur = conn.cursor()
    cur.execute("select generate_series(1, 5)")
    assert call_on("asyncio", lambda: (cur.fetchone(), cur.fetchmany(2), cur.fetchall()))
    named = conn.cursor("server_side")
    named.itersize = 2
    named.execute("select generate_series(1, 5)")  # off the loop: DECLARE

    def fetch() -> None:
        named.fetchone()  # flag: named fetch

    violation = call_on("asyncio", lambda: raised(fetch))
    assert (violation.call, violation.lineno) == (
        "psycopg2.cursor.fetchone",
        line_of("flag: named fetch"),
    )
    assert named.fetchone() == (1,)


def test_iterating_a_named_cursor_is_flagged_when_it_fetches_a_batch(
    postgres: PostgresInfo,
) -> None:
    with bl.intercept("log") as guard:
        conn = psycopg2.connect(postgres.dsn)
        named = conn.cursor("iterated")
        named.itersize = 2
        named.execute("select generate_series(1, 5)")

        def iterate() -> list[Any]:
            return [row for row in named]  # flag: iterate

        rows = call_on("asyncio", iterate)
        conn.close()
    assert rows == [(1,), (2,), (3,), (4,), (5,)]
    calls = [(v.call, v.lineno) for v in guard.violations]
    # five rows fetched two at a time: FETCH is sent for rows 1, 3, 5 and once more to see the end
    assert calls == [("psycopg2.cursor.__next__", line_of("flag: iterate"))] * 4


def test_commit_and_rollback_are_flagged_only_inside_a_transaction(conn: Any) -> None:
    assert call_on("asyncio", conn.commit) is None  # nothing to commit: no round trip
    assert call_on("asyncio", conn.rollback) is None
    cur = conn.cursor()
    cur.execute("select 1")  # off the loop; opens a transaction
    assert call_on("asyncio", lambda: raised(conn.commit)).call == "psycopg2.connection.commit"

    def end_block() -> None:
        with conn:  # flag: with conn
            pass

    violation = call_on("asyncio", lambda: raised(end_block))
    assert (violation.call, violation.lineno) == (
        "psycopg2.connection.commit",
        line_of("flag: with conn"),
    )


@pytest.mark.parametrize(
    ("connect_kwargs", "cursor_kwargs", "cursor_type", "row"),
    [
        ({"cursor_factory": psycopg2.extras.RealDictCursor}, {}, psycopg2.extras.RealDictCursor,
         {"n": 1}),
        ({}, {"cursor_factory": psycopg2.extras.NamedTupleCursor},
         psycopg2.extras.NamedTupleCursor, (1,)),
        ({"connection_factory": psycopg2.extras.DictConnection}, {}, psycopg2.extras.DictCursor,
         [1]),
    ],
    ids=["RealDictCursor-on-connect", "NamedTupleCursor-on-cursor", "DictConnection"],
)  # fmt: skip
def test_factories_are_respected_and_checked(
    postgres: PostgresInfo,
    guard: bl.Guard,
    connect_kwargs: dict[str, Any],
    cursor_kwargs: dict[str, Any],
    cursor_type: type,
    row: Any,
) -> None:
    conn = psycopg2.connect(postgres.dsn, **connect_kwargs)
    try:
        assert isinstance(conn, psycopg2.extensions.connection)
        factory = connect_kwargs.get("connection_factory")
        if factory is not None:
            assert isinstance(conn, factory)
        cur = conn.cursor(**cursor_kwargs)
        assert isinstance(cur, cursor_type)
        violation = call_on("asyncio", lambda: raised(lambda: cur.execute("select 1 as n")))
        assert violation.call == "psycopg2.cursor.execute(SELECT ...)"
        cur.execute("select 1 as n")
        fetched = cur.fetchone()
        assert fetched == row
        assert dict(fetched) == {"n": 1} if isinstance(row, dict) else True
    finally:
        conn.close()


def test_execute_values_is_reported_at_the_users_line(conn: Any) -> None:
    cur = conn.cursor()
    cur.execute("create temporary table t (a int, b int)")

    def insert() -> None:
        psycopg2.extras.execute_values(cur, "insert into t values %s", [(1, 2)])  # flag: values

    violation = call_on("asyncio", lambda: raised(insert))
    # execute_values sends the values inlined: only the statement's first words are shown
    assert violation.call == "psycopg2.cursor.execute(INSERT ...)"
    assert violation.lineno == line_of("flag: values")


def test_async_connections_are_never_flagged(postgres: PostgresInfo) -> None:
    async def main() -> list[Any]:
        conn = psycopg2.connect(postgres.dsn, async_=True)
        try:
            await _ready(conn)
            cur = conn.cursor()
            cur.execute("select pg_sleep(0.01), 3")
            await _ready(conn)
            return [cur.fetchone()]
        finally:
            conn.close()

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == [("", 3)]
    assert guard.violations == []


async def _ready(conn: Any) -> None:
    """Drive an asynchronous psycopg2 connection with the loop (what aiopg does)."""
    loop = asyncio.get_running_loop()
    while True:
        state = conn.poll()
        if state == psycopg2.extensions.POLL_OK:
            return
        ready = loop.create_future()
        fd = conn.fileno()
        if state == psycopg2.extensions.POLL_READ:
            loop.add_reader(fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_reader(fd)
        else:
            loop.add_writer(fd, ready.set_result, None)
            try:
                await ready
            finally:
                loop.remove_writer(fd)


def test_clean_under_a_worker_thread(postgres: PostgresInfo) -> None:
    def work() -> Any:
        conn = psycopg2.connect(postgres.dsn)
        try:
            with conn, conn.cursor() as cur:
                cur.execute("select pg_sleep(0.01), 5")
                return cur.fetchone()
        finally:
            conn.close()

    async def main() -> Any:
        return await anyio.to_thread.run_sync(work)

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == ("", 5)
    assert guard.violations == []


def test_flagged_under_trio(conn: Any) -> None:
    cur = conn.cursor()
    violation = call_on("trio", lambda: raised(lambda: cur.execute("select 1")))
    assert violation.call == "psycopg2.cursor.execute(SELECT ...)"


def test_restored_after_the_guard(postgres: PostgresInfo) -> None:
    # (ORIGINAL_CONNECT, a module global, is itself rebound to the wrapper while active)
    originals = [ORIGINAL_CONNECT]
    with bl.intercept("raise"):
        assert psycopg2.connect is not originals[0]
        checked = psycopg2.connect(postgres.dsn)
    assert psycopg2.connect is ORIGINAL_CONNECT
    plain = psycopg2.connect(postgres.dsn)
    try:
        assert type(plain) is psycopg2.extensions.connection
        assert type(plain.cursor()) is psycopg2.extensions.cursor
        # a connection made under the guard stays usable, and is not checked any more
        cur = checked.cursor()
        assert call_on("asyncio", lambda: (cur.execute("select 1"), cur.fetchone())[1]) == (1,)
    finally:
        plain.close()
        checked.close()


def test_offload_runs_ten_queries_at_once(postgres: PostgresInfo) -> None:
    try:
        bl.Guard(mode="offload")
    except bl.ConfigError as exc:
        if "not available" not in str(exc):
            raise
        pytest.skip(f"offload mode is not available yet: {exc}")

    async def query(conn: Any) -> Any:
        cur = conn.cursor()
        cur.execute("select pg_sleep(0.5), 1")
        return cur.fetchone()

    async def main() -> tuple[list[Any], float]:
        async with bl.intercept("offload"):  # gives this task and the ones it starts a portal
            conns = await anyio.to_thread.run_sync(
                lambda: [psycopg2.connect(postgres.dsn) for _ in range(10)]
            )
            try:
                start = time.perf_counter()
                rows = await asyncio.gather(*(query(conn) for conn in conns))
                return list(rows), time.perf_counter() - start
            finally:
                for conn in conns:
                    conn.close()

    rows, elapsed = asyncio.run(main())
    assert rows == [("", 1)] * 10
    assert elapsed < 2.5, f"ten 0.5 s queries took {elapsed:.2f} s: they did not run at once"
