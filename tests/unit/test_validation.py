"""Argument checks before any request: passages (text and image), the query, surrogates."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from nimrank import RankingClient
from nimrank.results import Passage, RankedPassage, make_ranked
from nimrank.validation import check_image, check_passages, check_query

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n fake").decode()


def test_strings_and_passages_mix_and_come_back_as_a_list() -> None:
    passages = ("a", Passage(text="b"), Passage(image=PNG), Passage("c", PNG))
    assert check_passages(passages) == list(passages)


@pytest.mark.parametrize("passages", ["one string", b"bytes", 3, None, {"a": 1}])
def test_not_a_list_of_passages_is_a_type_error(passages: Any) -> None:
    with pytest.raises(TypeError, match="passages must be a list"):
        check_passages(passages)


@pytest.mark.parametrize("item", [3, None, b"x", {"text": "x"}, ["x"]])
def test_an_item_of_another_type_is_a_type_error_naming_it(item: Any) -> None:
    with pytest.raises(TypeError, match=r"passages\[1\] must be a str or a nimrank.Passage"):
        check_passages(["ok", item])


@pytest.mark.parametrize(
    "passage",
    [
        "\ud800",
        "ok \udfff ok",
        "café \udc80",  # not ASCII, so not the fast path either
        Passage(text="x\ud800"),
        Passage(text="\ud800", image=PNG),
    ],
)
def test_a_lone_surrogate_is_refused_naming_the_passage(passage: str | Passage) -> None:
    with pytest.raises(ValueError, match=r"passages\[2\](\.text)? has a lone surrogate"):
        check_passages(["fine", "café", passage])


def test_a_surrogate_pair_written_as_one_character_is_fine() -> None:
    assert check_passages(["🦜 \U0001f517"]) == ["🦜 \U0001f517"]


def test_a_lone_surrogate_in_the_query_is_refused() -> None:
    with pytest.raises(ValueError, match="query has a lone surrogate"):
        check_query("what is \ud83d?")


@pytest.mark.parametrize(
    "image",
    [
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/jpeg;base64,/9j/4AAQSkZJRg==",
        "data:image/svg+xml;base64,PHN2Zz4=",
        "data:image/gif;base64,R0lGODlh",
        "data:image/png;base64,AB==",
    ],
)
def test_base64_data_urls_are_accepted(image: str) -> None:
    assert check_image(image) == image
    assert check_passages([Passage(image=image)]) == [Passage(image=image)]


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ("https://example.com/cat.png", "must be a base64 data URL"),
        ("iVBORw0KGgo=", "must be a base64 data URL"),
        ("data:text/plain;base64,aGk=", "must be a base64 data URL"),
        ("data:image/png,rawbytes", "must be a base64 data URL"),
        ("data:image/png;base64,", "not valid base64"),
        ("data:image/png;base64,abc", "not valid base64"),  # not a multiple of 4
        ("data:image/png;base64,ab$d", "not valid base64"),
        ("data:image/png;base64,ab=d", "not valid base64"),
        ("data:image/png;base64,ab cd", "not valid base64"),
        ("data:image/png;base64,abcd\n", "not valid base64"),
        ("data:image/png;base64,A===", "not valid base64"),
        ("data:image/png;base64,====", "not valid base64"),
        pytest.param(
            "data:image/png;base64," + "A" * 4_000_000 + "$AAA",
            "not valid base64",
            id="4-MB-refused-at-its-end",
        ),
    ],
)
def test_an_image_that_is_not_a_base64_data_url_names_the_passage(image: str, reason: str) -> None:
    with pytest.raises(ValueError, match=rf"passages\[1\]\.image .*{reason}"):
        check_passages(["text", Passage(text="caption", image=image)])


def test_a_long_bad_image_is_not_echoed_whole() -> None:
    with pytest.raises(ValueError, match="must be a base64 data URL") as caught:
        check_image("x" * 10_000)
    assert len(str(caught.value)) < 200


def test_an_image_is_refused_when_the_protocol_sends_text_only() -> None:
    assert check_passages([Passage(text="only text")], images=False) == [Passage(text="only text")]
    with pytest.raises(ValueError, match=r"passages\[1\] has an image.*protocol='nim'"):
        check_passages(["a", Passage(image=PNG)], images=False)


@pytest.mark.parametrize("field", ["text", "image"])
def test_passage_fields_must_be_strings(field: str) -> None:
    with pytest.raises(TypeError, match=f"Passage.{field} must be a str or None"):
        Passage(**{field: b"bytes"})  # type: ignore[arg-type]


def test_passage_is_a_frozen_hashable_value() -> None:
    assert Passage("a", PNG) == Passage(text="a", image=PNG)
    assert len({Passage("a", PNG), Passage("a", PNG), Passage("a")}) == 2
    with pytest.raises(AttributeError):
        Passage("a").text = "b"  # type: ignore[misc]


def test_reprs_show_the_start_of_a_large_image_only() -> None:
    image = "data:image/png;base64," + "A" * 100_000
    assert len(repr(Passage("caption", image))) < 150
    assert "100022 chars" in repr(Passage("caption", image))
    assert len(repr(RankedPassage(0, 1.0, "caption", image))) < 170
    assert repr(Passage("a", PNG)) == f"Passage(text='a', image={PNG!r})"


def test_the_merges_fast_results_are_the_same_frozen_values() -> None:
    made = make_ranked(3, None, "text", PNG)
    assert made == RankedPassage(3, None, "text", PNG)
    assert type(made) is RankedPassage
    assert hash(made) == hash(RankedPassage(3, None, "text", PNG))
    with pytest.raises(AttributeError):
        made.score = 1.0  # type: ignore[misc]


# -- through the client: refused before any request ----------------------------

# Nothing listens on port 9 (discard): a request would be a RankingConnectionError.
NOWHERE = "http://127.0.0.1:9/v1"


@pytest.mark.parametrize(
    ("protocol", "passages", "message"),
    [
        ("nim", ["fine", "bad \ud800"], r"passages\[1\] has a lone surrogate"),
        ("nim", ["fine", Passage(image="https://x/cat.png")], r"passages\[1\]\.image"),
        ("cohere", ["fine", Passage(image=PNG)], r"passages\[1\] has an image"),
    ],
)
def test_the_client_refuses_before_any_request(
    protocol: Any, passages: list[Any], message: str
) -> None:
    with RankingClient(base_url=NOWHERE, protocol=protocol, max_retries=0) as client:
        with pytest.raises(ValueError, match=message):
            client.rank("query", passages)
        with pytest.raises(ValueError, match="query has a lone surrogate"):
            client.rank("query \udfff", ["fine"])
