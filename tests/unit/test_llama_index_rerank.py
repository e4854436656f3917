"""NIMRerank, the LlamaIndex postprocessor: construction, mapping, events, failures.

Requests go to the embedded server on loopback (the ``ranking_server`` fixture)
or, where a test proves that no request is made, to a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import gc
import logging
import math
import pickle
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.instrumentation.span_handlers import SimpleSpanHandler
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import (
    Document,
    ImageNode,
    MediaResource,
    MetadataMode,
    NodeWithScore,
    QueryBundle,
    TextNode,
)

from llama_index.postprocessor.nimrank import NIMRerank
from llama_index_events import Recorder
from nimrank import (
    DEFAULT_OPTIONS,
    AsyncRankingClient,
    BadRequestError,
    MissingAPIKeyError,
    RankingClient,
    RankingConnectionError,
    RankingOptions,
    describe_option,
)
from nimrank.server import VLM_MODEL_ID, RankingServer, score
from seed_examples import LITELLM_DOCUMENTS, QUERY

FAKE_KEY = "nvapi-fake-key-for-tests-0123456789"  # not a real key
MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"  # named, so only discovery tests ask /v1/models
# The LiteLLM example's documents, and one that matches no word of the query.
PASSAGES = [*LITELLM_DOCUMENTS, "Bananas are rich in potassium."]


def make_nodes(texts: list[str], **metadata: Any) -> list[NodeWithScore]:
    """Retrieved nodes with falling retrieval scores 0.9, 0.8, ..."""
    return [
        NodeWithScore(node=TextNode(text=text, metadata=dict(metadata)), score=0.9 - i / 10)
        for i, text in enumerate(texts)
    ]


@pytest.fixture
def dead_url() -> str:
    """A loopback base URL where nothing listens: any request fails to connect."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def reranker(ranking_server: RankingServer) -> Iterator[NIMRerank]:
    rerank = NIMRerank(base_url=ranking_server.url, model=MODEL)
    yield rerank
    rerank.close()


# -- construction -------------------------------------------------------------------


def test_takes_nvidia_rerank_parameters_so_switching_is_an_import_change() -> None:
    rerank = NIMRerank(
        model="nvidia/nv-rerankqa-mistral-4b-v3",
        api_key=FAKE_KEY,
        base_url="http://localhost:8000/v1",
        top_n=3,
        truncate="END",
        max_batch_size=64,
    )
    assert (rerank.model, rerank.base_url, rerank.top_n) == (
        "nvidia/nv-rerankqa-mistral-4b-v3",
        "http://localhost:8000/v1",
        3,
    )
    assert (rerank.truncate, rerank.max_batch_size) == ("END", 64)
    assert isinstance(rerank, BaseNodePostprocessor)
    rerank.close()


def test_every_client_option_is_a_field_with_the_cores_default_and_description() -> None:
    rerank = NIMRerank(base_url="http://localhost:8000/v1")
    spread = set(NIMRerank.model_fields) & {f.name for f in dataclasses.fields(RankingOptions)}
    # Credentials and the policy object go to the clients only (see test below).
    assert spread == {f.name for f in dataclasses.fields(RankingOptions)} - {
        "api_key",
        "extra_headers",
        "retry_policy",
    }
    for name in spread - {"base_url"}:
        assert getattr(rerank, name) == getattr(DEFAULT_OPTIONS, name), name
        assert NIMRerank.model_fields[name].description == describe_option(name)
    assert (rerank.top_n, rerank.metadata_mode, rerank.on_error) == (5, MetadataMode.EMBED, "raise")
    rerank.close()


def test_nvidia_api_key_is_accepted_as_an_alias_of_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    monkeypatch.delenv("NVIDIA_NIM_API_KEY", raising=False)
    NIMRerank(nvidia_api_key=FAKE_KEY).close()  # the hosted catalog: a key is required


def test_with_both_keys_given_nvidia_api_key_wins_as_in_nvidia_rerank() -> None:
    with RankingServer(api_key=FAKE_KEY) as server:
        rerank = NIMRerank(
            base_url=server.url, model=MODEL, nvidia_api_key=FAKE_KEY, api_key="nvapi-other-fake"
        )
        assert rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
        assert server.requests[-1].authorization_is(f"Bearer {FAKE_KEY}")
        rerank.close()


def test_hosted_catalog_without_a_key_fails_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    monkeypatch.delenv("NVIDIA_NIM_API_KEY", raising=False)
    monkeypatch.delenv("NVIDIA_BASE_URL", raising=False)
    monkeypatch.delenv("NVIDIA_API_URL", raising=False)
    with pytest.raises(MissingAPIKeyError, match="needs an API key"):
        NIMRerank()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_batch_size": 0}, ValueError, "max_batch_size"),
        ({"max_batch_size": 513}, ValueError, "max_batch_size"),
        ({"max_batch_size": "32"}, TypeError, "max_batch_size"),
        ({"max_concurrency": True}, TypeError, "max_concurrency"),
        ({"truncate": "START"}, ValueError, "truncate"),
        ({"protocol": "grpc"}, ValueError, "protocol"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"max_retries": -1}, ValueError, "max_retries"),
        ({"score_transform": "softmax"}, ValueError, "score_transform"),
        ({"chunking": True}, ValueError, "max_passage_chars"),
        ({"top_n": -1}, ValueError, "top_n"),
        ({"top_n": "5"}, ValueError, "top_n"),
        ({"score_threshold": math.nan}, ValueError, "score_threshold"),
        ({"on_error": "ignore"}, ValueError, "on_error"),
        ({"metadata_mode": "everything"}, ValueError, "metadata_mode"),
        ({"keep_retrieval_score": "yes"}, ValueError, "keep_retrieval_score"),
        ({"temperature": 0.1}, TypeError, "temperature"),
    ],
)
def test_invalid_options_fail_at_construction(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        NIMRerank(base_url="http://localhost:8000/v1", **options)


# -- assignment after construction --------------------------------------------------------


def test_an_assigned_option_is_used_by_the_next_call(ranking_server: RankingServer) -> None:
    rerank = NIMRerank(base_url=ranking_server.url, model=MODEL, top_n=None)
    old_client = rerank._clients.sync
    rerank.max_batch_size = 2
    rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    assert [len(r.body["passages"]) for r in ranking_server.requests] == [2, 2]
    assert rerank._clients.sync is not old_client  # rebuilt from the new options
    assert rerank.to_dict()["max_batch_size"] == 2
    rerank.close()


def test_an_assigned_base_url_sends_the_next_call_there(dead_url: str) -> None:
    rerank = NIMRerank(base_url=dead_url, model=MODEL, max_retries=0)
    with RankingServer() as server:
        rerank.base_url = server.url
        assert rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
        assert len(server.requests) == 1
    rerank.close()


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("max_batch_size", 0, ValueError),
        ("max_batch_size", -10, ValueError),
        ("max_batch_size", "8", TypeError),
        ("timeout", -1.0, ValueError),
        ("truncate", "START", ValueError),
        ("protocol", "cohere", ValueError),  # the NIM-only truncate="END" is set below
        ("chunking", True, ValueError),  # needs max_passage_chars
        ("base_url", 42, TypeError),
        ("top_n", -10, ValueError),
        ("on_error", "ignore", ValueError),
    ],
)
def test_a_bad_assignment_raises_and_the_reranker_keeps_working(
    ranking_server: RankingServer, name: str, value: Any, error: type[Exception]
) -> None:
    rerank = NIMRerank(base_url=ranking_server.url, model=MODEL, truncate="END")
    before = rerank.model_dump()
    with pytest.raises(error):
        setattr(rerank, name, value)
    assert rerank.model_dump() == before
    assert rerank._clients.options.max_batch_size == before["max_batch_size"]
    assert len(rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)) == len(PASSAGES)
    rerank.close()


def test_an_assignment_that_needs_a_key_it_lacks_is_refused(
    ranking_server: RankingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    monkeypatch.delenv("NVIDIA_NIM_API_KEY", raising=False)
    monkeypatch.delenv("NVIDIA_BASE_URL", raising=False)
    monkeypatch.delenv("NVIDIA_API_URL", raising=False)
    rerank = NIMRerank(base_url=ranking_server.url, model=MODEL)
    with pytest.raises(MissingAPIKeyError):
        rerank.base_url = None  # NVIDIA's hosted catalog
    assert rerank.base_url == ranking_server.url
    assert rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    rerank.close()


def test_per_call_options_can_change_and_are_validated() -> None:
    rerank = NIMRerank(base_url="http://localhost:8000/v1")
    rerank.top_n = None
    rerank.on_error = "passthrough"
    assert (rerank.top_n, rerank.on_error) == (None, "passthrough")
    with pytest.raises(ValueError, match="top_n"):
        rerank.top_n = -2
    rerank.close()


# -- base URL, model, models -------------------------------------------------------------


@pytest.mark.parametrize("given", ["env", "param", "both"])
def test_nvidia_base_url_is_used_when_no_base_url_is_passed(
    given: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with RankingServer() as env_server, RankingServer() as param_server:
        if given in ("env", "both"):
            monkeypatch.setenv("NVIDIA_BASE_URL", env_server.url)
        base_url = param_server.url if given in ("param", "both") else None
        rerank = NIMRerank(base_url=base_url, model=MODEL)
        rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
        used = env_server if given == "env" else param_server
        unused = param_server if given == "env" else env_server
        assert len(used.requests) == 1
        assert unused.requests == []
        rerank.close()


def test_without_a_model_the_servers_first_model_is_used(ranking_server: RankingServer) -> None:
    rerank = NIMRerank(base_url=ranking_server.url)
    assert rerank.model is None
    with pytest.warns(UserWarning, match="no model given"):
        rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    listed = ranking_server.settings.model
    assert [r.path for r in ranking_server.requests] == ["/v1/models", "/v1/ranking"]
    assert ranking_server.requests[-1].body["model"] == listed
    rerank.close()


def test_available_models_lists_the_services_models(ranking_server: RankingServer) -> None:
    rerank = NIMRerank(base_url=ranking_server.url, model=MODEL)
    models = rerank.available_models
    assert [model.id for model in models] == [ranking_server.settings.model, VLM_MODEL_ID]
    rerank.close()


@pytest.mark.parametrize("ending", ["/rankings", "/embeddings", "/chat/completions"])
def test_a_base_url_naming_another_endpoint_warns_and_the_call_fails_clearly(
    ranking_server: RankingServer, ending: str
) -> None:
    with pytest.warns(UserWarning, match="another service's endpoint"):
        rerank = NIMRerank(base_url=ranking_server.url + ending, model=MODEL)
    with pytest.raises(BadRequestError, match="404"):
        rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    rerank.close()


@pytest.mark.filterwarnings("error")
def test_a_base_url_or_ranking_url_does_not_warn(ranking_server: RankingServer) -> None:
    for url in (ranking_server.url, ranking_server.url + "/ranking"):
        NIMRerank(base_url=url, model=MODEL).close()


# -- serialization and the key ----------------------------------------------------------


def test_class_name_is_nimrerank() -> None:
    assert NIMRerank.class_name() == "NIMRerank"


def test_the_key_never_shows_in_repr_or_serialized_forms() -> None:
    rerank = NIMRerank(api_key=FAKE_KEY, base_url="http://localhost:8000/v1")
    shown = [
        repr(rerank),
        str(rerank),
        str(rerank.dict()),
        str(rerank.model_dump()),
        rerank.model_dump_json(),
        rerank.to_json(),
        str(rerank.to_dict()),
    ]
    for text in shown:
        assert FAKE_KEY not in text
        assert "nvapi-fake" not in text
    rerank.close()


def test_the_key_never_shows_in_the_passthrough_warning(
    dead_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    rerank = NIMRerank(
        model=MODEL, api_key=FAKE_KEY, base_url=dead_url, max_retries=0, on_error="passthrough"
    )
    with caplog.at_level(logging.DEBUG):
        rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    assert "ranking failed" in caplog.text
    assert FAKE_KEY not in caplog.text
    rerank.close()


def test_extra_headers_are_sent_but_never_serialized(ranking_server: RankingServer) -> None:
    secret = "gateway-token-fake-0123"  # not a real credential
    rerank = NIMRerank(
        model=MODEL, base_url=ranking_server.url, extra_headers={"X-Gateway-Token": secret}
    )
    rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    assert ranking_server.requests[-1].headers["x-gateway-token"] == secret
    for text in (repr(rerank), rerank.to_json(), str(rerank.model_dump())):
        assert secret not in text
    rerank.close()


def test_to_dict_round_trips_with_the_key_passed_again(ranking_server: RankingServer) -> None:
    original = NIMRerank(
        api_key=FAKE_KEY,
        base_url=ranking_server.url,
        model=MODEL,
        top_n=2,
        keep_retrieval_score=True,
    )
    data = original.to_dict()
    assert data["class_name"] == "NIMRerank"
    copy = NIMRerank.from_dict(data, api_key=FAKE_KEY)
    assert copy.model_dump() == original.model_dump()
    ranked = copy.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    assert len(ranked) == 2
    assert ranking_server.requests[-1].authorization_is(f"Bearer {FAKE_KEY}")
    original.close()
    copy.close()


# -- mapping in and out -----------------------------------------------------------------


def test_nodes_come_back_best_first_with_the_servers_scores(reranker: NIMRerank) -> None:
    nodes = make_nodes(PASSAGES)
    ranked = reranker.postprocess_nodes(nodes, query_str=QUERY)
    expected = sorted(PASSAGES, key=lambda text: -score(QUERY, text))
    assert [item.node.get_content() for item in ranked] == expected
    for item in ranked:
        assert item.score == pytest.approx(score(QUERY, item.node.get_content()))
    assert ranked[0].node is nodes[2].node  # the H100 passage, the very node retrieved


def test_query_bundle_and_query_str_rank_alike(reranker: NIMRerank) -> None:
    nodes = make_nodes(PASSAGES)
    by_str = reranker.postprocess_nodes(nodes, query_str=QUERY)
    by_bundle = reranker.postprocess_nodes(nodes, query_bundle=QueryBundle(QUERY))
    assert [(n.node_id, n.score) for n in by_str] == [(n.node_id, n.score) for n in by_bundle]


def test_top_n_cuts_the_ranking(ranking_server: RankingServer) -> None:
    rerank = NIMRerank(model=MODEL, base_url=ranking_server.url, top_n=2)
    ranked = rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    assert [item.node.get_content() for item in ranked] == sorted(
        PASSAGES, key=lambda text: -score(QUERY, text)
    )[:2]
    rerank.close()


def test_fewer_nodes_than_top_n_returns_all_of_them_ranked(reranker: NIMRerank) -> None:
    nodes = make_nodes(PASSAGES[:3])
    assert reranker.top_n == 5
    ranked = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert sorted(item.node_id for item in ranked) == sorted(item.node_id for item in nodes)
    scores = [item.get_score(raise_error=True) for item in ranked]
    assert scores == sorted(scores, reverse=True)


def test_top_n_none_returns_every_node(ranking_server: RankingServer) -> None:
    rerank = NIMRerank(model=MODEL, base_url=ranking_server.url, top_n=None)
    texts = [f"passage {i} about memory" for i in range(12)]
    ranked = rerank.postprocess_nodes(make_nodes(texts), query_str=QUERY)
    assert len(ranked) == 12
    rerank.close()


def test_inputs_are_not_mutated_and_outputs_are_new_objects(reranker: NIMRerank) -> None:
    reranker.keep_retrieval_score = True
    nodes = make_nodes(PASSAGES, source="datasheet")
    before = [item.model_dump() for item in nodes]
    as_given = list(nodes)
    ranked = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert nodes == as_given
    assert [item.model_dump() for item in nodes] == before
    assert all(out is not original for out in ranked for original in nodes)


def test_keep_retrieval_score_puts_the_retrievers_score_in_metadata(reranker: NIMRerank) -> None:
    reranker.keep_retrieval_score = True
    nodes = make_nodes(PASSAGES, source="datasheet")
    retrieval = {item.node_id: item.score for item in nodes}
    ranked = reranker.postprocess_nodes(nodes, query_str=QUERY)
    for item in ranked:
        assert item.node.metadata["retrieval_score"] == retrieval[item.node_id]
        assert item.node.metadata["source"] == "datasheet"
        assert item.score != retrieval[item.node_id]
        # the number stays out of the text later embeddings, rerankers and LLMs see
        assert "retrieval_score" not in item.node.get_content(metadata_mode=MetadataMode.EMBED)
        assert "retrieval_score" not in item.node.get_content(metadata_mode=MetadataMode.LLM)
    assert all("retrieval_score" not in item.node.metadata for item in nodes)


def test_without_keep_retrieval_score_metadata_is_left_alone(reranker: NIMRerank) -> None:
    ranked = reranker.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    assert all("retrieval_score" not in item.node.metadata for item in ranked)


def test_the_ranked_text_includes_embed_metadata_by_default(
    reranker: NIMRerank, ranking_server: RankingServer
) -> None:
    node = TextNode(
        text="3 TB/s per GPU.",
        metadata={"product": "H100 SXM", "file_path": "/data/h100.pdf"},
        excluded_embed_metadata_keys=["file_path"],
    )
    reranker.postprocess_nodes([NodeWithScore(node=node, score=0.5)], query_str=QUERY)
    sent = ranking_server.requests[-1].body["passages"][0]["text"]
    assert "product: H100 SXM" in sent
    assert "3 TB/s per GPU." in sent
    assert "/data/h100.pdf" not in sent


def test_metadata_mode_chooses_the_ranked_text(ranking_server: RankingServer) -> None:
    rerank = NIMRerank(model=MODEL, base_url=ranking_server.url, metadata_mode=MetadataMode.NONE)
    node = TextNode(text="3 TB/s per GPU.", metadata={"product": "H100 SXM"})
    rerank.postprocess_nodes([NodeWithScore(node=node)], query_str=QUERY)
    assert ranking_server.requests[-1].body["passages"] == [{"text": "3 TB/s per GPU."}]
    rerank.close()


def test_duplicate_nodes_are_scored_once_and_all_returned(
    reranker: NIMRerank, ranking_server: RankingServer
) -> None:
    nodes = make_nodes([PASSAGES[2], PASSAGES[0], PASSAGES[2]])
    ranked = reranker.postprocess_nodes(nodes, query_str=QUERY)
    sent = [p["text"] for p in ranking_server.requests[-1].body["passages"]]
    assert sent.count(PASSAGES[2]) == 1
    assert sorted(item.node_id for item in ranked) == sorted(item.node_id for item in nodes)
    assert ranked[0].score == ranked[1].score
    assert {ranked[0].node_id, ranked[1].node_id} == {nodes[0].node_id, nodes[2].node_id}


def test_more_nodes_than_max_batch_size_are_ranked_in_batches(
    ranking_server: RankingServer,
) -> None:
    rerank = NIMRerank(model=MODEL, base_url=ranking_server.url, max_batch_size=4, top_n=None)
    texts = [f"{i} " + PASSAGES[i % len(PASSAGES)] for i in range(10)]
    nodes = make_nodes(texts)
    ranked = rerank.postprocess_nodes(nodes, query_str=QUERY)
    batches = [len(r.body["passages"]) for r in ranking_server.requests]
    assert sorted(batches) == [2, 4, 4]
    assert sorted(item.node_id for item in ranked) == sorted(item.node_id for item in nodes)
    rerank.close()


def test_score_options_reach_the_client(ranking_server: RankingServer) -> None:
    rerank = NIMRerank(
        base_url=ranking_server.url,
        model=MODEL,
        score_transform="sigmoid",
        score_threshold=0.5,
        top_n=None,
    )
    ranked = rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    assert ranked
    assert all(0.5 <= (item.score or 0.0) <= 1.0 for item in ranked)
    assert len(ranked) < len(PASSAGES)  # the banana scores below the threshold
    rerank.close()


def test_both_calls_reuse_one_client_and_its_connection(
    reranker: NIMRerank, ranking_server: RankingServer
) -> None:
    for _ in range(3):
        reranker.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    peers = {request.peer for request in ranking_server.requests}
    assert len(ranking_server.requests) == 3
    assert len(peers) == 1


# -- async ------------------------------------------------------------------------------


async def test_apostprocess_awaits_the_async_client_and_never_the_sync_one(
    reranker: NIMRerank, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    calls: list[int] = []
    real_rank = AsyncRankingClient.rank

    async def spy(self: AsyncRankingClient, *args: Any, **kwargs: Any) -> Any:
        calls.append(threading.get_ident())
        return await real_rank(self, *args, **kwargs)

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the sync client was used from apostprocess_nodes")

    monkeypatch.setattr(AsyncRankingClient, "rank", spy)
    monkeypatch.setattr(RankingClient, "rank", forbidden)
    ranked = await reranker.apostprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    assert calls == [loop_thread]
    assert ranked[0].node.get_content() == PASSAGES[2]
    await reranker.aclose()


async def test_async_and_sync_give_the_same_ranking(reranker: NIMRerank) -> None:
    nodes = make_nodes(PASSAGES)
    in_async = await reranker.apostprocess_nodes(nodes, query_str=QUERY)
    in_sync = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert [(n.node_id, n.score) for n in in_async] == [(n.node_id, n.score) for n in in_sync]
    await reranker.aclose()


async def test_async_calls_reuse_one_connection(
    reranker: NIMRerank, ranking_server: RankingServer
) -> None:
    for _ in range(3):
        await reranker.apostprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    assert len({request.peer for request in ranking_server.requests}) == 1
    await reranker.aclose()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_second_event_loop_gets_a_working_client(reranker: NIMRerank) -> None:
    async def rank(close: bool) -> list[NodeWithScore]:
        ranked = await reranker.apostprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
        if close:
            await reranker.aclose()
        return ranked

    # asyncio.run twice, the first time without aclose: that loop's connections
    # die with it (httpx warns about them), and the second loop must not reuse them.
    first = asyncio.run(rank(close=False))
    second = asyncio.run(rank(close=True))
    assert first[0].node.get_content() == second[0].node.get_content() == PASSAGES[2]
    gc.collect()  # the first loop's client goes now, while its warning is ignored


# -- edge cases -------------------------------------------------------------------------


async def test_no_nodes_gives_an_empty_list_without_a_request(dead_url: str) -> None:
    rerank = NIMRerank(model=MODEL, base_url=dead_url, max_retries=0)
    assert rerank.postprocess_nodes([], query_str=QUERY) == []
    assert await rerank.apostprocess_nodes([], query_str=QUERY) == []
    await rerank.aclose()


async def test_top_n_zero_gives_an_empty_list_without_a_request(dead_url: str) -> None:
    rerank = NIMRerank(model=MODEL, base_url=dead_url, max_retries=0, top_n=0)
    assert rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY) == []
    assert await rerank.apostprocess_nodes(make_nodes(PASSAGES), query_str=QUERY) == []
    await rerank.aclose()


async def test_no_query_is_a_value_error_that_says_so(dead_url: str) -> None:
    rerank = NIMRerank(model=MODEL, base_url=dead_url, max_retries=0)
    with pytest.raises(ValueError, match="needs a query"):
        rerank.postprocess_nodes(make_nodes(PASSAGES))
    with pytest.raises(ValueError, match="needs a query"):
        await rerank.apostprocess_nodes(make_nodes(PASSAGES))
    with pytest.raises(ValueError, match="query is empty"):
        rerank.postprocess_nodes(make_nodes(PASSAGES), query_str="   ")
    await rerank.aclose()


# -- failures ---------------------------------------------------------------------------


async def test_a_ranking_error_propagates_typed_by_default(dead_url: str) -> None:
    rerank = NIMRerank(model=MODEL, base_url=dead_url, max_retries=0)
    with pytest.raises(RankingConnectionError):
        rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    with pytest.raises(RankingConnectionError):
        await rerank.apostprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    await rerank.aclose()


async def test_passthrough_returns_the_first_top_n_in_retrieval_order(dead_url: str) -> None:
    rerank = NIMRerank(
        model=MODEL, base_url=dead_url, max_retries=0, top_n=2, on_error="passthrough"
    )
    nodes = make_nodes(PASSAGES)
    for ranked in (
        rerank.postprocess_nodes(nodes, query_str=QUERY),
        await rerank.apostprocess_nodes(nodes, query_str=QUERY),
    ):
        assert [item.node_id for item in ranked] == [item.node_id for item in nodes[:2]]
        assert [item.score for item in ranked] == [item.score for item in nodes[:2]]
        assert all(out is not original for out, original in zip(ranked, nodes[:2], strict=True))
    await rerank.aclose()


def test_passthrough_with_top_n_none_loses_no_node(dead_url: str) -> None:
    rerank = NIMRerank(
        model=MODEL, base_url=dead_url, max_retries=0, top_n=None, on_error="passthrough"
    )
    nodes = make_nodes(PASSAGES)
    ranked = rerank.postprocess_nodes(nodes, query_str=QUERY)
    assert [item.node_id for item in ranked] == [item.node_id for item in nodes]
    rerank.close()


def test_passthrough_does_not_hide_a_missing_query(dead_url: str) -> None:
    rerank = NIMRerank(model=MODEL, base_url=dead_url, on_error="passthrough")
    with pytest.raises(ValueError, match="needs a query"):
        rerank.postprocess_nodes(make_nodes(PASSAGES))
    rerank.close()


# -- instrumentation --------------------------------------------------------------------


def test_start_and_end_events_carry_the_query_and_the_reranked_nodes(
    reranker: NIMRerank, recorder: Recorder
) -> None:
    nodes = make_nodes(PASSAGES)
    ranked = reranker.postprocess_nodes(nodes, query_str=QUERY)
    start, end = recorder.rerank_events()
    assert isinstance(start, ReRankStartEvent)
    assert isinstance(end, ReRankEndEvent)
    assert isinstance(start.query, QueryBundle)
    assert start.query.query_str == QUERY
    assert (start.top_n, start.model_name) == (5, reranker.model)
    assert [n.node_id for n in start.nodes] == [n.node_id for n in nodes]
    assert [(n.node_id, n.score) for n in end.nodes] == [(n.node_id, n.score) for n in ranked]


async def test_every_start_event_has_an_end_event(dead_url: str, recorder: Recorder) -> None:
    rerank = NIMRerank(model=MODEL, base_url=dead_url, max_retries=0)
    rerank.postprocess_nodes([], query_str=QUERY)
    await rerank.apostprocess_nodes([], query_str=QUERY)
    with pytest.raises(RankingConnectionError):
        rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    with pytest.raises(RankingConnectionError):
        await rerank.apostprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    kinds = [type(event) for event in recorder.rerank_events()]
    assert kinds == [ReRankStartEvent, ReRankEndEvent] * 4
    await rerank.aclose()


async def test_the_events_sit_inside_a_span_around_the_call(
    reranker: NIMRerank, recorder: Recorder, spans: SimpleSpanHandler
) -> None:
    reranker.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    await reranker.apostprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    span_ids = [span.id_ for span in spans.completed_spans]
    sync_span = next(s for s in span_ids if s.startswith("NIMRerank._postprocess_nodes-"))
    async_span = next(s for s in span_ids if s.startswith("NIMRerank._apostprocess_nodes-"))
    events = recorder.rerank_events()
    assert [event.span_id for event in events] == [sync_span] * 2 + [async_span] * 2
    await reranker.aclose()


# -- unscored nodes and image nodes ----------------------------------------------------


def test_a_blank_node_is_unscored_none_and_ranks_last(reranker: NIMRerank) -> None:
    reranker.top_n = None
    nodes = make_nodes(["   ", *PASSAGES])
    ranked = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert ranked[-1].node is nodes[0].node
    assert ranked[-1].score is None
    assert all(isinstance(item.score, float) for item in ranked[:-1])


# The smallest PNG: a 1x1 transparent pixel.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PNG_B64 = base64.b64encode(PNG).decode("ascii")
PNG_URL = f"data:image/png;base64,{PNG_B64}"
VLM = "nvidia/llama-nemotron-rerank-vl-1b-v2"


def sent_passages(rerank: NIMRerank, server: RankingServer, nodes: list[Any]) -> list[Any]:
    """The passages NIMRerank sends for ``nodes`` (the server answers with a canned ranking)."""
    rankings = [{"index": i, "logit": float(-i)} for i in range(len(nodes))]
    server.inject_fault(200, {"rankings": rankings}, path="/v1/ranking")
    ranked = rerank.postprocess_nodes([NodeWithScore(node=n) for n in nodes], query_str=QUERY)
    assert [item.node for item in ranked] == nodes[: rerank.top_n]
    passages: list[Any] = server.requests[-1].body["passages"]
    return passages


def test_an_image_node_is_sent_as_a_data_url_with_its_text(ranking_server: RankingServer) -> None:
    rerank = NIMRerank(base_url=ranking_server.url, model=VLM)
    nodes = [
        ImageNode(image=PNG_B64, image_mimetype="image/png", text="Figure 3: the H100 die"),
        ImageNode(image=PNG_B64),  # no text, no mimetype: guessed from the bytes
        TextNode(text="H100 has 3 TB/s."),
    ]
    assert sent_passages(rerank, ranking_server, nodes) == [
        {"image": PNG_URL, "text": "Figure 3: the H100 die"},
        {"image": PNG_URL},  # an image-only passage has no text at all
        {"text": "H100 has 3 TB/s."},
    ]
    rerank.close()


def test_image_paths_and_media_resources_are_read_inline(
    ranking_server: RankingServer, tmp_path: Any
) -> None:
    picture = tmp_path / "die.png"
    picture.write_bytes(PNG)
    rerank = NIMRerank(base_url=ranking_server.url, model=VLM)
    nodes = [
        ImageNode(image_path=str(picture)),
        Document(image_resource=MediaResource(data=PNG), text="the die"),
        ImageNode(image_url=PNG_URL, text="a data URL"),
    ]
    assert sent_passages(rerank, ranking_server, nodes) == [
        {"image": PNG_URL},
        {"image": PNG_URL, "text": "the die"},
        {"image": PNG_URL, "text": "a data URL"},
    ]
    rerank.close()


def test_a_remote_image_url_is_refused_before_any_request(ranking_server: RankingServer) -> None:
    rerank = NIMRerank(base_url=ranking_server.url, model=VLM)
    node = ImageNode(image_url="https://example.com/die.png", text="the die")
    with pytest.raises(ValueError, match="inline"):
        rerank.postprocess_nodes([NodeWithScore(node=node)], query_str=QUERY)
    assert ranking_server.requests == []
    rerank.close()


# -- legacy callbacks ---------------------------------------------------------------------


class CallbackRecorder(BaseCallbackHandler):
    """Keeps every legacy callback event it is given."""

    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.events: list[tuple[str, CBEventType, dict[str, Any]]] = []

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        self.events.append(("start", event_type, dict(payload or {})))
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        self.events.append(("end", event_type, dict(payload or {})))

    def start_trace(self, trace_id: str | None = None) -> None:
        """Not recorded."""

    def end_trace(
        self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None
    ) -> None:
        """Not recorded."""


async def test_the_legacy_reranking_callback_events_carry_nvidias_payload(
    ranking_server: RankingServer,
) -> None:
    callbacks = CallbackRecorder()
    rerank = NIMRerank(
        base_url=ranking_server.url,
        model=MODEL,
        top_n=2,
        callback_manager=CallbackManager([callbacks]),
    )
    nodes = make_nodes(PASSAGES)
    for ranked in (
        rerank.postprocess_nodes(nodes, query_str=QUERY),
        await rerank.apostprocess_nodes(nodes, query_str=QUERY),
    ):
        (start_kind, start_type, start), (end_kind, end_type, end) = callbacks.events[-2:]
        assert (start_kind, end_kind) == ("start", "end")
        assert start_type is end_type is CBEventType.RERANKING
        assert start == {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: MODEL,
            EventPayload.QUERY_STR: QUERY,
            EventPayload.TOP_K: 2,
        }
        assert end == {EventPayload.NODES: ranked}
    assert len(callbacks.events) == 4
    await rerank.aclose()


async def test_a_failed_rerank_ends_its_callback_event_with_the_exception(dead_url: str) -> None:
    callbacks = CallbackRecorder()
    rerank = NIMRerank(
        base_url=dead_url, model=MODEL, max_retries=0, callback_manager=CallbackManager([callbacks])
    )
    with pytest.raises(RankingConnectionError):
        rerank.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    with pytest.raises(RankingConnectionError):
        await rerank.apostprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    assert [kind for kind, _, _ in callbacks.events] == ["start", "end"] * 2
    for _, _, payload in callbacks.events[1::2]:
        assert isinstance(payload[EventPayload.EXCEPTION], RankingConnectionError)
    await rerank.aclose()


@pytest.mark.parametrize("how", ["model_copy", "deep model_copy", "copy.deepcopy"])
def test_a_copy_has_clients_of_its_own(ranking_server: RankingServer, how: str) -> None:
    original = NIMRerank(base_url=ranking_server.url, model=MODEL, top_n=None)
    if how == "copy.deepcopy":
        duplicate = copy.deepcopy(original)
    else:
        duplicate = original.model_copy(deep=how.startswith("deep"))
    duplicate.max_batch_size = 1
    assert (
        original._clients.options.max_batch_size
        == original.max_batch_size
        == DEFAULT_OPTIONS.max_batch_size
    )
    original.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    duplicate.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)
    assert [len(r.body["passages"]) for r in ranking_server.requests] == [4, 1, 1, 1, 1]
    original.close()
    duplicate.close()


def test_a_pickled_reranker_works_with_its_options(ranking_server: RankingServer) -> None:
    original = NIMRerank(base_url=ranking_server.url, model=MODEL, max_batch_size=2, top_n=None)
    restored = pickle.loads(pickle.dumps(original))
    assert restored.model_dump() == original.model_dump()
    assert len(restored.postprocess_nodes(make_nodes(PASSAGES), query_str=QUERY)) == len(PASSAGES)
    assert [len(r.body["passages"]) for r in ranking_server.requests] == [2, 2]
    original.close()
    restored.close()
