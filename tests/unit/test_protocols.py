"""Wire protocols: request bodies, response parsing and servers' error messages.

The parsing rules are the same for both protocols, so they are written once and
run against each (only the key names differ: NIM ``rankings[{index, logit}]``,
Cohere ``results[{index, relevance_score}]``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nimrank.protocols import (
    COHERE,
    NIM,
    PROTOCOLS,
    MalformedResponse,
    WireProtocol,
    decode_json,
    encode_json,
    is_known_vlm,
    parse_model_list,
    server_message,
)
from nimrank.protocols import base as protocols_base
from nimrank.results import Passage

MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"


@dataclass(frozen=True)
class Wire:
    """A protocol and the key names of its response, to build bodies by hand."""

    protocol: WireProtocol
    list_key: str
    score_key: str

    def body(self, pairs: Sequence[tuple[Any, Any]]) -> dict[str, Any]:
        """A response body naming ``(index, score)`` pairs in the given order."""
        return {self.list_key: [{"index": i, self.score_key: s} for i, s in pairs]}

    def parse(self, body: Any, batch_size: int) -> list[float]:
        return self.protocol.parse_response(body, batch_size)


WIRES = [
    pytest.param(Wire(NIM, "rankings", "logit"), id="nim"),
    pytest.param(Wire(COHERE, "results", "relevance_score"), id="cohere"),
]


def test_protocols_are_registered_by_the_name_users_pass() -> None:
    assert PROTOCOLS == {"nim": NIM, "cohere": COHERE}
    assert (NIM.name, COHERE.name) == ("nim", "cohere")


def test_only_nim_declares_a_batch_cap_of_512() -> None:
    assert NIM.max_batch_size == 512
    assert COHERE.max_batch_size is None


# -- request bodies ------------------------------------------------------------


@pytest.mark.parametrize("truncate", [None, "NONE", "END"])
def test_nim_body_follows_the_openapi_contract(truncate: str | None) -> None:
    body = NIM.build_request(model=MODEL, query="q?", passages=["a", "b"], truncate=truncate)
    expected: dict[str, Any] = {
        "model": MODEL,
        "query": {"text": "q?"},
        "passages": [{"text": "a"}, {"text": "b"}],
    }
    if truncate is not None:
        expected["truncate"] = truncate
    assert body == expected


def test_nim_body_has_no_truncate_key_when_unset() -> None:
    body = NIM.build_request(model=MODEL, query="q", passages=["a"], truncate=None)
    assert "truncate" not in body


@pytest.mark.parametrize("truncate", [None, "END"])
def test_nim_body_never_sends_top_n_or_top_k(truncate: str | None) -> None:
    # NIM rejects unknown fields: a cut-off must be applied client-side.
    body = NIM.build_request(model=MODEL, query="q", passages=["a"] * 5, truncate=truncate)
    assert not {"top_n", "top_k", "return_documents", "documents"} & body.keys()


@pytest.mark.parametrize("size", [1, 3, 100])
def test_cohere_body_asks_for_every_document_without_the_texts_back(size: int) -> None:
    passages = [f"doc {i}" for i in range(size)]
    body = COHERE.build_request(
        model="jina-reranker-v2", query="q", passages=passages, truncate=None
    )
    assert body == {
        "model": "jina-reranker-v2",
        "query": "q",
        "documents": passages,
        "top_n": size,
        "return_documents": False,
    }


@pytest.mark.parametrize("wire", WIRES)
def test_body_keeps_passage_order_and_unicode_and_is_json(wire: Wire) -> None:
    passages = ["café", "cafe\u0301", "🦜🔗 emoji", "line\nbreak", "  spaced  "]
    body = wire.protocol.build_request(model=MODEL, query="é?", passages=passages, truncate=None)
    sent = body["passages"] if wire.protocol is NIM else body["documents"]
    texts = [item["text"] for item in sent] if wire.protocol is NIM else sent
    assert texts == passages
    assert json.loads(json.dumps(body)) == body


@pytest.mark.parametrize("wire", WIRES)
def test_body_building_does_not_touch_the_callers_list(wire: Wire) -> None:
    passages = ["a", "b"]
    body = wire.protocol.build_request(model=MODEL, query="q", passages=passages, truncate=None)
    body.clear()
    assert passages == ["a", "b"]


# -- parsing: scores matched by index ------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
@settings(max_examples=150)
@given(data=st.data(), size=st.integers(min_value=1, max_value=40))
def test_shuffled_answer_is_matched_back_by_index(
    wire: Wire, data: st.DataObject, size: int
) -> None:
    scores = data.draw(
        st.lists(
            st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=size, max_size=size
        )
    )
    order = data.draw(st.permutations(range(size)))
    # Round-trip through JSON text: that is what a server sends.
    body = json.loads(json.dumps(wire.body([(i, scores[i]) for i in order])))
    assert wire.parse(body, size) == scores


@pytest.mark.parametrize("wire", WIRES)
def test_answer_sorted_by_score_is_matched_by_index_not_position(wire: Wire) -> None:
    body = wire.body([(2, 9.5), (0, 1.25), (1, -3.0)])
    assert wire.parse(body, 3) == [1.25, -3.0, 9.5]


@pytest.mark.parametrize("wire", WIRES)
def test_integer_score_is_accepted_as_a_float(wire: Wire) -> None:
    scores = wire.parse(wire.body([(0, 3), (1, -1)]), 2)
    assert scores == [3.0, -1.0]
    assert all(type(score) is float for score in scores)


@pytest.mark.parametrize("wire", WIRES)
def test_extra_fields_in_entries_and_body_are_ignored(wire: Wire) -> None:
    body = wire.body([(1, 0.5), (0, 0.25)])
    for entry in body[wire.list_key]:
        entry["document"] = {"text": "echoed"}
    body["usage"] = {"total_tokens": 12}
    body["id"] = "req-1"
    assert wire.parse(body, 2) == [0.25, 0.5]


# -- parsing: what is refused --------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(
    ("pairs", "size", "reason"),
    [
        pytest.param([(0, 1.0)], 2, "no score", id="missing-index"),
        pytest.param([], 1, "no score", id="empty-answer"),
        pytest.param([(0, 1.0), (0, 2.0)], 2, "more than once", id="repeated-index"),
        pytest.param([(0, 1.0), (1, 1.0), (1, 1.0)], 2, "more than once", id="extra-duplicate"),
        pytest.param([(0, 1.0), (2, 1.0)], 2, "out of range", id="index-equal-to-size"),
        pytest.param([(0, 1.0), (-1, 1.0)], 2, "out of range", id="negative-index"),
        pytest.param([(0, 1.0), (True, 1.0)], 2, "not an integer", id="bool-index"),
        pytest.param([(0, 1.0), (1.0, 1.0)], 2, "not an integer", id="float-index"),
        pytest.param([(0, 1.0), ("1", 1.0)], 2, "not an integer", id="string-index"),
        pytest.param([(0, 1.0), (None, 1.0)], 2, "not an integer", id="null-index"),
        pytest.param([(0, math.nan)], 1, "not finite", id="nan-score"),
        pytest.param([(0, math.inf)], 1, "not finite", id="inf-score"),
        pytest.param([(0, -math.inf)], 1, "not finite", id="minus-inf-score"),
        # JSON integers have no size limit; float() of this one overflows.
        pytest.param([(0, 10**400)], 1, "not finite", id="integer-too-large-for-a-float"),
        pytest.param([(0, "0.5")], 1, "not a number", id="string-score"),
        pytest.param([(0, None)], 1, "not a number", id="null-score"),
        pytest.param([(0, True)], 1, "not a number", id="bool-score"),
        pytest.param([(0, [0.5])], 1, "not a number", id="list-score"),
    ],
)
def test_doubtful_answer_is_refused(
    wire: Wire, pairs: list[tuple[Any, Any]], size: int, reason: str
) -> None:
    with pytest.raises(MalformedResponse, match=reason):
        wire.parse(wire.body(pairs), size)


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_literal_score_is_refused(wire: Wire, literal: str) -> None:
    # Python's json module (and some servers) accept these non-standard literals.
    text = f'{{"{wire.list_key}": [{{"index": 0, "{wire.score_key}": {literal}}}]}}'
    with pytest.raises(MalformedResponse, match="not finite"):
        wire.parse(json.loads(text), 1)


@pytest.mark.parametrize("wire", WIRES)
def test_answer_cut_short_like_a_server_side_top_n_is_refused(wire: Wire) -> None:
    # A Cohere-style server that honoured a smaller top_n would leave passages unscored.
    with pytest.raises(MalformedResponse, match="2 of 5 passages have no score"):
        wire.parse(wire.body([(4, 0.9), (0, 0.8), (2, 0.1)]), 5)


@pytest.mark.parametrize("wire", WIRES)
def test_missing_indices_are_listed_but_not_all_of_them(wire: Wire) -> None:
    with pytest.raises(MalformedResponse) as caught:
        wire.parse(wire.body([]), 30)
    message = str(caught.value)
    assert "30 of 30" in message
    assert "0, 1, 2" in message
    assert "..." in message
    assert "29" not in message.split("indices")[1]


@pytest.mark.parametrize("wire", WIRES)
def test_entry_without_index_or_score_is_refused(wire: Wire) -> None:
    with pytest.raises(MalformedResponse, match="not an integer"):
        wire.parse({wire.list_key: [{wire.score_key: 1.0}]}, 1)
    with pytest.raises(MalformedResponse, match="not a number"):
        wire.parse({wire.list_key: [{"index": 0}]}, 1)


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param([{"index": 0, "logit": 1.0}], "expected a JSON object, got list", id="list"),
        pytest.param("ok", "expected a JSON object, got str", id="string"),
        pytest.param(None, "expected a JSON object, got NoneType", id="null"),
        pytest.param(3.5, "expected a JSON object, got float", id="number"),
        pytest.param({}, "expected a list under", id="missing-key"),
        pytest.param({"data": []}, "expected a list under", id="other-key"),
    ],
)
def test_body_of_the_wrong_shape_is_refused(wire: Wire, body: Any, reason: str) -> None:
    with pytest.raises(MalformedResponse, match=reason):
        wire.parse(body, 1)


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize(
    ("value", "got"),
    [(None, "nothing"), ({"index": 0}, "dict"), ("[]", "str"), (7, "int")],
)
def test_key_that_holds_no_list_is_refused(wire: Wire, value: Any, got: str) -> None:
    with pytest.raises(
        MalformedResponse, match=f"expected a list under '{wire.list_key}', got {got}"
    ):
        wire.parse({wire.list_key: value}, 1)


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("item", [0, 0.5, "0", None, [0, 0.5]])
def test_list_of_non_objects_is_refused(wire: Wire, item: Any) -> None:
    with pytest.raises(MalformedResponse, match=f"expected objects in '{wire.list_key}'"):
        wire.parse({wire.list_key: [item]}, 1)


@pytest.mark.parametrize(
    ("protocol", "other"),
    [
        pytest.param(NIM, Wire(COHERE, "results", "relevance_score"), id="nim-reads-cohere"),
        pytest.param(COHERE, Wire(NIM, "rankings", "logit"), id="cohere-reads-nim"),
    ],
)
def test_each_protocol_refuses_the_others_body(protocol: WireProtocol, other: Wire) -> None:
    with pytest.raises(MalformedResponse):
        protocol.parse_response(other.body([(0, 1.0)]), 1)


@pytest.mark.parametrize("wire", WIRES)
def test_score_under_the_other_protocols_key_is_refused(wire: Wire) -> None:
    other_key = "relevance_score" if wire.score_key == "logit" else "logit"
    with pytest.raises(MalformedResponse, match="not a number"):
        wire.parse({wire.list_key: [{"index": 0, other_key: 1.0}]}, 1)


def test_malformed_response_is_a_value_error() -> None:
    # The client turns ValueError from parsing into ResponseFormatError.
    assert issubclass(MalformedResponse, ValueError)


# -- the server's message from an error body -----------------------------------

LONG = "x" * 10_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param('{"detail": "Input too long"}', "Input too long", id="detail-string"),
        pytest.param(
            json.dumps(
                {
                    "detail": [
                        {"loc": ["body", "query"], "msg": "field required", "type": "missing"},
                        {"loc": ["body", "passages", 0], "msg": "str type expected"},
                    ]
                }
            ),
            "field required; str type expected",
            id="fastapi-validation-list",
        ),
        pytest.param('{"message": "invalid api token"}', "invalid api token", id="message"),
        pytest.param('{"error": "Unauthorized"}', "Unauthorized", id="error-string"),
        pytest.param(
            '{"error": {"message": "Rate limit reached", "type": "rate_limit", "code": 429}}',
            "Rate limit reached",
            id="error-object",
        ),
        pytest.param(
            json.dumps(
                {
                    "type": "urn:kaizen:problem-details:bad-request",
                    "title": "Bad Request",
                    "status": 400,
                    "detail": "Input length 600 exceeds maximum allowed token size 512",
                    "instance": "/v2/nvcf/pexec/functions/abc",
                    "requestId": "req-1",
                }
            ),
            "Input length 600 exceeds maximum allowed token size 512",
            id="nvcf-problem-details",
        ),
        pytest.param(
            '{"type": "about:blank", "title": "Unauthorized", "status": 401}',
            "Unauthorized",
            id="problem-details-without-detail",
        ),
        pytest.param(
            '{"detail": "", "title": "Forbidden", "status": 403}',
            "Forbidden",
            id="empty-detail-falls-back-to-title",
        ),
        pytest.param('"just a string"', "just a string", id="json-string"),
        pytest.param("Internal Server Error", "Internal Server Error", id="plain-text"),
        pytest.param("  upstream timed out\n", "upstream timed out", id="text-is-stripped"),
        pytest.param(
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            id="html",
        ),
        pytest.param('{"code": 500}', '{"code": 500}', id="json-without-message"),
        pytest.param("[1, 2]", "[1, 2]", id="json-list-without-message"),
        pytest.param("", "(empty body)", id="empty"),
        pytest.param(" \n\t", "(empty body)", id="whitespace"),
    ],
)
def test_server_message_is_found_in_every_common_error_shape(text: str, message: str) -> None:
    assert server_message(text) == message


@pytest.mark.parametrize(
    "text", [LONG, json.dumps({"detail": LONG}), json.dumps({"error": {"message": LONG}})]
)
def test_very_long_server_message_is_shortened(text: str) -> None:
    message = server_message(text)
    assert len(message) == 500
    assert message == "x" * 497 + "..."


def test_server_message_limit_is_adjustable_and_exact_fit_is_kept() -> None:
    assert server_message("y" * 20, limit=20) == "y" * 20
    assert server_message("y" * 21, limit=20) == "y" * 17 + "..."


@settings(max_examples=150)
@given(text=st.text(max_size=800))
def test_server_message_never_fails_and_respects_the_limit(text: str) -> None:
    message = server_message(text)
    assert 0 < len(message) <= 500


# -- image passages ------------------------------------------------------------

PNG = "data:image/png;base64,iVBORw0KGgo="


def test_nim_sends_text_image_or_both_and_omits_text_for_an_image_alone() -> None:
    passages: list[str | Passage] = [
        "plain",
        Passage(text="caption only"),
        Passage(image=PNG),
        Passage(text="caption", image=PNG),
    ]
    body = NIM.build_request(model=MODEL, query="q", passages=passages, truncate=None)
    assert body["passages"] == [
        {"text": "plain"},
        {"text": "caption only"},
        {"image": PNG},
        {"text": "caption", "image": PNG},
    ]


def test_cohere_refuses_an_image_passage_and_takes_a_text_one() -> None:
    assert not COHERE.supports_images
    assert NIM.supports_images
    body = COHERE.build_request(model=MODEL, query="q", passages=[Passage("a")], truncate=None)
    assert body["documents"] == ["a"]
    with pytest.raises(ValueError, match="cohere protocol sends text only"):
        COHERE.build_request(
            model=MODEL, query="q", passages=["a", Passage(image=PNG)], truncate=None
        )


@pytest.mark.parametrize(
    ("model", "known"),
    [
        ("nvidia/llama-nemotron-rerank-vl-1b-v2", True),
        ("NVIDIA/llama-nemotron-rerank-VL-1b-v2 ", True),
        ("ranking-vlm", True),
        ("nvidia/llama-nemotron-rerank-1b-v2", False),
        ("nvidia/llama-3.2-nv-rerankqa-1b-v2", False),
        ("ranking", False),
        ("jina-reranker-v2-base-multilingual", False),
        ("evilmodel", False),
    ],
)
def test_known_vlm_models(model: str, known: bool) -> None:
    assert is_known_vlm(model) is known


# -- decoding JSON strictly ----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"rankings": [{"index": 0, "logit": 1.0, "index": 1}]}',
        '{"rankings": [{"index": 0, "logit": 1.0}], "rankings": []}',
        '{"data": [{"id": "a", "id": "b"}]}',
        '{"a": {"b": 1, "\\u0062": 2}}',  # the same key, written with an escape
    ],
)
def test_a_repeated_key_in_any_object_is_refused(text: str) -> None:
    with pytest.raises(MalformedResponse, match="appears more than once"):
        decode_json(text)
    with pytest.raises(MalformedResponse, match="appears more than once"):
        decode_json(text.encode())


@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_deep_nesting_is_a_malformed_response_not_a_recursion_error(opener: str) -> None:
    with pytest.raises(MalformedResponse, match="nested too deeply"):
        decode_json(opener * 100_000)
    # The error-message reader keeps working on such a body too.
    assert server_message(opener * 100_000, limit=20) == (opener * 20)[:17] + "..."


def test_server_message_does_not_dig_forever_into_nested_bodies() -> None:
    body = '{"detail": ' * 500 + '"deep"' + "}" * 500
    assert server_message(body, limit=30).startswith('{"detail"')


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe\x00", b"nul", b'{"a": 1} x'])
def test_not_json_is_a_malformed_response(content: bytes) -> None:
    with pytest.raises(MalformedResponse, match="not valid JSON"):
        decode_json(content)


def test_decoded_body_parses_like_the_values() -> None:
    text = '{"rankings": [{"index": 1, "logit": -2}, {"index": 0, "logit": 0.5}]}'
    assert NIM.parse_response(decode_json(text.encode()), 2) == [0.5, -2.0]


@pytest.mark.parametrize(
    "encode",
    [encode_json, protocols_base._stdlib_encode],
    ids=["orjson-if-installed", "stdlib"],
)
@settings(max_examples=100)
@given(texts=st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"])), max_size=8))
def test_encoded_body_is_compact_utf8_json_of_the_body(
    encode: Callable[[Any], bytes], texts: list[str]
) -> None:
    # Whichever encoder runs, the server gets the same bytes.
    body = NIM.build_request(model=MODEL, query="q é", passages=texts, truncate="END")
    content = encode(body)
    assert json.loads(content.decode("utf-8")) == body
    assert content == json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


# -- the model list ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "ids"),
    [
        ({"object": "list", "data": [{"id": "a", "object": "model"}, {"id": "b"}]}, ["a", "b"]),
        ({"data": []}, []),
        ([{"id": "a"}, "b"], ["a", "b"]),
        (["x"], ["x"]),
    ],
)
def test_model_list_shapes_that_are_read(body: Any, ids: list[str]) -> None:
    assert parse_model_list(body) == ids


@pytest.mark.parametrize(
    "body",
    [
        "string",
        {"data": "abc"},
        {"data": {"id": "a"}},
        {"models": [{"id": "a"}]},
        {"data": [{"name": "a"}]},
        {"data": [{"id": 5}]},
        {"data": [{"id": ""}]},
        {"data": [["a"]]},
        [1, 2],
        None,
        7,
    ],
)
def test_model_list_of_another_shape_is_refused(body: Any) -> None:
    with pytest.raises(MalformedResponse):
        parse_model_list(body)


# -- the two routes of decode_json give one answer ------------------------------------

_KEYS = st.sampled_from(["index", "logit", "rankings", "a", 'q"', "\\", "x:", "é", ""])
_JSON_TEXTS = st.recursive(
    st.one_of(
        st.integers(-(2**70), 2**70).map(str),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        # Decimal spellings of every length, exponents included: parsed alike?
        st.tuples(
            st.integers(-(10**25), 10**25), st.integers(0, 10**20), st.integers(-330, 330)
        ).map(lambda parts: f"{parts[0]}.{parts[1]}e{parts[2]}"),
        st.sampled_from(["true", "false", "null", "NaN", "1e400", '"index"', '"a\\"b"', '"é"']),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ",".join(items) + "]"),
        # Keys may repeat, and colons may have space before them: both routes meet.
        st.lists(st.tuples(_KEYS, st.sampled_from([":", " :", ": "]), inner), max_size=4).map(
            lambda pairs: (
                "{" + ",".join(json.dumps(key) + colon + value for key, colon, value in pairs) + "}"
            )
        ),
    ),
    max_leaves=12,
)


def _strict(content: bytes) -> Any:
    return json.loads(content, object_pairs_hook=protocols_base._unique_keys)


@given(_JSON_TEXTS)
@settings(max_examples=1000, deadline=None)
def test_decode_json_takes_the_fast_route_only_when_it_reads_what_the_strict_one_does(
    text: str,
) -> None:
    content = text.encode()
    try:
        expected = _strict(content)
    except ValueError:
        with pytest.raises(MalformedResponse):
            decode_json(content)
        return
    # repr: NaN and -0.0 compare by spelling, not by ==.
    assert repr(decode_json(content)) == repr(expected)


def test_a_ranking_answer_takes_the_fast_route(monkeypatch: pytest.MonkeyPatch) -> None:
    body = json.dumps({"rankings": [{"index": i, "logit": i / 3} for i in range(32)]}).encode()

    def strict_route(pairs: object) -> None:
        raise AssertionError("the strict route was taken")

    monkeypatch.setattr(protocols_base, "_unique_keys", strict_route)
    assert NIM.parse_response(decode_json(body), 32) == [i / 3 for i in range(32)]
