"""Fault-injection rules for :class:`~nimrank.server.RankingServer`, for client tests.

A rule pairs an *action* (what to answer) with a *match* (which requests)
and a use limit; :meth:`RankingServer.add_rule` installs one::

    server.add_rule(rate_limited("1"), times=1)             # the first ranking request
    server.add_rule(drop_connection(), match=passages_include("POISON"))
    server.add_rule(error(401, "bad key"), match=nth(2))
    server.add_rule(delayed(0.05, error(503, "busy")))      # an error that takes time
    server.add_rule(trickled(0.5))                          # the honest reply, a byte at a time

Rules are tried in the order they were added; the first whose match accepts
the request (and that has uses left) decides the reply. Requests no rule
takes are answered honestly (:meth:`RankingServer.honest_reply`).

An action is any ``(RecordedRequest, RankingServer) -> Reply``; a
:class:`~nimrank.server.routes.Reply` can carry a ``delay``, ``drop`` the
connection without a byte, ``trickle`` its bytes, or raw (malformed) ``bytes``
as its body. The server's request log records every request when its body
has been read, before it is answered.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from nimrank.server.routes import Reply

if TYPE_CHECKING:
    from nimrank.server.app import RankingServer, RecordedRequest

__all__ = [
    "STATUS_PATH",
    "Action",
    "Match",
    "Rule",
    "accepted",
    "bool_index",
    "delayed",
    "drop_connection",
    "error",
    "error_body",
    "honest_entries",
    "http_date",
    "index_out_of_range",
    "is_ranking",
    "missing_index",
    "nan_score",
    "nth",
    "passages_include",
    "path_endswith",
    "rate_limited",
    "raw_body",
    "repeated_index",
    "respond",
    "slow",
    "tamper",
    "trickled",
    "wrong_shape",
]

Action = Callable[["RecordedRequest", "RankingServer"], Reply]
"""Turns a request (and the server, for its honest answer) into a reply."""

Match = Callable[["RecordedRequest"], bool]
"""Decides whether a rule applies to a request."""

STATUS_PATH = "/v2/nvcf/pexec/status/"
"""Where :func:`accepted` answers NVCF-style status polls (``<origin><STATUS_PATH><id>``)."""

_KEYS = {"nim": ("rankings", "logit"), "cohere": ("results", "relevance_score")}


@dataclass
class Rule:
    """A scripted fault: ``action`` for requests ``match`` accepts, ``times`` times at most.

    Attributes:
        used: how many requests the rule has answered so far.
    """

    action: Action
    match: Match
    times: int | None
    used: int = 0

    def exhausted(self) -> bool:
        """Whether the rule has answered as many requests as it may."""
        return self.times is not None and self.used >= self.times


# --------------------------------------------------------------------------- matches


def is_ranking(request: RecordedRequest) -> bool:
    """Ranking requests (NIM or Cohere family): the default match."""
    return request.family is not None


def nth(*numbers: int) -> Match:
    """Requests number ``numbers`` (arrival order, from 1, counting every request)."""
    wanted = frozenset(numbers)
    return lambda request: request.number in wanted


def passages_include(text: str) -> Match:
    """Ranking requests with a passage containing ``text``: deterministic under concurrency."""
    return lambda request: any(text in passage for passage in request.passages)


def path_endswith(suffix: str) -> Match:
    """Requests whose path ends with ``suffix`` (e.g. ``"/models"``)."""
    return lambda request: request.path.endswith(suffix)


# --------------------------------------------------------------------------- replies


def _json_reply(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
    # allow_nan: a NaN score must go out as the literal ``NaN`` a broken server sends.
    body = json.dumps(payload, allow_nan=True).encode()
    return Reply(status, body, {"Content-Type": "application/json", **dict(headers or {})})


def error_body(status: int, message: str, family: str = "nim") -> dict[str, Any]:
    """An error body in the shape each family of servers sends.

    * ``"nim"``: problem details, as NVIDIA's hosted endpoints (NVCF) send them;
    * ``"cohere"``: ``{"message": ...}`` (Cohere, Jina, vLLM);
    * ``"openai"``: ``{"error": {"message", "type", "code"}}`` (the LiteLLM proxy).
    """
    if family == "nim":
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Error"
        return {"type": "about:blank", "status": status, "title": title, "detail": message}
    if family == "cohere":
        return {"message": message}
    if family == "openai":
        return {"error": {"message": message, "type": "invalid_request_error", "code": status}}
    raise ValueError(f"unknown error family {family!r}")


def respond(status: int, body: Any = None, headers: Mapping[str, str] | None = None) -> Action:
    """Answer with ``status`` and ``body`` encoded as JSON (``None``: an empty body)."""

    def action(request: RecordedRequest, server: RankingServer) -> Reply:
        if body is None:
            return Reply(status, b"", dict(headers or {}))
        return _json_reply(status, body, headers)

    return action


def error(
    status: int,
    message: str,
    *,
    family: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Action:
    """Answer with an error status and ``message`` in the body shape of ``family``.

    ``family=None`` uses the request's own family (problem details for NIM paths,
    ``{"message"}`` for ``/rerank``).
    """

    def action(request: RecordedRequest, server: RankingServer) -> Reply:
        shape = family or ("cohere" if request.family == "cohere" else "nim")
        return _json_reply(status, error_body(status, message, shape), headers)

    return action


def http_date(seconds_from_now: float) -> str:
    """An HTTP date ``seconds_from_now`` in the future, as ``Retry-After`` may carry it."""
    return formatdate(time.time() + seconds_from_now, usegmt=True)


def rate_limited(retry_after: str | None = None, message: str = "Too many requests") -> Action:
    """429 Too Many Requests, with a ``Retry-After`` header when given."""
    headers = {} if retry_after is None else {"Retry-After": retry_after}
    return error(429, message, headers=headers)


def slow(seconds: float) -> Action:
    """The honest answer, after ``seconds`` (longer than a client's timeout, usually)."""
    return delayed(seconds, lambda request, server: server.honest_reply(request))


def delayed(seconds: float, action: Action) -> Action:
    """``action``'s reply, sent ``seconds`` later (e.g. an error that takes time)."""
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be finite and >= 0, got {seconds}")

    def wrapped(request: RecordedRequest, server: RankingServer) -> Reply:
        reply = action(request, server)
        return replace(reply, delay=reply.delay + seconds)

    return wrapped


def trickled(seconds_per_byte: float, action: Action | None = None) -> Action:
    """``action``'s reply (default: the honest one), one byte every ``seconds_per_byte``.

    A server that dribbles: every read a client makes gets a byte, so only a
    bound on the whole attempt (not on each read) ends the wait.
    """

    def wrapped(request: RecordedRequest, server: RankingServer) -> Reply:
        reply = server.honest_reply(request) if action is None else action(request, server)
        return replace(reply, trickle=seconds_per_byte)

    return wrapped


def drop_connection() -> Action:
    """Close the connection without sending a byte back."""
    return lambda request, server: Reply(drop=True)


def raw_body(
    text: str | bytes, status: int = 200, content_type: str = "application/json"
) -> Action:
    """Answer with exactly these bytes (e.g. JSON cut off half-way)."""
    data = text.encode() if isinstance(text, str) else text
    return lambda request, server: Reply(status, data, {"Content-Type": content_type})


def honest_entries(server: RankingServer, request: RecordedRequest) -> list[dict[str, Any]]:
    """The ``rankings`` (NIM) or ``results`` (Cohere) an honest reply holds, in sending order."""
    family = request.family
    if family is None:
        raise ValueError(f"{request.method} {request.path} is not a ranking request")
    reply = server.honest_reply(request)
    body = reply.body
    if reply.status != 200 or not isinstance(body, dict):
        raise ValueError(f"the honest reply is a {reply.status}, not a ranking")
    entries: list[dict[str, Any]] = body[_KEYS[family][0]]
    return entries


Edit = Callable[[list[dict[str, Any]], str], list[dict[str, Any]]]


def tamper(edit: Edit) -> Action:
    """The honest answer with its entries changed by ``edit(entries, score_key)``.

    ``entries`` are the ``rankings`` (NIM) or ``results`` (Cohere) objects, in the
    order the server would send them; ``score_key`` is ``"logit"`` or
    ``"relevance_score"``.
    """

    def action(request: RecordedRequest, server: RankingServer) -> Reply:
        list_key, score_key = _KEYS[request.family or "nim"]
        return _json_reply(200, {list_key: edit(honest_entries(server, request), score_key)})

    return action


def _sorted_by_index(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda entry: int(entry["index"]))


def missing_index() -> Action:
    """Leave out the entry of the batch's last passage."""
    return tamper(lambda entries, key: _sorted_by_index(entries)[:-1])


def _edit_one(
    position: int, change: Callable[[list[dict[str, Any]], str, int], dict[str, Any]]
) -> Action:
    """Replace the entry at ``position`` (of the entries sorted by index) by ``change``'s."""

    def edit(entries: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        ordered = _sorted_by_index(entries)
        ordered[position] = change(ordered, key, position)
        return ordered

    return tamper(edit)


def repeated_index() -> Action:
    """Name the batch's first passage twice (and its second passage not at all)."""
    return _edit_one(1, lambda ordered, key, at: {**ordered[at], "index": ordered[0]["index"]})


def index_out_of_range() -> Action:
    """Give the last entry an index one past the end of the batch."""
    return _edit_one(-1, lambda ordered, key, at: {**ordered[at], "index": len(ordered)})


def bool_index() -> Action:
    """Send ``true`` instead of ``1`` as an index (a Python ``bool`` is an ``int``)."""
    return _edit_one(1, lambda ordered, key, at: {**ordered[at], "index": True})


def nan_score() -> Action:
    """Give one entry the score ``NaN`` (the literal, which Python's JSON reads)."""
    return _edit_one(0, lambda ordered, key, at: {**ordered[at], key: math.nan})


def wrong_shape() -> Action:
    """A JSON object without the family's list (the entries under ``"data"``)."""
    return lambda request, server: _json_reply(200, {"data": honest_entries(server, request)})


def accepted(polls: int = 1, request_id: str | None = None) -> Action:
    """NVCF's asynchronous answer: ``202 Accepted`` with an ``NVCF-REQID`` header.

    The result is then served at ``<origin>/v2/nvcf/pexec/status/<id>`` (a rule
    this action adds): the first ``polls - 1`` polls get another ``202`` (still
    running), the next one the honest result. Point the client there by
    monkeypatching ``nimrank.client.nvcf_status_url``.
    """
    if polls < 1:
        raise ValueError("polls must be >= 1")

    def action(request: RecordedRequest, server: RankingServer) -> Reply:
        rid = request_id or f"fault-{request.number}"
        result = server.honest_reply(request)
        result = replace(result, delay=0.0, passages=0)
        answered = [0]

        def poll(poll_request: RecordedRequest, poll_server: RankingServer) -> Reply:
            answered[0] += 1
            if answered[0] < polls:
                return Reply(202, b"", {"NVCF-REQID": rid, "NVCF-STATUS": "in-progress"})
            return result

        server.add_rule(poll, match=lambda r: r.path == f"{STATUS_PATH}{rid}", times=polls)
        return Reply(202, b"", {"NVCF-REQID": rid, "NVCF-STATUS": "pending-evaluation"})

    return action
