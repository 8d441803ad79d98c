"""A FastAPI app with a blocking call that its own error handling hides."""

from __future__ import annotations

import time

from fastapi import FastAPI

app = FastAPI()


def exchange_rate() -> float:
    """Ask a (pretend) slow rate service; fall back to a default on any error."""
    try:
        time.sleep(0.05)  # blocks the event loop: every other request waits
        return 1.1
    except Exception:
        return 1.0


@app.get("/price")
async def price(amount: float) -> dict[str, float]:
    return {"price": round(amount * exchange_rate(), 2)}
