"""Files opened by an offloaded ``open()``: their large reads and writes are offloaded too."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

import wrapt

from ..core.loop import on_loop_thread
from ..core.state import exempt, reentrant
from .portal import offload_active, portal_problem
from .worker import run_offloaded

__all__ = ("LARGE_IO", "OffloadingFile")

T = TypeVar("T")

#: Reads and writes of at least this many bytes on a file opened by an offloaded open() move too.
LARGE_IO = 64 * 1024


def _nbytes(data: Any) -> int:
    try:
        return memoryview(data).nbytes
    except TypeError:
        return len(data)


def _io(method: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any], large: bool) -> T:
    if large and on_loop_thread() and offload_active() and not (reentrant.get() or exempt.get()):
        try:
            can_offload = portal_problem() is None
        except Exception:
            can_offload = False
        if can_offload:
            return run_offloaded(method, args, kwargs, files=True)
    return method(*args, **kwargs)


def _large_size(args: tuple[Any, ...], kwargs: dict[str, Any], name: str) -> bool:
    size = args[0] if args else kwargs.get(name, -1)
    return size is None or size < 0 or size >= LARGE_IO


class OffloadingFile(wrapt.ObjectProxy[Any]):
    """A file object opened by an offloaded ``open()``: its large reads and writes are offloaded.

    Everything else is the real file's (``isinstance`` checks pass; ``type()`` is this proxy):
    it prints, copies and pickles as the file does (files refuse, with the file's ``TypeError``).
    """

    def __repr__(self) -> str:
        return repr(self.__wrapped__)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.__wrapped__.__reduce_ex__(protocol)

    def __reduce__(self) -> Any:
        return self.__wrapped__.__reduce__()

    def __copy__(self) -> Any:
        return copy.copy(self.__wrapped__)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return copy.deepcopy(self.__wrapped__, memo)

    def __enter__(self) -> OffloadingFile:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self.__wrapped__.__exit__(*exc_info)

    def read(self, *args: Any, **kwargs: Any) -> Any:
        return _io(self.__wrapped__.read, args, kwargs, _large_size(args, kwargs, "size"))

    def read1(self, *args: Any, **kwargs: Any) -> Any:
        return _io(self.__wrapped__.read1, args, kwargs, _large_size(args, kwargs, "size"))

    def readall(self) -> Any:
        return _io(self.__wrapped__.readall, (), {}, True)

    def readlines(self, *args: Any, **kwargs: Any) -> Any:
        hint = args[0] if args else kwargs.get("hint", -1)
        return _io(
            self.__wrapped__.readlines, args, kwargs, hint is None or not 0 < hint < LARGE_IO
        )

    def readinto(self, buffer: Any) -> Any:
        return _io(self.__wrapped__.readinto, (buffer,), {}, _nbytes(buffer) >= LARGE_IO)

    def readinto1(self, buffer: Any) -> Any:
        return _io(self.__wrapped__.readinto1, (buffer,), {}, _nbytes(buffer) >= LARGE_IO)

    def write(self, data: Any) -> Any:
        return _io(self.__wrapped__.write, (data,), {}, _nbytes(data) >= LARGE_IO)

    def writelines(self, lines: Any) -> Any:
        return _io(self.__wrapped__.writelines, (lines,), {}, True)


