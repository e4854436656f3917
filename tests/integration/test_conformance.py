"""`nimrank serve` against NVIDIA's NIM ranking contract, fuzzed by schemathesis.

The contract is the seed ``nim-ranking-openapi.yaml``, vendored as
``tests/contract/nim-ranking-openapi.yaml`` so this runs from any clone.
Schemathesis generates schema-valid and schema-breaking requests for
``POST /v1/ranking`` and runs every one of its checks on each reply: no 5xx,
replies match the response schema and status codes the contract lists,
malformed requests are refused with a 4xx, a missing or wrong bearer token gets
401, an unsupported method gets 405 with ``Allow``. On top of those, every error
must be a JSON body carrying the server's message.

The contract says less than a real NIM enforces: it has no cap on passages, no
``additionalProperties: false`` and no ``minLength`` on the query. A real NIM
refuses those requests, and so does the stand-in (a user testing against it must
hit the same walls). So a schema-valid request that breaks one of those limits is
not expected to be accepted; it must be refused with a 400 naming the limit.
Every other schema-valid request must be accepted.

Bounded: a few hundred requests, about ten seconds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# schemathesis 4.32+ has no release for Python 3.10, so the dev setup installs it
# only on 3.11 and later (pyproject.toml).
pytest.importorskip(
    "schemathesis", reason="the conformance fuzzer (schemathesis>=4.32) needs Python 3.11+"
)
import schemathesis
import yaml
from schemathesis import Case, GenerationMode, Response
from schemathesis.specs.openapi.checks import positive_data_acceptance

from nimrank.server import RankingServer

REPO = Path(__file__).resolve().parents[2]
CONTRACT = REPO / "tests" / "contract" / "nim-ranking-openapi.yaml"
# A fake key, never a real one: the server is started with it and requires it.
FAKE_KEY = "nvapi-fake-conformance"
MAX_PASSAGES = 512
MAX_WORDS = 512
NIM_FIELDS = {"model", "query", "passages", "truncate"}

CONFIG = {
    "auth": {"openapi": {"BearerAuth": {"bearer": FAKE_KEY}}},
    "generation": {"mode": "all", "max-examples": 100},
}


def with_nim_limits(contract: dict[str, Any]) -> dict[str, Any]:
    """The contract plus the limits a real NIM enforces and the seed leaves out.

    Fuzzing this one, schema-valid requests are the ones a NIM accepts (so they
    must get a 200), and schema-breaking ones include every limit (so each
    must be refused).
    """
    strict = copy.deepcopy(contract)
    request = strict["components"]["schemas"]["RankingRequest"]
    request["additionalProperties"] = False
    query = request["properties"]["query"]
    query["additionalProperties"] = False
    # Not empty, not only whitespace (Python's idea of whitespace, as the server's:
    # it counts U+001C-U+001F and U+0085 too, which a regex's \s may not).
    query["properties"]["text"].update({"minLength": 1, "pattern": r"[^\s\x1c-\x1f\x85]"})
    passages = request["properties"]["passages"]
    passages.update({"minItems": 1, "maxItems": MAX_PASSAGES})
    passages["items"]["additionalProperties"] = False
    return strict


SEED = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))
schema = schemathesis.openapi.from_dict(SEED, config=schemathesis.Config.from_dict(CONFIG))
strict_schema = schemathesis.openapi.from_dict(
    with_nim_limits(SEED), config=schemathesis.Config.from_dict(CONFIG)
)


@pytest.fixture(scope="module")
def server() -> Iterator[RankingServer]:
    """The stand-in with a key required, as the contract's ``BearerAuth`` says."""
    with RankingServer(api_key=FAKE_KEY, log_size=0) as running:
        yield running


def broken_limits(body: Any) -> list[str]:
    """The NIM limits a (schema-valid) body breaks, as fragments of the server's message."""
    if not isinstance(body, dict):
        return []
    broken = [f"{key}: unknown field" for key in body if key not in NIM_FIELDS]
    query = body.get("query")
    if isinstance(query, dict):
        broken += [f"query.{key}: unknown field" for key in query if key != "text"]
        text = query.get("text")
        if isinstance(text, str) and not text.strip():
            broken.append("query.text: must not be empty")
    passages = body.get("passages")
    if isinstance(passages, list):
        if not passages:
            broken.append("passages: must contain at least 1 passage")
        if len(passages) > MAX_PASSAGES:
            broken.append(f"passages: at most {MAX_PASSAGES} passages are allowed")
        for position, passage in enumerate(passages):
            if not isinstance(passage, dict):
                continue
            broken += [
                f"passages[{position}].{key}: unknown field" for key in passage if key != "text"
            ]
            text = passage.get("text")
            too_long = isinstance(text, str) and len(text.split()) > MAX_WORDS
            if too_long and body.get("truncate") == "NONE":
                broken.append("exceeds maximum allowed token size")
    return broken


def error_bodies_are_json_with_a_message(
    ctx: Any, response: Response, case: Case[Any]
) -> bool | None:
    """Every 4xx carries a JSON body whose message says what was wrong."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"error with {content_type!r}"
    body = json.loads(response.content)
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    message = body.get("detail") or body.get("message")
    assert isinstance(message, str), f"error body has no message: {body!r}"
    assert message.strip(), "error message is empty"
    return True


@schema.parametrize()
def test_server_meets_the_seed_contract(case: Case[Any], server: RankingServer) -> None:
    """Schemathesis finds nothing: no 5xx, schema-true replies, 4xx with a message for bad input.

    A schema-valid request past a NIM limit is refused by design (see the top);
    it must get a 400 that names the limit.
    """
    positive = case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE
    broken = broken_limits(case.body) if positive else []
    response = case.call_and_validate(
        base_url=server.base_url,
        additional_checks=[error_bodies_are_json_with_a_message],
        excluded_checks=[positive_data_acceptance] if broken else [],
    )
    if broken:
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert any(fragment in detail for fragment in broken), (detail, broken)


@strict_schema.parametrize()
def test_server_meets_the_contract_with_nim_limits(case: Case[Any], server: RankingServer) -> None:
    """Every check, positive data acceptance included: in-limit requests get a 200."""
    response = case.call_and_validate(
        base_url=server.base_url, additional_checks=[error_bodies_are_json_with_a_message]
    )
    if case.meta is not None and case.meta.generation.mode == GenerationMode.POSITIVE:
        # Whatever schemathesis thinks of it, a valid request must be ranked.
        assert response.status_code == 200, response.text
        indices = sorted(item["index"] for item in response.json()["rankings"])
        body = case.body
        assert isinstance(body, dict)
        passages = body["passages"]
        assert isinstance(passages, list)
        assert indices == list(range(len(passages)))


# --------------------------------------------------------------------------- NIM limits


def nim_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "nvidia/llama-3.2-nv-rerankqa-1b-v2",
        "query": {"text": "memory bandwidth"},
        "passages": [{"text": "memory bandwidth of the H100"}, {"text": "a cake"}],
    }
    body.update(changes)
    return body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            nim_body(passages=[{"text": f"passage {i}"} for i in range(MAX_PASSAGES + 1)]),
            "passages: at most 512 passages are allowed per request, got 513",
            id="513 passages",
        ),
        pytest.param(
            nim_body(top_n=3),
            "top_n: unknown field, expected one of model, query, passages, truncate",
            id="unknown field",
        ),
        pytest.param(
            nim_body(query={"text": "  "}),
            "query.text: must not be empty or whitespace-only",
            id="empty query",
        ),
    ],
)
def test_nim_limits_are_refused_with_a_nim_style_error(
    server: RankingServer, body: dict[str, Any], message: str
) -> None:
    reply = httpx.post(
        f"{server.url}/ranking", json=body, headers={"Authorization": f"Bearer {FAKE_KEY}"}
    )
    assert reply.status_code == 400
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {
        "object": "error",
        "type": "about:blank",
        "title": "Bad Request",
        "status": 400,
        "detail": message,
        "message": message,
    }


def test_512_passages_are_accepted(server: RankingServer) -> None:
    body = nim_body(passages=[{"text": f"passage {i}"} for i in range(MAX_PASSAGES)])
    reply = httpx.post(
        f"{server.url}/ranking", json=body, headers={"Authorization": f"Bearer {FAKE_KEY}"}
    )
    assert reply.status_code == 200
    assert sorted(item["index"] for item in reply.json()["rankings"]) == list(range(MAX_PASSAGES))


# --------------------------------------------------------------------------- the key


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        pytest.param({}, "missing API key", id="no key"),
        pytest.param({"Authorization": "Bearer nvapi-fake-wrong"}, "invalid API key", id="wrong"),
        pytest.param({"Authorization": FAKE_KEY}, "invalid API key", id="no Bearer scheme"),
    ],
)
def test_a_server_with_a_key_refuses_requests_without_it(
    server: RankingServer, headers: dict[str, str], problem: str
) -> None:
    reply = httpx.post(f"{server.url}/ranking", json=nim_body(), headers=headers)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"] == "Bearer"
    assert problem in reply.json()["detail"]
    models = httpx.get(f"{server.url}/models", headers=headers)
    assert models.status_code == 401


def test_health_probes_need_no_key(server: RankingServer) -> None:
    assert httpx.get(f"{server.url}/health/ready").status_code == 200
    assert httpx.get(f"{server.url}/health/live").status_code == 200


def test_a_server_without_a_key_accepts_any_or_none(ranking_server: RankingServer) -> None:
    for headers in ({}, {"Authorization": "Bearer nvapi-fake-anything"}):
        reply = httpx.post(f"{ranking_server.url}/ranking", json=nim_body(), headers=headers)
        assert reply.status_code == 200
