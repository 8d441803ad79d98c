"""The core needs wrapt only; offload's anyio and greenback are an extra, asked for by name.

Installing the package never changes a version a project has pinned: ``scripts/check-old-pins``
installs it into a fresh venv with ``fastapi==0.95.2`` and ``anyio==3.7.1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Run first in the child interpreter: the offload extra's packages cannot be imported.
WITHOUT_EXTRAS = """
import importlib.abc, sys

MISSING = {"anyio", "greenback", "sniffio"}


class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Missing())
"""


def run_without_extras(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKBUSTER_LITE_")}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRAS + textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip


def test_pyproject_core_dependencies_are_wrapt_only() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0].split("=")[0] for d in project["dependencies"]] == ["wrapt"]
    offload = project["optional-dependencies"]["offload"]
    assert {d.split(">")[0] for d in offload} == {"greenback", "anyio"}
    assert "anyio>=3.7" in offload


def test_every_module_but_offloads_engine_imports_without_anyio_greenback_sniffio() -> None:
    result = run_without_extras("""
        import importlib, pkgutil, sys
        import blockbuster_lite

        # offload's engine modules, loaded when offload mode is first used, need the extra
        skipped = tuple(f"blockbuster_lite.offload.{m}" for m in ("engine", "portal", "worker", "files"))
        for info in pkgutil.walk_packages(blockbuster_lite.__path__, "blockbuster_lite."):
            if not info.name.startswith(skipped):
                importlib.import_module(info.name)
        import blockbuster_lite.offload
        loaded = sorted(name for name in sys.modules if name.partition(".")[0] in MISSING)
        print("loaded:", loaded)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "loaded: []"


def test_warn_raise_and_log_work_and_offload_names_the_extra() -> None:
    result = run_without_extras("""
        import asyncio, logging, time, warnings
        import blockbuster_lite as bl

        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

        async def main():
            time.sleep(0.001)

        for mode in ("log", "warn", "raise"):
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                with bl.intercept(mode, watchdog=5) as guard:
                    try:
                        asyncio.run(main())
                    except bl.BlockingCallError:
                        print("raise: raised")
                print(mode, [v.call for v in guard.violations], len(seen))
        try:
            bl.intercept("offload")
        except bl.ConfigError as exc:
            print("offload:", exc)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "log ['time.sleep'] 0",
        "warn ['time.sleep'] 1",
        "raise: raised",
        "raise ['time.sleep'] 0",
        "offload: mode 'offload' from intercept() needs the 'anyio' package: "
        "pip install 'blockbuster-lite[offload]'",
    ]


def test_offload_mode_from_the_environment_names_the_extra_in_one_line() -> None:
    result = run_without_extras("""
        import os
        import blockbuster_lite as bl
        from blockbuster_lite.integrations.startup import activate_at_startup

        os.environ["BLOCKBUSTER_LITE_MODE"] = "offload"
        print("guard:", activate_at_startup())
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "guard: None"
    assert result.stderr.splitlines() == [
        "blockbuster_lite: mode 'offload' from BLOCKBUSTER_LITE_MODE needs the 'anyio' package: "
        "pip install 'blockbuster-lite[offload]'; running without the sanitizer"
    ]


def test_a_project_pinned_to_fastapi_095_and_anyio_37_keeps_its_pins() -> None:
    """A fresh venv and two pip installs: about 15 s with a warm package cache."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKBUSTER_LITE_")}
    env["PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "check-old-pins")],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    if result.returncode == 3:
        pytest.skip(f"the pinned packages could not be installed: {result.stdout[-500:]}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok: pins kept (anyio==3.7.1 fastapi==0.95.2" in result.stdout
    assert "ok: warn mode reported Blocking call to time.sleep()" in result.stdout
