"""Every setting and where it came from: parsing and validation for arguments, env, ini, options.

Each parser takes the raw value and a ``source`` naming where it came from (``argument 'mode'``,
``BLOCKBUSTER_LITE_MODE``, ``--blockbuster-mode``); a bad value raises ``ConfigError`` naming the
value, the source and what is allowed: ``invalid watchdog threshold 'inf' from
BLOCKBUSTER_LITE_WATCHDOG_MS: expected a finite number of milliseconds from 1 to 3600000``.

Every setting of every source goes through these parsers: function arguments (``intercept``,
``activate``, the middleware, the offload setters), environment variables, the runner's options
and pytest's option, ini keys and marker. What each accepts:

* text (environment, options, ini): stripped; an empty environment variable means "not set", but
  a value given explicitly (an option, an ini key present) must not be blank;
* numbers: finite (no ``inf``, ``nan``, ``1e400``), in range, and of the right kind: arguments
  take ``int``/``float`` only (not ``bool``, not a string), counts take whole numbers only;
* modes, flags, allow rules, scope entries: non-empty strings of the documented shapes.
"""

from __future__ import annotations

import enum
import math
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ENV_ALLOW",
    "ENV_DEFAULT_ALLOW",
    "ENV_MODE",
    "ENV_SCOPE",
    "ENV_WATCHDOG_MS",
    "AllowRule",
    "ConfigError",
    "Mode",
    "parse_allow",
    "parse_bool",
    "parse_count",
    "parse_flag",
    "parse_mode",
    "parse_scope",
    "parse_seconds",
    "parse_watchdog_ms",
    "parse_watchdog_seconds",
    "settings_from_env",
]


class ConfigError(ValueError):
    """A setting was invalid; the message names the value and where it came from."""


def invalid(what: str, value: object, source: str, expected: str) -> ConfigError:
    """The error for a bad setting: names the value, where it came from and what is allowed."""
    return ConfigError(f"invalid {what} {_shown(value)} from {source}: expected {expected}")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
    raise ConfigError(f"invalid mode {_shown(value)} from {source} (expected one of: {choices})")


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})


def parse_flag(value: object, source: str) -> bool:
    """A yes/no setting: 1/0, true/false, yes/no, on/off (any case); "" (unset) is no."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE and (text or not value):  # blank but not empty: a typo, not "unset"
            return False
    raise ConfigError(
        f"invalid value {_shown(value)} from {source} (expected 1/0, true/false, yes/no, on/off)"
    )


def _number(value: object, source: str, what: str, expected: str, text_scale: float | None) -> float:
    """A finite float from a number, or from text (scaled: ms -> s) when ``text_scale`` is set."""
    if isinstance(value, str) and text_scale is not None:
        try:
            number = float(value.strip()) * text_scale
        except ValueError:
            raise invalid(what, value, source, expected) from None
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise invalid(what, value, source, expected) from None
    else:
        raise invalid(what, value, source, expected)
    if not math.isfinite(number):
        raise invalid(what, value, source, expected)
    return number


#: Thresholds (watchdog stalls, pool saturation), in seconds: 1 ms to one hour.
MIN_THRESHOLD_S = 0.001
MAX_THRESHOLD_S = 3600.0


def parse_seconds(
    value: object,
    source: str,
    what: str = "watchdog threshold",
    *,
    text_in_ms: bool = False,
    minimum: float = MIN_THRESHOLD_S,
    maximum: float = MAX_THRESHOLD_S,
) -> float:
    """A duration in seconds, finite and within ``minimum``..``maximum``.

    Arguments are numbers of seconds (any real number: ``int``, ``float``, ``Fraction``...; not
    ``bool``, not a string). With
    ``text_in_ms`` (environment, options, ini) the value is text in milliseconds.
    """
    if text_in_ms:
        expected = f"a finite number of milliseconds from {minimum * 1000:.10g} to {maximum * 1000:.10g}"
    else:
        expected = f"a finite number of seconds from {minimum:.10g} to {maximum:.10g}"
    seconds = _number(value, source, what, expected, 0.001 if text_in_ms else None)
    # a little slack: "1" ms is 0.001 s only after a division
    if not minimum * (1 - 1e-9) <= seconds <= maximum * (1 + 1e-9):
        raise invalid(what, value, source, expected)
    return seconds


def parse_count(
    value: object,
    source: str,
    what: str,
    *,
    minimum: int = 1,
    maximum: int = 10_000,
    text: bool = True,
) -> int:
    """A whole number within ``minimum``..``maximum``, from an ``int`` or (``text``) from text."""
    expected = f"a whole number from {minimum} to {maximum}"
    number: object = value
    if isinstance(value, str) and text:
        try:
            number = int(value.strip())
        except ValueError:
            raise invalid(what, value, source, expected) from None
    if isinstance(number, bool) or not isinstance(number, numbers.Integral):
        raise invalid(what, value, source, expected)
    whole = int(number)
    if not minimum <= whole <= maximum:
        raise invalid(what, value, source, expected)
    return whole


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
    if not isinstance(text, str) or not text.strip() or not text.isprintable():
        raise ConfigError(
            f"invalid allow rule {_shown(text)} from {source}: expected a non-empty string "
            "without control characters"
        )
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
    elif isinstance(rules, (bytes, bytearray, Mapping)):
        raise ConfigError(
            f"invalid allow rules {_shown(rules)} from {source}: expected a list of strings"
        )
    else:
        try:
            items = list(rules)
        except TypeError:
            raise ConfigError(
                f"invalid allow rules {_shown(rules)} from {source}: expected a list of strings"
            ) from None
    return tuple(_parse_rule(item, source) for item in items)


def parse_scope(
    scope: Iterable[str] | str | None, source: str = "argument 'scope'"
) -> tuple[str, ...] | None:
    """Parse a scope (packages whose calls are checked); None means everything.

    An entry ``-package`` excludes that package's frames from counting as in scope (blockbuster's
    ``excluded_modules``): ``["anyio", "-anyio.pytest_plugin"]`` checks anyio's code, not a test
    that anyio's own test runner drives.
    """
    if scope is None:
        return None
    expected = "package names, as a list of strings or a comma-separated string"
    if isinstance(scope, str):
        items: list[object] = [part for part in scope.split(",") if part.strip()]
    elif isinstance(scope, (bytes, bytearray, Mapping)):
        raise invalid("scope", scope, source, expected)
    else:
        try:
            items = list(scope)
        except TypeError:
            raise invalid("scope", scope, source, expected) from None
    if not items:
        if isinstance(scope, str) and scope:  # blank: a mistake, not "everything"
            raise invalid("scope", scope, source, expected)
        return None  # [] or "": no scope, everything is checked
    result = []
    for item in items:
        name = item.strip().removeprefix("-") if isinstance(item, str) else ""
        if not isinstance(item, str) or not all(p.isidentifier() for p in name.split(".")):
            raise ConfigError(
                f"invalid scope entry {_shown(item)} from {source}: expected a package name "
                "(or '-package' to exclude one)"
            )
        result.append(item.strip())
    if all(item.startswith("-") for item in result):
        raise ConfigError(
            f"invalid scope {_shown(scope)} from {source}: only exclusions ('-package'), so "
            "nothing would be checked; name the packages to check too (scope=['myapp', "
            "'-myapp.testing'])"
        )
    return tuple(result)


ENV_MODE = "BLOCKBUSTER_LITE_MODE"
ENV_ALLOW = "BLOCKBUSTER_LITE_ALLOW"
ENV_SCOPE = "BLOCKBUSTER_LITE_SCOPE"
ENV_WATCHDOG_MS = "BLOCKBUSTER_LITE_WATCHDOG_MS"
ENV_DEFAULT_ALLOW = "BLOCKBUSTER_LITE_DEFAULT_ALLOW"


def parse_bool(value: object, source: str, default: bool = True) -> bool:
    """``parse_flag`` for a setting that is on unless turned off: "" (unset) means ``default``."""
    if value == "":
        return default
    return parse_flag(value, source)


def parse_watchdog_ms(value: str, source: str) -> float | None:
    """The watchdog threshold in seconds from text in milliseconds; None for "" (not set)."""
    if value == "":
        return None
    return parse_seconds(value, source, "watchdog threshold", text_in_ms=True)


def parse_watchdog_seconds(value: object, source: str) -> float | None:
    """The ``watchdog=`` argument: None (off) or a number of seconds."""
    if value is None:
        return None
    return parse_seconds(value, source, "watchdog threshold")


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
        "default_allow": parse_bool(env.get(ENV_DEFAULT_ALLOW, ""), ENV_DEFAULT_ALLOW),
    }
    if mode is Mode.OFF:
        return None
    return settings
