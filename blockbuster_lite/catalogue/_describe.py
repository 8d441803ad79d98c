"""How driver and client calls are named in reports, from their arguments.

A described call reads ``<qualified name>(<detail>)``: the detail is an SQL statement's first
keyword (``psycopg2.cursor.execute(SELECT ...)``), a Redis command's name
(``redis.Redis.execute_command(BLPOP)``) or an HTTP method and origin
(``httpx.Client.send(GET http://127.0.0.1:8000)``). Details never include query parameters, keys,
values, URL userinfo, paths, query strings or passwords: they can hold secrets. SQL text holds
literals (``SELECT md5('secret')``) and names, so only its first keyword is kept, and only when it
is a known SQL statement keyword (anything else shows as ``...``). The detail is what one sample
looked like: reports are deduplicated and counted per call family (the name before the
parentheses) and site, never per detail.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "SQL_KEYWORDS",
    "described_by",
    "first_statement",
    "http_origin",
    "redis_command",
    "sql_words",
    "with_detail",
]


_COMMENTS = re.compile(r"\s*(--[^\n]*(\n|$)|/\*.*?\*/)", re.DOTALL)
_LEADING = re.compile(r"[\s(;]*")
_WORD = re.compile(r"[A-Za-z]+")

#: Statement keywords shown as the detail (any dialect); an unknown first word shows as "...".
SQL_KEYWORDS = frozenset(
    (
        "ABORT", "ALTER", "ANALYSE", "ANALYZE", "ATTACH", "BEGIN", "CALL", "CHECKPOINT",
        "CLOSE", "CLUSTER", "COMMENT", "COMMIT", "COPY", "CREATE", "DEALLOCATE", "DECLARE",
        "DELETE", "DESC", "DESCRIBE", "DETACH", "DISCARD", "DO", "DROP", "END", "EXEC",
        "EXECUTE", "EXPLAIN", "FETCH", "FLUSH", "GRANT", "HANDLER", "IMPORT", "INSERT",
        "KILL", "LISTEN", "LOAD", "LOCK", "MERGE", "MOVE", "NOTIFY", "OPTIMIZE", "PRAGMA",
        "PREPARE", "REFRESH", "REINDEX", "RELEASE", "RENAME", "REPAIR", "REPLACE", "RESET",
        "REVOKE", "ROLLBACK", "SAVEPOINT", "SECURITY", "SELECT", "SET", "SHOW", "START",
        "TABLE", "TRUNCATE", "UNLISTEN", "UNLOCK", "UPDATE", "UPSERT", "USE", "VACUUM",
        "VALUES", "WITH", "XA",
    )
)  # fmt: skip


def with_detail(call: str, detail: str) -> str:
    return f"{call}({detail})" if detail else call


def sql_words(query: Any) -> str:
    """An SQL statement's first keyword (``SELECT ...``), from text, bytes or a psycopg ``sql``
    object; ``...`` when it starts with no known keyword, "" when there is no statement."""
    text = _sql_text(query)
    if text is None:
        return ""
    position = 0
    while True:  # leading comments, blanks and parentheses say nothing useful
        position = _LEADING.match(text, position).end()  # type: ignore[union-attr]
        comment = _COMMENTS.match(text, position)
        if comment is None or comment.end() == position:
            break
        position = comment.end()
    word = _WORD.match(text, position)
    keyword = word.group().upper() if word is not None else ""
    if keyword not in SQL_KEYWORDS:
        return "..." if text[position:].strip() else ""
    rest = text[word.end() :].strip() if word is not None else ""
    return f"{keyword} ..." if rest else keyword


def _sql_text(query: Any) -> str | None:
    if isinstance(query, str):
        return query
    if isinstance(query, (bytes, bytearray, memoryview)):
        return bytes(query[:200]).decode("utf-8", "replace")
    parts = getattr(query, "seq", None)  # psycopg2.sql.Composed
    if parts is None and type(query).__name__ == "Composed":
        parts = getattr(query, "_obj", None)  # psycopg.sql.Composed
    if isinstance(parts, list):
        return "".join(_sql_part(part) for part in parts)
    part = _sql_part(query)
    return part if part != "?" else None


def _sql_part(part: Any) -> str:
    """An ``sql.SQL`` part's own text; any other part (a literal, an identifier...) is ``?``."""
    if type(part).__name__ == "SQL":
        text = getattr(part, "string", None)  # psycopg2
        if text is None:
            text = getattr(part, "_obj", None)  # psycopg
        if isinstance(text, str):
            return text
    return "?"


_REDIS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.|-]{0,31}")
#: Commands whose second word names the operation (``CLIENT LIST``, ``CONFIG GET``).
REDIS_CONTAINERS = frozenset(
    (
        "ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION", "LATENCY",
        "MEMORY", "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO",
    )
)  # fmt: skip


def redis_command(args: tuple[Any, ...]) -> str:
    """A Redis command's name (``GET``, ``CLIENT LIST``), never its keys or values.

    redis-py sends a first argument with spaces as several words (``"SET key value"``): only the
    first word is kept, and the second only after a container command (``CONFIG GET``).
    """
    if not args:
        return ""
    name = args[0]
    if isinstance(name, (bytes, bytearray, memoryview)):
        name = bytes(name[:64]).decode("ascii", "replace")
    if not isinstance(name, str):
        return ""
    words = name.split(None, 2)
    if not words or not _REDIS_NAME.fullmatch(words[0]):
        return "?"
    command = words[0].upper()
    if command in REDIS_CONTAINERS and len(words) > 1 and _REDIS_NAME.fullmatch(words[1]):
        command += " " + words[1].upper()
    return command


def http_origin(method: Any, url: Any) -> str:
    """``GET http://host:port`` from a method and an absolute URL: no credentials, path or query."""
    if isinstance(method, (bytes, bytearray)):
        method = bytes(method).decode("ascii", "replace")
    verb = str(method).upper() if _HTTP_METHOD.fullmatch(str(method)) else "?"
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return verb
    if not _HOST.fullmatch(host) or not _SCHEME.fullmatch(parts.scheme):
        return verb  # nothing we can show safely
    if ":" in host:
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" if parts.scheme else host
    if port is not None:
        origin += f":{port}"
    return f"{verb} {origin}".strip()


_HTTP_METHOD = re.compile(r"[A-Za-z]{1,16}")
_HOST = re.compile(r"[A-Za-z0-9._~:%-]{0,255}")  # a name, IPv4 or IPv6 (hostname drops [ ])
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,15})?")


def described_by(
    call: str, detail: Callable[[Any, tuple[Any, ...], dict[str, Any]], str]
) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], str]:
    """A ``Target.describe`` that appends ``detail(instance, args, kwargs)`` to ``call``."""

    def describe(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return with_detail(call, detail(instance, args, kwargs))

    return describe


def first_statement(name: str = "query") -> Callable[[Any, tuple[Any, ...], dict[str, Any]], str]:
    """A detail function: the first keyword of the statement passed first or as ``name``."""

    def detail(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return sql_words(args[0] if args else kwargs.get(name))

    return detail
