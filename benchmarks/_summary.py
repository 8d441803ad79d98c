"""The one table ``benchmarks/run`` ends with: every measured row against its cap, in one run.

Each benchmark calls ``add()`` for the rows it checks; with ``BENCH_SUMMARY`` set (``run`` sets
it) they are appended to that file as JSON lines, and ``python benchmarks/_summary.py FILE``
prints them side by side and writes ``results_summary.md`` with the machine's description.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib.metadata import version
from pathlib import Path


def add(
    section: str,
    row: str,
    plain: str,
    lite: str,
    blockbuster: str,
    measure: str,
    cap: str,
    met: bool | None,
) -> None:
    """One row: figures as text (``ns``, ``x``, ``ms``), the measure checked, its cap, verdict."""
    path = os.environ.get("BENCH_SUMMARY")
    if not path:
        return
    entry = {
        "section": section, "row": row, "plain": plain, "lite": lite,
        "blockbuster": blockbuster, "measure": measure, "cap": cap, "met": met,
    }  # fmt: skip
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(entry) + "\n")


def machine() -> str:
    try:
        load = f", load average {os.getloadavg()[0]:.2f} at the end"
    except OSError:
        load = ""
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}) on "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs{load}; "
        f"blockbuster {version('blockbuster')}, wrapt {version('wrapt')}, "
        f"uvicorn {version('uvicorn')}, fastapi {version('fastapi')}, anyio {version('anyio')}."
    )


def render(entries: list[dict[str, object]]) -> str:
    lines = [
        "# blockbuster_lite: every row against its cap, in one run",
        "",
        machine(),
        "",
        "| section | row | plain | lite | blockbuster | measure | cap | met |",
        "|---|---|---:|---:|---:|---:|---|:-:|",
    ]
    for e in entries:
        verdict = "n/a" if e["met"] is None else ("yes" if e["met"] else "NO")
        lines.append(
            f"| {e['section']} | {e['row']} | {e['plain']} | {e['lite']} | {e['blockbuster']} "
            f"| {e['measure']} | {e['cap']} | {verdict} |"
        )
    checked = [e for e in entries if e["met"] is not None]
    missed = [e for e in checked if not e["met"]]
    lines += [
        "",
        f"{len(checked) - len(missed)} of {len(checked)} caps met"
        + (": missed " + "; ".join(f"{e['row']} ({e['measure']})" for e in missed) if missed else "."),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    path = Path(sys.argv[1])
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    text = render(entries)
    print(text)
    Path(__file__).with_name("results_summary.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
