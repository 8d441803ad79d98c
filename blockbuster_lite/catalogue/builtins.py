"""input(): reads a line from the terminal and waits for the user."""

from __future__ import annotations

from ..core.targets import Target

ADVICE = "read input before starting the loop, or offload with await anyio.to_thread.run_sync(input)"

TARGETS = (Target("builtins", "input", "input", None, ADVICE),)
