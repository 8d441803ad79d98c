"""Every setting and where it came from: parsing and validation for arguments, env, ini, options.

Each parser takes the raw value and a ``source`` naming where it came from (``argument 'mode'``,
``BLOCKBUSTER_LITE_MODE``, ``--blockbuster-mode``); a bad value raises ``ConfigError`` naming the
value, the source and what is allowed.
"""

from __future__ import annotations

import enum
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENV_ALLOW",
    "ENV_MODE",
    "ENV_SCOPE",
    "ENV_WATCHDOG_MS",
    "AllowRule",
    "ConfigError",
    "Mode",
    "parse_allow",
    "parse_mode",
    "parse_scope",
    "parse_watchdog_ms",
    "settings_from_env",
]


class ConfigError(ValueError):
    """A setting was invalid; the message names the value and where it came from."""


class Mode(str, enum.Enum):
    """What a guard does with a blocking call made on the event-loop thread."""

    OFF = "off"
    LOG = "log"
    WARN = "warn"
    RAISE = "raise"
    OFFLOAD = "offload"

    def __str__(self) -> str:
        return self.value


def parse_mode(value: Mode | str, source: str = "argument 'mode'") -> Mode:
    """Return the Mode for ``value``; reject anything else with a message naming ``source``."""
    if isinstance(value, Mode):
        return value
    if isinstance(value, str):
        try:
            return Mode(value.strip().lower())
        except ValueError:
            pass
    choices = ", ".join(mode.value for mode in Mode)
    raise ConfigError(f"invalid mode {value!r} from {source} (expected one of: {choices})")


@dataclass(frozen=True)
class AllowRule:
    """One allow rule: ``package.module``, ``path/file.py`` or ``path/file.py:function``."""

    text: str
    module: str | None = None
    path: str | None = None
    function: str | None = None

    def matches(self, module: str, filename: str, qualname: str) -> bool:
        if self.module is not None:
            return module == self.module or module.startswith(self.module + ".")
        assert self.path is not None
        if not (filename == self.path or filename.endswith("/" + self.path)):
            return False
        if self.function is None:
            return True
        return qualname == self.function or qualname.rsplit(".", 1)[-1] == self.function


def _parse_rule(text: object, source: str) -> AllowRule:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"invalid allow rule {text!r} from {source}: expected a non-empty string")
    rule = text.strip()
    path, sep, function = rule.partition(":")
    if sep and (not function.replace(".", "").replace("_", "a").isalnum() or not path):
        raise ConfigError(
            f"invalid allow rule {text!r} from {source}: expected 'path/file.py:function'"
        )
    if path.endswith(".py") or "/" in path or os.sep in path:
        if not path.endswith(".py"):
            raise ConfigError(
                f"invalid allow rule {text!r} from {source}: a path rule must name a .py file"
            )
        return AllowRule(rule, path=path.replace(os.sep, "/"), function=function or None)
    if sep:
        raise ConfigError(
            f"invalid allow rule {text!r} from {source}: ':function' needs a path/file.py before it"
        )
    if not all(part.isidentifier() for part in path.split(".")):
        raise ConfigError(
            f"invalid allow rule {text!r} from {source}: expected a module name "
            "('pkg.module'), a file ('path/file.py') or 'path/file.py:function'"
        )
    return AllowRule(rule, module=path)


def parse_allow(rules: Iterable[str] | str, source: str = "argument 'allow'") -> tuple[AllowRule, ...]:
    """Parse allow rules given as an iterable or a comma-separated string."""
    if isinstance(rules, str):
        items: list[object] = [part for part in rules.split(",") if part.strip()]
    else:
        try:
            items = list(rules)
        except TypeError:
            raise ConfigError(
                f"invalid allow rules {rules!r} from {source}: expected a list of strings"
            ) from None
    return tuple(_parse_rule(item, source) for item in items)


def parse_scope(
    scope: Iterable[str] | str | None, source: str = "argument 'scope'"
) -> tuple[str, ...] | None:
    """Parse a scope (packages whose calls are checked); None means everything."""
    if scope is None:
        return None
    items = scope.split(",") if isinstance(scope, str) else list(scope)
    result = []
    for item in items:
        if not isinstance(item, str) or not all(p.isidentifier() for p in item.strip().split(".")):
            raise ConfigError(f"invalid scope entry {item!r} from {source}: expected a package name")
        result.append(item.strip())
    return tuple(result) or None


ENV_MODE = "BLOCKBUSTER_LITE_MODE"
ENV_ALLOW = "BLOCKBUSTER_LITE_ALLOW"
ENV_SCOPE = "BLOCKBUSTER_LITE_SCOPE"
ENV_WATCHDOG_MS = "BLOCKBUSTER_LITE_WATCHDOG_MS"


def parse_watchdog_ms(value: str, source: str) -> float | None:
    text = value.strip()
    if not text:
        return None
    try:
        milliseconds = float(text)
    except ValueError:
        raise ConfigError(
            f"invalid watchdog threshold {value!r} from {source}: expected milliseconds"
        ) from None
    if not math.isfinite(milliseconds):
        raise ConfigError(
            f"invalid watchdog threshold {value!r} from {source}: must be a finite number"
        )
    if not milliseconds > 0:
        raise ConfigError(f"invalid watchdog threshold {value!r} from {source}: must be > 0")
    return milliseconds / 1000


def settings_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The settings the BLOCKBUSTER_LITE_* variables ask for, validated; None when unset/off."""
    env = os.environ if environ is None else environ
    raw_mode = env.get(ENV_MODE, "").strip()
    if not raw_mode:
        return None
    mode = parse_mode(raw_mode, ENV_MODE)
    settings: dict[str, Any] = {
        "mode": mode,
        "allow": [rule.text for rule in parse_allow(env.get(ENV_ALLOW, ""), ENV_ALLOW)],
        "scope": parse_scope(env.get(ENV_SCOPE) or None, ENV_SCOPE),
        "watchdog": parse_watchdog_ms(env.get(ENV_WATCHDOG_MS, ""), ENV_WATCHDOG_MS),
    }
    if mode is Mode.OFF:
        return None
    return settings
