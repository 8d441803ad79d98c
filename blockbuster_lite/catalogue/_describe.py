"""How driver and client calls are named in reports, from their arguments.

A described call reads ``<qualified name>(<detail>)``: the detail is the first words of an SQL
statement (``psycopg2.cursor.execute(SELECT id, name ...)``), a Redis command name
(``redis.Redis.execute_command(BLPOP)``) or an HTTP method and origin
(``httpx.Client.send(GET http://127.0.0.1:8000)``). Details never include query parameters, keys,
values, URL paths, query strings or credentials: they can hold secrets. SQL text itself can hold
literals, so only its first three words are kept, cut at 40 characters.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "described_by",
    "first_statement",
    "http_origin",
    "redis_command",
    "sql_words",
    "with_detail",
]

STATEMENT_WORDS = 3
STATEMENT_CHARS = 40

_COMMENTS = re.compile(r"\s*(--[^\n]*(\n|$)|/\*.*?\*/)", re.DOTALL)


def with_detail(call: str, detail: str) -> str:
    return f"{call}({detail})" if detail else call


def sql_words(query: Any) -> str:
    """The first words of an SQL statement given as text, bytes or a psycopg ``sql`` object."""
    text = _sql_text(query)
    if text is None:
        return ""
    position = 0
    while match := _COMMENTS.match(text, position):  # leading comments say nothing useful
        position = match.end()
    words = text[position:].split(None, STATEMENT_WORDS)  # the first words, then the rest
    shown = " ".join(words[:STATEMENT_WORDS])
    cut = len(words) > STATEMENT_WORDS
    if len(shown) > STATEMENT_CHARS:
        shown, cut = shown[:STATEMENT_CHARS].rstrip(), True
    return f"{shown} ..." if cut else shown


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


def redis_command(args: tuple[Any, ...]) -> str:
    """A Redis command's name (``GET``, ``CLIENT LIST``), never its keys or values."""
    if not args:
        return ""
    name = args[0]
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).decode("ascii", "replace")
    if not isinstance(name, str):
        return ""
    return name.upper()[:STATEMENT_CHARS]


def http_origin(method: Any, url: Any) -> str:
    """``GET http://host:port`` from a method and an absolute URL: no credentials, path or query."""
    if isinstance(method, bytes):
        method = method.decode("ascii", "replace")
    try:
        parts = urlsplit(str(url))
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return str(method).upper()
    if ":" in host:
        host = f"[{host}]"
    origin = f"{parts.scheme}://{host}" if parts.scheme else host
    if port is not None:
        origin += f":{port}"
    return f"{str(method).upper()} {origin}".strip()


def described_by(
    call: str, detail: Callable[[Any, tuple[Any, ...], dict[str, Any]], str]
) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], str]:
    """A ``Target.describe`` that appends ``detail(instance, args, kwargs)`` to ``call``."""

    def describe(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return with_detail(call, detail(instance, args, kwargs))

    return describe


def first_statement(name: str = "query") -> Callable[[Any, tuple[Any, ...], dict[str, Any]], str]:
    """A detail function: the first words of the statement passed first or as ``name``."""

    def detail(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return sql_words(args[0] if args else kwargs.get(name))

    return detail
