"""redis-py against a real Redis: the sync client is flagged on the loop, redis.asyncio never."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest
import redis
import redis.asyncio
import redis.client
import redis.connection
from _services import RedisInfo
from helpers import call_on, marked_line, raised

import blockbuster_lite as bl

CLASSES = (
    redis.client.Redis,
    redis.client.Pipeline,
    redis.client.PubSub,
    redis.connection.AbstractConnection,
)


line_of = functools.partial(marked_line, __file__)



def logged(call: Callable[[], Any], loop: str = "asyncio") -> tuple[Any, list[bl.Violation]]:
    with bl.intercept("log") as guard:
        result = call_on(loop, call)
    return result, guard.violations


@pytest.fixture
def client(redis_server: RedisInfo) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_server.url)
    connection.ping()
    try:
        yield connection
    finally:
        connection.close()


def test_a_command_is_reported_once_by_name_without_its_arguments(client: redis.Redis) -> None:
    def command() -> Any:
        client.set("session:42", "s3cr3t")  # flag: set
        return client.get("session:42")

    value, violations = logged(command)
    assert value == b"s3cr3t"
    assert [v.call for v in violations] == [
        "redis.Redis.execute_command(SET)",
        "redis.Redis.execute_command(GET)",
    ]
    assert (violations[0].filename, violations[0].lineno) == (__file__, line_of("flag: set"))
    assert all("s3cr3t" not in v.message and "session" not in v.message for v in violations)
    assert "redis.asyncio" in violations[0].message


def test_a_new_connection_is_reported_as_the_command(redis_server: RedisInfo) -> None:
    fresh = redis.Redis.from_url(redis_server.url)
    try:
        _, violations = logged(lambda: fresh.ping())
    finally:
        fresh.close()
    assert [v.call for v in violations] == ["redis.Redis.execute_command(PING)"]


def test_refused_before_sending(client: redis.Redis) -> None:
    client.delete("counter")
    with bl.intercept("raise"):
        violation = call_on("asyncio", lambda: raised(lambda: client.incr("counter")))
    assert violation.call == "redis.Redis.execute_command(INCRBY)"
    assert client.get("counter") is None
    assert client.incr("counter") == 1


def test_pipelines(client: redis.Redis) -> None:
    def pipelines() -> Any:
        empty = client.pipeline()
        assert empty.execute() == []  # nothing to send
        pipe = client.pipeline()
        pipe.set("a", 1).get("a")  # queued
        return pipe.execute()  # flag: pipeline

    result, violations = logged(pipelines)
    assert result == [True, b"1"]
    assert [(v.call, v.lineno) for v in violations] == [
        ("redis.Pipeline.execute(2 commands)", line_of("flag: pipeline"))
    ]


def test_pubsub_reads_that_wait(client: redis.Redis) -> None:
    pubsub = client.pubsub()

    def subscribe_and_poll() -> Any:
        pubsub.subscribe("news")  # flag: subscribe
        pubsub.get_message()  # the default timeout 0.0 only polls
        return pubsub.get_message(timeout=0.05)  # flag: get_message

    _, violations = logged(subscribe_and_poll)
    assert [(v.call, v.lineno) for v in violations] == [
        ("redis.PubSub.execute_command(SUBSCRIBE)", line_of("flag: subscribe")),
        ("redis.PubSub.get_message", line_of("flag: get_message")),
    ]
    client.publish("news", "hello")

    def listen() -> Any:
        for message in pubsub.listen():  # flag: listen
            return message

    message, violations = logged(listen)
    assert message["data"] == b"hello"
    assert [(v.call, v.lineno) for v in violations] == [
        ("redis.PubSub.listen", line_of("flag: listen"))
    ]
    pubsub.close()


def test_redis_asyncio_is_never_flagged(redis_server: RedisInfo) -> None:
    async def main() -> list[Any]:
        client = redis.asyncio.Redis.from_url(redis_server.url)
        try:
            await client.set("k", "v")
            results = [await client.get("k")]
            async with client.pipeline() as pipe:
                results += await pipe.set("p", 1).get("p").execute()
            pubsub = client.pubsub()
            await pubsub.subscribe("async-news")
            await pubsub.get_message(timeout=0.05)
            await client.publish("async-news", "hi")
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            results.append(message and message["data"])
            await pubsub.aclose()
            results.append(await client.blpop(["empty-list"], timeout=0.05))
            return results
        finally:
            await client.aclose()

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) == [b"v", True, b"1", b"hi", None]
    assert guard.violations == []


def test_clean_under_a_worker_thread(client: redis.Redis) -> None:
    async def main() -> Any:
        return await anyio.to_thread.run_sync(lambda: client.blpop(["empty"], timeout=0.05))

    with bl.intercept("raise") as guard:
        assert asyncio.run(main()) is None
    assert guard.violations == []


def test_flagged_under_trio(client: redis.Redis) -> None:
    with bl.intercept("raise"):
        violation = call_on("trio", lambda: raised(lambda: client.blpop(["empty"], timeout=0.05)))
    assert violation.call == "redis.Redis.execute_command(BLPOP)"


def test_restored_after_the_guard() -> None:
    before = {cls: dict(vars(cls)) for cls in CLASSES}
    with bl.intercept("raise"):
        assert (
            vars(redis.client.Redis)["execute_command"]
            is not (before[redis.client.Redis]["execute_command"])
        )
    for cls in CLASSES:
        after = vars(cls)
        assert after.keys() == before[cls].keys()
        assert all(after[name] is value for name, value in before[cls].items()), cls
