"""A connection's outgoing events, bounded in bytes.

The engine never waits for a client: it queues events and one writer task sends them. A client that reads slower
than the server produces (a slow network, a stalled tab, a hostile client that never reads) would make that queue
grow without bound, so it is bounded by the *bytes* it holds (``server.maxOutgoingBytes``):

* past half of the limit, answer-audio deltas are dropped (audio the client could no longer play in time anyway;
  counted in :attr:`OutboundQueue.dropped`);
* an event that would take the queue past the limit makes the connection *overflow*: the transport closes it
  with 1008 and a reason that says why (memory returns when the connection goes).

One message is always accepted into an empty queue, however large (a ``conversation.item.retrieve`` answer with
audio may exceed the limit on its own).
"""

from __future__ import annotations

import asyncio
from collections import deque


class OutboundQueue:
    """FIFO of text frames with a byte budget. ``put`` never blocks; ``get`` waits for the next frame, ``None``
    once :meth:`finish` was called and everything before it went out."""

    __slots__ = ("_event", "_finished", "_frames", "bytes", "drop_above", "dropped", "max_bytes", "overflowed")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.drop_above = max_bytes // 2
        self.bytes = 0
        self.dropped = 0
        """Droppable frames (audio deltas) dropped because the client was behind."""
        self.overflowed = False
        self._frames: deque[str] = deque()
        self._event = asyncio.Event()
        self._finished = False

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: str, droppable: bool = False) -> bool:
        """Queue ``frame``. Returns ``False`` when it was not queued: dropped (``droppable`` and the client is
        behind) or the queue overflowed (:attr:`overflowed` is then set and stays set)."""
        if self._finished or self.overflowed:
            return False
        size = len(frame)
        if self._frames:
            if droppable and self.bytes + size > self.drop_above:
                self.dropped += 1
                return False
            if self.bytes + size > self.max_bytes:
                self.overflowed = True
                self._frames.clear()
                self.bytes = 0
                self._event.set()
                return False
        self._frames.append(frame)
        self.bytes += size
        self._event.set()
        return True

    def finish(self) -> None:
        """No more frames: :meth:`get` returns ``None`` once the queue is empty (at once after an overflow)."""
        self._finished = True
        self._event.set()

    async def get(self) -> str | None:
        while True:
            if self.overflowed:
                return None
            if self._frames:
                frame = self._frames.popleft()
                self.bytes -= len(frame)
                return frame
            if self._finished:
                return None
            self._event.clear()
            await self._event.wait()
