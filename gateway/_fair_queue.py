"""The requests waiting for the writer, one queue per source, taken in turn.

One FIFO channel let a source that sent a thousand requests at once hold every other device behind
them for as long as they took. Here each source (a device, a POS/1 terminal, the ERP) has its own
queue, and the writer takes one request from each source in turn; a request keeps its place in
its own source's order.

Background sources (the gateway's own housekeeping: sealing, timers, the upstream links'
acknowledgements and the documents the NATS link takes in) yield to the devices: their requests join a group only when no device's request
is waiting, or once they have waited `background_wait_s`, so a seal that falls due as a burst of
sales arrives is applied after the burst is answered, not in front of it, and is never held for
long. A bulk source's requests (a file's slices, which no till waits on) do not hold them back: a
seal falling due while a file is applied shares a slice's group and commit instead of taking a
group of its own between two slices. No I/O and no trio: the core loop wakes and waits around it,
and says what time it is.
"""
from __future__ import annotations

from collections import deque

# Put back after a group was cut short: it had been chosen already, so it goes in the next group.
_CHOSEN = float("-inf")


class FairQueue:
    """Waiting slots by source (how many may wait is the core loop's business: `_Room`)."""

    def __init__(self, background: frozenset[str] = frozenset(), background_wait_s: float = 0.0):
        self._queues: dict[str, deque] = {}
        self._turns: deque[str] = deque()  # sources with waiting slots, next turn first
        self.size = 0
        self._background = background
        self.background_wait_s = background_wait_s
        # When each waiting background slot was put, in order (background sources only).
        self._since: dict[str, deque[float]] = {}
        self._bulk: set[str] = set()  # sources whose requests no till waits on (`put(bulk=True)`)

    def __len__(self) -> int:
        return self.size

    def put(self, source: str, slot, now: float = 0.0, *, bulk: bool = False) -> None:
        """Queue `slot` of `source`; a `bulk` one (a file's slice) never holds background slots back."""
        if bulk:
            self._bulk.add(source)
        queue = self._queues.get(source)
        if queue is None:
            queue = self._queues[source] = deque()
            self._turns.append(source)
        queue.append(slot)
        self.size += 1
        if source in self._background:
            self._since.setdefault(source, deque()).append(now)

    def take(self, n: int, now: float = 0.0) -> list:
        """Up to `n` slots, one per source in turn, each source's in its own order; a background
        source's only when no device's (but a bulk source's) waits or it has waited
        `background_wait_s`."""
        out = []
        turns, queues = self._turns, self._queues
        # As the group is formed, whichever turn comes first.
        devices_wait = any(source not in self._background and source not in self._bulk for source in queues)
        held = []  # background sources that sit this group out, in their turns' order
        while turns and len(out) < n:
            source = turns.popleft()
            if devices_wait and source in self._background and self._yields(source, now):
                held.append(source)
                continue
            queue = queues[source]
            out.append(queue.popleft())
            if source in self._background:
                self._taken(source)
            if queue:
                turns.append(source)
            else:
                del queues[source]
        turns.extendleft(reversed(held))  # their turns come first once they may go
        self.size -= len(out)
        return out

    def _yields(self, source: str, now: float) -> bool:
        """Whether background `source`'s next slot, with devices' requests waiting, waits longer."""
        return now - self._since[source][0] < self.background_wait_s

    def _taken(self, source: str) -> None:
        since = self._since[source]
        since.popleft()
        if not since:
            del self._since[source]

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
            if source in self._background:
                self._since.setdefault(source, deque()).appendleft(_CHOSEN)

    def drain(self) -> list:
        """Every waiting slot (shutting down)."""
        return self.take(self.size, float("inf"))
