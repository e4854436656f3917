"""``langchain_nimrank.NIMRerank`` without a network: construction and the mapping.

The ranking clients are replaced by fakes that rank passages by length, so
these tests check only what the adapter does: which options and texts reach
the client, and how its ranking becomes LangChain documents. The real client
against the embedded server is covered in tests/integration.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import pytest
from langchain_core.documents import BaseDocumentCompressor, Document

import langchain_nimrank.compressor as compressor_module
from langchain_nimrank import NIMRerank
from nimrank import DEFAULT_MODEL, MissingAPIKeyError, RankedPassage, RankingClient, RetryPolicy

FAKE_KEY = "nvapi-fake-key-for-tests-only"
LOCAL = "http://127.0.0.1:9/v1"  # never contacted: the clients are fakes


def _length_ranking(passages: Sequence[str], top_n: int | None) -> list[RankedPassage]:
    ranked = sorted(
        (RankedPassage(index, float(len(text)), text) for index, text in enumerate(passages)),
        key=lambda item: -len(item.text),
    )
    return ranked if top_n is None else ranked[:top_n]


class FakeRankingClient:
    """Stands in for ``RankingClient``: ranks longer passages first, records calls."""

    instances: ClassVar[list[FakeRankingClient]] = []

    def __init__(self, **options: Any) -> None:
        RankingClient(**options).close()  # the real client's validation
        self.options = options
        self.calls: list[tuple[str, list[str], int | None]] = []
        self.closed = False
        self.instances.append(self)

    def rank(
        self, query: str, passages: Sequence[str], *, top_n: int | None
    ) -> list[RankedPassage]:
        self.calls.append((query, list(passages), top_n))
        return _length_ranking(passages, top_n)

    def close(self) -> None:
        self.closed = True


class FakeAsyncRankingClient:
    """Stands in for ``AsyncRankingClient``; records the event loop it ran on."""

    instances: ClassVar[list[FakeAsyncRankingClient]] = []

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.calls: list[tuple[str, list[str], int | None]] = []
        self.loops: list[asyncio.AbstractEventLoop] = []
        self.closed = False
        self.instances.append(self)

    async def rank(
        self, query: str, passages: Sequence[str], *, top_n: int | None
    ) -> list[RankedPassage]:
        self.calls.append((query, list(passages), top_n))
        self.loops.append(asyncio.get_running_loop())
        return _length_ranking(passages, top_n)

    async def aclose(self) -> None:
        self.closed = True


@pytest.fixture
def fake_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakeRankingClient, "instances", [])
    monkeypatch.setattr(FakeAsyncRankingClient, "instances", [])
    monkeypatch.setattr(compressor_module, "RankingClient", FakeRankingClient)
    monkeypatch.setattr(compressor_module, "AsyncRankingClient", FakeAsyncRankingClient)


@pytest.fixture
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    monkeypatch.delenv("NVIDIA_NIM_API_KEY", raising=False)


def _documents() -> list[Document]:
    texts = ["short", "the longest text of all", "medium text", "tiny"]
    return [
        Document(page_content=text, metadata={"source": f"doc-{i}", "tags": ["a"]}, id=f"id-{i}")
        for i, text in enumerate(texts)
    ]


def _sync_fake() -> FakeRankingClient:
    return FakeRankingClient.instances[-1]


# -- construction ------------------------------------------------------------------


def test_is_a_langchain_document_compressor() -> None:
    assert issubclass(NIMRerank, BaseDocumentCompressor)


def test_defaults_are_nvidia_reranks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", FAKE_KEY)
    reranker = NIMRerank()
    assert reranker.top_n == 5
    assert reranker.max_batch_size == 32
    assert reranker.truncate is None
    assert reranker.base_url is None
    assert reranker.extra_headers == {}
    assert reranker.model == DEFAULT_MODEL


def test_client_option_defaults_are_the_clients() -> None:
    reranker = NIMRerank(base_url=LOCAL)
    with RankingClient(base_url=LOCAL) as client:
        for name in (
            "model",
            "protocol",
            "truncate",
            "max_batch_size",
            "max_concurrency",
            "timeout",
            "max_retries",
            "score_transform",
            "score_threshold",
        ):
            assert getattr(reranker, name) == getattr(client, name), name
        options = client.passage_options
        assert reranker.max_passage_chars == options.max_passage_chars
        assert reranker.chunking == options.chunking
    reranker.close()


def test_every_option_reaches_the_client(fake_clients: None) -> None:
    policy = RetryPolicy(initial_delay=0, max_delay=0, max_retry_after=0)
    NIMRerank(
        model="nvidia/nv-rerankqa-mistral-4b-v3",
        api_key=FAKE_KEY,
        base_url=LOCAL,
        truncate="END",
        max_batch_size=7,
        extra_headers={"X-Trace": "1"},
        max_concurrency=3,
        timeout=5.0,
        max_retries=1,
        max_passage_chars=100,
        chunking=True,
        chunk_overlap_chars=10,
        max_chunks_per_doc=4,
        score_transform="sigmoid",
        score_threshold=0.25,
        retry_policy=policy,
    )
    assert _sync_fake().options == {
        "model": "nvidia/nv-rerankqa-mistral-4b-v3",
        "api_key": FAKE_KEY,
        "base_url": LOCAL,
        "protocol": "nim",
        "truncate": "END",
        "max_batch_size": 7,
        "extra_headers": {"X-Trace": "1"},
        "max_concurrency": 3,
        "timeout": 5.0,
        "max_retries": 1,
        "max_passage_chars": 100,
        "chunking": True,
        "chunk_overlap_chars": 10,
        "max_chunks_per_doc": 4,
        "score_transform": "sigmoid",
        "score_threshold": 0.25,
        "retry_policy": policy,
    }


@pytest.mark.parametrize("spelling", ["api_key", "nvidia_api_key"])
def test_both_key_spellings_of_nvidia_rerank_are_accepted(
    fake_clients: None, spelling: str
) -> None:
    reranker = NIMRerank(base_url=LOCAL, **{spelling: FAKE_KEY})
    assert reranker.api_key is not None
    assert reranker.api_key.get_secret_value() == FAKE_KEY
    assert _sync_fake().options["api_key"] == FAKE_KEY


def test_passing_both_key_spellings_is_refused() -> None:
    with pytest.raises(ValueError, match="api_key or nvidia_api_key"):
        NIMRerank(base_url=LOCAL, api_key=FAKE_KEY, nvidia_api_key=FAKE_KEY + "-other")


def test_default_headers_is_accepted_for_extra_headers(fake_clients: None) -> None:
    reranker = NIMRerank(base_url=LOCAL, default_headers={"X-Team": "search"})
    assert reranker.extra_headers == {"X-Team": "search"}
    assert _sync_fake().options["extra_headers"] == {"X-Team": "search"}


def test_repr_never_shows_the_key_nor_header_values() -> None:
    reranker = NIMRerank(
        base_url=LOCAL, api_key=FAKE_KEY, extra_headers={"Authorization": f"Bearer {FAKE_KEY}"}
    )
    assert FAKE_KEY not in repr(reranker)
    assert FAKE_KEY not in str(reranker)
    assert "api_key=SecretStr('**********')" in repr(reranker)
    reranker.close()


def test_dumps_mask_the_key() -> None:
    reranker = NIMRerank(base_url=LOCAL, nvidia_api_key=FAKE_KEY)
    assert FAKE_KEY not in reranker.model_dump_json()
    assert FAKE_KEY not in str(reranker.model_dump())
    reranker.close()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"nvidia_api_key": FAKE_KEY + "-2"}, "not both"),  # a model-level error
        ({"top_n": -1}, "top_n"),  # a field error
        ({"top_k": 3}, "top_k"),  # an unknown parameter
    ],
)
def test_validation_errors_never_show_the_key(bad: dict[str, Any], message: str) -> None:
    # The key comes first: pydantic cuts long inputs short in the middle.
    with pytest.raises(ValueError, match=message) as caught:
        NIMRerank(api_key=FAKE_KEY, base_url=LOCAL, **bad)
    assert "nvapi" not in str(caught.value)


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match="top_k"):
        NIMRerank(base_url=LOCAL, top_k=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 513}, "max_batch_size"),
        ({"protocol": "cohere", "truncate": "END"}, "truncate"),
        ({"chunking": True}, "max_passage_chars"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_option_the_client_refuses_fails_at_construction(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        NIMRerank(base_url=LOCAL, **options)


def test_hosted_catalog_without_key_raises_missing_api_key(no_key_in_env: None) -> None:
    with pytest.raises(MissingAPIKeyError, match="NVIDIA_API_KEY"):
        NIMRerank()


def test_hosted_catalog_key_from_the_environment_is_used(
    monkeypatch: pytest.MonkeyPatch, fake_clients: None
) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", FAKE_KEY)
    reranker = NIMRerank()
    assert reranker.api_key is None  # the client reads the variable; it is not copied here
    assert _sync_fake().options["api_key"] is None


def test_model_none_means_the_default_model() -> None:
    reranker = NIMRerank(base_url=LOCAL, model=None)
    assert reranker.model == DEFAULT_MODEL
    reranker.model = None  # type: ignore[assignment]  # NVIDIARerank's model is Optional
    assert reranker.model == DEFAULT_MODEL
    reranker.close()


def test_negative_top_n_is_refused_on_assignment_too() -> None:
    reranker = NIMRerank(base_url=LOCAL)
    with pytest.raises(ValueError, match="top_n"):
        reranker.top_n = -1
    assert reranker.top_n == 5
    reranker.close()


# -- compress_documents ---------------------------------------------------------------


def test_compress_sends_page_contents_and_top_n(fake_clients: None) -> None:
    documents = _documents()
    NIMRerank(base_url=LOCAL, top_n=2).compress_documents(documents, "which is longest?")
    assert _sync_fake().calls == [("which is longest?", [doc.page_content for doc in documents], 2)]


def test_compress_returns_scored_copies_best_first(fake_clients: None) -> None:
    documents = _documents()
    result = NIMRerank(base_url=LOCAL, top_n=3).compress_documents(documents, "q")
    assert [doc.id for doc in result] == ["id-1", "id-2", "id-0"]
    assert [doc.metadata["relevance_score"] for doc in result] == [23.0, 11.0, 5.0]
    assert result[0].metadata["source"] == "doc-1"
    assert result[0].page_content == "the longest text of all"
    assert all(doc is not original for doc in result for original in documents)


def test_compress_leaves_the_input_documents_untouched(fake_clients: None) -> None:
    documents = _documents()
    before = [doc.model_dump() for doc in documents]
    metadata_objects = [doc.metadata for doc in documents]
    NIMRerank(base_url=LOCAL, top_n=None).compress_documents(documents, "q")
    assert [doc.model_dump() for doc in documents] == before
    assert all("relevance_score" not in doc.metadata for doc in documents)
    assert [doc.metadata for doc in documents] == metadata_objects


def test_compress_keeps_the_document_subclass(fake_clients: None) -> None:
    class TaggedDocument(Document):
        shelf: str = "A"

    documents = [TaggedDocument(page_content="x" * n, shelf=str(n)) for n in (1, 3, 2)]
    result = NIMRerank(base_url=LOCAL).compress_documents(documents, "q")
    assert [type(doc) for doc in result] == [TaggedDocument] * 3
    assert [doc.shelf for doc in result] == ["3", "2", "1"]  # type: ignore[attr-defined]


def test_compress_with_top_n_none_returns_every_document(fake_clients: None) -> None:
    result = NIMRerank(base_url=LOCAL, top_n=None).compress_documents(_documents(), "q")
    assert sorted(doc.id or "" for doc in result) == ["id-0", "id-1", "id-2", "id-3"]


def test_compress_refuses_plain_strings(fake_clients: None) -> None:
    reranker = NIMRerank(base_url=LOCAL)
    with pytest.raises(TypeError, match=r"documents\[1\] must be a langchain Document"):
        reranker.compress_documents([Document(page_content="a"), "b"], "q")  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a single one"):
        reranker.compress_documents(Document(page_content="a"), "q")  # type: ignore[arg-type]
    assert _sync_fake().calls == []


def test_top_n_assigned_later_is_used_without_a_new_client(fake_clients: None) -> None:
    reranker = NIMRerank(base_url=LOCAL)
    reranker.top_n = 1
    assert len(reranker.compress_documents(_documents(), "q")) == 1
    assert len(FakeRankingClient.instances) == 1


def test_client_option_assigned_later_gets_a_new_client(fake_clients: None) -> None:
    reranker = NIMRerank(base_url=LOCAL)
    reranker.max_batch_size = 4
    reranker.compress_documents(_documents(), "q")
    assert len(FakeRankingClient.instances) == 2
    assert _sync_fake().options["max_batch_size"] == 4
    assert _sync_fake().calls  # the new client did the ranking


def test_bad_option_assigned_later_fails_on_the_next_call() -> None:
    reranker = NIMRerank(base_url=LOCAL)
    reranker.max_batch_size = 0  # the client, not pydantic, knows the limit
    with pytest.raises(ValueError, match="max_batch_size"):
        reranker.compress_documents(_documents(), "q")
    reranker.close()


# -- acompress_documents ----------------------------------------------------------


async def test_acompress_uses_the_async_client_only(fake_clients: None) -> None:
    documents = _documents()
    reranker = NIMRerank(base_url=LOCAL, top_n=2)
    result = await reranker.acompress_documents(documents, "q")
    assert [doc.id for doc in result] == ["id-1", "id-2"]
    assert [doc.metadata["relevance_score"] for doc in result] == [23.0, 11.0]
    assert all("relevance_score" not in doc.metadata for doc in documents)
    (async_client,) = FakeAsyncRankingClient.instances
    assert async_client.calls == [("q", [doc.page_content for doc in documents], 2)]
    assert async_client.loops == [asyncio.get_running_loop()]
    assert _sync_fake().calls == []


async def test_acompress_does_not_fall_back_to_an_executor(
    fake_clients: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_executor(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("BaseDocumentCompressor's run_in_executor was used")

    monkeypatch.setattr("langchain_core.documents.compressor.run_in_executor", no_executor)
    assert len(await NIMRerank(base_url=LOCAL).acompress_documents(_documents(), "q")) == 4


async def test_one_async_client_serves_every_call_on_a_loop(fake_clients: None) -> None:
    reranker = NIMRerank(base_url=LOCAL)
    await reranker.acompress_documents(_documents(), "q")
    await reranker.acompress_documents(_documents(), "q")
    assert len(FakeAsyncRankingClient.instances) == 1
    assert FakeAsyncRankingClient.instances[0].options == _sync_fake().options


def test_one_async_client_serves_every_event_loop(fake_clients: None) -> None:
    # The client keeps a connection pool per event loop, so a second asyncio.run
    # needs no second client (tests/integration checks the real one).
    reranker = NIMRerank(base_url=LOCAL)
    asyncio.run(reranker.acompress_documents(_documents(), "q"))
    asyncio.run(reranker.acompress_documents(_documents(), "q"))
    (async_client,) = FakeAsyncRankingClient.instances
    first, second = async_client.loops
    assert first is not second


def test_client_option_assigned_later_gets_a_new_async_client_too(fake_clients: None) -> None:
    reranker = NIMRerank(base_url=LOCAL)
    asyncio.run(reranker.acompress_documents(_documents(), "q"))
    reranker.max_batch_size = 4
    asyncio.run(reranker.acompress_documents(_documents(), "q"))
    first, second = FakeAsyncRankingClient.instances
    assert (len(first.calls), len(second.calls)) == (1, 1)
    assert second.options == _sync_fake().options
    assert second.options["max_batch_size"] == 4


async def test_aclose_closes_the_async_client_and_the_sync_one(fake_clients: None) -> None:
    reranker = NIMRerank(base_url=LOCAL)
    await reranker.acompress_documents(_documents(), "q")
    await reranker.aclose()
    assert FakeAsyncRankingClient.instances[0].closed
    assert _sync_fake().closed
    # Usable again afterwards: the async client reopens by itself, the closed
    # sync client is replaced.
    await reranker.acompress_documents(_documents(), "q")
    reranker.compress_documents(_documents(), "q")
    assert len(FakeAsyncRankingClient.instances) == 1
    assert len(FakeAsyncRankingClient.instances[0].calls) == 2
    assert len(FakeRankingClient.instances) == 2
    assert _sync_fake().calls


# -- rerank (JinaRerank's shape) ----------------------------------------------------


def test_rerank_takes_strings_documents_and_text_dicts(fake_clients: None) -> None:
    reranker = NIMRerank(base_url=LOCAL, top_n=None)
    result = reranker.rerank(["ab", Document(page_content="abcd"), {"text": "abc"}], "q")
    assert result == [
        {"index": 1, "relevance_score": 4.0},
        {"index": 2, "relevance_score": 3.0},
        {"index": 0, "relevance_score": 2.0},
    ]
    assert _sync_fake().calls == [("q", ["ab", "abcd", "abc"], None)]


@pytest.mark.parametrize(("top_n", "sent"), [(-1, 5), (None, None), (2, 2), (0, 0)])
def test_rerank_top_n_minus_one_means_the_compressors(
    fake_clients: None, top_n: int | None, sent: int | None
) -> None:
    NIMRerank(base_url=LOCAL).rerank(["a", "b"], "q", top_n=top_n)
    assert _sync_fake().calls[-1][2] == sent


def test_rerank_default_top_n_is_the_compressors(fake_clients: None) -> None:
    NIMRerank(base_url=LOCAL, top_n=1).rerank(["a", "bb"], "q")
    assert _sync_fake().calls[-1][2] == 1


@pytest.mark.parametrize(
    "item",
    [{"page_content": "x"}, {"text": 3}, 7, None],
    ids=["no-text", "int-text", "int", "none"],
)
def test_rerank_refuses_what_has_no_text_before_any_request(fake_clients: None, item: Any) -> None:
    reranker = NIMRerank(base_url=LOCAL)
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        reranker.rerank(["fine", item], "q")
    assert _sync_fake().calls == []


def test_rerank_refuses_a_single_string(fake_clients: None) -> None:
    with pytest.raises(TypeError, match="not a single document"):
        # A str is a Sequence[str] to the type checker; only the runtime check catches it.
        NIMRerank(base_url=LOCAL).rerank("one passage", "q")


async def test_arerank_uses_the_async_client(fake_clients: None) -> None:
    result = await NIMRerank(base_url=LOCAL, top_n=1).arerank(["a", {"text": "abc"}], "q")
    assert result == [{"index": 1, "relevance_score": 3.0}]
    assert FakeAsyncRankingClient.instances[0].calls == [("q", ["a", "abc"], 1)]
    assert _sync_fake().calls == []


# -- copies ------------------------------------------------------------------------


def test_deepcopy_builds_its_own_client(fake_clients: None) -> None:
    reranker = NIMRerank(base_url=LOCAL, api_key=FAKE_KEY, extra_headers={"X": "1"}, top_n=2)
    clone = copy.deepcopy(reranker)
    assert clone.model_dump() == reranker.model_dump()
    assert clone.extra_headers is not reranker.extra_headers
    assert len(clone.compress_documents(_documents(), "q")) == 2
    assert len(FakeRankingClient.instances) == 2
    assert FakeRankingClient.instances[1].options["api_key"] == FAKE_KEY


def test_model_copy_with_a_new_option_does_not_reuse_the_old_client(fake_clients: None) -> None:
    reranker = NIMRerank(base_url=LOCAL)
    other = reranker.model_copy(update={"max_batch_size": 2})
    other.compress_documents(_documents(), "q")
    assert _sync_fake().options["max_batch_size"] == 2
    assert FakeRankingClient.instances[0].calls == []
