"""Checked subclasses of sqlite3's C types (imported only once sqlite3 itself is)."""

from __future__ import annotations

import _thread
import copy
import sqlite3
import threading
import weakref
from functools import cache
from typing import Any

from ..core import loopstart
from ..core.methods import make_method
from ..core.targets import Target
from ..core.transparent import checked_class, reduce_as, type_name
from ._describe import described_by, first_statement
from ._sqlite3_threads import object_problem

CONNECTION_METHODS = ("execute", "executemany", "executescript", "commit", "rollback", "backup")
CURSOR_METHODS = ("execute", "executemany", "executescript", "fetchone", "fetchmany", "fetchall")


#: Methods named with their statement's first keyword: ``sqlite3.Cursor.execute(SELECT ...)``.
_STATEMENTS = {"execute": "sql", "executemany": "sql", "executescript": "sql_script"}

#: Connection shortcuts that CPython runs on a plain C cursor; on the loop ours use
#: ``self.cursor()`` so the cursor they return is a checked one too. Off the loop they call the
#: C method itself (one Python frame, not four): the cursor it returns is a plain one, which
#: cannot reach the loop thread anyway unless the connection was opened with
#: ``check_same_thread=False``.
_VIA_CURSOR = frozenset({"execute", "executemany", "executescript"})


def _checked(cls: type, kind: str, name: str, target: Target) -> Any:
    original: Any
    direct = getattr(cls.__mro__[1], name)
    if kind == "Connection" and name in _VIA_CURSOR:

        def original(self: Any, *args: Any, **kwargs: Any) -> Any:
            return getattr(self.cursor(), name)(*args, **kwargs)

    else:
        original = direct
    method = make_method(target, original, direct)
    method.__name__ = name
    method.__qualname__ = f"{cls.__qualname__}.{name}"
    method.__module__ = cls.__module__
    return method


#: C methods that take no keywords but whose signature Python cannot read (3.11: "invalid
#: signature"); marked so their replacements take fixed positional slots, not ``**kwargs``.
_POSITIONAL = frozenset(
    {"Connection.execute", "Connection.executemany", "Connection.executescript",
     "Connection.commit", "Connection.rollback"}
)  # fmt: skip


#: Their argument counts (Python cannot read these signatures on 3.11; the Cursor's it can).
_MAX_ARGS = {"Connection.execute": 2, "Connection.executemany": 2,
             "Connection.executescript": 1, "Connection.commit": 0, "Connection.rollback": 0}  # fmt: skip


def _checking_subclass(
    base: type, kind: str, names: tuple[str, ...], advice: str
) -> tuple[type, list[tuple[str, Any]]]:
    """A subclass of ``base`` that copies and pickles as ``base`` does, and its checked methods
    (not installed: see ``Family``)."""
    base_name = type_name(base, (sqlite3.Connection, sqlite3.Cursor))

    def __reduce_ex__(self: Any, protocol: Any) -> Any:
        return reduce_as(self, protocol, cls, base, base_name)

    namespace = {"__module__": base.__module__, "__reduce_ex__": __reduce_ex__}
    cls = checked_class(base.__name__, (base,), namespace, base)
    methods = []
    for name in names:
        call = f"sqlite3.{kind}.{name}"
        statement = _STATEMENTS.get(name)
        describe = described_by(call, first_statement(statement)) if statement else None
        target = Target(
            "sqlite3", f"{kind}.{name}", call, None, advice, describe=describe,
            positional_only=f"{kind}.{name}" in _POSITIONAL,
            max_args=_MAX_ARGS.get(f"{kind}.{name}"), offload_problem=object_problem,
        )  # fmt: skip
        methods.append((name, _checked(cls, kind, name, target)))
    return cls, methods


#: Each class of ours -> the class it was built from (a factory given as one of ours is
#: rebuilt from its origin, in the family asked for).
_ORIGIN: weakref.WeakKeyDictionary[type, type] = weakref.WeakKeyDictionary()


class Family:
    """The classes a set of connections and their cursors are made of.

    A checking family's classes have the checked methods. A quiet one's have none but
    ``cursor`` (which makes the family's cursors): their queries cost what the C methods cost.
    ``check()`` installs the methods on every class of the family at once, so every object made
    from it is checked from then on, wherever it is held.

    Quiet families are per thread (``thread_family``): they make the connections bound to the
    thread that made them (``check_same_thread=True``, the default) while that thread drives no
    loop. Such a connection and its cursors can only ever be used on that thread (sqlite3 refuses
    any other before running anything), so nothing they do can block a loop until one starts
    there; ``core/loopstart.py`` tells us before it does.
    """

    def __init__(self, advice: str, checking: bool) -> None:
        self.advice = advice
        self.checking = checking
        #: Set when every quiet family was checked at once (an activation): the thread then
        #: starts a new quiet family for what it makes next.
        self.retired = False
        self._lock = _thread.allocate_lock()  # not the catalogue's checked lock
        self._methods: list[tuple[type, str, Any]] = []
        self._connections: dict[type, type] = {}
        self.cursor_class = self._subclass(sqlite3.Cursor, "Cursor", CURSOR_METHODS)

    def _subclass(self, base: type, kind: str, names: tuple[str, ...]) -> type:
        cls, methods = _checking_subclass(base, kind, names, self.advice)
        with self._lock:
            for name, method in methods:
                self._methods.append((cls, name, method))
                if self.checking:
                    setattr(cls, name, method)
        _ORIGIN[cls] = base
        return cls

    def connection_class(self, factory: Any) -> Any:
        """The class of this family to build for a requested ``factory``."""
        if not isinstance(factory, type) or not issubclass(factory, sqlite3.Connection):
            return factory
        factory = _ORIGIN.get(factory, factory)
        cls = self._connections.get(factory)
        if cls is None:
            cls = self._subclass(factory, "Connection", CONNECTION_METHODS)
            cursor_class, base_cursor = self.cursor_class, factory.cursor

            def cursor(self: Any, factory: Any = cursor_class) -> Any:
                return base_cursor(self, factory)

            cls.cursor = cursor  # type: ignore[attr-defined]
            self._connections[factory] = cls
        return cls

    def check(self) -> None:
        """Install the checked methods on every class of this family (idempotent)."""
        with self._lock:
            if self.checking:
                return
            self.checking = True
            for cls, name, method in self._methods:
                setattr(cls, name, method)


_thread_families = threading.local()
#: Every quiet family: all are checked when the loop-start hook is put in place again.
_quiet: weakref.WeakSet[Family] = weakref.WeakSet()
_quiet_lock = _thread.allocate_lock()


def thread_family(advice: str) -> Family:
    """This thread's quiet family (a new one if the last was retired)."""
    family: Family | None = getattr(_thread_families, "family", None)
    if family is None or family.retired:
        family = _thread_families.family = Family(advice, checking=False)
        with _quiet_lock:
            _quiet.add(family)
    return family


def _loop_starting() -> None:
    family: Family | None = getattr(_thread_families, "family", None)
    if family is not None:
        family.check()


def _every_thread() -> None:
    with _quiet_lock:
        families = list(_quiet)
        _quiet.clear()
    for family in families:
        family.check()
        family.retired = True


@cache
def shared_family(advice: str) -> Family:
    """The checking family: connections made on a loop thread, or usable from any thread
    (``check_same_thread=False``), and the cursors of connections made before activation."""
    loopstart.listen(_loop_starting, _every_thread)
    return Family(advice, checking=True)


@cache
def _proxy_class(advice: str) -> type:
    cursor_class = shared_family(advice).cursor_class

    class CheckedConnection:
        """A connection made before activation: its queries run through checked cursors."""

        __slots__ = ("__weakref__", "_bbl_conn")

        def __init__(self, connection: Any) -> None:
            object.__setattr__(self, "_bbl_conn", connection)

        def cursor(self, factory: Any = cursor_class) -> Any:
            return self._bbl_conn.cursor(factory)

        def execute(self, *args: Any, **kwargs: Any) -> Any:
            return self.cursor().execute(*args, **kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> Any:
            return self.cursor().executemany(*args, **kwargs)

        def executescript(self, *args: Any, **kwargs: Any) -> Any:
            return self.cursor().executescript(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._bbl_conn, name)

        def __setattr__(self, name: str, value: Any) -> None:
            setattr(self._bbl_conn, name, value)

        def __enter__(self) -> Any:
            self._bbl_conn.__enter__()
            return self

        def __exit__(self, *exc_info: Any) -> Any:
            return self._bbl_conn.__exit__(*exc_info)

        @property  # type: ignore[misc]
        def __class__(self) -> type:
            return type(self._bbl_conn)

        def __reduce_ex__(self, protocol: Any) -> Any:
            return self._bbl_conn.__reduce_ex__(protocol)  # refuses like the connection

        def __copy__(self) -> Any:
            return copy.copy(self._bbl_conn)

        def __deepcopy__(self, memo: Any) -> Any:
            return copy.deepcopy(self._bbl_conn, memo)

        def __repr__(self) -> str:
            return repr(self._bbl_conn)

    for name in ("commit", "rollback", "backup"):
        target = Target("sqlite3", f"Connection.{name}", f"sqlite3.Connection.{name}", None,
                        advice, offload_problem=object_problem)  # fmt: skip

        def unbound(self: Any, *args: Any, _name: str = name, **kwargs: Any) -> Any:
            return getattr(self._bbl_conn, _name)(*args, **kwargs)

        method = make_method(target, unbound)
        method.__name__ = name
        setattr(CheckedConnection, name, method)
    return CheckedConnection


def proxy_for(connection: Any, advice: str) -> Any:
    return _proxy_class(advice)(connection)
