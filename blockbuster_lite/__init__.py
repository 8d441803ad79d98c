"""blockbuster_lite: catch blocking calls made inside async code, at run time.

``intercept()`` for tests, ``activate()`` / ``BLOCKBUSTER_LITE_MODE`` for servers,
``allow_blocking()`` for the calls you mean to make.

This module is the package's composition root: it re-exports the public API and, by importing
them, plugs the upper layers (catalogue tables, offload, watchdog, OpenTelemetry) into core.

PYTEST_DONT_REWRITE: with BLOCKBUSTER_LITE_MODE set, the start-up hook imports this package before
pytest starts; the marker keeps pytest from warning that it cannot rewrite it.
"""

from __future__ import annotations

import sys as _sys

from . import offload as _offload  # registers the offload action (its engine loads lazily)
from . import watchdog as _watchdog  # registers the watchdog
from .catalogue import PROXIES as _PROXIES
from .catalogue import all_targets as _all_targets
from .core.allow import allow_blocking as allow_blocking
from .core.config import ConfigError as ConfigError
from .core.config import Mode as Mode
from .core.guard import Guard as Guard
from .core.guard import activate as activate
from .core.guard import activate_from_env as activate_from_env
from .core.guard import deactivate as deactivate
from .core.guard import intercept as intercept
from .core.patcher import patcher as _patcher
from .core.rebind import register_proxy as _register_proxy
from .core.report import BlockingCallError as BlockingCallError
from .core.report import BlockingCallWarning as BlockingCallWarning
from .core.report import Violation as Violation
from .core.targets import Target as Target
from .core.version import __version__ as __version__
from .core.warn import apply_warning_options as _apply_warning_options
from .integrations import otel as _otel  # registers BLOCKBUSTER_LITE_OTEL with activate_from_env
from .integrations import servers as _servers  # env activation instruments the servers' ASGI apps

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

_patcher.register(_all_targets())
for _proxy in _PROXIES:
    _register_proxy(*_proxy)
_apply_warning_options(_sys.warnoptions)
del _offload, _watchdog, _otel, _servers, _proxy
