"""Memory bounded by the code, never by the traffic: the decision cache, compact violations,
deduplication and statistics per call family and site, and escaped control characters."""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import socket
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import pytest
from helpers import call_on, write_module

import blockbuster_lite as bl
from blockbuster_lite.core import policy
from blockbuster_lite.core.report import STACK_SLOT, Frames, escape_control

TWIN = """
import time


def work():
    time.sleep(0.0001)
"""


# -- the decision cache keys by identity ------------------------------------------------------


def test_equal_code_objects_in_two_files_each_name_their_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = write_module(tmp_path, "twin_first", TWIN, monkeypatch)
    second = write_module(tmp_path, "twin_second", TWIN, monkeypatch)
    assert first.work.__code__ == second.work.__code__  # the trap: equal, not identical
    assert first.work.__code__ is not second.work.__code__
    with bl.intercept("log") as guard:
        call_on("asyncio", first.work)
        call_on("asyncio", second.work)
    assert [v.filename for v in guard.violations] == [first.__file__, second.__file__]
    assert [v.stack[-1].split(":")[0] for v in guard.violations] == [
        first.__file__,
        second.__file__,
    ]


@pytest.mark.parametrize("setting", ["allow", "scope"])
def test_an_allow_rule_or_scope_for_one_twin_does_not_apply_to_the_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    first = write_module(tmp_path, "twin_one", TWIN, monkeypatch)
    second = write_module(tmp_path, "twin_two", TWIN, monkeypatch)
    assert first.work.__code__ == second.work.__code__
    # prime the cache with the first file's verdict, then ask about the second
    with bl.intercept("log") as primer:
        call_on("asyncio", first.work)
    assert len(primer.violations) == 1
    settings = {"allow": ["twin_one"]} if setting == "allow" else {"scope": ["twin_two"]}
    with bl.intercept("log", **settings) as guard:  # type: ignore[arg-type]
        call_on("asyncio", first.work)
        call_on("asyncio", second.work)
    assert [v.filename for v in guard.violations] == [second.__file__]


def test_the_decision_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "CODE_CACHE_SIZE", 64)
    monkeypatch.setattr(policy, "_code_cache", {})
    functions = []
    for number in range(500):  # code made at run time, e.g. templates compiled per request
        namespace: dict[str, object] = {"time": time, "__name__": f"generated_{number}"}
        exec(compile(f"def f():\n    return {number}\n", f"<gen {number}>", "exec"), namespace)
        functions.append(namespace["f"])
    for function in functions:
        frame_code = function.__code__  # type: ignore[attr-defined]
        info = policy._classify(frame_code, "generated")
        assert info.filename == frame_code.co_filename
    assert len(policy._code_cache) <= 64
    # an entry keeps its code object alive: the id it is filed under cannot be reused
    for code, _ in policy._code_cache.values():
        assert policy._code_cache[id(code)][0] is code


# -- compact violations ----------------------------------------------------------------------


def _kept(count: int) -> list[bl.Violation]:
    def many() -> None:
        for _ in range(count):
            time.sleep(1e-6)

    # warn mode: reported once, so no log record per call is kept by the test's log capture
    with warnings.catch_warnings(), bl.intercept("warn") as guard:
        warnings.simplefilter("ignore", bl.BlockingCallWarning)
        call_on("asyncio", many)
    return guard.violations


def test_stack_is_kept_as_shared_frames_and_read_as_lines() -> None:
    first, second = _kept(2)
    stored = getattr(first, STACK_SLOT)
    assert isinstance(stored, Frames)
    assert stored is getattr(second, STACK_SLOT)  # one line of code, one stack object
    lines = first.stack
    assert isinstance(lines, tuple) and all(isinstance(line, str) for line in lines)
    assert lines[-1] == f"{__file__}:{first.lineno} in many"
    # replace(), copies and pickles keep it compact and equal
    changed = dataclasses.replace(first, duration_s=1.0)
    assert isinstance(getattr(changed, STACK_SLOT), Frames) and changed.stack == lines
    assert pickle.loads(pickle.dumps(first)).stack == lines


#: Memory allocated by the package's own code counts (what a kept violation costs); other
#: threads of the test process (the test servers' start-up probes format their retries'
#: tracebacks while this runs) and one-time source-line caches do not.
_OURS = (tracemalloc.Filter(True, "*/blockbuster_lite/*"), tracemalloc.Filter(True, __file__))


def _ours(snapshot: tracemalloc.Snapshot) -> int:
    return sum(stat.size for stat in snapshot.filter_traces(_OURS).statistics("filename"))


def test_a_kept_violation_costs_under_300_bytes() -> None:
    _kept(200)  # warm: code objects classified, frames interned
    tracemalloc.start()
    try:
        before = _ours(tracemalloc.take_snapshot())
        kept = _kept(5000)
        after = _ours(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
    assert len(kept) == 5000
    per_violation = (after - before) / len(kept)
    assert 100 < per_violation < 300, per_violation  # a Violation alone is more than 100 bytes


# -- one report and one statistic per call family and site -------------------------------------


def _closed_ports(count: int) -> list[int]:
    ports = []
    for _ in range(count):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        ports.append(probe.getsockname()[1])
        probe.close()  # nothing listens there any more: connect() is refused at once
    return ports


def test_many_ports_from_one_line_give_one_warning_and_one_row() -> None:
    ports = _closed_ports(300)

    def connect_all() -> None:
        for port in ports:
            with socket.socket() as sock:
                sock.settimeout(1)
                with contextlib.suppress(OSError):
                    sock.connect(("127.0.0.1", port))  # one line, many ports

    with warnings.catch_warnings(record=True) as caught, bl.intercept("warn") as guard:
        warnings.simplefilter("always")
        call_on("asyncio", connect_all)
    ours = [w for w in caught if issubclass(w.category, bl.BlockingCallWarning)]
    assert len(ours) == 1
    rows = guard.stats()
    assert [(row.call, row.count) for row in rows] == [("socket.socket.connect", 300)]


def test_described_calls_share_their_family_key(tmp_path: Path) -> None:
    import sqlite3

    database = str(tmp_path / "db.sqlite")
    with sqlite3.connect(database) as setup:
        setup.execute("create table t (x)")

    def statements() -> None:
        conn = sqlite3.connect(database)
        try:
            for query in ("select 1", "insert into t values (1)", "delete from t"):
                conn.execute(query)  # one line, three statements
        finally:
            conn.close()

    with warnings.catch_warnings(record=True) as caught, bl.intercept("warn") as guard:
        warnings.simplefilter("always")
        call_on("asyncio", statements)
    executes = [v for v in guard.violations if v.family == "sqlite3.Connection.execute"]
    assert [v.call for v in executes] == [
        "sqlite3.Connection.execute(SELECT ...)",
        "sqlite3.Connection.execute(INSERT ...)",
        "sqlite3.Connection.execute(DELETE ...)",
    ]
    assert len({v.report_key for v in executes}) == 1
    assert sum("Connection.execute" in str(w.message) for w in caught) == 1
    [row] = [row for row in guard.stats() if row.call.startswith("sqlite3.Connection.execute")]
    assert row.count == 3 and row.call == "sqlite3.Connection.execute(SELECT ...)"


# -- control characters ------------------------------------------------------------------------

CONTROLS = [
    ("\r", "\\r"),
    ("\n", "\\n"),
    ("\t", "\\t"),
    ("\x1b", "\\x1b"),
    ("\x00", "\\x00"),
    ("\x07", "\\x07"),
    ("\x7f", "\\x7f"),
    ("\x85", "\\x85"),
    ("\x9b", "\\x9b"),
    ("\u2028", "\\u2028"),
    ("\u202e", "\\u202e"),
]


@pytest.mark.parametrize(("char", "escaped"), CONTROLS)
def test_every_control_character_is_escaped(char: str, escaped: str) -> None:
    assert escape_control(f"GET /a{char}b") == f"GET /a{escaped}b"
    assert escape_control(escape_control(f"x{char}")) == escape_control(f"x{char}")
    violation = bl.Violation(
        f"drv.query(x{char})", f"/srv/odd{char}.py", 3, f"f{char}",
        context={"method": f"G{char}", "path": f"/p{char}", "route": None},
    )  # fmt: skip
    message = violation.message
    assert message.isprintable(), message
    assert escaped in message


def test_printable_text_of_any_script_is_kept() -> None:
    assert escape_control("/café/日本/ü?x=1") == "/café/日本/ü?x=1"


def test_a_file_name_with_a_newline_is_escaped_in_messages_and_stacks(
    tmp_path: Path,
) -> None:
    odd = tmp_path / "odd\nname.py"
    odd.write_text("import time\n\ndef work():\n    time.sleep(0.0001)\n")
    namespace: dict[str, object] = {"__name__": "odd_module"}
    exec(compile(odd.read_text(), str(odd), "exec"), namespace)
    with bl.intercept("log") as guard:
        call_on("asyncio", namespace["work"])  # type: ignore[arg-type]
    [violation] = guard.violations
    assert violation.filename == str(odd)  # the field stays exact
    assert violation.message.isprintable() and "odd\\nname.py" in violation.message
    assert all(line.isprintable() for line in violation.stack)


def test_the_shared_frame_and_stack_tables_are_bounded() -> None:
    from blockbuster_lite.core import report

    def deep(level: int) -> Frames:
        return report.capture_frames(sys._getframe()) if level == 0 else deep(level - 1)

    for level in range(30):
        for site in range(200):  # 6,000 distinct stacks: the outermost file differs each time
            code = compile("deep(level)", f"<site {level} {site}>", "eval")
            exec(code, {"deep": deep, "level": level})
    assert len(report._interned_stacks) <= report._STACK_INTERN_LIMIT
    assert len(report._interned_frames) <= report._INTERN_LIMIT
