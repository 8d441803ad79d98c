"""Objects created before activation, held by a module global or a class attribute."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import LOOPS, call_on, calls, write_module

import blockbuster_lite as bl

SOURCE = """
    import threading
    LOCK = threading.Lock()
    RLOCK = threading.RLock()

    class Cache:
        lock = threading.Lock()

    def take(lock):
        with lock:
            pass
"""


@pytest.fixture
def made_early(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    return write_module(tmp_path, "made_early", SOURCE, monkeypatch)


def held_elsewhere(lock: Any) -> tuple[threading.Event, threading.Thread]:
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            taken.set()
            done.wait(5)

    thread = threading.Thread(target=hold)
    thread.start()
    taken.wait(5)
    return done, thread


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("name", ["LOCK", "RLOCK", "Cache.lock"])
def test_a_contended_lock_made_before_activation_is_caught(
    loop: str, name: str, made_early: Any
) -> None:
    original = made_early.LOCK if name == "LOCK" else made_early.RLOCK
    if name == "Cache.lock":
        original = made_early.Cache.lock
    done, thread = held_elsewhere(original)  # the raw lock: the proxy shares its state
    try:
        with bl.intercept("log") as guard:

            def take() -> None:
                threading.Timer(0.02, done.set).start()
                lock = made_early.Cache.lock if name == "Cache.lock" else getattr(made_early, name)
                made_early.take(lock)

            call_on(loop, take)
    finally:
        done.set()
        thread.join()
    assert calls(guard) == ["threading.RLock.acquire" if name == "RLOCK" else "threading.Lock.acquire"]


@pytest.mark.parametrize("loop", LOOPS)
def test_an_uncontended_lock_made_before_activation_is_clean(loop: str, made_early: Any) -> None:
    with bl.intercept("raise") as guard:
        call_on(loop, lambda: [made_early.take(made_early.LOCK), made_early.take(made_early.RLOCK)])
    assert calls(guard) == []


def test_the_proxy_shares_the_lock_and_the_original_comes_back(made_early: Any) -> None:
    original = made_early.LOCK
    with bl.intercept("log"):
        assert made_early.LOCK is not original
        assert isinstance(made_early.LOCK, type(original))
        with made_early.LOCK:
            assert original.locked()
        assert not original.locked()
    assert made_early.LOCK is original
    assert made_early.Cache.lock.__class__ is type(original)


SQLITE_SOURCE = """
    import sqlite3
    DB = sqlite3.connect(":memory:", check_same_thread=False)
    DB.execute("create table t (x)")

    class Settings:
        db = DB
"""


@pytest.fixture
def settings_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    module = write_module(tmp_path, "settings_early", SQLITE_SOURCE, monkeypatch)
    yield module
    module.DB.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_a_sqlite_connection_made_before_activation_is_checked(
    loop: str, settings_module: Any
) -> None:
    original = settings_module.DB
    with bl.intercept("log") as guard:

        def query() -> None:
            settings_module.DB.execute("insert into t values (1)")
            settings_module.DB.commit()
            settings_module.Settings.db.cursor().execute("select x from t").fetchall()

        call_on(loop, query)
        assert isinstance(settings_module.DB, type(original))
        settings_module.DB.row_factory = None  # attributes reach the real connection
    assert settings_module.DB is original
    assert calls(guard) == [
        "sqlite3.Cursor.execute(INSERT ...)", "sqlite3.Connection.commit",
        "sqlite3.Cursor.execute(SELECT ...)", "sqlite3.Cursor.fetchall",
    ]  # fmt: skip


def test_a_sqlite_connection_made_before_activation_off_the_loop_is_clean(
    settings_module: Any,
) -> None:
    with bl.intercept("raise") as guard:
        settings_module.DB.execute("select 1").fetchall()
    assert calls(guard) == []
