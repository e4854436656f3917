"""The fleet benchmark: steady pairs/second against 1, 2 and 4 capacity-limited replicas.

Every replica is a process of its own (``fleet_replica.py``): 2 requests
scored at once, 20 ms + 0.5 ms per passage, the rest queue; so with rows of
64 passages (one request each) a replica serves at most
``2 x 64 / 0.052 s = 2,462`` pairs a second, and R replicas R times that.
That is (a), the **ideal**. Measured against it, with as many requests in
flight as the replicas have slots (1x) and twice that (2x), every answer
checked against the server's scorer:

(b) **balanced**: ``nimrank.AsyncRankingClient(base_url=[...])``, each
    replica's share of the requests in flight as ``max_concurrency``;
(b') **fleet.py shell**: ``nimrank.fleet.Fleet`` driven by the bare asyncio
    shell loop its docstring describes, over one raw ``httpx`` pool (least
    outstanding requests, late binding, ejection and probes): the
    balancer's own limit, without the client around it;
(c) **one URL through the proxy** (``proxy.py``, a backend at random per
    connection: the Kubernetes Service stand-in), with ``AsyncRankingClient``
    given that one URL (as many kept-alive connections as requests in flight).

Then the per-replica split, a failover run (one replica SIGKILLed when half
the rows are done: rows completed, extra requests, time) for each variant,
and with ``--ray`` (or only that, ``--ray-only``) 3,000 rows in all through
Ray Data (``nimrank_ray.rerank_dataset`` over a list of URLs) with 1 actor
against 1 replica and 2 actors against 2, as server-side pairs/second (Ray's
start-up excluded), every score checked.

Runs are interleaved and repeated (``--runs``, median reported) after one
warm-up; the machine is shared, so the ratios measured in one run are the
result, not the absolute figures.

    .venv/bin/python tests/benchmarks/fleet.py --runs 3 [--ray | --ray-only]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import httpx

from nimrank import AsyncRankingClient, RetryPolicy
from nimrank.fleet import Fleet, FleetPolicy, Lease, Outcome, outcome_for_status
from nimrank.retry import parse_retry_after
from nimrank.server.scoring import score_passages

HERE: Final = Path(__file__).resolve().parent
CAPACITY: Final = 2
LATENCY_MS: Final = 20.0
PER_PASSAGE_MS: Final = 0.5
PASSAGES: Final = 64
ROWS_PER_REPLICA: Final = 120
_WORD_LINES: Final = (
    "gpu memory bandwidth tensor core hbm3 nvlink cache latency throughput kernel batch ranking",
    "passage query model server replica cluster actor dataset fleet",
)
WORDS: Final = [word for line in _WORD_LINES for word in line.split()]
RETRIES: Final = RetryPolicy(max_retries=8, initial_delay=0.05, max_delay=1.0)

Row = tuple[str, list[str]]


def ideal_pairs_per_second(replicas: int) -> float:
    """(a): every slot of every replica busy all the time."""
    seconds = (LATENCY_MS + PER_PASSAGE_MS * PASSAGES) / 1000.0
    return replicas * CAPACITY * PASSAGES / seconds


def make_rows(count: int, seed: int) -> list[Row]:
    rng = random.Random(seed)
    return [
        (
            " ".join(rng.sample(WORDS, 3)),
            [" ".join(rng.choices(WORDS, k=rng.randint(4, 12))) for _ in range(PASSAGES)],
        )
        for _ in range(count)
    ]


# -- processes --------------------------------------------------------------------


class Child:
    """A helper process that prints one JSON line when it is ready."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *args], stdout=subprocess.PIPE, text=True, cwd=HERE
        )
        assert self.process.stdout is not None
        self.info: dict[str, Any] = json.loads(self.process.stdout.readline())

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def address(self) -> str:
        return self.url.removeprefix("http://").removesuffix("/v1")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def start_replica() -> Child:
    return Child(
        "fleet_replica.py",
        f"--capacity={CAPACITY}",
        f"--latency-ms={LATENCY_MS}",
        f"--per-passage-ms={PER_PASSAGE_MS}",
    )


def start_proxy(replicas: Sequence[Child], seed: int) -> Child:
    return Child("proxy.py", f"--seed={seed}", *[replica.address for replica in replicas])


def replica_stats(replica: Child) -> dict[str, Any]:
    base = replica.url.removesuffix("/v1")
    return dict(httpx.get(f"{base}/stats", timeout=10).json())


def reset(replicas: Sequence[Child]) -> None:
    for replica in replicas:
        httpx.post(replica.url.removesuffix("/v1") + "/reset", timeout=10).raise_for_status()


# -- (b'): the fleet.py shell over raw httpx --------------------------------------


class FleetShell:
    """The async shell of ``nimrank.fleet``'s docstring, for one event loop."""

    def __init__(self, urls: Sequence[str], in_flight: int) -> None:
        self.fleet = Fleet(
            urls,
            FleetPolicy(max_per_replica=in_flight, max_in_flight=in_flight, eject_initial=0.5),
            seed=0,
        )
        self.wakeup = asyncio.Event()
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=in_flight + len(urls)),
            timeout=httpx.Timeout(30.0, pool=None),
        )

    async def _acquire(self) -> Lease:
        while True:
            self.wakeup.clear()  # before acquire: a release after this sets it again
            choice = self.fleet.acquire(time.monotonic())
            if isinstance(choice, Lease):
                return choice
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.wakeup.wait(), choice.seconds)

    async def rank(self, query: str, passages: list[str]) -> list[float]:
        body = json.dumps(
            {"model": "m", "query": {"text": query}, "passages": [{"text": p} for p in passages]}
        ).encode()
        attempt = 0
        while True:
            lease = await self._acquire()
            outcome, retry_after, reply = Outcome.ABANDONED, None, None
            try:
                if lease.probe:
                    try:
                        ready = await self.http.get(f"{lease.url}/health/ready")
                    except httpx.HTTPError:
                        outcome = Outcome.FAILED
                    else:
                        ok = ready.status_code == 200
                        outcome = Outcome.OK if ok else Outcome.FAILED
                else:
                    try:
                        reply = await self.http.post(
                            f"{lease.url}/ranking",
                            content=body,
                            headers={"Content-Type": "application/json"},
                        )
                    except httpx.HTTPError:
                        outcome = Outcome.FAILED
                    else:
                        outcome = outcome_for_status(reply.status_code)
                        header = reply.headers.get("retry-after")
                        retry_after = parse_retry_after(header) if header else None
            finally:
                self.fleet.release(lease, outcome, time.monotonic(), retry_after=retry_after)
                self.wakeup.set()
            if reply is not None and reply.status_code == 200:
                scores = [0.0] * len(passages)
                for item in reply.json()["rankings"]:
                    scores[item["index"]] = item["logit"]
                return scores
            if lease.probe and outcome is Outcome.OK:
                continue  # readmitted: not an attempt
            attempt += 1  # failures, 429s, 500s and failed probes: one budget
            if attempt > RETRIES.max_retries:
                raise RuntimeError(f"gave up after {attempt} attempts: {outcome}")
            if outcome is Outcome.OK:  # an answer worth retrying later (a 500)
                await asyncio.sleep(RETRIES.delay(attempt))

    async def aclose(self) -> None:
        await self.http.aclose()


# -- one run ----------------------------------------------------------------------


@dataclass
class Result:
    seconds: float
    rows: int
    completed: int
    wrong: int
    split: list[int]
    requests_sent: int | None = None

    @property
    def pairs_per_second(self) -> float:
        return self.completed * PASSAGES / self.seconds


Ranker = Callable[[str, list[str]], Awaitable[list[float]]]


async def drive(
    rank: Ranker,
    rows: Sequence[Row],
    in_flight: int,
    halfway: Callable[[], None] | None = None,
) -> tuple[float, int, int]:
    """Rank every row, ``in_flight`` at once: (seconds, rows completed, rows scored wrong)."""
    slots = asyncio.Semaphore(in_flight)
    done = 0
    wrong = 0

    # Every answer is checked, against scores computed before the clock starts
    # (scoring in this process would slow the client under test).
    expected = [score_passages(query, passages) for query, passages in rows]

    async def one(position: int) -> None:
        nonlocal done, wrong
        query, passages = rows[position]
        async with slots:
            try:
                scores = await rank(query, passages)
            except Exception:
                return
        done += 1
        if done == len(rows) // 2 and halfway is not None:
            halfway()
        if scores != expected[position]:  # a passage given another one's score
            wrong += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(position) for position in range(len(rows))))
    return time.perf_counter() - started, done, wrong


async def run_shell(
    replicas: Sequence[Child],
    rows: Sequence[Row],
    in_flight: int,
    halfway: Callable[[], None] | None = None,
) -> Result:
    shell = FleetShell([replica.url for replica in replicas], in_flight)
    try:
        seconds, done, wrong = await drive(shell.rank, rows, in_flight, halfway)
    finally:
        await shell.aclose()
    stats = shell.fleet.stats(time.monotonic())
    return Result(seconds, len(rows), done, wrong, list(stats.requests), sum(stats.requests))


async def run_client(
    url: str | list[str],
    replicas: Sequence[Child],
    rows: Sequence[Row],
    in_flight: int,
    halfway: Callable[[], None] | None = None,
) -> Result:
    # The same requests in flight as the other variants: with a list of
    # replicas, max_concurrency is each replica's share.
    share = in_flight if isinstance(url, str) else max(in_flight // len(url), 1)
    async with AsyncRankingClient(
        base_url=url,
        model="m",  # named: the proxy serves no /v1/models to discover one from
        max_batch_size=PASSAGES,
        max_concurrency=share,
        retry_policy=RETRIES,
    ) as client:

        async def rank(query: str, passages: list[str]) -> list[float]:
            scores = [0.0] * len(passages)
            for passage in await client.rank(query, passages):
                assert passage.score is not None
                scores[passage.index] = passage.score
            return scores

        seconds, done, wrong = await drive(rank, rows, in_flight, halfway)
        split = [stats.requests for stats in client.replica_stats()]
    return Result(seconds, len(rows), done, wrong, split, sum(split) if split else None)


def fill_split(result: Result, replicas: Sequence[Child]) -> Result:
    if not result.split:
        result.split = [int(replica_stats(replica)["requests"]) for replica in replicas]
    if result.requests_sent is None:
        result.requests_sent = sum(result.split)
    return result


# -- the report -------------------------------------------------------------------


def steady(
    fleet: list[Child], runs: int, seed: int, load: int
) -> dict[int, dict[str, list[Result]]]:
    """Each variant against 1, 2, 4 replicas with ``load`` x their capacity in flight."""
    results: dict[int, dict[str, list[Result]]] = {}
    for count in (1, 2, 4):
        replicas = fleet[:count]
        urls = [replica.url for replica in replicas]
        in_flight = load * CAPACITY * count
        proxy = start_proxy(replicas, seed)
        variants: dict[str, Callable[[list[Row]], Coroutine[Any, Any, Result]]] = {
            "balanced client (b)": partial(run_client, urls, replicas, in_flight=in_flight),
            "fleet.py shell (b')": partial(run_shell, replicas, in_flight=in_flight),
            "one URL via proxy (c)": partial(run_client, proxy.url, replicas, in_flight=in_flight),
        }
        results[count] = {name: [] for name in variants}
        try:
            for run in range(runs + 1):  # run 0 is the warm-up
                for name, variant in variants.items():
                    rows = make_rows(ROWS_PER_REPLICA * count, seed=seed + run)
                    reset(replicas)
                    result = fill_split(asyncio.run(variant(rows)), replicas)
                    if run:
                        results[count][name].append(result)
        finally:
            proxy.kill()
    return results


def failover(fleet: list[Child], seed: int) -> dict[str, Result]:
    """4 replicas, the last one killed when half the rows are done."""
    outcome: dict[str, Result] = {}
    for name in ("balanced client (b)", "fleet.py shell (b')", "one URL via proxy (c)"):
        victim = fleet[3]
        proxy = start_proxy(fleet, seed)
        rows = make_rows(ROWS_PER_REPLICA * 4 * 2, seed=seed + 99)
        reset(fleet)
        try:
            in_flight = 2 * CAPACITY * len(fleet)
            if name.startswith("balanced"):
                urls = [replica.url for replica in fleet]
                result = asyncio.run(run_client(urls, fleet, rows, in_flight, victim.kill))
            elif name.startswith("fleet"):
                result = asyncio.run(run_shell(fleet, rows, in_flight, victim.kill))
            else:
                result = asyncio.run(run_client(proxy.url, fleet, rows, in_flight, victim.kill))
                result.split = [int(replica_stats(r)["requests"]) for r in fleet[:3]] + [-1]
                result.requests_sent = None  # the dead replica's count died with it
        finally:
            proxy.kill()
        outcome[name] = result
        fleet[3] = start_replica()
    return outcome


def ray_runs(fleet: list[Child], seed: int) -> list[tuple[str, float, int, int, list[int]]]:
    """Ray Data, 1 actor on 1 replica, 2 on 2 (a list of URLs, then the proxy): pairs/second."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray is imported
    import ray
    import ray.data

    from nimrank_ray import rerank_dataset

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    figures = []
    try:
        for actors, how in ((1, "one URL"), (2, "list of URLs"), (2, "one URL via proxy")):
            replicas = fleet[:actors]
            proxy = start_proxy(replicas, seed) if how.endswith("proxy") else None
            url: str | list[str] = [replica.url for replica in replicas]
            if actors == 1 or proxy is not None:
                url = proxy.url if proxy is not None else replicas[0].url
            rows = make_rows(1500 * actors, seed=seed + actors)  # a few thousand in all
            ds = ray.data.from_items([{"query": q, "passages": p} for q, p in rows])
            reset(replicas)
            try:
                out = rerank_dataset(
                    ds,
                    workers=actors,
                    rows_per_batch=25,
                    rows_in_flight=2 * CAPACITY,  # 2x a replica's slots per actor
                    base_url=url,
                    model="m",
                    max_batch_size=PASSAGES,
                    max_concurrency=2 * CAPACITY,
                    retry_policy=RETRIES,
                ).take_all()
            finally:
                if proxy is not None:
                    proxy.kill()
            stats = [replica_stats(replica) for replica in replicas]
            first = min(s["first_start"] for s in stats)
            window = max(s["last_finish"] for s in stats) - first
            pairs = sum(s["pairs"] for s in stats)
            wrong = sum(
                row["scores"] != score_passages(row["query"], list(row["passages"])) for row in out
            )
            split = [int(s["requests"]) for s in stats]
            setup = f"{actors} actor(s), {actors} replica(s), {how}"
            figures.append((setup, pairs / window, len(out), wrong, split))
    finally:
        ray.shutdown()
    return figures


def report_steady(fleet: list[Child], runs: int, seed: int) -> None:
    print(f"## Steady pairs/second (median of {runs}; the machine is shared)\n")
    print("| replicas | in flight | variant | pairs/s | % of ideal | vs proxy | split | wrong |")
    print("|---|---|---|---|---|---|---|---|")
    for load in (1, 2):
        for count, variants in steady(fleet, runs, seed, load).items():
            ideal = ideal_pairs_per_second(count)
            in_flight = load * CAPACITY * count
            print(f"| {count} | | ideal (a) | {ideal:.0f} | 100% | | | |")
            proxy_rate = statistics.median(
                r.pairs_per_second for r in variants["one URL via proxy (c)"]
            )
            for name, results in variants.items():
                rate = statistics.median(r.pairs_per_second for r in results)
                middle = sorted(results, key=lambda r: r.pairs_per_second)[len(results) // 2]
                print(
                    f"| {count} | {in_flight} | {name} | {rate:.0f} | {rate / ideal:.0%} | "
                    f"{rate / proxy_rate:.2f}x | {'/'.join(map(str, middle.split))} | "
                    f"{sum(r.wrong for r in results)} |"
                )


def report_failover(fleet: list[Child], seed: int) -> None:
    print("\n## Failover: 4 replicas, one SIGKILLed when half the rows are done\n")
    print("| variant | rows completed | requests sent | extra requests | seconds | split |")
    print("|---|---|---|---|---|---|")
    for name, result in failover(fleet, seed).items():
        sent = "?" if result.requests_sent is None else str(result.requests_sent)
        extra = "?" if result.requests_sent is None else str(result.requests_sent - result.rows)
        split = "/".join("killed" if n < 0 else str(n) for n in result.split)
        print(
            f"| {name} | {result.completed}/{result.rows} (wrong {result.wrong}) | {sent} | "
            f"{extra} | {result.seconds:.2f} | {split} |"
        )


def report_ray(fleet: list[Child], seed: int) -> None:
    print("\n## Ray Data (server-side pairs/second, Ray's start-up excluded)\n")
    print("| setup | pairs/s | % of ideal | rows out | wrong | split |")
    print("|---|---|---|---|---|---|")
    for setup, rate, rows_out, wrong, ray_split in ray_runs(fleet, seed):
        ideal = ideal_pairs_per_second(len(ray_split))
        print(
            f"| {setup} | {rate:.0f} | {rate / ideal:.0%} | {rows_out} | {wrong} | "
            f"{'/'.join(map(str, ray_split))} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ray", action="store_true", help="also run the Ray Data part")
    parser.add_argument("--ray-only", action="store_true", help="run only the Ray Data part")
    args = parser.parse_args()
    fleet = [start_replica() for _ in range(4)]
    try:
        if not args.ray_only:
            report_steady(fleet, args.runs, args.seed)
            report_failover(fleet, args.seed)
        if args.ray or args.ray_only:
            report_ray(fleet, args.seed)
    finally:
        for replica in fleet:
            with contextlib.suppress(OSError):
                replica.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
