"""The catalogue: one module per family of blocking calls, each a table of targets.

``FAMILIES`` maps a family name to its targets. Targets name their module; a module that is not
imported yet is patched when (if ever) it is imported.
"""

from __future__ import annotations

from ..core.targets import Target
from . import (
    builtins,
    file_io,
    files,
    http_clients,
    processes,
    psycopg,
    psycopg2,
    pymysql,
    redis,
    sockets,
    sqlalchemy,
    sqlite3,
    threads,
    time,
    waits,
)

__all__ = ["FAMILIES", "PROXIES", "all_targets"]

FAMILIES: dict[str, tuple[Target, ...]] = {
    "time": time.TARGETS,
    "files": files.TARGETS,
    "sockets": sockets.TARGETS,
    "processes": processes.TARGETS,
    "threads": threads.TARGETS,
    "waits": waits.TARGETS,
    "sqlite3": sqlite3.TARGETS,
    "input": builtins.TARGETS,
    "psycopg2": psycopg2.TARGETS,
    "psycopg": psycopg.TARGETS,
    "pymysql": pymysql.TARGETS,
    "redis": redis.TARGETS,
    "sqlalchemy": sqlalchemy.TARGETS,
    "http_clients": http_clients.TARGETS,
}


#: (module, type name, factory): objects that exist before activation, proxied where a module
#: global or a class attribute holds them (see core/rebind.py).
PROXIES = (*threads.PROXIES, *file_io.PROXIES, *sqlite3.PROXIES)


def all_targets() -> tuple[Target, ...]:
    return tuple(target for targets in FAMILIES.values() for target in targets)
