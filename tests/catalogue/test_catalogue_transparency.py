"""Checked proxies and subclasses of C objects copy, pickle, print, compare and hash as the object.

Where the original refuses (a lock, a connection, a file), the checked one refuses with the same
exception type and message.
"""

from __future__ import annotations

import copy
import pickle
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.extras
import pytest
from _services import PostgresInfo

import blockbuster_lite as bl
from blockbuster_lite.catalogue.threads import _CheckedLock
from blockbuster_lite.offload.files import OffloadingFile

COPIERS: dict[str, Callable[[Any], Any]] = {
    "copy": copy.copy,
    "deepcopy": copy.deepcopy,
    "pickle": pickle.dumps,
    "pickle-0": lambda obj: pickle.dumps(obj, 0),
    "reduce": lambda obj: obj.__reduce_ex__(2),
}


def refusal(copier: Callable[[Any], Any], obj: Any) -> tuple[type[BaseException], str] | None:
    try:
        copier(obj)
    except Exception as exc:
        return type(exc), str(exc)
    return None


def without_addresses(text: str) -> str:
    return re.sub(r"0x[0-9a-f]+", "0x?", text)


def assert_behaves_like(checked: Any, original: Any) -> None:
    assert type(checked) is not type(original) or checked is not original
    refused = 0
    for name, copier in COPIERS.items():
        expected = refusal(copier, original)
        refused += expected is not None
        assert refusal(copier, checked) == expected, name
    assert refused >= len(COPIERS) - 1  # (protocol 0 pickles some, and then pickles ours too)
    assert without_addresses(repr(checked)) == without_addresses(repr(original))
    assert checked == checked and checked != original and hash(checked) == hash(checked)
    assert isinstance(checked, type(original))


@pytest.fixture
def guard() -> Iterator[bl.Guard]:
    with bl.intercept("raise") as guard:
        yield guard


@pytest.mark.parametrize("factory", ["Lock", "RLock"])
def test_locks_copy_pickle_and_print_like_locks(factory: str, guard: bl.Guard) -> None:
    make = getattr(threading, factory)
    checked = make()
    assert issubclass(type(checked), _CheckedLock)
    original = make.__wrapped__()
    assert_behaves_like(checked, original)
    with checked:
        assert without_addresses(repr(checked)) == without_addresses(repr(_held(original)))
    assert refusal(pickle.dumps, checked) == (
        TypeError,
        f"cannot pickle '_thread.{'lock' if factory == 'Lock' else 'RLock'}' object",
    )


def _held(lock: Any) -> Any:
    lock.acquire()
    return lock


def test_the_lock_factories_have_the_originals_names(guard: bl.Guard) -> None:
    lock, rlock = threading.Lock, threading.RLock
    originals = lock.__wrapped__, rlock.__wrapped__
    assert (lock.__name__, lock.__qualname__, lock.__module__) == ("allocate_lock",) * 2 + (
        "_thread",
    )
    for factory, original in zip((lock, rlock), originals, strict=True):
        assert (factory.__name__, factory.__qualname__, factory.__module__, factory.__doc__) == (
            original.__name__, original.__qualname__, original.__module__, original.__doc__,
        )  # fmt: skip
        assert copy.copy(factory) is factory and copy.deepcopy(factory) is factory
        assert pickle.loads(pickle.dumps(factory)) is factory  # the receiver's threading.Lock


def test_a_lock_proxy_outlives_the_guard_unchanged() -> None:
    with bl.intercept("raise"):
        checked = threading.Lock()
    assert refusal(copy.copy, checked) == (TypeError, "cannot pickle '_thread.lock' object")


# -- sqlite3 -----------------------------------------------------------------------------------


class UserConnection(sqlite3.Connection):
    pass


class ReducibleConnection(sqlite3.Connection):
    """A factory that knows how to pickle itself: by its database name."""

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self.database = database

    def __reduce__(self) -> Any:
        return ReducibleConnection, (self.database,)


@pytest.mark.parametrize("factory", [sqlite3.Connection, UserConnection])
def test_sqlite3_connections_and_cursors_refuse_like_the_originals(
    factory: type, guard: bl.Guard
) -> None:
    original = sqlite3.connect.__wrapped__(":memory:", factory=factory)
    with bl.allow_blocking():
        checked = sqlite3.connect(":memory:", factory=factory)
    assert type(checked) is not type(original)
    assert_behaves_like(checked, original)
    assert_behaves_like(checked.cursor(), original.cursor())
    # a bound method pickles its instance
    assert refusal(pickle.dumps, checked.execute) == refusal(pickle.dumps, original.execute)
    if factory is sqlite3.Connection:
        assert refusal(pickle.dumps, checked) == (
            TypeError, "cannot pickle 'sqlite3.Connection' object"
        )  # fmt: skip
    checked.close()
    original.close()


@pytest.mark.parametrize("factory", [sqlite3.Connection, UserConnection, ReducibleConnection])
def test_sqlite3_checked_classes_pickle_as_the_class_they_stand_for(
    factory: type, guard: bl.Guard
) -> None:
    with bl.allow_blocking():
        connection = sqlite3.connect(":memory:", factory=factory)
    for checked, original in (
        (type(connection), factory),
        (type(connection.cursor()), sqlite3.Cursor),
    ):
        assert checked is not original and issubclass(checked, original)
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            assert pickle.loads(pickle.dumps(checked, protocol)) is original
        assert copy.copy(checked) is checked and copy.deepcopy(checked) is checked
        assert repr(checked) == repr(original)
    connection.close()


def test_a_sqlite3_factorys_own_reduce_is_kept_and_unpickles_to_its_class(
    guard: bl.Guard,
) -> None:
    with bl.allow_blocking():
        checked = sqlite3.connect(":memory:", factory=ReducibleConnection)
    assert type(checked) is not ReducibleConnection
    with bl.allow_blocking():
        restored = pickle.loads(pickle.dumps(checked))
    assert type(restored) is ReducibleConnection and restored.database == ":memory:"
    checked.close()
    restored.close()


# -- psycopg2 ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory", [None, psycopg2.extras.DictConnection], ids=["connection", "DictConnection"]
)
def test_psycopg2_connections_and_cursors_refuse_like_the_originals(
    postgres: PostgresInfo, factory: Any, guard: bl.Guard
) -> None:
    original = psycopg2.connect.__wrapped__(postgres.dsn, connection_factory=factory)
    with bl.allow_blocking():
        checked = psycopg2.connect(postgres.dsn, connection_factory=factory)
    try:
        assert type(checked) is not type(original)
        assert_behaves_like(checked, original)
        assert_behaves_like(checked.cursor(), original.cursor())
        for name, copier in COPIERS.items():
            assert refusal(copier, checked.commit) == refusal(copier, original.commit), name
        for cls, original_cls in (
            (type(checked), type(original)),
            (type(checked.cursor()), type(original.cursor())),
        ):
            assert pickle.loads(pickle.dumps(cls)) is original_cls
    finally:
        checked.close()
        original.close()


# -- files opened by an offloaded open() --------------------------------------------------------


@pytest.mark.parametrize("mode", ["r", "rb", "w", "wb"])
def test_an_offloading_file_copies_pickles_and_prints_like_the_file(
    tmp_path: Path, mode: str
) -> None:
    path = tmp_path / "data"
    path.write_bytes(b"x")
    with open(path, mode) as original, open(path, mode) as raw:
        checked = OffloadingFile(raw)
        for name, copier in COPIERS.items():
            assert refusal(copier, checked) == refusal(copier, original), name
        assert without_addresses(repr(checked)) == without_addresses(repr(original))
        assert isinstance(checked, type(original)) and checked == raw and hash(checked) == hash(raw)
