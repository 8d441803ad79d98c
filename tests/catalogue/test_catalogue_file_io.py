"""Reads and writes on files, checked where the syscall runs, whoever opened the file."""

from __future__ import annotations

import asyncio
import copy
import io
import os
import pickle
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import LOOPS, call_on, calls, write_module

import blockbuster_lite as bl


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.txt"
    path.write_text("line\n" * 50)
    return path


def seen_after_opening(
    loop: str, opener: Callable[[], Any], use: Callable[[Any], Any]
) -> list[str]:
    """Open while active but off the loop (a worker, start-up), then use the file on the loop."""
    with bl.intercept("log") as guard:
        file = opener()
        try:
            call_on(loop, lambda: use(file))
        finally:
            file.close()
    return calls(guard)


USES: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "read": ("r", lambda f: f.read()),
    "read(n)": ("rb", lambda f: f.read(10)),
    "read1": ("rb", lambda f: f.read1(10)),
    "readinto": ("rb", lambda f: f.readinto(bytearray(10))),
    "readline": ("r", lambda f: f.readline()),
    "readlines": ("r", lambda f: f.readlines()),
    "iteration": ("r", lambda f: list(f)),
    "write+flush": ("a", lambda f: (f.write("x"), f.flush())),
    "writelines+flush": ("ab", lambda f: (f.writelines([b"x", b"y"]), f.flush())),
    "truncate": ("r+", lambda f: f.truncate(3)),
    "unbuffered read": ("rb0", lambda f: f.read()),
}


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("use", USES)
def test_every_read_and_write_reaching_the_disk_is_caught(loop: str, use: str, data: Path) -> None:
    mode, call = USES[use]
    buffering = 0 if mode.endswith("0") else -1
    mode = mode.rstrip("0")
    names = seen_after_opening(loop, lambda: open(data, mode, buffering=buffering), call)  # noqa: SIM115
    assert names and set(names) <= {"file.read", "file.write", "file.truncate"}, names


@pytest.mark.parametrize("loop", LOOPS)
def test_a_file_opened_in_a_worker_thread_is_checked_on_the_loop(loop: str, data: Path) -> None:
    async def main() -> None:
        file = await asyncio.to_thread(open, data)
        file.read()
        file.close()

    with bl.intercept("log") as guard:
        call_on(loop, lambda: None)
        asyncio.run(main())
    assert calls(guard) == ["file.read"]


@pytest.mark.parametrize("loop", LOOPS)
def test_reads_served_from_the_buffer_are_clean(loop: str, data: Path) -> None:
    def use(file: Any) -> None:
        file.readline()  # one read fills the buffer ...

    with bl.intercept("log") as guard:
        file = open(data)  # noqa: SIM115
        file.readline()  # ... off the loop
        call_on(loop, lambda: [file.readline() for _ in range(10)])
        file.close()
    assert calls(guard) == []


@pytest.mark.parametrize("loop", LOOPS)
def test_stdout_stderr_pipes_and_memory_files_are_clean(loop: str) -> None:
    read_fd, write_fd = os.pipe()

    def use() -> None:
        print("x", file=sys.stderr)
        with open(write_fd, "w", closefd=False) as pipe:
            pipe.write("x")
            pipe.flush()
        with open(read_fd, "rb", closefd=False) as pipe:
            pipe.read(1)
        io.BytesIO(b"x").read()
        io.StringIO("x").readline()

    with bl.intercept("raise") as guard:
        call_on(loop, use)
    os.close(read_fd)
    os.close(write_fd)
    assert [c for c in calls(guard) if c != "open"] == []


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("how", ["sys.stderr swapped", "fd 2 dup2ed"])
def test_stderr_sent_to_a_regular_file_is_clean_other_files_are_not(
    loop: str, how: str, tmp_path: Path
) -> None:
    """Logging to the console is never reported, even when the console is a regular file
    (``app > out.log``, pytest's capture, loguru writing to a captured stderr); a write to
    another regular file still is."""
    saved_stderr, saved_fd = sys.stderr, os.dup(2)
    try:
        with bl.intercept("log") as guard:
            # opened while active (off the loop), so both files are checked ones
            console = open(tmp_path / "console.log", "w", buffering=1)  # noqa: SIM115
            other = open(tmp_path / "other.log", "w")  # noqa: SIM115
            if how == "sys.stderr swapped":
                sys.stderr = console
            else:
                os.dup2(console.fileno(), 2)

            def use() -> None:
                if how == "sys.stderr swapped":
                    sys.stderr.write("to the console\n")
                    sys.stderr.flush()
                else:  # a handler holding the raw stream opened on the same file
                    console.write("to the console\n")
                    console.flush()
                other.write("to a file")
                other.flush()

            call_on(loop, use)
    finally:
        sys.stderr = saved_stderr
        os.dup2(saved_fd, 2)
        os.close(saved_fd)
        console.close()
        other.close()
    assert [c for c in calls(guard) if c != "open"] == ["file.write"]
    assert (tmp_path / "console.log").read_text() == "to the console\n"


def test_the_layers_stay_the_c_types(data: Path) -> None:
    with bl.intercept("log"):
        with open(data) as text, open(data, "rb") as binary, open(data, "r+b") as both:
            assert type(text) is io.TextIOWrapper
            assert type(text.buffer) is io.BufferedReader
            assert type(binary) is io.BufferedReader
            assert type(both) is io.BufferedRandom
            assert isinstance(text.buffer.raw, io.FileIO)
            assert text.mode == "r" and text.name == str(data)
            assert text.read() == "line\n" * 50
        with open(data, "w") as out:
            assert type(out.buffer) is io.BufferedWriter
        with pytest.raises(ValueError, match="invalid mode"):
            open(data, "rz")  # noqa: SIM115
        with pytest.raises(ValueError, match="binary mode doesn't take an encoding"):
            open(data, "rb", encoding="utf-8")  # noqa: SIM115
        with pytest.raises(FileNotFoundError):
            open(data.parent / "missing")  # noqa: SIM115


def test_files_refuse_pickle_and_copy_like_the_originals(data: Path) -> None:
    with bl.intercept("log"), open(data) as file:
        with pytest.raises(TypeError):
            pickle.dumps(file)
        with pytest.raises(TypeError):
            copy.copy(file)


@pytest.mark.parametrize("loop", LOOPS)
def test_os_level_reads_and_writes(loop: str, data: Path) -> None:
    def use() -> None:
        fd = os.open(data, os.O_RDWR)
        try:
            os.read(fd, 1)
            os.pread(fd, 1, 0)
            os.write(fd, b"x")
            os.pwrite(fd, b"x", 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    with bl.intercept("log") as guard:
        call_on(loop, use)
    assert calls(guard) == ["os.open", "os.read", "os.pread", "os.write", "os.pwrite", "os.fsync"]


@pytest.mark.parametrize("loop", LOOPS)
def test_spooled_file_after_rollover_is_checked(loop: str) -> None:
    with bl.intercept("log") as guard:
        spooled = tempfile.SpooledTemporaryFile(max_size=4)  # noqa: SIM115
        spooled.write(b"0123456789")  # rolled over off the loop
        call_on(loop, lambda: (spooled.seek(0), spooled.read()))
        spooled.close()
    assert calls(guard) == ["file.read"]


EARLY = """
    import os
    HANDLE = open(os.environ["BBL_TEST_FILE"])

    class Holder:
        handle = open(os.environ["BBL_TEST_FILE"], "rb")
"""


@pytest.mark.parametrize("loop", LOOPS)
def test_a_file_opened_before_activation_and_held_by_a_module(
    loop: str, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BBL_TEST_FILE", str(data))
    (tmp_path / "src").mkdir()
    module: Any = write_module(tmp_path / "src", "opened_early", EARLY, monkeypatch)
    original = module.HANDLE
    try:
        with bl.intercept("log") as guard:
            call_on(loop, lambda: (module.HANDLE.readline(), module.Holder.handle.read(3)))
            assert isinstance(module.HANDLE, io.TextIOWrapper)
        assert calls(guard) == ["file.read", "file.read"]
        assert module.HANDLE is original
    finally:
        module.HANDLE.close()
        module.Holder.handle.close()


def _outcome(call: Callable[[], Any]) -> tuple[Any, ...]:
    try:
        file = call()
    except Exception as exc:  # the interpreter's answer, compared with ours
        return type(exc), str(exc)
    try:
        layers, layer = [], file
        while layer is not None:  # TextIOWrapper -> Buffered* -> FileIO, by their names
            layers.append(f"{type(layer).__module__}.{type(layer).__qualname__}")
            layer = getattr(layer, "buffer", None) or getattr(layer, "raw", None)
        return tuple(layers), getattr(file, "mode", None)
    finally:
        file.close()


OPEN_ARGUMENTS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("r",), {}), (("rb",), {}), (("rt",), {}), (("r+",), {}), (("a+b",), {}), (("w",), {}),
    (("rr",), {}), (("rw",), {}), (("tb",), {}), (("",), {}), (("rU",), {}), ((b"r",), {}),
    ((None,), {}), (("r", 0), {}), (("rb", 0), {}), (("rb", 1), {}), (("r", 1.5), {}),
    (("r", -2), {}), (("r", True), {}), (("r",), {"encoding": 5}), (("r",), {"errors": 5}),
    (("r",), {"newline": "x"}), (("r",), {"newline": 5}), (("rb",), {"newline": "\n"}),
    (("rb",), {"errors": "strict"}), (("r",), {"encoding": "no-such-codec"}),
    (("r",), {"closefd": False}), (("r",), {"closefd": "x"}), (("r",), {"opener": 5}), (("r",), {"bogus": 1}), (("r", -1, None, None, None, True, None, 9), {}),
]  # fmt: skip


@pytest.mark.parametrize(("args", "kwargs"), OPEN_ARGUMENTS, ids=repr)
def test_open_answers_every_argument_as_the_interpreter_does(
    data: Path, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    original = open
    with warnings.catch_warnings():  # buffering=1 in binary mode warns, in both
        warnings.simplefilter("ignore")
        expected = _outcome(lambda: original(data, *args, **kwargs))
    with bl.intercept("log"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert open is not original
        got = _outcome(lambda: open(data, *args, **kwargs))  # noqa: SIM115
    assert got == expected


@pytest.mark.parametrize("file", [True, 3.5, object()], ids=repr)
def test_open_of_an_odd_file_argument_answers_as_the_interpreter_does(file: Any) -> None:
    original = open
    expected = _outcome(lambda: original(file, closefd=False))
    with bl.intercept("log"):
        got = _outcome(lambda: open(file, closefd=False))  # noqa: SIM115
    assert got == expected


def test_an_opener_that_raises_type_error_is_called_once(data: Path) -> None:
    calls_made: list[str] = []

    def opener(path: str, flags: int) -> int:
        calls_made.append(path)
        raise TypeError("opener says no")

    with bl.intercept("log"), pytest.raises(TypeError, match="opener says no"):
        open(data, opener=opener)  # noqa: SIM115
    assert calls_made == [str(data)]


def test_a_file_opened_and_read_off_the_loop_is_never_stat_ed_again(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whether a file is regular is asked on its first checked call on a loop thread only."""
    from blockbuster_lite.catalogue import file_io

    asked: list[int] = []
    real = file_io._regular
    monkeypatch.setattr(file_io, "_regular", lambda fd: asked.append(fd) or real(fd))
    with bl.intercept("log") as guard, open(data) as file:
        file.read()
        assert asked == []
        file.seek(0)
        call_on("asyncio", lambda: file.read())
        assert len(asked) == 1
        file.seek(0)
        call_on("asyncio", lambda: file.read())
        assert len(asked) == 1
    assert calls(guard) == ["file.read", "file.read"]  # both reads on the loop, as before
