"""The requests waiting for the writer, one queue per source, taken in turn.

One FIFO channel let a source that sent a thousand requests at once hold every other device behind
them for as long as they took. Here each source (a device, a POS/1 terminal, the ERP) has its own
queue, and the writer takes one request from each source in turn; a request keeps its place in
its own source's order. No I/O and no trio: the core loop wakes and waits around it.
"""
from __future__ import annotations

from collections import deque


class FairQueue:
    """Waiting slots by source (how many may wait is the core loop's business: `_Room`)."""

    def __init__(self):
        self._queues: dict[str, deque] = {}
        self._turns: deque[str] = deque()  # sources with waiting slots, next turn first
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def put(self, source: str, slot) -> None:
        queue = self._queues.get(source)
        if queue is None:
            queue = self._queues[source] = deque()
            self._turns.append(source)
        queue.append(slot)
        self.size += 1

    def take(self, n: int) -> list:
        """Up to `n` slots, one per source in turn, each source's in its own order."""
        out = []
        turns, queues = self._turns, self._queues
        while turns and len(out) < n:
            source = turns.popleft()
            queue = queues[source]
            out.append(queue.popleft())
            if queue:
                turns.append(source)
            else:
                del queues[source]
        self.size -= len(out)
        return out

    def put_back(self, slots: list, source_of) -> None:
        """Slots taken but not served go back to the heads of their queues, in their order, and
        their sources take the next turns."""
        for slot in reversed(slots):
            source = source_of(slot)
            queue = self._queues.get(source)
            if queue is None:
                queue = self._queues[source] = deque()
            else:
                self._turns.remove(source)
            queue.appendleft(slot)
            self._turns.appendleft(source)
            self.size += 1

    def drain(self) -> list:
        """Every waiting slot (shutting down)."""
        return self.take(self.size)
