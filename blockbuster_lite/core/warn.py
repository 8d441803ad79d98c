"""Warn mode's way through ``warnings``: the ``-W`` options CPython drops for our category, and
the rule that only a filter naming BlockingCallWarning itself turns a warning into an exception."""

from __future__ import annotations

from typing import Any

from .report import BlockingCallWarning, Violation, report_text

__all__ = ["apply_warning_options", "error_asked_for", "warn_violation"]

_WARNING_NAMES = frozenset(
    {"blockbuster_lite.BlockingCallWarning", "blockbuster_lite.core.report.BlockingCallWarning"}
)
_ACTIONS = ("default", "error", "ignore", "always", "module", "once")


def apply_warning_options(options: list[str]) -> None:
    """Apply ``-W``/``PYTHONWARNINGS`` entries that name our warning class.

    CPython parses those options before site-packages can be imported, so it drops a category
    from an installed package ("Invalid -W option ignored"); we apply them once we exist.
    """
    import warnings

    for option in options:
        parts = [part.strip() for part in option.split(":")]
        if len(parts) < 3 or parts[2] not in _WARNING_NAMES:
            continue
        action = next((a for a in _ACTIONS if parts[0] and a.startswith(parts[0])), None)
        lineno = parts[4] if len(parts) > 4 else ""
        if action is None or (lineno and not lineno.isdigit()):
            continue
        message = parts[1]
        module = parts[3] if len(parts) > 3 else ""
        warnings.filterwarnings(
            action,  # type: ignore[arg-type]
            message,
            BlockingCallWarning,
            f"{module}\\Z" if module else "",
            int(lineno or 0),
        )


def warn_violation(violation: Violation, module: str | None) -> None:
    """Issue the BlockingCallWarning for ``violation`` at its site, through ``warnings``' filters.

    Warn mode never raises into the program because of a blanket error filter (``-W error``,
    pytest's ``filterwarnings = error``, ``simplefilter("error")``): the warning is then shown as
    the ``default`` action would show it (``warnings.showwarning``: stderr, or pytest's warnings
    summary). Only an ``error`` filter whose category is ``BlockingCallWarning`` itself turns it
    into an exception: an explicit opt-in.
    """
    import warnings

    text = report_text(violation)
    try:
        warnings.warn_explicit(
            text,
            BlockingCallWarning,
            violation.filename,
            violation.lineno,
            module=module or None,
            registry=None,
        )
    except BlockingCallWarning as exc:
        if error_asked_for(text, module, violation.filename, violation.lineno):
            raise
        warnings.showwarning(exc, BlockingCallWarning, violation.filename, violation.lineno)


def error_asked_for(text: str, module: str | None, filename: str, lineno: int) -> bool:
    """The filter ``warnings`` applies to this warning is an ``error`` naming our class."""
    import warnings

    if not module:  # what warn_explicit matches when given no module
        module = filename[:-3] if filename.endswith(".py") else filename or "<unknown>"
    for action, message, category, module_pattern, filter_lineno in warnings.filters:
        if (
            _matches(message, text)
            and issubclass(BlockingCallWarning, category)
            and _matches(module_pattern, module)
            and filter_lineno in (0, lineno)
        ):
            return action == "error" and category is BlockingCallWarning
    return False


def _matches(pattern: Any, text: str) -> bool:
    if pattern is None:
        return True
    if isinstance(pattern, str):  # CPython's internal default filters hold plain text
        return pattern == text
    return bool(pattern.match(text))
