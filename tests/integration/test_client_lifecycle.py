"""What a client does around its calls: which model and URL it uses, fork, close, the pair.

Against the embedded server on 127.0.0.1 (``nimrank.server.RankingServer``).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from nimrank import (
    DEFAULT_OPTIONS,
    AsyncRankingClient,
    MissingAPIKeyError,
    RankingClient,
    RankingClients,
    RankingConnectionError,
    RankingError,
    RankingOptions,
    RetryPolicy,
)
from nimrank.options import HttpTransport
from nimrank.server import DEFAULT_MODEL_ID, RankingServer, score_passages
from nimrank.server.faults import path_endswith, respond

QUERY = "gpu memory bandwidth"
PASSAGES = [f"passage {i} about {'gpu memory' if i % 3 == 0 else 'cake'}" for i in range(40)]


def expected_order(query: str, passages: list[str]) -> list[int]:
    scores = score_passages(query, passages)
    return sorted(range(len(passages)), key=lambda i: (-scores[i], i))


@pytest.fixture
def no_base_url_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NVIDIA_BASE_URL", "NVIDIA_API_URL", "NVIDIA_API_KEY", "NVIDIA_NIM_API_KEY"):
        monkeypatch.delenv(name, raising=False)


# -- model discovery -------------------------------------------------------------


def test_without_a_model_the_first_listed_one_is_used_once_with_a_warning(
    ranking_server: RankingServer,
) -> None:
    with RankingClient(base_url=ranking_server.url, max_batch_size=16) as client:
        with pytest.warns(UserWarning, match=DEFAULT_MODEL_ID):
            first = client.rank(QUERY, PASSAGES)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            client.rank(QUERY, PASSAGES)
        assert client.model == DEFAULT_MODEL_ID
    model_lists = [r for r in ranking_server.requests if r.path == "/v1/models"]
    assert len(model_lists) == 1
    rankings = [r for r in ranking_server.requests if r.path == "/v1/ranking"]
    assert {r.body["model"] for r in rankings} == {DEFAULT_MODEL_ID}
    assert [p.index for p in first] == expected_order(QUERY, PASSAGES)


async def test_the_async_client_discovers_the_model_too(ranking_server: RankingServer) -> None:
    async with AsyncRankingClient(base_url=ranking_server.url) as client:
        with pytest.warns(UserWarning, match=DEFAULT_MODEL_ID):
            await client.rank(QUERY, PASSAGES)
    assert client.model == DEFAULT_MODEL_ID


def test_a_named_model_is_sent_without_asking(ranking_server: RankingServer) -> None:
    with RankingClient(base_url=ranking_server.url, model="my/model", max_batch_size=32) as client:
        client.rank(QUERY, PASSAGES)
    assert [r.path for r in ranking_server.requests] == ["/v1/ranking"] * 2


def test_no_request_at_all_for_top_n_zero_or_blank_passages(
    ranking_server: RankingServer,
) -> None:
    with RankingClient(base_url=ranking_server.url) as client:
        assert client.rank(QUERY, PASSAGES, top_n=0) == []
        assert [p.index for p in client.rank(QUERY, ["", "  "])] == [0, 1]
    assert ranking_server.requests == []


def test_a_service_listing_no_model_is_a_clear_error(ranking_server: RankingServer) -> None:
    ranking_server.add_rule(
        respond(200, {"object": "list", "data": []}), match=path_endswith("/models")
    )
    with (
        RankingClient(base_url=ranking_server.url) as client,
        pytest.raises(RankingError, match="lists no ranking model: pass model="),
    ):
        client.rank(QUERY, PASSAGES)
    assert [r.path for r in ranking_server.requests] == ["/v1/models"]


def test_the_hosted_catalog_defaults_to_nvidias_newest_default(
    no_base_url_variables: None,
) -> None:
    client = RankingClient(api_key="nvapi-fake-key")
    assert client.model == "nvidia/llama-nemotron-rerank-1b-v2"
    assert client.endpoints.ranking_url.endswith("/nvidia/llama-nemotron-rerank-1b-v2/reranking")


# -- NVIDIA_BASE_URL / NVIDIA_API_URL --------------------------------------------------


@pytest.mark.parametrize("variable", ["NVIDIA_BASE_URL", "NVIDIA_API_URL"])
def test_the_environment_names_the_service_when_no_base_url_is_passed(
    ranking_server: RankingServer,
    monkeypatch: pytest.MonkeyPatch,
    no_base_url_variables: None,
    variable: str,
) -> None:
    # With a key set too: the passages must still go to the self-hosted service.
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-fake-key")
    monkeypatch.setenv(variable, ranking_server.url)
    with RankingClient(model="m") as client:
        assert client.endpoints.ranking_url == f"{ranking_server.url}/ranking"
        client.rank(QUERY, PASSAGES[:3])
    assert len(ranking_server.requests) == 1


def test_nvidia_base_url_wins_over_nvidia_api_url(
    monkeypatch: pytest.MonkeyPatch, no_base_url_variables: None
) -> None:
    monkeypatch.setenv("NVIDIA_API_URL", "http://127.0.0.1:2/v1")
    monkeypatch.setenv("NVIDIA_BASE_URL", "http://127.0.0.1:1/v1")
    assert RankingClient().endpoints.ranking_url == "http://127.0.0.1:1/v1/ranking"


def test_an_explicit_base_url_wins_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, no_base_url_variables: None
) -> None:
    monkeypatch.setenv("NVIDIA_BASE_URL", "http://127.0.0.1:1/v1")
    client = RankingClient(base_url="http://127.0.0.1:3/v1")
    assert client.endpoints.ranking_url == "http://127.0.0.1:3/v1/ranking"


def test_the_environment_is_read_when_the_client_is_made_not_when_options_are(
    monkeypatch: pytest.MonkeyPatch, no_base_url_variables: None
) -> None:
    # Options travel to workers as plain data; each worker reads its own environment.
    options = RankingOptions()
    monkeypatch.setenv("NVIDIA_BASE_URL", "http://127.0.0.1:4/v1")
    assert options.base_url is None
    assert RankingClient(options).endpoints.ranking_url == "http://127.0.0.1:4/v1/ranking"


# -- fork ------------------------------------------------------------------------------

fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _rank_in_child(client: RankingClient, passages: list[str], out: Any) -> None:
    try:
        out.put([p.index for p in client.rank(QUERY, passages)])
    except BaseException as error:  # reported to the parent, which fails the test
        out.put(repr(error))


@fork_only
def test_a_forked_child_never_shares_its_parents_connections_or_threads() -> None:
    # Each process ranks its own passages at the same time, over what would be one
    # kept-alive connection and one thread pool if the child inherited them.
    with RankingServer(latency_ms=5) as server:
        client = RankingClient(base_url=server.url, model="m", max_batch_size=4)
        client.rank(QUERY, PASSAGES)  # opens the pool and the worker threads
        child_passages = [f"child {p}" if i % 2 else p for i, p in enumerate(PASSAGES)]
        context = multiprocessing.get_context("fork")
        out = context.Queue()
        with warnings.catch_warnings():
            # Python 3.12 warns about fork() with threads running: that is the point.
            warnings.simplefilter("ignore", DeprecationWarning)
            child = context.Process(target=_rank_in_child, args=(client, child_passages, out))
            child.start()
        for _ in range(5):
            assert [p.index for p in client.rank(QUERY, PASSAGES)] == expected_order(
                QUERY, PASSAGES
            )
        child.join(timeout=30)
        assert child.exitcode == 0
        assert out.get(timeout=5) == expected_order(QUERY, child_passages)
        peers = {r.peer for r in server.requests}
        client.close()
    # The child opened connections of its own.
    assert len(peers) > 4


@fork_only
@pytest.mark.parametrize("stack", ["aiohttp", "httpx"])
def test_a_child_forked_while_the_loop_runs_leaves_the_parents_connections_alone(
    stack: HttpTransport,
) -> None:
    # A process pool forked from a running application: the child drops its copy
    # of the parent's pool at once. The parent's event loop shares its epoll
    # instance with the child; a child closing those sockets through the loop
    # would unregister them there, and the parent's next answers would never arrive.
    async def main(server: RankingServer) -> list[list[int]]:
        async with AsyncRankingClient(
            base_url=server.url, model="m", max_batch_size=4, max_retries=0, timeout=5,
            http_transport=stack,
        ) as client:  # fmt: skip
            await client.rank(QUERY, PASSAGES)  # connections kept alive, registered
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads
                pid = os.fork()
            if pid == 0:
                os._exit(0)  # the child's at-fork handler has dropped the pool by now
            assert (await asyncio.to_thread(os.waitpid, pid, 0))[1] == 0
            started = time.monotonic()
            orders = [[p.index for p in await client.rank(QUERY, PASSAGES)] for _ in range(3)]
            assert time.monotonic() - started < 3
            return orders

    with RankingServer() as server:
        orders = asyncio.run(main(server))
    assert orders == [expected_order(QUERY, PASSAGES)] * 3


# -- close() racing rank() ------------------------------------------------------------


def test_close_racing_rank_on_other_threads_gives_typed_errors_or_results() -> None:
    outcomes: list[str] = []
    with RankingServer(latency_ms=2) as server:
        client = RankingClient(base_url=server.url, model="m", max_batch_size=2, max_retries=0)
        stop = time.monotonic() + 3

        def ranker() -> None:
            while time.monotonic() < stop:
                try:
                    client.rank(QUERY, PASSAGES[:12])
                    outcomes.append("ok")
                except RankingError:
                    outcomes.append("typed")
                except BaseException as error:  # what the test must never see
                    outcomes.append(f"untyped {error!r}")

        threads = [threading.Thread(target=ranker) for _ in range(4)]
        for thread in threads:
            thread.start()
        while time.monotonic() < stop:
            client.close()
            time.sleep(0.01)
        for thread in threads:
            thread.join(timeout=30)
            assert not thread.is_alive()
        client.close()
    assert outcomes.count("ok") > 0
    assert [o for o in outcomes if o not in ("ok", "typed")] == []


@pytest.mark.parametrize("stack", ["aiohttp", "httpx"])
def test_aclose_racing_async_ranks_gives_typed_errors_or_results(stack: HttpTransport) -> None:
    async def main(server: RankingServer) -> list[str]:
        client = AsyncRankingClient(
            base_url=server.url,
            model="m",
            max_batch_size=2,
            retry_policy=RetryPolicy(max_retries=1, initial_delay=0),
            http_transport=stack,
        )
        outcomes: list[str] = []

        async def ranker() -> None:
            try:
                await client.rank(QUERY, PASSAGES[:12])
                outcomes.append("ok")
            except RankingError:
                outcomes.append("typed")
            except BaseException as error:  # what the test must never see
                outcomes.append(f"untyped {error!r}")

        for _ in range(30):
            tasks = [asyncio.ensure_future(ranker()) for _ in range(4)]
            await asyncio.sleep(0.003)
            await client.aclose()  # with batches in flight
            await asyncio.gather(*tasks)
        await client.aclose()
        return outcomes

    with RankingServer(latency_ms=2) as server:
        outcomes = asyncio.run(main(server))
    # A batch cut off by aclose() is sent again on a new pool (the client reopens
    # when used): every call ends ranked or with a RankingError, never anything else.
    assert len(outcomes) == 120
    assert [o for o in outcomes if o not in ("ok", "typed")] == []


# -- the client pair ---------------------------------------------------------------------


@pytest.fixture
def clients(ranking_server: RankingServer) -> Iterator[RankingClients]:
    pair = RankingClients(RankingOptions(base_url=ranking_server.url, model="m"))
    yield pair
    pair.close()


def test_the_pair_makes_its_clients_lazily_and_reuses_them(clients: RankingClients) -> None:
    assert clients._sync is None
    assert clients._async is None
    assert clients.sync is clients.sync
    assert clients.async_ is clients.async_


def test_a_changed_option_rebuilds_the_clients_and_closes_the_old_ones(
    clients: RankingClients, ranking_server: RankingServer
) -> None:
    old = clients.sync
    old.rank(QUERY, PASSAGES)
    http = old._http
    assert http is not None
    clients.update(max_batch_size=4)
    assert http.is_closed
    new = clients.sync
    assert new is not old
    assert new.options.max_batch_size == 4
    new.rank(QUERY, PASSAGES)
    sizes = [len(r.body["passages"]) for r in ranking_server.requests]
    assert sizes[-10:] == [4] * 10


def test_a_bad_option_changes_nothing(clients: RankingClients) -> None:
    before = clients.sync
    with pytest.raises(ValueError, match="max_batch_size"):
        clients.update(max_batch_size=0)
    assert clients.sync is before
    assert clients.options.max_batch_size == DEFAULT_OPTIONS.max_batch_size


def test_an_unchanged_option_keeps_the_clients(clients: RankingClients) -> None:
    before = clients.sync
    clients.update(max_batch_size=DEFAULT_OPTIONS.max_batch_size)
    assert clients.sync is before


def test_the_async_client_is_rebuilt_across_event_loops(clients: RankingClients) -> None:
    async def rank() -> list[int]:
        return [p.index for p in await clients.async_.rank(QUERY, PASSAGES)]

    first = asyncio.run(rank())
    clients.update(max_concurrency=2)
    assert asyncio.run(rank()) == first
    asyncio.run(clients.aclose())


def test_a_closed_pair_reopens_on_use(clients: RankingClients) -> None:
    clients.sync.rank(QUERY, PASSAGES)
    clients.close()
    assert len(clients.sync.rank(QUERY, PASSAGES)) == len(PASSAGES)


def test_a_closed_client_raises_typed_errors_when_a_call_loses_the_race() -> None:
    # The deterministic half of the race test above.
    client = RankingClient(base_url="http://127.0.0.1:9/v1", model="m", max_retries=0)
    http = client._pool()
    http.close()
    with pytest.raises(RankingConnectionError, match="closed"):
        client.rank(QUERY, PASSAGES[:2])


def test_an_empty_api_key_sends_none_and_reads_no_variable(
    ranking_server: RankingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-fake-key")
    with RankingClient(base_url=ranking_server.url, model="m", api_key="") as client:
        client.rank(QUERY, PASSAGES[:2])
    assert "authorization" not in ranking_server.requests[0].headers


def test_an_empty_api_key_on_the_hosted_catalog_is_a_missing_key(
    monkeypatch: pytest.MonkeyPatch, no_base_url_variables: None
) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-fake-key")
    with pytest.raises(MissingAPIKeyError):
        RankingClient(api_key="")
