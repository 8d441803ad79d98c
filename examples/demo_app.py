"""The demo's server: an ``async def`` endpoint that calls ``time.sleep(0.5)``.

``python -m examples.demo`` runs it under uvicorn once per mode; on its own::

    BLOCKBUSTER_LITE_MODE=warn uvicorn examples.demo_app:app
"""

from __future__ import annotations

import time

from fastapi import FastAPI

from blockbuster_lite.asgi import BlockBusterMiddleware, route_stats

app = FastAPI(title="blockbuster_lite demo")
app.add_middleware(BlockBusterMiddleware)


@app.get("/report/{report_id}")
async def build_report(report_id: int) -> dict[str, int]:
    time.sleep(0.5)  # a synchronous call hidden in async code: the whole loop stops
    return {"report_id": report_id}


@app.get("/_blockbuster")
async def findings() -> dict[str, dict[str, int]]:
    """Violations per route and call, as the middleware counted them."""
    return route_stats()
