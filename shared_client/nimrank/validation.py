"""Argument checks shared by the clients and the adapters: fail before any request."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from .results import Passage

__all__ = [
    "check_image",
    "check_int",
    "check_number",
    "check_passages",
    "check_query",
    "check_replica_urls",
    "check_top_n",
]

# ``data:image/<subtype>;base64,<payload>``: what NVIDIA's VLM reranker takes.
_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,", re.ASCII)
# Standard base64 (no line breaks): the alphabet, then at most two "=" of
# padding, the whole a multiple of four characters. A bare character class
# matched from the start (never fullmatch, which backtracks over a refused
# payload character by character) runs as a tight loop: ~3 ms per MB.
_BASE64_ALPHABET = re.compile(r"[A-Za-z0-9+/]*", re.ASCII)


def check_int(name: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int within bounds, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def check_number(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a float (not NaN), or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if math.isnan(value) or (positive and not value > 0):
        raise ValueError(f"{name} must be {'> 0' if positive else 'a number'}, got {value}")
    return float(value)


def check_top_n(top_n: Any, name: str = "top_n") -> int | None:
    """``None`` (everything) or a non-negative int."""
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise ValueError(f"{name} must be None or an int >= 0, got {top_n!r}")
    if top_n < 0:
        raise ValueError(f"{name} must be None or an int >= 0, got {top_n}")
    return top_n


def check_query(query: Any) -> str:
    """A query that names something to rank against, and that UTF-8 can carry."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty: there is nothing to rank the passages against")
    _check_encodable("query", query)
    return query


def check_passages(passages: Any, *, images: bool = True) -> list[str | Passage]:
    """A list of strings and ``Passage`` values, each one sendable, checked before any request.

    A single string is refused (it is almost always a slip). A lone surrogate
    (``"\\ud800"``, which UTF-8 cannot carry) and an image that is not a base64
    data URL are ``ValueError`` naming the passage; with ``images=False`` (a
    protocol without image passages) so is any image.
    """
    if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence):
        raise TypeError(f"passages must be a list of strings, got {type(passages).__name__}")
    out = list(passages)
    try:
        # The common case in one C-level pass: ASCII strings, which UTF-8 carries.
        if all(map(str.isascii, out)):
            return out
    except TypeError:  # not all strings: the loop says which one is not
        pass
    for position, passage in enumerate(out):
        # Type checks first, by exact type: the common case costs two cheap tests.
        if type(passage) is str or isinstance(passage, str):
            if not passage.isascii():
                _check_encodable(f"passages[{position}]", passage)
        elif isinstance(passage, Passage):
            if passage.text is not None and not passage.text.isascii():
                _check_encodable(f"passages[{position}].text", passage.text)
            if passage.image is not None:
                if not images:
                    raise ValueError(
                        f"passages[{position}] has an image, but this protocol sends text "
                        "only: image passages need protocol='nim' and a VLM reranker"
                    )
                check_image(passage.image, f"passages[{position}].image")
        else:
            raise TypeError(
                f"passages[{position}] must be a str or a nimrank.Passage, "
                f"got {type(passage).__name__}"
            )
    return out


def check_image(image: str, name: str = "image") -> str:
    """``image`` if it is a base64 data URL (``data:image/png;base64,...``), else ValueError.

    The payload is checked for the base64 alphabet and padding without being
    decoded (no copy of a large image is made).
    """
    prefix = _DATA_URL.match(image)
    if prefix is None:
        raise ValueError(
            f"{name} must be a base64 data URL, 'data:image/<type>;base64,<payload>', "
            f"got {image[:40]!r}{'...' if len(image) > 40 else ''}"
        )
    payload_start = prefix.end()
    size = len(image) - payload_start
    # The pattern matches anywhere (if only the empty string): never None.
    alphabet_end = _BASE64_ALPHABET.match(image, payload_start).end()  # type: ignore[union-attr]
    padding = len(image) - alphabet_end
    if size == 0 or size % 4 or padding > 2 or image[alphabet_end:] != "=" * padding:
        raise ValueError(f"{name} is a data URL whose payload is not valid base64")
    return image


def _check_encodable(name: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{name} has a lone surrogate (U+{ord(text[exc.start]):04X}) at character "
            f"{exc.start}, which UTF-8 cannot carry: decode the text with "
            "errors='replace' (or fix where it came from)"
        ) from None


def check_replica_urls(urls: Sequence[object]) -> tuple[str, ...]:
    """``urls`` as a tuple of distinct, non-empty strings (at least one), or a clear error."""
    if not urls:
        raise ValueError("no replica given: a fleet needs at least one URL")
    for url in urls:
        if not isinstance(url, str) or not url:
            raise TypeError(f"each replica URL must be a non-empty string, got {url!r}")
    if len(set(urls)) != len(urls):
        raise ValueError(
            "a replica is listed twice: URLs must be distinct (each has its own statistics)"
        )
    return tuple(url for url in urls if isinstance(url, str))
