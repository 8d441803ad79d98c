"""The pytest plugin, exercised through real pytest runs in a subprocess (pytester)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pytest_project"

INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
{extra}
"""

BLOCKING_TESTS = """
import asyncio
import time

import pytest


@pytest.mark.asyncio
async def test_swallowed():
    try:
        time.sleep(0.01)
    except Exception:
        pass


@pytest.mark.asyncio
async def test_clean():
    await asyncio.sleep(0)


def test_sync_sleep_never_fails():
    time.sleep(0.01)
"""


@pytest.fixture(autouse=True)
def _no_inherited_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODE", "ALLOW", "SCOPE", "WATCHDOG_MS", "STRICT_STARTUP", "SUMMARY",
                 "DEFAULT_ALLOW", "ASGI"):
        monkeypatch.delenv(f"BLOCKBUSTER_LITE_{name}", raising=False)


def write(pytester: pytest.Pytester, tests: str, ini: str = "") -> None:
    pytester.makeini(INI.format(extra=ini))
    pytester.makepyfile(test_blocking=tests)


def test_off_by_default_changes_nothing(pytester: pytest.Pytester) -> None:
    write(pytester, BLOCKING_TESTS + """
def test_nothing_is_patched():
    assert type(time.sleep).__name__ == "builtin_function_or_method"
""")  # fmt: skip
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["blockbuster_lite: mode=off (from default)"])
    result.assert_outcomes(passed=4)


def test_off_leaves_the_suites_own_guard_alone(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
import blockbuster_lite as bl

def pytest_configure(config):
    bl.activate("raise")
""")  # fmt: skip
    write(pytester, """
import time

import pytest

import blockbuster_lite as bl


@pytest.mark.asyncio
async def test_the_suites_guard_still_raises():
    with pytest.raises(bl.BlockingCallError):
        time.sleep(0.01)
""")  # fmt: skip
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_marker_off_exempts_a_test_from_the_environments_guard(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(pytester, """
import time

import pytest


@pytest.mark.asyncio
@pytest.mark.blockbuster(mode="off")
async def test_exempt():
    time.sleep(0.01)


@pytest.mark.asyncio
async def test_checked():
    time.sleep(0.01)
""")  # fmt: skip
    monkeypatch.setenv("BLOCKBUSTER_LITE_MODE", "raise")
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["*BlockingCallError: *at test_blocking.py:14 in test_checked*"])
    result.assert_outcomes(passed=1, failed=1)


def test_raise_fails_a_test_that_swallowed_the_error(pytester: pytest.Pytester) -> None:
    write(pytester, BLOCKING_TESTS)
    result = pytester.runpytest_subprocess("--blockbuster-mode=raise")
    result.stdout.fnmatch_lines(
        [
            "blockbuster_lite: mode=raise (from --blockbuster-mode)",
            "*_ test_swallowed _*",
            "blockbuster_lite: blocking call(s) on the event loop (raise mode); "
            "the code under test caught the error*",
            "  Blocking call to time.sleep() in async context at test_blocking.py:10 "
            "in test_swallowed; *",
        ]
    )
    result.assert_outcomes(passed=2, failed=1)


def test_the_example_project_fails_though_its_app_answers_200(pytester: pytest.Pytester) -> None:
    for name in ("pyproject.toml", "app.py", "test_app.py"):
        shutil.copy(EXAMPLE / name, pytester.path / name)
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(
        [
            "blockbuster_lite: mode=raise (from ini option blockbuster_mode)",
            "*Blocking call to time.sleep() in async context at app.py:15 in exchange_rate*",
        ]
    )
    result.assert_outcomes(failed=1)
    pytester.runpytest_subprocess("-p", "no:blockbuster_lite").assert_outcomes(passed=1)


def test_warn_mode_reports_in_the_warnings_summary(pytester: pytest.Pytester) -> None:
    write(pytester, BLOCKING_TESTS)
    result = pytester.runpytest_subprocess("--blockbuster-mode=warn")
    result.stdout.fnmatch_lines(
        [
            "*warnings summary*",
            "test_blocking.py::test_swallowed",
            "*BlockingCallWarning: Blocking call to time.sleep() in async context at "
            "test_blocking.py:10 in test_swallowed*",
        ]
    )
    result.assert_outcomes(passed=3, warnings=1)


def test_ini_mode_and_allow_rules(pytester: pytest.Pytester) -> None:
    write(
        pytester,
        BLOCKING_TESTS + """

def read_config():
    time.sleep(0.01)


@pytest.mark.asyncio
async def test_allowed_helper():
    read_config()
""",
        ini="blockbuster_mode = raise\nblockbuster_allow =\n    test_blocking.py:read_config",
    )  # fmt: skip
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(
        [
            "blockbuster_lite: mode=raise (from ini option blockbuster_mode), "
            "allow=test_blocking.py:read_config (from ini option blockbuster_allow)"
        ]
    )
    result.assert_outcomes(passed=3, failed=1)


@pytest.mark.parametrize(
    ("ini", "env", "option", "header", "outcomes"),
    [
        ("raise", "warn", None, "mode=warn (from BLOCKBUSTER_LITE_MODE)", {"passed": 3}),
        (
            "warn",
            "raise",
            None,
            "mode=raise (from BLOCKBUSTER_LITE_MODE)",
            {"passed": 2, "failed": 1},
        ),
        ("warn", "raise", "off", "mode=off (from --blockbuster-mode)", {"passed": 3}),
        (
            "off",
            "warn",
            "raise",
            "mode=raise (from --blockbuster-mode)",
            {"passed": 2, "failed": 1},
        ),
    ],
    ids=["env-over-ini", "env-activates-and-decides", "option-over-env", "option-over-all"],
)
def test_precedence_option_env_ini(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    ini: str,
    env: str,
    option: str | None,
    header: str,
    outcomes: dict[str, int],
) -> None:
    write(pytester, BLOCKING_TESTS, ini=f"blockbuster_mode = {ini}")
    monkeypatch.setenv("BLOCKBUSTER_LITE_MODE", env)  # the start-up hook activates it too
    args = [f"--blockbuster-mode={option}"] if option else []
    result = pytester.runpytest_subprocess(*args, "-W", "error::pytest.PytestWarning")
    result.stdout.fnmatch_lines([f"blockbuster_lite: {header}"])
    result.assert_outcomes(**outcomes)


def test_marker_beats_the_option(pytester: pytest.Pytester) -> None:
    write(pytester, """
import time

import pytest


@pytest.mark.asyncio
@pytest.mark.blockbuster(mode="off")
async def test_exempt():
    time.sleep(0.01)


@pytest.mark.asyncio
@pytest.mark.blockbuster(mode="raise", allow=["test_blocking.py:helper"])
async def test_marked_raise():
    helper()
    try:
        time.sleep(0.01)
    except Exception:
        pass


def helper():
    time.sleep(0.01)


@pytest.mark.asyncio
async def test_plain():
    time.sleep(0.01)
""")  # fmt: skip
    result = pytester.runpytest_subprocess("--blockbuster-mode=warn")
    result.stdout.fnmatch_lines(["*in async context at test_blocking.py:17 in test_marked_raise*"])
    result.stdout.no_fnmatch_line("*test_blocking.py:10 in test_exempt*")
    result.stdout.no_fnmatch_line("*in helper*")
    result.assert_outcomes(passed=2, failed=1, warnings=1)


@pytest.mark.parametrize(
    ("args", "ini", "env", "message"),
    [
        (["--blockbuster-mode=strcit"], "", "",
         "invalid mode 'strcit' from --blockbuster-mode (expected one of: *"),
        ([], "", "strcit", "invalid mode 'strcit' from BLOCKBUSTER_LITE_MODE *"),
        ([], "blockbuster_mode = strcit", "", "invalid mode 'strcit' from ini option blockbuster_mode *"),
        (["--blockbuster-mode=raise"], "blockbuster_allow =\n    a/b.txt", "",
         "invalid allow rule 'a/b.txt' from ini option blockbuster_allow*"),
    ],
    ids=["option", "env", "ini", "ini-allow"],
)  # fmt: skip
def test_invalid_values_are_usage_errors_naming_their_source(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    ini: str,
    env: str,
    message: str,
) -> None:
    write(pytester, BLOCKING_TESTS, ini=ini)
    if env:
        monkeypatch.setenv("BLOCKBUSTER_LITE_MODE", env)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: blockbuster_lite: {message}"])


def test_invalid_marker_fails_that_test(pytester: pytest.Pytester) -> None:
    write(pytester, """
import pytest


@pytest.mark.blockbuster(mode="strcit")
def test_typo():
    pass


@pytest.mark.blockbuster(moed="raise")
def test_unknown_argument():
    pass


def test_fine():
    pass
""")  # fmt: skip
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(
        [
            "*invalid mode 'strcit' from @pytest.mark.blockbuster on test_blocking.py::test_typo*",
            "*@pytest.mark.blockbuster on test_blocking.py::test_unknown_argument takes mode=*",
        ]
    )
    result.assert_outcomes(passed=1, errors=2)


@pytest.mark.parametrize("asyncio_mode", ["auto", "strict"])
def test_pytest_asyncio_tests_and_async_fixtures(
    pytester: pytest.Pytester, asyncio_mode: str
) -> None:
    write(pytester, """
import asyncio
import time

import pytest
import pytest_asyncio


@pytest_asyncio.fixture
async def blocking_fixture():
    try:
        time.sleep(0.01)
    except Exception:
        pass
    yield


@pytest_asyncio.fixture
async def clean_fixture():
    await asyncio.sleep(0)
    yield
    await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_uses_blocking_fixture(blocking_fixture):
    pass


@pytest.mark.asyncio
async def test_blocks(clean_fixture):
    time.sleep(0.01)


@pytest.mark.asyncio
async def test_clean(clean_fixture):
    await asyncio.sleep(0)
""", ini=f"asyncio_mode = {asyncio_mode}")  # fmt: skip
    result = pytester.runpytest_subprocess("--blockbuster-mode=raise")
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_uses_blocking_fixture*",
            "*Blocking call to time.sleep() in async context at test_blocking.py:11 "
            "in blocking_fixture*",
            "*BlockingCallError: Blocking call to time.sleep() in async context at "
            "test_blocking.py:31 in test_blocks*",
        ]
    )
    result.assert_outcomes(passed=1, failed=1, errors=1)


def test_anyio_plugin_with_trio_and_asyncio(pytester: pytest.Pytester) -> None:
    write(pytester, """
import time

import anyio
import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


@pytest.fixture
async def blocking_fixture():
    try:
        time.sleep(0.01)
    except Exception:
        pass
    yield


async def test_swallowed(anyio_backend):
    try:
        time.sleep(0.01)
    except Exception:
        pass


async def test_blocking_fixture(anyio_backend, blocking_fixture):
    pass


async def test_clean(anyio_backend):
    await anyio.sleep(0)
""")  # fmt: skip
    result = pytester.runpytest_subprocess("--blockbuster-mode=raise", "-v")
    result.stdout.fnmatch_lines_random(
        [
            "*test_swallowed?trio? FAILED*",
            "*test_swallowed?asyncio? FAILED*",
            "*test_blocking_fixture?trio? ERROR*",
            "*test_clean?trio? PASSED*",
            "*at test_blocking.py:25 in test_swallowed*",
            "*at test_blocking.py:17 in blocking_fixture*",
        ]
    )
    result.assert_outcomes(passed=2, failed=2, errors=2)


def test_blockbuster_fixture_yields_a_raise_guard(pytester: pytest.Pytester) -> None:
    write(pytester, """
import time

import pytest


@pytest.mark.asyncio
async def test_checks_and_acknowledges(blockbuster):
    assert blockbuster.mode == "raise" and blockbuster.active
    with pytest.raises(Exception, match="time.sleep"):
        time.sleep(0.01)
    assert [v.call for v in blockbuster.violations] == ["time.sleep"]
    blockbuster.clear()


@pytest.mark.asyncio
async def test_forgets_to_acknowledge(blockbuster):
    with pytest.raises(Exception):
        time.sleep(0.01)


@pytest.mark.asyncio
@pytest.mark.blockbuster
async def test_bare_marker_means_raise_too():
    try:
        time.sleep(0.01)
    except Exception:
        pass
""")  # fmt: skip
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(
        [
            "*at test_blocking.py:18 in test_forgets_to_acknowledge*",
            "*at test_blocking.py:25 in test_bare_marker_means_raise_too*",
        ]
    )
    result.assert_outcomes(passed=1, failed=2)


def test_a_guard_the_test_opens_itself_decides(pytester: pytest.Pytester) -> None:
    write(pytester, """
import time

import pytest

import blockbuster_lite as bl


@pytest.mark.asyncio
async def test_expects_the_error():
    with bl.intercept("raise"), pytest.raises(bl.BlockingCallError):
        time.sleep(0.01)


@pytest.mark.asyncio
async def test_relaxes_a_block():
    with bl.intercept("log"):
        time.sleep(0.01)
""")  # fmt: skip
    pytester.runpytest_subprocess("--blockbuster-mode=raise").assert_outcomes(passed=2)


PROJECT_FIXTURE_CONFTEST = """
import pytest


@pytest.fixture(autouse=True)
def blockbuster(request):
    # blockbuster's README recipe, or a project's own: yields nothing for unchecked tests
    yield None
"""


def test_a_project_fixture_named_blockbuster_means_nothing_to_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(PROJECT_FIXTURE_CONFTEST)
    write(pytester, """
import time

import pytest


@pytest.mark.asyncio
async def test_autouse_project_fixture(blockbuster):
    assert blockbuster is None
    time.sleep(0.001)
    assert type(time.sleep).__name__ == "builtin_function_or_method"


@pytest.mark.asyncio
async def test_requested_by_name(blockbuster):
    time.sleep(0.001)
""")  # fmt: skip
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["blockbuster_lite: mode=off (from default)"])
    result.assert_outcomes(passed=2)


def test_the_plugins_own_surfaces_still_work_beside_a_project_fixture(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(PROJECT_FIXTURE_CONFTEST)
    write(pytester, """
import time

import pytest


@pytest.mark.asyncio
@pytest.mark.blockbuster
async def test_marked():
    time.sleep(0.001)


@pytest.mark.asyncio
async def test_unmarked(blockbuster):
    assert blockbuster is None
    time.sleep(0.001)
""")  # fmt: skip
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["*Blocking call to time.sleep() *test_marked*"])
    result.assert_outcomes(passed=1, failed=1)
    result = pytester.runpytest_subprocess("--blockbuster-mode=raise")
    result.assert_outcomes(failed=2)


def test_an_override_that_requests_ours_still_uses_ours(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
import pytest


@pytest.fixture
def blockbuster(blockbuster):
    blockbuster.seen_by_project = True
    return blockbuster
""")  # fmt: skip
    write(pytester, """
import time

import pytest


@pytest.mark.asyncio
async def test_checked(blockbuster):
    assert blockbuster.seen_by_project and blockbuster.mode == "raise"
    time.sleep(0.001)
""")  # fmt: skip
    result = pytester.runpytest_subprocess()
    result.stdout.fnmatch_lines(["*Blocking call to time.sleep() *test_checked*"])
    result.assert_outcomes(failed=1)


EARLY_BINDING_TESTS = """
import asyncio
from time import sleep

import pytest
from helper_binds_early import nap


@pytest.mark.asyncio
async def test_module_level_name():
    sleep(0.01)


@pytest.mark.asyncio
async def test_conftest_helper():
    nap()


@pytest.mark.asyncio
async def test_clean():
    await asyncio.sleep(0)
    sleep(0)
"""

EARLY_CONFTEST = """
import time
_sleep = time.sleep
"""

EARLY_HELPER = """
from time import sleep


def nap():
    sleep(0.01)
"""


@pytest.mark.parametrize(
    ("args", "ini"),
    [(("--blockbuster-mode=raise",), ""), ((), "blockbuster_mode = raise")],
)
def test_names_bound_at_import_time_are_caught(
    pytester: pytest.Pytester, args: tuple[str, ...], ini: str
) -> None:
    write(pytester, EARLY_BINDING_TESTS, ini)
    pytester.makeconftest(EARLY_CONFTEST)
    pytester.makepyfile(helper_binds_early=EARLY_HELPER)
    result = pytester.runpytest_subprocess(*args)
    result.stdout.fnmatch_lines(["*Blocking call to time.sleep() in async context*"])
    result.assert_outcomes(passed=1, failed=2)


def test_markers_alone_catch_names_bound_at_import_time(pytester: pytest.Pytester) -> None:
    write(pytester, EARLY_BINDING_TESTS.replace("@pytest.mark.asyncio\nasync def test_module",
          "@pytest.mark.blockbuster\n@pytest.mark.asyncio\nasync def test_module"))  # fmt: skip
    pytester.makepyfile(helper_binds_early=EARLY_HELPER)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2, failed=1)


def test_patches_are_installed_once_for_the_run_and_mode_off_installs_nothing(
    pytester: pytest.Pytester,
) -> None:
    write(pytester, """
import time

import wrapt

def test_patched_during_collection_and_tests():
    assert isinstance(time.sleep, wrapt.FunctionWrapper)

PATCHED_AT_IMPORT = isinstance(time.sleep, wrapt.FunctionWrapper)

def test_patched_at_import():
    assert PATCHED_AT_IMPORT
""")  # fmt: skip
    pytester.runpytest_subprocess("--blockbuster-mode=warn").assert_outcomes(passed=2)
    pytester.runpytest_subprocess("--blockbuster-mode=off").assert_outcomes(failed=2)


def test_the_entry_point_module_exports_every_hook() -> None:
    # pytest registers blockbuster_lite.pytest_plugin only: a hook left out of it never runs
    import blockbuster_lite.integrations.pytest_plugin as implementation
    import blockbuster_lite.pytest_plugin as entry_point

    hooks = {name for name in vars(implementation) if name.startswith("pytest_")}
    hooks.discard("pytest_plugins")
    assert hooks and hooks <= set(vars(entry_point))
    assert all(getattr(entry_point, name) is getattr(implementation, name) for name in hooks)
    assert entry_point.blockbuster is implementation.blockbuster


class _Pytest7Config:
    """What pytest 7.4 answers for an ini key registered with ``default=None``: ``""`` when no
    ini file sets it, so unset and set-to-blank look alike through ``getini`` alone."""

    def __init__(self, inicfg: dict[str, str], override_ini: list[str] | None) -> None:
        self.inicfg = inicfg
        self.option = type("Option", (), {"override_ini": override_ini})()

    def getini(self, name: str) -> str:
        for item in self.option.override_ini or ():
            key, _, value = item.partition("=")
            if key.strip() == name:
                return value
        return self.inicfg.get(name, "")


@pytest.mark.parametrize(
    ("inicfg", "override", "expected"),
    [
        ({}, None, None),  # not set anywhere: pytest 7's "" is not a blank mode given on purpose
        ({"other": "x"}, ["other=y"], None),
        ({"blockbuster_mode": ""}, None, ""),  # a blank line in the ini file: refused later
        ({}, ["blockbuster_mode="], ""),  # -o blockbuster_mode= : refused later
        ({"blockbuster_mode": "raise"}, None, "raise"),
        ({}, ["blockbuster_mode=warn"], "warn"),
    ],
)
def test_an_ini_key_pytest_7_leaves_unset_reads_as_unset(
    inicfg: dict[str, str], override: list[str] | None, expected: str | None
) -> None:
    from blockbuster_lite.integrations.pytest_watchdog import ini_value

    config: Any = _Pytest7Config(inicfg, override)
    assert ini_value(config, "blockbuster_mode") == expected
