"""Files and the filesystem.

Opening a file, and the ``os`` functions that touch the disk, are patched. Reads and writes on
the files ``open`` returns are checked where their syscalls run (see file_io.py: the C layers
over a checked raw file). ``os.read``/``os.write`` on blocking descriptors are caught.
"""

from __future__ import annotations

from asyncio import _get_running_loop
from typing import Any

from ..core.hotpath import make_handler
from ..core.loop import trio_state
from ..core.targets import Target
from ..core.transparent import Wrapper
from ._predicates import _MISSING, argument, blocking_fd, first_fd_blocks
from .file_io import open_with_checked_raw

ADVICE = (
    "use anyio.Path / await anyio.open_file(), or offload with await anyio.to_thread.run_sync(...)"
)


def _opens_a_file(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    # wrapping a descriptor that is already open touches no path (its reads are checked later)
    file = argument(args, kwargs, 0, "file")
    return not isinstance(file, int)


def _sendfile_blocks(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    out_fd = argument(args, kwargs, 0, "out_fd")
    return out_fd is not _MISSING and blocking_fd(out_fd)


def _os(name: str) -> Target:
    return Target("os", name, f"os.{name}", None, ADVICE)


def _fd_call(name: str) -> Target:
    return Target("os", name, f"os.{name}", first_fd_blocks, ADVICE)


OS_PATH_FUNCTIONS = (
    "stat", "lstat", "statvfs", "access", "listdir", "scandir", "walk", "fwalk",
    "mkdir", "makedirs", "rmdir", "removedirs", "remove", "unlink", "rename", "renames",
    "replace", "link", "symlink", "readlink", "chmod", "chown", "lchown", "truncate",
    "utime", "mkfifo", "fsync", "fdatasync", "ftruncate",
)  # fmt: skip

OS_FD_FUNCTIONS = ("read", "write", "readv", "writev", "pread", "pwrite")

SHUTIL_FUNCTIONS = (
    "copyfileobj", "copyfile", "copymode", "copystat", "copy", "copy2", "copytree",
    "rmtree", "move", "disk_usage", "chown", "which", "make_archive", "unpack_archive",
)  # fmt: skip

def _open(module: str) -> Target:
    """``open``, which also builds files whose reads and writes are checked (file_io.py)."""
    decided = Target(module, "open", "open", _opens_a_file, ADVICE)

    def replace(original: Any) -> Any:
        handler = make_handler(decided)
        opener = open_with_checked_raw(original)

        def open_(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if _get_running_loop() is None:  # off the loop: no decision to make, one frame less
                run_context = trio_state.run_context
                if run_context is None or "runner" not in run_context.__dict__:
                    return opener(*args, **kwargs)
            return handler(opener, instance, args, kwargs)

        return Wrapper(original, open_, None, (module, "open"))

    return Target(module, "open", "open", _opens_a_file, ADVICE, replace=replace)


def _rolls_over(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return not instance._rolled


MIMETYPES_ADVICE = "call mimetypes.init() once at start-up, before the loop runs"

#: I/O behind pure-looking APIs: the working directory (``os.path.abspath``/``realpath`` of a
#: relative path, ``Path.cwd``, ``Path.resolve`` reach it), mimetypes reading its tables on first
#: use (later look-ups are memory), a SpooledTemporaryFile rolling over to disk.
HIDDEN_IO = (
    _os("getcwd"),
    _os("getcwdb"),
    Target("mimetypes", "init", "mimetypes.init", None, MIMETYPES_ADVICE),
    Target("mimetypes", "MimeTypes.read", "mimetypes.MimeTypes.read", None, MIMETYPES_ADVICE),
    Target(
        "tempfile", "SpooledTemporaryFile.rollover", "tempfile.SpooledTemporaryFile.rollover",
        _rolls_over, ADVICE,
    ),
)

#: One report for the whole call (its open and its reads or writes run inside it).
PATHLIB_WHOLE_FILE = tuple(
    Target("pathlib", f"Path.{name}", f"pathlib.Path.{name}", None, ADVICE)
    for name in ("read_text", "read_bytes", "write_text", "write_bytes")
)

TARGETS = (
    *HIDDEN_IO,
    *PATHLIB_WHOLE_FILE,
    _open("builtins"),
    _open("io"),
    Target("os", "open", "os.open", None, ADVICE),
    Target("os", "sendfile", "os.sendfile", _sendfile_blocks, ADVICE),
    *(_os(name) for name in OS_PATH_FUNCTIONS),
    *(_fd_call(name) for name in OS_FD_FUNCTIONS),
    *(Target("shutil", name, f"shutil.{name}", None, ADVICE) for name in SHUTIL_FUNCTIONS),
    Target("glob", "glob", "glob.glob", None, ADVICE),
    Target("glob", "iglob", "glob.iglob", None, ADVICE),
    *(
        Target("tempfile", name, f"tempfile.{name}", None, ADVICE)
        for name in ("mkstemp", "mkdtemp", "TemporaryFile", "NamedTemporaryFile")
    ),
    Target("tempfile", "TemporaryDirectory.__init__", "tempfile.TemporaryDirectory", None, ADVICE),
    Target("io", "open_code", "io.open_code", None, ADVICE),
)
