"""The wrappers and proxies this round adds pickle by reference, copy to themselves, and refuse
to pickle or copy exactly where the originals refuse."""

from __future__ import annotations

import copy
import pickle
import queue
import select
import selectors
import threading
from typing import Any

import pytest

import blockbuster_lite as bl


@pytest.mark.parametrize(
    "get",
    [lambda: selectors.EpollSelector.select, lambda: selectors.SelectSelector.select,
     lambda: queue.SimpleQueue, lambda: threading.Condition.__init__],
)  # fmt: skip
def test_new_wrappers_pickle_by_reference_and_copy_to_themselves(get: Any) -> None:
    with bl.intercept("log"):
        wrapper = get()
        assert pickle.loads(pickle.dumps(wrapper)) is wrapper
        assert copy.copy(wrapper) is wrapper
        assert copy.deepcopy(wrapper) is wrapper


def test_new_proxies_refuse_like_the_objects() -> None:
    with bl.intercept("log"):
        epoll = select.epoll()
        poll = select.poll()
        simple: queue.SimpleQueue[int] = queue.SimpleQueue()
        for obj in (epoll, poll, simple):
            with pytest.raises(TypeError):
                pickle.dumps(obj)
            with pytest.raises(TypeError):
                copy.copy(obj)
        assert isinstance(epoll, type(select.epoll.__wrapped__()))  # type: ignore[attr-defined]
        assert isinstance(simple, queue.SimpleQueue)
        epoll.close()
