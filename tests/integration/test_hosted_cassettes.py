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

import pytest
import yaml
from vcr.errors import CannotOverwriteExistingCassetteException  # type: ignore[import-untyped]

from cassette_replay import CASSETTES, REPLAY
from faultserver import EitherClient
from seed_examples import A100, H100, HOPPER, LITELLM_DOCUMENTS, NVIDIA_RERANK_PASSAGES, QUERY

MakeClient = Callable[..., EitherClient]

NIM_HOSTED = "nim_hosted_llama-3_2-nv-rerankqa-1b-v2.yaml"
LITELLM = "litellm_proxy_rerank.yaml"
FAKE_KEY = "nvapi-fake-cassette-key-not-real"
LITELLM_KEY = "sk-fake-litellm-proxy-key-not-real"


async def test_hosted_nim_request_and_ranking_match_the_cassette(
    make_client: MakeClient,
) -> None:
    client = make_client(api_key=FAKE_KEY)  # base_url=None: NVIDIA's hosted catalog

    with REPLAY.use_cassette(NIM_HOSTED) as cassette:
        ranked = await client.rank(QUERY, NVIDIA_RERANK_PASSAGES)

    assert cassette.all_played
    assert [(p.index, p.score) for p in ranked] == [(2, 6.828125), (0, -1.564453125), (1, -3.5)]
    assert [p.text for p in ranked] == [H100, HOPPER, A100]


async def test_hosted_nim_request_with_another_body_is_not_in_the_cassette(
    make_client: MakeClient,
) -> None:
    # Matching includes the body: a truncate field the cassette lacks is refused.
    client = make_client(api_key=FAKE_KEY, truncate="END")

    with (
        REPLAY.use_cassette(NIM_HOSTED),
        pytest.raises(CannotOverwriteExistingCassetteException),
    ):
        await client.rank(QUERY, NVIDIA_RERANK_PASSAGES)


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
