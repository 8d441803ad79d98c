"""time.sleep."""

from __future__ import annotations

from typing import Any

from ..core.targets import Target

ADVICE = "use await asyncio.sleep() / anyio.sleep(), or offload with await anyio.to_thread.run_sync(...)"


def _sleeps(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    # time.sleep(0) only yields the GIL; it cannot block the loop.
    return not (args and args[0] == 0)


TARGETS = (Target("time", "sleep", "time.sleep", _sleeps, ADVICE),)
