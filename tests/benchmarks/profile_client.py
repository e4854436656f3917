"""Where nimrank's own time per call goes: cProfile of ``rank`` against the fake NIM.

For each client (async, sync) and N, ``max(5, 3000 // N)`` calls to a 0 ms server
are profiled on a CPU-time clock (``time.thread_time``: time spent waiting for the
server or the scheduler is not counted; the sync client's worker threads each
get a profiler of their own, merged at the end), and two lists are printed:

* **nimrank's functions, cumulative**: seconds per call inside each step
  (``_prepare``/planning, ``_batch_request``/``build_request``, ``_send``,
  ``_batch_scores``/``parse_response``, ``_finish``/``merge_rankings``/``select``);
* **everything, by own time**: the top functions of the whole call (httpx,
  httpcore, h11, json, asyncio, threading included), seconds per call.

    .venv/bin/python tests/benchmarks/profile_client.py --sizes 20,1000,10000
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fakenim import MODEL, FakeNim
from run import QUERY, make_texts

from nimrank import AsyncRankingClient, RankingClient

_STEPS = (
    "_prepare",
    "plan_batches",
    "check_passages",
    "_batch_request",
    "build_request",
    "describe_passages",
    "_send",
    "_failure_for_status",
    "_batch_scores",
    "parse_response",
    "batch_scored",
    "_finish",
    "merge_rankings",
    "select",
    "gather_or_cancel",
    "rank_batch",
)


class _ProfiledSync(RankingClient):
    """A sync client whose worker threads each run a profiler."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.profiles: list[cProfile.Profile] = []

    def _executor(self) -> ThreadPoolExecutor:
        if self._workers is None:

            def start() -> None:
                profile = cProfile.Profile(time.thread_time)
                self.profiles.append(profile)
                profile.enable()

            self._workers = ThreadPoolExecutor(
                max_workers=self.options.max_concurrency, initializer=start
            )
        return self._workers


def _stats(main: cProfile.Profile, others: Sequence[cProfile.Profile]) -> pstats.Stats:
    main.disable()
    stats = pstats.Stats(main)
    for profile in others:
        stats.add(profile)
    return stats


def _print(stats: pstats.Stats, calls: int, top: int) -> None:
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    ours = []
    for (path, line, name), (_, _, own, cumulative, _) in table.items():
        if "nimrank" in path and name in _STEPS:
            ours.append((cumulative, own, f"{path.split('nimrank/')[-1]}:{line} {name}"))
    print("nimrank's steps (cumulative ms per call, own ms per call):")
    for cumulative, own, where in sorted(ours, reverse=True):
        print(f"  {cumulative / calls * 1000:8.3f} {own / calls * 1000:8.3f}  {where}")
    everything = sorted(
        (
            (own, f"{path.split('site-packages/')[-1]}:{line} {name}", count)
            for (path, line, name), (_, count, own, _, _) in table.items()
        ),
        reverse=True,
    )
    total = sum(own for own, _, _ in everything)
    print(f"top {top} by own time (ms per call; all profiled: {total / calls * 1000:.3f}):")
    for own, where, count in everything[:top]:
        print(f"  {own / calls * 1000:8.3f}  {count / calls:7.1f} calls  {where}")


def main(argv: Sequence[str] | None = None) -> int:
    """Profile both clients at each size."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="20,1000,10000")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--clients", default="async,sync")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    texts = make_texts(max(sizes))
    loop = asyncio.new_event_loop()
    with FakeNim(latency_ms=0, per_passage_ms=0) as server:
        options = {"base_url": server.url, "model": MODEL, "max_batch_size": args.batch}
        for size in sizes:
            calls = max(5, 3000 // size)
            batch = texts[:size]
            if "async" in args.clients:
                client = AsyncRankingClient(**options)
                loop.run_until_complete(client.rank(QUERY, batch))  # warm-up

                async def many(client: AsyncRankingClient, calls: int, batch: list[str]) -> None:
                    for _ in range(calls):
                        await client.rank(QUERY, batch)

                profile = cProfile.Profile(time.thread_time)
                profile.enable()
                loop.run_until_complete(many(client, calls, batch))
                print(f"\n### async, N={size:,}, {calls} calls")
                _print(_stats(profile, []), calls, args.top)
                loop.run_until_complete(client.aclose())
            if "sync" in args.clients:
                sync = _ProfiledSync(**options)
                # Warm-up (it starts the workers: their profiles count it too,
                # one call in ``calls``).
                sync.rank(QUERY, batch)
                profile = cProfile.Profile(time.thread_time)
                profile.enable()
                for _ in range(calls):
                    sync.rank(QUERY, batch)
                print(f"\n### sync, N={size:,}, {calls} calls (worker threads merged)")
                _print(_stats(profile, sync.profiles), calls, args.top)
                sync.close()
    loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
