"""The pytest plugin's end-of-run report: blocking calls grouped by call site.

A suite where one helper blocks fails dozens of tests with the same message; the terminal
summary then lists each call site once, with how many times it was hit, by how many tests, and
the first few of them, worst first. In warn and log modes (nothing fails) the same table shows
what the tests would have hit, with count, total and maximum blocked time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

    from ..core.report import Violation

__all__ = ["SiteReport", "SuiteSites"]

#: Test ids shown per call site.
FIRST_TESTS = 3


@dataclass
class SiteReport:
    """One call site over the whole run."""

    first: Violation
    count: int = 0
    total_s: float = 0.0
    max_s: float | None = None
    tests: list[str] = field(default_factory=list)
    test_count: int = 0
    _last_test: str = ""  # tests run one after the other: a new id is a new test

    def add(self, violation: Violation, nodeid: str) -> None:
        self.count += 1
        if violation.duration_s is not None:
            self.total_s += violation.duration_s
            self.max_s = max(self.max_s or 0.0, violation.duration_s)
        if nodeid != self._last_test:
            self._last_test = nodeid
            self.test_count += 1
            if len(self.tests) < FIRST_TESTS:
                self.tests.append(nodeid)


class SuiteSites:
    """Violations of the tests' own guards, per (mode, call, file, line)."""

    def __init__(self) -> None:
        self._sites: dict[tuple[str, str, str, int], SiteReport] = {}
        self._last: dict[tuple[str, str, str, int], str] = {}

    def add(self, violation: Violation, nodeid: str) -> None:
        key = (violation.action.value, violation.family or violation.call, violation.filename,
               violation.lineno)  # fmt: skip
        site = self._sites.get(key)
        if site is None:
            site = self._sites[key] = SiteReport(violation)
        site.add(violation, nodeid)

    def __bool__(self) -> bool:
        return bool(self._sites)

    def write(self, terminal: pytest.TerminalReporter) -> None:
        raised = [s for (mode, *_), s in self._sites.items() if mode == "raise"]
        other = [s for (mode, *_), s in self._sites.items() if mode != "raise"]
        if raised:
            terminal.write_sep("=", "blockbuster_lite: tests failed by blocking calls, by call site")
            raised.sort(key=lambda s: (s.test_count, s.count), reverse=True)
            for site in raised:
                terminal.write_line(f"{_where(site.first)}: "
                                    f"{site.count} call(s) in {site.test_count} test(s)")  # fmt: skip
                terminal.write_line(f"    first: {_tests(site)}")
        if other:
            terminal.write_sep("=", "blockbuster_lite: blocking calls by call site, worst first")
            other.sort(key=lambda s: (s.total_s, s.max_s or 0.0, s.count), reverse=True)
            terminal.write_line(f"  {'count':>6} {'total ms':>10} {'max ms':>8} {'tests':>6}  "
                                "call at site")  # fmt: skip
            for site in other:
                terminal.write_line(
                    f"  {site.count:>6} {site.total_s * 1000:>10.1f} "
                    f"{(site.max_s or 0.0) * 1000:>8.1f} {site.test_count:>6}  "
                    f"{_where(site.first)}"
                )
                terminal.write_line(f"  {'':>35}first: {_tests(site)}")


def _tests(site: SiteReport) -> str:
    more = site.test_count - len(site.tests)
    return ", ".join(site.tests) + (f" (+{more} more)" if more > 0 else "")


def _where(violation: Violation) -> str:
    from ..core.report import library_path

    call = violation.call if "(" in violation.call else f"{violation.call}()"
    text = f"{call} at {violation.site} in {violation.function}"
    library = violation.library_frame
    if library is not None and library[:2] != (violation.filename, violation.lineno):
        text += f" (inside {library_path(library[0])}:{library[1]} in {library[2]})"
    return text
