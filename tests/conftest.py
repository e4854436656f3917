"""Fixtures shared by the whole suite: the embedded server, the fault server,
instant retries, clients of either kind (sync/async) for either protocol,
handlers watching LlamaIndex's instrumentation, and OpenTelemetry's finished spans."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import pytest

import faultserver
from nimrank import RetryPolicy
from nimrank.server import RankingServer

#: The model tests name, so that only the discovery tests ask a server for /v1/models.
TEST_MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"

if TYPE_CHECKING:
    from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from llama_index_events import Recorder

# Haystack reads this when it is first imported (never by this file): no
# telemetry from tests, whichever test module imports it first.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")


@pytest.fixture
def ranking_server() -> Iterator[RankingServer]:
    """The embedded NIM-compatible server on a free loopback port, stopped afterwards."""
    with RankingServer() as server:
        yield server


@pytest.fixture
def fast_retries() -> RetryPolicy:
    """A retry policy that never sleeps, so retry tests run instantly."""
    return RetryPolicy(initial_delay=0, max_delay=0, max_retry_after=0)


# -- the fault server, and one suite for both clients (tests/faultserver.py) --------


@pytest.fixture
def fault_server() -> Iterator[faultserver.FaultServer]:
    """A started fault server: honest until a test scripts faults with ``add_rule``."""
    with faultserver.FaultServer() as server:
        yield server


@pytest.fixture(params=["sync", "async"])
def client_kind(request: pytest.FixtureRequest) -> str:
    """Runs the test once with ``RankingClient`` and once with ``AsyncRankingClient``."""
    return str(request.param)


@pytest.fixture(params=["nim", "cohere"])
def wire_protocol(request: pytest.FixtureRequest) -> str:
    """Runs the test once per wire protocol, NIM ``/ranking`` and Cohere ``/rerank``."""
    return str(request.param)


@pytest.fixture
async def make_client(client_kind: str) -> AsyncIterator[Callable[..., faultserver.EitherClient]]:
    """Build clients of the test's kind (``EitherClient``); all are closed afterwards."""
    made: list[faultserver.EitherClient] = []

    def make(**options: object) -> faultserver.EitherClient:
        # A model named, so that no test but the discovery ones asks /v1/models first.
        client = faultserver.EitherClient(client_kind, **{"model": TEST_MODEL, **options})
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


# -- LlamaIndex instrumentation (tests/llama_index_events.py) ----------------------
# llama_index is imported inside these fixtures, not at the top of this file: every
# test loads this file, and only the LlamaIndex tests need llama_index.


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A ``Recorder`` on LlamaIndex's root dispatcher: every event of the test."""
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]

    from llama_index_events import Recorder

    root = get_dispatcher()
    handler = Recorder()
    root.add_event_handler(handler)
    yield handler
    root.event_handlers.remove(handler)


@pytest.fixture
def spans() -> Iterator[SimpleSpanHandler]:
    """A ``SimpleSpanHandler`` on LlamaIndex's root dispatcher: every span of the test."""
    from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
    from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler

    root = get_dispatcher()
    handler = SimpleSpanHandler()
    root.add_span_handler(handler)
    yield handler
    root.span_handlers.remove(handler)


# -- OpenTelemetry (nimrank.tracing) --------------------------------------------------
# Imported inside the fixture, as llama_index above: nimrank makes spans only once
# opentelemetry.trace is imported, and the tests that do not trace must not make it so.


@functools.cache
def _session_span_exporter() -> InMemorySpanExporter:
    """An in-memory exporter behind the global tracer provider (which can be set only once)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
def span_exporter() -> Iterator[InMemorySpanExporter]:
    """Every OpenTelemetry span finished during the test, from the global tracer provider."""
    exporter = _session_span_exporter()
    exporter.clear()
    yield exporter
    exporter.clear()
