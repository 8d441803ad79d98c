"""Small building blocks for the predicates that tell a call that can block from one that cannot.

A predicate is ``(instance, args, kwargs) -> bool``: True when the call would really wait.
"""

from __future__ import annotations

import os
import socket
from typing import Any

_MISSING = object()


def argument(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str) -> Any:
    """The argument passed at ``index`` or as ``name``; ``_MISSING`` when not given."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, _MISSING)


def waits(timeout: Any) -> bool:
    """A timeout argument that still allows waiting (None, missing, negative or positive)."""
    return timeout is _MISSING or timeout is None or timeout != 0


def blocking_socket(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """A socket method on a socket that is not in non-blocking mode (timeout 0.0)."""
    timeout: float | None = instance.gettimeout()
    return timeout != 0.0


def blocking_fd(fd: Any) -> bool:
    """A blocking file descriptor other than stdin/stdout/stderr's."""
    if not isinstance(fd, int) or fd in (0, 1, 2):
        return False
    try:
        return os.get_blocking(fd)
    except OSError:
        return False  # the call itself will report the bad descriptor


def first_fd_blocks(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return blocking_fd(argument(args, kwargs, 0, "fd"))


def is_ip_literal(host: Any) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        try:
            host = host.decode("ascii")
        except UnicodeDecodeError:
            return False
    if not isinstance(host, str):
        return False
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.split("%", 1)[0])
            return True
        except (OSError, ValueError):
            continue
    return False


def resolves_name(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """DNS look-ups of a name (not an IP literal, which needs no resolver).

    ``getaddrinfo(..., flags=AI_NUMERICHOST)`` never asks a resolver either: it fails at once
    for a name. trio (and anyio on trio) try that first on the loop thread for every host.
    """
    host = argument(args, kwargs, 0, "host")
    if host is _MISSING:
        host = argument(args, kwargs, 0, "hostname")
    flags = argument(args, kwargs, 5, "flags")
    if isinstance(flags, int) and flags & socket.AI_NUMERICHOST:
        return False
    return not is_ip_literal(host)


def always(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return True
