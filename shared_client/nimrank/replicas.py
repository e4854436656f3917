"""The clients' side of a fleet: one :class:`~nimrank.fleet.Fleet`, shared safely, with waiting.

``fleet.py`` decides (pure, scripted time); this module holds the lock, the
clock and the waiting. One ``Replicas`` belongs to one client and is shared
by every thread and event loop that client runs on: one set of statistics,
one cap on requests in flight. The fleet's calls are quick and made under a
``threading.Lock`` never held across a wait. Sync callers wait on a
``threading.Condition``; each event loop waits on an ``asyncio.Event`` of its
own, because asyncio primitives belong to one loop (a shared one breaks
under ``asyncio.run`` per call).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence

from .fleet import Fleet, FleetPolicy, Lease, Outcome, ReplicaStats, Wait

__all__ = ["Replicas"]


class Replicas:
    """Leases on a fleet of replica URLs for one client.

    Args:
        urls: the replicas' base URLs (two or more, distinct).
        per_replica: requests in flight on one replica at most; the client
            as a whole sends at most ``per_replica * len(urls)`` at once.
    """

    def __init__(self, urls: Sequence[str], per_replica: int) -> None:
        self._fleet = Fleet(urls, FleetPolicy(max_per_replica=per_replica))
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._wakeups: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}

    @property
    def max_in_flight(self) -> int:
        """Requests in flight across the fleet at most."""
        return self._fleet.max_in_flight

    def acquire(self) -> Lease:
        """A lease on the best replica, waiting (blocking) until there is one."""
        with self._released:
            while not isinstance(choice := self._fleet.acquire(time.monotonic()), Lease):
                self._released.wait(choice.seconds)  # None: until a release
            return choice

    async def aacquire(self) -> Lease:
        """A lease on the best replica, waiting on the running loop until there is one."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                for ended in [other for other in self._wakeups if other.is_closed()]:
                    del self._wakeups[ended]
                wakeup = self._wakeups.setdefault(loop, asyncio.Event())
                # Cleared under the lock, before asking: a release after this sets it.
                wakeup.clear()
                choice: Lease | Wait = self._fleet.acquire(time.monotonic())
            if isinstance(choice, Lease):
                return choice
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wakeup.wait(), choice.seconds)

    def release(self, lease: Lease, outcome: Outcome, retry_after: float | None = None) -> None:
        """Give ``lease`` back with what its request said about the replica."""
        with self._released:
            self._fleet.release(lease, outcome, time.monotonic(), retry_after=retry_after)
            self._released.notify_all()
            loops = list(self._wakeups.items())
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, event in loops:
            if loop is running:
                event.set()
            elif not loop.is_closed():
                # The loop may close in the meantime: then nobody waits on it.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(event.set)

    def stats(self) -> tuple[ReplicaStats, ...]:
        """A snapshot of every replica's counters, in the order given."""
        with self._lock:
            return self._fleet.stats(time.monotonic()).replicas
