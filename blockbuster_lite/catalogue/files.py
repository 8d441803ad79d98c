"""Files and the filesystem.

Opening a file, and the ``os`` functions that touch the disk, are patched. Reads and writes on a
file object that is already open are not: ``io``'s C types cannot be patched without rewriting
the interpreter's type objects (forbiddenfruit), which we refuse to do. ``os.read``/``os.write``
on blocking descriptors are caught; long reads of already-open files show up in the watchdog.
"""

from __future__ import annotations

from typing import Any

from ..core.targets import Target
from ._predicates import _MISSING, argument, blocking_fd, first_fd_blocks

ADVICE = (
    "use anyio.Path / await anyio.open_file(), or offload with await anyio.to_thread.run_sync(...)"
)


def _opens_a_file(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    file = argument(args, kwargs, 0, "file")
    return not (isinstance(file, int) and file in (0, 1, 2))


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

TARGETS = (
    Target("builtins", "open", "open", _opens_a_file, ADVICE),
    Target("io", "open", "open", _opens_a_file, ADVICE),
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
