"""redis-py, sync client: commands, pipelines, pub/sub, connecting.

Reported at the user's level with the command's name, never its keys or values:
``redis.Redis.execute_command(GET)`` for every command method (``get``, ``set``, ``blpop``...),
``redis.Pipeline.execute(3 commands)``, and for pub/sub the commands (``subscribe``...) and the
reads that wait: ``get_message(timeout=...)`` with a timeout other than 0, and ``listen()``.
``get_message()`` with its default ``timeout=0.0`` only polls and is not flagged.

``redis.asyncio`` has its own classes and is never touched. Other sync clients (``RedisCluster``,
``Sentinel``) are caught by the socket family, as socket calls.
"""

from __future__ import annotations

from typing import Any

from ..core.targets import Target
from ._describe import redis_command, with_detail
from ._predicates import argument, waits

ADVICE = "use redis.asyncio, or offload with await anyio.to_thread.run_sync(...)"


def _command(call: str) -> Any:
    def describe(instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        return with_detail(call, redis_command(args))

    return describe


def _has_work(pipeline: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """An empty pipeline that watches nothing returns at once."""
    return bool(pipeline.command_stack) or bool(pipeline.watching)


def _pipeline_size(pipeline: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    count = len(pipeline.command_stack)
    return f"redis.Pipeline.execute({count} command{'s' if count != 1 else ''})"


def _message_waits(pubsub: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if len(args) < 2 and "timeout" not in kwargs:
        return False  # the default, timeout=0.0, only polls
    return waits(argument(args, kwargs, 1, "timeout"))


def _read_blocks(pubsub: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    block = argument(args, kwargs, 0, "block")
    return block is not False and block != 0  # missing means block=True


def _not_connected(connection: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return getattr(connection, "_sock", None) is None


TARGETS = (
    Target(
        "redis.client", "Redis.execute_command", "redis.Redis.execute_command", None, ADVICE,
        describe=_command("redis.Redis.execute_command"),
    ),
    Target(
        "redis.client", "Pipeline.execute", "redis.Pipeline.execute", _has_work, ADVICE,
        describe=_pipeline_size,
    ),
    Target(
        "redis.client", "Pipeline.immediate_execute_command", "redis.Pipeline.execute_command",
        None, ADVICE, describe=_command("redis.Pipeline.execute_command"),
    ),
    Target(
        "redis.client", "PubSub.execute_command", "redis.PubSub.execute_command", None, ADVICE,
        describe=_command("redis.PubSub.execute_command"),
    ),
    *(
        Target("redis.client", f"PubSub.{name}", f"redis.PubSub.{name}", _message_waits, ADVICE)
        for name in ("get_message", "get_sharded_message")
    ),
    # listen() is a generator: the wait happens in the read it makes for each message
    Target("redis.client", "PubSub.parse_response", "redis.PubSub.listen", _read_blocks, ADVICE),
    Target(
        "redis.connection", "AbstractConnection.connect", "redis.Connection.connect",
        _not_connected, ADVICE,
    ),
)  # fmt: skip
