"""A fleet behind one ``rank()``: ``base_url`` lists replicas, the client balances them.

Every test runs both clients against 2-3 real ``RankingServer`` replicas on
127.0.0.1 and checks the ranking against one replica's (the scorer is
deterministic, so any lost, duplicated or misattributed passage shows), then
what the replicas saw and what ``replica_stats()`` says. Counts, never timings.
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest

import faultserver
from conftest import TEST_MODEL
from nimrank import (
    RankedPassage,
    RankingClient,
    RankingConnectionError,
    RankingOptions,
    RetryPolicy,
)
from nimrank.fleet import ReplicaState
from nimrank.server import RankingServer

Make = Callable[..., faultserver.EitherClient]

QUERY = "gpu memory bandwidth"
PASSAGES = [f"passage {i}: gpu memory {'bandwidth ' * (i % 5)}note {i % 11}" for i in range(240)]
INSTANT = RetryPolicy(initial_delay=0, max_delay=0, max_retry_after=0)


def reference(passages: list[str] = PASSAGES) -> list[tuple[int, float | None]]:
    with RankingServer() as server, RankingClient(base_url=server.url, model=TEST_MODEL) as one:
        return [(p.index, p.score) for p in one.rank(QUERY, passages)]


EXPECTED = reference()


@pytest.fixture
def replicas(request: pytest.FixtureRequest) -> Iterator[list[RankingServer]]:
    """Three replicas answering in 5 ms (so that requests overlap), stopped afterwards."""
    count = getattr(request, "param", 3)
    servers = [RankingServer(latency_ms=5).start() for _ in range(count)]
    yield servers
    for server in servers:
        server.stop()


def ranked(result: Sequence[RankedPassage]) -> list[tuple[int, float | None]]:
    return [(p.index, p.score) for p in result]


def batches_on(server: RankingServer) -> int:
    return sum(1 for r in server.ranking_requests if r.status == 200)


async def test_the_batches_split_evenly_and_the_ranking_is_one_replicas(
    make_client: Make, replicas: list[RankingServer]
) -> None:
    client = make_client(base_url=[s.url for s in replicas], max_batch_size=8, max_concurrency=2)
    assert ranked(await client.rank(QUERY, PASSAGES)) == EXPECTED
    split = [batches_on(server) for server in replicas]
    assert sum(split) == len(PASSAGES) // 8
    # Least outstanding requests: each replica within a third of the even share.
    assert all(abs(share - 10) <= 3 for share in split), split
    stats = client.client.replica_stats()
    assert [s.url for s in stats] == [f"{s.url}/ranking" for s in replicas]
    assert [s.requests for s in stats] == split
    assert all(s.state is ReplicaState.HEALTHY and s.failures == 0 for s in stats)


async def test_max_concurrency_caps_each_replica_across_concurrent_calls(
    make_client: Make, replicas: list[RankingServer]
) -> None:
    client = make_client(base_url=[s.url for s in replicas], max_batch_size=4, max_concurrency=2)
    results: list[list[RankedPassage]] = [[] for _ in range(4)]
    if client.kind == "async":
        results = await asyncio.gather(*(client.rank(QUERY, PASSAGES) for _ in range(4)))
    else:  # four threads, one client
        sync = client.client
        assert isinstance(sync, RankingClient)

        def call(slot: int) -> None:
            results[slot] = sync.rank(QUERY, PASSAGES)

        threads = [threading.Thread(target=call, args=(slot,)) for slot in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(ranked(result) == EXPECTED for result in results)
    assert [server.max_in_flight for server in replicas] == [2, 2, 2]


async def test_a_replica_stopped_mid_call_loses_nothing(
    make_client: Make, replicas: list[RankingServer]
) -> None:
    doomed = replicas[1]
    client = make_client(base_url=[s.url for s in replicas], max_batch_size=4, max_concurrency=2)
    stopper = threading.Timer(0.05, doomed.stop)
    stopper.start()
    try:
        assert ranked(await client.rank(QUERY, PASSAGES)) == EXPECTED
    finally:
        stopper.join()
    stats = client.client.replica_stats()
    assert stats[1].ejections >= 1
    assert stats[1].state is not ReplicaState.HEALTHY
    # Every batch was answered once by a live replica: none lost, none twice.
    answered = sum(batches_on(server) for server in replicas)
    assert answered == len(PASSAGES) // 4


@pytest.mark.parametrize("fault", ["503", "drop"])
async def test_a_failing_replica_is_ejected_and_its_batch_retried_elsewhere_at_once(
    make_client: Make, replicas: list[RankingServer], fault: str
) -> None:
    sick = replicas[0]
    if fault == "503":
        sick.inject_fault(503, times=1000)
    else:
        sick.inject_disconnect(times=1000)
    # A retry policy that would sleep for a minute: a fleet does not wait for it.
    slow = RetryPolicy(initial_delay=60, max_delay=60)
    client = make_client(
        base_url=[s.url for s in replicas], max_batch_size=8, retry_policy=slow, timeout=5
    )
    assert ranked(await client.rank(QUERY, PASSAGES)) == EXPECTED
    stats = client.client.replica_stats()
    # Ejected after its first failure: the rest went to the healthy two.
    assert stats[0].failures >= 1
    assert stats[0].ejections == 1
    assert stats[0].state is ReplicaState.EJECTED
    assert batches_on(replicas[1]) + batches_on(replicas[2]) == len(PASSAGES) // 8


async def test_a_429_holds_back_that_replica_only(
    make_client: Make, replicas: list[RankingServer]
) -> None:
    busy = replicas[2]
    busy.inject_fault(429, headers={"Retry-After": "30"}, times=1)
    slow = RetryPolicy(initial_delay=60, max_delay=60)
    client = make_client(
        base_url=[s.url for s in replicas], max_batch_size=8, max_concurrency=2, retry_policy=slow
    )
    assert ranked(await client.rank(QUERY, PASSAGES)) == EXPECTED
    stats = client.client.replica_stats()
    assert stats[2].throttled == 1
    assert stats[2].state is ReplicaState.THROTTLED
    assert stats[2].ejections == 0
    # Held back for its 30 s: only the one in flight beside the 429 was answered there.
    assert batches_on(busy) <= 1
    assert batches_on(replicas[0]) + batches_on(replicas[1]) >= len(PASSAGES) // 8 - 2


@pytest.mark.parametrize("replicas", [2], indirect=True)
async def test_with_every_replica_ejected_it_probes_readiness_before_sending_again(
    make_client: Make, replicas: list[RankingServer]
) -> None:
    for server in replicas:
        server.inject_fault(503, times=1)
    client = make_client(
        base_url=[s.url for s in replicas], max_batch_size=len(PASSAGES), retry_policy=INSTANT
    )
    assert ranked(await client.rank(QUERY, PASSAGES)) == EXPECTED
    paths = [[r.path for r in server.requests] for server in replicas]
    probed = [
        server for server, seen in zip(replicas, paths, strict=True) if "/v1/health/ready" in seen
    ]
    assert probed, paths
    # The probe came before the batch that succeeded on that replica.
    seen = [r.path for r in probed[0].requests]
    assert seen[0] == "/v1/ranking"
    assert seen[1] == "/v1/health/ready"
    assert sum(batches_on(server) for server in replicas) == 1


@pytest.mark.parametrize("replicas", [2], indirect=True)
async def test_a_fleet_that_stays_down_fails_typed_within_the_retry_budget(
    make_client: Make, replicas: list[RankingServer]
) -> None:
    urls = [s.url for s in replicas]
    for server in replicas:
        server.stop()
    client = make_client(base_url=urls, max_retries=1, retry_policy=INSTANT, timeout=2)
    with pytest.raises(RankingConnectionError) as caught:
        await client.rank(QUERY, PASSAGES[:3])
    assert caught.value.passages == (0, 1, 2)
    assert "(after 1 retries)" in str(caught.value)
    assert sum(s.failures for s in client.client.replica_stats()) == 2


async def test_model_discovery_goes_through_the_fleet(
    make_client: Make, replicas: list[RankingServer]
) -> None:
    client = make_client(base_url=[s.url for s in replicas], model=None)
    with pytest.warns(UserWarning, match="no model given"):
        await client.rank(QUERY, PASSAGES[:5])
    assert client.client.model == replicas[0].settings.model
    models = sum(1 for s in replicas for r in s.requests if r.path == "/v1/models")
    assert models == 1


def test_a_list_of_urls_is_checked_and_travels_as_plain_data() -> None:
    options = RankingOptions(base_url=["http://a:8000/v1", "http://b:8000/v1"], api_key="k")
    assert options.base_url == ("http://a:8000/v1", "http://b:8000/v1")
    copy = pickle.loads(pickle.dumps(options))
    assert copy.base_url == options.base_url
    assert copy.api_key is None
    with pytest.raises(ValueError, match="twice"):
        RankingOptions(base_url=["http://a/v1", "http://a/v1"])
    with pytest.raises(ValueError, match="no replica"):
        RankingOptions(base_url=[])
    with pytest.raises(TypeError, match="replica URL"):
        RankingOptions(base_url=["http://a/v1", None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="hosted"):
        RankingClient(base_url=["https://integrate.api.nvidia.com/v1", "http://a/v1"])


def test_a_key_in_a_replica_url_is_masked_everywhere() -> None:
    client = RankingClient(base_url=["http://a:1/v1", "http://b:1/v1?api-key=hunter2-secret"])
    assert "hunter2-secret" not in repr(client)
    assert "hunter2-secret" not in repr(client.replica_stats())


def test_one_url_is_no_fleet(ranking_server: RankingServer) -> None:
    with RankingClient(base_url=[ranking_server.url], model=TEST_MODEL) as client:
        assert ranked(client.rank(QUERY, PASSAGES[:40])) == EXPECTED_FIRST_40
        assert client.replica_stats() == ()


EXPECTED_FIRST_40 = reference(PASSAGES[:40])


def test_a_client_refuses_to_pickle_and_says_what_to_do() -> None:
    client = RankingClient(base_url="http://127.0.0.1:1/v1")
    with pytest.raises(TypeError, match=r"pickle client\.options"):
        pickle.dumps(client)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_gets_a_fleet_of_its_own(replicas: list[RankingServer]) -> None:
    client = RankingClient(base_url=[s.url for s in replicas], model=TEST_MODEL, max_batch_size=8)
    assert ranked(client.rank(QUERY, PASSAGES)) == EXPECTED
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: rank, report its statistics, leave without pytest's exit
        code = 1
        try:
            right = ranked(client.rank(QUERY, PASSAGES)) == EXPECTED
            requests = [s.requests for s in client.replica_stats()]
            os.write(write_end, json.dumps([right, requests]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    assert ranked(client.rank(QUERY, PASSAGES)) == EXPECTED  # the parent, at the same time
    _, status = os.waitpid(pid, 0)
    report = json.loads(os.read(read_end, 1 << 16) or b"null")
    os.close(read_end)
    client.close()
    assert status == 0
    right, requests = report
    assert right
    # The child's counters start afresh: only its own call's batches, none of the parent's.
    assert sum(requests) == len(PASSAGES) // 8
