"""The fleet balancer's choices, driven by a scripted transport on a virtual clock.

Counts, never timings: the clock is a number the tests advance, so nothing
here sleeps and every result is exact.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nimrank.fleet import (
    Fleet,
    FleetPolicy,
    Lease,
    Outcome,
    ReplicaState,
    Wait,
    outcome_for_status,
)

URLS = ["http://a/v1", "http://b/v1", "http://c/v1", "http://d/v1"]

# What a replica does with a request sent at a virtual time: (outcome, duration).
Script = Callable[[int, float], tuple[Outcome, float]]


def steady(_replica: int, _now: float) -> tuple[Outcome, float]:
    return Outcome.OK, 1.0


@dataclass
class Run:
    """What a simulated job did: which replica finished each batch, and every send."""

    done: dict[int, int] = field(default_factory=dict)  # batch -> replica that answered
    sends: list[tuple[int, int, Outcome]] = field(default_factory=list)  # batch, replica, outcome
    probes: list[tuple[int, Outcome]] = field(default_factory=list)
    peak_per_replica: list[int] = field(default_factory=list)
    peak_total: int = 0
    now: float = 0.0


def simulate(
    fleet: Fleet,
    batches: int,
    script: Script = steady,
    *,
    probe: Callable[[int, float], Outcome] = lambda _r, _t: Outcome.OK,
    until: float = 10_000.0,
) -> Run:
    """Send ``batches`` batches through ``fleet``, each retried until answered.

    The shell's loop, sans threads: acquire while there is work, schedule each
    lease's answer on the virtual clock, release it when the clock gets there,
    and requeue a batch whose attempt failed (at the front: it is retried at once).
    """
    run = Run(peak_per_replica=[0] * len(fleet.urls))
    pending = list(range(batches))
    events: list[tuple[float, int, Lease, int | None, Outcome]] = []
    sequence = 0
    now = 0.0
    while (pending or events) and now < until:
        wait: Wait | None = None
        while pending:  # acquire while there is work
            choice = fleet.acquire(now)
            if isinstance(choice, Wait):
                wait = choice
                break
            if choice.probe:
                outcome, batch, duration = probe(choice.replica, now), None, 0.5
            else:
                batch = pending.pop(0)
                outcome, duration = script(choice.replica, now)
            heapq.heappush(events, (now + duration, sequence, choice, batch, outcome))
            sequence += 1
            in_flight = fleet.stats(now).replicas
            for position, replica in enumerate(in_flight):
                run.peak_per_replica[position] = max(
                    run.peak_per_replica[position], replica.in_flight
                )
            run.peak_total = max(run.peak_total, fleet.in_flight)
        next_event = events[0][0] if events else None
        wake = None if wait is None or wait.seconds is None else now + wait.seconds
        candidates = [t for t in (next_event, wake) if t is not None]
        if not candidates:
            break
        now = max(now, min(candidates))
        while events and events[0][0] <= now:
            _, _, lease, batch, outcome = heapq.heappop(events)
            retry_after = 2.0 if outcome is Outcome.THROTTLED else None
            fleet.release(lease, outcome, now, retry_after=retry_after)
            if batch is None:
                run.probes.append((lease.replica, outcome))
                continue
            run.sends.append((batch, lease.replica, outcome))
            if outcome is Outcome.OK:
                assert batch not in run.done, "a batch was answered twice"
                run.done[batch] = lease.replica
            else:
                pending.insert(0, batch)
    run.now = now
    return run


@pytest.mark.parametrize("replicas", [1, 2, 3, 4])
def test_the_split_is_even_across_identical_replicas(replicas: int) -> None:
    fleet = Fleet(URLS[:replicas], FleetPolicy(max_per_replica=2), seed=1)
    run = simulate(fleet, 400)
    split = fleet.stats(run.now).requests
    assert sum(split) == 400
    assert max(split) - min(split) <= 1


def test_one_request_at_a_time_still_goes_round_the_replicas() -> None:
    fleet = Fleet(URLS, FleetPolicy(max_in_flight=1), seed=3)
    run = simulate(fleet, 40)
    assert fleet.stats(run.now).requests == (10, 10, 10, 10)
    assert run.peak_total == 1


def test_seeds_shuffle_which_replica_comes_first() -> None:
    firsts = set()
    for seed in range(20):
        lease = Fleet(URLS, seed=seed).acquire(0.0)
        assert isinstance(lease, Lease)
        firsts.add(lease.replica)
    assert len(firsts) > 1


def test_a_slow_replica_gets_fewer_batches() -> None:
    # Least outstanding requests: a replica twice as slow holds its slots
    # twice as long, so it is offered half as many batches.
    def script(replica: int, _now: float) -> tuple[Outcome, float]:
        return Outcome.OK, 2.0 if replica == 0 else 1.0

    fleet = Fleet(URLS[:2], FleetPolicy(max_per_replica=4), seed=0)
    run = simulate(fleet, 300, script)
    assert fleet.stats(run.now).requests == (100, 200)


def test_the_replica_with_fewer_requests_in_flight_wins_even_under_no_cap() -> None:
    # Only the client-wide bound binds: round robin would split 150/150; least
    # outstanding requests keeps 4 in flight on each, so the replica three
    # times as slow is offered a third as many batches.
    def script(replica: int, _now: float) -> tuple[Outcome, float]:
        return Outcome.OK, 3.0 if replica == 0 else 1.0

    fleet = Fleet(URLS[:2], FleetPolicy(max_per_replica=100, max_in_flight=8), seed=0)
    run = simulate(fleet, 300, script)
    slow, fast = fleet.stats(run.now).requests
    assert (slow + fast, run.peak_total) == (300, 8)
    assert 70 <= slow <= 80


@given(
    caps=st.tuples(st.integers(1, 5), st.integers(1, 12)),
    replicas=st.integers(1, 4),
    steps=st.lists(st.tuples(st.booleans(), st.integers(0, 50)), max_size=120),
)
def test_the_caps_hold_whatever_the_order_of_acquires_and_releases(
    caps: tuple[int, int], replicas: int, steps: list[tuple[bool, int]]
) -> None:
    per_replica, total = caps
    fleet = Fleet(URLS[:replicas], FleetPolicy(max_per_replica=per_replica, max_in_flight=total))
    leases: list[Lease] = []
    for now, (take, pick) in enumerate(steps):
        if take or not leases:
            choice = fleet.acquire(float(now))
            if isinstance(choice, Lease):
                leases.append(choice)
            else:
                # It waits only when a cap is really reached.
                assert choice.seconds is None
                replicas_in_flight = fleet.stats(float(now)).replicas
                assert len(leases) == total or all(
                    replica.in_flight == per_replica for replica in replicas_in_flight
                )
        else:
            fleet.release(leases.pop(pick % len(leases)), Outcome.OK, float(now))
        stats = fleet.stats(float(now))
        assert stats.in_flight == len(leases) <= total
        assert all(replica.in_flight <= per_replica for replica in stats.replicas)
        assert sum(replica.in_flight for replica in stats.replicas) == len(leases)


def test_a_failed_replica_is_ejected_and_its_batch_goes_elsewhere_at_once() -> None:
    fleet = Fleet(URLS[:2], FleetPolicy(eject_initial=1.0), seed=0)
    first = fleet.acquire(0.0)
    assert isinstance(first, Lease)
    fleet.release(first, Outcome.FAILED, 0.1)
    for _ in range(5):  # every retry at once, all on the other replica
        again = fleet.acquire(0.2)
        assert isinstance(again, Lease)
        assert again.replica != first.replica
        fleet.release(again, Outcome.OK, 0.3)
    dead = fleet.stats(0.3).replicas[first.replica]
    assert (dead.state, dead.failures, dead.ejections, dead.requests) == (
        ReplicaState.EJECTED,
        1,
        1,
        1,
    )


def test_an_ejected_replica_is_probed_when_due_and_readmitted_on_success() -> None:
    fleet = Fleet(URLS[:2], FleetPolicy(eject_initial=1.0), seed=0)
    lease = fleet.acquire(0.0)
    assert isinstance(lease, Lease)
    fleet.release(lease, Outcome.FAILED, 0.0)
    probe = fleet.acquire(1.0)  # due: a probe before any batch
    assert isinstance(probe, Lease)
    assert (probe.probe, probe.replica) == (True, lease.replica)
    other = fleet.acquire(1.0)  # meanwhile batches go to the healthy one
    assert isinstance(other, Lease)
    assert (other.probe, other.replica) == (False, 1 - lease.replica)
    fleet.release(probe, Outcome.OK, 1.1)
    assert fleet.stats(1.1).replicas[lease.replica].state is ReplicaState.HEALTHY
    back = fleet.acquire(1.2)  # the readmitted replica has nothing in flight
    assert isinstance(back, Lease)
    assert (back.probe, back.replica) == (False, lease.replica)
    stats = fleet.stats(1.2).replicas[lease.replica]
    assert (stats.probes, stats.requests) == (1, 2)


def test_ejections_in_a_row_double_up_to_the_cap_and_a_success_resets_them() -> None:
    policy = FleetPolicy(eject_initial=1.0, eject_max=4.0)
    fleet = Fleet(URLS[:1], policy)
    now = 0.0
    lease = fleet.acquire(now)
    assert isinstance(lease, Lease)
    fleet.release(lease, Outcome.FAILED, now)
    waits = []
    for _ in range(4):  # every probe fails: 1 s, then 2, 4, 4, 4
        wait = fleet.acquire(now)
        assert isinstance(wait, Wait)
        assert wait.seconds is not None
        waits.append(wait.seconds)
        now += wait.seconds
        probe = fleet.acquire(now)
        assert isinstance(probe, Lease)
        assert probe.probe
        fleet.release(probe, Outcome.FAILED, now)
    assert waits == [1.0, 2.0, 4.0, 4.0]
    now += 4.0
    probe = fleet.acquire(now)
    assert isinstance(probe, Lease)
    fleet.release(probe, Outcome.OK, now)
    batch = fleet.acquire(now)
    assert isinstance(batch, Lease)
    assert not batch.probe
    fleet.release(batch, Outcome.OK, now)
    batch = fleet.acquire(now)
    assert isinstance(batch, Lease)
    fleet.release(batch, Outcome.FAILED, now)  # a fresh streak: 1 s again
    assert fleet.acquire(now) == Wait(1.0)
    assert fleet.stats(now).replicas[0].ejections == 2


def test_with_every_replica_ejected_the_fleet_says_when_to_probe() -> None:
    fleet = Fleet(URLS[:2], FleetPolicy(eject_initial=2.0), seed=0)
    leases = [fleet.acquire(0.0), fleet.acquire(0.0)]
    assert all(isinstance(lease, Lease) for lease in leases)
    fleet.release(leases[0], Outcome.FAILED, 0.0)  # type: ignore[arg-type]
    fleet.release(leases[1], Outcome.FAILED, 1.0)  # type: ignore[arg-type]
    assert fleet.acquire(0.5) == Wait(1.5)
    probe = fleet.acquire(2.0)
    assert isinstance(probe, Lease)
    assert (probe.probe, probe.replica) == (True, leases[0].replica)  # type: ignore[union-attr]
    # The other is not due before 3.0; the one being probed is in flight.
    assert fleet.acquire(2.0) == Wait(1.0)


def test_requests_in_flight_when_a_replica_dies_eject_it_once() -> None:
    fleet = Fleet(URLS[:2], FleetPolicy(max_per_replica=3), seed=0)
    leases = [fleet.acquire(0.0) for _ in range(6)]
    doomed = [lease for lease in leases if isinstance(lease, Lease) and lease.replica == 0]
    assert len(doomed) == 3
    for lease in doomed:
        fleet.release(lease, Outcome.FAILED, 0.1)
    stats = fleet.stats(0.1).replicas[0]
    assert (stats.failures, stats.ejections) == (3, 1)
    wait = fleet.acquire(0.2)  # replica 1 at its cap, replica 0 due at 1.1
    assert isinstance(wait, Wait)
    assert wait.seconds == pytest.approx(0.9)
    assert fleet.acquire(1.1) == Lease(0, URLS[0], True, 1.1, token=7)  # 1 s, not 8


def test_late_binding_a_queued_batch_never_goes_to_a_replica_that_died_meanwhile() -> None:
    fleet = Fleet(URLS[:2], FleetPolicy(max_per_replica=1), seed=0)
    a, b = fleet.acquire(0.0), fleet.acquire(0.0)
    assert isinstance(a, Lease)
    assert isinstance(b, Lease)
    assert fleet.acquire(0.0) == Wait(None)  # the third batch queues
    fleet.release(a, Outcome.FAILED, 0.5)  # a's replica dies while it waits
    assert fleet.acquire(0.5) == Wait(1.0)  # a's slot freed, but not for this batch
    fleet.release(b, Outcome.OK, 0.6)
    third = fleet.acquire(0.6)
    assert isinstance(third, Lease)
    assert third.replica == b.replica


def test_a_429_backs_off_only_that_replica_for_its_retry_after() -> None:
    fleet = Fleet(URLS[:3], FleetPolicy(max_per_replica=10), seed=0)
    lease = fleet.acquire(0.0)
    assert isinstance(lease, Lease)
    fleet.release(lease, Outcome.THROTTLED, 0.0, retry_after=5.0)
    chosen = set()
    for _ in range(12):
        other = fleet.acquire(1.0)
        assert isinstance(other, Lease)
        chosen.add(other.replica)
    assert chosen == {0, 1, 2} - {lease.replica}
    stats = fleet.stats(1.0).replicas[lease.replica]
    assert (stats.state, stats.throttled, stats.ejections, stats.failures) == (
        ReplicaState.THROTTLED,
        1,
        0,
        0,
    )
    back = fleet.acquire(5.0)  # not probed: it said when, and it is back then
    assert isinstance(back, Lease)
    assert (back.replica, back.probe) == (lease.replica, False)


def test_a_429_without_retry_after_uses_the_default_and_an_all_throttled_fleet_waits() -> None:
    fleet = Fleet(URLS[:1], FleetPolicy(throttle_default=3.0))
    lease = fleet.acquire(0.0)
    assert isinstance(lease, Lease)
    fleet.release(lease, Outcome.THROTTLED, 1.0)
    assert fleet.acquire(2.0) == Wait(2.0)
    assert fleet.stats(2.0).replicas[0].probes == 0


def test_an_abandoned_lease_frees_its_slot_and_says_nothing_about_the_replica() -> None:
    fleet = Fleet(URLS[:1], FleetPolicy(max_per_replica=1))
    lease = fleet.acquire(0.0)
    assert isinstance(lease, Lease)
    fleet.release(lease, Outcome.ABANDONED, 0.1)
    stats = fleet.stats(0.1).replicas[0]
    assert (stats.state, stats.in_flight, stats.failures, stats.succeeded) == (
        ReplicaState.HEALTHY,
        0,
        0,
        0,
    )
    assert isinstance(fleet.acquire(0.2), Lease)


def test_an_abandoned_probe_leaves_the_probe_due() -> None:
    fleet = Fleet(URLS[:1])
    lease = fleet.acquire(0.0)
    assert isinstance(lease, Lease)
    fleet.release(lease, Outcome.FAILED, 0.0)
    probe = fleet.acquire(1.0)
    assert isinstance(probe, Lease)
    fleet.release(probe, Outcome.ABANDONED, 1.0)
    again = fleet.acquire(1.0)
    assert isinstance(again, Lease)
    assert again.probe


def test_a_lease_is_released_exactly_once() -> None:
    fleet = Fleet(URLS[:1])
    lease = fleet.acquire(0.0)
    assert isinstance(lease, Lease)
    fleet.release(lease, Outcome.OK, 0.0)
    with pytest.raises(ValueError, match="not an outstanding lease"):
        fleet.release(lease, Outcome.OK, 0.0)
    with pytest.raises(ValueError, match="not an outstanding lease"):
        Fleet(URLS[:1]).release(lease, Outcome.OK, 0.0)


def test_latency_statistics_count_answered_requests() -> None:
    fleet = Fleet(URLS[:1], FleetPolicy(latency_weight=0.5))
    for started, finished in ((0.0, 1.0), (1.0, 4.0)):
        lease = fleet.acquire(started)
        assert isinstance(lease, Lease)
        fleet.release(lease, Outcome.OK, finished)
    stats = fleet.stats(4.0).replicas[0]
    assert (stats.latency_total, stats.latency_ewma, stats.succeeded) == (4.0, 2.0, 2)


@settings(max_examples=60, deadline=None)
@given(
    replicas=st.integers(1, 4),
    batches=st.integers(1, 120),
    faults=st.lists(st.sampled_from(list(Outcome)), min_size=1, max_size=30),
    down=st.sets(st.integers(0, 3), max_size=3),
)
def test_nothing_is_lost_or_duplicated_while_replicas_fail_and_come_back(
    replicas: int, batches: int, faults: list[Outcome], down: set[int]
) -> None:
    # Replicas in `down` fail everything until t=20, then recover; the others
    # play a scripted mix of answers, failures, 429s and abandoned attempts.
    if Outcome.OK not in faults:
        faults = [*faults, Outcome.OK]
    script_position = iter(range(10**9))

    def script(replica: int, now: float) -> tuple[Outcome, float]:
        if replica in down and now < 20.0:
            return Outcome.FAILED, 0.2
        outcome = faults[next(script_position) % len(faults)]
        return outcome, 1.0

    def probe(replica: int, now: float) -> Outcome:
        return Outcome.FAILED if replica in down and now < 20.0 else Outcome.OK

    fleet = Fleet(URLS[:replicas], FleetPolicy(max_per_replica=3, eject_max=8.0), seed=0)
    run = simulate(fleet, batches, script, probe=probe)
    assert sorted(run.done) == list(range(batches))  # every batch answered exactly once
    answered = [send for send in run.sends if send[2] is Outcome.OK]
    assert len(answered) == batches
    stats = fleet.stats(run.now)
    assert stats.in_flight == 0
    assert sum(replica.succeeded for replica in stats.replicas) == batches
    assert sum(replica.requests for replica in stats.replicas) == len(run.sends)
    for batch, replica in run.done.items():
        assert (batch, replica, Outcome.OK) in run.sends


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.OK),
        (400, Outcome.OK),
        (500, Outcome.OK),
        (429, Outcome.THROTTLED),
        (502, Outcome.FAILED),
        (503, Outcome.FAILED),
        (504, Outcome.FAILED),
    ],
)
def test_outcome_for_status(status: int, outcome: Outcome) -> None:
    assert outcome_for_status(status) is outcome


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Fleet([])
    with pytest.raises(TypeError, match="not one string"):
        Fleet("http://a/v1")
    with pytest.raises(ValueError, match="distinct"):
        Fleet(["http://a/v1", "http://a/v1"])
    with pytest.raises(ValueError, match="max_per_replica"):
        FleetPolicy(max_per_replica=0)
    with pytest.raises(TypeError, match="max_in_flight"):
        FleetPolicy(max_in_flight=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eject_initial"):
        FleetPolicy(eject_initial=float("nan"))
    with pytest.raises(ValueError, match="latency_weight"):
        FleetPolicy(latency_weight=0)
    fleet = Fleet(URLS[:1])
    lease = fleet.acquire(0.0)
    assert isinstance(lease, Lease)
    with pytest.raises(TypeError, match="Outcome"):
        fleet.release(lease, "ok", 0.0)  # type: ignore[arg-type]
