"""Smoke check of the ``nimrank`` wheel: the README's first example, sync and async."""

from __future__ import annotations

import asyncio

from serving import PASSAGES, QUERY, check_ranking, nimrank_serve

from nimrank import AsyncRankingClient, RankingClient


async def rank_async(base_url: str) -> list[str]:
    async with AsyncRankingClient(base_url=base_url) as client:
        return [p.text for p in await client.rank(QUERY, PASSAGES)]


def main() -> None:
    with nimrank_serve() as base_url:
        with RankingClient(base_url=base_url) as client:
            check_ranking("nimrank", [p.text for p in client.rank(QUERY, PASSAGES, top_n=2)])
        check_ranking("nimrank (async)", asyncio.run(rank_async(base_url)))


if __name__ == "__main__":
    main()
