"""Reading another thread's frame locals only where CPython 3.11 allows it safely."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from blockbuster_lite.watchdog.calls import suspended_locals

ORIGINAL_SLEEP = time.sleep


def _waiting(stop: threading.Event) -> None:
    marker = "waiting in C"  # noqa: F841 - read from the other thread
    while not stop.is_set():
        ORIGINAL_SLEEP(0.005)


def _spinning(stop: threading.Event) -> None:
    marker = "spinning"  # noqa: F841
    while not stop.is_set():
        pass


@pytest.fixture
def thread_running() -> Iterator[Callable[[Callable[[threading.Event], None]], Any]]:
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(target: Callable[[threading.Event], None]) -> Any:
        thread = threading.Thread(target=target, args=(stop,), daemon=True)
        threads.append(thread)
        thread.start()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            frame = sys._current_frames().get(thread.ident or 0)
            if frame is not None and frame.f_code is target.__code__:
                return frame
            ORIGINAL_SLEEP(0.001)
        raise AssertionError("the thread never reached its loop")

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)


def test_a_frame_waiting_in_a_c_call_is_read(thread_running: Any) -> None:
    frame = thread_running(_waiting)
    for _ in range(50):  # it sleeps almost all the time: caught in the call nearly always
        frame_locals = suspended_locals(frame)
        if frame_locals is not None:
            assert frame_locals["marker"] == "waiting in C"
            return
        ORIGINAL_SLEEP(0.001)
    raise AssertionError("never found waiting in its call")


def test_a_frame_running_python_code_is_not_read(thread_running: Any) -> None:
    frame = thread_running(_spinning)
    answers = {suspended_locals(frame) is None for _ in range(200)}
    assert answers == {True}  # a busy loop is never at a call instruction


def test_a_callers_frame_is_read_and_our_own_innermost_frames_never(
    thread_running: Any,
) -> None:
    frame = thread_running(_waiting)
    caller = frame.f_back
    assert caller is not None
    assert suspended_locals(caller, innermost=False) is not None
    ours = sys._getframe()  # a frame of this test, outside the package: readable
    assert suspended_locals(ours, innermost=False) is not None
    from blockbuster_lite.watchdog import calls

    package_frame: list[Any] = []

    def inner() -> None:
        package_frame.append(sys._getframe())

    inner.__code__ = inner.__code__.replace(co_filename=calls.__file__)
    inner()
    assert suspended_locals(package_frame[0]) is None
