"""How both clients behave against live loopback servers, with every wire protocol.

One suite for ``RankingClient`` and ``AsyncRankingClient``: each test runs once per
client kind (the ``client_kind`` fixture, through ``EitherClient``) and per protocol
(``wire_protocol``: NIM ``/ranking``, Cohere ``/rerank``). Tests about the ranking a
call returns also run against both servers (the embedded ``nimrank serve`` and the
fault server); tests that read the request log use the fault server, which records
each request when it arrives (before answering), so the log is complete the moment
a call returns.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

import pytest

from faultserver import EitherClient, FaultServer, honest_scores
from nimrank import AsyncRankingClient, RankedPassage, RankingClient
from nimrank.server import RankingServer

MakeClient = Callable[..., EitherClient]

QUERY = "What is the GPU memory bandwidth of H100 SXM?"
# Words of the query that carry weight, and words that never match it.
TOPIC = ("GPU", "memory", "bandwidth", "H100")
FILLER = ("cake", "river", "window", "garden", "violin", "planet", "coffee", "ladder")
FAKE_KEY = "nvapi-fake-behaviour-test-key-not-real"


def corpus(size: int) -> list[str]:
    """``size`` distinct passages with every mix of topic words, so scores differ a lot
    (and tie often enough to exercise the tie order)."""
    passages = []
    for i in range(size):
        hits = [word for bit, word in enumerate(TOPIC) if (i >> bit) & 1]
        filler = [FILLER[(3 * i + j) % len(FILLER)] for j in range(2 + i % 5)]
        passages.append(f"note {i}: " + " ".join(hits + filler))
    return passages


def pairs(ranking: Sequence[RankedPassage]) -> list[tuple[int, float | None]]:
    return [(passage.index, passage.score) for passage in ranking]


def score(passage: RankedPassage) -> float:
    """The score of a passage that was sent (only a blank one has none)."""
    assert passage.score is not None, passage
    return passage.score


def rank_of(index: int, ranking: Sequence[RankedPassage]) -> int:
    return [passage.index for passage in ranking].index(index)


@pytest.fixture(params=["embedded", "fault"])
def server(request: pytest.FixtureRequest) -> RankingServer | FaultServer:
    """The embedded ``nimrank serve`` server, then the fault server (honest mode)."""
    name = "ranking_server" if request.param == "embedded" else "fault_server"
    found: RankingServer | FaultServer = request.getfixturevalue(name)
    return found


# -- what a call returns --------------------------------------------------------------


async def test_batched_ranking_equals_the_ranking_of_one_request(
    server: RankingServer | FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    passages = corpus(100)
    batched = make_client(base_url=server.url, protocol=wire_protocol, max_batch_size=7)
    single = make_client(base_url=server.url, protocol=wire_protocol, max_batch_size=100)

    in_batches = await batched.rank(QUERY, passages)
    in_one = await single.rank(QUERY, passages)

    assert pairs(in_batches) == pairs(in_one)
    assert sorted(passage.index for passage in in_batches) == list(range(100))
    assert all(passage.text == passages[passage.index] for passage in in_batches)
    # The ranking is a real one: the passage with every topic word comes first.
    assert in_one[0].index == 15


async def test_batches_of_seven_send_each_passage_once_in_fifteen_requests(
    fault_server: FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    passages = corpus(100)
    client = make_client(base_url=fault_server.url, protocol=wire_protocol, max_batch_size=7)

    await client.rank(QUERY, passages)

    sizes = [len(request.passages) for request in fault_server.ranking_requests]
    assert len(sizes) == 15
    assert max(sizes) == 7
    assert sorted(fault_server.sent_passages()) == sorted(passages)


async def test_progress_counts_each_scored_batch_of_distinct_texts(
    fault_server: FaultServer, make_client: MakeClient
) -> None:
    # 100 passages, 10 of them repeats and 1 blank: 89 distinct texts to score.
    passages = [*corpus(89), *corpus(10), "  "]
    client = make_client(base_url=fault_server.url, max_batch_size=7)
    reports: list[tuple[int, int]] = []

    await client.rank(QUERY, passages, progress=lambda done, total: reports.append((done, total)))

    assert len(reports) == len(fault_server.ranking_requests) == 13
    assert {total for _, total in reports} == {89}
    done = [count for count, _ in reports]
    assert done == sorted(done)
    assert done[-1] == 89
    assert all(later - earlier in (5, 7) for earlier, later in itertools.pairwise([0, *done]))


async def test_a_progress_that_is_not_callable_is_refused_before_any_request(
    fault_server: FaultServer, make_client: MakeClient
) -> None:
    client = make_client(base_url=fault_server.url)

    with pytest.raises(TypeError, match="progress"):
        await client.rank(QUERY, ["a passage"], progress="yes")

    assert fault_server.requests == []


async def test_scores_land_on_their_own_passage_when_rankings_come_shuffled(
    fault_server: FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    passages = corpus(40)
    client = make_client(base_url=fault_server.url, protocol=wire_protocol, max_batch_size=9)

    ranked = await client.rank(QUERY, passages)

    assert {p.index: p.score for p in ranked} == dict(enumerate(honest_scores(QUERY, passages)))


async def test_top_n_returns_the_best_n_of_the_full_ranking(
    server: RankingServer | FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    passages = corpus(30)
    client = make_client(base_url=server.url, protocol=wire_protocol, max_batch_size=8)

    full = await client.rank(QUERY, passages)
    top = await client.rank(QUERY, passages, top_n=5)

    assert top == full[:5]


async def test_score_threshold_per_call_and_per_client(
    server: RankingServer | FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    passages = corpus(30)
    plain = make_client(base_url=server.url, protocol=wire_protocol)
    full = await plain.rank(QUERY, passages)
    cut = score(full[len(full) // 2])
    expected = [passage for passage in full if score(passage) >= cut]
    assert 0 < len(expected) < len(full)  # the cut really splits the ranking
    limited = make_client(base_url=server.url, protocol=wire_protocol, score_threshold=cut)

    assert await plain.rank(QUERY, passages, score_threshold=cut) == expected
    assert await limited.rank(QUERY, passages) == expected
    # None per call means "no threshold", overriding the client's.
    assert await limited.rank(QUERY, passages, score_threshold=None) == full


async def test_score_threshold_zero_is_applied_not_ignored(
    fault_server: FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    # The fault server sends raw logits in both families, so 0.0 splits the ranking.
    passages = corpus(30)
    plain = make_client(base_url=fault_server.url, protocol=wire_protocol)
    full = await plain.rank(QUERY, passages)
    expected = [passage for passage in full if score(passage) >= 0.0]
    assert 0 < len(expected) < len(full)
    at_zero = make_client(base_url=fault_server.url, protocol=wire_protocol, score_threshold=0.0)

    assert await plain.rank(QUERY, passages, score_threshold=0.0) == expected
    assert await at_zero.rank(QUERY, passages) == expected


async def test_sigmoid_transform_maps_each_score_and_keeps_the_order(
    server: RankingServer | FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    passages = corpus(20)
    raw = await make_client(base_url=server.url, protocol=wire_protocol).rank(QUERY, passages)
    squashed = await make_client(
        base_url=server.url, protocol=wire_protocol, score_transform="sigmoid"
    ).rank(QUERY, passages)

    assert [p.index for p in squashed] == [p.index for p in raw]
    for before, after in zip(raw, squashed, strict=True):
        assert after.score == pytest.approx(1 / (1 + math.exp(-score(before))))
        assert 0.0 < score(after) < 1.0


async def test_chunking_finds_words_past_the_cut_that_truncation_misses(
    server: RankingServer | FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    filler = " ".join(FILLER[i % len(FILLER)] for i in range(120))  # about 800 characters
    passages = [
        f"{filler}. The H100 GPU memory bandwidth is 3 TB/s.",  # the answer, past the cut
        "GPU memory comes in many sizes.",  # a partial match
        "A recipe for lemon cake.",
    ]
    options = {"base_url": server.url, "protocol": wire_protocol, "max_passage_chars": 200}
    truncated = await make_client(**options).rank(QUERY, passages)
    chunked = await make_client(**options, chunking=True).rank(QUERY, passages)

    assert rank_of(0, truncated) > rank_of(1, truncated)
    assert rank_of(0, chunked) == 0
    # The whole passage comes back either way, not the part that was scored.
    assert chunked[0].text == passages[0]


# -- what a call sends ----------------------------------------------------------------


async def test_identical_passages_are_sent_once_and_share_a_score(
    fault_server: FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    passages = ["GPU memory", "H100 bandwidth", "GPU memory", "cake", "H100 bandwidth"]
    client = make_client(base_url=fault_server.url, protocol=wire_protocol, max_batch_size=2)

    ranked = await client.rank(QUERY, passages)

    assert sorted(fault_server.sent_passages()) == ["GPU memory", "H100 bandwidth", "cake"]
    scores = {p.index: p.score for p in ranked}
    assert len(ranked) == 5
    assert scores[0] == scores[2]
    assert scores[1] == scores[4]


async def test_empty_input_and_top_n_zero_send_no_request(
    fault_server: FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    client = make_client(base_url=fault_server.url, protocol=wire_protocol)

    assert await client.rank(QUERY, []) == []
    assert await client.rank(QUERY, corpus(5), top_n=0) == []
    assert fault_server.requests == []


async def test_blank_passages_rank_last_and_are_not_sent(
    fault_server: FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    passages = ["", "GPU memory bandwidth", " \n\t", "a lemon cake"]
    client = make_client(base_url=fault_server.url, protocol=wire_protocol)

    ranked = await client.rank(QUERY, passages)

    assert [p.index for p in ranked] == [1, 3, 0, 2]
    assert ranked[-1].score is None
    assert ranked[-2].score is None
    assert fault_server.sent_passages() == ["GPU memory bandwidth", "a lemon cake"]


async def test_nim_body_holds_only_nim_fields_even_with_top_n(
    fault_server: FaultServer, make_client: MakeClient
) -> None:
    client = make_client(base_url=fault_server.url, protocol="nim", max_batch_size=4)

    await client.rank(QUERY, corpus(10), top_n=2)

    bodies = [request.body for request in fault_server.ranking_requests]
    assert len(bodies) == 3
    for body in bodies:
        assert set(body) <= {"model", "query", "passages", "truncate"}
        assert body["model"] == "nvidia/llama-3.2-nv-rerankqa-1b-v2"
        assert body["query"] == {"text": QUERY}


async def test_cohere_body_asks_for_every_document_of_its_batch(
    fault_server: FaultServer, make_client: MakeClient
) -> None:
    client = make_client(base_url=fault_server.url, protocol="cohere", max_batch_size=4)

    await client.rank(QUERY, corpus(10), top_n=2)

    bodies = [request.body for request in fault_server.ranking_requests]
    assert [body["top_n"] for body in bodies] == [len(body["documents"]) for body in bodies]
    assert sorted(len(body["documents"]) for body in bodies) == [2, 4, 4]


async def test_api_key_is_sent_as_a_bearer_token_on_every_request(
    fault_server: FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    client = make_client(
        base_url=fault_server.url, protocol=wire_protocol, api_key=FAKE_KEY, max_batch_size=3
    )

    await client.rank(QUERY, corpus(7))
    await client.list_models()

    assert len(fault_server.requests) == 4
    assert all(r.authorization_is(f"Bearer {FAKE_KEY}") for r in fault_server.requests)


async def test_no_authorization_header_without_a_key(
    fault_server: FaultServer,
    wire_protocol: str,
    make_client: MakeClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("NVIDIA_API_KEY", "NVIDIA_NIM_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    client = make_client(base_url=fault_server.url, protocol=wire_protocol, max_batch_size=3)

    await client.rank(QUERY, corpus(7))
    await client.list_models()

    assert len(fault_server.requests) == 4
    assert not any("authorization" in r.headers for r in fault_server.requests)


async def test_extra_headers_go_on_every_request(
    fault_server: FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    client = make_client(
        base_url=fault_server.url,
        protocol=wire_protocol,
        max_batch_size=3,
        extra_headers={"X-Request-Source": "nimrank-tests"},
    )

    await client.rank(QUERY, corpus(7))
    await client.list_models()

    assert [r.headers.get("x-request-source") for r in fault_server.requests] == [
        "nimrank-tests"
    ] * 4


# -- how it sends -----------------------------------------------------------------------


async def test_in_flight_requests_never_exceed_max_concurrency(
    fault_server: FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    fault_server.configure(latency_ms=30)  # requests overlap, so the peak shows the client's bound
    client = make_client(
        base_url=fault_server.url, protocol=wire_protocol, max_batch_size=2, max_concurrency=3
    )

    ranked = await client.rank(QUERY, corpus(24))

    assert len(ranked) == 24
    assert len(fault_server.ranking_requests) == 12
    assert 2 <= fault_server.max_in_flight <= 3


async def test_batches_reuse_a_few_kept_alive_connections(
    fault_server: FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    client = make_client(
        base_url=fault_server.url, protocol=wire_protocol, max_batch_size=4, max_concurrency=2
    )

    for _ in range(3):
        await client.rank(QUERY, corpus(40))

    assert len(fault_server.ranking_requests) == 30
    assert 1 <= len(fault_server.client_ports()) <= 2


async def test_sync_client_works_inside_a_running_event_loop(
    server: RankingServer | FaultServer, wire_protocol: Any
) -> None:
    asyncio.get_running_loop()  # raises unless a loop is running here
    passages = corpus(20)
    with RankingClient(base_url=server.url, protocol=wire_protocol, max_batch_size=6) as client:
        ranked = client.rank(QUERY, passages, top_n=3)

    assert len(ranked) == 3
    assert ranked[0].index == 15


async def test_list_models_returns_the_served_model_ids(
    server: RankingServer | FaultServer, wire_protocol: str, make_client: MakeClient
) -> None:
    listed = (server.settings.model, server.settings.vlm_model)
    expected = [model for model in listed if model is not None]
    client = make_client(base_url=server.url, protocol=wire_protocol)

    assert await client.list_models() == expected


# -- interrupted calls ------------------------------------------------------------------


class Interrupted(Exception):
    """Raised in the main thread by a signal handler, as Ctrl-C or a signal-based time
    limit (Celery's soft time limit, ``signal.alarm`` timeouts) raise theirs."""


def test_an_interrupted_sync_call_sends_none_of_its_remaining_batches(
    fault_server: FaultServer,
) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are handled in the main thread only")
    fault_server.configure(latency_ms=50)
    main = threading.get_ident()

    def raise_interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    def interrupt_once(scored: int, total: int) -> None:
        # Called on a worker thread once the first batch is scored.
        if scored == 1:
            signal.pthread_kill(main, signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, raise_interrupted)
    try:
        with RankingClient(
            base_url=fault_server.url, max_batch_size=1, max_concurrency=2
        ) as client:
            with pytest.raises(Interrupted):
                client.rank(QUERY, corpus(20), progress=interrupt_once)
            ranked = client.rank("cake river", corpus(6))
    finally:
        signal.signal(signal.SIGUSR1, previous)

    assert len(ranked) == 6
    # close() waited for the pool: what the interrupted call left behind has run.
    interrupted = [r for r in fault_server.ranking_requests if r.query == QUERY]
    assert 1 <= len(interrupted) < 10


async def test_a_cancelled_async_call_stops_its_batches_and_leaves_the_pool_usable(
    fault_server: FaultServer,
) -> None:
    fault_server.configure(latency_ms=50)
    async with AsyncRankingClient(
        base_url=fault_server.url, max_batch_size=1, max_concurrency=2
    ) as client:
        scored = asyncio.Event()  # progress runs on this loop
        task = asyncio.create_task(
            client.rank(QUERY, corpus(20), progress=lambda done, total: scored.set())
        )
        await scored.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Cancelled requests must give their connections back, or this waits for ever.
        ranked = await asyncio.wait_for(client.rank("cake river", corpus(6)), timeout=30)

    assert len(ranked) == 6
    interrupted = [r for r in fault_server.ranking_requests if r.query == QUERY]
    assert 1 <= len(interrupted) < 10


async def test_a_closed_client_reopens_when_used_again(
    fault_server: FaultServer, make_client: MakeClient
) -> None:
    # An adapter's copy, or a notebook cell run twice, may use a client after close().
    client = make_client(base_url=fault_server.url, max_batch_size=2)
    first = await client.rank(QUERY, corpus(6))
    await client.close()

    again = await client.rank(QUERY, corpus(6))

    assert pairs(again) == pairs(first)
