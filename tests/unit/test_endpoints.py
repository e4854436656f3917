"""URL rules: every form of ``base_url`` a user may pass, for both protocols."""

from __future__ import annotations

import warnings

import pytest

from nimrank.endpoints import (
    HOSTED_MODELS_URL,
    Endpoints,
    display_url,
    hosted_ranking_url,
    is_hosted_nvidia,
    resolve_endpoints,
)
from nimrank.protocols import COHERE, NIM, WireProtocol

DEFAULT_MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"
HOSTED = "https://ai.api.nvidia.com/v1/retrieval"


def resolve(base_url: str | None, protocol: WireProtocol, model: str = DEFAULT_MODEL) -> Endpoints:
    """Resolve with the protocol's own endpoint and markers, as the client does."""
    return resolve_endpoints(
        base_url,
        model=model,
        endpoint=protocol.endpoint,
        full_url_markers=protocol.full_url_markers,
        hosted_catalog=protocol is NIM,
    )


def test_protocols_declare_the_documented_endpoints_and_markers() -> None:
    assert (NIM.endpoint, NIM.full_url_markers) == (
        "ranking",
        ("/ranking", "/reranking", "/retrieval/"),
    )
    assert (COHERE.endpoint, COHERE.full_url_markers) == ("rerank", ("/rerank",))


# -- the hosted catalog (base_url=None) ----------------------------------------


@pytest.mark.parametrize(
    ("model", "ranking_url"),
    [
        (DEFAULT_MODEL, f"{HOSTED}/nvidia/llama-3_2-nv-rerankqa-1b-v2/reranking"),
        (
            "nvidia/nv-rerankqa-mistral-4b-v3",
            f"{HOSTED}/nvidia/nv-rerankqa-mistral-4b-v3/reranking",
        ),
        (
            "nvidia/llama-3.2-nemoretriever-500m-rerank-v2",
            f"{HOSTED}/nvidia/llama-3_2-nemoretriever-500m-rerank-v2/reranking",
        ),
        # Another organisation keeps its own path segment.
        ("baai/bge-reranker-v2-m3", f"{HOSTED}/baai/bge-reranker-v2-m3/reranking"),
        # Every dot becomes an underscore, not only the first.
        ("acme/rank.v1.2", f"{HOSTED}/acme/rank_v1_2/reranking"),
        # A bare name is taken to be one of NVIDIA's models.
        ("llama-3.2-nv-rerankqa-1b-v2", f"{HOSTED}/nvidia/llama-3_2-nv-rerankqa-1b-v2/reranking"),
        # Surrounding whitespace (a pasted id) is not part of the URL.
        (f"  {DEFAULT_MODEL}\n", f"{HOSTED}/nvidia/llama-3_2-nv-rerankqa-1b-v2/reranking"),
    ],
)
def test_no_base_url_means_the_hosted_per_model_url(model: str, ranking_url: str) -> None:
    assert hosted_ranking_url(model) == ranking_url
    assert resolve(None, NIM, model=model) == Endpoints(
        ranking_url=ranking_url, models_url=HOSTED_MODELS_URL, hosted=True
    )


def test_hosted_models_are_listed_at_the_integrate_endpoint() -> None:
    assert HOSTED_MODELS_URL == "https://integrate.api.nvidia.com/v1/models"


def test_hosted_url_slug_does_not_change_the_model_id_sent_in_the_body() -> None:
    # The URL uses llama-3_2, the request body must still name llama-3.2.
    body = NIM.build_request(model=DEFAULT_MODEL, query="q", passages=["p"], truncate=None)
    assert body["model"] == DEFAULT_MODEL
    assert "3_2" not in body["model"]


@pytest.mark.parametrize("model", ["/llama-3.2-nv-rerankqa-1b-v2", "nvidia/", "/", "  "])
def test_model_without_org_or_name_is_refused_for_the_hosted_url(model: str) -> None:
    with pytest.raises(ValueError, match="org/name"):
        hosted_ranking_url(model)


# -- base URLs: the protocol's endpoint is appended ----------------------------


@pytest.mark.parametrize(
    ("base_url", "ranking_url", "models_url"),
    [
        (
            "http://localhost:8000",
            "http://localhost:8000/v1/ranking",
            "http://localhost:8000/v1/models",
        ),
        (
            "http://localhost:8000/",
            "http://localhost:8000/v1/ranking",
            "http://localhost:8000/v1/models",
        ),
        (
            "http://localhost:8000/v1",
            "http://localhost:8000/v1/ranking",
            "http://localhost:8000/v1/models",
        ),
        (
            "http://localhost:8000/v1/",
            "http://localhost:8000/v1/ranking",
            "http://localhost:8000/v1/models",
        ),
        (
            "http://localhost:8000/v1//",
            "http://localhost:8000/v1/ranking",
            "http://localhost:8000/v1/models",
        ),
        # Another version segment is kept, never replaced by /v1.
        (
            "http://localhost:8000/v2",
            "http://localhost:8000/v2/ranking",
            "http://localhost:8000/v2/models",
        ),
        ("http://127.0.0.1:9/v1", "http://127.0.0.1:9/v1/ranking", "http://127.0.0.1:9/v1/models"),
        ("http://[::1]:8000/v1", "http://[::1]:8000/v1/ranking", "http://[::1]:8000/v1/models"),
        # Surrounding whitespace is dropped.
        (
            "  http://localhost:8000/v1 \n",
            "http://localhost:8000/v1/ranking",
            "http://localhost:8000/v1/models",
        ),
        # A gateway prefix stays in front of the version.
        (
            "https://gw.example.com/nim/v1",
            "https://gw.example.com/nim/v1/ranking",
            "https://gw.example.com/nim/v1/models",
        ),
        (
            "https://gw.example.com/nim",
            "https://gw.example.com/nim/v1/ranking",
            "https://gw.example.com/nim/v1/models",
        ),
        (
            "https://gw.example.com/teams/search/nim/v1/",
            "https://gw.example.com/teams/search/nim/v1/ranking",
            "https://gw.example.com/teams/search/nim/v1/models",
        ),
        # A path that merely ends in "ranking" is not the endpoint.
        (
            "https://gw.example.com/myranking",
            "https://gw.example.com/myranking/v1/ranking",
            "https://gw.example.com/myranking/v1/models",
        ),
        # A query string (a gateway's key or version) is kept on every derived URL.
        (
            "https://gw.example.com/nim/v1?api-version=2",
            "https://gw.example.com/nim/v1/ranking?api-version=2",
            "https://gw.example.com/nim/v1/models?api-version=2",
        ),
    ],
)
def test_nim_base_url_gets_the_ranking_endpoint(
    base_url: str, ranking_url: str, models_url: str
) -> None:
    assert resolve(base_url, NIM) == Endpoints(ranking_url, models_url, hosted=False)


@pytest.mark.parametrize(
    ("base_url", "ranking_url", "models_url"),
    [
        (
            "http://localhost:4000",
            "http://localhost:4000/v1/rerank",
            "http://localhost:4000/v1/models",
        ),
        (
            "http://localhost:4000/",
            "http://localhost:4000/v1/rerank",
            "http://localhost:4000/v1/models",
        ),
        (
            "https://api.jina.ai/v1",
            "https://api.jina.ai/v1/rerank",
            "https://api.jina.ai/v1/models",
        ),
        (
            "https://api.jina.ai/v1/",
            "https://api.jina.ai/v1/rerank",
            "https://api.jina.ai/v1/models",
        ),
        (
            "https://api.cohere.com/v2",
            "https://api.cohere.com/v2/rerank",
            "https://api.cohere.com/v2/models",
        ),
        (
            "https://gw.example.com/vllm/v1",
            "https://gw.example.com/vllm/v1/rerank",
            "https://gw.example.com/vllm/v1/models",
        ),
        # "/ranking" is NIM's endpoint, not a full URL for this protocol.
        (
            "http://localhost:4000/ranking",
            "http://localhost:4000/ranking/v1/rerank",
            "http://localhost:4000/ranking/v1/models",
        ),
    ],
)
def test_cohere_base_url_gets_the_rerank_endpoint(
    base_url: str, ranking_url: str, models_url: str
) -> None:
    assert resolve(base_url, COHERE) == Endpoints(ranking_url, models_url, hosted=False)


# -- full endpoint URLs: used as given -----------------------------------------


@pytest.mark.parametrize(
    ("protocol", "url", "models_url"),
    [
        (NIM, "http://localhost:8000/v1/ranking", "http://localhost:8000/v1/models"),
        (NIM, "https://gw.example.com/nim/v1/ranking", "https://gw.example.com/nim/v1/models"),
        (NIM, "http://localhost:8000/v1/reranking", "http://localhost:8000/v1/models"),
        # No version segment: the models list is guessed at /v1.
        (NIM, "http://localhost:8000/ranking", "http://localhost:8000/v1/models"),
        (
            NIM,
            "https://your-custom-endpoint.com/v1/retrieval/nvidia/llama-3_2-nv-rerankqa-1b-v2/reranking",
            "https://your-custom-endpoint.com/v1/models",
        ),
        # "/retrieval/" marks a full URL wherever it stands.
        (
            NIM,
            "https://gw.example.com/v1/retrieval/acme/ranker/infer",
            "https://gw.example.com/v1/models",
        ),
        (
            NIM,
            "https://gw.example.com/v1/ranking?api-version=2024-01&x=1",
            "https://gw.example.com/v1/models?api-version=2024-01&x=1",
        ),
        (COHERE, "https://api.jina.ai/v1/rerank", "https://api.jina.ai/v1/models"),
        (COHERE, "https://api.cohere.com/v2/rerank", "https://api.cohere.com/v2/models"),
        (COHERE, "http://localhost:4000/rerank", "http://localhost:4000/v1/models"),
        (
            COHERE,
            "https://gw.example.com/jina/v1/rerank?key=fake-not-a-key",
            "https://gw.example.com/jina/v1/models?key=fake-not-a-key",
        ),
    ],
)
def test_full_endpoint_url_is_used_as_given(
    protocol: WireProtocol, url: str, models_url: str
) -> None:
    assert resolve(url, protocol) == Endpoints(url, models_url, hosted=False)


@pytest.mark.parametrize("protocol", [NIM, COHERE])
def test_full_url_loses_only_its_trailing_slash(protocol: WireProtocol) -> None:
    url = f"http://localhost:8000/v1/{protocol.endpoint}"
    assert resolve(url + "/", protocol).ranking_url == url


@pytest.mark.parametrize(
    "url",
    [
        "https://ai.api.nvidia.com/v1/retrieval/nvidia/llama-3_2-nv-rerankqa-1b-v2/reranking",
        "https://ai.api.nvidia.com/v1/retrieval/nvidia/reranking",
    ],
)
def test_full_hosted_url_is_used_as_given_and_lists_hosted_models(url: str) -> None:
    assert resolve(url, NIM) == Endpoints(url, HOSTED_MODELS_URL, hosted=True)


@pytest.mark.parametrize(
    "base_url",
    [
        "https://integrate.api.nvidia.com/v1",
        "https://integrate.api.nvidia.com/v1/",
        "https://ai.api.nvidia.com/v1",
        "https://ai.api.nvidia.com",
    ],
)
def test_nim_base_url_on_nvidias_api_means_the_hosted_catalog(base_url: str) -> None:
    # NVIDIA's own integrations default to integrate.api.nvidia.com/v1, which
    # serves no /ranking: the per-model URL is the one that answers.
    assert resolve(base_url, NIM) == resolve(None, NIM)
    assert resolve(base_url, NIM, model="baai/bge-reranker-v2-m3").ranking_url == (
        f"{HOSTED}/baai/bge-reranker-v2-m3/reranking"
    )


def test_cohere_base_url_on_nvidias_api_is_hosted_but_not_rewritten() -> None:
    endpoints = resolve("https://ai.api.nvidia.com/v1", COHERE)
    assert endpoints == Endpoints(
        "https://ai.api.nvidia.com/v1/rerank", HOSTED_MODELS_URL, hosted=True
    )


# -- hosted host detection ---------------------------------------------------


@pytest.mark.parametrize(
    ("url", "hosted"),
    [
        ("https://ai.api.nvidia.com/v1/retrieval/nvidia/reranking", True),
        ("https://integrate.api.nvidia.com/v1", True),
        ("https://api.nvidia.com", True),
        ("HTTPS://AI.API.NVIDIA.COM/v1", True),
        ("https://ai.api.nvidia.com:443/v1", True),
        ("http://localhost:8000/v1", False),
        ("https://build.nvidia.com", False),
        ("https://notapi.nvidia.com/v1", False),
        ("https://ai.api.nvidia.com.evil.example/v1", False),
        ("https://evil.example/ai.api.nvidia.com/v1", False),
        ("https://api.nvidia.com@evil.example/v1", False),
        ("not a url", False),
    ],
)
def test_hosted_nvidia_is_decided_by_the_host_alone(url: str, hosted: bool) -> None:
    assert is_hosted_nvidia(url) is hosted


# -- refused URLs --------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        "",
        "   ",
        "localhost:8000",
        "localhost:8000/v1",
        "ftp://localhost/v1",
        "file:///tmp/ranking",
        "http://",
        "http:///v1",
        "//localhost:8000/v1",
        "not a url",
    ],
)
@pytest.mark.parametrize("protocol", [NIM, COHERE])
def test_url_that_is_not_http_is_refused(base_url: str, protocol: WireProtocol) -> None:
    with pytest.raises(ValueError, match="base_url"):
        resolve(base_url, protocol)


@pytest.mark.parametrize("base_url", [8000, b"http://localhost:8000/v1", ["http://localhost"]])
def test_base_url_that_is_not_a_string_is_a_type_error(base_url: object) -> None:
    with pytest.raises(TypeError, match="base_url"):
        resolve(base_url, NIM)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://h:8000/v1/ranking", "http://h:8000/v1/ranking"),
        ("https://gw/v1/rerank?api-key=s3cret", "https://gw/v1/rerank?api-key=***"),
        # A bare ?KEY is masked too: some gateways take a token that way.
        ("https://gw/v1?key=a&version=2&flag", "https://gw/v1?key=***&version=***&***"),
        ("http://user:s3cret@h:8000/v1", "http://user:***@h:8000/v1"),
        ("http://t0ken@h/v1", "http://***@h/v1"),
    ],
)
def test_display_url_masks_every_query_value(url: str, shown: str) -> None:
    assert display_url(url) == shown


@pytest.mark.parametrize(
    "base_url",
    ["http://127.0.0.1:80:80/v1", "http://127.0.0.1:99999/v1", "http://h:abc/v1", "http://[::1/v1"],
)
def test_an_invalid_url_is_a_value_error_at_construction(base_url: str) -> None:
    with pytest.raises(ValueError, match="not a valid URL"):
        resolve(base_url, NIM)


def test_an_invalid_url_is_refused_without_showing_its_secrets() -> None:
    with pytest.raises(ValueError, match="not a valid URL") as caught:
        resolve("http://user:s3cret@h:80:80/v1?key=t0psecret", NIM)
    assert "s3cret" not in str(caught.value)
    assert "t0psecret" not in str(caught.value)


@pytest.mark.parametrize("tail", ["/v1/rankings", "/v1/embeddings", "/v1/chat/completions/"])
def test_another_services_endpoint_as_base_url_warns(tail: str) -> None:
    with pytest.warns(UserWarning, match="another service's endpoint"):
        resolve(f"http://localhost:8000{tail}", NIM)


def test_a_plain_base_url_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve("http://localhost:8000/v1", NIM)
