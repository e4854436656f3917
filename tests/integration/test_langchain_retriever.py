"""``NIMRerank`` inside LangChain retrievers, against the embedded server, offline.

The base retriever is langchain-core's ``InMemoryVectorStore`` with
``DeterministicFakeEmbedding``: it returns an arbitrary (but repeatable) set of
candidates, more than one batch of them, and the reranker must pick the best
``top_n`` of those candidates by the server's score. The embedded server's
lexical score depends only on the (query, passage) pair, so every expected
ranking is computed here with ``nimrank.server.score``.

``ContextualCompressionRetriever`` is LangChain's (``langchain-classic``: since
LangChain 1.0 the ``langchain`` package no longer has retrievers).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import pickle
import runpy
import warnings
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore

from conftest import TEST_MODEL
from langchain_nimrank import NIMRerank
from leaks import no_unclosed_connections
from nimrank import BadRequestError
from nimrank.server import VLM_MODEL_ID, RankingServer, score, sigmoid

QUERY = "What is the GPU memory bandwidth of H100 SXM?"
TOPIC = ("GPU", "memory", "bandwidth", "H100")
FILLER = ("cake", "river", "window", "garden", "violin", "planet", "coffee", "ladder")
CANDIDATES = 20  # what the vector store hands the reranker
BATCH = 6  # -> 4 ranking requests per retrieval
TOP_N = 4
FAKE_KEY = "nvapi-fake-langchain-test-key-not-real"
VLM = "nvidia/llama-nemotron-rerank-vl-1b-v2"
IMAGE = "data:image/png;base64,iVBORw0KGgo="

Made = Callable[..., NIMRerank]


def corpus(size: int) -> list[Document]:
    """Distinct passages with every mix of topic words, so the scores differ."""
    documents = []
    for i in range(size):
        hits = [word for bit, word in enumerate(TOPIC) if (i >> bit) & 1]
        filler = [FILLER[(5 * i + j) % len(FILLER)] for j in range(2 + i % 4)]
        text = f"note {i}: " + " ".join(hits + filler)
        documents.append(Document(page_content=text, metadata={"note": i}, id=f"note-{i}"))
    return documents


@pytest.fixture
def base_retriever() -> BaseRetriever:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=64))
    store.add_documents(corpus(48))
    return store.as_retriever(search_kwargs={"k": CANDIDATES})


@pytest.fixture
async def make_reranker(ranking_server: RankingServer) -> AsyncIterator[Made]:
    """Build rerankers for the embedded server; all are closed afterwards."""
    made: list[NIMRerank] = []

    def make(**options: Any) -> NIMRerank:
        options.setdefault("base_url", ranking_server.url)
        # A model named: only the discovery tests ask the server for /v1/models.
        options.setdefault("model", TEST_MODEL)
        reranker = NIMRerank(**options)
        made.append(reranker)
        return reranker

    yield make
    for reranker in made:
        await reranker.aclose()


async def retrieve(retriever: BaseRetriever, kind: str, query: str = QUERY) -> list[Document]:
    if kind == "sync":
        return retriever.invoke(query)
    return await retriever.ainvoke(query)


def best_by_score(documents: list[Document], top_n: int) -> list[tuple[str, float]]:
    """The expected ranking: best first, ties in input order (``sorted`` is stable)."""
    scored = [(doc.page_content, score(QUERY, doc.page_content)) for doc in documents]
    return sorted(scored, key=lambda pair: -pair[1])[:top_n]


def ranking_requests(server: RankingServer) -> list[list[str]]:
    """The passages of each ranking request the server handled."""
    return [
        [passage["text"] for passage in request.body["passages"]]
        for request in server.requests
        if request.path == "/v1/ranking"
    ]


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_retriever_returns_the_best_candidates_by_server_score(
    kind: str, base_retriever: BaseRetriever, make_reranker: Made, ranking_server: RankingServer
) -> None:
    candidates = base_retriever.invoke(QUERY)
    assert len(candidates) == CANDIDATES
    retriever = ContextualCompressionRetriever(
        base_compressor=make_reranker(top_n=TOP_N, max_batch_size=BATCH),
        base_retriever=base_retriever,
    )
    result = await retrieve(retriever, kind)
    assert [(doc.page_content, doc.metadata["relevance_score"]) for doc in result] == (
        best_by_score(candidates, TOP_N)
    )
    # The documents are the store's, with their ids and metadata, plus the score.
    by_id = {doc.id: doc for doc in candidates}
    for doc in result:
        assert doc.metadata == {
            **by_id[doc.id].metadata,
            "relevance_score": doc.metadata["relevance_score"],
        }


async def test_every_candidate_is_sent_once_in_batches_of_max_batch_size(
    kind: str, base_retriever: BaseRetriever, make_reranker: Made, ranking_server: RankingServer
) -> None:
    candidates = base_retriever.invoke(QUERY)
    retriever = ContextualCompressionRetriever(
        base_compressor=make_reranker(max_batch_size=BATCH), base_retriever=base_retriever
    )
    await retrieve(retriever, kind)
    batches = ranking_requests(ranking_server)
    assert len(batches) == math.ceil(CANDIDATES / BATCH)
    assert all(len(batch) <= BATCH for batch in batches)
    sent = [text for batch in batches for text in batch]
    assert sorted(sent) == sorted(doc.page_content for doc in candidates)


async def test_batches_of_one_retrieval_are_in_flight_together(
    kind: str, base_retriever: BaseRetriever, make_reranker: Made, ranking_server: RankingServer
) -> None:
    # NVIDIARerank sends its batches one after another (max_in_flight would be 1).
    # With 50 ms of simulated GPU time per request, a second batch is sent long
    # before the first is answered.
    ranking_server.configure(latency_ms=50)
    retriever = ContextualCompressionRetriever(
        base_compressor=make_reranker(max_batch_size=BATCH, max_concurrency=4),
        base_retriever=base_retriever,
    )
    await retrieve(retriever, kind)
    assert len(ranking_requests(ranking_server)) == 4
    assert ranking_server.max_in_flight > 1


async def test_sync_and_async_retrievers_agree(
    base_retriever: BaseRetriever, make_reranker: Made
) -> None:
    retriever = ContextualCompressionRetriever(
        base_compressor=make_reranker(top_n=None, max_batch_size=BATCH),
        base_retriever=base_retriever,
    )
    sync_result = retriever.invoke(QUERY)
    async_result = await retriever.ainvoke(QUERY)
    assert len(sync_result) == CANDIDATES
    assert [doc.model_dump() for doc in sync_result] == [doc.model_dump() for doc in async_result]


async def test_cohere_protocol_gives_the_same_ranking(
    kind: str, base_retriever: BaseRetriever, make_reranker: Made, ranking_server: RankingServer
) -> None:
    candidates = base_retriever.invoke(QUERY)
    retriever = ContextualCompressionRetriever(
        base_compressor=make_reranker(protocol="cohere", top_n=TOP_N, max_batch_size=BATCH),
        base_retriever=base_retriever,
    )
    result = await retrieve(retriever, kind)
    # /v1/rerank answers Cohere-style relevance scores: the sigmoid of the logit.
    expected = [(text, sigmoid(logit)) for text, logit in best_by_score(candidates, TOP_N)]
    assert [(doc.page_content, doc.metadata["relevance_score"]) for doc in result] == expected
    assert {request.path for request in ranking_server.requests} == {"/v1/rerank"}


async def test_server_refusal_reaches_the_caller_as_bad_request_error(
    kind: str, base_retriever: BaseRetriever, make_reranker: Made, ranking_server: RankingServer
) -> None:
    ranking_server.inject_fault(400, {"detail": "passage too long for the model"})
    retriever = ContextualCompressionRetriever(
        base_compressor=make_reranker(max_batch_size=CANDIDATES), base_retriever=base_retriever
    )
    with pytest.raises(BadRequestError, match="passage too long") as caught:
        await retrieve(retriever, kind)
    assert caught.value.status_code == 400


async def test_nvidia_api_key_is_sent_as_a_bearer_token(
    kind: str, base_retriever: BaseRetriever, make_reranker: Made, ranking_server: RankingServer
) -> None:
    retriever = ContextualCompressionRetriever(
        base_compressor=make_reranker(nvidia_api_key=FAKE_KEY, extra_headers={"X-Team": "rag"}),
        base_retriever=base_retriever,
    )
    await retrieve(retriever, kind)
    (request,) = ranking_server.requests
    expected = hashlib.sha256(f"Bearer {FAKE_KEY}".encode()).hexdigest()
    assert request.authorization_sha256 == expected
    assert request.headers["x-team"] == "rag"


# -- the compressor on its own, against the real server ------------------------------


async def test_compress_leaves_the_retrieved_documents_untouched(
    kind: str, base_retriever: BaseRetriever, make_reranker: Made
) -> None:
    candidates = base_retriever.invoke(QUERY)
    before = [doc.model_dump() for doc in candidates]
    reranker = make_reranker(top_n=None, max_batch_size=BATCH)
    if kind == "sync":
        result = reranker.compress_documents(candidates, QUERY)
    else:
        result = await reranker.acompress_documents(candidates, QUERY)
    assert [doc.model_dump() for doc in candidates] == before
    assert sorted(doc.id or "" for doc in result) == sorted(doc.id or "" for doc in candidates)


async def test_blank_document_is_not_sent_and_comes_last(
    kind: str, make_reranker: Made, ranking_server: RankingServer
) -> None:
    documents = [Document(page_content=text) for text in ("GPU memory", "   ", "bandwidth")]
    reranker = make_reranker(top_n=None)
    if kind == "sync":
        result = reranker.compress_documents(documents, QUERY)
    else:
        result = await reranker.acompress_documents(documents, QUERY)
    assert result[-1].page_content == "   "
    assert result[-1].metadata["relevance_score"] is None
    assert ranking_requests(ranking_server) == [["GPU memory", "bandwidth"]]


async def test_no_documents_or_top_n_zero_send_no_request(
    kind: str, make_reranker: Made, ranking_server: RankingServer
) -> None:
    documents = [Document(page_content="GPU memory")]
    for reranker, given in ((make_reranker(), []), (make_reranker(top_n=0), documents)):
        if kind == "sync":
            assert reranker.compress_documents(given, QUERY) == []
        else:
            assert await reranker.acompress_documents(given, QUERY) == []
    assert ranking_server.requests == []


async def test_rerank_answers_in_jina_reranks_shape(kind: str, make_reranker: Made) -> None:
    texts = ["a cake recipe", "H100 memory bandwidth", "GPU memory"]
    documents: list[str | Document | dict[str, Any]] = [
        texts[0],
        Document(page_content=texts[1]),
        {"text": texts[2]},
    ]
    reranker = make_reranker(top_n=2)
    if kind == "sync":
        result = reranker.rerank(documents, QUERY)
    else:
        result = await reranker.arerank(documents, QUERY)
    expected = sorted(range(3), key=lambda i: -score(QUERY, texts[i]))[:2]
    assert result == [{"index": i, "relevance_score": score(QUERY, texts[i])} for i in expected]


# -- NVIDIARerank's behaviours ------------------------------------------------------


async def rank_with(reranker: NIMRerank, kind: str, documents: list[Document]) -> list[Document]:
    if kind == "sync":
        return list(reranker.compress_documents(documents, QUERY))
    return list(await reranker.acompress_documents(documents, QUERY))


def sent_passages(server: RankingServer) -> list[dict[str, str]]:
    return [p for r in server.requests if r.path == "/v1/ranking" for p in r.body["passages"]]


async def test_image_documents_are_sent_as_nvidia_rerank_sends_them(
    kind: str, make_reranker: Made, ranking_server: RankingServer
) -> None:
    # The embedded server answers for the VLM here (it scores text only).
    ranking_server.inject_fault(
        200, {"rankings": [{"index": i, "logit": float(3 - i)} for i in range(3)]}
    )
    documents = [
        Document(page_content="a caption", metadata={"image": IMAGE}),
        Document(page_content="", metadata={"image": IMAGE, "page": 3}),
        Document(page_content="text only", metadata={"image": ""}),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a known VLM: no warning
        result = await rank_with(make_reranker(model=VLM, top_n=None), kind, documents)
    assert sent_passages(ranking_server) == [
        {"text": "a caption", "image": IMAGE},
        {"image": IMAGE},  # image only: no empty text
        {"text": "text only"},
    ]
    assert [doc.metadata for doc in result] == [
        {**doc.metadata, "relevance_score": float(3 - i)} for i, doc in enumerate(documents)
    ]


async def test_images_to_a_model_not_known_as_a_vlm_warn_once(
    kind: str, make_reranker: Made
) -> None:
    documents = [Document(page_content="GPU", metadata={"image": IMAGE})] * 2
    with (
        pytest.warns(UserWarning, match="not known to be a VLM") as caught,
        pytest.raises(BadRequestError),  # this server takes text only
    ):
        await rank_with(make_reranker(), kind, documents)
    assert len([w for w in caught if "VLM" in str(w.message)]) == 1


async def test_no_model_uses_the_first_the_server_lists_with_one_warning(
    kind: str, make_reranker: Made, ranking_server: RankingServer
) -> None:
    reranker = make_reranker(model=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await rank_with(reranker, kind, corpus(3))
        await rank_with(reranker, kind, corpus(3))
    assert [str(w.message)[:24] for w in caught] == ["nimrank: no model given;"]
    listed = [model.id for model in reranker.available_models]
    assert {r.body["model"] for r in ranking_server.requests if r.path == "/v1/ranking"} == {
        listed[0]
    }


def test_available_models_are_the_ones_the_service_lists(ranking_server: RankingServer) -> None:
    served = [ranking_server.settings.model, VLM_MODEL_ID]
    assert [m.id for m in NIMRerank.get_available_models(base_url=ranking_server.url)] == served
    reranker = NIMRerank(nvidia_base_url=ranking_server.url)
    assert [m.id for m in reranker.available_models] == served
    reranker.close()
    assert [r.path for r in ranking_server.requests] == ["/v1/models", "/v1/models"]


@pytest.mark.parametrize("given", ["env", "param", "both"])
def test_nvidia_base_url_decides_where_passages_go(
    given: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", FAKE_KEY)  # the hosted catalog must not win
    with RankingServer() as from_env, RankingServer() as from_param:
        if given != "param":
            monkeypatch.setenv("NVIDIA_BASE_URL", from_env.url)
        options = {"base_url": from_param.url} if given != "env" else {}
        reranker = NIMRerank(model=TEST_MODEL, **options)
        reranker.compress_documents(corpus(3), QUERY)
        reranker.close()
        chosen, other = (from_env, from_param) if given == "env" else (from_param, from_env)
        assert [r.path for r in chosen.requests] == ["/v1/ranking"]
        assert other.requests == []


async def test_rerank_per_call_model_and_max_chunks_per_doc(
    kind: str, make_reranker: Made, ranking_server: RankingServer
) -> None:
    reranker = make_reranker(top_n=None, max_passage_chars=10, chunking=True)
    long_text = " ".join(f"GPU{i}" for i in range(20))  # ~100 characters: ~10 distinct windows
    if kind == "sync":
        result = reranker.rerank([long_text], QUERY, model="other/model", max_chunks_per_doc=2)
        again = reranker.rerank([long_text], QUERY)
    else:
        result = await reranker.arerank(
            [long_text], QUERY, model="other/model", max_chunks_per_doc=2
        )
        again = await reranker.arerank([long_text], QUERY)
    assert [item["index"] for item in result + again] == [0, 0]
    first, second = (r.body for r in ranking_server.requests)
    assert (first["model"], len(first["passages"])) == ("other/model", 2)
    assert second["model"] == TEST_MODEL
    assert len(second["passages"]) > 2


async def test_assigned_options_apply_to_the_next_call_and_old_clients_close(
    kind: str, ranking_server: RankingServer
) -> None:
    candidates = corpus(CANDIDATES)
    with no_unclosed_connections():
        reranker = NIMRerank(base_url=ranking_server.url, model=TEST_MODEL, top_n=TOP_N)
        await rank_with(reranker, kind, candidates)
        reranker.max_batch_size = BATCH
        with pytest.raises(ValueError, match="max_batch_size"):
            reranker.max_batch_size = 0
        result = await rank_with(reranker, kind, candidates)
        await reranker.aclose()
        del reranker
    sizes = [len(batch) for batch in ranking_requests(ranking_server)]
    assert sizes == [CANDIDATES, 6, 6, 6, 2] or sorted(sizes[1:]) == [2, 6, 6, 6]
    assert [(d.page_content, d.metadata["relevance_score"]) for d in result] == best_by_score(
        candidates, TOP_N
    )


def test_an_unpickled_reranker_ranks_with_the_key_of_its_own_environment(
    ranking_server: RankingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    reranker = NIMRerank(base_url=ranking_server.url, model=TEST_MODEL, api_key=FAKE_KEY)
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-the-workers-own-key")
    clone = pickle.loads(pickle.dumps(reranker))
    clone.compress_documents(corpus(2), QUERY)
    reranker.close()
    clone.close()
    (request,) = ranking_server.requests
    expected = hashlib.sha256(b"Bearer nvapi-the-workers-own-key").hexdigest()
    assert request.authorization_sha256 == expected


# -- event loops and closing -----------------------------------------------------


def test_one_reranker_ranks_in_two_event_loops_and_aclose_releases_each_loops_connections(
    ranking_server: RankingServer,
) -> None:
    candidates = corpus(CANDIDATES)

    def rank_in_two_loops() -> list[list[Document]]:
        reranker = NIMRerank(
            base_url=ranking_server.url, model=TEST_MODEL, top_n=TOP_N, max_batch_size=BATCH
        )

        async def rank_and_close() -> list[Document]:
            try:
                return list(await reranker.acompress_documents(candidates, QUERY))
            finally:
                await reranker.aclose()

        # Each asyncio.run is a new loop: the first loop's connections are unusable
        # in the second, and can only be closed from the first.
        return [asyncio.run(rank_and_close()), asyncio.run(rank_and_close())]

    with no_unclosed_connections():
        first, second = rank_in_two_loops()  # the reranker is garbage once it returns
    expected = best_by_score(candidates, TOP_N)
    for result in (first, second):
        assert [(doc.page_content, doc.metadata["relevance_score"]) for doc in result] == expected
    assert len(ranking_requests(ranking_server)) == 2 * math.ceil(CANDIDATES / BATCH)


# -- the example ------------------------------------------------------------------------


def test_the_example_runs_offline_and_ranks_the_answer_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = Path(__file__).parents[2] / "examples" / "langchain_retriever.py"
    runpy.run_path(str(example), run_name="__main__")
    output = capsys.readouterr().out
    for title in ("(invoke):", "(ainvoke):"):
        first = output.split(title)[1].splitlines()[1]
        assert first.lstrip().startswith("1. [")
        assert "H100 SXM:" in first
    assert "6 ranking requests" in output  # 10 candidates in batches of 4, twice
