"""``langchain_nimrank.NIMRerank`` without requests: fields, aliases, assignment, dumps, copies.

No test here sends a request (the local URL is never contacted); what the
compressor sends and returns is covered against the embedded server in
tests/integration/test_langchain_retriever.py.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest
from langchain_core.documents import BaseDocumentCompressor, Document

from langchain_nimrank import NIMRerank
from nimrank import (
    DEFAULT_OPTIONS,
    MissingAPIKeyError,
    RankingOptions,
    RetryPolicy,
    describe_option,
)

FAKE_KEY = "nvapi-fake-key-for-tests-only"
HEADER_SECRET = "proxy-token-for-tests-only"
LOCAL = "http://127.0.0.1:9/v1"  # never contacted
OTHER = "http://127.0.0.1:10/v1"

#: The compressor's name for each nimrank option it does not spell as the core does.
RENAMED = {"extra_headers": "default_headers"}


@pytest.fixture
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NVIDIA_API_KEY", "NVIDIA_NIM_API_KEY", "NVIDIA_BASE_URL", "NVIDIA_API_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def reranker() -> Any:
    made = NIMRerank(base_url=LOCAL)
    yield made
    made.close()


def _options(reranker: NIMRerank) -> RankingOptions:
    return reranker._clients.options


# -- fields are nimrank's options --------------------------------------------------


def test_is_a_langchain_document_compressor() -> None:
    assert issubclass(NIMRerank, BaseDocumentCompressor)


def test_every_nimrank_option_is_a_field_with_the_cores_default_and_description() -> None:
    fields = NIMRerank.model_fields
    for option in dataclasses.fields(RankingOptions):
        name = RENAMED.get(option.name, option.name)
        assert name in fields, f"nimrank option {option.name} has no field"
        assert fields[name].description == describe_option(option.name)
        default = fields[name].get_default(call_default_factory=True)
        if option.name == "extra_headers":
            assert default == dict(DEFAULT_OPTIONS.extra_headers)
        else:
            assert default == getattr(DEFAULT_OPTIONS, option.name), name


def test_defaults_are_the_cores_and_nvidia_reranks_top_n(reranker: NIMRerank) -> None:
    assert _options(reranker) == DEFAULT_OPTIONS.replace(base_url=LOCAL)
    assert reranker.top_n == 5
    assert reranker.model is None  # discovered from the server, or the hosted default


def test_every_option_reaches_the_clients() -> None:
    policy = RetryPolicy(initial_delay=0, max_delay=0, max_retry_after=0)
    given: dict[str, Any] = {
        "model": "nvidia/nv-rerankqa-mistral-4b-v3",
        "base_url": LOCAL,
        "truncate": "END",
        "max_batch_size": 7,
        "max_concurrency": 3,
        "timeout": 5.0,
        "max_retries": 1,
        "retry_policy": policy,
        "max_passage_chars": 100,
        "chunking": True,
        "chunk_overlap_chars": 10,
        "max_chunks_per_doc": 4,
        "score_transform": "sigmoid",
        "score_threshold": 0.25,
        "max_response_bytes": 65536,
    }
    reranker = NIMRerank(api_key=FAKE_KEY, default_headers={"X-Trace": "1"}, **given)
    assert _options(reranker) == RankingOptions(
        api_key=FAKE_KEY, extra_headers={"X-Trace": "1"}, **given
    )
    reranker.close()


# -- NVIDIARerank's spellings ----------------------------------------------------


@pytest.mark.parametrize("spelling", ["api_key", "nvidia_api_key"])
def test_both_key_spellings_are_accepted(spelling: str) -> None:
    reranker = NIMRerank(base_url=LOCAL, **{spelling: FAKE_KEY})
    assert reranker.api_key is not None
    assert reranker.api_key.get_secret_value() == FAKE_KEY
    assert _options(reranker).api_key == FAKE_KEY
    reranker.close()


def test_nvidia_api_key_wins_over_api_key_as_in_nvidia_rerank() -> None:
    reranker = NIMRerank(base_url=LOCAL, api_key="low-" + FAKE_KEY, nvidia_api_key=FAKE_KEY)
    assert _options(reranker).api_key == FAKE_KEY
    reranker.close()


@pytest.mark.parametrize("spelling", ["base_url", "nvidia_base_url"])
def test_both_base_url_spellings_are_accepted(spelling: str) -> None:
    reranker = NIMRerank(**{spelling: LOCAL})
    assert reranker.base_url == LOCAL
    reranker.close()


def test_nvidia_base_url_wins_over_base_url_as_in_nvidia_rerank() -> None:
    reranker = NIMRerank(base_url=OTHER, nvidia_base_url=LOCAL)
    assert reranker.base_url == LOCAL
    reranker.close()


def test_default_headers_are_readable_back_under_both_names() -> None:
    reranker = NIMRerank(base_url=LOCAL, default_headers={"X-Team": "search"})
    assert reranker.default_headers == {"X-Team": "search"}
    assert reranker.extra_headers == {"X-Team": "search"}
    assert dict(_options(reranker).extra_headers) == {"X-Team": "search"}
    reranker.close()


def test_extra_headers_is_accepted_and_default_headers_wins() -> None:
    reranker = NIMRerank(base_url=LOCAL, extra_headers={"X-A": "1"})
    assert reranker.default_headers == {"X-A": "1"}
    both = NIMRerank(base_url=LOCAL, extra_headers={"X-A": "1"}, default_headers={"X-B": "2"})
    assert both.default_headers == {"X-B": "2"}
    both.extra_headers = {"X-C": "3"}
    assert dict(_options(both).extra_headers) == {"X-C": "3"}
    reranker.close()
    both.close()


@pytest.mark.parametrize("enabled", [False, True, None])
def test_nvidia_reranks_telemetry_switch_is_accepted_and_changes_nothing(
    enabled: bool | None,
) -> None:
    reranker = NIMRerank(base_url=LOCAL, usage_telemetry_enabled=enabled)
    assert _options(reranker) == DEFAULT_OPTIONS.replace(base_url=LOCAL)
    assert "usage_telemetry_enabled" not in reranker.model_dump()
    reranker.close()


def test_an_empty_nvidia_api_key_falls_back_to_api_key() -> None:
    reranker = NIMRerank(base_url=LOCAL, api_key=FAKE_KEY, nvidia_api_key="")
    assert _options(reranker).api_key == FAKE_KEY
    reranker.close()


def test_unknown_parameter_is_refused() -> None:
    with pytest.raises(ValueError, match="top_k"):
        NIMRerank(base_url=LOCAL, top_k=3)


# -- construction checks ---------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_batch_size": 513}, "max_batch_size"),
        ({"protocol": "cohere", "truncate": "END"}, "truncate"),
        ({"chunking": True}, "max_passage_chars"),
        ({"timeout": 0}, "timeout"),
        ({"truncate": "START"}, "truncate"),
        ({"max_batch_size": "8"}, "max_batch_size"),  # not coerced
    ],
)
def test_option_nimrank_refuses_fails_at_construction(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        NIMRerank(base_url=LOCAL, **options)


def test_hosted_catalog_without_key_raises_missing_api_key(no_key_in_env: None) -> None:
    with pytest.raises(MissingAPIKeyError, match="NVIDIA_API_KEY"):
        NIMRerank()


def test_nvidia_base_url_from_the_environment_is_the_cores_business(
    monkeypatch: pytest.MonkeyPatch, no_key_in_env: None
) -> None:
    # No key needed: the variable names a self-hosted service, not the hosted catalog.
    monkeypatch.setenv("NVIDIA_BASE_URL", LOCAL)
    reranker = NIMRerank()
    assert reranker.base_url is None  # passed through; the client reads the variable
    assert reranker._clients.sync.endpoints.ranking_url == LOCAL + "/ranking"
    explicit = NIMRerank(base_url=OTHER)
    assert explicit._clients.sync.endpoints.ranking_url == OTHER + "/ranking"
    reranker.close()
    explicit.close()


# -- assignment --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "bad"),
    [("max_batch_size", 0), ("timeout", -1.0), ("truncate", "START"), ("max_batch_size", "2")],
)
def test_bad_assignment_raises_at_once_and_keeps_the_old_value(
    reranker: NIMRerank, name: str, bad: Any
) -> None:
    before = _options(reranker)
    with pytest.raises(ValueError, match=name):
        setattr(reranker, name, bad)
    assert getattr(reranker, name) == getattr(before, name)
    assert _options(reranker) == before


def test_assignment_that_loses_the_key_is_refused(no_key_in_env: None) -> None:
    reranker = NIMRerank(base_url=LOCAL)
    with pytest.raises(MissingAPIKeyError):
        reranker.base_url = None  # the hosted catalog, with no key
    assert reranker.base_url == LOCAL
    assert _options(reranker).base_url == LOCAL
    reranker.close()


def test_assignment_rebuilds_the_clients_and_closes_the_old_ones(
    reranker: NIMRerank, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = reranker._clients.sync
    closed: list[bool] = []
    monkeypatch.setattr(old, "close", lambda: closed.append(True))
    reranker.max_batch_size = 4
    assert closed == [True]
    assert reranker._clients.sync is not old
    assert reranker._clients.sync.options.max_batch_size == 4


def test_top_n_is_checked_on_assignment_and_needs_no_new_client(reranker: NIMRerank) -> None:
    client = reranker._clients.sync
    reranker.top_n = 1
    with pytest.raises(ValueError, match="top_n"):
        reranker.top_n = -1
    assert reranker.top_n == 1
    assert reranker._clients.sync is client


def test_headers_assigned_later_reach_the_clients(reranker: NIMRerank) -> None:
    reranker.default_headers = {"X-New": "1"}
    assert dict(_options(reranker).extra_headers) == {"X-New": "1"}


# -- secrets -----------------------------------------------------------------------


def _with_secrets() -> NIMRerank:
    return NIMRerank(
        base_url=LOCAL, api_key=FAKE_KEY, default_headers={"X-Proxy-Token": HEADER_SECRET}
    )


def test_repr_and_dumps_never_show_the_key_nor_header_values() -> None:
    reranker = _with_secrets()
    for shown in (repr(reranker), str(reranker), reranker.model_dump_json()):
        assert FAKE_KEY not in shown
        assert HEADER_SECRET not in shown
    dumped = reranker.model_dump()
    assert FAKE_KEY not in str(dumped)
    assert HEADER_SECRET not in str(dumped)
    assert dumped["default_headers"] == {"X-Proxy-Token": "**********"}  # names kept
    reranker.close()


@pytest.mark.parametrize(
    ("bad", "message"),
    [({"top_n": -1}, "top_n"), ({"top_k": 3}, "top_k"), ({"max_batch_size": 0}, "max_batch")],
    ids=["field", "unknown", "core"],
)
def test_validation_errors_never_show_the_key(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        NIMRerank(api_key=FAKE_KEY, base_url=LOCAL, **bad)
    assert "nvapi" not in str(caught.value)


def test_pickle_travels_without_the_key() -> None:
    reranker = _with_secrets()
    pickled = pickle.dumps(reranker)
    assert FAKE_KEY.encode() not in pickled
    clone = pickle.loads(pickled)
    assert clone.api_key is None
    assert _options(clone) == _options(reranker).replace(api_key=None)
    assert clone._clients is not reranker._clients
    reranker.close()
    clone.close()


# -- copies --------------------------------------------------------------------------


def test_copies_have_clients_of_their_own_and_keep_the_key() -> None:
    reranker = _with_secrets()
    for clone in (copy.copy(reranker), copy.deepcopy(reranker), reranker.model_copy()):
        assert clone._clients is not reranker._clients
        assert _options(clone) == _options(reranker)
        clone.max_batch_size = 2
        assert _options(reranker).max_batch_size == DEFAULT_OPTIONS.max_batch_size
        clone.close()
    deep = copy.deepcopy(reranker)
    assert deep.default_headers is not reranker.default_headers
    deep.close()
    reranker.close()


def test_model_copy_with_an_update_uses_the_new_option(reranker: NIMRerank) -> None:
    other = reranker.model_copy(update={"max_batch_size": 2})
    assert _options(other).max_batch_size == 2
    assert _options(reranker).max_batch_size == DEFAULT_OPTIONS.max_batch_size
    with pytest.raises(ValueError, match="max_batch_size"):
        reranker.model_copy(update={"max_batch_size": 0})
    other.close()


# -- argument checks before any request ---------------------------------------------


def test_compress_refuses_plain_strings_and_a_single_document(reranker: NIMRerank) -> None:
    with pytest.raises(TypeError, match=r"documents\[1\] must be a langchain Document"):
        reranker.compress_documents([Document(page_content="a"), "b"], "q")  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not a single document"):
        reranker.compress_documents(Document(page_content="a"), "q")  # type: ignore[arg-type]


@pytest.mark.parametrize("image", ["an image", "https://example.com/cat.png", b"\x89PNG"])
def test_an_image_that_is_not_a_base64_data_url_is_a_value_error(
    reranker: NIMRerank, image: Any
) -> None:
    documents = [
        Document(page_content="fine"),
        Document(page_content="x", metadata={"image": image}),
    ]
    with pytest.raises(ValueError, match=r"\[1\]"):
        reranker.compress_documents(documents, "q")


@pytest.mark.parametrize(
    "item",
    [{"page_content": "x"}, {"text": 3}, 7, None],
    ids=["no-text", "int-text", "int", "none"],
)
def test_rerank_refuses_what_has_no_text(reranker: NIMRerank, item: Any) -> None:
    with pytest.raises(TypeError, match=r"documents\[1\]"):
        reranker.rerank(["fine", item], "q")


def test_rerank_refuses_a_single_string(reranker: NIMRerank) -> None:
    with pytest.raises(TypeError, match="not a single document"):
        reranker.rerank("one passage", "q")


def test_rerank_per_call_options_are_checked_by_nimrank() -> None:
    reranker = NIMRerank(base_url=LOCAL, model="m", max_passage_chars=100, chunking=True)
    with pytest.raises(ValueError, match="max_chunks_per_doc"):
        reranker.rerank(["a"], "q", max_chunks_per_doc=0)
    with pytest.raises(ValueError, match="model"):
        reranker.rerank(["a"], "q", model=" ")
    reranker.close()
