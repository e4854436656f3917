"""``http_transport`` (aiohttp, the default, or httpx): the same answers and errors on both.

The transport's own byte-level behaviour is in ``test_aiohttp_transport.py``
and ``tests/hostile/test_transport.py`` (both transports); here the client.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import TEST_MODEL
from nimrank import AsyncRankingClient, RankingClient, RankingOptions, RankingTimeoutError
from nimrank.server import RankingServer

PASSAGES = [f"note {i}: gpu memory {'bandwidth ' * (i % 4)}" for i in range(100)]


async def test_aiohttp_ranks_as_httpx_does(ranking_server: RankingServer) -> None:
    results = []
    for kind in ("httpx", "aiohttp"):
        async with AsyncRankingClient(
            base_url=ranking_server.url, model=TEST_MODEL, max_batch_size=7, http_transport=kind
        ) as client:
            results.append([(p.index, p.score) for p in await client.rank("gpu", PASSAGES)])
    assert results[0] == results[1]
    assert len(ranking_server.ranking_requests) == 2 * 15


async def test_aiohttp_errors_are_the_clients_typed_errors(ranking_server: RankingServer) -> None:
    ranking_server.inject_delay(5.0, times=10)
    async with AsyncRankingClient(
        base_url=ranking_server.url,
        model=TEST_MODEL,
        timeout=0.5,
        max_retries=0,
        http_transport="aiohttp",
    ) as client:
        with pytest.raises(RankingTimeoutError, match=r"within 0\.5s"):
            await client.rank("gpu", PASSAGES[:3])


async def test_aiohttp_over_a_fleet(ranking_server: RankingServer) -> None:
    with RankingServer() as other:
        urls = [ranking_server.url, other.url]
        async with AsyncRankingClient(
            base_url=urls, model=TEST_MODEL, max_batch_size=10, http_transport="aiohttp"
        ) as client:
            ranked = await client.rank("gpu", PASSAGES)
        assert sorted(p.index for p in ranked) == list(range(len(PASSAGES)))
        assert [s.requests for s in client.replica_stats()] == [
            len(ranking_server.ranking_requests),
            len(other.ranking_requests),
        ]


def test_a_missing_aiohttp_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # import aiohttp -> ImportError
    with pytest.raises(ImportError, match="or pass http_transport='httpx'"):
        AsyncRankingClient(base_url="http://127.0.0.1:1/v1")  # aiohttp: the default
    AsyncRankingClient(base_url="http://127.0.0.1:1/v1", http_transport="httpx")
    # The sync client always uses httpx: the option does not concern it.
    RankingClient(base_url="http://127.0.0.1:1/v1", http_transport="aiohttp").close()


def test_an_unknown_transport_is_refused() -> None:
    with pytest.raises(ValueError, match="http_transport must be 'httpx' or 'aiohttp'"):
        RankingOptions(http_transport="requests")  # type: ignore[arg-type]


_UNCLOSED = """
import asyncio, gc
from nimrank import AsyncRankingClient
from nimrank.server import RankingServer
with RankingServer() as server:
    client = AsyncRankingClient(base_url=server.url, model="m", http_transport={kind!r})
    for _ in range(3):  # a loop per call, as sync wrappers of async code do; never closed
        asyncio.run(client.rank("gpu", ["gpu memory", "cake"]))

    async def dropped_while_its_loop_runs():
        other = AsyncRankingClient(base_url=server.url, model="m", http_transport={kind!r})
        await other.rank("gpu", ["gpu memory", "cake"])
        del other
        gc.collect()

    asyncio.run(dropped_while_its_loop_runs())
    del client
    gc.collect()
print("ranked")
"""


@pytest.mark.parametrize("kind", ["aiohttp", "httpx"])
def test_a_client_never_closed_leaves_nothing_on_stderr(kind: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _UNCLOSED.format(kind=kind)], capture_output=True, text=True
    )
    assert done.stdout == "ranked\n", done.stderr
    assert done.stderr == ""  # no "Unclosed client session" from aiohttp's finalizers
