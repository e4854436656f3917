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
from typing import Any, Protocol

__all__ = [
    "MalformedResponse",
    "WireProtocol",
    "scores_by_position",
    "server_message",
]


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

    def build_request(
        self, *, model: str, query: str, passages: Sequence[str], truncate: str | None
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


def scores_by_position(pairs: Iterable[tuple[Any, Any]], batch_size: int) -> list[float]:
    """Place ``(index, score)`` pairs by index, refusing anything doubtful.

    Every position ``0 .. batch_size-1`` must be named exactly once, with an
    integer index and a finite number as score. Servers sort their answer by
    score, so the index, never the position in the answer, says whose score it is.
    """
    scores: list[float | None] = [None] * batch_size
    for index, score in pairs:
        if isinstance(index, bool) or not isinstance(index, int):
            raise MalformedResponse(f"index {index!r} is not an integer")
        if not 0 <= index < batch_size:
            raise MalformedResponse(
                f"index {index} is out of range for a batch of {batch_size} passages"
            )
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise MalformedResponse(f"score {score!r} for index {index} is not a number")
        try:
            value = float(score)
        except OverflowError:  # an int past float's range: JSON sets no limit
            value = math.inf
        if not math.isfinite(value):
            raise MalformedResponse(f"score {score!r:.40} for index {index} is not finite")
        if scores[index] is not None:
            raise MalformedResponse(f"index {index} appears more than once")
        scores[index] = value
    missing = [position for position, score in enumerate(scores) if score is None]
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise MalformedResponse(
            f"{len(missing)} of {batch_size} passages have no score (indices {shown})"
        )
    return [score for score in scores if score is not None]


def entries(body: Any, key: str) -> list[dict[str, Any]]:
    """``body[key]`` as a list of JSON objects, or a MalformedResponse saying what is off."""
    if not isinstance(body, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(body).__name__}")
    items = body.get(key)
    if not isinstance(items, list):
        raise MalformedResponse(f"expected a list under {key!r}, got {_describe(items)}")
    for item in items:
        if not isinstance(item, dict):
            raise MalformedResponse(f"expected objects in {key!r}, got {_describe(item)}")
    return items


def server_message(text: str, limit: int = 500) -> str:
    """The server's own explanation, from an error body of any common shape.

    Understands ``{"detail": ...}`` (NIM, FastAPI, NVCF problem details),
    ``{"message": ...}`` (Cohere, vLLM), ``{"error": "..."}`` and
    ``{"error": {"message": ...}}`` (OpenAI-style proxies such as LiteLLM);
    anything else is returned as text, shortened to ``limit`` characters.
    """
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    found = _message_in(body) if body is not None else None
    message = (found or text).strip() or "(empty body)"
    return message if len(message) <= limit else message[: limit - 3] + "..."


def _message_in(body: Any) -> str | None:
    if isinstance(body, str):
        return body
    if isinstance(body, list):
        # FastAPI validation errors: [{"loc": [...], "msg": "..."}]
        parts = [_message_in(item) for item in body]
        return "; ".join(part for part in parts if part) or None
    if isinstance(body, dict):
        for key in ("detail", "message", "error", "msg", "title"):
            if key in body:
                found = _message_in(body[key])
                if found:
                    return found
    return None


def _describe(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
