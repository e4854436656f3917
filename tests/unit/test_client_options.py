"""Client construction and argument checks: no server needed.

Invalid arguments must fail at construction, or at ``rank`` before any request.
"Before any request" is proven by pointing the client at a loopback port nobody
listens on: a request there would raise ``RankingConnectionError`` instead.
"""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from nimrank import (
    DEFAULT_MODEL,
    AsyncRankingClient,
    MissingAPIKeyError,
    RankedPassage,
    RankingClient,
    RankingConnectionError,
    RankingError,
    RetryPolicy,
)

LOCAL = "http://127.0.0.1:8000/v1"
HOSTED_URL = "https://ai.api.nvidia.com/v1/retrieval/nvidia/llama-nemotron-rerank-1b-v2/reranking"
FAKE_KEY = "nvapi-fake-0000-not-a-real-key"
KEY_VARIABLES = (
    "NVIDIA_API_KEY",
    "NVIDIA_NIM_API_KEY",
    "JINA_API_KEY",
    "COHERE_API_KEY",
    "CO_API_KEY",
)
CLIENTS = [RankingClient, AsyncRankingClient]
AnyClient = RankingClient | AsyncRankingClient


@pytest.fixture(autouse=True)
def no_keys_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever keys the machine running the tests has, these tests see none."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens: any request to it fails at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def authorization(client: RankingClient) -> str | None:
    """The Authorization header the client's connection pool sends."""
    value = client._pool().headers.get("Authorization")
    return None if value is None else str(value)


@asynccontextmanager
async def open_client(kind: str, **options: Any) -> AsyncIterator[AnyClient]:
    """A sync or async client, closed afterwards."""
    if kind == "sync":
        with RankingClient(**options) as client:
            yield client
    else:
        async with AsyncRankingClient(**options) as client:
            yield client


async def rank(client: AnyClient, query: Any, passages: Any, **kwargs: Any) -> list[RankedPassage]:
    if isinstance(client, AsyncRankingClient):
        return await client.rank(query, passages, **kwargs)
    return client.rank(query, passages, **kwargs)


# -- construction: invalid arguments -------------------------------------------

INVALID_OPTIONS = [
    pytest.param({"truncate": "START"}, ValueError, "truncate", id="truncate-unknown"),
    pytest.param({"truncate": "end"}, ValueError, "truncate", id="truncate-lowercase"),
    pytest.param({"truncate": True}, ValueError, "truncate", id="truncate-bool"),
    pytest.param(
        {"truncate": "END", "protocol": "cohere"}, ValueError, "truncate", id="truncate-cohere"
    ),
    pytest.param({"max_batch_size": 0}, ValueError, "max_batch_size", id="batch-0"),
    pytest.param({"max_batch_size": -3}, ValueError, "max_batch_size", id="batch-negative"),
    pytest.param({"max_batch_size": 513}, ValueError, "between 1 and 512", id="batch-513-nim"),
    pytest.param({"max_batch_size": True}, TypeError, "max_batch_size", id="batch-bool"),
    pytest.param({"max_batch_size": 32.0}, TypeError, "max_batch_size", id="batch-float"),
    pytest.param({"max_batch_size": "32"}, TypeError, "max_batch_size", id="batch-str"),
    pytest.param({"max_concurrency": 0}, ValueError, "max_concurrency", id="concurrency-0"),
    pytest.param({"max_concurrency": True}, TypeError, "max_concurrency", id="concurrency-bool"),
    pytest.param({"timeout": 0}, ValueError, "timeout", id="timeout-0"),
    pytest.param({"timeout": -1.5}, ValueError, "timeout", id="timeout-negative"),
    pytest.param({"timeout": math.nan}, ValueError, "timeout", id="timeout-nan"),
    pytest.param({"timeout": "60"}, TypeError, "timeout", id="timeout-str"),
    pytest.param({"timeout": True}, TypeError, "timeout", id="timeout-bool"),
    pytest.param({"timeout": None}, TypeError, "timeout", id="timeout-none"),
    pytest.param({"max_retries": -1}, ValueError, "max_retries", id="retries-negative"),
    pytest.param({"max_retries": True}, TypeError, "max_retries", id="retries-bool"),
    pytest.param({"max_retries": 2.0}, TypeError, "max_retries", id="retries-float"),
    pytest.param({"protocol": "openai"}, ValueError, "protocol", id="protocol-unknown"),
    pytest.param({"protocol": "NIM"}, ValueError, "protocol", id="protocol-uppercase"),
    pytest.param({"score_transform": "softmax"}, ValueError, "score_transform", id="transform"),
    pytest.param({"score_threshold": "0.5"}, TypeError, "score_threshold", id="threshold-str"),
    pytest.param({"score_threshold": math.nan}, ValueError, "score_threshold", id="threshold-nan"),
    pytest.param({"score_threshold": True}, TypeError, "score_threshold", id="threshold-bool"),
    pytest.param({"chunking": True}, ValueError, "max_passage_chars", id="chunking-no-limit"),
    pytest.param({"chunking": "yes"}, TypeError, "chunking", id="chunking-str"),
    pytest.param({"max_passage_chars": 0}, ValueError, "max_passage_chars", id="chars-0"),
    pytest.param({"max_passage_chars": True}, TypeError, "max_passage_chars", id="chars-bool"),
    pytest.param({"max_passage_chars": 100.0}, TypeError, "max_passage_chars", id="chars-float"),
    pytest.param(
        {"max_passage_chars": 100, "chunk_overlap_chars": 100},
        ValueError,
        "chunk_overlap_chars",
        id="overlap-equal-to-window",
    ),
    pytest.param(
        {"max_passage_chars": 100, "chunking": True, "chunk_overlap_chars": 150},
        ValueError,
        "chunk_overlap_chars",
        id="overlap-over-window",
    ),
    pytest.param(
        {"max_passage_chars": 100, "chunk_overlap_chars": -1},
        ValueError,
        "chunk_overlap_chars",
        id="overlap-negative",
    ),
    pytest.param(
        {"max_passage_chars": 100, "chunking": True, "max_chunks_per_doc": 0},
        ValueError,
        "max_chunks_per_doc",
        id="chunks-0",
    ),
    pytest.param({"model": ""}, ValueError, "model", id="model-empty"),
    pytest.param({"model": "   "}, ValueError, "model", id="model-blank"),
    pytest.param({"model": 3}, (TypeError, ValueError), "model", id="model-int"),
    pytest.param({"timeout": 1e10}, ValueError, "timeout", id="timeout-past-a-day"),
    pytest.param({"timeout": float("inf")}, ValueError, "timeout", id="timeout-inf"),
    pytest.param({"api_key": 12345}, TypeError, "api_key", id="api-key-int"),
    pytest.param({"retry_policy": "fast"}, TypeError, "retry_policy", id="retry-policy-str"),
    pytest.param({"retry_policy": 3}, TypeError, "retry_policy", id="retry-policy-int"),
    pytest.param({"base_url": "localhost:8000"}, ValueError, "base_url", id="url-no-scheme"),
    pytest.param({"base_url": "ftp://127.0.0.1/v1"}, ValueError, "base_url", id="url-ftp"),
    pytest.param({"base_url": 8000}, TypeError, "base_url", id="url-int"),
    pytest.param({"top_k": 3}, TypeError, "top_k", id="unknown-option"),
    pytest.param(
        {"base_url": "http://127.0.0.1:8000/v1/rerank"},
        ValueError,
        "protocol='cohere'",
        id="rerank-url-with-nim",
    ),
    pytest.param(
        {"base_url": "http://127.0.0.1:8000/v1/ranking", "protocol": "cohere"},
        ValueError,
        "protocol='nim'",
        id="ranking-url-with-cohere",
    ),
]


@pytest.mark.parametrize("client_class", CLIENTS)
@pytest.mark.parametrize(("options", "error", "match"), INVALID_OPTIONS)
def test_invalid_option_is_refused_at_construction(
    client_class: type[AnyClient],
    options: dict[str, Any],
    error: type[Exception] | tuple[type[Exception], ...],
    match: str,
) -> None:
    # A local base_url, so that a missing key (also a ValueError) cannot be the reason.
    options = {"base_url": LOCAL, **options}
    with pytest.raises(error, match=match):
        client_class(**options)


@pytest.mark.parametrize("client_class", CLIENTS)
def test_cohere_protocol_needs_a_base_url(client_class: type[AnyClient]) -> None:
    with pytest.raises(ValueError, match="base_url"):
        client_class(protocol="cohere")


@pytest.mark.parametrize("client_class", CLIENTS)
def test_options_are_keyword_only(client_class: type[AnyClient]) -> None:
    with pytest.raises(TypeError):
        client_class(DEFAULT_MODEL)  # type: ignore[arg-type]


# -- construction: accepted values ---------------------------------------------


def test_defaults() -> None:
    with RankingClient(base_url=LOCAL) as client:
        # A self-hosted service is asked for its model at the first call.
        assert client.model is None
        options = client.options
        assert options.protocol == "nim"
        assert options.truncate is None
        assert (options.max_batch_size, options.max_concurrency) == (64, 8)
        assert client.timeout == 60.0
        assert client.max_retries == 3
        assert options.score_transform == "raw"
        assert options.score_threshold is None
        assert client.endpoints.ranking_url == "http://127.0.0.1:8000/v1/ranking"
        assert client.endpoints.models_url == "http://127.0.0.1:8000/v1/models"


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"max_batch_size": 512}, id="batch-512-nim"),
        pytest.param({"max_batch_size": 1}, id="batch-1"),
        pytest.param({"protocol": "cohere", "max_batch_size": 513}, id="batch-513-cohere"),
        pytest.param({"protocol": "cohere", "max_batch_size": 10_000}, id="batch-10000-cohere"),
        pytest.param({"truncate": "NONE"}, id="truncate-none"),
        pytest.param({"truncate": "END"}, id="truncate-end"),
        pytest.param({"timeout": 0.001}, id="timeout-small"),
        pytest.param({"timeout": 5}, id="timeout-int"),
        pytest.param({"max_retries": 0}, id="retries-0"),
        pytest.param({"score_threshold": 0}, id="threshold-int"),
        pytest.param({"score_transform": "sigmoid", "score_threshold": 0.5}, id="sigmoid"),
        pytest.param({"max_passage_chars": 1}, id="chars-1"),
        pytest.param(
            {"max_passage_chars": 100, "chunking": True, "chunk_overlap_chars": 99},
            id="overlap-just-under-window",
        ),
        pytest.param(
            {"max_passage_chars": 100, "chunking": True, "max_chunks_per_doc": 1}, id="one-chunk"
        ),
    ],
)
def test_valid_option_is_accepted_and_kept(options: dict[str, Any]) -> None:
    with RankingClient(base_url=LOCAL, **options) as client:
        for name, value in options.items():
            assert getattr(client.options, name) == value


def test_overlap_defaults_to_a_tenth_of_the_window() -> None:
    with RankingClient(base_url=LOCAL, max_passage_chars=2000, chunking=True) as client:
        assert client.options.passage_options.chunk_overlap_chars == 200


def test_max_retries_overrides_the_policys_count() -> None:
    policy = RetryPolicy(max_retries=9, initial_delay=0)
    with RankingClient(base_url=LOCAL, max_retries=1, retry_policy=policy) as client:
        assert client.max_retries == 1
        assert client.retry_policy.initial_delay == 0
    assert policy.max_retries == 9  # the caller's policy is not changed


def test_retry_policy_count_is_used_when_max_retries_is_not_given() -> None:
    # RetryPolicy(max_retries=9) must not be silently replaced by the default 3.
    with RankingClient(base_url=LOCAL, retry_policy=RetryPolicy(max_retries=9)) as client:
        assert client.max_retries == 9


def test_extra_headers_are_sent() -> None:
    with RankingClient(base_url=LOCAL, extra_headers={"X-Request-Source": "tests"}) as client:
        assert client._pool().headers["X-Request-Source"] == "tests"


# -- API keys ------------------------------------------------------------------


@pytest.mark.parametrize("client_class", CLIENTS)
@pytest.mark.parametrize(
    "base_url",
    [
        None,
        HOSTED_URL,
        "https://ai.api.nvidia.com/v1/retrieval/nvidia/reranking",
        "https://integrate.api.nvidia.com/v1",
    ],
)
def test_hosted_catalog_without_key_names_the_variable(
    client_class: type[AnyClient], base_url: str | None
) -> None:
    with pytest.raises(MissingAPIKeyError) as caught:
        client_class(base_url=base_url)
    error = caught.value
    assert isinstance(error, ValueError)
    assert isinstance(error, RankingError)
    assert "NVIDIA_API_KEY" in str(error)
    assert "NVIDIA_NIM_API_KEY" in str(error)
    assert error.url is not None
    assert error.url.startswith("https://")


def test_nvidia_api_base_url_reaches_the_per_model_hosted_url() -> None:
    with RankingClient(base_url="https://integrate.api.nvidia.com/v1", api_key=FAKE_KEY) as client:
        assert client.endpoints.ranking_url == HOSTED_URL
        assert client.endpoints.hosted


def test_missing_key_error_suggests_a_self_hosted_base_url() -> None:
    with pytest.raises(MissingAPIKeyError, match="base_url="):
        RankingClient()


@pytest.mark.parametrize(
    ("environment", "explicit", "expected"),
    [
        pytest.param({"NVIDIA_API_KEY": "nvapi-fake-a"}, None, "nvapi-fake-a", id="nvidia-var"),
        pytest.param(
            {"NVIDIA_NIM_API_KEY": "nvapi-fake-b"}, None, "nvapi-fake-b", id="nim-var-alone"
        ),
        pytest.param(
            {"NVIDIA_API_KEY": "nvapi-fake-a", "NVIDIA_NIM_API_KEY": "nvapi-fake-b"},
            None,
            "nvapi-fake-a",
            id="nvidia-var-first",
        ),
        pytest.param(
            {"NVIDIA_API_KEY": "", "NVIDIA_NIM_API_KEY": "nvapi-fake-b"},
            None,
            "nvapi-fake-b",
            id="empty-var-is-skipped",
        ),
        pytest.param(
            {"NVIDIA_API_KEY": "nvapi-fake-a"}, "nvapi-fake-c", "nvapi-fake-c", id="argument-first"
        ),
    ],
)
def test_hosted_key_comes_from_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    environment: dict[str, str],
    explicit: str | None,
    expected: str,
) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with RankingClient(api_key=explicit) as client:
        assert client.endpoints.ranking_url == HOSTED_URL
        assert authorization(client) == f"Bearer {expected}"


def test_self_hosted_nim_needs_no_key() -> None:
    with RankingClient(base_url=LOCAL) as client:
        assert authorization(client) is None


def test_jina_needs_jina_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # An NVIDIA key in the environment is not Jina's and must not be sent there.
    monkeypatch.setenv("NVIDIA_API_KEY", FAKE_KEY)
    with pytest.raises(MissingAPIKeyError, match="JINA_API_KEY"):
        RankingClient(protocol="cohere", base_url="https://api.jina.ai/v1")


def test_jina_key_is_read_from_jina_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JINA_API_KEY", "jina-fake-key")
    monkeypatch.setenv("NVIDIA_API_KEY", FAKE_KEY)
    with RankingClient(
        protocol="cohere", base_url="https://api.jina.ai/v1", model="jina-reranker-v2-base"
    ) as client:
        assert client.endpoints.ranking_url == "https://api.jina.ai/v1/rerank"
        assert authorization(client) == "Bearer jina-fake-key"


@pytest.mark.parametrize("variable", ["COHERE_API_KEY", "CO_API_KEY"])
def test_cohere_key_is_read_from_its_variables(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "cohere-fake-key")
    with RankingClient(protocol="cohere", base_url="https://api.cohere.com/v2") as client:
        assert authorization(client) == "Bearer cohere-fake-key"


@pytest.mark.parametrize("base_url", ["http://localhost:4000", "http://127.0.0.1:8000/v1/rerank"])
def test_local_cohere_style_server_gets_no_key(
    monkeypatch: pytest.MonkeyPatch, base_url: str
) -> None:
    # A local vLLM or LiteLLM proxy may need no key; nobody else's key is sent to it.
    monkeypatch.setenv("JINA_API_KEY", "jina-fake-key")
    monkeypatch.setenv("COHERE_API_KEY", "cohere-fake-key")
    with RankingClient(protocol="cohere", base_url=base_url) as client:
        assert authorization(client) is None


def test_explicit_key_is_sent_to_a_local_cohere_style_server() -> None:
    with RankingClient(protocol="cohere", base_url="http://localhost:4000", api_key="sk-fake") as c:
        assert authorization(c) == "Bearer sk-fake"


# -- the key never shows --------------------------------------------------------


def test_repr_never_shows_the_key() -> None:
    with RankingClient(api_key=FAKE_KEY) as client:
        assert FAKE_KEY in str(vars(client))  # it is there to be leaked...
        for shown in (repr(client), str(client), f"{client}", f"{client!r}"):
            assert FAKE_KEY not in shown  # ...and the repr does not print it
            assert "nvapi-" not in shown
            assert "Bearer" not in shown
            assert "_headers" not in shown
        assert "api_key='***'" in repr(client)
        assert HOSTED_URL in repr(client)


async def test_async_repr_never_shows_the_key() -> None:
    async with AsyncRankingClient(api_key=FAKE_KEY) as client:
        assert FAKE_KEY not in repr(client)
        assert "api_key='***'" in repr(client)


def test_repr_says_when_there_is_no_key() -> None:
    with RankingClient(base_url=LOCAL) as client:
        assert "api_key=None" in repr(client)
        assert "http://127.0.0.1:8000/v1/ranking" in repr(client)


def test_missing_key_error_shows_no_other_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JINA_API_KEY", "jina-fake-secret")
    with pytest.raises(MissingAPIKeyError) as caught:
        RankingClient()
    for shown in (str(caught.value), repr(caught.value), str(caught.value.url)):
        assert "jina-fake-secret" not in shown


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_request_error_never_shows_the_key(kind: str, refused_url: str) -> None:
    async with open_client(kind, base_url=refused_url, api_key=FAKE_KEY, max_retries=0) as client:
        with pytest.raises(RankingConnectionError) as caught:
            await rank(client, "query", ["passage"])
    error = caught.value
    for shown in (str(error), repr(error), str(error.url), str(error.args)):
        assert FAKE_KEY not in shown


@pytest.mark.parametrize("client_class", CLIENTS)
@pytest.mark.parametrize("ending", ["\n", "\r\n", " "], ids=["newline", "crlf", "space"])
def test_a_key_read_with_its_line_end_is_refused_without_showing_it(
    client_class: type[AnyClient], ending: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # httpx would refuse the header at send time with an error (retried, and
    # logged at each retry) that quotes "Bearer <key>" in full.
    cases: list[dict[str, Any]] = [{"api_key": FAKE_KEY + ending}, {}]
    for options in cases:
        monkeypatch.setenv("NVIDIA_API_KEY", FAKE_KEY + ending)
        with pytest.raises(
            ValueError, match="API key has a character HTTP headers cannot carry"
        ) as caught:
            client_class(base_url=LOCAL, **options)
        assert FAKE_KEY not in str(caught.value)


@pytest.mark.parametrize("client_class", CLIENTS)
def test_an_extra_header_with_a_line_break_is_refused_without_showing_it(
    client_class: type[AnyClient],
) -> None:
    with pytest.raises(ValueError, match="X-Api-Key") as caught:
        client_class(base_url=LOCAL, extra_headers={"X-Api-Key": "fake-proxy-token\n"})
    assert "fake-proxy-token" not in str(caught.value)


# -- rank: invalid arguments fail before any request ---------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_unreachable_port_makes_a_request_fail(kind: str, refused_url: str) -> None:
    # The control for the tests below: had they sent a request, it would raise this.
    async with open_client(kind, base_url=refused_url, model="m", max_retries=0) as client:
        with pytest.raises(RankingConnectionError) as caught:
            await rank(client, "query", ["passage"])
    assert caught.value.passages == (0,)


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("query", "passages", "kwargs", "error", "match"),
    [
        pytest.param("", ["a"], {}, ValueError, "query", id="empty-query"),
        pytest.param(" \n\t", ["a"], {}, ValueError, "query", id="whitespace-query"),
        pytest.param(None, ["a"], {}, TypeError, "query", id="none-query"),
        pytest.param(b"query", ["a"], {}, TypeError, "query", id="bytes-query"),
        pytest.param(["query"], ["a"], {}, TypeError, "query", id="list-query"),
        pytest.param("q", "one passage", {}, TypeError, "list of strings", id="str-passages"),
        pytest.param("q", b"bytes", {}, TypeError, "list of strings", id="bytes-passages"),
        pytest.param("q", None, {}, TypeError, "list of strings", id="none-passages"),
        pytest.param("q", {"a", "b"}, {}, TypeError, "list of strings", id="set-passages"),
        pytest.param("q", (p for p in "ab"), {}, TypeError, "list of strings", id="generator"),
        pytest.param("q", ["a", 1], {}, TypeError, r"passages\[1\]", id="int-passage"),
        pytest.param("q", ["a", None], {}, TypeError, r"passages\[1\]", id="none-passage"),
        pytest.param("q", [b"a"], {}, TypeError, r"passages\[0\]", id="bytes-passage"),
        pytest.param("q", ["a"], {"top_n": -1}, ValueError, "top_n", id="negative-top-n"),
        pytest.param("q", ["a"], {"top_n": True}, ValueError, "top_n", id="bool-top-n"),
        pytest.param("q", ["a"], {"top_n": 2.0}, ValueError, "top_n", id="float-top-n"),
        pytest.param("q", ["a"], {"top_n": "3"}, ValueError, "top_n", id="str-top-n"),
        pytest.param(
            "q",
            ["a"],
            {"score_threshold": "high"},
            TypeError,
            "score_threshold",
            id="str-threshold",
        ),
        pytest.param(
            "q", ["a"], {"score_threshold": math.nan}, ValueError, "score_threshold", id="nan"
        ),
    ],
)
async def test_invalid_rank_argument_fails_before_any_request(
    kind: str,
    refused_url: str,
    query: Any,
    passages: Any,
    kwargs: dict[str, Any],
    error: type[Exception],
    match: str,
) -> None:
    async with open_client(kind, base_url=refused_url, model="m", max_retries=0) as client:
        with pytest.raises(error, match=match):
            await rank(client, query, passages, **kwargs)


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    ("passages", "kwargs"),
    [
        pytest.param(["a", "b"], {"top_n": 0}, id="top-n-0"),
        pytest.param([], {}, id="no-passages"),
        pytest.param((), {"top_n": 5}, id="empty-tuple"),
        pytest.param([], {"top_n": 0}, id="both"),
    ],
)
async def test_nothing_to_return_sends_no_request(
    kind: str, refused_url: str, passages: list[str], kwargs: dict[str, Any]
) -> None:
    async with open_client(kind, base_url=refused_url, model="m", max_retries=0) as client:
        assert await rank(client, "query", passages, **kwargs) == []


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_blank_passages_rank_last_without_a_request(kind: str, refused_url: str) -> None:
    async with open_client(kind, base_url=refused_url, model="m", max_retries=0) as client:
        ranked = await rank(client, "query", ["", "  ", "\n"])
    assert [(p.index, p.score, p.text) for p in ranked] == [
        (0, None, ""),
        (1, None, "  "),
        (2, None, "\n"),
    ]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_tuple_of_passages_is_accepted(kind: str, refused_url: str) -> None:
    # Any sequence of strings will do; it reaches the network (and fails there).
    async with open_client(kind, base_url=refused_url, model="m", max_retries=0) as client:
        with pytest.raises(RankingConnectionError):
            await rank(client, "query", ("a", "b"))


def test_client_is_still_usable_after_a_refused_call(refused_url: str) -> None:
    with RankingClient(base_url=refused_url, max_retries=0) as client:
        with pytest.raises(ValueError, match="query"):
            client.rank("", ["a"])
        assert client.rank("query", ["a"], top_n=0) == []


def test_close_is_idempotent_for_a_fresh_client() -> None:
    client = RankingClient(base_url=LOCAL)
    client.close()
    client.close()
