"""This worker's agent slots: agent.max_concurrent agent processes at once, granted oldest spec first.

Owns the local half of the limit (the global one across workers, agent.global_max_concurrent, is
rows in iwo_agent_slots: store/runs.py). A dispatch waiting for a slot waits in a heap by its
spec's priority (its admission time), so an old spec is never starved by newer ones; a waiter
cancelled just as it was granted passes the slot on.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools


class FairSlots:
    """agent.max_concurrent agent processes at once, granted oldest spec first (by priority)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._waiting: list = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def hold(self, priority: float):
        if self.used >= self.limit or self._waiting:
            future = asyncio.get_running_loop().create_future()
            entry = (priority, next(self._order), future)
            heapq.heappush(self._waiting, entry)
            try:
                await future
            except BaseException:
                if future.done() and not future.cancelled():
                    self._release()  # granted while being cancelled: pass it on
                else:
                    self._waiting.remove(entry)
                    heapq.heapify(self._waiting)
                raise
        else:
            self.used += 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)  # the slot passes on: `used` stays
                return
        self.used -= 1
