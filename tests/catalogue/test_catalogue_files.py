"""Catalogue: files and the filesystem."""

from __future__ import annotations

import builtins
import glob
import io
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import (
    LOOPS,
    OFF_LOOP,
    call_on,
    check_uninstalled,
    raises_on,
    run_on,
    seen_off_loop,
    seen_on,
)

import blockbuster_lite as bl

FILENAME = os.path.basename(__file__)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "data.txt").write_text("payload")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "inner.txt").write_text("inner")
    return tmp_path


def close_fd(fd: int) -> None:
    os.close(fd)


FILE_CALLS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "open-read": ("open", lambda p: open(p / "data.txt").close()),
    "open-write": ("open", lambda p: open(p / "new.txt", "w").close()),
    "io.open": ("open", lambda p: io.open(p / "data.txt").close()),  # noqa: UP020
    "os.open": ("os.open", lambda p: os.close(os.open(p / "data.txt", os.O_RDONLY))),
    "os.stat": ("os.stat", lambda p: os.stat(p)),
    "os.listdir": ("os.listdir", lambda p: os.listdir(p)),
    "os.scandir": ("os.scandir", lambda p: list(os.scandir(p))),
    "os.mkdir": ("os.mkdir", lambda p: os.mkdir(p / "made")),
    "os.remove": ("os.remove", lambda p: os.remove(p / "data.txt")),
    "os.rename": ("os.rename", lambda p: os.rename(p / "data.txt", p / "renamed.txt")),
    "os.makedirs": ("os.makedirs", lambda p: os.makedirs(p / "a" / "b")),
    "Path.read_text": ("pathlib.Path.read_text", lambda p: (p / "data.txt").read_text()),
    "Path.write_bytes": ("pathlib.Path.write_bytes", lambda p: (p / "out.bin").write_bytes(b"x")),
    "Path.exists": ("os.stat", lambda p: (p / "data.txt").exists()),
    "Path.iterdir": ("os.listdir", lambda p: list(p.iterdir())),
    "shutil.copy": ("shutil.copy", lambda p: shutil.copy(p / "data.txt", p / "copy.txt")),
    "shutil.copytree": ("shutil.copytree", lambda p: shutil.copytree(p / "sub", p / "sub2")),
    "shutil.rmtree": ("shutil.rmtree", lambda p: shutil.rmtree(p / "sub")),
    "shutil.move": ("shutil.move", lambda p: shutil.move(p / "data.txt", p / "moved.txt")),
    "tempfile.mkstemp": ("tempfile.mkstemp", lambda p: close_fd(tempfile.mkstemp(dir=p)[0])),
    "tempfile.mkdtemp": ("tempfile.mkdtemp", lambda p: tempfile.mkdtemp(dir=p)),
    "tempfile.NamedTemporaryFile": (
        "tempfile.NamedTemporaryFile",
        lambda p: tempfile.NamedTemporaryFile(dir=p).close(),
    ),
    "glob.glob": ("glob.glob", lambda p: glob.glob(str(p / "*.txt"))),
}


@pytest.mark.parametrize("name", FILE_CALLS)
def test_a_file_call_on_the_loop_is_caught_once(name: str, tree: Path) -> None:
    call_name, call = FILE_CALLS[name]
    error = raises_on("asyncio", lambda: call(tree))
    assert error.violation.call == call_name
    assert "anyio.Path" in str(error)
    # In log mode the call runs, and the calls it makes inside are not reported again.
    assert seen_on("asyncio", lambda: call(tree)) == [call_name]


@pytest.mark.parametrize("loop", LOOPS)
def test_open_is_caught_on_every_loop(loop: str, tree: Path) -> None:
    error = raises_on(loop, lambda: open(tree / "data.txt"))  # noqa: SIM115
    assert error.violation.call == "open"


def test_raise_mode_prevents_the_change(tree: Path) -> None:
    raises_on("asyncio", lambda: shutil.rmtree(tree / "sub"))
    raises_on("asyncio", lambda: os.remove(tree / "data.txt"))
    assert (tree / "sub" / "inner.txt").exists()
    assert (tree / "data.txt").read_text() == "payload"


def test_shutil_copy_is_reported_once_and_copies(tree: Path) -> None:
    with bl.intercept("log") as guard:
        call_on("asyncio", lambda: shutil.copy(tree / "data.txt", tree / "copy.txt"))
    assert [v.call for v in guard.violations] == ["shutil.copy"]
    assert (tree / "copy.txt").read_text() == "payload"


@pytest.mark.parametrize("where", OFF_LOOP)
def test_file_calls_off_the_loop_are_not_caught(where: str, tree: Path) -> None:
    def work() -> str:
        os.stat(tree)
        shutil.copy(tree / "data.txt", tree / f"copy-{where}.txt")
        return (tree / "data.txt").read_text()

    assert seen_off_loop(where, work) == []


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    os.close(read_fd)
    os.close(write_fd)


def test_os_write_and_read_on_a_blocking_pipe_are_caught(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    assert raises_on("asyncio", lambda: os.write(write_fd, b"x")).violation.call == "os.write"
    assert raises_on("asyncio", lambda: os.read(read_fd, 1)).violation.call == "os.read"


def test_os_write_and_read_on_a_non_blocking_pipe_are_not_caught(
    pipe: tuple[int, int],
) -> None:
    read_fd, write_fd = pipe
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    with bl.intercept("raise") as guard:
        assert call_on("asyncio", lambda: os.write(write_fd, b"xy")) == 2
        assert call_on("asyncio", lambda: os.read(read_fd, 2)) == b"xy"
    assert guard.violations == []


@pytest.mark.parametrize("fd", [1, 2])
def test_writes_to_stdout_and_stderr_are_not_caught(fd: int) -> None:
    assert seen_on("asyncio", lambda: os.write(fd, b""), mode="raise") == []


def test_print_and_open_of_a_standard_descriptor_are_not_caught() -> None:
    def use_standard_streams() -> None:
        print("printed on the loop")
        with open(1, "w", closefd=False) as stdout:
            stdout.flush()

    assert seen_on("asyncio", use_standard_streams, mode="raise") == []


def test_anyio_file_api_is_never_caught(tree: Path) -> None:
    async def main() -> str:
        path = anyio.Path(tree / "data.txt")
        assert await path.exists()
        async with await anyio.open_file(tree / "data.txt") as handle:
            return str(await handle.read())

    for loop in ("asyncio", "anyio-trio"):
        with bl.intercept("raise") as guard:
            assert run_on(loop, main) == "payload"
        assert guard.violations == []


def test_a_file_opened_before_the_loop_can_be_read_on_it(tree: Path) -> None:
    # Reads on an already-open file object are not patched (io's C types); documented.
    with open(tree / "data.txt") as handle, bl.intercept("raise") as guard:
        assert call_on("asyncio", handle.read) == "payload"
    assert guard.violations == []


def test_allowed_file_calls(tree: Path) -> None:
    def read() -> str:
        return (tree / "data.txt").read_text()

    with bl.intercept("raise") as guard, bl.allow_blocking():
        assert call_on("asyncio", read) == "payload"
    assert guard.violations == []
    assert seen_on("asyncio", read, mode="raise", allow=[f"catalogue/{FILENAME}"]) == []


def test_uninstalled_file_calls_are_the_originals(tree: Path) -> None:
    originals = (builtins.open, io.open, os.stat, shutil.copy, pathlib.Path.read_text)
    check_uninstalled("files", lambda: (tree / "data.txt").read_text(), "shutil", "glob")
    now = (builtins.open, io.open, os.stat, shutil.copy, pathlib.Path.read_text)
    assert all(a is b for a, b in zip(now, originals, strict=True))  # == would see through wrappers
