"""The pytest plugin's session settings and where each came from.

``--blockbuster-mode`` > ``BLOCKBUSTER_LITE_MODE`` > the ini key ``blockbuster_mode`` > off;
allow rules from ``BLOCKBUSTER_LITE_ALLOW`` or the ini key ``blockbuster_allow``; the scope from
``BLOCKBUSTER_LITE_SCOPE``; ``BLOCKBUSTER_LITE_DEFAULT_ALLOW``; the watchdog threshold
(``pytest_watchdog``). A session whose mode is off imports nothing else of the package.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from .pytest_watchdog import ini_value, resolve_watchdog

__all__ = ["MODE_HELP", "Settings", "early_mode", "resolve_settings", "validate"]

MODE_HELP = "blocking-call sanitizer mode for tests: off (default), log, warn or raise"
ALLOW_HELP = (
    "blocking-call sanitizer allow rules, one per line: module, path/file.py or "
    "path/file.py:function"
)
MARKER_HELP = (
    "blockbuster(mode=..., allow=[...], scope=None, watchdog=None): blocking-call sanitizer "
    "settings for this test; mode defaults to the session's, or raise when the session's is "
    "off by default; mode='off' exempts the test; watchdog=0.1 reports loop stalls >= 0.1 s"
)
# Repeated from blockbuster_lite._guard so that a session with the plugin off imports nothing.
ENV_MODE = "BLOCKBUSTER_LITE_MODE"
ENV_ALLOW = "BLOCKBUSTER_LITE_ALLOW"
ENV_SCOPE = "BLOCKBUSTER_LITE_SCOPE"
ENV_DEFAULT_ALLOW = "BLOCKBUSTER_LITE_DEFAULT_ALLOW"
DEFAULT_SOURCE = "default"


@dataclass(frozen=True)
class Settings:
    """Session-wide settings, and where each came from."""

    mode: str
    source: str
    allow: tuple[str, ...] = ()
    allow_source: str = ""
    scope: tuple[str, ...] | None = None
    #: False (BLOCKBUSTER_LITE_DEFAULT_ALLOW=0): the known-trivial library calls are checked too
    default_allow: bool = True
    watchdog: float | None = None  # seconds (see pytest_watchdog)
    watchdog_source: str = ""


TestSettings = tuple[str, tuple[str, ...], tuple[str, ...] | None]  # mode, allow, scope


def validate(
    mode: str,
    allow: Iterable[str],
    scope: str | Iterable[str] | None,
    source: str,
    allow_source: str,
    scope_source: str = ENV_SCOPE,
) -> TestSettings:
    """Parse settings (importing the package only for a mode other than off)."""
    allow = tuple(allow)
    if isinstance(mode, str) and mode.strip().lower() == "off" and not allow and scope is None:
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
    # A value given explicitly (the option, an ini key present) counts even when blank, and is
    # then refused: " " must not mean "off". An empty environment variable means "not set".
    candidates = (
        (config.getoption("blockbuster_mode"), "--blockbuster-mode"),
        ((os.environ.get(ENV_MODE) or "").strip() or None, ENV_MODE),  # as the start-up hook
        (ini_value(config, "blockbuster_mode"), "ini option blockbuster_mode"),
    )
    mode, source = next(
        ((value, name) for value, name in candidates if value is not None),
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
    mode, rules, parsed_scope = validate(mode, allow, scope, source, allow_source)
    default_allow = True
    if os.environ.get(ENV_DEFAULT_ALLOW, "").strip():
        from ..core.config import ConfigError, parse_bool

        try:
            default_allow = parse_bool(os.environ[ENV_DEFAULT_ALLOW], ENV_DEFAULT_ALLOW)
        except ConfigError as exc:
            raise pytest.UsageError(f"blockbuster_lite: {exc}") from None
    watchdog, watchdog_source = resolve_watchdog(config)
    return Settings(mode, source, rules, allow_source if rules else "", parsed_scope,
                    default_allow, watchdog, watchdog_source)  # fmt: skip


def early_mode(config: pytest.Config) -> str:
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
