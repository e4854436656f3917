"""Where the API key comes from, for each protocol and host."""

from __future__ import annotations

import pytest

from nimrank.endpoints import Endpoints, resolve_endpoints
from nimrank.errors import MissingAPIKeyError
from nimrank.keys import check_header_values, resolve_api_key

MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"
FAKE = "nvapi-fake-keys-test"


def endpoints(base_url: str | None, endpoint: str = "ranking") -> Endpoints:
    markers = ("/ranking",) if endpoint == "ranking" else ("/rerank",)
    return resolve_endpoints(base_url, model=MODEL, endpoint=endpoint, full_url_markers=markers)


@pytest.fixture(autouse=True)
def no_keys_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NVIDIA_API_KEY", "NVIDIA_NIM_API_KEY", "JINA_API_KEY", "COHERE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("CO_API_KEY", raising=False)


def test_an_explicit_key_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-fake-from-env")
    assert resolve_api_key(FAKE, "nim", endpoints(None)) == FAKE


def test_nvidia_api_key_is_read_before_nvidia_nim_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_NIM_API_KEY", "nvapi-fake-second")
    assert resolve_api_key(None, "nim", endpoints(None)) == "nvapi-fake-second"
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-fake-first")
    assert resolve_api_key(None, "nim", endpoints(None)) == "nvapi-fake-first"


def test_the_hosted_catalog_without_a_key_names_the_variables() -> None:
    with pytest.raises(MissingAPIKeyError, match="NVIDIA_API_KEY or NVIDIA_NIM_API_KEY"):
        resolve_api_key(None, "nim", endpoints(None))


def test_a_self_hosted_nim_needs_no_key() -> None:
    assert resolve_api_key(None, "nim", endpoints("http://localhost:8000/v1")) is None


def test_jina_reads_its_own_variable_and_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    jina = endpoints("https://api.jina.ai/v1", "rerank")
    with pytest.raises(MissingAPIKeyError, match="JINA_API_KEY"):
        resolve_api_key(None, "cohere", jina)
    monkeypatch.setenv("JINA_API_KEY", "jina_fake_key")
    assert resolve_api_key(None, "cohere", jina) == "jina_fake_key"


def test_a_local_cohere_style_server_needs_no_key_and_takes_no_nvidia_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NVIDIA_API_KEY", "nvapi-fake-not-for-vllm")
    assert resolve_api_key(None, "cohere", endpoints("http://localhost:8001/v1", "rerank")) is None


def test_a_key_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(TypeError, match="api_key"):
        resolve_api_key(123, "nim", endpoints(None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("nvapi-abc\u00a0def", ValueError),  # a no-break space pasted from a web page
        ("nvapi-café", ValueError),
        ("nvapi-abc\ndef", ValueError),
        ("nvapi-abc\r\n", ValueError),
        ("nvapi-\x00abc", ValueError),
        (" nvapi-abc", ValueError),
        (b"nvapi-bytes", TypeError),
        (12345678, TypeError),
        (None, TypeError),
    ],
)
def test_a_header_value_http_cannot_carry_is_refused_without_showing_it(
    value: object, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        check_header_values({"X-Gateway-Token": value})
    shown = str(caught.value) + repr(caught.value)
    assert "X-Gateway-Token" in shown
    assert "abc" not in shown


def test_the_authorization_header_is_called_the_api_key() -> None:
    with pytest.raises(ValueError, match="the API key") as caught:
        check_header_values({"Authorization": "Bearer nvapi-s3cret\u00a0"})
    assert "s3cret" not in str(caught.value)


def test_good_headers_come_back_as_a_plain_dict() -> None:
    headers = {"Authorization": "Bearer nvapi-x", "X-Api-Version": "2024-01 beta"}
    assert check_header_values(headers) == headers


def test_a_bad_header_name_is_refused() -> None:
    with pytest.raises(ValueError, match="header name"):
        check_header_values({"X Bad:Name": "v"})
