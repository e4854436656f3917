"""Replays of hosted-service exchanges (vcrpy cassettes in ``cassettes/``).

The cassettes are written by hand from documented examples (see each file's header
and ``cassettes/README.md``): nothing here can be recorded, the project builds
offline. They are replayed with ``record_mode="none"`` and matched on method, URL
and JSON body, so a test passes only if the client sends exactly the recorded
request: the hosted per-model URL, the dotted model id in the body, no ``top_n``
for NIM. Each runs with the sync and the async client (httpx transports patched
by vcrpy).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import vcr  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]
from vcr.errors import CannotOverwriteExistingCassetteException  # type: ignore[import-untyped]

from faultserver import EitherClient

MakeClient = Callable[..., EitherClient]

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes"
NIM_HOSTED = "nim_hosted_llama-3_2-nv-rerankqa-1b-v2.yaml"
LITELLM = "litellm_proxy_rerank.yaml"
FAKE_KEY = "nvapi-fake-cassette-key-not-real"
LITELLM_KEY = "sk-fake-litellm-proxy-key-not-real"

REPLAY = vcr.VCR(
    cassette_library_dir=str(CASSETTES),
    record_mode="none",
    match_on=["method", "uri", "body"],
    # Never written while record_mode is "none"; here so a re-recording keeps no key.
    filter_headers=["authorization"],
)

QUERY = "What is the GPU memory bandwidth of H100 SXM?"
# The LangChain NVIDIARerank example (seed 000).
NIM_PASSAGES = [
    "The Hopper GPU is paired with the Grace CPU using NVIDIA's ultra-fast chip-to-chip "
    "interconnect, delivering 900GB/s of bandwidth, 7X faster than PCIe Gen5. This innovative "
    "design will deliver up to 30X higher aggregate system memory bandwidth to the GPU compared "
    "to today's fastest servers and up to 10X higher performance for applications running "
    "terabytes of data.",
    "A100 provides up to 20X higher performance over the prior generation and can be "
    "partitioned into seven GPU instances to dynamically adjust to shifting demands. The A100 "
    "80GB debuts the world's fastest memory bandwidth at over 2 terabytes per second (TB/s) to "
    "run the largest models and datasets.",
    "Accelerated servers with H100 deliver the compute power\u2014along with 3 terabytes per "
    "second (TB/s) of memory bandwidth per GPU and scalability with NVLink and NVSwitch\u2122.",
]
# The LiteLLM NIM rerank example (seed 001).
LITELLM_DOCUMENTS = [
    "The Hopper GPU is paired with the Grace CPU using NVIDIA's ultra-fast chip-to-chip "
    "interconnect, delivering 900GB/s of bandwidth.",
    "A100 provides up to 20X higher performance over the prior generation.",
    "Accelerated servers with H100 deliver 3 terabytes per second (TB/s) of memory bandwidth "
    "per GPU.",
]


async def test_hosted_nim_request_and_ranking_match_the_cassette(
    make_client: MakeClient,
) -> None:
    client = make_client(api_key=FAKE_KEY)  # base_url=None: NVIDIA's hosted catalog

    with REPLAY.use_cassette(NIM_HOSTED) as cassette:
        ranked = await client.rank(QUERY, NIM_PASSAGES)

    assert cassette.all_played
    assert [(p.index, p.score) for p in ranked] == [(2, 6.828125), (0, -1.564453125), (1, -3.5)]
    assert [p.text for p in ranked] == [NIM_PASSAGES[2], NIM_PASSAGES[0], NIM_PASSAGES[1]]


async def test_hosted_nim_request_with_another_body_is_not_in_the_cassette(
    make_client: MakeClient,
) -> None:
    # Matching includes the body: a truncate field the cassette lacks is refused.
    client = make_client(api_key=FAKE_KEY, truncate="END")

    with (
        REPLAY.use_cassette(NIM_HOSTED),
        pytest.raises(CannotOverwriteExistingCassetteException),
    ):
        await client.rank(QUERY, NIM_PASSAGES)


async def test_litellm_proxy_rerank_request_and_ranking_match_the_cassette(
    make_client: MakeClient,
) -> None:
    client = make_client(
        protocol="cohere",
        base_url="http://localhost:4000/rerank",
        model="nvidia-rerank",
        api_key=LITELLM_KEY,
    )

    with REPLAY.use_cassette(LITELLM) as cassette:
        ranked = await client.rank(QUERY, LITELLM_DOCUMENTS, top_n=2)

    assert cassette.all_played
    assert [(p.index, p.score) for p in ranked] == [(2, 6.828125), (0, -1.564453125)]


@pytest.mark.parametrize("name", [NIM_HOSTED, LITELLM])
def test_cassette_holds_no_credentials(name: str) -> None:
    text = (CASSETTES / name).read_text(encoding="utf-8")
    recorded = yaml.safe_load(text)

    assert text.startswith("# ")  # the provenance comment comes first
    for secret in (FAKE_KEY, LITELLM_KEY, "nvapi-", "Bearer"):
        assert secret not in text
    for interaction in recorded["interactions"]:
        assert "authorization" not in {h.lower() for h in interaction["request"]["headers"]}
