"""allow_blocking(): exempt the current task or thread from every guard."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import Token
from typing import Any, TypeVar, cast

from .state import exempt

__all__ = ["allow_blocking"]

F = TypeVar("F", bound=Callable[..., Any])


class allow_blocking:
    """Exempt the current task or thread (a ContextVar) from every guard.

    ``with allow_blocking(): ...``, ``@allow_blocking`` or ``@allow_blocking()`` on sync and
    async functions. Other tasks and threads stay checked.
    """

    def __new__(cls, func: Callable[..., Any] | None = None) -> Any:
        instance = super().__new__(cls)
        instance._tokens = []
        if func is not None:
            return instance(func)
        return instance

    _tokens: list[Token[bool]]

    def __enter__(self) -> None:
        self._tokens.append(exempt.set(True))

    def __exit__(self, *exc_info: object) -> None:
        exempt.reset(self._tokens.pop())

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = exempt.set(True)
                try:
                    return await func(*args, **kwargs)
                finally:
                    exempt.reset(token)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = exempt.set(True)
            try:
                return func(*args, **kwargs)
            finally:
                exempt.reset(token)

        return cast(F, wrapper)
