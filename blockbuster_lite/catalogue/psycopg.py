"""psycopg 3, sync API: connect, queries, server-side cursors, COPY, pipelines, transactions.

psycopg's classes are pure Python, so their methods are wrapped in place. The asynchronous API
(``AsyncConnection``, ``AsyncCursor``, ``AsyncServerCursor``, ``AsyncCopy``, ``AsyncPipeline``) is
made of separate classes and is never touched.

The calls users write are reported by name, before anything is sent: ``psycopg.connect``,
``Connection.execute / commit / rollback``, ``Cursor.execute / executemany`` (with the statement's
first keyword), ``ServerCursor.execute / fetch* / scroll``, ``Copy.read / read_row / write /
write_row`` and ``Pipeline.sync``. Every other wait goes through ``Connection.wait`` (libpq does
the I/O in C, out of the socket layer's sight): that method is the catch-all and names the
operation from the generator it is given (``Cursor.stream``, ``Cursor.copy``,
``Connection.transaction``, ``Connection.notifies``, ``ServerCursor`` iteration...). A call
reported at the user's level runs its inner waits unchecked, so each is reported once.

Not reported, because they do not wait: ``commit()`` / ``rollback()`` outside a transaction,
fetches from a client-side cursor (its result is in memory) unless a pipeline still owes it,
statements queued in pipeline mode (the wait comes at ``sync()``, at the next fetch or when the
pipeline block ends), and autocommit / isolation-level changes outside pipeline mode.
"""

from __future__ import annotations

from typing import Any

from ..core.targets import Target
from ._describe import described_by, first_statement
from ._predicates import argument

ADVICE = "use psycopg.AsyncConnection, or offload with await anyio.to_thread.run_sync(...)"

_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE, without importing psycopg


def _not_in_pipeline(cursor_or_conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Outside pipeline mode a statement waits for its result; inside, it is only queued."""
    conn = getattr(cursor_or_conn, "_conn", cursor_or_conn)
    return conn._pipeline is None


def _transaction_to_end(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return conn._pipeline is not None or conn.pgconn.transaction_status != _IDLE


# Generators Connection.wait() runs, by qualified name (or plain name), with the call the user
# made to start them.
_WAIT_CALLS = {
    "notifies": "psycopg.Connection.notifies",
    "copy_to": "psycopg.Copy.write",
    "copy_end": "psycopg.Copy.finish",
    "BaseCopy._end_copy_out_gen": "psycopg.Copy.finish",
    "BaseCursor._execute_gen": "psycopg.Cursor.execute",
    "BaseCursor._stream_send_gen": "psycopg.Cursor.stream",
    "BaseCursor._stream_fetchone_gen": "psycopg.Cursor.stream",
    "BaseCursor._start_copy_gen": "psycopg.Cursor.copy",
    "ServerCursorMixin._fetch_gen": "psycopg.ServerCursor.fetch",
    "ServerCursorMixin._close_gen": "psycopg.ServerCursor.close",
    "BasePipeline._fetch_gen": "psycopg.Cursor.fetch (pipeline results)",
    "BasePipeline._sync_gen": "psycopg.Pipeline.sync",
    "BasePipeline._exit_gen": "psycopg.Connection.pipeline (end of block)",
    "BaseTransaction._enter_gen": "psycopg.Connection.transaction",
    "BaseTransaction._exit_gen": "psycopg.Connection.transaction (end of block)",
    "BaseConnection._commit_gen": "psycopg.Connection.commit",
    "BaseConnection._rollback_gen": "psycopg.Connection.rollback",
}

#: Generators that only queue commands in pipeline mode (the wait comes later).
_QUEUED_IN_PIPELINE = frozenset(("_execute_gen", "_executemany_gen_pipeline", "_enter_gen"))
#: Generators that talk to the server outside pipeline mode only when a transaction is open.
_ONLY_IN_TRANSACTION = frozenset(("_commit_gen", "_rollback_gen"))
#: Generators that never wait outside pipeline mode (they only check the transaction state).
_LOCAL = frozenset(
    ("_set_autocommit_gen", "_set_isolation_level_gen", "_set_read_only_gen", "_set_deferrable_gen")
)


def _generator_name(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    code = getattr(argument(args, kwargs, 0, "gen"), "gi_code", None)
    if code is None:
        return ""
    return str(getattr(code, "co_qualname", code.co_name))


def _wait_blocks(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    name = _generator_name(args, kwargs).rpartition(".")[2]
    if conn._pipeline is not None:
        return name not in _QUEUED_IN_PIPELINE
    if name in _ONLY_IN_TRANSACTION:
        return bool(conn.pgconn.transaction_status != _IDLE)
    return name not in _LOCAL


def _wait_call(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    name = _generator_name(args, kwargs)
    call = _WAIT_CALLS.get(name) or _WAIT_CALLS.get(name.rpartition(".")[2])
    return call or f"psycopg.Connection.wait({name.rpartition('.')[2]})"


def _target(path: str, predicate: Any = None, *, statement: bool = False) -> Target:
    call = f"psycopg.{path}"
    describe = described_by(call, first_statement("query")) if statement else None
    return Target("psycopg", path, call, predicate, ADVICE, describe=describe)


TARGETS = (
    # psycopg.connect is Connection.connect bound at import time: both names are patched
    Target("psycopg", "connect", "psycopg.connect", None, ADVICE),
    _target("Connection.connect"),
    _target("Connection.execute", _not_in_pipeline, statement=True),
    _target("Connection.commit", _transaction_to_end),
    _target("Connection.rollback", _transaction_to_end),
    _target("Cursor.execute", _not_in_pipeline, statement=True),
    _target("Cursor.executemany", _not_in_pipeline, statement=True),
    _target("ServerCursor.execute", statement=True),
    *(_target(f"ServerCursor.{name}") for name in ("fetchone", "fetchmany", "fetchall", "scroll")),
    *(_target(f"Copy.{name}") for name in ("read", "read_row", "write", "write_row")),
    _target("Pipeline.sync"),
    Target(
        "psycopg", "Connection.wait", "psycopg.Connection.wait", _wait_blocks, ADVICE,
        describe=_wait_call,
    ),
)  # fmt: skip
