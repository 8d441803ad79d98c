"""Checked subclasses of psycopg2's C connection and cursor types (imported once psycopg2 is).

The checks live in a class placed *after* the user's factory in the method resolution order
(``class Checked(RealDictCursor, CursorChecks)``), so the factory's own overrides run first and
reach the checked method through ``super()``, exactly as they reach psycopg2's.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..core.hotpath import make_handler
from ..core.targets import Predicate, Target
from ..core.transparent import Wrapper, checked_class, reduce_as, type_name
from ._describe import described_by, first_statement

ext: Any = importlib.import_module("psycopg2.extensions")

Describe = Callable[[Any, tuple[Any, ...], dict[str, Any]], str]


def _in_transaction(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """The server holds a transaction (psycopg2 sends nothing to commit or roll back otherwise)."""
    return bool(conn.status != ext.STATUS_READY)


def _named(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A server-side cursor: its fetches go to the server; a client-side cursor's never do."""
    return cursor.name is not None


def _batch_used_up(cursor: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Iterating a named cursor fetches the next ``itersize`` rows once the last batch is read."""
    return bool(cursor.rownumber >= cursor.rowcount)


def _end_of_block(conn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    action = "commit" if not args or args[0] is None else "rollback"
    return f"psycopg2.connection.{action}"


def _argument(index: int, name: str) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], str]:
    def detail(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        value = args[index] if len(args) > index else kwargs.get(name)
        return value if isinstance(value, str) else ""

    return detail


Checks = dict[str, tuple[Predicate | None, Describe | None]]

CONNECTION_CHECKS: Checks = {
    "commit": (_in_transaction, None),
    "rollback": (_in_transaction, None),
    "__exit__": (_in_transaction, _end_of_block),
    "reset": (None, None),
    "set_client_encoding": (None, None),
    "lobject": (None, None),
    "cancel": (None, None),
    "tpc_begin": (None, None),
    "tpc_prepare": (None, None),
    "tpc_commit": (None, None),
    "tpc_rollback": (None, None),
    "tpc_recover": (None, None),
}

CURSOR_CHECKS: Checks = {
    "execute": (None, described_by("psycopg2.cursor.execute", first_statement("query"))),
    "executemany": (None, described_by("psycopg2.cursor.executemany", first_statement("query"))),
    "callproc": (None, described_by("psycopg2.cursor.callproc", _argument(0, "procname"))),
    "copy_expert": (None, described_by("psycopg2.cursor.copy_expert", first_statement("sql"))),
    "copy_from": (None, described_by("psycopg2.cursor.copy_from", _argument(1, "table"))),
    "copy_to": (None, described_by("psycopg2.cursor.copy_to", _argument(1, "table"))),
    "fetchone": (_named, None),
    "fetchmany": (_named, None),
    "fetchall": (_named, None),
    "scroll": (_named, None),
}

NAMED_CURSOR_CHECKS: Checks = {"__next__": (_batch_used_up, None)}


def _checks_class(base: type, kind: str, checks: Checks, advice: str) -> type:
    namespace: dict[str, Any] = {"__module__": __name__}
    for name, (predicate, describe) in checks.items():
        target = Target(
            "psycopg2.extensions",
            f"{kind}.{name}",
            f"psycopg2.{kind}.{name}",
            predicate,
            advice,
            describe=describe,
        )
        namespace[name] = Wrapper(getattr(base, name), make_handler(target))
    return type(f"Checked{kind.capitalize()}", (base,), namespace)


def _subclass(factory: type, checks: type) -> type:
    """The checked class for ``factory``: copies and pickles as ``factory`` does."""
    bases = (checks,) if issubclass(checks, factory) else (factory, checks)
    factory_name = type_name(factory, (ext.connection, ext.cursor))

    def __reduce_ex__(self: Any, protocol: Any) -> Any:
        return reduce_as(self, protocol, cls, factory, factory_name)

    namespace = {
        "__module__": factory.__module__,
        "__qualname__": factory.__qualname__,
        "__reduce_ex__": __reduce_ex__,
    }
    cls = checked_class(factory.__name__, bases, namespace, factory)
    return cls


def make_factories(advice: str) -> Callable[[Any], Any]:
    """Return ``checked_connection(factory)``: the class ``psycopg2.connect`` should build."""
    cursor_checks = _checks_class(ext.cursor, "cursor", CURSOR_CHECKS, advice)
    named_cursor_checks = _checks_class(cursor_checks, "cursor", NAMED_CURSOR_CHECKS, advice)
    cursors: dict[tuple[Any, bool], Any] = {}

    def checked_cursor(factory: Any, named: bool) -> Any:
        if not isinstance(factory, type) or not issubclass(factory, ext.cursor):
            return factory  # a plain callable: we cannot know what it builds
        if issubclass(factory, cursor_checks):
            return factory
        checked = cursors.get((factory, named))
        if checked is None:
            checks = named_cursor_checks if named else cursor_checks
            checked = cursors[(factory, named)] = _subclass(factory, checks)
        return checked

    connection_checks: Any = _checks_class(ext.connection, "connection", CONNECTION_CHECKS, advice)

    def cursor(self: Any, *args: Any, **kwargs: Any) -> Any:
        named = (args[0] if args else kwargs.get("name")) is not None
        if len(args) > 1:
            factory = args[1] or self.cursor_factory or ext.cursor
            args = (args[0], checked_cursor(factory, named), *args[2:])
        else:
            factory = kwargs.get("cursor_factory") or self.cursor_factory or ext.cursor
            kwargs["cursor_factory"] = checked_cursor(factory, named)
        return super(connection_checks, self).cursor(*args, **kwargs)

    connection_checks.cursor = cursor
    connections: dict[Any, Any] = {}

    def checked_connection(factory: Any) -> Any:
        if factory is None:
            factory = ext.connection
        if not isinstance(factory, type) or not issubclass(factory, ext.connection):
            return factory
        if issubclass(factory, connection_checks):
            return factory
        checked = connections.get(factory)
        if checked is None:
            checked = connections[factory] = _subclass(factory, connection_checks)
        return checked

    return checked_connection
