"""The pytest plugin (entry point ``pytest11``): the code lives in ``integrations/pytest_plugin.py``.

Every hook is re-exported here: pytest registers this module, and a hook missing from it never
runs (``tests/integrations/test_pytest_plugin.py`` checks the list against the implementation).
"""

from __future__ import annotations

from .integrations.pytest_plugin import MODE_HELP as MODE_HELP
from .integrations.pytest_plugin import Settings as Settings
from .integrations.pytest_plugin import blockbuster as blockbuster
from .integrations.pytest_plugin import pytest_addoption as pytest_addoption
from .integrations.pytest_plugin import pytest_collection_finish as pytest_collection_finish
from .integrations.pytest_plugin import pytest_configure as pytest_configure
from .integrations.pytest_plugin import (
    pytest_load_initial_conftests as pytest_load_initial_conftests,
)
from .integrations.pytest_plugin import pytest_report_header as pytest_report_header
from .integrations.pytest_plugin import pytest_runtest_call as pytest_runtest_call
from .integrations.pytest_plugin import pytest_runtest_setup as pytest_runtest_setup
from .integrations.pytest_plugin import pytest_runtest_teardown as pytest_runtest_teardown
from .integrations.pytest_plugin import pytest_terminal_summary as pytest_terminal_summary
from .integrations.pytest_plugin import pytest_unconfigure as pytest_unconfigure
from .integrations.pytest_plugin import resolve_settings as resolve_settings

__all__ = (
    "MODE_HELP",
    "Settings",
    "blockbuster",
    "pytest_addoption",
    "pytest_collection_finish",
    "pytest_configure",
    "pytest_load_initial_conftests",
    "pytest_report_header",
    "pytest_runtest_call",
    "pytest_runtest_setup",
    "pytest_runtest_teardown",
    "pytest_terminal_summary",
    "pytest_unconfigure",
    "resolve_settings",
)
