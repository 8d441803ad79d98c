"""PyMySQL (MySQL, MariaDB): connect, queries, transactions, unbuffered fetches.

PyMySQL is pure Python over a blocking socket, so the socket family would already catch its I/O;
these targets report it at the level the user wrote (``pymysql.Cursor.execute(SELECT ...)``,
``pymysql.Connection.commit``) and the socket calls made inside are not reported again.

Fetches from the default, buffered cursors (``Cursor``, ``DictCursor``) are not flagged: the whole
result was read by ``execute()``. Fetches and iteration on unbuffered cursors (``SSCursor``,
``SSDictCursor``) read from the server and are flagged. Anything else that reaches the socket
(``nextset()`` on a multi-result query, closing an unbuffered cursor with rows left) is reported
as the socket call.
"""

from __future__ import annotations

from typing import Any

from ..core.targets import Target
from ._describe import described_by, first_statement
from ._predicates import argument

ADVICE = "use aiomysql, or offload with await anyio.to_thread.run_sync(...)"


def _changes_autocommit(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return bool(argument(args, kwargs, 0, "value")) != bool(conn.get_autocommit())


def _procedure(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    name = argument(args, kwargs, 0, "procname")
    return name if isinstance(name, str) else ""


def _connection(name: str, predicate: Any = None, describe: Any = None) -> Target:
    return Target(
        "pymysql.connections", f"Connection.{name}", f"pymysql.Connection.{name}", predicate,
        ADVICE, describe=describe,
    )  # fmt: skip


def _cursor(cls: str, name: str, describe: Any = None) -> Target:
    return Target(
        "pymysql.cursors", f"{cls}.{name}", f"pymysql.{cls}.{name}", None, ADVICE,
        describe=describe,
    )  # fmt: skip


TARGETS = (
    Target("pymysql.connections", "Connection.connect", "pymysql.connect", None, ADVICE),
    _connection("query", describe=described_by("pymysql.Connection.query", first_statement("sql"))),
    *(
        _connection(name)
        for name in (
            "commit", "rollback", "begin", "ping", "select_db", "kill", "show_warnings",
            "set_character_set", "next_result",
        )
    ),
    _connection("autocommit", _changes_autocommit),
    _cursor("Cursor", "execute", described_by("pymysql.Cursor.execute", first_statement("query"))),
    _cursor(
        "Cursor", "executemany",
        described_by("pymysql.Cursor.executemany", first_statement("query")),
    ),
    _cursor("Cursor", "callproc", described_by("pymysql.Cursor.callproc", _procedure)),
    *(_cursor("SSCursor", name) for name in ("fetchone", "fetchmany", "fetchall", "scroll")),
)  # fmt: skip
