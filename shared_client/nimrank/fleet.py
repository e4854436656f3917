"""Client-side balancing over a fleet of replicas. Pure: no sockets, clocks or sleeps.

A :class:`Fleet` decides which replica the next request goes to and when a
caller has to wait; the client shells do the I/O, keep the clock and sleep.
Every call takes ``now`` (seconds on any monotonic clock), so tests script
time, and the only randomness (the initial tie-break order) is seeded.

The rules:

* **Least outstanding requests, late binding.** :meth:`Fleet.acquire` is
  called when a request is about to be sent (after a slot freed), never when
  it is queued, and picks the healthy replica with the fewest requests in
  flight; ties go to the one picked least recently, from a shuffled start so
  that many clients do not all begin on the first replica.
* **Caps.** At most ``FleetPolicy.max_per_replica`` requests in flight per
  replica, and ``FleetPolicy.max_in_flight`` across the whole fleet (and so
  across every concurrent ``rank()`` call that shares the fleet).
* **Ejection.** A :attr:`Outcome.FAILED` request (connection error, timeout,
  502, 503, 504) ejects its replica for ``eject_initial`` seconds, doubling
  with every ejection in a row up to ``eject_max``; a successful request ends
  the streak. The caller retries the batch at once: ``acquire`` simply no
  longer offers that replica. An ejected replica whose time is up gets a
  **probe** lease (``lease.probe``): the shell sends NIM's readiness check,
  ``GET {base}/health/ready`` (``/v1/health/ready`` on a NIM), instead of a
  batch, and releases the lease with ``OK`` (readmitted) or ``FAILED``
  (ejected again, for twice as long). No batch is ever spent on finding out
  whether a replica came back. With every replica ejected ``acquire``
  answers ``Wait(seconds)`` until the first probe is due.
* **Throttling.** A :attr:`Outcome.THROTTLED` request (429) keeps that
  replica, and only that one, out of the choice for ``retry_after`` seconds
  (the response's ``Retry-After``; ``throttle_default`` without one). It is
  not ejected and not probed.

The API the shells use (all methods are synchronous and quick; a shell that
shares one fleet between threads or event loops holds a ``threading.Lock``
around them, never across an ``await``):

* ``Fleet(urls, policy=FleetPolicy(), *, seed=None)``
* ``fleet.acquire(now) -> Lease | Wait``: a lease to send on, or how long to
  wait (``Wait.seconds is None``: until some lease is released).
* ``fleet.release(lease, outcome, now, *, retry_after=None)``: exactly once
  per lease, whatever happened (``Outcome.ABANDONED`` when the caller was
  cancelled or gave up before an answer).
* ``fleet.stats(now) -> FleetStats``: a plain, frozen snapshot per replica.
* ``outcome_for_status(status)`` maps an HTTP status to an :class:`Outcome`.

The sync shell, one ``threading.Condition`` per client::

    def acquire():
        with condition:
            while not isinstance(choice := fleet.acquire(time.monotonic()), Lease):
                condition.wait(choice.seconds)  # None: until a release notifies
            return choice

    def release(lease, outcome, retry_after):
        with condition:
            fleet.release(lease, outcome, time.monotonic(), retry_after=retry_after)
            condition.notify_all()

    def send_batch(batch):
        attempt = 0
        while True:
            lease = acquire()  # late binding: chosen now, not when queued
            outcome, retry_after, response = Outcome.ABANDONED, None, None
            try:
                if lease.probe:  # GET {lease.url}/health/ready: 200 -> OK, else FAILED
                    outcome = probe(lease.url)
                else:  # transport error or timeout -> FAILED, else outcome_for_status;
                    outcome, retry_after, response = post(lease.url, batch)  # + Retry-After
            finally:  # ABANDONED if interrupted or cancelled
                release(lease, outcome, retry_after)
            if response is not None and response.status_code == 200:
                return response
            if lease.probe and outcome is Outcome.OK:
                continue  # readmitted: not an attempt
            attempt += 1  # one budget: failures, 429s, 500s, failed probes
            if attempt > max_retries:
                raise the last failure's typed error
            if outcome is Outcome.OK:  # a 500 or similar: the replica is alive, back off
                time.sleep(retry_policy.delay(attempt, ...))
            # FAILED or THROTTLED: no sleep; acquire() offers another replica at
            # once, or waits as long as the fleet says (ejection, Retry-After).

Counting failed probes against the budget bounds a call when every replica
stays down (with one replica: ``eject_initial`` + twice that + ... seconds).

The async shell is the same lines with ``await``. The fleet is shared by
every event loop (one budget, one set of statistics) behind a
``threading.Lock`` held only around the fleet's calls, and each loop has its
own ``asyncio.Event`` (in a dict keyed by loop, like the client's connection
pools), because asyncio primitives belong to one loop and a shared
``asyncio.Condition`` breaks under ``asyncio.run`` per call::

    async def acquire():
        wakeup = wakeups.setdefault(asyncio.get_running_loop(), asyncio.Event())
        while True:
            wakeup.clear()  # before acquire: a release after this sets it again
            with lock:
                choice = fleet.acquire(time.monotonic())
            if isinstance(choice, Lease):
                return choice
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wakeup.wait(), choice.seconds)

    def release(lease, outcome, retry_after):
        with lock:
            fleet.release(lease, outcome, time.monotonic(), retry_after=retry_after)
            loops = list(wakeups.items())
        for loop, event in loops:  # drop loops that have closed
            if loop is running_loop:
                event.set()
            elif not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

``tests/benchmarks/fleet.py`` (``FleetShell``) runs this loop for one event
loop over raw ``httpx``.

Example:
    >>> fleet = Fleet(["http://a:8000/v1", "http://b:8000/v1"], seed=0)
    >>> first, second = fleet.acquire(0.0), fleet.acquire(0.0)
    >>> sorted([first.url, second.url])
    ['http://a:8000/v1', 'http://b:8000/v1']
    >>> fleet.release(first, Outcome.FAILED, 0.1)  # ejected for 1 s
    >>> fleet.acquire(0.2).url == second.url
    True
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

# Defined where the client imports them from: it needs them, not this module.
from .retry import Outcome, outcome_for_status
from .validation import check_replica_urls

__all__ = [
    "Fleet",
    "FleetPolicy",
    "FleetStats",
    "Lease",
    "Outcome",
    "ReplicaState",
    "ReplicaStats",
    "Wait",
    "check_replica_urls",
    "outcome_for_status",
]


def _check_positive(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


@dataclass(frozen=True)
class FleetPolicy:
    """How a :class:`Fleet` balances, caps and ejects.

    Attributes:
        max_per_replica: requests in flight on one replica at most.
        max_in_flight: requests in flight across the fleet at most; None:
            ``max_per_replica`` times the number of replicas.
        eject_initial: seconds a replica stays out after its first failure.
        eject_max: the longest ejection; each ejection in a row doubles it.
        throttle_default: seconds a 429 without ``Retry-After`` keeps a replica out.
        latency_weight: weight of the newest latency in the moving average.
    """

    max_per_replica: int = 8
    max_in_flight: int | None = None
    eject_initial: float = 1.0
    eject_max: float = 30.0
    throttle_default: float = 1.0
    latency_weight: float = 0.2

    def __post_init__(self) -> None:
        for name in ("max_per_replica", "max_in_flight"):
            value = getattr(self, name)
            if value is None and name == "max_in_flight":
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        for name in ("eject_initial", "eject_max", "throttle_default"):
            _check_positive(name, getattr(self, name))
        _check_positive("latency_weight", self.latency_weight)
        if not 0 < self.latency_weight <= 1:
            raise ValueError(f"latency_weight must be in (0, 1], got {self.latency_weight}")

    def ejection(self, in_a_row: int) -> float:
        """Seconds out for ejection number ``in_a_row`` (from 1) without a success between."""
        # The exponent is bounded: 2.0 ** 1024 overflows after that many ejections.
        return min(self.eject_initial * 2.0 ** min(in_a_row - 1, 64), self.eject_max)


@dataclass(frozen=True)
class Lease:
    """Permission to send one request (or, with ``probe``, one readiness check).

    Attributes:
        replica: the replica's position in the fleet's ``urls``.
        url: the replica's base URL, as given to the fleet.
        probe: send ``GET {url}/health/ready`` rather than a batch.
        started: ``now`` when the lease was granted (for the latency).
    """

    replica: int
    url: str
    probe: bool
    started: float
    token: int = field(repr=False, compare=True)


@dataclass(frozen=True)
class Wait:
    """No lease now: wait ``seconds`` or until a lease is released (``None``)."""

    seconds: float | None


class ReplicaState(enum.Enum):
    """Where a replica stands."""

    HEALTHY = "healthy"
    THROTTLED = "throttled"
    EJECTED = "ejected"
    PROBING = "probing"


@dataclass(frozen=True)
class ReplicaStats:
    """One replica's counters, a plain value.

    Attributes:
        url: the replica's base URL.
        state: healthy, throttled (429 backoff), ejected, or being probed.
        in_flight: requests (and probes) on it now.
        requests: batches sent to it (leases granted, probes excluded).
        succeeded: requests it answered (``Outcome.OK``).
        failures: requests that failed on it (``Outcome.FAILED``).
        throttled: requests it answered with 429.
        ejections: times it was ejected.
        probes: readiness checks sent to it.
        latency_total: seconds spent on its answered requests, summed.
        latency_ewma: moving average of those latencies (None before any).
    """

    url: str
    state: ReplicaState
    in_flight: int
    requests: int
    succeeded: int
    failures: int
    throttled: int
    ejections: int
    probes: int
    latency_total: float
    latency_ewma: float | None


@dataclass(frozen=True)
class FleetStats:
    """The whole fleet's counters: one :class:`ReplicaStats` per replica, in order."""

    replicas: tuple[ReplicaStats, ...]
    in_flight: int

    @property
    def requests(self) -> tuple[int, ...]:
        """Batches sent to each replica, in the fleet's order: the split."""
        return tuple(replica.requests for replica in self.replicas)


@dataclass
class _Replica:
    url: str
    last_pick: int
    in_flight: int = 0
    ejected_until: float | None = None  # None: admitted
    ejections_in_a_row: int = 0
    probing: bool = False
    throttled_until: float = -math.inf
    requests: int = 0
    succeeded: int = 0
    failures: int = 0
    throttled: int = 0
    ejections: int = 0
    probes: int = 0
    latency_total: float = 0.0
    latency_ewma: float | None = None

    def state(self, now: float) -> ReplicaState:
        if self.probing:
            return ReplicaState.PROBING
        if self.ejected_until is not None:
            return ReplicaState.EJECTED
        if self.throttled_until > now:
            return ReplicaState.THROTTLED
        return ReplicaState.HEALTHY


class Fleet:
    """The balancer's state: which replica gets the next request, and when.

    Not thread-safe: a shell shared between threads or loops holds a lock
    around each call (see the module docstring for the shell loops).

    Args:
        urls: the replicas' base URLs, distinct, at least one.
        policy: caps and ejection timings.
        seed: seeds the shuffled initial tie-break order (None: random).
    """

    def __init__(
        self, urls: Sequence[str], policy: FleetPolicy | None = None, *, seed: int | None = None
    ) -> None:
        if isinstance(urls, str):
            raise TypeError("urls must be a sequence of base URLs, not one string")
        urls = check_replica_urls(urls)
        if policy is not None and not isinstance(policy, FleetPolicy):
            raise TypeError(f"policy must be a FleetPolicy, got {policy!r}")
        self.policy = policy or FleetPolicy()
        order = list(range(len(urls)))
        random.Random(seed).shuffle(order)
        # Negative "last picked" stamps in shuffled order: the first ties go round
        # the replicas in that order, then least recently picked first.
        self._replicas = [_Replica(url, last_pick=0) for url in urls]
        for rank, position in enumerate(order):
            self._replicas[position].last_pick = rank - len(urls)
        self._picks = 0
        self._in_flight = 0
        self._tokens = 0
        self._leases: dict[int, Lease] = {}

    @property
    def urls(self) -> tuple[str, ...]:
        """The replicas' base URLs, in the order given."""
        return tuple(replica.url for replica in self._replicas)

    @property
    def max_in_flight(self) -> int:
        """Requests in flight across the fleet at most."""
        cap = self.policy.max_in_flight
        return cap if cap is not None else self.policy.max_per_replica * len(self._replicas)

    @property
    def in_flight(self) -> int:
        """Leases granted and not yet released."""
        return self._in_flight

    def acquire(self, now: float) -> Lease | Wait:
        """A lease on the best replica now, or how long to wait for one.

        Call it when the request is about to be sent (late binding). A due
        probe comes first, so a replica that came back is readmitted as soon
        as possible; else the admitted, unthrottled replica under its cap with
        the fewest requests in flight.
        """
        if self._in_flight >= self.max_in_flight:
            return Wait(None)
        for position, replica in enumerate(self._replicas):
            due = replica.ejected_until is not None and replica.ejected_until <= now
            if due and not replica.probing:
                replica.probing = True
                replica.probes += 1
                return self._lease(position, now, probe=True)
        candidates = [
            position
            for position, replica in enumerate(self._replicas)
            if replica.ejected_until is None
            and replica.throttled_until <= now
            and replica.in_flight < self.policy.max_per_replica
        ]
        if candidates:
            best = min(
                candidates,
                key=lambda p: (self._replicas[p].in_flight, self._replicas[p].last_pick),
            )
            replica = self._replicas[best]
            replica.requests += 1
            replica.last_pick = self._picks
            self._picks += 1
            return self._lease(best, now, probe=False)
        # Nothing to send on: wake at the first readmission or end of a 429
        # backoff, or (None) when a release frees a slot on a capped replica.
        times = [
            replica.ejected_until
            for replica in self._replicas
            if replica.ejected_until is not None and not replica.probing
        ] + [
            replica.throttled_until
            for replica in self._replicas
            if replica.ejected_until is None and replica.throttled_until > now
        ]
        return Wait(max(min(times) - now, 0.0) if times else None)

    def release(
        self, lease: Lease, outcome: Outcome, now: float, *, retry_after: float | None = None
    ) -> None:
        """Give ``lease`` back with what happened; exactly once per lease.

        Args:
            lease: from :meth:`acquire`.
            outcome: what the request (or probe) says about the replica.
            now: the clock, as for :meth:`acquire`.
            retry_after: for ``THROTTLED``, the seconds the 429 asked for.
        """
        if not isinstance(outcome, Outcome):
            raise TypeError(f"outcome must be an Outcome, got {outcome!r}")
        if self._leases.pop(lease.token, None) != lease:
            raise ValueError(f"{lease!r} is not an outstanding lease of this fleet")
        if retry_after is not None:
            _check_positive("retry_after", retry_after)
        replica = self._replicas[lease.replica]
        replica.in_flight -= 1
        self._in_flight -= 1
        if lease.probe:
            replica.probing = False
            if outcome is Outcome.OK:
                replica.ejected_until = None  # readmitted; the streak ends on a real success
            elif outcome is not Outcome.ABANDONED:  # failed or throttled: not ready yet
                replica.ejections_in_a_row += 1
                replica.ejected_until = now + self.policy.ejection(replica.ejections_in_a_row)
            return
        if outcome is Outcome.OK:
            replica.succeeded += 1
            latency = max(now - lease.started, 0.0)
            replica.latency_total += latency
            weight = self.policy.latency_weight
            previous = replica.latency_ewma
            replica.latency_ewma = (
                latency if previous is None else previous + weight * (latency - previous)
            )
            if replica.ejected_until is None:
                replica.ejections_in_a_row = 0
        elif outcome is Outcome.FAILED:
            replica.failures += 1
            # Requests in flight when it was ejected fail too: one outage, one ejection.
            if replica.ejected_until is None:
                replica.ejections += 1
                replica.ejections_in_a_row += 1
                replica.ejected_until = now + self.policy.ejection(replica.ejections_in_a_row)
        elif outcome is Outcome.THROTTLED:
            replica.throttled += 1
            wait = self.policy.throttle_default if retry_after is None else retry_after
            replica.throttled_until = max(replica.throttled_until, now + wait)

    def stats(self, now: float) -> FleetStats:
        """A snapshot of every replica's counters at ``now``."""
        return FleetStats(
            replicas=tuple(
                ReplicaStats(
                    url=replica.url,
                    state=replica.state(now),
                    in_flight=replica.in_flight,
                    requests=replica.requests,
                    succeeded=replica.succeeded,
                    failures=replica.failures,
                    throttled=replica.throttled,
                    ejections=replica.ejections,
                    probes=replica.probes,
                    latency_total=replica.latency_total,
                    latency_ewma=replica.latency_ewma,
                )
                for replica in self._replicas
            ),
            in_flight=self._in_flight,
        )

    def _lease(self, position: int, now: float, *, probe: bool) -> Lease:
        self._tokens += 1
        lease = Lease(position, self._replicas[position].url, probe, now, self._tokens)
        self._leases[lease.token] = lease
        self._replicas[position].in_flight += 1
        self._in_flight += 1
        return lease

    def __repr__(self) -> str:
        return f"Fleet({list(self.urls)!r}, in_flight={self._in_flight})"
