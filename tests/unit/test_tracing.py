"""OpenTelemetry spans of ranking calls (nimrank.tracing), recorded in memory.

Each test that takes ``make_client`` runs with ``RankingClient`` and
``AsyncRankingClient``; all talk HTTP to ``nimrank.server.RankingServer`` on
loopback. Every client's base URL carries a key in its query string, which no
span may show.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from conftest import TEST_MODEL
from faultserver import EitherClient
from nimrank import AuthenticationError, RankingClient, RetryPolicy, ServerError
from nimrank.server import RankingServer

MakeClient = Callable[..., EitherClient]

SECRET = "sk-tracing-secret-0000"
QUERY = "GPU memory bandwidth"
# Five distinct passages in batches of two: three batches (2 + 2 + 1).
PASSAGES = [f"passage {i} on GPU memory bandwidth" for i in range(5)]


@pytest.fixture
def connect(
    ranking_server: RankingServer, make_client: MakeClient, fast_retries: RetryPolicy
) -> Callable[..., EitherClient]:
    """A client of the test's kind whose base URL holds a key: batches of 2, instant retries."""

    def build(**options: Any) -> EitherClient:
        settings: dict[str, Any] = {
            "base_url": f"{ranking_server.url}?api-key={SECRET}",
            "max_batch_size": 2,
            "retry_policy": fast_retries,
        }
        return make_client(**{**settings, **options})

    return build


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def call_and_batches(exporter: InMemorySpanExporter) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one call span finished, and its batch spans in batch order."""
    spans = exporter.get_finished_spans()
    (call,) = named(spans, "nimrank.rank")
    batches = named(spans, "nimrank.batch")
    return call, sorted(batches, key=lambda span: attribute(span, "nimrank.batch.index"))


def attribute(span: ReadableSpan, name: str) -> Any:
    assert span.attributes is not None
    return span.attributes[name]


def everything_recorded(spans: Sequence[ReadableSpan]) -> str:
    """Every name, attribute, event and status text of ``spans``, as one string."""
    parts: list[object] = []
    for span in spans:
        parts += [span.name, dict(span.attributes or {}), span.status.description]
        parts += [(event.name, dict(event.attributes or {})) for event in span.events]
    return repr(parts)


def assert_children_of(parent: ReadableSpan, children: Sequence[ReadableSpan]) -> None:
    assert parent.context is not None
    for child in children:
        assert child.parent is not None
        assert child.parent.span_id == parent.context.span_id
        assert child.context is not None
        assert child.context.trace_id == parent.context.trace_id


async def test_a_call_is_one_span_with_a_child_per_batch(
    connect: Callable[..., EitherClient], span_exporter: InMemorySpanExporter
) -> None:
    ranked = await connect().rank(QUERY, PASSAGES)

    assert len(ranked) == len(PASSAGES)
    call, batches = call_and_batches(span_exporter)
    assert len(batches) == 3
    assert call.parent is None
    assert_children_of(call, batches)
    assert [attribute(b, "nimrank.batch.index") for b in batches] == [0, 1, 2]
    assert [attribute(b, "nimrank.batch.passages") for b in batches] == [2, 2, 1]
    assert attribute(call, "nimrank.passages") == len(PASSAGES)
    assert attribute(call, "nimrank.passages_sent") == len(PASSAGES)
    assert attribute(call, "nimrank.batches") == 3
    assert attribute(call, "nimrank.model") == TEST_MODEL
    assert attribute(call, "nimrank.protocol") == "nim"
    for span in batches:
        assert attribute(span, "http.response.status_code") == 200
        assert attribute(span, "nimrank.retries") == 0
        assert attribute(span, "nimrank.attempts") == 1
        assert attribute(span, "http.request.method") == "POST"
        assert span.status.status_code is StatusCode.UNSET
    assert call.status.status_code is StatusCode.UNSET


async def test_spans_show_the_url_masked_and_never_the_key(
    connect: Callable[..., EitherClient],
    ranking_server: RankingServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    await connect().rank(QUERY, PASSAGES)

    call, batches = call_and_batches(span_exporter)
    shown = f"{ranking_server.url}/ranking?api-key=***"
    for span in [call, *batches]:
        assert attribute(span, "url.full") == shown
        assert attribute(span, "server.address") == "127.0.0.1"
        assert attribute(span, "server.port") == ranking_server.port
    assert SECRET not in everything_recorded([call, *batches])


async def test_duplicates_are_counted_once_in_the_batches(
    connect: Callable[..., EitherClient], span_exporter: InMemorySpanExporter
) -> None:
    await connect().rank(QUERY, [*PASSAGES, PASSAGES[0], PASSAGES[1]])

    call, batches = call_and_batches(span_exporter)
    assert attribute(call, "nimrank.passages") == 7
    assert attribute(call, "nimrank.passages_sent") == 5
    assert sum(attribute(b, "nimrank.batch.passages") for b in batches) == 5


async def test_a_retried_batch_shows_its_retries(
    connect: Callable[..., EitherClient],
    ranking_server: RankingServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    ranking_server.inject_fault(503, headers={"Retry-After": "0"}, times=1)

    await connect().rank(QUERY, PASSAGES)

    _, batches = call_and_batches(span_exporter)
    retried = [b for b in batches if attribute(b, "nimrank.retries") > 0]
    assert len(retried) == 1
    (batch,) = retried
    assert attribute(batch, "nimrank.retries") == 1
    assert attribute(batch, "nimrank.attempts") == 2
    assert attribute(batch, "http.response.status_code") == 200
    assert batch.status.status_code is StatusCode.UNSET
    (event,) = batch.events
    assert event.name == "nimrank.retry"
    assert dict(event.attributes or {}) == {
        "nimrank.retry": 1,
        "error.type": "ServerError",
        "http.response.status_code": 503,
        "nimrank.retry.wait_seconds": 0.0,
    }
    assert sum(attribute(b, "nimrank.retries") for b in batches) == 1


async def test_a_failed_call_marks_its_spans_error_with_the_error_class(
    connect: Callable[..., EitherClient],
    ranking_server: RankingServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    ranking_server.inject_fault(500, times=10)
    client = connect(max_retries=2)

    with pytest.raises(ServerError):
        await client.rank(QUERY, PASSAGES[:2])  # one batch

    call, (batch,) = call_and_batches(span_exporter)
    for span in (call, batch):
        assert span.status.status_code is StatusCode.ERROR
        assert attribute(span, "error.type") == "ServerError"
        (exception,) = [e for e in span.events if e.name == "exception"]
        assert str(dict(exception.attributes or {})["exception.type"]).endswith("ServerError")
    assert attribute(batch, "http.response.status_code") == 500
    assert attribute(batch, "nimrank.retries") == 2
    assert attribute(batch, "nimrank.attempts") == 3
    # The error's message shows the URL: masked, as everywhere else.
    assert SECRET not in everything_recorded(span_exporter.get_finished_spans())


async def test_an_error_that_is_not_retried_leaves_one_attempt(
    connect: Callable[..., EitherClient],
    ranking_server: RankingServer,
    span_exporter: InMemorySpanExporter,
) -> None:
    ranking_server.inject_fault(401, times=10)

    with pytest.raises(AuthenticationError):
        await connect().rank(QUERY, PASSAGES)

    call, batches = call_and_batches(span_exporter)
    assert attribute(call, "error.type") == "AuthenticationError"
    # The async client cancels the batches still running when one has failed.
    cancelled = [b for b in batches if (b.attributes or {}).get("nimrank.cancelled")]
    failed = [b for b in batches if b not in cancelled]
    assert failed
    for batch in failed:
        assert batch.status.status_code is StatusCode.ERROR
        assert attribute(batch, "error.type") == "AuthenticationError"
        assert attribute(batch, "nimrank.attempts") == 1
        assert attribute(batch, "http.response.status_code") == 401
    for batch in cancelled:
        assert batch.status.status_code is StatusCode.UNSET
        assert "error.type" not in (batch.attributes or {})


async def test_the_call_span_is_a_child_of_the_applications_span(
    connect: Callable[..., EitherClient], span_exporter: InMemorySpanExporter
) -> None:
    with trace.get_tracer("the-app").start_as_current_span("handle request"):
        await connect().rank(QUERY, PASSAGES)

    (app,) = named(span_exporter.get_finished_spans(), "handle request")
    call, batches = call_and_batches(span_exporter)
    assert_children_of(app, [call])
    assert_children_of(call, batches)


async def test_concurrent_async_calls_keep_their_own_batches(
    ranking_server: RankingServer, span_exporter: InMemorySpanExporter
) -> None:
    client = EitherClient("async", base_url=ranking_server.url, model=TEST_MODEL, max_batch_size=1)
    tracer = trace.get_tracer("the-app")

    async def ranked_under(name: str) -> None:
        with tracer.start_as_current_span(name):
            await client.rank(QUERY, PASSAGES)

    try:
        await asyncio.gather(ranked_under("first"), ranked_under("second"))
    finally:
        await client.close()

    assert_own_batches(span_exporter, ["first", "second"])


def test_sync_calls_from_several_threads_keep_their_own_batches(
    ranking_server: RankingServer, span_exporter: InMemorySpanExporter
) -> None:
    # Both calls share the client's worker threads: each batch must carry the
    # context of the call that submitted it, not of the one before on that thread.
    tracer = trace.get_tracer("the-app")
    with RankingClient(
        base_url=ranking_server.url, model=TEST_MODEL, max_batch_size=1, max_concurrency=2
    ) as client:

        def ranked_under(name: str) -> None:
            with tracer.start_as_current_span(name):
                client.rank(QUERY, PASSAGES)

        with ThreadPoolExecutor(2) as callers:
            list(callers.map(ranked_under, ["first", "second"]))

        # The worker threads are left without a call's context.
        left = client._executor().submit(trace.get_current_span).result()
        assert not left.get_span_context().is_valid

    assert_own_batches(span_exporter, ["first", "second"])


def assert_own_batches(exporter: InMemorySpanExporter, names: Sequence[str]) -> None:
    spans = exporter.get_finished_spans()
    calls = named(spans, "nimrank.rank")
    batches = named(spans, "nimrank.batch")
    assert len(calls) == len(names)
    assert len(batches) == len(names) * len(PASSAGES)
    for name in names:
        (app,) = named(spans, name)
        (call,) = [c for c in calls if c.parent and c.parent.span_id == app.context.span_id]
        mine = [b for b in batches if b.parent and b.parent.span_id == call.context.span_id]
        assert len(mine) == len(PASSAGES)
        assert_children_of(call, mine)


async def test_without_opentelemetry_ranking_works_and_makes_no_span(
    connect: Callable[..., EitherClient],
    span_exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules: importing it fails, as if it were not installed.
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.setitem(sys.modules, name, None)

    ranked = await connect().rank(QUERY, PASSAGES)

    assert sorted(p.index for p in ranked) == list(range(len(PASSAGES)))
    assert span_exporter.get_finished_spans() == ()


def run_python(code: str) -> Any:
    """Run ``code`` in a fresh interpreter; what it printed last, as JSON."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.splitlines()[-1])


def test_nimrank_never_imports_opentelemetry_itself(ranking_server: RankingServer) -> None:
    result = run_python(f"""
        import json, sys
        import nimrank
        with nimrank.RankingClient(base_url={ranking_server.url!r}, model="m") as client:
            ranked = client.rank("memory", ["memory bandwidth", "a cake"])
        print(json.dumps([len(ranked), "opentelemetry" in sys.modules]))
    """)

    assert result == [2, False]


def test_with_no_tracer_provider_configured_nothing_breaks(ranking_server: RankingServer) -> None:
    # The API imported, no SDK provider set: spans are made, and record nothing.
    result = run_python(f"""
        import asyncio, json
        import opentelemetry.trace
        import nimrank
        from nimrank.tracing import tracing_enabled

        async def main():
            async with nimrank.AsyncRankingClient(
                base_url={ranking_server.url!r}, model="m", max_batch_size=1
            ) as client:
                return await client.rank("memory", ["memory bandwidth", "a cake"])

        with nimrank.RankingClient(
            base_url={ranking_server.url!r}, model="m", max_batch_size=1
        ) as client:
            ranked = client.rank("memory", ["memory bandwidth", "a cake"])
        print(json.dumps([tracing_enabled(), len(ranked), len(asyncio.run(main()))]))
    """)

    assert result == [True, 2, 2]


async def test_each_batch_of_a_fleet_names_the_replica_that_answered_it(
    ranking_server: RankingServer, make_client: MakeClient, span_exporter: InMemorySpanExporter
) -> None:
    with RankingServer() as other:
        urls = [ranking_server.url, f"{other.url}?api-key={SECRET}"]
        expected = {f"{ranking_server.url}/ranking", f"{other.url}/ranking?api-key=***"}
        client = make_client(base_url=urls, max_batch_size=1, max_concurrency=1)
        await client.rank("GPU memory", PASSAGES)
    _call, batches = call_and_batches(span_exporter)
    assert {attribute(span, "url.full") for span in batches} == expected
    assert SECRET not in everything_recorded(span_exporter.get_finished_spans())
