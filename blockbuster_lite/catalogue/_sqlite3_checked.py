"""Checked subclasses of sqlite3's C types (imported only once sqlite3 itself is)."""

from __future__ import annotations

import sqlite3
from typing import Any

from ..core.hotpath import make_method
from ..core.targets import Target
from ._describe import described_by, first_statement

CONNECTION_METHODS = ("execute", "executemany", "executescript", "commit", "rollback", "backup")
CURSOR_METHODS = ("execute", "executemany", "executescript", "fetchone", "fetchmany", "fetchall")


#: Methods named with their statement's first keyword: ``sqlite3.Cursor.execute(SELECT ...)``.
_STATEMENTS = {"execute": "sql", "executemany": "sql", "executescript": "sql_script"}

#: Connection shortcuts that CPython runs on a plain C cursor; ours use ``self.cursor()`` so the
#: cursor they return is a checked one too.
_VIA_CURSOR = frozenset({"execute", "executemany", "executescript"})


def _checked(cls: type, kind: str, name: str, target: Target) -> Any:
    original: Any
    if kind == "Connection" and name in _VIA_CURSOR:

        def original(self: Any, *args: Any, **kwargs: Any) -> Any:
            return getattr(self.cursor(), name)(*args, **kwargs)

    else:
        original = getattr(cls.__mro__[1], name)
    method = make_method(target, original)
    method.__name__ = name
    method.__qualname__ = f"{cls.__qualname__}.{name}"
    return method


def _checking_subclass(base: type, kind: str, names: tuple[str, ...], advice: str) -> type:
    cls = type(base.__name__, (base,), {"__module__": base.__module__})
    for name in names:
        call = f"sqlite3.{kind}.{name}"
        statement = _STATEMENTS.get(name)
        describe = described_by(call, first_statement(statement)) if statement else None
        target = Target("sqlite3", f"{kind}.{name}", call, None, advice, describe=describe)
        setattr(cls, name, _checked(cls, kind, name, target))
    return cls


def make_classes(advice: str) -> tuple[type, Any]:
    cursor_class = _checking_subclass(sqlite3.Cursor, "Cursor", CURSOR_METHODS, advice)
    subclasses: dict[type, type] = {}

    def checked_factory(factory: Any) -> Any:
        """The checked connection class to build for a requested ``factory``."""
        if not isinstance(factory, type) or not issubclass(factory, sqlite3.Connection):
            return factory
        if factory in subclasses.values():
            return factory
        checked = subclasses.get(factory)
        if checked is None:
            checked = _checking_subclass(factory, "Connection", CONNECTION_METHODS, advice)
            base_cursor = factory.cursor

            def cursor(self: Any, factory: Any = cursor_class) -> Any:
                return base_cursor(self, factory)

            checked.cursor = cursor  # type: ignore[attr-defined]
            subclasses[factory] = checked
        return checked

    return cursor_class, checked_factory
