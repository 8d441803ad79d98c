"""Development: find the blocking calls of an app without touching its code.

Run it with the sanitizer in warn mode (from the repository root)::

    BLOCKBUSTER_LITE_MODE=warn uvicorn examples.dev_app:app

then ``curl localhost:8000/profile/42``: the response is unchanged, and the server's terminal
shows one ``BlockingCallWarning`` per call site, naming ``examples/dev_app.py`` and the line
of ``open()`` and of ``time.sleep()``. ``/profile/42/fixed`` is the same endpoint done right:
no warning.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio
from fastapi import FastAPI

app = FastAPI(title="blockbuster_lite development example")

SETTINGS = Path(__file__).with_name("dev_settings.json")


def _slow_lookup(user_id: int) -> str:
    time.sleep(0.05)  # stands in for a synchronous HTTP or database client
    return f"user-{user_id}"


@app.get("/profile/{user_id}")
async def profile(user_id: int) -> dict[str, object]:
    with open(SETTINGS, encoding="utf-8") as file:  # blocks the event loop
        settings = json.load(file)
    return {"name": _slow_lookup(user_id), "theme": settings["theme"]}


@app.get("/profile/{user_id}/fixed")
async def profile_fixed(user_id: int) -> dict[str, object]:
    settings = json.loads(await anyio.Path(SETTINGS).read_text(encoding="utf-8"))
    name = await anyio.to_thread.run_sync(_slow_lookup, user_id)
    return {"name": name, "theme": settings["theme"]}
