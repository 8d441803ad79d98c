"""Shared pytest fixtures.

Real database servers (see ``tests/_services.py``), session-scoped and started only
for sessions whose selected tests use them:

* ``postgres``     -> ``PostgresInfo`` (``.dsn`` for psycopg2/psycopg, ``.url``)
* ``redis_server`` -> ``RedisInfo`` (``.host``, ``.port``, ``.url``)
* ``mariadb``      -> ``MySQLInfo`` (``.connect_kwargs`` for pymysql, ``.sqlalchemy_url``)

Once collection is done, every server some selected test needs is started in the
background, in parallel; the fixture then waits for it.  Set
``BLOCKBUSTER_TEST_PG_DSN``, ``BLOCKBUSTER_TEST_REDIS_URL`` or
``BLOCKBUSTER_TEST_MYSQL_URL`` to use an existing server instead.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest
from _services import MySQLInfo, PostgresInfo, RedisInfo, Services

_services = Services()

# fixture name -> server name in ``_services.SERVERS``
_SERVICE_FIXTURES = {"postgres": "postgres", "redis_server": "redis", "mariadb": "mariadb"}


def _sigterm_to_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A plain SIGTERM (e.g. a CI timeout) would skip every teardown and leave the
    # servers running; turn it into Ctrl-C so that fixtures still stop them.
    is_main = threading.current_thread() is threading.main_thread()
    if is_main and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm_to_keyboard_interrupt)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    used = {name for item in session.items for name in getattr(item, "fixturenames", ())}
    _services.prestart(*(server for fx, server in _SERVICE_FIXTURES.items() if fx in used))


def pytest_sessionfinish(session: pytest.Session) -> None:
    _services.stop_all()  # servers started but never reached (e.g. after -x)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    times = _services.startup_times()
    if times:
        shown = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in times.items())
        terminalreporter.write_line(f"test servers: started {shown}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresInfo]:
    try:
        yield _services.postgres()
    finally:
        _services.stop("postgres")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisInfo]:
    try:
        yield _services.redis()
    finally:
        _services.stop("redis")


@pytest.fixture(scope="session")
def mariadb() -> Iterator[MySQLInfo]:
    try:
        yield _services.mariadb()
    finally:
        _services.stop("mariadb")


@pytest.fixture(autouse=True)
def _process_state_left_as_found() -> Iterator[None]:
    """Every test leaves the guards, the patch count and every patched name as it found them.

    A test that leaks a guard fails here, and the leaked guards are stopped so that the tests
    after it start clean.
    """
    from helpers import process_state, restore_process_state

    before = process_state()
    yield
    problems = restore_process_state(before)
    assert not problems, "; ".join(problems)
