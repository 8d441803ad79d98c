"""Real database servers for the test suite: PostgreSQL, Redis and MariaDB.

Each server runs from its own temporary directory, listens only on 127.0.0.1 on a
free port, and is removed again (processes killed, directory deleted) by ``stop()``.
A start that does not answer within ``START_TIMEOUT`` seconds, or whose binary is
missing, raises :class:`ServiceError` naming the server, the reason and the tail of
its log.  Nothing is ever skipped silently.

:class:`Services` starts each server at most once, in a background thread, so that
several servers start in parallel; ``tests/conftest.py`` wraps it in fixtures.
Environment variables (``BLOCKBUSTER_TEST_PG_DSN``, ``BLOCKBUSTER_TEST_REDIS_URL``,
``BLOCKBUSTER_TEST_MYSQL_URL``) point the suite at existing servers instead.
"""

from __future__ import annotations

import atexit
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote, unquote, urlsplit

HOST = "127.0.0.1"
DATABASE = "blockbuster"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

ENV_PG_DSN = "BLOCKBUSTER_TEST_PG_DSN"
ENV_REDIS_URL = "BLOCKBUSTER_TEST_REDIS_URL"
ENV_MYSQL_URL = "BLOCKBUSTER_TEST_MYSQL_URL"

MYSQL_USER = "blockbuster"
MYSQL_PASSWORD = "blockbuster"


# --------------------------------------------------------------------------- #
# Connection info
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class PostgresInfo:
    """How to reach a PostgreSQL server; ``dsn`` works with psycopg2 and psycopg."""

    dsn: str
    host: str
    port: int
    dbname: str
    user: str

    @property
    def url(self) -> str:
        """``postgresql://`` URL (for SQLAlchemy add a driver: ``postgresql+psycopg``)."""
        return f"postgresql://{quote(self.user)}@{self.host}:{self.port}/{quote(self.dbname)}"

    @classmethod
    def from_dsn(cls, dsn: str) -> PostgresInfo:
        """Build from a libpq DSN (``key=value ...`` or ``postgresql://`` URL)."""
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn)
        return cls(
            dsn=dsn,
            host=str(params.get("host") or HOST),
            port=int(params.get("port") or 5432),
            dbname=str(params.get("dbname") or DATABASE),
            user=str(params.get("user") or "postgres"),
        )


@dataclass(frozen=True)
class RedisInfo:
    """How to reach a Redis server."""

    host: str
    port: int
    url: str

    @classmethod
    def from_url(cls, url: str) -> RedisInfo:
        parts = urlsplit(url)
        return cls(host=parts.hostname or HOST, port=parts.port or 6379, url=url)


@dataclass(frozen=True)
class MySQLInfo:
    """How to reach a MariaDB/MySQL server over TCP."""

    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def url(self) -> str:
        """``mysql://`` URL (for SQLAlchemy use :attr:`sqlalchemy_url`)."""
        auth = quote(self.user, safe="")
        if self.password:
            auth += ":" + quote(self.password, safe="")
        return f"mysql://{auth}@{self.host}:{self.port}/{quote(self.database)}"

    @property
    def sqlalchemy_url(self) -> str:
        return "mysql+pymysql" + self.url[len("mysql") :]

    @property
    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``pymysql.connect``."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "database": self.database,
        }

    @classmethod
    def from_url(cls, url: str) -> MySQLInfo:
        """Build from ``mysql://user:password@host:port/database`` (any ``mysql+driver``)."""
        parts = urlsplit(url)
        return cls(
            host=parts.hostname or HOST,
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.lstrip("/")) or DATABASE,
        )


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #


class ServiceError(RuntimeError):
    """A test server could not be started; the message says which one and why."""

    def __init__(self, service: str, reason: str, *logs: Path) -> None:
        message = f"could not start {service}: {reason}"
        for log in logs:
            tail = _tail(log)
            if tail:
                message += f"\n----- last lines of {log.name} -----\n{tail}"
        super().__init__(message)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


_port_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1, never the same twice in this process."""
    with _port_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((HOST, 0))
                port: int = sock.getsockname()[1]
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise RuntimeError("no free TCP port found on 127.0.0.1")


def _which(*names: str) -> str | None:
    """First of ``names`` found on PATH or in the standard sbin directories."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def _clean_env() -> dict[str, str]:
    """Our environment minus libpq/MySQL variables that could redirect clients."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "MYSQL_", "MARIADB_"))
    }


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.end


def _as_user(user: str | None) -> dict[str, Any]:
    """``Popen`` arguments that run the child as ``user`` (None: as ourselves)."""
    if user is None:
        return {}
    pw = pwd.getpwnam(user)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _run(
    service: str,
    cmd: Sequence[str],
    log: Path,
    deadline: _Deadline,
    cwd: Path,
    *extra_logs: Path,
    user: str | None = None,
) -> None:
    """Run ``cmd`` to completion, appending its output to ``log``; raise on failure."""
    with log.open("ab") as out:
        out.write(f"$ {shlex.join(cmd)}\n".encode())
        out.flush()
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=_clean_env(),
                timeout=max(deadline.remaining(), 1.0),
                check=False,
                **_as_user(user),
            )
        except subprocess.TimeoutExpired:
            raise ServiceError(service, f"{cmd[0]} timed out", log, *extra_logs) from None
        except OSError as exc:
            raise ServiceError(service, f"cannot run {cmd[0]}: {exc}", log) from None
    if proc.returncode != 0:
        raise ServiceError(
            service, f"{shlex.join(cmd)} exited with {proc.returncode}", log, *extra_logs
        )


def _spawn(
    service: str, cmd: Sequence[str], log: Path, cwd: Path, user: str | None = None
) -> subprocess.Popen[bytes]:
    """Start the server ``cmd`` in the background, its output going to ``log``."""
    with log.open("ab") as out:
        out.write(f"$ {shlex.join(cmd)}\n".encode())
        out.flush()
        try:
            return subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=_clean_env(),
                **_as_user(user),
            )
        except OSError as exc:
            raise ServiceError(service, f"cannot run {cmd[0]}: {exc}", log) from None


def _stop_process(
    proc: subprocess.Popen[bytes] | None, sig: signal.Signals = signal.SIGTERM
) -> None:
    """Signal ``proc``, wait for it, and SIGKILL it if it takes too long."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- #
# Servers
# --------------------------------------------------------------------------- #

InfoT = TypeVar("InfoT")

_live_lock = threading.Lock()
_live: set[Server[Any]] = set()


def _stop_live_servers() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        server.stop()


atexit.register(_stop_live_servers)


class Server(ABC, Generic[InfoT]):
    """One server process tree and its temporary directory."""

    name: str

    def __init__(self) -> None:
        self.tmpdir: Path | None = None
        self.port = 0
        self.info: InfoT | None = None
        self.startup_seconds: float | None = None

    def start(self, timeout: float = START_TIMEOUT) -> InfoT:
        """Start the server and wait until it answers; clean up and raise on failure."""
        with _live_lock:
            _live.add(self)
        began = time.monotonic()
        try:
            self.tmpdir = Path(tempfile.mkdtemp(prefix=f"blockbuster-{self.name}-"))
            self.port = free_port()
            self.info = self._start(_Deadline(timeout))
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self.info

    def stop(self) -> None:
        """Kill the server (if running) and delete its directory.  Idempotent."""
        try:
            self._stop()
        finally:
            if self.tmpdir is not None:
                shutil.rmtree(self.tmpdir, ignore_errors=True)
                self.tmpdir = None
            with _live_lock:
                _live.discard(self)

    @property
    def dir(self) -> Path:
        assert self.tmpdir is not None, f"{self.name} is not started"
        return self.tmpdir

    @abstractmethod
    def _start(self, deadline: _Deadline) -> InfoT: ...

    @abstractmethod
    def _stop(self) -> None: ...


class PostgresServer(Server[PostgresInfo]):
    """PostgreSQL via initdb + ``postgres`` in the foreground, as ``postgres`` if we are root.

    The postmaster is our own child process rather than daemonized by ``pg_ctl``: an
    orphaned postmaster would be re-parented to PID 1, which in some containers never
    reaps it, leaving ``<defunct>`` entries behind.
    """

    name = "postgres"

    def __init__(self) -> None:
        super().__init__()
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def find_bindir() -> Path:
        candidates: list[Path] = []
        pg_config = _which("pg_config")
        if pg_config:
            try:
                out = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10
                )
                if out.returncode == 0 and out.stdout.strip():
                    candidates.append(Path(out.stdout.strip()))
            except (OSError, subprocess.TimeoutExpired):
                pass
        versioned = Path("/usr/lib/postgresql").glob("*/bin")
        candidates += sorted(
            versioned,
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        initdb = _which("initdb")
        if initdb:
            candidates.append(Path(initdb).parent)
        for bindir in candidates:
            if all((bindir / exe).is_file() for exe in ("initdb", "postgres", "createdb")):
                return bindir
        raise ServiceError(
            "postgres",
            "PostgreSQL server binaries (initdb, postgres, createdb) not found via "
            "`pg_config --bindir`, /usr/lib/postgresql/*/bin or PATH "
            "(install postgresql-15)",
        )

    def _start(self, deadline: _Deadline) -> PostgresInfo:
        bindir = self.find_bindir()
        tmp = self.dir
        user: str | None = None
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root: hand the directory to `postgres`.
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise ServiceError(
                    "postgres", "running as root but there is no `postgres` user"
                ) from None
            os.chown(tmp, pw.pw_uid, pw.pw_gid)
            user = "postgres"

        data, log, setup_log = tmp / "data", tmp / "postgres.log", tmp / "setup.log"
        initdb = [
            str(bindir / "initdb"),
            f"--pgdata={data}",
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        _run("postgres", initdb, setup_log, deadline, tmp, user=user)
        cmd = [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(self.port),
            "-k",
            str(tmp),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
        self._proc = _spawn("postgres", cmd, log, tmp, user=user)
        while not self._ready(data / "postmaster.pid"):
            if self._proc.poll() is not None:
                raise ServiceError("postgres", f"exited with {self._proc.returncode}", log)
            if deadline.expired():
                raise ServiceError("postgres", f"not ready on port {self.port} in time", log)
            time.sleep(0.02)
        createdb = [
            str(bindir / "createdb"),
            f"--host={HOST}",
            f"--port={self.port}",
            "--username=postgres",
            DATABASE,
        ]
        _run("postgres", createdb, setup_log, deadline, tmp, log)
        return PostgresInfo(
            dsn=f"host={HOST} port={self.port} dbname={DATABASE} user=postgres",
            host=HOST,
            port=self.port,
            dbname=DATABASE,
            user="postgres",
        )

    def _ready(self, pid_file: Path) -> bool:
        """The postmaster says it accepts connections (what ``pg_ctl --wait`` checks)."""
        try:
            lines = pid_file.read_text().splitlines()
        except OSError:
            return False
        assert self._proc is not None
        return len(lines) >= 8 and lines[0] == str(self._proc.pid) and lines[7].strip() == "ready"

    def _stop(self) -> None:
        # SIGQUIT = immediate shutdown: the data directory is thrown away anyway.
        _stop_process(self._proc, signal.SIGQUIT)


class RedisServer(Server[RedisInfo]):
    """``redis-server`` in the foreground, without persistence."""

    name = "redis"

    def __init__(self) -> None:
        super().__init__()
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self, deadline: _Deadline) -> RedisInfo:
        exe = _which("redis-server")
        if exe is None:
            raise ServiceError("redis", "`redis-server` not found (install redis-server)")
        tmp = self.dir
        log = tmp / "redis.log"
        cmd = [
            exe,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(tmp),
        ]
        self._proc = _spawn("redis", cmd, log, tmp)
        while not self._ping():
            if self._proc.poll() is not None:
                raise ServiceError("redis", f"exited with {self._proc.returncode}", log)
            if deadline.expired():
                raise ServiceError("redis", f"no PONG on port {self.port} in time", log)
            time.sleep(0.02)
        return RedisInfo(host=HOST, port=self.port, url=f"redis://{HOST}:{self.port}/0")

    def _ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def _stop(self) -> None:
        _stop_process(self._proc)


class MariaDBServer(Server[MySQLInfo]):
    """MariaDB via mariadb-install-db + mariadbd in the foreground."""

    name = "mariadb"

    def __init__(self) -> None:
        super().__init__()
        self._proc: subprocess.Popen[bytes] | None = None

    def _start(self, deadline: _Deadline) -> MySQLInfo:
        install_db = _which("mariadb-install-db", "mysql_install_db")
        server = _which("mariadbd", "mysqld")
        if install_db is None or server is None:
            raise ServiceError(
                "mariadb",
                "`mariadb-install-db`/`mysql_install_db` or `mariadbd`/`mysqld` not found "
                "(install mariadb-server)",
            )
        tmp = self.dir
        data, log, setup_log = tmp / "data", tmp / "mariadb.err", tmp / "setup.log"
        user = ["--user=root"] if os.geteuid() == 0 else []
        _run(
            "mariadb",
            [
                install_db,
                "--no-defaults",
                f"--datadir={data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *user,
            ],
            setup_log,
            deadline,
            tmp,
        )
        # Runs at start-up, before the first client connection is accepted.
        # (One statement per line: older servers split the init file on lines.)
        init_sql = tmp / "init.sql"
        init_sql.write_text(
            f"CREATE DATABASE IF NOT EXISTS `{DATABASE}`;\n"
            f"CREATE USER IF NOT EXISTS '{MYSQL_USER}'@'{HOST}' "
            f"IDENTIFIED BY '{MYSQL_PASSWORD}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO '{MYSQL_USER}'@'{HOST}' WITH GRANT OPTION;\n"
            f"CREATE USER IF NOT EXISTS 'root'@'{HOST}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO 'root'@'{HOST}' WITH GRANT OPTION;\n"
        )
        cmd = [
            server,
            "--no-defaults",
            f"--datadir={data}",
            f"--socket={tmp / 'mysqld.sock'}",
            f"--pid-file={tmp / 'mysqld.pid'}",
            f"--log-error={log}",
            f"--tmpdir={tmp}",
            f"--init-file={init_sql}",
            f"--port={self.port}",
            f"--bind-address={HOST}",
            "--skip-networking=0",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=32M",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--character-set-server=utf8mb4",
            *user,
        ]
        self._proc = _spawn("mariadb", cmd, setup_log, tmp)
        info = MySQLInfo(
            host=HOST, port=self.port, user=MYSQL_USER, password=MYSQL_PASSWORD, database=DATABASE
        )
        last_error: Exception | None = None
        while True:
            try:
                self._check(info)
                return info
            except Exception as exc:
                last_error = exc
            if self._proc.poll() is not None:
                raise ServiceError(
                    "mariadb", f"exited with {self._proc.returncode}", log, setup_log
                )
            if deadline.expired():
                raise ServiceError(
                    "mariadb", f"not answering on port {self.port}: {last_error!r}", log
                )
            time.sleep(0.05)

    @staticmethod
    def _check(info: MySQLInfo) -> None:
        import pymysql

        conn = pymysql.connect(
            **info.connect_kwargs, connect_timeout=2, read_timeout=2, write_timeout=2
        )
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        finally:
            conn.close()

    def _stop(self) -> None:
        _stop_process(self._proc)


# --------------------------------------------------------------------------- #
# Session-wide manager
# --------------------------------------------------------------------------- #

SERVERS: dict[str, type[Server[Any]]] = {
    "postgres": PostgresServer,
    "redis": RedisServer,
    "mariadb": MariaDBServer,
}


class Services:
    """Start each server at most once (in a background thread) and stop them all.

    ``prestart(...)`` kicks off starts without waiting, so several servers boot in
    parallel; ``postgres()``/``redis()``/``mariadb()`` wait for (or start) one server.
    Servers named in the environment overrides are never started.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self._overrides: dict[str, Any] = {}
        if env.get(ENV_PG_DSN):
            self._overrides["postgres"] = PostgresInfo.from_dsn(env[ENV_PG_DSN])
        if env.get(ENV_REDIS_URL):
            self._overrides["redis"] = RedisInfo.from_url(env[ENV_REDIS_URL])
        if env.get(ENV_MYSQL_URL):
            self._overrides["mariadb"] = MySQLInfo.from_url(env[ENV_MYSQL_URL])
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=len(SERVERS), thread_name_prefix="service")
        self._servers: dict[str, Server[Any]] = {}
        self._futures: dict[str, Future[Any]] = {}

    def prestart(self, *names: str) -> None:
        """Begin starting ``names`` in the background (no-op if started or overridden)."""
        for name in names:
            self._future(name)

    def postgres(self) -> PostgresInfo:
        info: PostgresInfo = self._future("postgres").result()
        return info

    def redis(self) -> RedisInfo:
        info: RedisInfo = self._future("redis").result()
        return info

    def mariadb(self) -> MySQLInfo:
        info: MySQLInfo = self._future("mariadb").result()
        return info

    def startup_times(self) -> dict[str, float]:
        """Seconds each started server took to answer (overridden ones are absent)."""
        with self._lock:
            servers = dict(self._servers)
        return {
            name: server.startup_seconds
            for name, server in servers.items()
            if server.startup_seconds is not None
        }

    def stop(self, name: str) -> None:
        """Stop ``name`` (waiting for a start in progress first) and forget it."""
        with self._lock:
            future = self._futures.pop(name, None)
            server = self._servers.get(name)
        if future is not None:
            future.exception()  # wait; start() cleans up after itself on failure
        if server is not None:
            server.stop()

    def stop_all(self) -> None:
        for name in list(SERVERS):
            self.stop(name)
        self._pool.shutdown(wait=True)

    def _future(self, name: str) -> Future[Any]:
        with self._lock:
            future = self._futures.get(name)
            if future is None:
                if name in self._overrides:
                    future = Future()
                    future.set_result(self._overrides[name])
                else:
                    server = self._servers[name] = SERVERS[name]()
                    future = self._pool.submit(server.start)
                self._futures[name] = future
            return future
