"""SQLAlchemy's sync Engine, Connection and Session.

Reported at the user's level, with the statement's first keyword and the driver underneath:
``sqlalchemy.orm.Session.execute(SELECT ...) via psycopg2``. ORM queries,
``Session.get()``, ``refresh()`` and lazy loads all run through ``Session.execute``; the driver's
own calls made inside are not reported again.

* ``Session.execute / scalar / scalars``, ``Connection.execute / exec_driver_sql / scalar /
  scalars``: always (they talk to the database);
* ``Session.flush`` with pending changes; ``Session.commit`` with pending changes or a connection
  in use; ``Session.rollback`` with a connection in use; ``Connection.commit / rollback`` inside a
  transaction;
* ``Engine.connect`` when the pool has no idle connection (a new one is opened, or waited for)
  or pings connections before handing them out (``pool_pre_ping``).

Closing a connection or session whose transaction must be rolled back is reported as the driver's
``rollback``.

The asyncio extension (``AsyncEngine``, ``AsyncSession``) runs these same sync methods inside its
own greenlets, on the loop thread, with the I/O awaited underneath: calls made in such a greenlet
are never flagged.
"""

from __future__ import annotations

import sys
from typing import Any

from ..core.targets import Predicate, Target
from ._describe import sql_words, with_detail
from ._predicates import argument

ADVICE = (
    "use SQLAlchemy's AsyncEngine / AsyncSession (sqlalchemy.ext.asyncio), "
    "or offload with await anyio.to_thread.run_sync(...)"
)


def _in_async_greenlet() -> bool:
    """Inside SQLAlchemy's asyncio bridge (``greenlet_spawn``): the driver's I/O is awaited."""
    greenlet = sys.modules.get("greenlet")
    if greenlet is None:
        return False
    return bool(getattr(greenlet.getcurrent(), "__sqlalchemy_greenlet_provider__", False))


def _sync(predicate: Predicate | None = None) -> Predicate:
    def check(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        if _in_async_greenlet():
            return False
        return predicate is None or predicate(instance, args, kwargs)

    return check


def _has_changes(session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    is_clean = getattr(session, "_is_clean", None)
    if is_clean is not None:
        return not is_clean()
    return bool(session.new or session.deleted or session.dirty)


def _uses_connection(session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    transaction = session.get_transaction()
    return transaction is not None and bool(getattr(transaction, "_connections", True))


def _commit_talks(session: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return _has_changes(session, args, kwargs) or _uses_connection(session, args, kwargs)


def _in_transaction(connection: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return bool(connection.in_transaction())


def _pool_must_connect(engine: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A pool without an idle connection opens (or waits for) one; pre-ping pings the server."""
    checked_in = getattr(engine.pool, "checkedin", None)
    if checked_in is None:
        return False  # a static or per-thread pool: the driver's own connect is checked
    return checked_in() == 0 or bool(getattr(engine.pool, "_pre_ping", False))


def _statement_words(statement: Any) -> str:
    if isinstance(statement, str):
        return sql_words(statement)
    text = getattr(statement, "text", None)  # text("...")
    if isinstance(text, str):
        return sql_words(text)
    try:
        return sql_words(str(statement))  # compiled with the default dialect
    except Exception:
        return type(statement).__name__


def _driver(instance: Any) -> str:
    try:
        bind = instance.get_bind() if hasattr(instance, "get_bind") else instance
        return str(bind.dialect.driver)
    except Exception:
        return ""  # a session with several binds, or none yet


def _described(call: str, *, statement: bool) -> Any:
    def describe(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        text = call
        if statement:
            text = with_detail(call, _statement_words(argument(args, kwargs, 0, "statement")))
        driver = _driver(instance)
        return f"{text} via {driver}" if driver else text

    return describe


def _target(module: str, path: str, call: str, predicate: Predicate | None = None) -> Target:
    statement = path.rpartition(".")[2] in ("execute", "scalar", "scalars", "exec_driver_sql")
    return Target(
        module, path, call, _sync(predicate), ADVICE, describe=_described(call, statement=statement)
    )


SESSION = "sqlalchemy.orm.session"
ENGINE = "sqlalchemy.engine.base"

TARGETS = (
    *(
        _target(SESSION, f"Session.{name}", f"sqlalchemy.orm.Session.{name}")
        for name in ("execute", "scalar", "scalars")
    ),
    _target(SESSION, "Session.flush", "sqlalchemy.orm.Session.flush", _has_changes),
    _target(SESSION, "Session.commit", "sqlalchemy.orm.Session.commit", _commit_talks),
    _target(SESSION, "Session.rollback", "sqlalchemy.orm.Session.rollback", _uses_connection),
    *(
        _target(ENGINE, f"Connection.{name}", f"sqlalchemy.Connection.{name}")
        for name in ("execute", "exec_driver_sql", "scalar", "scalars")
    ),
    *(
        _target(ENGINE, f"Connection.{name}", f"sqlalchemy.Connection.{name}", _in_transaction)
        for name in ("commit", "rollback")
    ),
    _target(ENGINE, "Engine.connect", "sqlalchemy.Engine.connect", _pool_must_connect),
)
