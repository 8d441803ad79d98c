"""sqlite3: connect, and queries and fetches on connections and cursors.

``sqlite3.Connection`` and ``sqlite3.Cursor`` are immutable C types. ``sqlite3.connect`` is
wrapped to build its connection from a subclass (through the ``factory`` argument, subclassing a
custom factory if one is given) whose query methods are checked, so
``isinstance(conn, sqlite3.Connection)`` stays true. A connection bound to its thread
(``check_same_thread=True``) made on a thread that drives no loop is quiet until a loop starts
on that thread (``_sqlite3_checked.Family``): no loop can reach it before. A connection made
before activation and held by a module global or a class attribute is rebound to a checked proxy
around it while active; iterating a cursor row by row is not checked (``fetch*`` are).
"""

from __future__ import annotations

import contextlib
from typing import Any

from ..core.hotpath import make_handler
from ..core.loop import on_loop_thread
from ..core.state import state
from ..core.targets import Target
from ..core.transparent import Wrapper
from ._sqlite3_threads import ANY_THREAD, connect_problem, same_thread

ADVICE = "use aiosqlite, or offload with await anyio.to_thread.run_sync(...)"

CONNECT = Target(
    "sqlite3", "connect", "sqlite3.connect", None, ADVICE, offload_problem=connect_problem
)


def _replace_connect(original: Any) -> Any:
    from ._sqlite3_checked import shared_family, thread_family

    shared = shared_family(ADVICE)
    handler = make_handler(CONNECT)

    def connect(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not state.guards:  # left behind after the last guard (a mock restored it): inert
            return wrapped(*args, **kwargs)
        bound = same_thread(args, kwargs)
        # bound to this thread, which drives no loop now: quiet until a loop starts here
        family = thread_family(ADVICE) if bound and not on_loop_thread() else shared
        if len(args) > 5:
            args = (*args[:5], family.connection_class(args[5]), *args[6:])
        else:
            import sqlite3

            factory = kwargs.get("factory", sqlite3.Connection)
            kwargs = {**kwargs, "factory": family.connection_class(factory)}
        connection = handler(wrapped, instance, args, kwargs)
        if not bound:
            with contextlib.suppress(TypeError):  # a factory whose instances take no weakrefs
                ANY_THREAD.add(connection)
        return connection

    return Wrapper(original, connect, None, ("sqlite3", "connect"))


def _existing_connection(connection: Any) -> Any:
    """A checked proxy for a connection made before activation (a settings module's)."""
    from ._sqlite3_checked import proxy_for

    return proxy_for(connection, ADVICE)


#: Connections made before activation and held by a module global or a class attribute.
PROXIES = (("sqlite3", "Connection", _existing_connection),)

TARGETS = (Target("sqlite3", "connect", "sqlite3.connect", None, ADVICE, replace=_replace_connect),)
