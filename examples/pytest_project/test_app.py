"""Passes on its own; fails under blockbuster_lite although the app still answers 200."""

from __future__ import annotations

import httpx
from app import app


async def test_price() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/price", params={"amount": 10})
    assert response.status_code == 200
