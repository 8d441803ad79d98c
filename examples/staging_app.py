"""Staging: strict. A request that blocks the event loop fails loudly instead of slowing everyone.

Run it with the sanitizer in raise mode (from the repository root)::

    BLOCKBUSTER_LITE_MODE=raise uvicorn examples.staging_app:app

``curl localhost:8000/orders/7`` answers ``500`` with a JSON body naming the blocking call, its
file:line and the route ``/orders/{order_id}``; the server log gets an ERROR from
``blockbuster_lite.asgi`` with the same call site. ``/health`` answers 200 as usual.

The lifespan below reads a file synchronously: start-up is in grace (raise mode only warns until
the app reports start-up complete), so the server starts and the warning tells you about it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from blockbuster_lite.asgi import BlockBusterMiddleware

PRICES: dict[str, float] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    with open(Path(__file__).with_name("staging_prices.json"), encoding="utf-8") as file:
        PRICES.update(json.load(file))  # start-up work: reported, not fatal
    yield


app = FastAPI(title="blockbuster_lite staging example", lifespan=lifespan)
app.add_middleware(BlockBusterMiddleware)


def _charge(order_id: int) -> float:
    time.sleep(0.02)  # a synchronous payment client: blocks every other request
    return PRICES["widget"] * order_id


@app.get("/orders/{order_id}")
async def order(order_id: int) -> dict[str, float]:
    return {"order_id": order_id, "charged": _charge(order_id)}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
