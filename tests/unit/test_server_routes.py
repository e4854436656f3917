"""The server's sans-IO request handling: any input gets a 200 or a 4xx, never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nimrank.server.routes import (
    NotJson,
    Reply,
    ServerSettings,
    allowed_methods,
    dispatch,
    parse_json,
    rank_nim,
    rerank,
)

SETTINGS = ServerSettings(max_passages=8, max_documents=8, max_passage_tokens=6)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
texts = st.one_of(st.text(max_size=40), st.sampled_from(["", " ", "memory bandwidth", "GPU"]))
# Bodies close to valid ones, so the fuzzing reaches the deeper checks.
nim_bodies = st.fixed_dictionaries(
    {
        "model": st.one_of(st.text(max_size=5), json_values),
        "query": st.one_of(st.fixed_dictionaries({"text": texts}), json_values),
        "passages": st.one_of(
            st.lists(st.one_of(st.fixed_dictionaries({"text": texts}), json_values), max_size=10),
            json_values,
        ),
    },
    optional={
        "truncate": st.one_of(st.sampled_from(["NONE", "END", "end", None]), json_values),
        "top_n": json_values,
    },
)
rerank_bodies = st.fixed_dictionaries(
    {
        "query": st.one_of(texts, json_values),
        "documents": st.one_of(
            st.lists(
                st.one_of(texts, st.fixed_dictionaries({"text": texts}), json_values), max_size=10
            ),
            json_values,
        ),
    },
    optional={
        "model": st.one_of(st.text(max_size=5), json_values),
        "top_n": st.one_of(st.integers(-2, 12), json_values),
        "return_documents": st.one_of(st.booleans(), json_values),
        "extra": json_values,
    },
)


def assert_well_formed(reply: Reply) -> None:
    assert reply.status in (200, 400)
    json.dumps(reply.body, allow_nan=False)  # finite numbers, serialisable


@settings(max_examples=300)
@given(st.one_of(nim_bodies, json_values))
def test_ranking_answers_any_body_with_200_or_400(body: Any) -> None:
    reply = rank_nim(body, SETTINGS)
    assert_well_formed(reply)
    if reply.status == 200:
        indices = sorted(r["index"] for r in reply.body["rankings"])
        assert indices == list(range(len(body["passages"])))
        assert reply.passages == len(body["passages"])
    else:
        assert reply.body["detail"]
        assert reply.passages == 0


@settings(max_examples=300)
@given(st.one_of(rerank_bodies, json_values))
def test_rerank_answers_any_body_with_200_or_400(body: Any) -> None:
    reply = rerank(body, SETTINGS)
    assert_well_formed(reply)
    if reply.status == 200:
        n = len(body["documents"])
        results = reply.body["results"]
        top_n = body.get("top_n")
        assert len(results) == (n if top_n is None else min(n, top_n))
        assert len({r["index"] for r in results}) == len(results)
        assert all(0.0 <= r["relevance_score"] <= 1.0 for r in results)
    else:
        assert set(reply.body) == {"message"}


@given(method=st.sampled_from(["GET", "POST", "PUT", "HEAD", "FOO"]), path=st.text(max_size=30))
def test_dispatch_answers_any_method_and_path(method: str, path: str) -> None:
    reply = dispatch(method, "/" + path, parse_json(b"{}"), SETTINGS)
    assert reply.status in (200, 400, 404, 405)
    json.dumps(reply.body)


@given(st.binary(max_size=60))
def test_parse_json_never_raises(raw: bytes) -> None:
    parse_json(raw)


def test_parse_json_marks_what_is_not_json() -> None:
    assert isinstance(parse_json(b""), NotJson)
    assert isinstance(parse_json(b"\xff"), NotJson)
    assert isinstance(parse_json(b"[" * 100_000), NotJson)
    assert parse_json(b'{"a": [1]}') == {"a": [1]}


def test_allowed_methods_list_head_wherever_get_is_served() -> None:
    assert allowed_methods("/v1/ranking") == ["POST"]
    assert allowed_methods("/v1/models") == ["GET", "HEAD"]
    assert allowed_methods("/v1/retrieval/nvidia/some-model/reranking") == ["POST"]
    assert allowed_methods("/v1/unknown") == []


def test_simulated_time_is_fixed_plus_per_passage() -> None:
    assert ServerSettings(latency_ms=10, per_passage_ms=2).simulated_seconds(5) == pytest.approx(
        0.02
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"latency_ms": -1},
        {"latency_ms": float("inf")},
        {"per_passage_ms": -0.5},
        {"max_passages": 0},
        {"max_passage_tokens": 0},
    ],
)
def test_settings_refuse_impossible_values(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=">= "):
        ServerSettings(**changes)
