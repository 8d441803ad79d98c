"""The examples, run as the README says: the uvicorn command with the environment variable."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
_RUNNING = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


def _uvicorn() -> list[str]:
    script = Path(sys.executable).with_name("uvicorn")
    return [str(script)] if script.exists() else [sys.executable, "-m", "uvicorn"]


def line_of(path: Path, marker: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} not in {path}")


class Uvicorn:
    """``MODE=... uvicorn APP`` from the repository root; ``.log`` is its stderr so far."""

    def __init__(self, app: str, mode: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKBUSTER_LITE_")}
        env.update(BLOCKBUSTER_LITE_MODE=mode, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [*_uvicorn(), app, "--host", "127.0.0.1", "--port", "0"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            found = _RUNNING.search(line)
            if found:
                self.port = int(found.group(1))
                self._ready.set()
        self._ready.set()

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self) -> str:
        self._ready.wait(30)
        assert self.port is not None, f"uvicorn did not start:\n{self.log}"
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(10)
        return self.log


@contextlib.contextmanager
def running(app: str, mode: str) -> Iterator[tuple[httpx.Client, Uvicorn]]:
    server = Uvicorn(app, mode)
    try:
        with httpx.Client(base_url=server.wait_ready(), timeout=10) as client:
            yield client, server
    finally:
        server.stop()


def test_dev_app_in_warn_mode_names_each_blocking_line_once() -> None:
    source = EXAMPLES / "dev_app.py"
    with running("examples.dev_app:app", "warn") as (client, server):
        responses = [client.get("/profile/42") for _ in range(3)]
        fixed = client.get("/profile/42/fixed")
    log = server.log
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert responses[0].json() == {"name": "user-42", "theme": "dark"}
    assert fixed.json() == {"name": "user-42", "theme": "dark"}
    warnings = [line for line in log.splitlines() if "BlockingCallWarning: " in line]
    open_site = f"examples/dev_app.py:{line_of(source, 'with open(SETTINGS')}"
    read_site = f"examples/dev_app.py:{line_of(source, 'json.load(file)')}"
    sleep_site = f"examples/dev_app.py:{line_of(source, 'time.sleep(0.05)')}"
    assert len(warnings) == 3, log
    assert f"Blocking call to open() in async context at {open_site} in profile" in warnings[0]
    assert f"Blocking call to file.read() in async context at {read_site} in profile" in warnings[1]
    assert f"time.sleep() in async context at {sleep_site} in _slow_lookup" in warnings[2]


def test_staging_app_in_raise_mode_fails_the_request_and_logs_the_site() -> None:
    source = EXAMPLES / "staging_app.py"
    sleep_site = f"examples/staging_app.py:{line_of(source, 'time.sleep(0.02)')}"
    with running("examples.staging_app:app", "raise") as (client, server):
        health = client.get("/health")
        failed = client.get("/orders/7")
    log = server.log
    assert health.json() == {"status": "ok"}
    assert failed.status_code == 500
    body = failed.json()
    assert body["error"] == "blocking call"
    assert (body["call"], body["site"], body["function"]) == ("time.sleep", sleep_site, "_charge")
    assert body["route"] == "/orders/{order_id}"
    errors = [line for line in log.splitlines() if line.endswith("[response 500]")]
    assert len(errors) == 1, log
    assert sleep_site in errors[0] and "(request GET /orders/{order_id})" in errors[0]
    # the lifespan's file read happened in start-up grace: warned, and the server started anyway
    open_site = f"examples/staging_app.py:{line_of(source, 'with open(')}"
    assert f"BlockingCallWarning: Blocking call to open() in async context at {open_site}" in log
