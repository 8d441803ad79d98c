"""I/O behind pure-looking APIs, and machinery defined by operation."""

from __future__ import annotations

import glob
import importlib.metadata
import mimetypes
import os
import pathlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import LOOPS, call_off_loop, call_on, calls

import blockbuster_lite as bl


def seen(loop: str, call: Callable[[], Any], **settings: Any) -> list[str]:
    with bl.intercept("log", **settings) as guard:
        call_on(loop, call)
    return calls(guard)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "call",
    [lambda: os.getcwd(), lambda: os.path.abspath("x"), lambda: os.path.realpath("x"),
     lambda: pathlib.Path.cwd(), lambda: Path("x").resolve()],
)  # fmt: skip
def test_the_working_directory_is_io(loop: str, call: Callable[[], Any]) -> None:
    assert "os.getcwd" in seen(loop, call)


@pytest.mark.parametrize("loop", LOOPS)
def test_pure_path_arithmetic_is_clean(loop: str) -> None:
    def arithmetic() -> None:
        os.path.abspath("/a/b/../c")
        os.path.join("a", "b")
        os.path.normpath("a/./b")
        Path("/a") / "b"
        Path("a/b.txt").with_suffix(".md")
        os.path.relpath("/a/b", "/a")

    assert seen(loop, arithmetic) == []


def test_the_working_directory_off_the_loop_is_clean() -> None:
    with bl.intercept("raise") as guard:
        call_off_loop("plain-thread", lambda: os.getcwd())
    assert calls(guard) == []


@pytest.mark.parametrize("loop", LOOPS)
def test_mimetypes_first_use_reads_files_later_lookups_are_memory(
    loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mimetypes, "inited", False)
    monkeypatch.setattr(mimetypes, "_db", None)
    first = seen(loop, lambda: mimetypes.guess_type("a.html"))
    assert first[:1] == ["mimetypes.init"]
    assert seen(loop, lambda: mimetypes.guess_type("b.css")) == []


@pytest.mark.parametrize("loop", LOOPS)
def test_spooled_temporary_file_rollover(loop: str) -> None:
    def spill() -> None:
        with tempfile.SpooledTemporaryFile(max_size=10) as spooled:
            spooled.write(b"small")
            spooled.write(b"x" * 100)

    def stays_in_memory() -> None:
        with tempfile.SpooledTemporaryFile(max_size=1000) as spooled:
            spooled.write(b"small")
            spooled.seek(0)
            spooled.read()

    assert seen(loop, spill)[:1] == ["tempfile.SpooledTemporaryFile.rollover"]
    assert seen(loop, stays_in_memory) == []


@pytest.mark.parametrize("loop", LOOPS)
def test_shutil_copies_and_glob(loop: str, tmp_path: Path) -> None:
    source = tmp_path / "a.txt"
    source.write_text("x")
    assert seen(loop, lambda: shutil.copy(source, tmp_path / "b.txt"))[:1] == ["shutil.copy"]
    assert seen(loop, lambda: glob.glob(str(tmp_path / "*.txt")))[:1] == ["glob.glob"]
    assert "os.scandir" in seen(loop, lambda: list(tmp_path.glob("*.txt")))


@pytest.mark.parametrize("loop", LOOPS)
def test_metadata_scans_are_reported_imports_are_not(loop: str) -> None:
    assert seen(loop, lambda: importlib.metadata.version("wrapt")) != []
    assert seen(loop, lambda: importlib.import_module("json.decoder")) == []
