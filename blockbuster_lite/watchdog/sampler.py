"""What the monitor thread reads of a loop thread: a sample of its stack, and for a loop with
no turn hook (uvloop) when its turns start and end."""

from __future__ import annotations

import time
from types import FrameType

from ..core.policy import INTERNAL, code_info
from ..core.report import capture_frames
from .loops import LoopWatch, Sample, cpu_bound_start
from .stacks import call_name, excluded_by_guard, running_task, site_index, top_call

__all__ = ["busy_interval", "forget_samples", "sample", "sampled_interval", "settle_beat", "track"]

_perf = time.perf_counter
#: A stall seen inside these modules is a checked call: the catalogue reported it already.
_CHECKED_CALL_MODULES = frozenset(
    {"blockbuster_lite.core.hotpath", "blockbuster_lite.core.actions"}
)


def sampled_interval(threshold: float) -> float:
    """How often a loop with no turn hook is looked at."""
    return min(max(threshold / 3, 0.005), 0.25)


def busy_interval(threshold: float) -> float:
    """How often a turn that could become a stall is sampled."""
    return min(max(threshold / 10, 0.005), 0.1)


def forget_samples(watch: LoopWatch) -> None:
    if watch.samples or watch.task is not None:
        watch.samples.clear()
        watch.task = None


def settle_beat(watch: LoopWatch, threshold: float) -> None:
    """A sampled loop ran our beat (or stopped): the turn we saw busy is over; was it a stall?"""
    ran = watch.beat_ran
    if ran is None:
        return
    watch.beat_ran = None
    watch.beat_posted = False
    start = watch.turn_start
    if start is not None:
        start = cpu_bound_start(watch, ran) or start
        if ran - start >= threshold:
            watch.gaps.append((start, ran))
    watch.turn_start = watch.busy_at = watch.busy_cpu = None
    watch.free_at, watch.free_cpu = ran, watch.beat_cpu


def track(watch: LoopWatch, idle: bool, now: float) -> bool:
    """Follow a sampled loop; True when it is busy in a turn (a callback is running)."""
    if idle:
        if not watch.beat_posted:
            watch.free_at, watch.free_cpu = now, watch.thread_cpu()
            watch.turn_start = watch.busy_at = watch.busy_cpu = None
            forget_samples(watch)
        return False
    if watch.turn_start is None:
        # Started at some point since the loop was last seen free: take the middle (a
        # CPU-bound turn is dated more precisely by the loop thread's CPU time when it ends).
        free_at = watch.free_at if watch.free_at is not None else now
        watch.turn_start = (free_at + now) / 2
        watch.busy_at, watch.busy_cpu = now, watch.thread_cpu()
    if not watch.beat_posted:
        loop = watch.target
        try:
            loop.call_soon_threadsafe(watch.beat)
            watch.beat_posted = True
        except (RuntimeError, AttributeError):  # closed, or collected
            watch.ended = True
            return False
    return True


def sample(watch: LoopWatch, frames: list[FrameType], now: float) -> Sample:
    """What the loop thread runs now: the site, the call, the stack, and whether it counts."""
    if not frames:
        return Sample(now, idle=True)
    infos = [code_info(frame) for frame in frames]
    index = site_index(infos)
    frame, info = frames[index], infos[index]
    if watch.task is None:
        watch.task = running_task(watch.kind, watch.target, frames)
    call = call_name(frames, infos, index)
    return Sample(
        time=now,
        idle=False,
        filename=info.filename,
        lineno=frame.f_lineno,
        function=info.qualname,
        module=info.module,
        call=call,
        top=top_call(frames, infos, index, call),
        stack=capture_frames(frame),
        catalogue=any(i.kind == INTERNAL and i.module in _CHECKED_CALL_MODULES for i in infos),
        excluded=watch.task.exempt or excluded_by_guard(infos),
    )
