"""NIMRanker without a server: construction, serialization, and the Document mapping.

The ranking clients are replaced by fakes that record what the component asks
for and answer as the client's contract says (best first, blank passages last
with score None), so these tests check the adapter alone. tests/integration runs the
same component against the embedded server.
"""

from __future__ import annotations

import os

# Haystack decides on telemetry when it is imported; tests never phone home.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

import asyncio
import base64
import dataclasses
import enum
import importlib
import inspect
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from haystack import Document
from haystack.dataclasses import ByteStream
from haystack.utils import Secret

from haystack_integrations.components.rankers.nimrank import NIMRanker
from nimrank import (
    DEFAULT_OPTIONS,
    UNSET,
    MissingAPIKeyError,
    Passage,
    RankedPassage,
    RankingClient,
    RankingOptions,
    RetryPolicy,
    ServerError,
)

ranker_module = importlib.import_module("haystack_integrations.components.rankers.nimrank.ranker")
client_pair = importlib.import_module("nimrank.client_pair")

FAKE_KEY = "nvapi-fake-key-for-tests-only"


# -- fake clients ---------------------------------------------------------------


@dataclass
class RankCall:
    query: str
    passages: list[str | Passage]
    top_n: int | None
    score_threshold: Any


def fake_score(query: str, passage: str) -> float:
    """How many query words the passage holds: easy to reason about in a test."""
    words = set(passage.lower().replace(".", " ").split())
    return float(sum(word in words for word in query.lower().split()))


class FakeClient:
    """Stands in for nimrank.RankingClient, following its documented contract."""

    instances: ClassVar[list[FakeClient]] = []
    fail_with: ClassVar[Exception | None] = None

    def __init__(self, options: RankingOptions) -> None:
        self.options = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        self.calls: list[RankCall] = []
        self.closed = False
        type(self).instances.append(self)

    def _rank(
        self, query: str, passages: Sequence[str], top_n: int | None, score_threshold: Any
    ) -> list[RankedPassage]:
        self.calls.append(RankCall(query, list(passages), top_n, score_threshold))
        if FakeClient.fail_with is not None:
            raise FakeClient.fail_with
        ranked = [
            RankedPassage(i, fake_score(query, text) if text.strip() else None, text)
            for i, text in enumerate(p if isinstance(p, str) else p.text or "" for p in passages)
        ]
        ranked.sort(key=lambda p: math.inf if p.score is None else -p.score)  # stable
        threshold = self.options["score_threshold"] if score_threshold is UNSET else score_threshold
        if threshold is not None:
            ranked = [p for p in ranked if p.score is not None and p.score >= threshold]
        return ranked if top_n is None else ranked[:top_n]

    def rank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        top_n: int | None = None,
        score_threshold: Any = UNSET,
    ) -> list[RankedPassage]:
        return self._rank(query, passages, top_n, score_threshold)

    def close(self) -> None:
        self.closed = True


class FakeAsyncClient(FakeClient):
    """Stands in for nimrank.AsyncRankingClient."""

    instances: ClassVar[list[FakeClient]] = []

    async def rank(  # type: ignore[override]
        self,
        query: str,
        passages: Sequence[str],
        *,
        top_n: int | None = None,
        score_threshold: Any = UNSET,
    ) -> list[RankedPassage]:
        await asyncio.sleep(0)
        return self._rank(query, passages, top_n, score_threshold)

    async def aclose(self) -> None:
        self.closed = True

    def discard(self) -> None:
        self.closed = True


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Replace both ranking clients with the fakes, and forget earlier instances."""
    FakeClient.instances = []
    FakeAsyncClient.instances = []
    FakeClient.fail_with = None
    monkeypatch.setattr(client_pair, "RankingClient", FakeClient)
    monkeypatch.setattr(client_pair, "AsyncRankingClient", FakeAsyncClient)
    yield
    FakeClient.fail_with = None


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NVIDIA variables from the machine running the tests."""
    for name in ("NVIDIA_API_KEY", "NVIDIA_NIM_API_KEY", "NVIDIA_API_URL", "NVIDIA_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def sync_calls() -> list[RankCall]:
    return [call for client in FakeClient.instances for call in client.calls]


def async_calls() -> list[RankCall]:
    return [call for client in FakeAsyncClient.instances for call in client.calls]


def local_ranker(**options: Any) -> NIMRanker:
    return NIMRanker(api_url="http://127.0.0.1:9/v1", **options)


# -- construction -----------------------------------------------------------------

NVIDIA_RANKER_PARAMETERS = [
    "model",
    "truncate",
    "api_url",
    "api_key",
    "top_k",
    "query_prefix",
    "document_prefix",
    "meta_fields_to_embed",
    "embedding_separator",
    "timeout",
]


def test_constructor_starts_with_nvidia_rankers_parameters_in_its_order() -> None:
    parameters = list(inspect.signature(NIMRanker.__init__).parameters)[1:]
    assert parameters[: len(NVIDIA_RANKER_PARAMETERS)] == NVIDIA_RANKER_PARAMETERS
    ours = inspect.signature(NIMRanker.__init__).parameters
    assert all(
        ours[name].kind is inspect.Parameter.KEYWORD_ONLY
        for name in parameters[len(NVIDIA_RANKER_PARAMETERS) :]
    )


def test_defaults_follow_nvidia_ranker() -> None:
    ranker = NIMRanker()
    # As NvidiaRanker: None, the service's model (or the hosted default) decided by the client.
    assert ranker.model is None
    assert ranker.top_k == 5
    assert ranker.truncate is None
    assert ranker.api_url is None
    assert ranker.embedding_separator == "\n"
    assert ranker.meta_fields_to_embed == []
    assert ranker.api_key == Secret.from_env_var("NVIDIA_API_KEY", strict=False)


def test_positional_arguments_land_where_nvidia_ranker_puts_them() -> None:
    ranker = NIMRanker("org/model", "END", "http://127.0.0.1:9/v1", None, 3)
    assert (ranker.model, ranker.truncate, ranker.api_url, ranker.api_key, ranker.top_k) == (
        "org/model",
        "END",
        "http://127.0.0.1:9/v1",
        None,
        3,
    )


def test_construction_needs_no_key_even_for_the_hosted_catalog(clean_env: None) -> None:
    NIMRanker()  # the key is needed by warm_up, not to build or load a pipeline


@pytest.mark.parametrize("top_k", [0, -1])
def test_top_k_below_one_is_refused_at_init(top_k: int) -> None:
    with pytest.raises(ValueError, match="top_k"):
        NIMRanker(top_k=top_k)


def test_top_k_that_is_not_an_int_is_refused_at_init() -> None:
    with pytest.raises(TypeError, match="top_k"):
        NIMRanker(top_k=2.5)  # type: ignore[arg-type]


class TruncateMode(str, enum.Enum):
    """Shaped like nvidia-haystack's RankerTruncateMode."""

    NONE = "NONE"
    END = "END"


@pytest.mark.parametrize(
    ("given", "stored"),
    [(None, None), ("NONE", "NONE"), ("END", "END"), (TruncateMode.END, "END")],
)
def test_truncate_accepts_nvidia_values_and_enum_members(given: Any, stored: str | None) -> None:
    ranker = NIMRanker(truncate=given)
    assert ranker.truncate == stored
    assert type(ranker.truncate) is type(stored)  # a plain str, so YAML stays plain


@pytest.mark.parametrize("truncate", ["end", "START", ""])
def test_unknown_truncate_is_refused(truncate: str) -> None:
    with pytest.raises(ValueError, match="truncate"):
        NIMRanker(truncate=truncate)


def test_non_string_meta_field_is_refused() -> None:
    with pytest.raises(TypeError, match="meta_fields_to_embed"):
        NIMRanker(meta_fields_to_embed=["title", 3])  # type: ignore[list-item]


def test_component_supports_async_with_the_same_sockets_as_run() -> None:
    ranker = NIMRanker()
    assert ranker.__haystack_supports_async__ is True  # type: ignore[attr-defined]
    assert inspect.iscoroutinefunction(ranker.run_async)
    assert set(ranker.__haystack_input__._sockets_dict) == {  # type: ignore[attr-defined]
        "query",
        "documents",
        "top_k",
        "score_threshold",
    }
    assert set(ranker.__haystack_output__._sockets_dict) == {"documents"}  # type: ignore[attr-defined]


# -- serialization ------------------------------------------------------------------


def every_parameter_changed() -> NIMRanker:
    return NIMRanker(
        model="org/other-reranker",
        truncate="END",
        api_url="http://127.0.0.1:9/v1",
        api_key=Secret.from_env_var(["MY_RERANK_KEY", "NVIDIA_API_KEY"], strict=True),
        top_k=7,
        query_prefix="query: ",
        document_prefix="passage: ",
        meta_fields_to_embed=["title", "section"],
        embedding_separator=" | ",
        timeout=12.5,
        protocol="nim",
        max_batch_size=4,
        max_concurrency=2,
        max_retries=1,
        score_threshold=0.0,
        score_transform="sigmoid",
        max_passage_chars=400,
        chunking=True,
        chunk_overlap_chars=40,
        max_chunks_per_doc=3,
        retry_policy=RetryPolicy(max_retries=5, initial_delay=0),
        extra_headers={"X-Gateway": Secret.from_env_var("MY_RERANK_KEY"), "X-Team": "search"},
        http_transport="httpx",
    )


def test_to_dict_from_dict_round_trips_every_parameter() -> None:
    ranker = every_parameter_changed()
    data = ranker.to_dict()
    assert data["type"] == "haystack_integrations.components.rankers.nimrank.ranker.NIMRanker"
    init_parameters = set(inspect.signature(NIMRanker.__init__).parameters) - {"self"}
    assert set(data["init_parameters"]) == init_parameters
    default = NIMRanker().to_dict()["init_parameters"]
    changed = {k for k, v in data["init_parameters"].items() if default[k] != v}
    # "nim" is the only protocol without a URL; the response cap is left as it is.
    assert changed == init_parameters - {"protocol", "max_response_bytes"}

    restored = NIMRanker.from_dict(data)
    assert restored.to_dict() == data
    assert restored.api_key == Secret.from_env_var(["MY_RERANK_KEY", "NVIDIA_API_KEY"])


def test_to_dict_holds_the_key_reference_never_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", FAKE_KEY)
    data = NIMRanker().to_dict()
    assert data["init_parameters"]["api_key"] == {
        "type": "env_var",
        "env_vars": ["NVIDIA_API_KEY"],
        "strict": False,
    }
    assert FAKE_KEY not in repr(data)


def test_a_token_secret_is_refused_at_serialization() -> None:
    ranker = NIMRanker(api_key=Secret.from_token(FAKE_KEY))
    with pytest.raises(ValueError, match="token"):
        ranker.to_dict()


def test_no_key_round_trips_as_none() -> None:
    data = NIMRanker(api_key=None).to_dict()
    assert data["init_parameters"]["api_key"] is None
    assert NIMRanker.from_dict(data).api_key is None


def test_from_dict_leaves_its_input_untouched() -> None:
    data = every_parameter_changed().to_dict()
    snapshot = repr(data)
    NIMRanker.from_dict(data)
    assert repr(data) == snapshot


# -- clients and warm-up ---------------------------------------------------------------


def test_warm_up_creates_each_client_once(fakes: None) -> None:
    ranker = local_ranker()
    ranker.warm_up()
    ranker.warm_up()
    assert len(FakeClient.instances) == 1
    assert len(FakeAsyncClient.instances) == 1


def test_run_without_warm_up_creates_the_client_on_first_use(fakes: None) -> None:
    ranker = local_ranker()
    ranker.run("berlin", [Document(content="berlin")])
    ranker.run("berlin", [Document(content="berlin")])
    assert len(FakeClient.instances) == 1
    assert len(sync_calls()) == 2


def test_options_reach_the_client(
    fakes: None, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_RERANK_KEY", FAKE_KEY)
    ranker = every_parameter_changed()
    ranker.warm_up()
    assert FakeClient.instances[0].options == {
        "model": "org/other-reranker",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": FAKE_KEY,
        "protocol": "nim",
        "truncate": "END",
        "max_batch_size": 4,
        "max_concurrency": 2,
        "timeout": 12.5,
        "max_retries": 1,
        "max_passage_chars": 400,
        "chunking": True,
        "chunk_overlap_chars": 40,
        "max_chunks_per_doc": 3,
        "score_transform": "sigmoid",
        "score_threshold": 0.0,
        "retry_policy": RetryPolicy(max_retries=5, initial_delay=0),
        "extra_headers": {"X-Gateway": FAKE_KEY, "X-Team": "search"},
        "max_response_bytes": DEFAULT_OPTIONS.max_response_bytes,
        "http_transport": "httpx",
    }


def test_the_key_is_resolved_from_its_secret(
    fakes: None, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_RERANK_KEY", FAKE_KEY)
    local_ranker(api_key=Secret.from_env_var("MY_RERANK_KEY")).warm_up()
    assert FakeClient.instances[0].options["api_key"] == FAKE_KEY


def test_a_strict_secret_that_is_unset_fails_at_warm_up(fakes: None, clean_env: None) -> None:
    ranker = local_ranker(api_key=Secret.from_env_var("MY_UNSET_RERANK_KEY"))
    with pytest.raises(ValueError, match="MY_UNSET_RERANK_KEY"):
        ranker.warm_up()


def test_url_and_timeout_fall_back_to_nvidia_environment_variables(
    fakes: None, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVIDIA_API_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("NVIDIA_TIMEOUT", "7")
    ranker = NIMRanker()
    ranker.warm_up()
    # The client reads NVIDIA_API_URL (the core's one rule for every adapter).
    assert FakeClient.instances[0].options["base_url"] is None
    assert RankingClient(ranker._clients.options).endpoints.ranking_url == (
        "http://127.0.0.1:9/v1/ranking"
    )
    assert FakeClient.instances[0].options["timeout"] == 7.0
    assert ranker.to_dict()["init_parameters"]["api_url"] is None  # stays an env lookup


def test_timeout_defaults_to_sixty_seconds(fakes: None, clean_env: None) -> None:
    local_ranker().warm_up()
    assert FakeClient.instances[0].options["timeout"] == 60.0


HOSTED_DEFAULT_MODEL_URL = (
    "https://ai.api.nvidia.com/v1/retrieval/nvidia/llama-nemotron-rerank-1b-v2/reranking"
)


@pytest.mark.parametrize(
    ("api_url", "env_url"),
    [
        ("https://integrate.api.nvidia.com/v1", None),
        ("https://integrate.api.nvidia.com/v1/", None),
        (None, "https://integrate.api.nvidia.com/v1"),
    ],
)
def test_nvidia_rankers_catalog_url_ranks_at_the_hosted_per_model_url(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, api_url: str | None, env_url: str | None
) -> None:
    # The real clients, never contacted: warm_up only resolves their URLs.
    if env_url is not None:
        monkeypatch.setenv("NVIDIA_API_URL", env_url)
    ranker = NIMRanker(api_url=api_url, api_key=Secret.from_token(FAKE_KEY))
    ranker.warm_up()
    assert ranker._clients.sync.endpoints.ranking_url == HOSTED_DEFAULT_MODEL_URL
    assert ranker._clients.async_.endpoints.ranking_url == HOSTED_DEFAULT_MODEL_URL
    ranker.close()


def test_nvidia_rankers_catalog_url_without_a_key_fails_at_warm_up(clean_env: None) -> None:
    ranker = NIMRanker(api_url="https://integrate.api.nvidia.com/v1")
    with pytest.raises(MissingAPIKeyError):
        ranker.warm_up()


def test_hosted_catalog_without_a_key_fails_at_warm_up(clean_env: None) -> None:
    ranker = NIMRanker()
    with pytest.raises(MissingAPIKeyError):
        ranker.warm_up()


def test_invalid_client_option_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        local_ranker(max_batch_size=0)


def test_an_assigned_option_is_checked_at_once_and_a_bad_one_changes_nothing(
    fakes: None,
) -> None:
    ranker = local_ranker()
    ranker.run("berlin", [Document(content="berlin")])
    ranker.max_batch_size = 4
    assert FakeClient.instances[0].closed  # the old client, rebuilt on next use
    with pytest.raises(ValueError, match="max_batch_size"):
        ranker.max_batch_size = 0
    assert ranker.max_batch_size == 4
    assert ranker.to_dict()["init_parameters"]["max_batch_size"] == 4
    ranker.run("berlin", [Document(content="berlin")])
    assert FakeClient.instances[-1].options["max_batch_size"] == 4


def test_an_assigned_adapter_parameter_is_checked_too() -> None:
    ranker = local_ranker()
    with pytest.raises(ValueError, match="top_k"):
        ranker.top_k = 0
    with pytest.raises(TypeError, match="meta_fields_to_embed"):
        ranker.meta_fields_to_embed = [3]  # type: ignore[list-item]
    assert (ranker.top_k, ranker.meta_fields_to_embed) == (5, [])


def test_close_closes_the_sync_client_and_a_later_run_reopens(fakes: None) -> None:
    ranker = local_ranker()
    ranker.run("berlin", [Document(content="berlin")])
    ranker.close()
    assert FakeClient.instances[0].closed
    # The real client reopens its pool on use; the component keeps it.
    ranker.run("berlin", [Document(content="berlin")])
    assert len(sync_calls()) == 2


async def test_close_async_closes_both_clients_and_a_later_run_async_reuses_the_async_one(
    fakes: None,
) -> None:
    ranker = local_ranker()
    ranker.run("berlin", [Document(content="berlin")])
    await ranker.run_async("berlin", [Document(content="berlin")])
    await ranker.close_async()
    assert FakeClient.instances[0].closed
    assert FakeAsyncClient.instances[0].closed
    # The real async client reopens connections on its own after aclose().
    await ranker.run_async("berlin", [Document(content="berlin")])
    assert len(FakeAsyncClient.instances) == 1
    assert len(async_calls()) == 2


# -- the mapping ------------------------------------------------------------------------


def test_passage_text_is_prefix_then_meta_values_then_content(fakes: None) -> None:
    ranker = local_ranker(
        query_prefix="query: ",
        document_prefix="passage: ",
        meta_fields_to_embed=["title", "year", "missing", "empty"],
        embedding_separator=" | ",
    )
    document = Document(
        content="Berlin is big.", meta={"title": "Berlin", "year": 2024, "empty": ""}
    )
    ranker.run("berlin", [document])
    assert sync_calls()[0].query == "query: berlin"
    assert sync_calls()[0].passages == ["passage: Berlin | 2024 | Berlin is big."]


def test_without_options_the_passage_is_the_content(fakes: None) -> None:
    local_ranker().run("berlin", [Document(content="Berlin is big.", meta={"title": "x"})])
    assert sync_calls()[0].passages == ["Berlin is big."]


def test_documents_come_back_best_first_with_the_rerank_score(fakes: None) -> None:
    documents = [
        Document(content="Paris is in France.", score=9.0),
        Document(content="Berlin is the capital of Germany.", score=1.0),
        Document(content="Germany borders France.", score=5.0),
    ]
    result = local_ranker().run("capital of germany", documents)
    assert [d.content for d in result["documents"]] == [
        "Berlin is the capital of Germany.",
        "Germany borders France.",
        "Paris is in France.",
    ]
    assert [d.score for d in result["documents"]] == [3.0, 1.0, 0.0]


def test_outputs_are_copies_and_inputs_are_not_mutated(fakes: None) -> None:
    document = Document(content="Berlin", meta={"city": "Berlin"}, score=0.25)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Haystack warns on in-place mutation of a Document
        (output,) = local_ranker().run("berlin", [document])["documents"]
    assert output is not document
    assert document.score == 0.25
    assert output.score == 1.0
    assert (output.id, output.content, output.meta) == (
        document.id,
        document.content,
        document.meta,
    )


def test_documents_without_content_rank_last_with_no_score(fakes: None) -> None:
    documents = [
        Document(content=None, meta={"title": "Berlin berlin berlin"}),
        Document(content="Paris"),
        Document(content="   "),
        Document(content="Berlin"),
    ]
    ranker = local_ranker(meta_fields_to_embed=["title"], document_prefix="passage: ")
    result = ranker.run("berlin", documents)["documents"]
    # Not sent at all: not even their meta fields or the prefix.
    assert sync_calls()[0].passages == ["", "passage: Paris", "", "passage: Berlin"]
    assert [d.content for d in result] == ["Berlin", "Paris", None, "   "]
    assert [d.score for d in result] == [1.0, 0.0, None, None]


def test_documents_without_content_are_left_out_when_a_threshold_applies(fakes: None) -> None:
    # -inf keeps every scored passage: only the adapter can drop one with no content.
    documents = [Document(content=None), Document(content="Berlin")]
    result = local_ranker().run("berlin", documents, score_threshold=-math.inf)["documents"]
    assert [d.content for d in result] == ["Berlin"]


def test_duplicate_documents_are_ranked_and_returned_once(fakes: None) -> None:
    berlin = Document(content="Berlin", score=0.1)
    again = Document(content="Berlin", score=0.9)
    assert berlin.id == again.id  # Haystack ids hash the content, not the score
    documents = [berlin, Document(content="Paris"), again, berlin]
    result = local_ranker().run("berlin", documents)["documents"]
    assert sync_calls()[0].passages == ["Berlin", "Paris"]
    assert [d.content for d in result] == ["Berlin", "Paris"]


def test_of_duplicate_ids_the_copy_with_the_best_incoming_score_is_kept(fakes: None) -> None:
    # What Haystack's own rankers and joiners keep (haystack.utils.misc._deduplicate_documents).
    documents = [
        Document(id="d1", content="Berlin", meta={"copy": "first"}, score=0.1),
        Document(id="d1", content="Berlin", meta={"copy": "best"}, score=0.9),
        Document(id="d1", content="Berlin", meta={"copy": "tie"}, score=0.9),
        Document(id="d1", content="Berlin", meta={"copy": "unscored"}),
    ]
    (only,) = local_ranker().run("berlin", documents)["documents"]
    assert only.meta == {"copy": "best"}
    assert only.score == 1.0


def test_of_unscored_duplicates_the_first_is_kept(fakes: None) -> None:
    documents = [Document(id="d1", content="a", meta={"n": 1}), Document(id="d1", content="b")]
    (only,) = local_ranker().run("a", documents)["documents"]
    assert only.meta == {"n": 1}


def test_documents_with_the_same_text_but_different_ids_are_all_returned(fakes: None) -> None:
    documents = [Document(id="a", content="Berlin"), Document(id="b", content="Berlin")]
    result = local_ranker().run("berlin", documents)["documents"]
    assert [d.id for d in result] == ["a", "b"]
    assert [d.score for d in result] == [1.0, 1.0]


def test_empty_documents_give_empty_output_without_a_client(fakes: None) -> None:
    assert local_ranker().run("berlin", []) == {"documents": []}
    assert FakeClient.instances == []


def test_top_k_and_threshold_default_to_the_init_values(fakes: None) -> None:
    local_ranker(top_k=2, score_threshold=1.5).run("berlin", [Document(content="x")])
    # The threshold is the client's own option, used when the call names none.
    assert (sync_calls()[0].top_n, sync_calls()[0].score_threshold) == (2, UNSET)
    assert FakeClient.instances[0].options["score_threshold"] == 1.5


def test_runtime_values_override_init_values_even_when_falsy(fakes: None) -> None:
    ranker = local_ranker(top_k=2, score_threshold=1.5)
    ranker.run("berlin", [Document(content="x")], top_k=1, score_threshold=0.0)
    assert (sync_calls()[0].top_n, sync_calls()[0].score_threshold) == (1, 0.0)


def test_threshold_zero_at_runtime_drops_negative_scores_only(fakes: None) -> None:
    # The fake scores word overlap, so nothing is negative: everything stays.
    documents = [Document(content="Berlin"), Document(content="Paris")]
    result = local_ranker(score_threshold=1.0).run("berlin", documents, score_threshold=0.0)
    assert [d.content for d in result["documents"]] == ["Berlin", "Paris"]


def test_top_k_limits_the_output(fakes: None) -> None:
    documents = [Document(content=f"berlin {i}") for i in range(6)]
    assert len(local_ranker(top_k=5).run("berlin", documents)["documents"]) == 5
    assert len(local_ranker(top_k=5).run("berlin", documents, top_k=2)["documents"]) == 2


@pytest.mark.parametrize("top_k", [0, -3])
def test_top_k_below_one_is_refused_at_run(fakes: None, top_k: int) -> None:
    with pytest.raises(ValueError, match="top_k"):
        local_ranker().run("berlin", [Document(content="x")], top_k=top_k)
    assert sync_calls() == []


@pytest.mark.parametrize("query", ["", "   "])
def test_a_blank_query_is_refused_even_with_a_prefix(fakes: None, query: str) -> None:
    with pytest.raises(ValueError, match="query"):
        local_ranker(query_prefix="query: ").run(query, [Document(content="x")])


def test_something_other_than_a_document_is_refused(fakes: None) -> None:
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        local_ranker().run("berlin", [Document(content="x"), "y"])  # type: ignore[list-item]


def test_a_ranking_error_propagates_as_the_clients_error(fakes: None) -> None:
    FakeClient.fail_with = ServerError(
        "HTTP 503", status_code=503, server_message="busy", url="http://127.0.0.1:9/v1/ranking"
    )
    with pytest.raises(ServerError) as caught:
        local_ranker().run("berlin", [Document(content="x")])
    assert caught.value is FakeClient.fail_with


# -- async ---------------------------------------------------------------------------------


async def test_run_async_uses_the_async_client_and_ranks_like_run(fakes: None) -> None:
    documents = [Document(content="Paris"), Document(content="Berlin berlin"), Document()]
    ranker = local_ranker(top_k=3, document_prefix="p: ")
    asynchronous = await ranker.run_async("berlin", documents)
    assert sync_calls() == []
    synchronous = ranker.run("berlin", documents)
    assert asynchronous == synchronous
    assert async_calls() == sync_calls()


async def test_run_async_overrides_like_run(fakes: None) -> None:
    ranker = local_ranker(top_k=2, score_threshold=1.5)
    await ranker.run_async("berlin", [Document(content="x")], top_k=1, score_threshold=0.0)
    assert (async_calls()[0].top_n, async_calls()[0].score_threshold) == (1, 0.0)


async def test_run_async_with_no_documents_sends_nothing(fakes: None) -> None:
    assert await local_ranker().run_async("berlin", []) == {"documents": []}
    assert FakeAsyncClient.instances == []


async def test_run_async_refuses_top_k_below_one(fakes: None) -> None:
    with pytest.raises(ValueError, match="top_k"):
        await local_ranker().run_async("berlin", [Document(content="x")], top_k=0)


async def test_warm_up_async_creates_each_client_once(fakes: None) -> None:
    ranker = local_ranker()
    await ranker.warm_up_async()
    await ranker.warm_up_async()
    await ranker.run_async("berlin", [Document(content="x")])
    assert len(FakeClient.instances) == 1
    assert len(FakeAsyncClient.instances) == 1


def test_one_async_client_serves_every_event_loop(fakes: None) -> None:
    # The client keeps a connection pool per event loop, so a second asyncio.run
    # needs no second client (tests/integration checks the real one).
    ranker = local_ranker()
    documents = [Document(content="berlin")]
    asyncio.run(ranker.run_async("berlin", documents))
    asyncio.run(ranker.run_async("berlin", documents))

    async def twice() -> None:
        await ranker.run_async("berlin", documents)
        await ranker.run_async("berlin", documents)

    asyncio.run(twice())
    assert len(FakeAsyncClient.instances) == 1
    assert len(async_calls()) == 4


# -- images -------------------------------------------------------------------------

PNG = base64.b64encode(b"\x89PNG fake image bytes").decode()


def test_an_image_blob_is_sent_as_a_data_url_with_the_text(fakes: None) -> None:
    document = Document(
        content="a chart", blob=ByteStream(b"\x89PNG fake image bytes", mime_type="image/png")
    )
    local_ranker().run("chart", [document])
    (passage,) = sync_calls()[0].passages
    assert passage == Passage(text="a chart", image=f"data:image/png;base64,{PNG}")


def test_an_image_only_document_is_sent_without_text(fakes: None) -> None:
    image = f"data:image/png;base64,{PNG}"
    local_ranker().run("chart", [Document(meta={"image": image})])
    assert sync_calls()[0].passages == [Passage(image=image)]


def test_a_blob_that_is_not_an_image_is_not_sent_as_one(fakes: None) -> None:
    document = Document(content="notes", blob=ByteStream(b"%PDF", mime_type="application/pdf"))
    local_ranker().run("notes", [document])
    assert sync_calls()[0].passages == ["notes"]
