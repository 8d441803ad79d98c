"""pytest plugin: run tests under a guard; fail a test that made a blocking call in raise mode.

Settings, highest precedence first: ``@pytest.mark.blockbuster(mode=..., allow=[...])`` on the
test, ``--blockbuster-mode``, ``BLOCKBUSTER_LITE_MODE``, the ini key ``blockbuster_mode``, and the
default ``off``, so installing the package changes no test suite until asked. A test that
requests the ``blockbuster`` fixture, or carries the marker without a mode, defaults to ``raise``
instead. Allow rules come from ``BLOCKBUSTER_LITE_ALLOW`` (or else the ini key
``blockbuster_allow``), plus the marker's own; ``BLOCKBUSTER_LITE_SCOPE`` applies too.

Each test gets a fresh guard for its setup, call and teardown, so blocking calls in async fixtures
(pytest-asyncio, anyio) count as well. Sync tests run no loop and are never flagged. In raise
mode a test fails when a blocking call was made while its guard decided, even when the code under
test swallowed the ``BlockingCallError`` (FastAPI's 500, an ``except Exception``); the failure
lists each call and site. A test that checks them on purpose acknowledges them with
``blockbuster.clear()``. Calls decided by a guard the test opened itself (``with intercept(...)``)
are that test's business and do not fail it. Warn mode reports through pytest's warnings summary,
log mode through captured logs.

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

import os
import sys
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..core.guard import Guard
    from ..core.report import Violation

__all__ = ["MODE_HELP", "Settings", "resolve_settings"]

MODE_HELP = "blocking-call sanitizer mode for tests: off (default), log, warn or raise"
ALLOW_HELP = (
    "blocking-call sanitizer allow rules, one per line: module, path/file.py or "
    "path/file.py:function"
)
MARKER_HELP = (
    "blockbuster(mode=..., allow=[...], scope=None): blocking-call sanitizer settings for this "
    "test; mode defaults to the session's, or raise when the session's is off by default; "
    "mode='off' exempts the test"
)
# Repeated from blockbuster_lite._guard so that a session with the plugin off imports nothing.
ENV_MODE = "BLOCKBUSTER_LITE_MODE"
ENV_ALLOW = "BLOCKBUSTER_LITE_ALLOW"
ENV_SCOPE = "BLOCKBUSTER_LITE_SCOPE"
DEFAULT_SOURCE = "default"


@dataclass(frozen=True)
class Settings:
    """Session-wide settings, and where each came from."""

    mode: str
    source: str
    allow: tuple[str, ...] = ()
    allow_source: str = ""
    scope: tuple[str, ...] | None = None


@dataclass
class _TestRun:
    guard: Guard
    #: Violations this test's guard decided in raise mode (swallowed or not).
    raised: list[Violation] = field(default_factory=list)


_settings_key = pytest.StashKey[Settings]()
_run_key = pytest.StashKey[_TestRun]()
_current: _TestRun | None = None
_installed_key = pytest.StashKey[bool]()


TestSettings = tuple[str, tuple[str, ...], tuple[str, ...] | None]  # mode, allow, scope


def _validate(
    mode: str,
    allow: Iterable[str],
    scope: str | Iterable[str] | None,
    source: str,
    allow_source: str,
    scope_source: str = ENV_SCOPE,
) -> TestSettings:
    """Parse settings (importing the package only for a mode other than off)."""
    allow = tuple(allow)
    if mode.strip().lower() == "off" and not allow and scope is None:
        return "off", (), None
    from ..core.config import ConfigError, Mode, parse_allow, parse_mode, parse_scope

    try:
        parsed = parse_mode(mode, source)
        rules = parse_allow(allow, allow_source or source)
        parsed_scope = parse_scope(scope, scope_source)
        if parsed is Mode.OFFLOAD:
            from ..core.guard import require_offload

            require_offload(source)
    except ConfigError as exc:
        raise pytest.UsageError(f"blockbuster_lite: {exc}") from None
    return parsed.value, tuple(rule.text for rule in rules), parsed_scope


def resolve_settings(config: pytest.Config) -> Settings:
    """Marker aside: --blockbuster-mode > BLOCKBUSTER_LITE_MODE > ini blockbuster_mode > off."""
    candidates = (
        (config.getoption("blockbuster_mode"), "--blockbuster-mode"),
        (os.environ.get(ENV_MODE), ENV_MODE),
        (config.getini("blockbuster_mode"), "ini option blockbuster_mode"),
    )
    mode, source = next(
        ((value, name) for value, name in candidates if value and value.strip()),
        ("off", DEFAULT_SOURCE),
    )
    env_allow = os.environ.get(ENV_ALLOW, "")
    if env_allow.strip():
        allow: list[str] = [rule for rule in env_allow.split(",") if rule.strip()]
        allow_source = ENV_ALLOW
    else:
        allow = list(config.getini("blockbuster_allow"))
        allow_source = "ini option blockbuster_allow"
    scope = os.environ.get(ENV_SCOPE) or None
    mode, rules, parsed_scope = _validate(mode, allow, scope, source, allow_source)
    return Settings(mode, source, rules, allow_source if rules else "", parsed_scope)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("blockbuster", "blockbuster_lite: blocking calls in async code")
    group.addoption(
        "--blockbuster-mode", dest="blockbuster_mode", default=None, metavar="MODE",
        help=MODE_HELP,
    )  # fmt: skip
    parser.addini("blockbuster_mode", MODE_HELP, default="")
    parser.addini("blockbuster_allow", ALLOW_HELP, type="linelist", default=[])


def _early_mode(config: pytest.Config) -> str:
    """The session's mode as known before conftest files load (option > env > ini)."""
    option = getattr(config.known_args_namespace, "blockbuster_mode", None)
    try:
        ini = config.getini("blockbuster_mode")
    except (ValueError, KeyError):
        ini = ""
    for value in (option, os.environ.get(ENV_MODE), ini):
        if value and str(value).strip():
            return str(value).strip().lower()
    return "off"


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
    if _early_mode(early_config) != "off":
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
        elif "blockbuster" in getattr(item, "fixturenames", ()):
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
    return line


def _test_settings(item: pytest.Item) -> TestSettings | None:
    """This test's (mode, allow, scope); None when nothing asks for the sanitizer."""
    settings = item.config.stash[_settings_key]
    mode, allow, scope = settings.mode, settings.allow, settings.scope
    configured = settings.source != DEFAULT_SOURCE
    if not configured and "blockbuster" in getattr(item, "fixturenames", ()):
        mode, configured = "raise", True
    marker = item.get_closest_marker("blockbuster")
    if marker is None:
        return (mode, allow, scope) if configured else None
    source = f"@pytest.mark.blockbuster on {item.nodeid}"
    kwargs = dict(marker.kwargs)
    if marker.args:
        kwargs.setdefault("mode", marker.args[0])
    if set(kwargs) - {"mode", "allow", "scope"} or len(marker.args) > 1:
        pytest.fail(
            f"blockbuster_lite: {source} takes mode=, allow= and scope= only", pytrace=False
        )
    marker_allow = kwargs.get("allow", ())
    marker_allow = [marker_allow] if isinstance(marker_allow, str) else list(marker_allow)
    try:
        mode = str(kwargs.get("mode", mode if configured else "raise"))
        scope = kwargs.get("scope", scope)
        return _validate(mode, (*allow, *marker_allow), scope, source, source, source)
    except pytest.UsageError as exc:
        pytest.fail(str(exc), pytrace=False)


def _observe(violation: Violation) -> None:
    """Keep the raise-mode violations decided by the running test's own guard."""
    from ..core.config import Mode
    from ..core.state import state

    run = _current
    if run is not None and violation.action is Mode.RAISE and state.guards[-1:] == (run.guard,):
        run.raised.append(violation)


def _begin(item: pytest.Item) -> None:
    global _current
    settings = _test_settings(item)
    if settings is None:  # the plugin is off: leave any guard the suite set up alone
        return
    mode, allow, scope = settings
    state_module = sys.modules.get("blockbuster_lite.core.state")
    others_active = state_module is not None and bool(state_module.state.guards)
    wants_fixture = "blockbuster" in getattr(item, "fixturenames", ())
    if mode == "off" and not others_active and not wants_fixture:
        return  # an "off" guard only matters over another guard (BLOCKBUSTER_LITE_MODE's)
    from ..core.guard import Guard
    from ..core.state import state

    if _observe not in state.observers:
        state.observers = (*state.observers, _observe)
    run = _TestRun(Guard(mode, allow=allow, scope=scope, source="pytest plugin"))
    item.stash[_run_key] = run
    _current = run
    run.guard.start()


def _end(item: pytest.Item) -> None:
    global _current
    run = item.stash.get(_run_key, None)
    if run is not None:
        run.guard.stop()
        del item.stash[_run_key]
    _current = None


def _describe(violations: list[Violation], *, caught: bool = False) -> str:
    from ..core.report import format_message

    counts: dict[tuple[str, str, int], int] = {}
    first: dict[tuple[str, str, int], Violation] = {}
    for violation in violations:
        key = (violation.call, violation.filename, violation.lineno)
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, violation)
    head = "blockbuster_lite: blocking call(s) on the event loop (raise mode)"
    if caught:
        head += "; the code under test caught the error, the test fails anyway"
    lines = [head + ":"]
    for key, violation in first.items():
        times = f" [x{counts[key]}]" if counts[key] > 1 else ""
        lines.append(f"  {format_message(violation)}{times}")
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
        new = _unacknowledged(run, seen)
        told = getattr(exc, "violation", None)
        if new and not (len(new) == 1 and told is new[0]):
            item.add_report_section(when, "blockbuster", _describe(new))
        raise
    new = _unacknowledged(run, seen)
    if new:
        pytest.fail(_describe(new, caught=True), pytrace=False)
    return result


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
