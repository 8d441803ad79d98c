"""The pytest plugin's end-of-run report and tracebacks, through real pytest runs (pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
"""

ONE_HELPER_MANY_TESTS = """
import asyncio
import time

import pytest


def load_settings():
    time.sleep(0.001)  # the one blocking helper


@pytest.mark.asyncio
@pytest.mark.parametrize("n", range(5))
async def test_uses_settings(n):
    load_settings()


@pytest.mark.asyncio
async def test_other_site():
    time.sleep(0.2)


def test_sync_testclient_style():
    async def app():
        load_settings()
    asyncio.run(app())  # a loop in a sync test (what TestClient's portal does): checked too
"""


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODE", "ALLOW", "SCOPE", "WATCHDOG_MS", "STRICT_STARTUP", "SUMMARY",
                 "DEFAULT_ALLOW", "ASGI"):
        monkeypatch.delenv(f"BLOCKBUSTER_LITE_{name}", raising=False)


def write(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_sites=ONE_HELPER_MANY_TESTS)


def test_raise_failures_are_grouped_by_call_site(pytester: pytest.Pytester) -> None:
    write(pytester)
    result = pytester.runpytest_subprocess("--blockbuster-mode=raise")
    result.assert_outcomes(failed=7)
    result.stdout.fnmatch_lines([
        "*= blockbuster_lite: tests failed by blocking calls, by call site =*",
        "time.sleep() at test_sites.py:8 in load_settings: 6 call(s) in 6 test(s)",
        "    first: test_sites.py::test_uses_settings[[]0[]], test_sites.py::test_uses_settings[[]1[]], "
        "test_sites.py::test_uses_settings[[]2[]] (+3 more)",
        "time.sleep() at test_sites.py:19 in test_other_site: 1 call(s) in 1 test(s)",
    ])  # fmt: skip


def test_the_traceback_ends_at_the_users_call(pytester: pytest.Pytester) -> None:
    write(pytester)
    result = pytester.runpytest_subprocess("--blockbuster-mode=raise", "-k", "other_site")
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    failure = text[text.index("_ test_other_site _"):text.index("Captured log call")]
    assert ">       time.sleep(0.2)" in failure
    assert "E       blockbuster_lite.core.report.BlockingCallError: Blocking call to time.sleep()" \
        in failure  # fmt: skip
    assert "hotpath.py" not in failure and "actions.py" not in failure, failure
    assert failure.count("test_sites.py:19: BlockingCallError") == 1, failure  # the last frame


def test_warn_mode_prints_a_per_site_table(pytester: pytest.Pytester) -> None:
    write(pytester)
    result = pytester.runpytest_subprocess("--blockbuster-mode=warn")
    result.assert_outcomes(passed=7, warnings=7)  # each test's own guard warns once per site
    result.stdout.fnmatch_lines([
        "*= blockbuster_lite: blocking calls by call site, worst first =*",
        "   count   total ms   max ms  tests  call at site",
        "       1 *2??.? *2??.?      1  time.sleep() at test_sites.py:19 in test_other_site",
        "*first: test_sites.py::test_other_site",
        "       6*      6  time.sleep() at test_sites.py:8 in load_settings",
        "*first: test_sites.py::test_uses_settings[[]0[]]*(+3 more)",
    ])  # fmt: skip


def test_a_clean_run_prints_no_table(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_clean="def test_nothing():\n    pass\n")
    result = pytester.runpytest_subprocess("--blockbuster-mode=warn")
    result.assert_outcomes(passed=1)
    assert "by call site" not in result.stdout.str()


TESTCLIENT_TESTS = """
import time

from fastapi import FastAPI
from fastapi.testclient import TestClient

app = FastAPI()


@app.get("/slow")
async def slow():
    time.sleep(0.001)
    return {}


@app.get("/fine")
def fine():
    time.sleep(0.001)  # a sync endpoint runs in a worker thread: fine
    return {}


def test_sync_test_through_testclient():
    with TestClient(app) as client:
        client.get("/slow")


def test_sync_endpoint_is_fine():
    with TestClient(app) as client:
        assert client.get("/fine").status_code == 200
"""


def test_sync_tests_through_testclient_are_checked(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_client=TESTCLIENT_TESTS)
    result = pytester.runpytest_subprocess("--blockbuster-mode=raise")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_client.py::test_sync_test_through_testclient*"])


KNOWN_TRIVIAL_TEST = """
import pathlib

import asyncpg.connect_utils
import pytest


@pytest.mark.asyncio
async def test_pgpass_lookup(tmp_path):
    asyncpg.connect_utils._read_password_file(pathlib.Path(tmp_path) / ".pgpass")
"""


@pytest.mark.parametrize(("value", "outcome"), [("", "passed"), ("0", "failed")])
def test_default_allow_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, value: str, outcome: str
) -> None:
    monkeypatch.setenv("BLOCKBUSTER_LITE_DEFAULT_ALLOW", value)
    pytester.makeini(INI)
    pytester.makepyfile(test_trivial=KNOWN_TRIVIAL_TEST)
    result = pytester.runpytest_subprocess("--blockbuster-mode=raise")
    result.assert_outcomes(**{outcome: 1})
    if outcome == "failed":
        result.stdout.fnmatch_lines(["*(inside asyncpg/connect_utils.py:* in _read_password_file)*"])
