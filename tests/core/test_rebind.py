"""Names bound before activation are rebound to the wrappers while active, restored after."""

from __future__ import annotations

import builtins
import os
import time
from pathlib import Path

import pytest
from helpers import LOOPS, OFF_LOOP, call_off_loop, call_on, calls, write_module

import blockbuster_lite as bl
from blockbuster_lite.core.rebind import rebinder

SOURCE = """
    import builtins, os, time
    from os import listdir
    from time import sleep
    _sleep = time.sleep
    open_ = builtins.open

    class Sleeper:
        sleeper = staticmethod(time.sleep)
        nap = time.sleep
        lister = staticmethod(listdir)

    def all_kinds(path):
        sleep(0.001)
        _sleep(0.001)
        Sleeper.sleeper(0.001)
        Sleeper().nap(0.001)
        listdir(path)
        Sleeper.lister(path)
        with open_(path + "/f.txt") as f:
            f.read()
"""

EXPECTED = ["time.sleep"] * 4 + ["os.listdir"] * 2 + ["open"]


@pytest.fixture
def early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> object:
    (tmp_path / "f.txt").write_text("x")
    return write_module(tmp_path / "src", "early_binder", SOURCE, monkeypatch)


@pytest.fixture(autouse=True)
def _src(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()


@pytest.mark.parametrize("loop", LOOPS)
def test_names_bound_before_activation_are_caught(loop: str, early: object, tmp_path: Path) -> None:
    with bl.intercept("log") as guard:
        call_on(loop, lambda: early.all_kinds(str(tmp_path)))  # type: ignore[attr-defined]
    assert calls(guard)[: len(EXPECTED)] == EXPECTED


@pytest.mark.parametrize("where", OFF_LOOP[:3])
def test_rebound_names_off_the_loop_stay_clean(where: str, early: object, tmp_path: Path) -> None:
    with bl.intercept("raise") as guard:
        call_off_loop(where, lambda: early.all_kinds(str(tmp_path)))  # type: ignore[attr-defined]
    assert calls(guard) == []


def test_originals_are_back_after_the_last_deactivate(early: object) -> None:
    with bl.intercept("log"):
        assert early.sleep is not time.sleep.__wrapped__  # type: ignore[attr-defined]
        with bl.intercept("raise"):
            pass
        assert early.sleep is time.sleep  # type: ignore[attr-defined]
    assert early.sleep is time.sleep  # type: ignore[attr-defined]
    assert early._sleep is time.sleep  # type: ignore[attr-defined]
    assert early.open_ is builtins.open  # type: ignore[attr-defined]
    assert early.listdir is os.listdir  # type: ignore[attr-defined]
    assert vars(early.Sleeper)["sleeper"].__func__ is time.sleep  # type: ignore[attr-defined]
    assert vars(early.Sleeper)["nap"] is time.sleep  # type: ignore[attr-defined]
    assert rebinder.swaps == []


def test_a_later_assignment_by_the_user_is_kept(early: object) -> None:
    def mine(seconds: float) -> None:
        pass

    with bl.intercept("log"):
        early.sleep = mine  # type: ignore[attr-defined]
    assert early.sleep is mine  # type: ignore[attr-defined]
    assert early._sleep is time.sleep  # type: ignore[attr-defined]


def test_a_module_imported_while_active_binds_the_wrapper_and_gets_the_original_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with bl.intercept("log") as guard:
        late = write_module(tmp_path / "src", "late_binder", SOURCE, monkeypatch)
        (tmp_path / "f.txt").write_text("x")
        call_on("asyncio", lambda: late.all_kinds(str(tmp_path)))  # type: ignore[attr-defined]
    assert calls(guard)[: len(EXPECTED)] == EXPECTED
    assert late.sleep is time.sleep  # type: ignore[attr-defined]
    assert vars(late.Sleeper)["sleeper"].__func__ is time.sleep  # type: ignore[attr-defined]


def test_stdlib_and_this_package_are_never_rebound() -> None:
    import socket
    import threading

    with bl.intercept("log"):
        assert threading._allocate_lock is threading._allocate_lock  # type: ignore[attr-defined]
        assert socket.getaddrinfo.__module__ == "socket"
        assert not any(
            getattr(swap.holder, "get", lambda name: None)("__name__", "").startswith(
                ("blockbuster_lite", "threading", "os", "socket", "asyncio", "importlib")
            )
            for swap in rebinder.swaps
            if isinstance(swap.holder, dict)
        )


def test_reactivation_rebinds_again(early: object, tmp_path: Path) -> None:
    for _ in range(3):
        with bl.intercept("log") as guard:
            call_on("asyncio", lambda: early.all_kinds(str(tmp_path)))  # type: ignore[attr-defined]
        assert calls(guard)[: len(EXPECTED)] == EXPECTED
        assert early.sleep is time.sleep  # type: ignore[attr-defined]
