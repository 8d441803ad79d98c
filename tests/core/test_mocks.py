"""Mocks and the patcher: a wrapper a mock puts back after the last guard is inert, and a later
activation neither wraps it again nor leaves it behind; a user's mock is called and kept."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
import time
import types
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from helpers import call_on, temporary_targets

import blockbuster_lite as bl
from blockbuster_lite.catalogue.threads import _CheckedLock
from blockbuster_lite.core.targets import Target
from blockbuster_lite.core.transparent import Wrapper

MODULE = "bbl_test_mocked"
predicate_calls: list[str] = []


def _counting(name: str) -> Any:
    def predicate(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        predicate_calls.append(name)
        return True

    return predicate


@pytest.fixture
def mocked_module() -> Iterator[types.ModuleType]:
    """A module with a function and a method, each a target whose predicate counts its calls."""
    module = types.ModuleType(MODULE)

    def work() -> str:
        return "worked"

    class Box:
        def get(self) -> str:
            return "got"

    module.work, module.Box = work, Box  # type: ignore[attr-defined]
    work.__module__ = Box.__module__ = MODULE
    Box.get.__module__ = MODULE
    sys.modules[MODULE] = module
    targets = (
        Target(MODULE, "work", f"{MODULE}.work", _counting("work")),
        Target(MODULE, "Box.get", f"{MODULE}.Box.get", _counting("get")),
    )
    predicate_calls.clear()
    try:
        with temporary_targets(*targets):
            yield module
    finally:
        del sys.modules[MODULE]


def leave_behind(owner: Any, name: str) -> Any:
    """mock.patch started while active, stopped after the last guard: our wrapper is put back."""
    bl.activate("raise")
    wrapper = getattr(owner, name) if not isinstance(owner, type) else vars(owner)[name]
    patch = mock.patch.object(owner, name)
    patch.start()
    bl.deactivate()
    patch.stop()
    return wrapper


def test_a_function_wrapper_put_back_by_a_mock_is_inert(mocked_module: Any) -> None:
    original = mocked_module.work
    work = leave_behind(mocked_module, "work")
    assert mocked_module.work is work and work is not original
    assert call_on("asyncio", mocked_module.work) == "worked"  # raise mode is over: no error
    assert predicate_calls == []  # checked nothing
    # the next activation takes the original back from it: one wrapper, restored exactly after
    with bl.intercept("raise"):
        assert mocked_module.work is work and work.__wrapped__ is original
        with pytest.raises(bl.BlockingCallError):
            call_on("asyncio", mocked_module.work)
    assert predicate_calls and set(predicate_calls) == {"work"}
    assert mocked_module.work is original


def test_a_method_replacement_put_back_by_a_mock_is_inert(mocked_module: Any) -> None:
    box = mocked_module.Box
    original = vars(box)["get"]
    get = leave_behind(box, "get")
    assert vars(box)["get"] is get and get is not original
    assert call_on("asyncio", lambda: box().get()) == "got"
    assert predicate_calls == []
    with bl.intercept("raise"):
        assert vars(box)["get"] is get
        with pytest.raises(bl.BlockingCallError):
            call_on("asyncio", lambda: box().get())
    assert vars(box)["get"] is original


def test_an_activation_after_a_left_behind_wrapper_leaves_nothing_behind(
    mocked_module: Any,
) -> None:
    original = mocked_module.work
    leave_behind(mocked_module, "work")
    bl.activate("warn")
    bl.deactivate()
    assert mocked_module.work is original


def test_time_sleep_put_back_by_a_mock_is_inert_and_later_restored() -> None:
    original = time.sleep
    left = leave_behind(time, "sleep")
    assert time.sleep is left and isinstance(left, Wrapper)
    call_on("asyncio", lambda: time.sleep(0.001))  # no guard: nothing raised
    with bl.intercept("raise"):
        assert time.sleep is left and time.sleep.__wrapped__ is original
        with pytest.raises(bl.BlockingCallError):
            call_on("asyncio", lambda: time.sleep(0.001))
    assert time.sleep is original


@pytest.mark.parametrize("name", ["Lock", "RLock"])
def test_a_lock_factory_put_back_by_a_mock_makes_plain_locks(name: str) -> None:
    original = getattr(threading, name)
    factory = leave_behind(threading, name)
    assert getattr(threading, name) is factory and factory is not original
    assert not isinstance(getattr(threading, name)(), _CheckedLock)
    with bl.intercept("raise"):
        assert getattr(threading, name) is factory
        assert isinstance(getattr(threading, name)(), _CheckedLock)
    assert getattr(threading, name) is original


def test_sqlite3_connect_put_back_by_a_mock_makes_plain_connections() -> None:
    original = sqlite3.connect
    connect = leave_behind(sqlite3, "connect")
    assert sqlite3.connect is connect and connect is not original
    connection = sqlite3.connect(":memory:")
    assert type(connection) is sqlite3.Connection
    connection.close()
    with bl.intercept("raise"):
        assert sqlite3.connect is connect
        with bl.allow_blocking():
            connection = sqlite3.connect(":memory:")
        assert type(connection) is not sqlite3.Connection
        connection.close()
    assert sqlite3.connect is original


def test_a_users_mock_set_while_active_is_called_and_kept_by_deactivate() -> None:
    original = time.sleep
    bl.activate("raise")
    try:
        with mock.patch("time.sleep") as sleep:

            async def main() -> None:
                time.sleep(5)

            asyncio.run(main())
            sleep.assert_called_once_with(5)
            bl.deactivate()
            assert time.sleep is sleep
    finally:
        bl.deactivate()
    assert isinstance(time.sleep, Wrapper)  # put back by the mock: inert until the next guard
    with bl.intercept("raise"):
        pass
    assert time.sleep is original


def test_a_mock_set_before_activation_is_checked_and_restored() -> None:
    original = time.sleep
    with mock.patch("time.sleep") as sleep:
        with bl.intercept("raise"):
            assert time.sleep.__wrapped__ is sleep
            with pytest.raises(bl.BlockingCallError):
                call_on("asyncio", lambda: time.sleep(1))
            time.sleep(2)  # off the loop: the mock is called
        assert time.sleep is sleep
        sleep.assert_called_once_with(2)
    assert time.sleep is original


def test_monkeypatch_inside_a_guard_is_undone_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    original = time.sleep
    calls: list[float] = []
    with bl.intercept("raise"):
        monkeypatch.setattr(time, "sleep", calls.append)
        call_on("asyncio", lambda: time.sleep(3))
        monkeypatch.undo()
    assert calls == [3] and time.sleep is original
