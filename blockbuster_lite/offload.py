"""Offload mode's public helpers: portals, the offload pool's capacity, thread-pool occupancy.

``mode="offload"`` (``BLOCKBUSTER_LITE_MODE=offload``, ``intercept("offload")``, ``activate("offload")``,
``BlockBusterMiddleware(mode="offload")``) runs blocking calls made in async code in a worker thread
while their task waits without blocking the loop. A task can do that only if it has a *portal*
(greenback, the ``offload`` extra):

- ASGI apps: ``BlockBusterMiddleware`` gives each request's task one;
- ``async with intercept("offload"):`` and ``@intercept("offload")`` on a coroutine function give
  the current task one;
- anything else: ``await ensure_portal()`` at the start of the task, ``@with_portal`` on its
  coroutine function, or ``install_task_factory(loop)`` before the tasks are created.

``ensure_portal()`` also gives every task the loop starts afterwards a portal (asyncio, uvloop and
trio), so task groups and ``asyncio.gather`` inside a request are covered.

Calls that cannot be offloaded are warned about instead, with the reason: see ``_offload``.
"""

from __future__ import annotations

from ._offload import LARGE_IO as LARGE_IO
from ._offload import OffloadingFile as OffloadingFile
from ._offload import ensure_portal as ensure_portal
from ._offload import install_task_factory as install_task_factory
from ._offload import uninstall_task_factory as uninstall_task_factory
from ._offload import with_portal as with_portal
from ._pools import DEFAULT_OFFLOAD_THREADS as DEFAULT_OFFLOAD_THREADS
from ._pools import DEFAULT_SATURATION_S as DEFAULT_SATURATION_S
from ._pools import ENV_OFFLOAD_FILE_THREADS as ENV_OFFLOAD_FILE_THREADS
from ._pools import ENV_OFFLOAD_THREADS as ENV_OFFLOAD_THREADS
from ._pools import ENV_SATURATION_MS as ENV_SATURATION_MS
from ._pools import PoolStatistics as PoolStatistics
from ._pools import file_capacity as file_capacity
from ._pools import offload_capacity as capacity
from ._pools import pool_statistics as pool_statistics
from ._pools import saturation_counts as saturation_counts
from ._pools import saturation_threshold as saturation_threshold
from ._pools import set_file_capacity as set_file_capacity
from ._pools import set_offload_capacity as set_capacity
from ._pools import set_saturation_threshold as set_saturation_threshold

__all__ = (
    "DEFAULT_OFFLOAD_THREADS",
    "DEFAULT_SATURATION_S",
    "ENV_OFFLOAD_FILE_THREADS",
    "ENV_OFFLOAD_THREADS",
    "ENV_SATURATION_MS",
    "LARGE_IO",
    "OffloadingFile",
    "PoolStatistics",
    "capacity",
    "ensure_portal",
    "file_capacity",
    "install_task_factory",
    "pool_statistics",
    "saturation_counts",
    "saturation_threshold",
    "set_capacity",
    "set_file_capacity",
    "set_saturation_threshold",
    "uninstall_task_factory",
    "with_portal",
)
