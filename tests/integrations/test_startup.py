"""Zero-code activation (the .pth hook), start-up grace and the exit summary, in real processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from blockbuster_lite.core.config import ConfigError, Mode
from blockbuster_lite.core.report import Violation
from blockbuster_lite.integrations.startup import parse_flag
from blockbuster_lite.integrations.summary import Summary

ENV_PREFIX = "BLOCKBUSTER_LITE_"


def environment(**settings: str) -> dict[str, str]:
    """This environment without inherited BLOCKBUSTER_LITE_* settings, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({ENV_PREFIX + name: value for name, value in settings.items()})
    return env


def run_python(tmp_path: Path, code: str, **settings: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run(
        [sys.executable, "script.py"], cwd=tmp_path, env=environment(**settings),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


BLOCKING_SCRIPT = """
import asyncio, sys, time

async def main():
    try:
        time.sleep(0.01)
    except Exception as exc:
        print(type(exc).__name__, exc)
    print("imported:", "blockbuster_lite" in sys.modules)

asyncio.run(main())
"""


def test_the_hook_is_installed_in_site_packages() -> None:
    hook = Path(sysconfig.get_path("purelib")) / "blockbuster_lite.pth"
    lines = hook.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("import os;")
    assert "BLOCKBUSTER_LITE_MODE" in lines[0]


def test_unset_the_hook_imports_nothing(tmp_path: Path) -> None:
    code = "import sys; print(sorted(m for m in sys.modules if m.startswith(('blockbuster', 'wrapt'))))"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], env=environment(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.stdout.strip() == "[]"
    assert "blockbuster" not in result.stderr


def test_raise_mode_from_the_environment_alone(tmp_path: Path) -> None:
    result = run_python(tmp_path, BLOCKING_SCRIPT, MODE="raise")
    assert "BlockingCallError Blocking call to time.sleep() in async context at script.py:6 " \
        "in main" in result.stdout  # fmt: skip
    assert "imported: True" in result.stdout


@pytest.mark.parametrize("mode", ["off", ""])
def test_off_or_empty_activates_nothing(tmp_path: Path, mode: str) -> None:
    result = run_python(tmp_path, BLOCKING_SCRIPT, MODE=mode)
    assert result.returncode == 0 and result.stderr == ""
    assert "BlockingCallError" not in result.stdout


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"MODE": "strcit"}, "invalid mode 'strcit' from BLOCKBUSTER_LITE_MODE"),
        ({"MODE": "raise", "ALLOW": "a/b.txt"}, "invalid allow rule 'a/b.txt' from BLOCKBUSTER_LITE_ALLOW"),
        ({"MODE": "raise", "WATCHDOG_MS": "soon"}, "from BLOCKBUSTER_LITE_WATCHDOG_MS"),
        ({"MODE": "raise", "STRICT_STARTUP": "maybe"}, "'maybe' from BLOCKBUSTER_LITE_STRICT_STARTUP"),
        ({"MODE": "warn", "SUMMARY": "please"}, "'please' from BLOCKBUSTER_LITE_SUMMARY"),
    ],
    ids=["mode", "allow", "watchdog", "strict-startup", "summary"],
)  # fmt: skip
def test_a_bad_value_is_named_once_and_the_program_runs_unchecked(
    tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    result = run_python(tmp_path, BLOCKING_SCRIPT, **settings)
    assert result.returncode == 0
    assert result.stderr.count("blockbuster_lite: ") == 1, result.stderr
    assert message in result.stderr and "running without the sanitizer" in result.stderr
    assert "BlockingCallError" not in result.stdout


def test_importing_the_middleware_begins_the_grace_and_end_startup_ends_it(
    tmp_path: Path,
) -> None:
    result = run_python(tmp_path, """
        import asyncio, time
        import blockbuster_lite.asgi
        from blockbuster_lite.integrations.startup import end_startup, in_startup

        async def main():
            print("in start-up:", in_startup())
            time.sleep(0.001)  # graced: warned
            end_startup()
            print("in start-up:", in_startup())
            try:
                time.sleep(0.001)
            except Exception as exc:
                print(type(exc).__name__)

        asyncio.run(main())
        """, MODE="raise")  # fmt: skip
    assert result.stdout.split() == ["in", "start-up:", "True", "in", "start-up:", "False",
                                     "BlockingCallError"]  # fmt: skip
    assert "BlockingCallWarning: Blocking call to time.sleep() in async context at script.py:8" \
        in result.stderr  # fmt: skip
    assert "start-up complete; 1 blocking call(s) made during start-up were warned" in result.stderr


def test_summary_at_exit_worst_first(tmp_path: Path) -> None:
    result = run_python(tmp_path, """
        import asyncio, time

        async def main():
            for _ in range(3):
                time.sleep(0.001)
            time.sleep(0.05)

        asyncio.run(main())
        """, MODE="warn", SUMMARY="1")  # fmt: skip
    lines = result.stderr[result.stderr.index("blockbuster_lite summary") :].splitlines()
    assert re.match(r"blockbuster_lite summary \(pid \d+\): 2 call site\(s\) blocked the event "
                    r"loop \(warn mode, 4 checked calls, 0 requests\)", lines[0])  # fmt: skip
    assert lines[1].strip() == "outside any request (start-up, background tasks):"
    assert lines[2].split()[:5] == ["count", "total", "ms", "max", "ms"]
    assert lines[3].split()[0] == "1" and lines[3].endswith("time.sleep() at script.py:7 in main")
    assert lines[4].split()[0] == "3" and lines[4].endswith("time.sleep() at script.py:6 in main")
    assert float(lines[3].split()[1]) >= 50.0  # total ms
    assert float(lines[3].split()[2]) >= 50.0  # max ms


def violation(call: str, lineno: int, duration: float | None, kind: str = "call") -> Violation:
    action = Mode.RAISE if duration is None else Mode.WARN
    return Violation(call, "/app/routes.py", lineno, "handler", action=action,
                     duration_s=duration, kind=kind)  # fmt: skip


def test_summary_aggregates_per_site() -> None:
    summary = Summary()
    for v in [violation("time.sleep", 3, 0.01), violation("time.sleep", 3, 0.03),
              violation("open", 9, None), violation("handler", 5, 0.2, kind="stall")]:  # fmt: skip
        summary(v)
    rows = summary.rows()
    assert [(r.call, r.count) for r in rows] == [("handler", 1), ("time.sleep", 2), ("open", 1)]
    assert rows[1].total_s == pytest.approx(0.04) and rows[1].max_s == pytest.approx(0.03)
    text = summary.render().splitlines()
    assert "stall in handler at /app/routes.py:5 in handler" in text[3]
    assert text[5].split()[:4] == ["1", "-", "-", "-"]  # raise mode: counted, not timed
    summary.print(stream=open(os.devnull, "w"))  # noqa: SIM115
    # each print covers what happened since the last one
    assert summary.render().startswith("blockbuster_lite: no blocking calls on the event loop")


def test_parse_flag() -> None:
    assert parse_flag(" Yes ", "X") is True and parse_flag("", "X") is False
    with pytest.raises(ConfigError, match="'2' from X"):
        parse_flag("2", "X")


# --- real servers -------------------------------------------------------------------------

APP = """
import os
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI

with open(__file__) as source:  # an import-time read: on the loop only in spawned workers
    source.read()


@asynccontextmanager
async def lifespan(app):
    time.sleep(0.001)  # lifespan start-up
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/block")
async def block():
    time.sleep(0.02)
    return {"pid": os.getpid()}
"""
APP_BLOCK_LINE = 23


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    def __init__(self, process: subprocess.Popen[bytes], log: Path, port: int) -> None:
        self.process, self.log, self.port = process, log, port

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}{path}", timeout=10)

    def wait_until_listening(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.output}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"server did not listen in {timeout}s:\n{self.output}")

    def stop(self) -> None:
        """Ctrl-C for the whole process group, as in a terminal; atexit runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@contextmanager
def serve(tmp_path: Path, args: list[str], port: int, **settings: str) -> Iterator[Served]:
    (tmp_path / "app.py").write_text(APP)
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            args, cwd=tmp_path, env=environment(**settings), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    served = Served(process, log, port)
    try:
        yield served
    finally:
        served.stop()


def uvicorn(port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1",
            "--port", str(port), *extra]  # fmt: skip


def test_uvicorn_warn_names_the_app_line_and_summarises(tmp_path: Path) -> None:
    port = free_port()
    with serve(tmp_path, uvicorn(port), port, MODE="warn", SUMMARY="1") as server:
        server.wait_until_listening()
        assert server.get("/block").status_code == 200
        assert server.get("/block").status_code == 200
    out = server.output
    assert f"BlockingCallWarning: Blocking call to time.sleep() in async context at " \
        f"app.py:{APP_BLOCK_LINE} in block" in out  # fmt: skip
    assert re.search(rf"^ +2 .* time\.sleep\(\) at app\.py:{APP_BLOCK_LINE} in block$", out, re.M), out


def test_uvicorn_raise_start_up_is_graced_then_strict(tmp_path: Path) -> None:
    port = free_port()
    with serve(tmp_path, uvicorn(port), port, MODE="raise") as server:
        server.wait_until_listening()
        assert server.get("/block").status_code == 500
    out = server.output
    assert "BlockingCallWarning: Blocking call to time.sleep() in async context at " \
        "app.py:14 in lifespan" in out  # fmt: skip
    assert "start-up complete; 1 blocking call(s) made during start-up were warned" in out
    # zero-code: the app got the middleware, which answers with the JSON 500 and logs the call
    assert f"Blocking call to time.sleep() in async context at app.py:{APP_BLOCK_LINE} in block " \
        "(request GET /block)" in out  # fmt: skip
    assert "[response 500]" in out


def test_uvicorn_strict_start_up_refuses_to_start(tmp_path: Path) -> None:
    port = free_port()
    with serve(tmp_path, uvicorn(port), port, MODE="raise", STRICT_STARTUP="1") as server:
        assert server.process.wait(timeout=30) != 0
    assert "BlockingCallError: Blocking call to time.sleep() in async context at app.py:14 " \
        "in lifespan" in server.output  # fmt: skip


def test_uvicorn_spawned_workers_activate(tmp_path: Path) -> None:
    port = free_port()
    with serve(tmp_path, uvicorn(port, "--workers", "2"), port, MODE="warn") as server:
        server.wait_until_listening()
        pids = {server.get("/block").json()["pid"] for _ in range(6)}
    assert server.process.pid not in pids
    out = server.output
    assert f"in async context at app.py:{APP_BLOCK_LINE} in block" in out
    assert "Blocking call to open() in async context at app.py:8 in <module>" in out


def test_gunicorn_forked_uvicorn_workers_activate(tmp_path: Path) -> None:
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "app:app", "-k", "uvicorn.workers.UvicornWorker",
            "-w", "2", "-b", f"127.0.0.1:{port}"]  # fmt: skip
    with serve(tmp_path, args, port, MODE="warn", SUMMARY="1") as server:
        server.wait_until_listening()
        pids = {server.get("/block").json()["pid"] for _ in range(6)}
    out = server.output
    assert f"in async context at app.py:{APP_BLOCK_LINE} in block" in out
    summarised = {int(pid) for pid in re.findall(r"blockbuster_lite summary \(pid (\d+)\)", out)}
    assert pids <= summarised, out  # each worker that served prints its own summary
    assert not re.search(r"BlockingCallWarning: .* at \S*gunicorn/", out)  # its own machinery


def test_the_start_up_line_and_the_clean_summary(tmp_path: Path) -> None:
    code = "import asyncio\n\nasync def main():\n    await asyncio.sleep(0)\n\nasyncio.run(main())\n"
    result = run_python(tmp_path, code, MODE="warn")
    lines = result.stderr.splitlines()
    assert re.fullmatch(r"blockbuster_lite: active from BLOCKBUSTER_LITE_MODE \(warn mode, \d+ of "
                        r"\d+ functions patched, the rest when their module is imported, watchdog "
                        r"off, ASGI apps of uvicorn/hypercorn instrumented when loaded, summary at "
                        r"exit\)", lines[0]), lines  # fmt: skip
    assert lines[-1] == "blockbuster_lite: no blocking calls on the event loop (warn mode, 0 " \
        "checked calls, 0 requests)"  # fmt: skip
    quiet = run_python(tmp_path, code, MODE="warn", SUMMARY="0", ASGI="0")
    assert "no blocking calls" not in quiet.stderr
    assert "ASGI" not in quiet.stderr and "summary at exit" not in quiet.stderr


def test_summary_groups_requests_outside_and_offloaded() -> None:
    summary = Summary()
    request = {"method": "GET", "path": "/items/1", "route": "/items/{id}"}
    other = {"method": "POST", "path": "/orders", "route": "/orders"}
    for v in [
        Violation("time.sleep", "/app/routes.py", 3, "get", action=Mode.WARN, duration_s=0.01,
                  context=request),
        Violation("time.sleep", "/app/routes.py", 3, "get", action=Mode.WARN, duration_s=0.03,
                  context=other),
        Violation("time.sleep", "/app/routes.py", 3, "get", action=Mode.WARN, duration_s=0.02,
                  context=request),
        Violation("open", "/app/main.py", 1, "<module>", action=Mode.WARN, duration_s=0.5),
        Violation("os.stat", "/app/routes.py", 9, "get", action=Mode.OFFLOAD, duration_s=0.2,
                  context=request),
    ]:  # fmt: skip
        summary(v)
    text = summary.render().splitlines()
    assert "2 call site(s) blocked the event loop, 1 offloaded" in text[0]
    assert [line.strip() for line in text if line.endswith(":")] == [
        "during requests:", "outside any request (start-up, background tasks):",
        "offloaded to worker threads (time = loop time saved, not blocked):",
    ]  # fmt: skip
    request_row = next(line for line in text if "time.sleep()" in line)
    assert request_row.split()[:5] == ["3", "60.0", "30.0", "GET", "/items/{id}"]
    assert "(+1)" in request_row  # POST /orders too
    assert next(line for line in text if "saved ms" in line)
    assert next(line for line in text if "os.stat()" in line).split()[:3] == ["1", "200.0", "200.0"]
