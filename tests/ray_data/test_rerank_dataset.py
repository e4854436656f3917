"""nimrank_ray on a real (local, 2-CPU, loopback-only) Ray cluster against real replicas.

Run with ``make ray``; ``make test`` leaves it out (the ``ray`` marker). Ray
must bind its own services to loopback like every server here, so
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before Ray is first imported:
it is read at import and makes Ray use 127.0.0.1 rather than the machine's
interface address.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from nimrank import RetryPolicy
from nimrank.server import RankingServer
from nimrank.server.scoring import score

ray = pytest.importorskip("ray")
nimrank_ray = pytest.importorskip("nimrank_ray")

pytestmark = [
    pytest.mark.ray,
    pytest.mark.timeout(300),
    # Ray reads deprecated settings of its own DataContext when it starts.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

WORDS = [
    "gpu",
    "memory",
    "bandwidth",
    "tensor",
    "core",
    "hbm3",
    "nvlink",
    "cache",
    "latency",
    "throughput",
    "kernel",
    "batch",
    "ranking",
    "passage",
    "query",
    "model",
    "server",
    "replica",
    "cluster",
    "actor",
    "dataset",
]


def make_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of a query and 1-12 short passages, the same for the same seed."""
    rng = random.Random(seed)
    rows = []
    for number in range(count):
        query = " ".join(rng.sample(WORDS, 3))
        passages = [
            " ".join(rng.choices(WORDS, k=rng.randint(2, 12))) for _ in range(rng.randint(1, 12))
        ]
        rows.append({"id": number, "query": query, "passages": passages})
    return rows


def check_ranked(row: dict[str, Any], top_n: int | None = None) -> None:
    """The row's scores are the server scorer's, and its ranking sorts them best first."""
    expected = [score(row["query"], passage) for passage in row["passages"]]
    assert row["scores"] == pytest.approx(expected, rel=1e-12, abs=1e-12)
    best_first = sorted(range(len(expected)), key=lambda i: (-row["scores"][i], i))
    assert row["ranking"] == best_first[:top_n]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


@pytest.fixture
def replica() -> Iterator[RankingServer]:
    with RankingServer() as server:
        yield server


def by_id(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    result = {row["id"]: row for row in rows}
    assert len(result) == len(rows), "a row came back twice"
    return result


def test_every_row_is_ranked_with_the_servers_scores(replica: RankingServer) -> None:
    rows = make_rows(2000)
    ds = ray.data.from_items(rows)
    ranked = nimrank_ray.rerank_dataset(
        ds, base_url=replica.url, top_n=5, workers=2, rows_per_batch=100
    )
    out = by_id(ranked.take_all())
    assert sorted(out) == list(range(len(rows)))
    for row in rows:
        got = out[row["id"]]
        assert (got["query"], got["passages"]) == (row["query"], row["passages"])
        check_ranked(got, top_n=5)
    assert "error" not in out[0]
    # One request per row: nothing was sent twice.
    assert len([r for r in replica.requests if r.path == "/v1/ranking"]) == len(rows)


def test_on_error_record_keeps_going_and_names_each_failed_row(replica: RankingServer) -> None:
    rows = make_rows(300, seed=1)
    rows[7]["query"] = "   "  # refused before any request: a ValueError
    replica.inject_fault(400, times=3, path="/v1/ranking")
    ranked = nimrank_ray.rerank_dataset(
        ray.data.from_items(rows),
        base_url=replica.url,
        on_error="record",
        error_column="why",
        scores_column="s",
        ranking_column="r",
    )
    out = by_id(ranked.take_all())
    assert sorted(out) == list(range(len(rows)))
    failed = {number: row["why"] for number, row in out.items() if row["why"] is not None}
    assert len(failed) == 4
    assert failed[7].startswith("ValueError: query is empty")
    assert sum(why.startswith("BadRequestError: ") for why in failed.values()) == 3
    for number, row in out.items():
        if number in failed:
            assert (row["s"], row["r"]) == (None, None)
        else:
            check_ranked({**row, "scores": row["s"], "ranking": row["r"]})


def test_on_error_raise_fails_the_job(replica: RankingServer) -> None:
    replica.inject_fault(400, times=1, path="/v1/ranking")
    ranked = nimrank_ray.rerank_dataset(ray.data.from_items(make_rows(20)), base_url=replica.url)
    with pytest.raises(Exception, match="BadRequestError"):
        ranked.take_all()


def test_a_replica_stopped_mid_run_and_back_loses_no_row() -> None:
    # One URL: the replica goes away and comes back on
    # the same port, and the client's retries carry every row through.
    rows = make_rows(600, seed=2)
    first = RankingServer(latency_ms=5).start()
    port = first.port
    second: list[RankingServer] = []

    def bounce() -> None:
        while len(first.requests) < 150:
            time.sleep(0.01)
        first.stop()
        time.sleep(0.3)
        second.append(RankingServer(port=port, latency_ms=5).start())

    bouncer = threading.Thread(target=bounce, daemon=True)
    bouncer.start()
    try:
        ranked = nimrank_ray.rerank_dataset(
            ray.data.from_items(rows),
            base_url=first.url,
            workers=2,
            rows_per_batch=50,
            on_error="record",
            retry_policy=RetryPolicy(max_retries=8, initial_delay=0.1, max_delay=1.0),
        )
        out = by_id(ranked.take_all())
        bouncer.join(timeout=30)
        assert second, "the replica never restarted: the run ended before the bounce"
        assert sorted(out) == list(range(len(rows)))
        assert [row["error"] for row in out.values() if row["error"] is not None] == []
        for row in out.values():
            check_ranked(row)
        served = len(first.requests) + len(second[0].requests)
        assert served >= len(rows)
    finally:
        first.stop()
        for server in second:
            server.stop()


def test_a_fleet_replica_stopped_mid_run_loses_no_row() -> None:
    rows = make_rows(600, seed=3)
    with RankingServer(latency_ms=5) as one, RankingServer(latency_ms=5) as two:

        def stop_one() -> None:
            while len(one.requests) < 100:
                time.sleep(0.01)
            one.stop()

        stopper = threading.Thread(target=stop_one, daemon=True)
        stopper.start()
        ranked = nimrank_ray.rerank_dataset(
            ray.data.from_items(rows), base_url=[one.url, two.url], workers=2, rows_per_batch=50
        )
        out = by_id(ranked.take_all())
        stopper.join(timeout=30)
        assert sorted(out) == list(range(len(rows)))
        for row in out.values():
            check_ranked(row)
        assert len(one.requests) >= 100
        assert len(two.requests) > 0


async def test_the_actor_bounds_its_rows_in_flight_and_replaces_output_columns() -> None:
    import pyarrow as pa

    rows = make_rows(40, seed=4)
    table = pa.table(
        {
            "query": [row["query"] for row in rows],
            "passages": [row["passages"] for row in rows],
            "scores": ["stale"] * len(rows),
        }
    )
    with RankingServer(latency_ms=20) as server:
        reranker = nimrank_ray.Reranker({"base_url": server.url}, rows_in_flight=3, top_n=2)
        out = (await reranker(table)).to_pylist()
        assert 2 <= server.max_in_flight <= 3
    assert [list(row) for row in out] == [["query", "passages", "scores", "ranking"]] * len(rows)
    for row in out:
        check_ranked(row, top_n=2)


def test_an_api_key_is_never_sent_to_the_workers(replica: RankingServer) -> None:
    ds = ray.data.from_items(make_rows(2))
    with pytest.raises(ValueError, match="workers' environment") as caught:
        nimrank_ray.rerank_dataset(ds, base_url=replica.url, api_key="nvapi-secret")
    assert "nvapi-secret" not in str(caught.value)


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"workers": (2, 1)}, ValueError),
        ({"workers": 0}, ValueError),
        ({"on_error": "ignore"}, ValueError),
        ({"top_n": -1}, ValueError),
        ({"scores_column": "query"}, ValueError),
        ({"rows_per_batch": 0}, ValueError),
        ({"max_concurrency": "8"}, TypeError),  # a client option, checked on the driver
    ],
)
def test_bad_arguments_fail_before_any_row_is_ranked(
    replica: RankingServer, arguments: dict[str, Any], error: type[Exception]
) -> None:
    ds = ray.data.from_items(make_rows(2))
    with pytest.raises(error):
        nimrank_ray.rerank_dataset(ds, base_url=replica.url, **arguments)
    assert replica.requests == []
