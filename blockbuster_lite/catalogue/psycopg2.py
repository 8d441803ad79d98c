"""psycopg2: connect, queries, fetches from server-side cursors, commits and rollbacks.

psycopg2 talks to the server through libpq, in C: the socket layer never sees its I/O, and its
``connection`` and ``cursor`` types are immutable. ``psycopg2.connect`` is wrapped to build each
connection from a checked subclass of the requested ``connection_factory`` (``DictConnection``,
``LoggingConnection``... are subclassed in turn), whose ``cursor()`` builds a checked subclass of
the cursor factory in force (``cursor_factory=`` given to ``cursor()`` or ``connect()``,
``RealDictCursor``, ``NamedTupleCursor``...). So ``isinstance(conn,
psycopg2.extensions.connection)`` and ``isinstance(cur, RealDictCursor)`` stay true.

The check runs before libpq is called: raising from psycopg2's wait callback would leave the
connection unusable, raising before the call leaves it as it was.

Checked, on connections made while a guard is active:

* ``psycopg2.connect`` itself (it opens a network connection);
* ``cursor.execute / executemany / callproc / copy_from / copy_to / copy_expert`` (named with the
  statement's first keyword), and so ``psycopg2.extras.execute_values / execute_batch``;
* ``cursor.fetchone / fetchmany / fetchall / scroll`` and iteration on *named* (server-side)
  cursors only: a client-side cursor holds its whole result in memory, its fetches never wait;
* ``connection.commit / rollback`` and ``with conn:`` only inside a transaction (otherwise psycopg2
  sends nothing), ``reset``, ``set_client_encoding``, ``lobject``, ``cancel``, ``tpc_*``.

Not checked: asynchronous connections (``async_=True``, aiopg's), connections made before
activation or from a ``connection_factory`` that is not a ``connection`` subclass, and cursors
built from a cursor factory that is not a ``cursor`` subclass.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import wrapt

from ..core.hotpath import make_handler
from ..core.targets import Target

ADVICE = (
    "use psycopg's AsyncConnection or asyncpg, or offload with await anyio.to_thread.run_sync(...)"
)


def _synchronous(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return not (kwargs.get("async") or kwargs.get("async_"))


CONNECT = Target("psycopg2", "connect", "psycopg2.connect", _synchronous, ADVICE)


def _replace_connect(original: Any) -> Any:
    from ._psycopg2_checked import make_factories

    checked_connection = make_factories(ADVICE)
    handler = make_handler(CONNECT)

    def connect(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if _synchronous(instance, args, kwargs):
            if len(args) > 1:
                args = (args[0], checked_connection(args[1]), *args[2:])
            else:
                kwargs = {
                    **kwargs,
                    "connection_factory": checked_connection(kwargs.get("connection_factory")),
                }
        return handler(wrapped, instance, args, kwargs)

    return wrapt.FunctionWrapper(original, connect)


TARGETS = (replace(CONNECT, replace=_replace_connect),)
