"""What every wire protocol provides, and the checks they share.

A protocol is only three things: where a batch goes, how its request body is
built, and how its response body is read back into one score per passage of
the batch. Everything else (batching, retries, errors) is the client's, and
the same for every protocol.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, cast

from ..results import Passage

__all__ = [
    "MalformedResponse",
    "WireProtocol",
    "decode_json",
    "encode_json",
    "parse_model_list",
    "scores_by_position",
    "server_message",
]

try:  # A dependency; without it (a platform with no wheel) the standard library does it all.
    from orjson import dumps as _orjson_dumps
    from orjson import loads as _orjson_loads
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_dumps = None  # type: ignore[assignment]
    _orjson_loads = None  # type: ignore[assignment]

_INF = math.inf


class MalformedResponse(ValueError):
    """A response body that does not follow the protocol (the client adds context)."""


class WireProtocol(Protocol):
    """A ranking wire format, as pure functions over values."""

    name: str
    #: The path segment a base URL gets, e.g. ``"ranking"`` -> ``.../v1/ranking``.
    endpoint: str
    #: Path endings (or ``/infix/`` parts) that mark a URL as a full endpoint.
    full_url_markers: tuple[str, ...]
    #: The most passages the service accepts in one request (None: no known cap).
    max_batch_size: int | None
    #: Whether a passage may carry an image (``Passage(image=...)``).
    supports_images: bool

    def build_request(
        self, *, model: str, query: str, passages: Sequence[str | Passage], truncate: str | None
    ) -> dict[str, Any]:
        """The JSON body that asks for scores of ``passages`` against ``query``."""
        ...

    def parse_response(self, body: Any, batch_size: int) -> list[float]:
        """One score per passage of the batch, in the batch's order.

        Raises:
            MalformedResponse: the body is not the protocol's shape, or its
                indices or scores do not name every passage exactly once.
        """
        ...


# -- JSON text <-> values --------------------------------------------------------


def encode_json(body: Any) -> bytes:
    """A request body as compact UTF-8 JSON (what httpx's ``json=`` sends).

    Uses orjson when it is installed: building a 512-passage body takes ~0.04 ms
    instead of ~2 ms (tests/benchmarks/planning_cost.py). Both refuse NaN and
    lone surrogates, which the client's checks keep out of every body anyway.
    """
    if _orjson_dumps is not None:
        return _orjson_dumps(body)
    return _stdlib_encode(body)


def _stdlib_encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def decode_json(content: bytes | str) -> Any:
    """A response body as values, refusing what a lenient decoder lets through.

    Raises:
        MalformedResponse: not JSON (or not UTF-8); an object with a repeated
            key (``{"index": 0, "index": 1}``: which one is meant?); nesting
            deeper than the interpreter's recursion limit, which the standard
            decoder reports as a bare ``RecursionError``.

    Two routes, one answer. orjson reads a 32-entry ranking answer in ~3 us
    against ~22 us for the standard decoder with the repeated-key hook, but it
    keeps the last of repeated keys without a word, and reads an integer of 19
    digits or more (past 64 bits) as a float. So its reading is taken only
    when the text proves neither happened: no run of 19 digits, and no
    backslash, so that no string holds an escaped quote and the text has two
    quotes per string (keys included); orjson's writing of the values it built
    has the same (it adds no escape where none was needed), less two or more
    for every key it dropped as a repeat. Equal counts: nothing was dropped.
    The checks cost ~3 us. Anything else (an escape, a long number, a value
    orjson refuses) goes to the standard decoder, which decides and says why.
    """
    if (
        _orjson_loads is not None
        and type(content) is bytes
        and b"\\" not in content
        and _LONG_NUMBER not in content.translate(_DIGITS)
    ):
        try:
            value = _orjson_loads(content)
        except ValueError:  # orjson.JSONDecodeError: the exact route says what is wrong
            pass
        else:
            if content.count(b'"') == _orjson_dumps(value).count(b'"'):
                return value
    try:
        return json.loads(content, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise MalformedResponse("the JSON is nested too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, _unique_keys
        raise MalformedResponse(f"not valid JSON: {exc}") from None


# Every digit as "0", everything else as a space: a run of 19 digits is then one search.
_DIGITS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_NUMBER = b"0" * 19


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"key {key[:40]!r} appears more than once in one object")
            seen.add(key)
    return obj


# -- reading scores back ---------------------------------------------------------


def scores_by_position(pairs: Iterable[tuple[Any, Any]], batch_size: int) -> list[float]:
    """Place ``(index, score)`` pairs by index, refusing anything doubtful.

    Every position ``0 .. batch_size-1`` must be named exactly once, with an
    integer index and a finite number as score. Servers sort their answer by
    score, so the index, never the position in the answer, says whose score it is.
    """
    scores: list[float | None] = [None] * batch_size
    for index, score in pairs:
        # The common case in a few cheap tests; anything else gets the full checks.
        if (
            type(index) is int
            and 0 <= index < batch_size
            and type(score) is float
            and -_INF < score < _INF
            and scores[index] is None
        ):
            scores[index] = score
        else:
            scores[index] = _checked_score(index, score, batch_size, scores)
    return _complete(scores, batch_size)


def scores_in(body: Any, key: str, score_key: str, batch_size: int) -> list[float]:
    """``scores_by_position`` over the ``{"index", score_key}`` objects listed in ``body[key]``."""
    if type(body) is not dict:
        raise MalformedResponse(f"expected a JSON object, got {type(body).__name__}")
    items = body.get(key)
    if type(items) is not list:
        raise MalformedResponse(f"expected a list under {key!r}, got {_describe(items)}")
    scores: list[float | None] = [None] * batch_size
    for item in items:
        if type(item) is not dict:
            raise MalformedResponse(f"expected objects in {key!r}, got {_describe(item)}")
        index: Any = item.get("index")
        score: Any = item.get(score_key)
        if (
            type(index) is int
            and 0 <= index < batch_size
            and type(score) is float
            and -_INF < score < _INF
            and scores[index] is None
        ):
            scores[index] = score
        else:
            scores[index] = _checked_score(index, score, batch_size, scores)
    return _complete(scores, batch_size)


def _checked_score(index: Any, score: Any, batch_size: int, scores: list[float | None]) -> float:
    """The score at ``index`` as a float, or the MalformedResponse saying what is off."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise MalformedResponse(f"index {index!r:.40} is not an integer")
    if not 0 <= index < batch_size:
        raise MalformedResponse(
            f"index {index} is out of range for a batch of {batch_size} passages"
        )
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise MalformedResponse(f"score {score!r:.40} for index {index} is not a number")
    try:
        value = float(score)
    except OverflowError:  # an int past float's range: JSON sets no limit
        value = math.inf
    if not math.isfinite(value):
        raise MalformedResponse(f"score {score!r:.40} for index {index} is not finite")
    if scores[index] is not None:
        raise MalformedResponse(f"index {index} appears more than once")
    return value


def _complete(scores: list[float | None], batch_size: int) -> list[float]:
    if None in scores:
        missing = [position for position, score in enumerate(scores) if score is None]
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise MalformedResponse(
            f"{len(missing)} of {batch_size} passages have no score (indices {shown})"
        )
    return cast("list[float]", scores)


def parse_model_list(body: Any) -> list[str]:
    """The model ids of a ``/v1/models`` answer, in the order listed.

    Takes the OpenAI shape ``{"data": [{"id": ...}, ...]}`` (NIM, vLLM, the
    hosted catalog) and a bare list of such objects or of id strings; anything
    else, such as ``"string"`` or ``{"data": "abc"}``, is a MalformedResponse
    (iterating it would make one "model" per character).
    """
    items = body.get("data") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise MalformedResponse(
            'expected a model list, {"data": [{"id": ...}, ...]}, '
            f"got {_describe(items if isinstance(body, dict) else body)}"
        )
    ids: list[str] = []
    for position, item in enumerate(items):
        model_id = item.get("id") if isinstance(item, dict) else item
        if not isinstance(model_id, str) or not model_id:
            raise MalformedResponse(
                f"model {position} has no id string (got {_describe(model_id)})"
            )
        ids.append(model_id)
    return ids


def server_message(text: str, limit: int = 500) -> str:
    """The server's own explanation, from an error body of any common shape.

    Understands ``{"detail": ...}`` (NIM, FastAPI, NVCF problem details),
    ``{"message": ...}`` (Cohere, vLLM), ``{"error": "..."}`` and
    ``{"error": {"message": ...}}`` (OpenAI-style proxies such as LiteLLM);
    anything else is returned as text, shortened to ``limit`` characters.
    """
    try:
        body = decode_json(text)
    except MalformedResponse:
        body = None
    found = _message_in(body, 0) if body is not None else None
    message = (found or text).strip() or "(empty body)"
    return message if len(message) <= limit else message[: limit - 3] + "..."


#: How deep ``server_message`` looks for a message: real error bodies nest 2-3 levels.
_MESSAGE_DEPTH = 8


def _message_in(body: Any, depth: int) -> str | None:
    if isinstance(body, str):
        return body
    if depth >= _MESSAGE_DEPTH:
        return None
    if isinstance(body, list):
        # FastAPI validation errors: [{"loc": [...], "msg": "..."}]
        parts = [_message_in(item, depth + 1) for item in body]
        return "; ".join(part for part in parts if part) or None
    if isinstance(body, dict):
        for key in ("detail", "message", "error", "msg", "title"):
            if key in body:
                found = _message_in(body[key], depth + 1)
                if found:
                    return found
    return None


def _describe(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
