"""The server's sans-IO request handling: any input gets a 200 or a 4xx, never an exception."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nimrank.server.http1 import BadRequest, parse_chunk_size, parse_head, printable
from nimrank.server.routes import (
    VLM_MODEL_ID,
    NotJson,
    Reply,
    ServerSettings,
    allowed_methods,
    dispatch,
    parse_json,
    rank_nim,
    rerank,
    too_many_values,
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


# --------------------------------------------------------------------------- the HTTP/1.1 parser


def test_a_plain_head_parses() -> None:
    head = parse_head(
        b"POST /v1/ranking?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nX-A: 1\r\nx-a: 2"
    )
    assert (head.method, head.path, head.query) == ("POST", "/v1/ranking", "x=1")
    assert head.content_length == 12
    assert not head.chunked
    assert head.keep_alive
    assert head.headers["x-a"] == "1, 2"


@pytest.mark.parametrize(
    ("connection", "version", "keep_alive"),
    [("", "1.1", True), ("close", "1.1", False), ("", "1.0", False), ("keep-alive", "1.0", True)],
)
def test_keep_alive_follows_the_version_and_connection_header(
    connection: str, version: str, keep_alive: bool
) -> None:
    raw = f"GET / HTTP/{version}\r\nConnection: {connection}".encode()
    assert parse_head(raw).keep_alive is keep_alive


@pytest.mark.parametrize(
    "raw",
    [
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: identity",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunkedx",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4",
        b"POST / HTTP/1.1\r\nContent-Length: -3",
        b"POST / HTTP/1.1\r\nContent-Length: 3 3",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999",
        b"POST / HTTP/1.1\r\nHost: a\nX: b",
        b"POST / HTTP/1.1\r\n\tfolded",
        b"POST  / HTTP/1.1",
        b"POST / HTTP/1.1 ",
        b"P\x00ST / HTTP/1.1",
        b"POST /\x7f HTTP/1.1",
        b"POST * HTTP/1.1",
    ],
)
def test_ambiguous_or_malformed_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_head(raw)
    assert caught.value.status == 400


def test_too_many_headers_is_a_431() -> None:
    raw = b"GET / HTTP/1.1" + b"".join(b"\r\nX-%d: 1" % n for n in range(101))
    with pytest.raises(BadRequest) as caught:
        parse_head(raw)
    assert caught.value.status == 431


@pytest.mark.parametrize(("line", "size"), [(b"0", 0), (b"1a", 26), (b"FF;ext=1", 255)])
def test_chunk_sizes_are_hex_digits(line: bytes, size: int) -> None:
    assert parse_chunk_size(line) == size


@pytest.mark.parametrize("line", [b"-1", b"0x10", b"1_0", b"+1", b" 1", b"", b"1" * 17, b"g"])
def test_other_chunk_sizes_are_refused(line: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_chunk_size(line)


def test_printable_escapes_control_characters() -> None:
    assert printable("/a\x1b[2J\x07\\b\u0085") == "/a\\x1b[2J\\x07\\x5cb\\x85"


def test_only_large_bodies_of_many_values_are_refused_before_decoding() -> None:
    many = b"[" + b"[]," * 400_000 + b"[]]"
    assert too_many_values(many)
    # Escaped quotes do not end a string early: its commas still do not count.
    strings = json.dumps({"passages": [{"text": ',"[{\\' * 400_000}]}).encode()
    assert len(strings) > 1 << 20
    assert not too_many_values(strings)
    small = b"[" + b"[]," * 300_000 + b"[]]"  # under 1 MiB: decoded directly
    assert not too_many_values(small)


# --------------------------------------------------------------------------- image passages


def test_image_passages_are_for_the_vlm_model_only() -> None:
    image = {"image": "data:image/png;base64,aGVsbG8="}
    body = {"model": VLM_MODEL_ID, "query": {"text": "q"}, "passages": [image, {"text": "q"}]}
    assert dispatch("POST", "/v1/ranking", body, ServerSettings()).status == 200
    refused = dispatch("POST", "/v1/ranking", {**body, "model": "other"}, ServerSettings())
    assert refused.status == 400
    no_vlm = dispatch("POST", "/v1/ranking", body, ServerSettings(vlm_model=None))
    assert no_vlm.status == 400
