"""NIMRanker in real Haystack pipelines, against the embedded ranking server.

Offline: an InMemoryDocumentStore and a BM25 retriever feed the ranker, which
talks to ``nimrank.server.RankingServer`` on loopback. The server's lexical
scorer depends only on the (query, passage) pair, so every expected ranking
and score below is computed with ``nimrank.server.scoring.score``.
"""

from __future__ import annotations

import os

# Haystack decides on telemetry when it is imported; tests never phone home.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

import asyncio
import base64
import math
import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.core.errors import PipelineRuntimeError
from haystack.dataclasses import ByteStream
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_integrations.components.rankers.nimrank import NIMRanker
from leaks import no_unclosed_connections
from nimrank import BadRequestError, ServerError
from nimrank.server import DEFAULT_MODEL_ID, RankingServer, score

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

QUERY = "GPU memory bandwidth"

CORPUS = [
    "The H100 SXM GPU delivers 3.35 TB/s of memory bandwidth.",
    "A100 GPU memory bandwidth reaches 2 TB/s with HBM2e.",
    "GPU clusters need fast networking between nodes.",
    "Memory bandwidth limits many GPU workloads such as inference.",
    "The L4 GPU is designed for video and inference.",
    "HBM3 memory gives the GPU more bandwidth than GDDR6.",
    "CPU memory bandwidth is far lower than GPU memory bandwidth.",
    "Grace Hopper links the CPU and the GPU at 900 GB/s.",
    "Tensor cores accelerate matrix maths on the GPU.",
    "A GPU with more memory can hold larger models.",
    "Bandwidth between GPUs matters for tensor parallelism.",
    "NVLink raises GPU to GPU bandwidth well above PCIe.",
    "Gaming GPUs use GDDR memory rather than HBM.",
    "GPU memory is often the bottleneck for long contexts.",
    "The GPU driver version must match the CUDA toolkit.",
    "Power draw of a GPU rises with memory clock.",
    "Memory bandwidth per GPU grew with every generation.",
    "Inference servers batch requests to keep the GPU busy.",
    "Rome is the capital of Italy.",
    "A recipe for bread needs flour, water and salt.",
]


def corpus_documents() -> list[Document]:
    return [
        Document(content=text, meta={"title": f"Doc {number}", "number": number})
        for number, text in enumerate(CORPUS)
    ]


def rag_pipeline(ranker: NIMRanker, documents: list[Document] | None = None) -> Pipeline:
    store = InMemoryDocumentStore()
    store.write_documents(documents if documents is not None else corpus_documents())
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=50))
    pipeline.add_component("ranker", ranker)
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def pipeline_inputs(query: str = QUERY) -> dict[str, Any]:
    return {"retriever": {"query": query}, "ranker": {"query": query}}


def expected_ranking(query: str, candidates: list[Document], top_k: int) -> list[Document]:
    """Best first by the server's score of the content; ties in candidate order."""
    return sorted(candidates, key=lambda d: -score(query, d.content or ""))[:top_k]


def ranking_requests(server: RankingServer, path: str = "/v1/ranking") -> list[Any]:
    return [request for request in server.requests if request.path == path]


def sent_texts(server: RankingServer) -> list[str]:
    return [p["text"] for r in ranking_requests(server) for p in r.body["passages"]]


# -- Pipeline.run ------------------------------------------------------------------------


def test_pipeline_reranks_more_candidates_than_one_batch_holds(
    ranking_server: RankingServer,
) -> None:
    ranker = NIMRanker(api_url=ranking_server.url, top_k=5, max_batch_size=4)
    pipeline = rag_pipeline(ranker)

    result = pipeline.run(pipeline_inputs(), include_outputs_from={"retriever"})
    pipeline.close()

    candidates = result["retriever"]["documents"]
    assert len(candidates) > 3 * 4  # several batches' worth
    requests = ranking_requests(ranking_server)
    assert len(requests) == math.ceil(len(candidates) / 4)
    assert all(len(request.body["passages"]) <= 4 for request in requests)
    assert sorted(sent_texts(ranking_server)) == sorted(d.content for d in candidates)

    ranked = result["ranker"]["documents"]
    expected = expected_ranking(QUERY, candidates, 5)
    assert [d.id for d in ranked] == [d.id for d in expected]
    assert [d.score for d in ranked] == pytest.approx(
        [score(QUERY, d.content or "") for d in expected]
    )
    # The retriever's BM25 scores are left on its own Documents.
    retrieved = {d.id: d.score for d in candidates}
    assert all(retrieved[d.id] != d.score for d in ranked)


def test_pipeline_yaml_round_trip_keeps_every_parameter_and_runs(
    ranking_server: RankingServer,
) -> None:
    ranker = NIMRanker(
        api_url=ranking_server.url,
        top_k=3,
        truncate="END",
        query_prefix="question: ",
        document_prefix="passage: ",
        meta_fields_to_embed=["title"],
        embedding_separator=" | ",
        timeout=30.0,
        max_batch_size=4,
        max_concurrency=2,
        max_retries=1,
        score_threshold=-4.0,
    )
    pipeline = rag_pipeline(ranker)
    before = pipeline.run(pipeline_inputs())["ranker"]["documents"]
    pipeline.close()

    yaml_text = pipeline.dumps()
    assert "NIMRanker" in yaml_text
    loaded = Pipeline.loads(yaml_text)
    loaded_ranker = loaded.get_component("ranker")
    assert isinstance(loaded_ranker, NIMRanker)
    assert loaded_ranker is not ranker
    assert loaded_ranker.to_dict() == ranker.to_dict()

    ranking_server.reset()
    after = loaded.run(pipeline_inputs())["ranker"]["documents"]
    loaded.close()
    assert after == before
    assert len(after) == 3
    assert ranking_requests(ranking_server)  # the loaded pipeline really asked the server


def test_yaml_holds_the_key_reference_not_the_key(
    ranking_server: RankingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_key = "nvapi-fake-key-for-tests-only"
    monkeypatch.setenv("NVIDIA_API_KEY", fake_key)
    pipeline = rag_pipeline(NIMRanker(api_url=ranking_server.url))
    pipeline.run(pipeline_inputs())
    pipeline.close()
    yaml_text = pipeline.dumps()
    assert fake_key not in yaml_text
    assert "NVIDIA_API_KEY" in yaml_text
    # ...and the key was sent to the server all the same.
    assert ranking_requests(ranking_server)[0].authorization_is(f"Bearer {fake_key}")


# -- Pipeline.run_async ----------------------------------------------------------------------


async def test_pipeline_run_async_ranks_through_run_async_alone(
    ranking_server: RankingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_sync_run(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Pipeline.run_async must await NIMRanker.run_async")

    ranker = NIMRanker(api_url=ranking_server.url, top_k=5, max_batch_size=4)
    pipeline = rag_pipeline(ranker)
    monkeypatch.setattr(NIMRanker, "run", no_sync_run)
    try:
        result = await pipeline.run_async(pipeline_inputs(), include_outputs_from={"retriever"})
    finally:
        await pipeline.close_async()

    candidates = result["retriever"]["documents"]
    assert len(ranking_requests(ranking_server)) == math.ceil(len(candidates) / 4) > 1
    expected = expected_ranking(QUERY, candidates, 5)
    assert [d.id for d in result["ranker"]["documents"]] == [d.id for d in expected]


def test_one_loaded_pipeline_runs_async_in_two_event_loops_and_closes_each(
    ranking_server: RankingServer,
) -> None:
    def run_in_two_loops() -> tuple[list[Document], list[Document]]:
        pipeline = Pipeline.loads(rag_pipeline(NIMRanker(api_url=ranking_server.url)).dumps())

        async def run_and_close() -> list[Document]:
            try:
                result = await pipeline.run_async(pipeline_inputs())
            finally:
                await pipeline.close_async()
            return list(result["ranker"]["documents"])

        # Each asyncio.run is a new loop: the first loop's connections are unusable
        # in the second, and can only be closed from the first.
        return asyncio.run(run_and_close()), asyncio.run(run_and_close())

    with no_unclosed_connections():
        first, second = run_in_two_loops()  # the pipeline is garbage once it returns
    assert first == second
    assert len(first) == 5
    assert len(ranking_requests(ranking_server)) == 2


# -- what the server sees ----------------------------------------------------------------------


def test_prefixes_meta_fields_and_truncate_reach_the_server(ranking_server: RankingServer) -> None:
    ranker = NIMRanker(
        api_url=ranking_server.url,
        truncate="END",
        query_prefix="question: ",
        document_prefix="passage: ",
        meta_fields_to_embed=["title", "year", "absent"],
        embedding_separator=" | ",
    )
    documents = [
        Document(content="Berlin is the capital.", meta={"title": "Germany", "year": 1990}),
        Document(content="Paris is the capital.", meta={"title": ""}),
    ]
    ranker.run("capital of Germany", documents)
    ranker.close()

    (request,) = ranking_requests(ranking_server)
    assert request.body == {
        # model=None: the one the server lists, as NvidiaRanker does.
        "model": DEFAULT_MODEL_ID,
        "query": {"text": "question: capital of Germany"},
        "passages": [
            {"text": "passage: Germany | 1990 | Berlin is the capital."},
            {"text": "passage: Paris is the capital."},
        ],
        "truncate": "END",
    }


def test_documents_without_content_are_never_sent_and_rank_last(
    ranking_server: RankingServer,
) -> None:
    documents = [
        Document(content=None, meta={"title": "GPU memory bandwidth"}),
        Document(content="Rome is the capital of Italy."),
        Document(content=""),
        Document(content="GPU memory bandwidth is 3 TB/s."),
    ]
    ranker = NIMRanker(api_url=ranking_server.url, top_k=10, meta_fields_to_embed=["title"])
    ranked = ranker.run(QUERY, documents)["documents"]
    ranker.close()

    assert sent_texts(ranking_server) == [
        "Rome is the capital of Italy.",
        "GPU memory bandwidth is 3 TB/s.",
    ]
    assert [d.content for d in ranked] == [
        "GPU memory bandwidth is 3 TB/s.",
        "Rome is the capital of Italy.",
        None,
        "",
    ]
    assert [d.score for d in ranked[2:]] == [None, None]
    assert all(isinstance(d.score, float) for d in ranked[:2])


def test_only_documents_without_content_send_no_request(ranking_server: RankingServer) -> None:
    ranker = NIMRanker(api_url=ranking_server.url)
    ranked = ranker.run(QUERY, [Document(content=None, meta={"a": 1}), Document(content=" ")])
    ranker.close()
    assert ranking_requests(ranking_server) == []
    assert [d.score for d in ranked["documents"]] == [None, None]


def test_with_sigmoid_scores_a_threshold_still_drops_documents_without_content(
    ranking_server: RankingServer,
) -> None:
    documents = [Document(content=None), Document(content="Rome is the capital of Italy.")]
    ranker = NIMRanker(api_url=ranking_server.url, score_transform="sigmoid", score_threshold=0.0)
    ranked = ranker.run(QUERY, documents)["documents"]
    ranker.close()
    assert [d.content for d in ranked] == ["Rome is the capital of Italy."]
    assert ranked[0].score is not None
    assert 0.0 < ranked[0].score < 0.5  # a sigmoid of the no-match logit


async def test_no_documents_send_no_request(ranking_server: RankingServer) -> None:
    ranker = NIMRanker(api_url=ranking_server.url)
    assert ranker.run(QUERY, []) == {"documents": []}
    assert await ranker.run_async(QUERY, []) == {"documents": []}
    assert ranking_server.requests == []


def test_duplicate_documents_are_sent_once_and_returned_once(
    ranking_server: RankingServer,
) -> None:
    gpu = Document(content="GPU memory bandwidth is 3 TB/s.")
    rome = Document(content="Rome is the capital of Italy.")
    ranker = NIMRanker(api_url=ranking_server.url)
    ranked = ranker.run(QUERY, [gpu, rome, Document(content=gpu.content), gpu])["documents"]
    ranker.close()
    assert sent_texts(ranking_server) == [gpu.content, rome.content]
    assert [d.id for d in ranked] == [gpu.id, rome.id]


def test_threshold_zero_given_at_run_replaces_the_init_threshold(
    ranking_server: RankingServer,
) -> None:
    documents = corpus_documents()
    ranker = NIMRanker(api_url=ranking_server.url, top_k=50, score_threshold=1000.0)
    assert ranker.run(QUERY, documents)["documents"] == []

    ranked = ranker.run(QUERY, documents, score_threshold=0.0)["documents"]
    ranker.close()
    kept = {d.content for d in ranked}
    assert kept == {text for text in CORPUS if score(QUERY, text) >= 0.0}
    assert "Rome is the capital of Italy." not in kept  # the scorer's no-match logit is < 0


def test_cohere_protocol_ranks_through_rerank_the_same_way(ranking_server: RankingServer) -> None:
    documents = corpus_documents()
    nim = NIMRanker(api_url=ranking_server.url, top_k=4, max_batch_size=8)
    cohere = NIMRanker(api_url=ranking_server.url, top_k=4, max_batch_size=8, protocol="cohere")
    by_nim = nim.run(QUERY, documents)["documents"]
    by_cohere = cohere.run(QUERY, documents)["documents"]
    nim.close()
    cohere.close()
    assert ranking_requests(ranking_server, "/v1/rerank")
    assert [d.id for d in by_cohere] == [d.id for d in by_nim]


# -- errors ----------------------------------------------------------------------------------------


def test_a_server_error_propagates_as_the_clients_typed_error(
    ranking_server: RankingServer,
) -> None:
    ranking_server.inject_fault(503, times=1)
    ranker = NIMRanker(api_url=ranking_server.url, max_retries=0)
    with pytest.raises(ServerError) as caught:
        ranker.run(QUERY, corpus_documents())
    ranker.close()
    assert caught.value.status_code == 503


async def test_a_bad_request_propagates_from_run_async(ranking_server: RankingServer) -> None:
    ranking_server.inject_fault(400, times=1)
    ranker = NIMRanker(api_url=ranking_server.url)
    try:
        with pytest.raises(BadRequestError) as caught:
            await ranker.run_async(QUERY, corpus_documents())
    finally:
        await ranker.close_async()
    assert caught.value.status_code == 400
    assert len(ranking_requests(ranking_server)) == 1  # a 400 is not retried


def test_a_failing_ranker_fails_the_pipeline_with_the_typed_error(
    ranking_server: RankingServer,
) -> None:
    ranking_server.inject_fault(503, times=1)
    pipeline = rag_pipeline(NIMRanker(api_url=ranking_server.url, max_retries=0))
    with pytest.raises(PipelineRuntimeError) as caught:
        pipeline.run(pipeline_inputs())
    pipeline.close()
    assert isinstance(caught.value.__cause__, ServerError)
    assert caught.value.__cause__.status_code == 503


# -- the example -----------------------------------------------------------------------------------


def test_the_example_runs_offline_and_ranks_h100_first(capsys: pytest.CaptureFixture[str]) -> None:
    example = Path(__file__).parents[2] / "examples" / "haystack_pipeline.py"
    runpy.run_path(str(example), run_name="__main__")
    output = capsys.readouterr().out
    after = output.split("after NIMRanker:")[1]
    assert after.splitlines()[1].lstrip().startswith("1. [score")
    assert "H100 SXM memory bandwidth" in after.splitlines()[1]
    assert "same top 3: yes" in output


def test_available_models_lists_what_the_service_serves(ranking_server: RankingServer) -> None:
    ranker = NIMRanker(api_url=ranking_server.url)
    assert ranker.available_models() == [DEFAULT_MODEL_ID, VLM]
    ranker.close()


def test_nvidia_api_url_alone_names_the_service_even_with_a_key_set(
    ranking_server: RankingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-fake-key-for-tests-only")
    for name in ("NVIDIA_BASE_URL", "NVIDIA_API_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NVIDIA_API_URL", ranking_server.url)
    ranker = NIMRanker(model="m")
    ranker.run("capital of Germany", [Document(content="Berlin is the capital.")])
    ranker.close()
    assert len(ranking_requests(ranking_server)) == 1


VLM = "nvidia/llama-nemotron-rerank-vl-1b-v2"


def test_image_documents_are_ranked_by_a_vlm_through_a_pipeline() -> None:
    image = "data:image/png;base64," + base64.b64encode(b"a picture of berlin").decode()
    documents = [
        Document(content="Paris is the capital of France."),
        Document(meta={"image": image}),
        Document(
            content="Berlin is the capital of Germany.",
            blob=ByteStream(b"a map", mime_type="image/png"),
        ),
    ]
    with RankingServer(model=VLM) as server:
        ranker = NIMRanker(model=VLM, api_url=server.url, top_k=3)
        ranked = ranker.run("capital of Germany", documents)["documents"]
        ranker.close()
        (request,) = ranking_requests(server)
    passages = request.body["passages"]
    assert passages[1] == {"image": image}  # an image-only passage sends no text
    assert passages[2]["text"] == "Berlin is the capital of Germany."
    assert passages[2]["image"].startswith("data:image/png;base64,")
    assert all(document.score is not None for document in ranked)


def test_api_key_none_sends_no_key_even_with_one_in_the_environment(
    ranking_server: RankingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As NvidiaRanker: None means "this service takes no key", not "read NVIDIA_API_KEY".
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-fake-key-for-tests-only")
    ranker = NIMRanker(api_url=ranking_server.url, model="m", api_key=None)
    ranker.run("capital of Germany", [Document(content="Berlin is the capital.")])
    ranker.close()
    (request,) = ranking_requests(ranking_server)
    assert "authorization" not in request.headers


# -- tracing -------------------------------------------------------------------------


@pytest.fixture
def haystack_traced(span_exporter: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """Haystack's OpenTelemetry tracer (opentelemetry-haystack) on for the test."""
    opentelemetry_tracing = pytest.importorskip("haystack_integrations.tracing.opentelemetry")
    from haystack.tracing.tracer import disable_tracing, enable_tracing
    from opentelemetry import trace

    enable_tracing(opentelemetry_tracing.OpenTelemetryTracer(trace.get_tracer("haystack")))
    yield span_exporter
    disable_tracing()


@pytest.mark.parametrize("run", ["run", "run_async"])
async def test_nimrank_spans_are_children_of_the_rankers_haystack_span(
    run: str, ranking_server: RankingServer, haystack_traced: InMemorySpanExporter
) -> None:
    ranker = NIMRanker(
        api_url=ranking_server.url, model=DEFAULT_MODEL_ID, top_k=3, max_batch_size=8
    )
    pipeline = rag_pipeline(ranker)
    outputs = {"retriever"}

    if run == "run":
        result = pipeline.run(pipeline_inputs(), include_outputs_from=outputs)
        pipeline.close()
    else:
        result = await pipeline.run_async(pipeline_inputs(), include_outputs_from=outputs)
        await pipeline.close_async()

    spans = haystack_traced.get_finished_spans()
    (component,) = [
        s
        for s in spans
        if s.name == "haystack.component.run"
        and (s.attributes or {}).get("haystack.component.name") == "ranker"
    ]
    (call,) = [s for s in spans if s.name == "nimrank.rank"]
    batches = [s for s in spans if s.name == "nimrank.batch"]
    assert call.parent is not None
    assert component.context is not None
    assert call.parent.span_id == component.context.span_id
    assert len(batches) == math.ceil(len(result["retriever"]["documents"]) / 8) > 1
    assert all(b.parent is not None and b.parent.span_id == call.context.span_id for b in batches)
