"""Reads and writes on files: checked where the syscall runs, whoever opened the file.

While active, ``open`` (``builtins.open``, ``io.open``) builds the very C layers ``io.open``
builds (``io.BufferedReader``/``BufferedWriter``/``BufferedRandom``, ``io.TextIOWrapper``) over
a raw ``io.FileIO`` subclass whose ``read``/``readinto``/``readall``/``write``/``truncate`` are
checked. ``type()``, buffering and speed of the layers users touch stay the C ones, and only a
real syscall reaches the check: ``readline`` served from the buffer, iteration, ``read1``,
``writelines`` and ``flush`` are checked exactly when they reach the disk. A file opened in a
worker thread, at start-up or by ``SpooledTemporaryFile``/``UploadFile`` and read on the loop is
checked on the loop. Only regular files are checked: pipes, sockets, ttys and descriptors 0-2
(stdout/stderr) never are, nor a regular file that stdout or stderr writes to (the raw file
under ``sys.stdout``/``sys.stderr``, or the file descriptors 1 and 2 point at: shell
redirection, pytest's capture), so logging to the console is never reported.

Files opened before activation and held by a module global or a class attribute are swapped for
a checked proxy around the same file object (``core/rebind.py``); a file held only by a local
variable of a running frame is not reached (the watchdog reports long stalls).
"""

from __future__ import annotations

import copy
import io
import os
import stat
import sys
from typing import Any

from ..core.methods import make_method
from ..core.targets import Target

__all__ = ["PROXIES", "CheckedFileIO", "open_with_checked_raw"]

ADVICE = (
    "use anyio.Path / await anyio.open_file(), or offload with await anyio.to_thread.run_sync(...)"
)

_fstat = os.fstat
_fspath = os.fspath
_FileIO = io.FileIO
_BufferedRandom, _BufferedReader, _BufferedWriter = (
    io.BufferedRandom, io.BufferedReader, io.BufferedWriter
)
_TextIOWrapper, _text_encoding, _DEFAULT_BUFFER_SIZE = (
    io.TextIOWrapper, io.text_encoding, io.DEFAULT_BUFFER_SIZE
)


def _regular(fd: int) -> bool:
    if fd in (0, 1, 2):
        return False
    try:
        return stat.S_ISREG(_fstat(fd).st_mode)
    except (OSError, ValueError):
        return False


def _checks(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    regular = instance._bbl_regular
    if regular is None:  # first asked on a loop thread: one fstat, remembered
        try:
            fd = instance.fileno()
        except (OSError, ValueError):  # closed: the call raises by itself
            return False
        regular = instance._bbl_regular = _regular(fd)
    if not regular:
        return False
    if _standard_stream(instance):  # found once: then never asked again
        instance._bbl_regular = False
        return False
    return True


def _standard_stream(raw: Any) -> bool:
    """``raw`` is what stdout or stderr writes to, though a regular file: the raw file under
    ``sys.stdout``/``sys.stderr`` (pytest's capture, a ``contextlib.redirect_stdout`` to a file),
    or the same file as descriptor 1 or 2 (``python app.py > out.log``, pytest's fd capture,
    which ``dup2``s a temporary file there). Asked only on a loop thread, for a call that would
    otherwise be reported."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        layer = stream
        for _ in range(3):  # TextIOWrapper -> Buffered* -> FileIO
            if layer is raw:
                return True
            layer = getattr(layer, "buffer", None) or getattr(layer, "raw", None)
            if layer is None:
                break
    try:
        mine = _fstat(raw.fileno())
        for fd in (1, 2):
            other = _fstat(fd)
            if (mine.st_dev, mine.st_ino) == (other.st_dev, other.st_ino):
                return True
    except (OSError, ValueError):
        pass
    return False


def _raw_method(name: str, call: str) -> Any:
    target = Target("io", f"FileIO.{name}", call, _checks, ADVICE)
    method = make_method(target, getattr(_FileIO, name))
    method.__name__ = name
    method.__qualname__ = f"FileIO.{name}"
    method.__doc__ = getattr(_FileIO, name).__doc__
    return method


class CheckedFileIO(_FileIO):
    """A raw file whose syscalls are checked on a loop thread (regular files only).

    No ``__init__`` of its own: it is built as fast as ``io.FileIO``. Whether it is a regular
    file is found on its first checked call on a loop thread (``None`` until then), so a file
    opened and read off the loop costs no extra ``fstat``.
    """

    _bbl_regular: bool | None = None

    read = _raw_method("read", "file.read")
    readinto = _raw_method("readinto", "file.read")
    readall = _raw_method("readall", "file.read")
    write = _raw_method("write", "file.write")
    truncate = _raw_method("truncate", "file.truncate")


CheckedFileIO.__module__ = "_io"
CheckedFileIO.__name__ = CheckedFileIO.__qualname__ = "FileIO"

_MODES = frozenset("xrwab+t")

#: Stands for a mode ``io.open`` refuses (it then gets to say why).
_REFUSED = ("", "", False)
#: mode -> (raw mode, buffer kind, binary): the mode string's checks, done once per mode.
_LAYOUTS: dict[str, tuple[str, str, bool]] = {}
_LAYOUTS_KEPT = 64  # a program that opens with ever new invalid modes cannot grow it


def _layout(mode: Any) -> tuple[str, str, bool]:
    if not isinstance(mode, str):
        return _REFUSED
    modes = set(mode)
    if (
        modes - _MODES
        or len(mode) != len(modes)
        or ("t" in modes and "b" in modes)
        or sum(c in modes for c in "xrwa") != 1
    ):
        layout = _REFUSED
    else:
        raw_mode = "".join(c for c in "xrwa+" if c in modes)
        kind = "+" if "+" in modes else "r" if "r" in modes else "w"
        layout = (raw_mode, kind, "b" in modes)
    if type(mode) is str and len(_LAYOUTS) < _LAYOUTS_KEPT:
        _LAYOUTS[mode] = layout
    return layout


def _build_layers(
    original: Any,
    file: Any,
    mode: str = "r",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Any = None,
) -> Any:
    """``io.open`` over a CheckedFileIO (CPython's own algorithm, as in ``_pyio.open``).

    Anything unusual (a bad mode, a non-int buffering, a binary file with an encoding, a bool
    for a descriptor...) goes to the original ``open``, so its errors and warnings stay exactly
    the interpreter's. A mode's own checks are done once per mode string.
    """
    layout = _LAYOUTS.get(mode) if type(mode) is str else None
    if layout is None:
        layout = _layout(mode)
    raw_mode, kind, binary = layout
    if (
        not raw_mode
        or not isinstance(buffering, int)
        or buffering < -1
        or isinstance(file, bool)
        or (binary and (encoding is not None or errors is not None or newline is not None
                        or buffering == 1))
        or (not binary and (buffering == 0
                            or (encoding is not None and not isinstance(encoding, str))
                            or (errors is not None and not isinstance(errors, str))
                            or (newline is not None and not isinstance(newline, str))))
    ):  # fmt: skip
        return original(file, mode, buffering, encoding, errors, newline, closefd, opener)
    if not isinstance(file, int):
        try:
            file = _fspath(file)
        except TypeError:
            return original(file, mode, buffering, encoding, errors, newline, closefd, opener)
    raw = CheckedFileIO(file, raw_mode, closefd, opener=opener)
    result: Any = raw
    try:
        line_buffering = False
        if buffering == 1 or (buffering < 0 and raw.isatty()):
            buffering, line_buffering = -1, True
        if buffering < 0:
            size = raw._blksize  # type: ignore[attr-defined]
            buffering = size if size > 1 else _DEFAULT_BUFFER_SIZE
        if buffering == 0:
            return raw
        if kind == "+":
            buffer: Any = _BufferedRandom(raw, buffering)
        elif kind == "r":
            buffer = _BufferedReader(raw, buffering)
        else:
            buffer = _BufferedWriter(raw, buffering)
        result = buffer
        if binary:
            return buffer
        text = _TextIOWrapper(buffer, _text_encoding(encoding), errors, newline, line_buffering)
        result = text
        text.mode = mode  # type: ignore[misc]
        return text
    except BaseException:
        result.close()
        raise


def open_with_checked_raw(original: Any) -> Any:
    """Used by the ``open`` wrappers (catalogue/files.py) once the call itself was decided."""

    def open_(*args: Any, **kwargs: Any) -> Any:
        try:
            return _build_layers(original, *args, **kwargs)
        except TypeError as exc:
            traceback = exc.__traceback__
            if traceback is not None and traceback.tb_next is not None:
                raise  # raised inside (an opener, a layer): the original would raise it too
            # the arguments did not bind: the interpreter's own message for them
            return original(*args, **kwargs)

    return open_


# -- files that exist before activation ---------------------------------------------------

_CHECKED_FILE_METHODS = {
    "read": "file.read", "read1": "file.read", "readinto": "file.read", "readinto1": "file.read",
    "readline": "file.read", "readlines": "file.read", "readall": "file.read",
    "write": "file.write", "writelines": "file.write", "flush": "file.write",
    "truncate": "file.truncate",
}  # fmt: skip


class CheckedFile:
    """A proxy around a file object made before activation: its I/O methods are checked."""

    __slots__ = ("__weakref__", "_bbl_file")

    def __init__(self, file: Any) -> None:
        object.__setattr__(self, "_bbl_file", file)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bbl_file, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._bbl_file, name, value)

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def __enter__(self) -> Any:
        self._bbl_file.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        return self._bbl_file.__exit__(*exc_info)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._bbl_file)

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self._bbl_file.__reduce_ex__(protocol)  # refuses like the file itself

    def __copy__(self) -> Any:
        return copy.copy(self._bbl_file)

    def __deepcopy__(self, memo: Any) -> Any:
        return copy.deepcopy(self._bbl_file, memo)

    def __repr__(self) -> str:
        return repr(self._bbl_file)


def _proxy_method(name: str, call: str) -> Any:
    target = Target("io", f"IOBase.{name}", call, None, ADVICE)

    def unbound(self: Any, *args: Any, **kwargs: Any) -> Any:
        return getattr(self._bbl_file, name)(*args, **kwargs)

    method = make_method(target, unbound)
    method.__name__ = name
    method.__qualname__ = f"CheckedFile.{name}"
    return method


for _name, _call in _CHECKED_FILE_METHODS.items():
    setattr(CheckedFile, _name, _proxy_method(_name, _call))


def existing_file(file: Any) -> Any:
    """A checked proxy for a regular file opened before activation (None for the rest)."""
    if isinstance(file, CheckedFileIO) or getattr(file, "closed", True):
        return None
    try:
        fd = file.fileno()
    except (OSError, ValueError, AttributeError):
        return None
    raw = getattr(getattr(file, "buffer", file), "raw", file)
    if isinstance(raw, CheckedFileIO) or not _regular(fd):
        return None
    return CheckedFile(file)


PROXIES = tuple(
    ("io", name, existing_file)
    for name in ("TextIOWrapper", "BufferedReader", "BufferedWriter", "BufferedRandom", "FileIO")
)

