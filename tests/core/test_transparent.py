"""Every wrapper pickles by reference and copies to itself; process pools take patched functions."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import functools
import http.client
import multiprocessing
import os
import pickle
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

import blockbuster_lite as bl
from blockbuster_lite.core.patcher import patcher
from blockbuster_lite.core.transparent import Wrapper

assert psycopg2 and sqlite3 and http.client  # imported so that their targets are patched too

PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


@pytest.fixture
def active() -> Iterator[bl.Guard]:
    with bl.intercept("warn") as guard:
        yield guard


def installed() -> list[Any]:
    """(target call, the object its name gives) for every name patched right now."""
    return [(a.target.call, getattr(a.owner, a.name)) for a in list(patcher._applied.values())]


def test_every_wrapper_pickles_to_the_object_at_its_name(active: bl.Guard) -> None:
    replacements = installed()
    assert len(replacements) > 100
    for call, replacement in replacements:
        for protocol in PROTOCOLS:
            restored = pickle.loads(pickle.dumps(replacement, protocol))
            # a classmethod gives a new bound method at each look-up: equal, not the same
            assert restored is replacement or restored == replacement, (call, protocol)
            assert type(restored) is type(replacement), (call, protocol)


def test_every_wrapper_copies_to_itself(active: bl.Guard) -> None:
    for call, replacement in installed():
        assert copy.copy(replacement) is replacement, call
        assert copy.deepcopy(replacement) is replacement, call
        assert copy.deepcopy({"f": replacement})["f"] is replacement, call


def test_a_wrapper_pickles_exactly_as_the_original_does() -> None:
    originals = {name: pickle.dumps(getattr(time, name)) for name in ("sleep",)}
    originals["getaddrinfo"] = pickle.dumps(socket.getaddrinfo)
    with bl.intercept("raise"):
        assert isinstance(time.sleep, Wrapper)
        assert pickle.dumps(time.sleep) == originals["sleep"]
        assert pickle.dumps(socket.getaddrinfo) == originals["getaddrinfo"]


def test_a_wrapper_kept_after_deactivation_unpickles_to_the_original() -> None:
    original = time.sleep
    with bl.intercept("raise"):
        kept = time.sleep
        assert kept is not original
    assert pickle.loads(pickle.dumps(kept)) is original
    assert copy.copy(kept) is kept
    assert repr(kept) == repr(original)


def test_wrappers_keep_the_originals_name_doc_signature_and_repr(active: bl.Guard) -> None:
    import inspect

    for function, name in ((time.sleep, "sleep"), (subprocess.run, "run")):
        original = function.__wrapped__
        assert function.__name__ == name and function.__doc__ == original.__doc__
        assert function.__module__ == original.__module__
        assert repr(function) == repr(original)
    assert inspect.signature(subprocess.run) == inspect.signature(subprocess.run.__wrapped__)


def test_method_replacements_pickle_by_their_installed_name(active: bl.Guard) -> None:
    send = socket.socket.send
    assert type(send).__name__ == "function"
    for protocol in PROTOCOLS:
        assert pickle.loads(pickle.dumps(send, protocol)) is send
    request = http.client.HTTPConnection.request
    assert pickle.loads(pickle.dumps(request)) is request


def test_bound_methods_pickle_like_bound_methods(active: bl.Guard) -> None:
    sock = socket.socket()
    try:
        for bound in (sock.send, sock.recv):
            with pytest.raises(TypeError, match="cannot pickle 'socket' object"):
                pickle.dumps(bound)
        assert copy.copy(sock.send) == sock.send
    finally:
        sock.close()


# -- process pools ---------------------------------------------------------------------------

MODES = ("raise", "warn", "log", "offload")
START_METHODS = ("fork", "spawn")


def _pool(method: str) -> concurrent.futures.ProcessPoolExecutor:
    return concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context(method))


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("mode", MODES)
def test_a_process_pool_runs_patched_functions_in_every_mode(mode: str, method: str) -> None:
    pool = _pool(method)
    try:
        assert pool.submit(pow, 2, 2).result() == 4  # the worker exists before the loop runs

        async def main() -> list[Any]:
            loop = asyncio.get_running_loop()
            return [
                await loop.run_in_executor(pool, time.sleep, 0),
                await asyncio.wrap_future(pool.submit(functools.partial(time.sleep, 0))),
                await loop.run_in_executor(pool, os.path.exists, "/"),
                await loop.run_in_executor(pool, socket.getaddrinfo, "127.0.0.1", 80),
            ]

        with bl.intercept(mode) as guard:
            assert isinstance(time.sleep, Wrapper)
            results = asyncio.run(main())
            assert pool.submit(time.sleep, 0).result() is None  # and from sync code
        assert results[:3] == [None, None, True] and results[3]
        assert guard.violations == []
    finally:
        pool.shutdown()


@pytest.mark.parametrize("method", START_METHODS)
def test_multiprocessing_pool_and_process_take_patched_functions(method: str) -> None:
    context = multiprocessing.get_context(method)
    with bl.intercept("raise"):
        with context.Pool(1) as pool:
            assert pool.map(time.sleep, [0, 0]) == [None, None]
            assert pool.apply(os.path.isdir, ("/",)) is True
        process = context.Process(target=time.sleep, args=(0,))
        process.start()
        process.join(30)
        assert process.exitcode == 0


def test_the_receiver_gets_its_own_object_at_that_name(tmp_path: Any) -> None:
    """A pickle made while patched unpickles to the plain function where nothing is patched."""
    with bl.intercept("raise"):
        data = pickle.dumps([time.sleep, socket.socket.send, sqlite3.connect])
    script = textwrap.dedent(f"""
        import pickle, socket, sqlite3, sys, time
        loaded = pickle.loads({data!r})
        assert loaded == [time.sleep, socket.socket.send, sqlite3.connect], loaded
        assert "blockbuster_lite" not in sys.modules
    """)
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONPATH": ""})


@pytest.mark.parametrize("mode", MODES)
def test_anyio_to_process_takes_patched_functions(mode: str) -> None:
    import anyio
    import anyio.to_process

    async def main() -> list[Any]:
        return [
            await anyio.to_process.run_sync(time.sleep, 0),
            await anyio.to_process.run_sync(os.path.isdir, "/"),
        ]

    with bl.intercept(mode) as guard:
        assert anyio.run(main) == [None, True]
    assert guard.violations == []


def test_an_original_builtin_captured_before_activation_still_pickles() -> None:
    import copyreg
    import types

    before = dict(copyreg.dispatch_table)
    original, delayed = time.sleep, functools.partial(time.sleep, 0)
    with bl.intercept("raise"):
        assert time.sleep is not original
        for protocol in PROTOCOLS:
            assert pickle.loads(pickle.dumps(original, protocol)) is time.sleep
            assert pickle.loads(pickle.dumps(delayed, protocol)).func is time.sleep
        assert pickle.loads(pickle.dumps(len)) is len  # other built-ins pickle as ever
        assert pickle.dumps(os.getpid) == pickle.dumps(os.getpid.__self__.getpid)
    assert copyreg.dispatch_table == before
    assert types.BuiltinFunctionType not in copyreg.dispatch_table
    assert pickle.loads(pickle.dumps(delayed)).func is original


def test_an_original_builtin_pickles_into_a_process_pool_while_patched() -> None:
    delayed = functools.partial(time.sleep, 0)
    with _pool("spawn") as pool, bl.intercept("raise"):
        assert pool.submit(delayed).result() is None
