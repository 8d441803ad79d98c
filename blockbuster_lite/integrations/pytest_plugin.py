"""pytest plugin: run tests under a guard; fail a test that made a blocking call in raise mode.

Settings, highest precedence first: ``@pytest.mark.blockbuster(mode=..., allow=[...])`` on the
test, ``--blockbuster-mode``, ``BLOCKBUSTER_LITE_MODE``, the ini key ``blockbuster_mode``, and the
default ``off``, so installing the package changes no test suite until asked. A test that
requests our ``blockbuster`` fixture, or carries the marker without a mode, defaults to ``raise``
instead. A project's own fixture named ``blockbuster`` (blockbuster's README recipe) overrides
ours, pytest's rule, and then means nothing to the plugin: the plugin looks at the fixture
definition in force for the test, not at the name. Allow rules come from ``BLOCKBUSTER_LITE_ALLOW`` (or else the ini key
``blockbuster_allow``), plus the marker's own; ``BLOCKBUSTER_LITE_SCOPE`` applies too.

Each test gets a fresh guard for its setup, call and teardown, so blocking calls in async fixtures
(pytest-asyncio, anyio) count as well. Sync code with no loop is never flagged, but a sync test
that runs a loop is checked: ``TestClient`` runs the app on a loop in a portal thread. In raise
mode a test fails when a blocking call was made while its guard decided, even when the code under
test swallowed the ``BlockingCallError`` (FastAPI's 500, an ``except Exception``); the failure
lists each call and site. A test that checks them on purpose acknowledges them with
``blockbuster.clear()``. Calls decided by a guard the test opened itself (``with intercept(...)``)
are that test's business and do not fail it. Warn mode reports through pytest's warnings summary,
log mode through captured logs. At the end of the run the terminal summary lists the call sites
once each (``pytest_report``): raise-mode failures grouped per site with the first tests, and in
warn and log modes a per-site table with count, total and maximum time.

Patch early, decide late: when the session's mode is not off (option, ini or environment), the
patches are installed once for the whole run at the earliest hook, before conftest files and test
modules are imported, so a test module's import-time ``from time import sleep`` binds the
wrapper; per-test guards then only set the mode. When only markers (or the ``blockbuster``
fixture) ask for the sanitizer, the patches are installed once collection is done, and the names
test modules bound at import are rebound to the wrappers (``core/rebind.py``). Mode off with no
marker installs nothing.

When ``BLOCKBUSTER_LITE_MODE`` is set, the start-up hook has already activated a process guard;
the per-test guard is innermost and decides (an ``off`` test gets an ``off`` guard). With the
plugin off, no guard is created and nothing is patched.
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from .pytest_settings import (
    ALLOW_HELP,
    DEFAULT_SOURCE,
    MARKER_HELP,
    MODE_HELP,
    Settings,
    TestSettings,
    early_mode,
    resolve_settings,
    validate,
)
from .pytest_watchdog import WATCHDOG_HELP, describe_stall, marker_watchdog

if TYPE_CHECKING:
    from ..core.guard import Guard
    from ..core.report import Violation
    from .pytest_report import SuiteSites

__all__ = ["MODE_HELP", "Settings", "resolve_settings"]

@dataclass
class _TestRun:
    guard: Guard
    nodeid: str = ""
    #: Violations this test's guard decided in raise mode (swallowed or not).
    raised: list[Violation] = field(default_factory=list)


_settings_key = pytest.StashKey[Settings]()
_run_key = pytest.StashKey[_TestRun]()
_current: _TestRun | None = None
_sites: SuiteSites | None = None  # every call site the tests' own guards saw, for the summary
_installed_key = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("blockbuster", "blockbuster_lite: blocking calls in async code")
    group.addoption(
        "--blockbuster-mode", dest="blockbuster_mode", default=None, metavar="MODE",
        help=MODE_HELP,
    )  # fmt: skip
    parser.addini("blockbuster_mode", MODE_HELP, default=None)  # None: not in the ini file
    parser.addini("blockbuster_allow", ALLOW_HELP, type="linelist", default=[])
    group.addoption(
        "--blockbuster-watchdog-ms", dest="blockbuster_watchdog_ms", default=None, metavar="MS",
        help=WATCHDOG_HELP,
    )  # fmt: skip
    parser.addini("blockbuster_watchdog_ms", WATCHDOG_HELP, default=None)  # None: not in the file


def _install_for_the_run(config: pytest.Config) -> None:
    """Install the patches once, for the whole run (released in pytest_unconfigure)."""
    if config.stash.get(_installed_key, False):
        return
    from ..core.patcher import patcher

    patcher.acquire()
    config.stash[_installed_key] = True


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    # importing this module ran the package's __init__, which registered the catalogue
    if early_mode(early_config) != "off":
        _install_for_the_run(early_config)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.stash[_settings_key] = settings = resolve_settings(config)
    if settings.mode != "off":
        _install_for_the_run(config)  # a no-op when pytest_load_initial_conftests did it


def pytest_collection_finish(session: pytest.Session) -> None:
    """Markers or the fixture ask for the sanitizer: install once, rebinding what modules bound."""
    config = session.config
    if config.stash.get(_installed_key, False):
        return
    for item in session.items:
        marker = item.get_closest_marker("blockbuster")
        mode = None
        if marker is not None:
            mode = marker.kwargs.get("mode", marker.args[0] if marker.args else "raise")
        elif _wants_our_fixture(item):
            mode = "raise"
        if mode is not None and str(mode).strip().lower() != "off":
            _install_for_the_run(config)
            return


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_installed_key, False):
        from ..core.patcher import patcher

        config.stash[_installed_key] = False
        patcher.release()
    state_module = sys.modules.get("blockbuster_lite.core.state")
    if state_module is not None:
        state = state_module.state
        state.observers = tuple(o for o in state.observers if o is not _observe)


def pytest_report_header(config: pytest.Config) -> str:
    settings = config.stash[_settings_key]
    line = f"blockbuster_lite: mode={settings.mode} (from {settings.source})"
    if settings.allow:
        line += f", allow={','.join(settings.allow)} (from {settings.allow_source})"
    if settings.scope:
        line += f", scope={','.join(settings.scope)}"
    if settings.watchdog is not None:
        line += f", watchdog={settings.watchdog * 1000:g} ms (from {settings.watchdog_source})"
    return line


def _test_settings(item: pytest.Item) -> TestSettings | None:
    """This test's (mode, allow, scope); None when nothing asks for the sanitizer."""
    settings = item.config.stash[_settings_key]
    mode, allow, scope = settings.mode, settings.allow, settings.scope
    configured = settings.source != DEFAULT_SOURCE
    if not configured and _wants_our_fixture(item):
        mode, configured = "raise", True
    marker = item.get_closest_marker("blockbuster")
    if marker is None:
        return (mode, allow, scope) if configured else None
    source = f"@pytest.mark.blockbuster on {item.nodeid}"
    kwargs = dict(marker.kwargs)
    if marker.args:
        kwargs.setdefault("mode", marker.args[0])
    if set(kwargs) - {"mode", "allow", "scope", "watchdog"} or len(marker.args) > 1:
        pytest.fail(
            f"blockbuster_lite: {source} takes mode=, allow=, scope= and watchdog= only",
            pytrace=False,
        )
    marker_allow = kwargs.get("allow", ())
    if isinstance(marker_allow, str):
        marker_allow = [marker_allow]
    elif isinstance(marker_allow, (list, tuple, set, frozenset)):
        marker_allow = list(marker_allow)
    else:
        pytest.fail(
            f"blockbuster_lite: invalid allow rules {marker_allow!r} from {source}: expected a "
            "list of strings",
            pytrace=False,
        )
    try:
        mode = kwargs.get("mode", mode if configured else "raise")
        scope = kwargs.get("scope", scope)
        return validate(mode, (*allow, *marker_allow), scope, source, source, source)
    except pytest.UsageError as exc:
        pytest.fail(str(exc), pytrace=False)


def _wants_our_fixture(item: pytest.Item) -> bool:
    """The test uses the plugin's ``blockbuster`` fixture, not a project fixture of that name.

    The definitions are innermost last; an override that requests ``blockbuster`` itself (the
    parent-fixture pattern) still uses ours.
    """
    if "blockbuster" not in getattr(item, "fixturenames", ()):
        return False
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.get("blockbuster", ()) if info is not None else ()
    for definition in reversed(definitions):
        if getattr(definition.func, "__module__", None) == __name__:
            return True
        if "blockbuster" not in definition.argnames:
            return False
    return False


def _test_watchdog(item: pytest.Item) -> float | None:
    """This test's watchdog threshold in seconds: the marker's, else the session's."""
    watchdog = item.config.stash[_settings_key].watchdog
    marker = item.get_closest_marker("blockbuster")
    if marker is not None and "watchdog" in marker.kwargs:
        source = f"@pytest.mark.blockbuster on {item.nodeid}"
        watchdog = marker_watchdog(marker.kwargs["watchdog"], source)
    return watchdog


def _observe(violation: Violation) -> None:
    """Keep the raise-mode violations decided by the running test's own guard (and the
    stalls its watchdog saw while it was in raise mode: they fail the test too)."""
    from ..core.config import Mode
    from ..core.state import state

    run = _current
    if run is None or state.guards[-1:] != (run.guard,):
        return
    if violation.action is Mode.RAISE or (
        violation.kind == "stall" and run.guard.effective_mode() is Mode.RAISE
    ):
        run.raised.append(violation)  # reported at the end of the test, unless acknowledged
    elif _sites is not None:
        _sites.add(violation, run.nodeid)


def _begin(item: pytest.Item) -> None:
    global _current
    settings = _test_settings(item)
    watchdog = _test_watchdog(item)
    if settings is None and watchdog is not None:  # the watchdog alone: stalls are logged
        session = item.config.stash[_settings_key]
        settings = (session.mode, session.allow, session.scope)
    if settings is None:  # the plugin is off: leave any guard the suite set up alone
        return
    mode, allow, scope = settings
    state_module = sys.modules.get("blockbuster_lite.core.state")
    others_active = state_module is not None and bool(state_module.state.guards)
    wants_fixture = _wants_our_fixture(item)
    if mode == "off" and not others_active and not wants_fixture and watchdog is None:
        return  # an "off" guard only matters over another guard (BLOCKBUSTER_LITE_MODE's)
    from ..core.guard import Guard
    from ..core.state import state
    from .pytest_report import SuiteSites

    global _sites
    if _sites is None:
        _sites = SuiteSites()
    if _observe not in state.observers:
        state.observers = (*state.observers, _observe)
    default_allow = item.config.stash[_settings_key].default_allow
    guard = Guard(mode, allow=allow, scope=scope, watchdog=watchdog, source="pytest plugin",
                  default_allow=default_allow)  # fmt: skip
    run = _TestRun(guard, item.nodeid)
    item.stash[_run_key] = run
    _current = run
    run.guard.start()


def _end(item: pytest.Item) -> None:
    global _current
    run = item.stash.get(_run_key, None)
    if run is not None:
        run.guard.stop()
        del item.stash[_run_key]
        if _sites is not None:
            for violation in _unacknowledged(run, 0):
                _sites.add(violation, run.nodeid)
    _current = None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _sites:
        _sites.write(terminalreporter)


def _describe(violations: list[Violation], *, caught: bool = False) -> str:
    from ..core.report import format_message

    counts: dict[tuple[str, str, str, int, str], int] = {}
    first: dict[tuple[str, str, str, int, str], Violation] = {}
    for violation in violations:
        key = violation.report_key  # call family and site: not one line per port or statement
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, violation)
    head = "blockbuster_lite: blocking call(s) on the event loop (raise mode)"
    if all(v.kind == "stall" for v in violations):
        head, caught = "blockbuster_lite: the event loop stalled (raise mode)", False
    if caught:
        head += "; the code under test caught the error, the test fails anyway"
    lines = [head + ":"]
    for key, violation in first.items():
        times = f" [x{counts[key]}]" if counts[key] > 1 else ""
        lines.append(f"  {format_message(violation)}{times}")
        if violation.kind == "stall":
            lines.extend(describe_stall(violation))
    return "\n".join(lines)


def _checked_phase(item: pytest.Item, when: str) -> Generator[None, object, object]:
    """Run one phase; fail it if the test's guard raised and the phase still passed."""
    run = item.stash.get(_run_key, None)
    if run is None:
        return (yield)
    seen = len(run.raised)
    try:
        result = yield
    except BaseException as exc:
        _collect_stalls(run)
        new = _unacknowledged(run, seen)
        told = getattr(exc, "violation", None)
        if new and not (len(new) == 1 and told is new[0]):
            item.add_report_section(when, "blockbuster", _describe(new))
        raise
    _collect_stalls(run)
    new = _unacknowledged(run, seen)
    if new:
        pytest.fail(_describe(new, caught=True), pytrace=False)
    return result


def _collect_stalls(run: _TestRun) -> None:
    """Stalls that ended in this phase are reported in it (not by the monitor, later)."""
    if run.guard.watchdog is not None:
        from .pytest_watchdog import report_pending

        report_pending()


def _unacknowledged(run: _TestRun, seen: int) -> list[Violation]:
    """Raised since ``seen`` and still in the guard: ``blockbuster.clear()`` acknowledges them."""
    kept = {id(violation) for violation in run.guard.violations}
    return [violation for violation in run.raised[seen:] if id(violation) in kept]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    _begin(item)
    return (yield from _checked_phase(item, "setup"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _checked_phase(item, "call"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    try:
        return (yield from _checked_phase(item, "teardown"))
    finally:
        _end(item)


@pytest.fixture
def blockbuster(request: pytest.FixtureRequest) -> Guard:
    """The guard of this test (raise mode unless configured otherwise): ``.violations`` etc."""
    run: _TestRun | None = request.node.stash.get(_run_key, None)
    if run is None:
        raise pytest.UsageError("blockbuster_lite: the blockbuster fixture is for test functions")
    return run.guard
