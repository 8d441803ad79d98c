"""``python -m blockbuster_lite [options] -- COMMAND``, run as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_startup import APP_BLOCK_LINE, environment, free_port, serve

SCRIPT = """
import asyncio, json, os, sys, time

async def main():
    time.sleep(0.01)

print(json.dumps({k: v for k, v in os.environ.items() if k.startswith("BLOCKBUSTER_LITE_")}))
print(json.dumps(sys.argv[1:]))
asyncio.run(main())
"""


def runner(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "script.py").write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, "-m", "blockbuster_lite", *args], cwd=tmp_path,
        env=environment(**settings), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_runs_a_script_with_the_sanitizer_on(tmp_path: Path) -> None:
    result = runner(
        tmp_path, "--mode", "warn", "--allow", "pkg.mod,a/b.py", "--allow", "c/d.py:f",
        "--scope", "__main__", "--strict-startup", "--summary",
        "--", "script.py", "--mode", "x",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    env, argv = (json.loads(line) for line in result.stdout.splitlines()[:2])
    assert env == {
        "BLOCKBUSTER_LITE_MODE": "warn",
        "BLOCKBUSTER_LITE_ALLOW": "pkg.mod,a/b.py,c/d.py:f",
        "BLOCKBUSTER_LITE_SCOPE": "__main__",
        "BLOCKBUSTER_LITE_STRICT_STARTUP": "1",
        "BLOCKBUSTER_LITE_SUMMARY": "1",
    }
    assert argv == ["--mode", "x"]  # options after COMMAND are COMMAND's
    assert "Blocking call to time.sleep() in async context at script.py:5 in main" in result.stderr
    assert "blockbuster_lite summary" in result.stderr


def test_runs_a_module_and_a_program_on_path(tmp_path: Path) -> None:
    by_module = runner(tmp_path, "--mode", "raise", "--", "-m", "script", "a")
    assert "Blocking call to time.sleep()" in by_module.stderr
    assert '"BLOCKBUSTER_LITE_MODE": "raise"' in by_module.stdout
    assert '["a"]' in by_module.stdout
    by_program = runner(tmp_path, sys.executable, "script.py")  # no "--" needed; default warn
    assert '"BLOCKBUSTER_LITE_MODE": "warn"' in by_program.stdout
    assert "BlockingCallWarning" in by_program.stderr


@pytest.mark.parametrize("name", ["python", "python3"])
def test_a_bare_python_is_this_interpreter(tmp_path: Path, name: str) -> None:
    # Without an activated virtualenv, the python on PATH lacks blockbuster_lite: the script
    # would run unchecked and silently.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / name).write_text("#!/bin/sh\necho another interpreter\n")
    (bin_dir / name).chmod(0o755)
    (tmp_path / "script.py").write_text(SCRIPT)
    env = environment()
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [sys.executable, "-m", "blockbuster_lite", "--", name, "script.py", "a"], cwd=tmp_path,
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "another interpreter" not in result.stdout
    assert '["a"]' in result.stdout
    assert "Blocking call to time.sleep()" in result.stderr


def test_unset_options_keep_the_environment(tmp_path: Path) -> None:
    result = runner(tmp_path, "--", "script.py", ALLOW="pkg", SUMMARY="1")
    assert '"BLOCKBUSTER_LITE_ALLOW": "pkg"' in result.stdout
    assert "blockbuster_lite summary" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "strcit"], "argument --mode: invalid mode 'strcit' from --mode"),
        (["--allow", "a/b.txt"], "argument --allow: invalid allow rule 'a/b.txt' from --allow"),
        (["--scope", "my-app"], "argument --scope: invalid scope entry 'my-app' from --scope"),
        (["--watchdog-ms", "0"], "argument --watchdog-ms: invalid watchdog threshold '0' "
                                 "from --watchdog-ms"),
        ([], "no COMMAND given"),
    ],
    ids=["mode", "allow", "scope", "watchdog", "no-command"],
)  # fmt: skip
def test_bad_arguments_name_the_option(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner(tmp_path, *args, *(["--", "script.py"] if args else []))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_a_missing_command_exits_127(tmp_path: Path) -> None:
    result = runner(tmp_path, "--", "no-such-program-here")
    assert result.returncode == 127
    assert "cannot run 'no-such-program-here'" in result.stderr


def test_runs_uvicorn_and_its_workers(tmp_path: Path) -> None:
    port = free_port()
    args = [sys.executable, "-m", "blockbuster_lite", "--mode", "warn", "--",
            sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--workers", "2"]  # fmt: skip
    with serve(tmp_path, args, port) as server:
        server.wait_until_listening()
        assert server.get("/block").status_code == 200
    assert f"in async context at app.py:{APP_BLOCK_LINE} in block" in server.output


def test_finds_its_environments_console_scripts_off_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a virtualenv used without activating it: its bin/ is not on PATH
    port = free_port()
    bin_dir = os.path.dirname(sys.executable)
    env_path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                               if os.path.realpath(p) != os.path.realpath(bin_dir))  # fmt: skip
    assert shutil.which("uvicorn", path=env_path) is None  # else this test proves nothing
    monkeypatch.setenv("PATH", env_path)
    args = [sys.executable, "-m", "blockbuster_lite", "--mode", "offload", "--",
            "uvicorn", "app:app", "--port", str(port)]  # fmt: skip
    with serve(tmp_path, args, port) as server:
        server.wait_until_listening()
        assert server.get("/block").status_code == 200
    assert "cannot run" not in server.output
    assert "offloaded to a worker thread" in server.output


def test_the_summary_is_on_by_default_and_no_summary_turns_it_off(tmp_path: Path) -> None:
    shown = runner(tmp_path, "--", "script.py")
    assert "blockbuster_lite summary" in shown.stderr  # script.py sleeps on the loop
    quiet = runner(tmp_path, "--no-summary", "--", "script.py")
    assert '"BLOCKBUSTER_LITE_SUMMARY": "0"' in quiet.stdout
    assert "blockbuster_lite summary" not in quiet.stderr
    assert "BlockingCallWarning" in quiet.stderr  # still checked
