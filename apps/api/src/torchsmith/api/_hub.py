"""Fan-out of job messages to WebSocket clients without letting one slow client hold others.

Messages are published from the job supervisor threads and handed to the event
loop; each subscriber has a bounded queue. When a queue is full the message is
dropped for that subscriber only and counted, and the count is reported to the
client before its next message.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Message:
    """One stored job message as sent to WebSocket clients: its JSON text and sequence."""

    seq: int
    type: str
    text: str
    final: bool = False


@dataclass(eq=False)
class Subscription:
    """One client's view of one job: a bounded queue and how much it lost."""

    job_id: str
    queue: asyncio.Queue[Message]
    dropped: int = 0
    reported: int = field(default=0)

    def offer(self, message: Message) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped += 1

    def unreported_drops(self) -> int:
        """Drops since the last call; the caller tells the client."""
        new = self.dropped - self.reported
        self.reported = self.dropped
        return new


class EventHub:
    """Job id -> subscriptions; ``publish`` is safe to call from any thread."""

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, job_id: str, queue_size: int | None = None) -> Subscription:
        """Called on the event loop by a WebSocket handler."""
        sub = Subscription(job_id, asyncio.Queue(maxsize=queue_size or self.queue_size))
        with self._lock:
            self._subs[job_id].add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.job_id]

    def subscribers(self, job_id: str) -> int:
        with self._lock:
            return len(self._subs.get(job_id, ()))

    def publish(self, job_id: str, messages: list[Message]) -> None:
        loop = self._loop
        with self._lock:
            if job_id not in self._subs:
                return
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._fanout, job_id, messages)
        except RuntimeError:  # the loop closed between the check and the call
            return

    def _fanout(self, job_id: str, messages: list[Message]) -> None:
        with self._lock:
            subs = list(self._subs.get(job_id, ()))
        for sub in subs:
            for message in messages:
                sub.offer(message)
