"""``python -m examples.demo`` end to end (about 25 s: four real uvicorn servers, 80 requests)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import blockbuster_lite as bl

ROOT = Path(__file__).resolve().parent.parent


def _offload_available() -> bool:
    try:
        bl.Guard("offload")
    except bl.ConfigError:
        return False
    return True


def _section(output: str, title: str) -> str:
    start = output.index(title)
    end = output.find("\n\n", start)
    return output[start : end if end != -1 else None]


def _wall(section: str) -> float:
    found = re.search(r"wall (\d+\.\d+) s", section)
    assert found, section
    return float(found.group(1))


def test_demo_shows_the_problem_the_findings_and_the_cure() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLOCKBUSTER_LITE_")}
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr
    assert len(out.splitlines()) <= 40

    plain = _section(out, "1. no sanitizer")
    assert "20 requests -> 20 x 200" in plain
    assert _wall(plain) > 5  # twenty 0.5 s sleeps, one after the other on the one loop

    site = "examples/demo_app.py:" + str(
        next(
            n
            for n, line in enumerate((ROOT / "examples/demo_app.py").read_text().splitlines(), 1)
            if line.strip().startswith("time.sleep(0.5)")
        )
    )
    warn = " ".join(_section(out, "2. BLOCKBUSTER_LITE_MODE=warn").split())
    assert "20 requests -> 20 x 200" in warn
    assert f"at {site} in build_report (request GET /report/{{report_id}})" in warn
    assert "/report/{report_id}: time.sleep x 20" in warn

    strict = " ".join(_section(out, "3. BLOCKBUSTER_LITE_MODE=raise").split())
    assert "20 requests -> 20 x 500" in strict
    assert f'"call": "time.sleep", "site": "{site}"' in strict
    assert '"route": "/report/{report_id}"' in strict
    assert "20 errors from blockbuster_lite.asgi" in strict

    cure = _section(out, "4. offload: the cure")
    if _offload_available():
        assert "20 requests -> 20 x 200" in cure
        assert _wall(cure) < 3  # the same twenty sleeps, side by side in worker threads
    else:
        assert "offload mode is coming" in cure

    # waits longer than a second show progress on stderr
    assert "/20 responses" in result.stderr
