"""NVIDIA's own integrations and LiteLLM, pointed at `nimrank serve`, rank as our client does.

Software nobody here wrote, talking to the embedded server over loopback:

* ``langchain-nvidia-ai-endpoints`` ``NVIDIARerank`` (batches of ``max_batch_size``, 32);
* ``llama-index-postprocessor-nvidia-rerank`` ``NVIDIARerank`` (batches of 64);
* ``nvidia-haystack`` ``NvidiaRanker`` (one request for all documents);
* LiteLLM ``rerank`` with the ``nvidia_nim`` provider, on both routes it knows:
  ``nvidia_nim/<model>`` posts to ``/v1/retrieval/<org>/<model>/reranking``,
  ``nvidia_nim/ranking/<model>`` to ``/v1/ranking``.

Each must produce the ranking ``nimrank.RankingClient`` produces for the same
input: the same order of indices and the same scores (all four expose the NIM
logit), on an input larger than the peer's batch size, and with ``top_n``. The
server requires a (fake) key, so each peer also proves it sends
``Authorization: Bearer``.

Run with ``make interop`` (the peers live in ``.venv-peers``, never in the
runtime dependencies). In an environment without a peer, its tests are skipped
with the reason.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nimrank import RankingClient
from nimrank.server import RankingServer

from .conftest import FAKE_KEY

pytestmark = pytest.mark.interop

MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"
QUERY = "What is the GPU memory bandwidth of H100 SXM?"
_VOCABULARY = (
    "gpu memory bandwidth h100 sxm hopper hbm3 terabytes second nvlink a100 grace cpu "
    "interconnect tensor core cake flour oven garden river music guitar the of with"
)
_WORDS = _VOCABULARY.split()


def make_passages(count: int, seed: int = 7) -> list[str]:
    """Varied passages: some relevant, some not, a few identical ones."""
    rng = random.Random(seed)
    passages = [" ".join(rng.choices(_WORDS, k=rng.randint(5, 30))) for _ in range(count)]
    for _ in range(count // 20):
        passages[rng.randrange(count)] = passages[rng.randrange(count)]
    return passages


# More than every peer's batch size (32 and 64), so their batching and merge are used.
PASSAGES = make_passages(150)
Pairs = list[tuple[int, float]]


@pytest.fixture(scope="module")
def ours(nim_server: RankingServer) -> Pairs:
    """The reference: our client's full ranking, as (index, logit) pairs, best first."""
    with RankingClient(base_url=nim_server.url, api_key=FAKE_KEY) as client:
        # No passage is blank, so every one has a score.
        return [(p.index, p.score) for p in client.rank(QUERY, PASSAGES) if p.score is not None]


def test_the_reference_ranking_is_not_trivial(ours: Pairs) -> None:
    scores = [score for _, score in ours]
    assert len(set(scores)) > 20  # many distinct scores: order comparisons mean something
    assert [index for index, _ in ours] != list(range(len(PASSAGES)))


def sent_with_the_key(server: RankingServer) -> None:
    """Every ranking request the peer sent carried the key (none got a 401)."""
    ranking = [r for r in server.requests if r.method == "POST"]
    assert ranking, "the peer sent nothing"
    assert all(r.authorization_is(f"Bearer {FAKE_KEY}") for r in ranking)
    assert all(r.status == 200 for r in ranking), [r.status for r in ranking]


# --------------------------------------------------------------------------- LangChain


@pytest.fixture
def langchain_rerank(nim_server: RankingServer) -> Any:
    module = pytest.importorskip(
        "langchain_nvidia_ai_endpoints", reason="langchain-nvidia-ai-endpoints is not installed"
    )
    nim_server.reset()

    def make(**options: Any) -> Any:
        # No usage telemetry: nothing leaves this machine.
        return module.NVIDIARerank(
            base_url=nim_server.url,
            model=MODEL,
            api_key=FAKE_KEY,
            usage_telemetry_enabled=False,
            **options,
        )

    return make


def langchain_pairs(documents: Any) -> Pairs:
    return [(doc.metadata["position"], doc.metadata["relevance_score"]) for doc in documents]


def langchain_documents() -> list[Any]:
    from langchain_core.documents import Document

    return [
        Document(page_content=text, metadata={"position": i}) for i, text in enumerate(PASSAGES)
    ]


def test_langchain_nvidia_rerank_ranks_as_we_do(
    langchain_rerank: Any, nim_server: RankingServer, ours: Pairs
) -> None:
    ranker = langchain_rerank(top_n=len(PASSAGES))
    assert ranker.max_batch_size < len(PASSAGES)
    ranked = ranker.compress_documents(langchain_documents(), QUERY)
    assert langchain_pairs(ranked) == ours
    assert len(nim_server.requests) == 5  # 150 passages in batches of 32
    sent_with_the_key(nim_server)


def test_langchain_nvidia_rerank_top_n_across_batches(langchain_rerank: Any, ours: Pairs) -> None:
    ranked = langchain_rerank(top_n=5).compress_documents(langchain_documents(), QUERY)
    assert langchain_pairs(ranked) == ours[:5]


async def test_langchain_nvidia_rerank_async_ranks_as_we_do(
    langchain_rerank: Any, nim_server: RankingServer, ours: Pairs
) -> None:
    ranker = langchain_rerank(top_n=len(PASSAGES), max_batch_size=50)
    ranked = await ranker.acompress_documents(langchain_documents(), QUERY)
    assert langchain_pairs(ranked) == ours
    sent_with_the_key(nim_server)


# --------------------------------------------------------------------------- LlamaIndex


@pytest.fixture
def llama_rerank(nim_server: RankingServer) -> Iterator[Any]:
    module = pytest.importorskip(
        "llama_index.postprocessor.nvidia_rerank",
        reason="llama-index-postprocessor-nvidia-rerank is not installed",
    )
    nim_server.reset()
    # Our own httpx client, closed here: the peer leaves its default one open.
    http = httpx.Client()

    def make(**options: Any) -> Any:
        return module.NVIDIARerank(
            base_url=nim_server.url, model=MODEL, api_key=FAKE_KEY, http_client=http, **options
        )

    yield make
    http.close()


def llama_pairs(nodes: Any) -> Pairs:
    return [(int(node.node.id_), node.score) for node in nodes]


def llama_nodes() -> list[Any]:
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=text, id_=str(i))) for i, text in enumerate(PASSAGES)]


def test_llama_index_nvidia_rerank_ranks_as_we_do(
    llama_rerank: Any, nim_server: RankingServer, ours: Pairs
) -> None:
    ranker = llama_rerank(top_n=len(PASSAGES))
    assert ranker.max_batch_size < len(PASSAGES)
    with warnings.catch_warnings():
        # It asks /v1/models whether the model is known; the stand-in lists its own id.
        warnings.simplefilter("ignore", UserWarning)
        ranked = ranker.postprocess_nodes(llama_nodes(), query_str=QUERY)
    assert llama_pairs(ranked) == ours
    assert len([r for r in nim_server.requests if r.method == "POST"]) == 3  # batches of 64
    sent_with_the_key(nim_server)


def test_llama_index_nvidia_rerank_top_n_across_batches(llama_rerank: Any, ours: Pairs) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ranked = llama_rerank(top_n=5, max_batch_size=40).postprocess_nodes(
            llama_nodes(), query_str=QUERY
        )
    assert llama_pairs(ranked) == ours[:5]


# --------------------------------------------------------------------------- Haystack


@pytest.fixture
def haystack_ranker(nim_server: RankingServer) -> Iterator[Any]:
    module = pytest.importorskip(
        "haystack_integrations.components.rankers.nvidia", reason="nvidia-haystack is not installed"
    )
    from haystack.utils import Secret

    nim_server.reset()
    made: list[Any] = []

    def make(**options: Any) -> Any:
        ranker = module.NvidiaRanker(
            api_url=nim_server.url, model=MODEL, api_key=Secret.from_token(FAKE_KEY), **options
        )
        ranker.warm_up()
        made.append(ranker)
        return ranker

    yield make
    for ranker in made:
        ranker.close()


def haystack_documents(passages: list[str] = PASSAGES) -> list[Any]:
    from haystack import Document

    return [Document(content=text, id=str(i)) for i, text in enumerate(passages)]


def haystack_pairs(documents: Any) -> Pairs:
    return [(int(doc.id), doc.score) for doc in documents]


def test_haystack_nvidia_ranker_ranks_as_we_do(
    haystack_ranker: Any, nim_server: RankingServer, ours: Pairs
) -> None:
    ranker = haystack_ranker(top_k=len(PASSAGES))
    ranked = ranker.run(query=QUERY, documents=haystack_documents())["documents"]
    assert haystack_pairs(ranked) == ours
    # It sends every document in one request; we sent five batches for the same ranking.
    assert [len(r.body["passages"]) for r in nim_server.requests if r.method == "POST"] == [150]
    sent_with_the_key(nim_server)


def test_haystack_nvidia_ranker_top_k(haystack_ranker: Any, ours: Pairs) -> None:
    ranked = haystack_ranker(top_k=5).run(query=QUERY, documents=haystack_documents())
    assert haystack_pairs(ranked["documents"]) == ours[:5]


def test_haystack_nvidia_ranker_meets_the_512_passage_limit(haystack_ranker: Any) -> None:
    """Without batching it hits NIM's cap, and the NIM-style message reaches the user."""
    ranker = haystack_ranker(top_k=5)
    with pytest.raises(ValueError, match="at most 512 passages are allowed per request, got 600"):
        ranker.run(query=QUERY, documents=haystack_documents(make_passages(600)))


# --------------------------------------------------------------------------- LiteLLM


@pytest.fixture
def litellm(monkeypatch: pytest.MonkeyPatch, nim_server: RankingServer) -> Any:
    # conftest.py has set LITELLM_LOCAL_MODEL_COST_MAP: no price list from the internet.
    module = pytest.importorskip("litellm", reason="litellm is not installed")
    monkeypatch.setattr(module, "telemetry", False, raising=False)
    nim_server.reset()
    return module


def litellm_pairs(response: Any) -> Pairs:
    return [(result["index"], result["relevance_score"]) for result in response.results]


# LiteLLM spells the model with an underscore in the retrieval route's URL (as the
# hosted catalog does) and turns it back into a dot in the body.
RETRIEVAL_MODEL = "nvidia_nim/nvidia/llama-3_2-nv-rerankqa-1b-v2"
RANKING_MODEL = f"nvidia_nim/ranking/{MODEL}"


def test_litellm_retrieval_route_ranks_as_we_do(
    litellm: Any, nim_server: RankingServer, ours: Pairs
) -> None:
    response = litellm.rerank(
        model=RETRIEVAL_MODEL,
        query=QUERY,
        documents=PASSAGES,
        api_base=nim_server.url,
        api_key=FAKE_KEY,
    )
    assert litellm_pairs(response) == ours
    [request] = [r for r in nim_server.requests if r.method == "POST"]
    assert request.path == "/v1/retrieval/nvidia/llama-3_2-nv-rerankqa-1b-v2/reranking"
    assert request.body["model"] == MODEL
    sent_with_the_key(nim_server)


def test_litellm_ranking_route_ranks_as_we_do_with_top_n(
    litellm: Any, nim_server: RankingServer, ours: Pairs
) -> None:
    response = litellm.rerank(
        model=RANKING_MODEL,
        query=QUERY,
        documents=PASSAGES,
        api_base=nim_server.url,
        api_key=FAKE_KEY,
        top_n=5,
    )
    assert litellm_pairs(response) == ours[:5]
    [request] = [r for r in nim_server.requests if r.method == "POST"]
    assert request.path == "/v1/ranking"
    assert "top_k" not in request.body  # cut on the client: /v1/ranking takes no top_k
    sent_with_the_key(nim_server)


async def test_litellm_async_rerank_ranks_as_we_do(
    litellm: Any, nim_server: RankingServer, ours: Pairs
) -> None:
    response = await litellm.arerank(
        model=RANKING_MODEL,
        query=QUERY,
        documents=PASSAGES,
        api_base=nim_server.url,
        api_key=FAKE_KEY,
    )
    assert litellm_pairs(response) == ours


def test_litellm_top_n_on_the_retrieval_route_is_refused_naming_top_k(
    litellm: Any, nim_server: RankingServer
) -> None:
    """A known edge: LiteLLM turns top_n into ``top_k`` on the retrieval route.

    NVIDIA's API reference for the reranking endpoints lists only model, query,
    passages and truncate, and the stand-in refuses unknown fields as a NIM
    does, so the user sees a 400 naming ``top_k``. The ``nvidia_nim/ranking/``
    route (above) is the one that takes ``top_n``.
    """
    with pytest.raises(litellm.BadRequestError, match="top_k: unknown field"):
        litellm.rerank(
            model=RETRIEVAL_MODEL,
            query=QUERY,
            documents=PASSAGES,
            api_base=nim_server.url,
            api_key=FAKE_KEY,
            top_n=5,
        )
