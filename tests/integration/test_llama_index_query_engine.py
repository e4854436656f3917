"""NIMRerank inside a real LlamaIndex query engine, offline.

A ``VectorStoreIndex`` built from documents with LlamaIndex's ``MockEmbedding``
answers with ``MockLLM`` (which echoes its prompt, so the answer shows which
nodes reached the LLM); ``NIMRerank`` sits in ``node_postprocessors`` and talks
to the embedded server (honest, or with injected faults) or a cassette of the
hosted catalog.
Every test runs with connections outside loopback refused.
"""

from __future__ import annotations

import logging
import math
import socket
from typing import Any

import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import Response
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, TextNode

from cassette_replay import CASSETTES, REPLAY
from llama_index.postprocessor.nimrank import NIMRerank
from llama_index_events import Recorder
from nimrank import RetryPolicy, ServerError
from nimrank.server import RankingServer, score
from seed_examples import NVIDIA_RERANK_PASSAGES, QUERY

CANDIDATES = 10
MAX_BATCH_SIZE = 4  # 10 candidates -> batches of 4, 4 and 2
MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"  # named: no test here asks /v1/models
TOP_N = 3

# Ten short documents with plainly different relevance to QUERY.
TEXTS = [
    "Accelerated servers with H100 SXM deliver 3 terabytes per second of GPU memory bandwidth.",
    "The H100 GPU pairs with the Grace CPU over a 900GB/s chip-to-chip interconnect.",
    "A100 80GB debuts over 2 terabytes per second of memory bandwidth.",
    "Bananas are a good source of potassium.",
    "H100 NVL offers 3.9 TB/s of memory bandwidth per GPU.",
    "The office kitchen closes at six.",
    "GPU memory bandwidth limits large model inference.",
    "Tennis balls are yellow.",
    "SXM modules mount directly on the HGX baseboard.",
    "Our cafeteria serves soup on Fridays.",
]

HOSTED_CASSETTE = "llama_index_hosted_rerank.yaml"
FAKE_KEY = "nvapi-fake-llama-index-cassette-key"  # not a real key


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse any connection off this machine: nothing here may need the network."""
    connect = socket.socket.connect

    def guarded(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise AssertionError(f"a test tried to connect to {address!r}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


@pytest.fixture
def index() -> VectorStoreIndex:
    documents = [
        Document(text=text, metadata={"doc": f"doc-{i}"}, doc_id=f"doc-{i}")
        for i, text in enumerate(TEXTS)
    ]
    return VectorStoreIndex.from_documents(documents, embed_model=MockEmbedding(embed_dim=8))


def engine_for(
    index: VectorStoreIndex, reranker: NIMRerank, callbacks: CallbackManager | None = None
) -> BaseQueryEngine:
    return RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=CANDIDATES),
        llm=MockLLM(),
        node_postprocessors=[reranker],
        callback_manager=callbacks,  # the engine hands it to its postprocessors
    )


def ranking_requests(server: RankingServer) -> list[Any]:
    return [request for request in server.requests if request.path == "/v1/ranking"]


async def ask(engine: BaseQueryEngine, kind: str) -> Response:
    response = engine.query(QUERY) if kind == "sync" else await engine.aquery(QUERY)
    assert isinstance(response, Response)
    return response


def embed_text(item: NodeWithScore) -> str:
    return item.node.get_content(metadata_mode=MetadataMode.EMBED)


# -- the embedded server ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_query_engine_returns_the_reranked_nodes_with_our_scores(
    kind: str, index: VectorStoreIndex, ranking_server: RankingServer
) -> None:
    reranker = NIMRerank(
        base_url=ranking_server.url, model=MODEL, top_n=TOP_N, max_batch_size=MAX_BATCH_SIZE
    )
    candidates = index.as_retriever(similarity_top_k=CANDIDATES).retrieve(QUERY)
    assert len(candidates) == CANDIDATES

    response = await ask(engine_for(index, reranker), kind)

    best = sorted(candidates, key=lambda item: -score(QUERY, embed_text(item)))[:TOP_N]
    assert [item.node_id for item in response.source_nodes] == [item.node_id for item in best]
    for item in response.source_nodes:
        assert item.score == pytest.approx(score(QUERY, embed_text(item)))
    # Only the reranked nodes reached the LLM (MockLLM echoes its prompt).
    assert TEXTS[0] in str(response)
    assert TEXTS[3] not in str(response)
    await reranker.aclose()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_more_candidates_than_max_batch_size_are_batched_by_the_client(
    kind: str, index: VectorStoreIndex, ranking_server: RankingServer
) -> None:
    reranker = NIMRerank(
        base_url=ranking_server.url, model=MODEL, top_n=TOP_N, max_batch_size=MAX_BATCH_SIZE
    )

    await ask(engine_for(index, reranker), kind)

    batches = [request.body["passages"] for request in ranking_server.requests]
    assert len(batches) == math.ceil(CANDIDATES / MAX_BATCH_SIZE)
    assert all(len(batch) <= MAX_BATCH_SIZE for batch in batches)
    sent = sorted(passage["text"] for batch in batches for passage in batch)
    assert len(sent) == CANDIDATES
    # Each text carries its embedded metadata, as the embedding model saw it.
    assert all(text.startswith("doc: doc-") for text in sent)
    await reranker.aclose()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_the_rerank_is_visible_to_llama_index_instrumentation(
    kind: str,
    index: VectorStoreIndex,
    ranking_server: RankingServer,
    recorder: Recorder,
    spans: SimpleSpanHandler,
) -> None:
    reranker = NIMRerank(
        base_url=ranking_server.url, model=MODEL, top_n=TOP_N, max_batch_size=MAX_BATCH_SIZE
    )

    response = await ask(engine_for(index, reranker), kind)

    start, end = recorder.rerank_events()
    assert isinstance(start, ReRankStartEvent)
    assert isinstance(end, ReRankEndEvent)
    assert (len(start.nodes), start.top_n, start.model_name) == (
        CANDIDATES,
        TOP_N,
        reranker.model,
    )
    assert [n.node_id for n in end.nodes] == [n.node_id for n in response.source_nodes]
    # Both events belong to NIMRerank's span, which sits inside the query's span.
    rerank_span = next(s for s in spans.completed_spans if s.id_ == start.span_id)
    assert rerank_span.id_.startswith("NIMRerank.")
    assert end.span_id == rerank_span.id_
    assert rerank_span.parent_id is not None
    await reranker.aclose()


# -- injected faults -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_by_default_a_ranking_error_reaches_the_caller_typed(
    kind: str, index: VectorStoreIndex, ranking_server: RankingServer, recorder: Recorder
) -> None:
    ranking_server.inject_fault(503, path="/v1/ranking")
    reranker = NIMRerank(base_url=ranking_server.url, model=MODEL, top_n=TOP_N, max_retries=0)

    with pytest.raises(ServerError, match="503"):
        await ask(engine_for(index, reranker), kind)

    assert [type(event) for event in recorder.rerank_events()] == [ReRankStartEvent, ReRankEndEvent]
    await reranker.aclose()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_passthrough_answers_from_the_retrieval_order_when_the_ranker_fails(
    kind: str,
    index: VectorStoreIndex,
    ranking_server: RankingServer,
    recorder: Recorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ranking_server.inject_fault(503, path="/v1/ranking")
    reranker = NIMRerank(
        base_url=ranking_server.url,
        model=MODEL,
        top_n=TOP_N,
        max_retries=0,
        on_error="passthrough",
    )
    retrieved = index.as_retriever(similarity_top_k=CANDIDATES).retrieve(QUERY)

    with caplog.at_level(logging.WARNING):
        response = await ask(engine_for(index, reranker), kind)

    kept = [(item.node_id, item.score) for item in retrieved[:TOP_N]]
    assert [(item.node_id, item.score) for item in response.source_nodes] == kept
    assert "ServerError" in caplog.text
    assert "503" in caplog.text
    end = recorder.rerank_events()[-1]
    assert isinstance(end, ReRankEndEvent)
    assert [n.node_id for n in end.nodes] == [node_id for node_id, _ in kept]
    await reranker.aclose()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_passthrough_when_one_batch_of_several_fails_loses_no_node(
    kind: str, index: VectorStoreIndex, ranking_server: RankingServer
) -> None:
    ranking_server.inject_disconnect(path="/v1/ranking")
    reranker = NIMRerank(
        base_url=ranking_server.url,
        model=MODEL,
        top_n=None,
        max_batch_size=MAX_BATCH_SIZE,
        max_retries=0,
        on_error="passthrough",
    )
    retrieved = index.as_retriever(similarity_top_k=CANDIDATES).retrieve(QUERY)

    response = await ask(engine_for(index, reranker), kind)

    assert ranking_server.pending_faults == 0
    assert [item.node_id for item in response.source_nodes] == [i.node_id for i in retrieved]
    await reranker.aclose()


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_a_transient_failure_is_retried_by_the_client_and_the_nodes_reranked(
    kind: str, index: VectorStoreIndex, ranking_server: RankingServer, fast_retries: RetryPolicy
) -> None:
    ranking_server.inject_fault(503, path="/v1/ranking")
    reranker = NIMRerank(
        base_url=ranking_server.url,
        model=MODEL,
        top_n=TOP_N,
        max_retries=2,
        retry_policy=fast_retries,
        on_error="passthrough",
    )

    response = await ask(engine_for(index, reranker), kind)

    assert response.source_nodes[0].node.get_content() == TEXTS[0]
    assert [r.status for r in ranking_requests(ranking_server)] == [503, 200]
    await reranker.aclose()


# -- legacy callbacks ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_callback_tracing_sees_the_rerank_step_of_a_query_engine(
    kind: str, index: VectorStoreIndex, ranking_server: RankingServer
) -> None:
    debug = LlamaDebugHandler()
    reranker = NIMRerank(base_url=ranking_server.url, model=MODEL, top_n=TOP_N)

    response = await ask(engine_for(index, reranker, CallbackManager([debug])), kind)

    (start, end), *more = debug.get_event_pairs(CBEventType.RERANKING)
    assert more == []
    assert start.payload is not None
    assert end.payload is not None
    assert start.payload[EventPayload.QUERY_STR] == QUERY
    assert start.payload[EventPayload.MODEL_NAME] == MODEL
    assert start.payload[EventPayload.TOP_K] == TOP_N
    assert len(start.payload[EventPayload.NODES]) == CANDIDATES
    assert [n.node_id for n in end.payload[EventPayload.NODES]] == [
        n.node_id for n in response.source_nodes
    ]
    await reranker.aclose()


# -- the hosted catalog, from a cassette ------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_hosted_catalog_request_and_ranking_match_the_cassette(kind: str) -> None:
    reranker = NIMRerank(model="nvidia/llama-3.2-nv-rerankqa-1b-v2", api_key=FAKE_KEY, top_n=2)
    nodes = [
        NodeWithScore(
            node=TextNode(
                text=text,
                metadata={"file_path": f"/data/h100-{i}.pdf"},
                excluded_embed_metadata_keys=["file_path"],
            ),
            score=0.5,
        )
        for i, text in enumerate(NVIDIA_RERANK_PASSAGES)
    ]

    with REPLAY.use_cassette(HOSTED_CASSETTE) as cassette:
        if kind == "sync":
            ranked = reranker.postprocess_nodes(nodes, query_str=QUERY)
        else:
            ranked = await reranker.apostprocess_nodes(nodes, query_str=QUERY)

    assert cassette.all_played
    assert [(item.node_id, item.score) for item in ranked] == [
        (nodes[2].node_id, 6.828125),
        (nodes[0].node_id, -1.564453125),
    ]
    await reranker.aclose()


def test_cassette_holds_no_credentials() -> None:
    text = (CASSETTES / HOSTED_CASSETTE).read_text(encoding="utf-8")
    assert text.startswith("# Hand-written cassette")  # provenance first
    for secret in (FAKE_KEY, "nvapi-", "Bearer", "uthorization:"):
        assert secret not in text
