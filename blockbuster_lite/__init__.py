"""blockbuster_lite: catch blocking calls made inside async code, at run time.

``intercept()`` for tests, ``activate()`` / ``BLOCKBUSTER_LITE_MODE`` for servers,
``allow_blocking()`` for the calls you mean to make.

PYTEST_DONT_REWRITE: with BLOCKBUSTER_LITE_MODE set, the start-up hook imports this package before
pytest starts; the marker keeps pytest from warning that it cannot rewrite it.
"""

from __future__ import annotations

import sys as _sys

from ._guard import Guard as Guard
from ._guard import activate as activate
from ._guard import activate_from_env as activate_from_env
from ._guard import allow_blocking as allow_blocking
from ._guard import deactivate as deactivate
from ._guard import intercept as intercept
from ._patching import Target as Target
from ._patching import patcher as _patcher
from ._policy import ConfigError as ConfigError
from ._policy import Mode as Mode
from ._report import BlockingCallError as BlockingCallError
from ._report import BlockingCallWarning as BlockingCallWarning
from ._report import Violation as Violation
from ._report import apply_warning_options as _apply_warning_options
from .catalogue import all_targets as _all_targets

__all__ = (
    "BlockingCallError",
    "BlockingCallWarning",
    "ConfigError",
    "Guard",
    "Mode",
    "Target",
    "Violation",
    "activate",
    "activate_from_env",
    "allow_blocking",
    "deactivate",
    "intercept",
)

__version__ = "0.1.0"

_patcher.register(_all_targets())
_apply_warning_options(_sys.warnoptions)
