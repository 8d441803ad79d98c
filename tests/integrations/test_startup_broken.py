"""A broken install never prints a traceback at start-up: one line names the problem and the fix.

Each test builds a site directory holding a copy of ``blockbuster_lite.pth`` (and, for some, a
copy of the package) and starts ``python -S`` with ``site.addsitedir()`` on it: the same
``.pth`` processing as at a normal start-up, without this environment's own site-packages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import wrapt

import blockbuster_lite

ROOT = Path(__file__).resolve().parents[2]
PTH = ROOT / "blockbuster_lite.pth"
PACKAGE = Path(blockbuster_lite.__file__).parent
#: Where wrapt lives, for the copies that should import.
WRAPT_PATH = str(Path(wrapt.__file__).parents[1])

STARTED = """
import site, sys
site.addsitedir(sys.argv[1])
guard = sys.modules.get("blockbuster_lite.core.guard")
print("started; guard:", guard.process_guard() if guard else None)
"""


def site_dir(tmp_path: Path, package: bool) -> Path:
    directory = tmp_path / "site-packages"
    directory.mkdir()
    shutil.copy(PTH, directory)
    if package:
        shutil.copytree(
            PACKAGE, directory / "blockbuster_lite", ignore=shutil.ignore_patterns("__pycache__")
        )
    return directory


def start(
    tmp_path: Path, directory: Path, pythonpath: str = "", mode: str = "warn"
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKBUSTER_LITE_")}
    env.update(BLOCKBUSTER_LITE_MODE=mode, PYTHONPATH=pythonpath)
    return subprocess.run(
        [sys.executable, "-S", "-c", STARTED, str(directory)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started; guard: None"
    assert "Traceback" not in result.stderr and "Error processing line" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("blockbuster_lite: ") and lines[0].endswith(
        "; running without the sanitizer"
    )
    return lines[0]


def test_the_hook_is_one_import_line() -> None:
    lines = PTH.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("import os; ")
    assert 'os.environ.get("BLOCKBUSTER_LITE_MODE", "").strip() and ' in lines[0]


def test_a_copy_of_the_hook_activates_as_installed(tmp_path: Path) -> None:
    result = start(tmp_path, site_dir(tmp_path, package=True), pythonpath=WRAPT_PATH)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "started; guard: <Guard mode=warn active violations=0>"
    # what an installed hook says: the start-up line, then the exit summary; nothing else
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("blockbuster_lite: active from BLOCKBUSTER_LITE_MODE (warn mode")
    assert lines[1].startswith("blockbuster_lite: no blocking calls on the event loop")


def test_a_stale_hook_after_uninstall_is_one_line_naming_the_file(tmp_path: Path) -> None:
    directory = site_dir(tmp_path, package=False)
    line = one_line(start(tmp_path, directory))
    assert "the package is not installed" in line
    assert f"delete the stale {directory / 'blockbuster_lite.pth'}" in line
    assert "pip install blockbuster-lite" in line


def test_unset_a_stale_hook_says_nothing(tmp_path: Path) -> None:
    result = start(tmp_path, site_dir(tmp_path, package=False), mode="")
    assert result.returncode == 0 and result.stderr == ""


def test_a_missing_dependency_is_one_line_naming_it(tmp_path: Path) -> None:
    line = one_line(start(tmp_path, site_dir(tmp_path, package=True)))  # no wrapt on the path
    assert (
        "its start-up hook failed to import (ModuleNotFoundError: No module named 'wrapt')" in line
    )
    assert "pip install --force-reinstall blockbuster-lite" in line
    assert "pip uninstall blockbuster-lite" in line


def test_an_error_inside_the_package_is_one_line(tmp_path: Path) -> None:
    directory = site_dir(tmp_path, package=True)
    config = directory / "blockbuster_lite" / "core" / "config.py"
    config.write_text(config.read_text() + "\ndef (:\n")
    line = one_line(start(tmp_path, directory, pythonpath=WRAPT_PATH))
    assert "failed to import (SyntaxError: invalid syntax (config.py, line " in line


def test_an_exception_raised_while_importing_is_one_line(tmp_path: Path) -> None:
    directory = site_dir(tmp_path, package=True)
    guard = directory / "blockbuster_lite" / "core" / "guard.py"
    guard.write_text(guard.read_text() + '\nraise RuntimeError("broken\\non purpose")\n')
    line = one_line(start(tmp_path, directory, pythonpath=WRAPT_PATH))
    assert "failed to import (RuntimeError: broken on purpose)" in line
