"""Soak: many concurrent ``rank`` calls against the embedded server while it misbehaves.

Each round starts fresh clients, fires many ``rank`` calls at once (asyncio
tasks on ``AsyncRankingClient`` and threads on ``RankingClient``), each with
hundreds of passages, while the server answers a share of the requests with a
429 carrying ``Retry-After``, a 503, a slow reply, a reply slower than the
client's timeout, or a dropped connection. Then the clients close. The claims:

* every call returns every one of its passages exactly once, each with the
  score the server's scorer gives it, in order; or raises a typed
  ``RankingError``. Nothing else (no ``KeyError``, no ``httpx`` exception);
* clients with retries to spare ("patient") always succeed, clients with none
  ("impatient") fail only with the error their fault maps to, and a call whose
  every attempt fails raises ``ServerError`` (the "doomed" call);
* once the clients are closed, open sockets, threads and asyncio tasks are
  back to where they were before the round: nothing leaked;
* traced memory does not grow from round to round.

Bounded in count and time, loopback only. The short run is part of ``make
test``; ``make soak`` runs the long one (marker ``soak``) and prints the figures
the README reports.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import random
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest

from nimrank import (
    AsyncRankingClient,
    RankedPassage,
    RankingClient,
    RankingError,
    RetryPolicy,
    ServerError,
)
from nimrank.server import RankingServer, score_passages

# Fixed vocabulary: the scorer's stem cache fills in the first round, so a
# later round's memory is comparable with the first one's.
VOCABULARY = (
    "gpu memory bandwidth tensor core hopper ampere grace cpu interconnect nvlink pcie "
    "latency throughput cache kernel inference training batch model token context window "
    "rerank passage query retrieval vector index shard replica cluster node scheduler "
    "cake flour sugar oven recipe garden river mountain music guitar"
)
WORDS = VOCABULARY.split()
QUERIES = (
    "What is the GPU memory bandwidth of H100?",
    "how does nvlink interconnect compare with pcie",
    "rerank retrieval passages for a query",
    "inference latency and throughput of a batch",
)
BATCH = 32
TIMEOUT = 2.0  # the clients' timeout; a "too slow" fault waits longer than this
TOO_SLOW = 2.4
DOOMED_PATH = "/v1/retrieval/nvidia/doomed-model/reranking"
# Marks the requests of clients that have retries to spare, in the server's log.
PATIENT_TAG = {"X-Soak-Client": "patient"}


@dataclass(frozen=True)
class SoakPlan:
    """How big a soak run is."""

    rounds: int
    async_calls: int  # per round, split between patient and impatient clients
    thread_calls: int
    passages: tuple[int, int]  # passages per call, min and max
    # Share of a round's requests that get each fault.
    rate_limited: float = 0.06
    unavailable: float = 0.05
    slow: float = 0.04
    dropped: float = 0.04
    too_slow_per_round: int = 1
    seed: int = 20250525


SHORT = SoakPlan(rounds=3, async_calls=8, thread_calls=4, passages=(150, 300))
LONG = SoakPlan(rounds=12, async_calls=24, thread_calls=12, passages=(200, 600))

PATIENT = RetryPolicy(
    max_retries=6, initial_delay=0.01, max_delay=0.05, max_retry_after=0.05, jitter=0.5
)
IMPATIENT = PATIENT.with_retries(0)


@dataclass
class Figures:
    """What a soak run did, for the assertions and the README table."""

    calls: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # calls by client kind
    succeeded: int = 0
    passages: int = 0
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    faults_on_patient: int = 0  # faulted requests of patient clients: each costs a retry
    failures: Counter[str] = field(default_factory=Counter)
    memory: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> str:
        faults = ", ".join(f"{kind} {count}" for kind, count in sorted(self.faults.items()))
        failures = ", ".join(f"{kind} {count}" for kind, count in sorted(self.failures.items()))
        growth = (self.memory[-1] - self.memory[0]) / 1024 if len(self.memory) > 1 else 0.0
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(self.kinds.items()))
        rows = [
            ("rank calls", f"{self.calls} ({kinds})"),
            ("calls that returned a full ranking", f"{self.succeeded}"),
            ("passages returned, each checked", f"{self.passages}"),
            ("HTTP requests served", f"{self.requests}"),
            ("faults injected", f"{sum(self.faults.values())} ({faults})"),
            ("client retries", f"{self.retries}"),
            ("failed calls, by type", f"{sum(self.failures.values())} ({failures or 'none'})"),
            ("traced memory, first to last round", f"{growth:+.0f} KiB"),
            ("wall time", f"{self.seconds:.1f} s"),
        ]
        return "\n".join(f"| {name} | {value} |" for name, value in rows)


@dataclass(frozen=True)
class Call:
    """One ``rank`` call of a round and what it must return."""

    name: str
    kind: str  # "patient", "impatient" or "doomed"
    query: str
    passages: list[str]
    expected: list[float | None]  # the scorer's score per passage; None for a blank one


# --------------------------------------------------------------------------- counting


def open_sockets() -> int:
    """Sockets this process holds open (client and in-process server sides)."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                count += 1
        except OSError:  # closed between listdir and readlink
            pass
    return count


def settle(measure: Callable[[], int], baseline: int, seconds: float = 10.0) -> int:
    """Wait for ``measure()`` to come back to ``baseline``; return its last value.

    Server threads finish a reply that a client stopped waiting for (a "too
    slow" fault) and close their sockets a moment after the client did.
    """
    deadline = time.monotonic() + seconds
    value = measure()
    while value > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
        value = measure()
    return value


class RetryCounter(logging.Filter):
    """Counts the clients' "retrying" log records: one per retry, from both clients.

    A filter on the ``nimrank`` logger, not a handler: it drops every record
    after counting it, so pytest's log capture (which also listens to loggers
    that do not propagate) does not keep thousands of them, which the memory
    check would see pile up.
    """

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self._count_lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if "retrying" in str(record.msg):
            with self._count_lock:
                self.count += 1
        return False


@pytest.fixture
def retry_counter() -> Iterator[RetryCounter]:
    logger = logging.getLogger("nimrank")
    counter = RetryCounter()
    level = logger.level
    logger.setLevel(logging.INFO)  # the retry lines are INFO
    logger.addFilter(counter)
    try:
        yield counter
    finally:
        logger.removeFilter(counter)
        logger.setLevel(level)


# --------------------------------------------------------------------------- one round


def make_calls(plan: SoakPlan, rng: random.Random, round_number: int) -> list[Call]:
    calls = []
    kinds = ["patient", "impatient"]
    for number in range(plan.async_calls + plan.thread_calls):
        size = rng.randint(*plan.passages)
        passages = [
            " ".join(rng.choices(WORDS, k=rng.randint(4, 24))) + f" {rng.randrange(1000)}"
            for _ in range(size)
        ]
        for _ in range(size // 10):  # duplicates: scored once, returned at every index
            passages[rng.randrange(size)] = passages[rng.randrange(size)]
        passages[rng.randrange(size)] = "   "  # blank: never sent, ranks last
        query = rng.choice(QUERIES)
        calls.append(
            Call(
                name=f"round {round_number} call {number}",
                kind=kinds[number % 2],
                query=query,
                passages=passages,
                expected=expected_scores(query, passages),
            )
        )
    return calls


def expected_scores(query: str, passages: Sequence[str]) -> list[float | None]:
    scores = score_passages(query, passages)
    return [score if text.strip() else None for score, text in zip(scores, passages, strict=True)]


def batches(passages: Sequence[str]) -> int:
    distinct = {text for text in passages if text.strip()}
    return math.ceil(len(distinct) / BATCH)


def check_ranking(call: Call, ranking: list[RankedPassage]) -> None:
    """Every passage exactly once, with its own text and score, best first."""
    assert sorted(p.index for p in ranking) == list(range(len(call.passages))), call.name
    for ranked in ranking:
        assert ranked.text == call.passages[ranked.index], call.name
        assert ranked.score == call.expected[ranked.index], (call.name, ranked)
    keys = [(math.inf if p.score is None else -p.score, p.index) for p in ranking]
    assert keys == sorted(keys), f"{call.name}: not best first"


def inject_faults(
    server: RankingServer, plan: SoakPlan, rng: random.Random, requests: int
) -> Counter[str]:
    """Script the first ``requests`` requests of the round: faults among honest replies.

    ``requests`` is at most the number of requests the round is sure to send,
    so every scripted fault is used (``pending_faults`` is 0 at the end).
    """
    script: list[str] = []
    for kind, share in (
        ("429 + Retry-After", plan.rate_limited),
        ("503", plan.unavailable),
        ("slow reply", plan.slow),
        ("dropped connection", plan.dropped),
    ):
        script += [kind] * max(1, round(share * requests))
    script += ["reply past the timeout"] * plan.too_slow_per_round
    script += ["honest"] * max(0, requests - len(script))
    rng.shuffle(script)
    for kind in script:
        if kind == "429 + Retry-After":
            server.inject_fault(429, headers={"Retry-After": "0.02"})
        elif kind == "503":
            server.inject_fault(503)
        elif kind == "slow reply":
            server.inject_delay(rng.uniform(0.05, 0.25))
        elif kind == "dropped connection":
            server.inject_disconnect()
        elif kind == "reply past the timeout":
            server.inject_delay(TOO_SLOW)
        else:
            server.inject_delay(0)  # an honest reply, holding a place in the script
    return Counter(kind for kind in script if kind != "honest")


async def run_round(
    server: RankingServer,
    plan: SoakPlan,
    rng: random.Random,
    round_number: int,
    figures: Figures,
) -> None:
    calls = make_calls(plan, rng, round_number)
    doomed = Call(
        name=f"round {round_number} doomed",
        kind="doomed",
        query=QUERIES[0],
        passages=[f"doomed passage {i}" for i in range(BATCH)],  # one batch
        expected=[],
    )
    # The doomed call's own faults go first, so no scripted fault can take their place.
    server.inject_fault(503, times=2, path=DOOMED_PATH)
    patient_requests = sum(batches(c.passages) for c in calls if c.kind == "patient")
    figures.faults.update(inject_faults(server, plan, rng, patient_requests))

    options: dict[str, Any] = {"base_url": server.url, "timeout": TIMEOUT, "max_batch_size": BATCH}
    patient: dict[str, Any] = {**options, "retry_policy": PATIENT, "extra_headers": PATIENT_TAG}
    impatient: dict[str, Any] = {**options, "retry_policy": IMPATIENT}
    async_patient = AsyncRankingClient(**patient)
    async_impatient = AsyncRankingClient(**impatient)
    sync_patient = RankingClient(**patient)
    sync_impatient = RankingClient(**impatient)
    doomed_client = AsyncRankingClient(
        base_url=f"{server.base_url}{DOOMED_PATH}", retry_policy=PATIENT.with_retries(1)
    )
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=plan.thread_calls, thread_name_prefix="soak")
    try:
        work: list[Any] = []
        for number, call in enumerate(calls):
            if number < plan.async_calls:
                client = async_patient if call.kind == "patient" else async_impatient
                work.append(client.rank(call.query, call.passages))
            else:
                sync = sync_patient if call.kind == "patient" else sync_impatient
                work.append(loop.run_in_executor(pool, sync.rank, call.query, call.passages))
        work.append(doomed_client.rank(doomed.query, doomed.passages))
        outcomes = await asyncio.wait_for(asyncio.gather(*work, return_exceptions=True), 120)
    finally:
        await async_patient.aclose()
        await async_impatient.aclose()
        await doomed_client.aclose()
        sync_patient.close()
        sync_impatient.close()
        pool.shutdown(wait=True)

    for call, outcome in zip([*calls, doomed], outcomes, strict=True):
        figures.calls += 1
        figures.kinds[call.kind] += 1
        if isinstance(outcome, BaseException):
            # A typed error, and only where one may happen.
            assert isinstance(outcome, RankingError), f"{call.name}: untyped {outcome!r}"
            assert call.kind != "patient", f"{call.name}: patient call failed: {outcome}"
            if call.kind == "doomed":
                assert isinstance(outcome, ServerError), outcome
            figures.failures[type(outcome).__name__] += 1
        else:
            assert call.kind != "doomed", f"{call.name} should have failed"
            check_ranking(call, outcome)
            figures.succeeded += 1
            figures.passages += len(call.passages)
    served = server.requests
    figures.requests += len(served)
    figures.faults_on_patient += sum(
        1
        for r in served
        if r.headers.get("x-soak-client") == "patient"
        and (r.status != 200 or r.finished - r.started >= TIMEOUT)
    )
    assert server.pending_faults == 0, "every scripted fault was served"


async def soak(server: RankingServer, plan: SoakPlan, retries: RetryCounter) -> Figures:
    rng = random.Random(plan.seed)
    figures = Figures()
    started = time.monotonic()
    sockets, threads = open_sockets(), threading.active_count()
    this_task = asyncio.current_task()
    tracemalloc.start()
    try:
        for round_number in range(plan.rounds):
            await run_round(server, plan, rng, round_number, figures)
            # The clients are closed: nothing of theirs may remain.
            assert asyncio.all_tasks() == {this_task}
            assert settle(open_sockets, sockets) <= sockets, "sockets leaked"
            assert settle(threading.active_count, threads) <= threads, "threads leaked"
            server.reset()  # the request log is the test's, not the clients'
            gc.collect()
            figures.memory.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    figures.retries = retries.count
    figures.seconds = time.monotonic() - started
    return figures


def assert_soak_held(figures: Figures, plan: SoakPlan) -> None:
    calls_per_round = plan.async_calls + plan.thread_calls + 1
    assert figures.calls == plan.rounds * calls_per_round
    assert figures.succeeded + sum(figures.failures.values()) == figures.calls
    assert figures.faults["reply past the timeout"] == plan.rounds * plan.too_slow_per_round
    # Each faulted request of a patient client was retried, and the doomed call
    # once per round. (More retries are fine: an honest reply can be late too.)
    assert figures.faults_on_patient > 0
    assert figures.retries >= figures.faults_on_patient + plan.rounds
    assert figures.failures["ServerError"] >= plan.rounds  # one doomed call per round
    # Flat memory: what is left after the first round (caches, pools warmed up)
    # does not grow with more rounds.
    growth = max(figures.memory[1:], default=figures.memory[0]) - figures.memory[0]
    assert growth < 2 * 1024 * 1024, f"traced memory grew by {growth / 1024:.0f} KiB"


@pytest.fixture
def soak_server() -> Iterator[RankingServer]:
    with RankingServer(log_size=100_000) as server:
        yield server


@pytest.mark.timeout(120)
async def test_soak_short(soak_server: RankingServer, retry_counter: RetryCounter) -> None:
    figures = await soak(soak_server, SHORT, retry_counter)
    print(f"\nsoak (short):\n{figures.table()}")
    assert_soak_held(figures, SHORT)


@pytest.mark.soak
@pytest.mark.timeout(900)
async def test_soak_long(soak_server: RankingServer, retry_counter: RetryCounter) -> None:
    figures = await soak(soak_server, LONG, retry_counter)
    print(f"\nsoak (long):\n{figures.table()}")
    assert_soak_held(figures, LONG)


# --------------------------------------------------------------------------- the faults used


def test_a_delayed_reply_is_honest_and_late(ranking_server: RankingServer) -> None:
    ranking_server.inject_delay(0.3)
    with RankingClient(base_url=ranking_server.url) as client:
        started = time.monotonic()
        ranked = client.rank("memory", ["memory bandwidth", "cake"])
        elapsed = time.monotonic() - started
    assert [p.index for p in ranked] == [0, 1]
    assert elapsed >= 0.3
    assert ranking_server.pending_faults == 0


def test_a_disconnect_closes_without_a_reply_and_is_retried(
    ranking_server: RankingServer,
) -> None:
    ranking_server.inject_disconnect(times=2)
    assert ranking_server.pending_faults == 2
    policy = RetryPolicy(initial_delay=0, max_delay=0, max_retry_after=0)
    with RankingClient(base_url=ranking_server.url, retry_policy=policy) as client:
        ranked = client.rank("memory", ["memory bandwidth", "cake"])
    assert [p.index for p in ranked] == [0, 1]
    assert [r.status for r in ranking_server.requests] == [0, 0, 200]
    assert ranking_server.pending_faults == 0
