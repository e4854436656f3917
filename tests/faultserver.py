"""A ranking server that misbehaves on cue, for the client's integration tests.

:class:`FaultServer` is a real HTTP/1.1 server on ``127.0.0.1`` (port 0, keep-alive,
``Content-Length`` replies, ``TCP_NODELAY``) that speaks both wire families:

* NIM ``POST .../ranking`` (and the hosted ``.../reranking``):
  ``{"rankings": [{"index", "logit"}]}``;
* Cohere/Jina style ``POST .../rerank``: ``{"results": [{"index", "relevance_score"}]}``
  sorted by score, best first.

By default it answers honestly: a passage's score depends only on its own text and
the query (the embedded server's lexical scorer), so splitting, reordering or
deduplicating passages never changes a score. NIM rankings come back shuffled (a
seeded shuffle per request), never in input order, so a client that matched scores
by position instead of by ``index`` gets caught. The Cohere family returns raw
logits as ``relevance_score``, as the LiteLLM proxy does for NIM models (see the
LiteLLM seed: ``relevance_score: 6.828125``), so scores below zero exist on both.

Tests script faults with rules::

    server.add_rule(rate_limited("1"), times=1)             # the first ranking request
    server.add_rule(drop_connection(), match=passages_include("POISON"))
    server.add_rule(error(401, "bad key"), match=nth(2))

Rules are tried in the order they were added; the first whose ``match`` accepts the
request and that has uses left decides the reply, under a lock, so which request
gets a fault is deterministic even under concurrency when the match looks at the
request's content. Unmatched requests are answered honestly.

Everything a test may want to assert on is recorded: every request (method, path,
headers with credentials masked, parsed JSON body, the client's port, arrival
time) and the most requests ever handled at once (:attr:`FaultServer.max_in_flight`),
which with a per-request ``latency`` shows a client's concurrency bound.

The module also holds :class:`EitherClient`, which drives a ``RankingClient`` or an
``AsyncRankingClient`` through one awaitable interface so that one parametrised
test covers both.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import random
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from nimrank import AsyncRankingClient, RankedPassage, RankingClient

__all__ = [
    "STATUS_PATH",
    "Action",
    "EitherClient",
    "FaultServer",
    "Match",
    "RecordedRequest",
    "Reply",
    "Rule",
    "accepted",
    "bool_index",
    "delayed",
    "drop_connection",
    "error",
    "error_body",
    "honest_scores",
    "http_date",
    "index_out_of_range",
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
    "wrong_shape",
]

#: Where the fault server answers NVCF-style status polls: ``<origin>/v2/nvcf/pexec/status/<id>``.
STATUS_PATH = "/v2/nvcf/pexec/status/"

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key"})

# -- honest scoring -------------------------------------------------------------


def _lexical_scorer() -> Callable[[str, Sequence[str]], list[float]] | None:
    """The embedded server's scorer, so both servers agree; None if it is missing."""
    try:
        from nimrank.server.scoring import score_passages
    except ImportError:
        return None
    return score_passages


_lexical_scores = _lexical_scorer()


def _overlap_scores(query: str, passages: Sequence[str]) -> list[float]:
    """A tiny stand-in scorer: share of query words present, as a logit-like number."""
    terms = set(re.findall(r"\w+", query.casefold()))
    scores = []
    for passage in passages:
        words = set(re.findall(r"\w+", passage.casefold()))
        scores.append(10.0 * len(terms & words) / max(len(terms), 1) - 5.0 if words else -10.0)
    return scores


def honest_scores(query: str, passages: Sequence[str]) -> list[float]:
    """The score of each passage, a function of (query, passage) only."""
    if _lexical_scores is not None:
        return list(_lexical_scores(query, passages))
    return _overlap_scores(query, passages)


# -- what the server saw --------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fault server saw it (credentials masked).

    Field names follow ``nimrank.server.RecordedRequest`` so that a test can read
    either server's log the same way.

    Attributes:
        number: arrival order, from 1, over every request since start or reset.
        method: HTTP method.
        path: request path without the query string.
        headers: header names lowercased; credential values replaced by ``***``
            (the scheme, e.g. ``Bearer``, is kept).
        body: the parsed JSON body, or None when absent or not JSON.
        peer: ``"host:port"`` of the client socket; one port is one connection.
        started: ``time.monotonic()`` when the request had been read.
        url_query: the URL's query string ("" when none).
    """

    number: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    peer: str
    started: float
    authorization_sha256: str | None = field(default=None, repr=False)
    url_query: str = ""

    @property
    def client_port(self) -> int:
        """The client's source port: distinct ports are distinct connections."""
        return int(self.peer.rpartition(":")[2])

    @property
    def family(self) -> str | None:
        """``"nim"`` or ``"cohere"`` for a ranking request, else None."""
        return _family(self.method, self.path)

    @property
    def query(self) -> str | None:
        """The query of a ranking request."""
        if not isinstance(self.body, dict):
            return None
        query = self.body.get("query")
        if isinstance(query, dict):  # NIM: {"text": ...}
            query = query.get("text")
        return query if isinstance(query, str) else None

    @property
    def passages(self) -> list[str]:
        """The passage texts of a ranking request, in request order ([] otherwise)."""
        if self.family is None or not isinstance(self.body, dict):
            return []
        items = self.body.get("passages" if self.family == "nim" else "documents")
        if not isinstance(items, list):
            return []
        texts = [item.get("text") if isinstance(item, dict) else item for item in items]
        return [text for text in texts if isinstance(text, str)]

    def authorization_is(self, value: str) -> bool:
        """Whether the ``Authorization`` header was exactly ``value``.

        Only a digest is kept, so a failing assertion never prints a key.
        """
        if self.authorization_sha256 is None:
            return False
        digest = hashlib.sha256(value.encode()).hexdigest()
        return hmac.compare_digest(digest, self.authorization_sha256)


def _family(method: str, path: str) -> str | None:
    if method != "POST":
        return None
    if path.endswith(("/ranking", "/reranking")):
        return "nim"
    if path.endswith("/rerank"):
        return "cohere"
    return None


# -- replies and actions ----------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What to do with one request.

    Attributes:
        status: HTTP status.
        body: the bytes to send (a ``Content-Length`` header is always added).
        headers: extra response headers.
        delay: seconds to wait before answering (the request counts as in flight).
        drop: close the connection without answering at all.
    """

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    drop: bool = False


#: An action turns a request (and the honest answer the server would give) into a reply.
Action = Callable[["RecordedRequest", "FaultServer"], Reply]
#: A match decides whether a rule applies to a request.
Match = Callable[["RecordedRequest"], bool]


def _json_bytes(payload: Any) -> bytes:
    # allow_nan: a NaN score must go out as the literal ``NaN`` a broken server sends.
    return json.dumps(payload, allow_nan=True).encode()


def _json_reply(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(
        status,
        _json_bytes(payload),
        {"Content-Type": "application/json", **dict(headers or {})},
    )


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

    def action(request: RecordedRequest, server: FaultServer) -> Reply:
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

    def action(request: RecordedRequest, server: FaultServer) -> Reply:
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

    def action(request: RecordedRequest, server: FaultServer) -> Reply:
        return replace(server.honest_reply(request), delay=seconds)

    return action


def delayed(seconds: float, action: Action) -> Action:
    """``action``'s reply, sent ``seconds`` later (e.g. an error that takes time)."""

    def wrapped(request: RecordedRequest, server: FaultServer) -> Reply:
        reply = action(request, server)
        return replace(reply, delay=reply.delay + seconds)

    return wrapped


def drop_connection() -> Action:
    """Close the connection without sending a byte back."""

    def action(request: RecordedRequest, server: FaultServer) -> Reply:
        return Reply(drop=True)

    return action


def raw_body(
    text: str | bytes, status: int = 200, content_type: str = "application/json"
) -> Action:
    """Answer with exactly these bytes (e.g. JSON cut off half-way)."""
    data = text.encode() if isinstance(text, str) else text

    def action(request: RecordedRequest, server: FaultServer) -> Reply:
        return Reply(status, data, {"Content-Type": content_type})

    return action


Edit = Callable[[list[dict[str, Any]], str], list[dict[str, Any]]]


def tamper(edit: Edit) -> Action:
    """The honest answer with its entries changed by ``edit(entries, score_key)``.

    ``entries`` are the ``rankings`` (NIM) or ``results`` (Cohere) objects, in the
    order the server would send them; ``score_key`` is ``"logit"`` or
    ``"relevance_score"``.
    """

    def action(request: RecordedRequest, server: FaultServer) -> Reply:
        list_key, score_key = _KEYS[request.family or "nim"]
        entries = server.honest_entries(request)
        return _json_reply(200, {list_key: edit(entries, score_key)})

    return action


def _sorted_by_index(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(entries, key=lambda entry: int(entry["index"]))


def missing_index() -> Action:
    """Leave out the entry of the batch's last passage."""
    return tamper(lambda entries, key: _sorted_by_index(entries)[:-1])


def repeated_index() -> Action:
    """Name the batch's first passage twice (and its second passage not at all)."""

    def edit(entries: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        ordered = _sorted_by_index(entries)
        ordered[1] = {**ordered[1], "index": ordered[0]["index"]}
        return ordered

    return tamper(edit)


def index_out_of_range() -> Action:
    """Give the last entry an index one past the end of the batch."""

    def edit(entries: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        ordered = _sorted_by_index(entries)
        ordered[-1] = {**ordered[-1], "index": len(ordered)}
        return ordered

    return tamper(edit)


def bool_index() -> Action:
    """Send ``true`` instead of ``1`` as an index (a Python ``bool`` is an ``int``)."""

    def edit(entries: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        ordered = _sorted_by_index(entries)
        ordered[1] = {**ordered[1], "index": True}
        return ordered

    return tamper(edit)


def nan_score() -> Action:
    """Give one entry the score ``NaN`` (the literal, which Python's JSON reads)."""

    def edit(entries: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
        ordered = _sorted_by_index(entries)
        ordered[0] = {**ordered[0], key: math.nan}
        return ordered

    return tamper(edit)


def wrong_shape() -> Action:
    """A JSON object without the family's list (the entries under ``"data"``)."""

    def action(request: RecordedRequest, server: FaultServer) -> Reply:
        return _json_reply(200, {"data": server.honest_entries(request)})

    return action


def accepted(polls: int = 1, request_id: str | None = None) -> Action:
    """NVCF's asynchronous answer: ``202 Accepted`` with an ``NVCF-REQID`` header.

    The result is then served at ``<origin>/v2/nvcf/pexec/status/<id>``: the first
    ``polls - 1`` polls get another ``202`` (still running), the next one the honest
    result. Point the client there by monkeypatching ``nimrank.client.nvcf_status_url``
    with :meth:`FaultServer.status_url`.
    """
    if polls < 1:
        raise ValueError("polls must be >= 1")

    def action(request: RecordedRequest, server: FaultServer) -> Reply:
        rid = request_id or f"fault-{request.number}"
        server._park(rid, polls, server.honest_reply(request))
        return Reply(202, b"", {"NVCF-REQID": rid, "NVCF-STATUS": "pending-evaluation"})

    return action


_KEYS = {"nim": ("rankings", "logit"), "cohere": ("results", "relevance_score")}


# -- matches ----------------------------------------------------------------------


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


def _is_ranking(request: RecordedRequest) -> bool:
    return request.family is not None


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


# -- the server ---------------------------------------------------------------------


class FaultServer:
    """A scriptable ranking server on a free loopback port.

    Args:
        latency: seconds every ranking request takes (before any rule's delay),
            so concurrent requests overlap and :attr:`max_in_flight` shows how many
            a client keeps in flight.
        shuffle: send NIM rankings in a seeded random order (default) rather
            than best first. Cohere results always come best first, as those
            servers send them.
        models: ids listed by ``GET .../models``.

    Example::

        with FaultServer() as server:
            server.add_rule(error(503, "warming up"), times=1)
            client = RankingClient(base_url=server.url)
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        shuffle: bool = True,
        models: Sequence[str] = ("nvidia/llama-3.2-nv-rerankqa-1b-v2",),
    ) -> None:
        self.latency = latency
        self.shuffle = shuffle
        self.models = tuple(models)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._log: list[RecordedRequest] = []
        self._pending: dict[str, list[Any]] = {}
        self._count = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle

    def start(self) -> FaultServer:
        """Listen on 127.0.0.1, port 0, and serve from a background thread."""
        if self._httpd is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        self._httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name="faultserver",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed replies and close every open connection."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            # Unblocks handler threads waiting for the next request on a kept-alive
            # connection, so none outlives the test.
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses

    @property
    def port(self) -> int:
        """The port the server listens on."""
        if self._httpd is None:
            raise RuntimeError("the server is not running")
        return int(self._httpd.server_address[1])

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The base URL to give a client: ``http://127.0.0.1:<port>/v1``."""
        return f"{self.origin}/v1"

    def status_url(self, request_id: str) -> str:
        """Where this server answers a status poll; a stand-in for ``nvcf_status_url``."""
        return f"{self.origin}{STATUS_PATH}{request_id}"

    # -- scripting

    def add_rule(
        self, action: Action, *, match: Match | None = None, times: int | None = None
    ) -> Rule:
        """Answer requests ``match`` accepts with ``action``, at most ``times`` times.

        ``match=None`` means every ranking request (models, status polls and
        unknown paths are left alone); ``times=None`` means for ever.
        """
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        rule = Rule(action, match or _is_ranking, times)
        with self._lock:
            self._rules.append(rule)
        return rule

    def reset(self) -> None:
        """Forget rules, pending polls, recorded requests and the in-flight peak."""
        with self._lock:
            self._rules.clear()
            self._pending.clear()
            self._log.clear()
            self._count = 0
            self._max_in_flight = self._in_flight

    # -- what happened

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request since start or reset, in arrival order (a snapshot)."""
        with self._lock:
            return list(self._log)

    @property
    def ranking_requests(self) -> list[RecordedRequest]:
        """The ranking requests (NIM or Cohere family) among :attr:`requests`."""
        return [request for request in self.requests if request.family is not None]

    @property
    def max_in_flight(self) -> int:
        """Most requests handled at the same time since start or reset."""
        with self._lock:
            return self._max_in_flight

    def sent_passages(self) -> list[str]:
        """Every passage text of every ranking request, in arrival order."""
        return [text for request in self.ranking_requests for text in request.passages]

    def client_ports(self) -> set[int]:
        """Distinct client ports of the ranking requests: the connections they used."""
        return {request.client_port for request in self.ranking_requests}

    # -- answers

    def honest_entries(self, request: RecordedRequest) -> list[dict[str, Any]]:
        """The entries an honest server sends for a ranking request, in sending order."""
        family = request.family
        if family is None:
            raise ValueError(f"{request.method} {request.path} is not a ranking request")
        score_key = _KEYS[family][1]
        scores = honest_scores(request.query or "", request.passages)
        entries = [{"index": i, score_key: score} for i, score in enumerate(scores)]
        if family == "nim" and self.shuffle:
            # Seeded by the request's number: reproducible, yet rarely input order.
            random.Random(request.number).shuffle(entries)
        else:
            entries.sort(key=lambda entry: -float(entry[score_key]))
        return entries

    def honest_reply(self, request: RecordedRequest) -> Reply:
        """The answer a correct server gives to ``request``."""
        family = request.family
        if family is not None:
            if request.query is None or not request.passages:
                return _json_reply(422, error_body(422, "query and passages are required", family))
            list_key, _ = _KEYS[family]
            return _json_reply(200, {list_key: self.honest_entries(request)})
        if request.method == "GET" and request.path.endswith("/models"):
            data = [
                {"id": model, "object": "model", "owned_by": "faultserver"} for model in self.models
            ]
            return _json_reply(200, {"object": "list", "data": data})
        if request.path.startswith(STATUS_PATH):
            return self._poll(request.path[len(STATUS_PATH) :])
        return _json_reply(404, error_body(404, f"no route for {request.method} {request.path}"))

    def _park(self, request_id: str, polls: int, result: Reply) -> None:
        with self._lock:
            self._pending[request_id] = [polls, result]

    def _poll(self, request_id: str) -> Reply:
        with self._lock:
            pending = self._pending.get(request_id)
            if pending is None:
                return _json_reply(404, error_body(404, f"no request {request_id!r}"))
            pending[0] -= 1
            if pending[0] > 0:
                return Reply(202, b"", {"NVCF-REQID": request_id, "NVCF-STATUS": "in-progress"})
            del self._pending[request_id]
            result: Reply = pending[1]
            return result

    # -- called by the handler

    def _record(self, handler: _Handler, raw: bytes) -> RecordedRequest:
        headers: dict[str, str] = {}
        digest = None
        for name, value in handler.headers.items():
            name = name.lower()
            if name == "authorization":
                digest = hashlib.sha256(value.encode()).hexdigest()
            if name in _SECRET_HEADERS:
                scheme, _, secret = value.partition(" ")
                value = f"{scheme} ***" if secret else "***"
            headers[name] = value
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        host, port = handler.client_address[:2]
        with self._lock:
            self._count += 1
            request = RecordedRequest(
                number=self._count,
                method=handler.command,
                path=handler.path.split("?", 1)[0],
                url_query=handler.path.partition("?")[2],
                headers=headers,
                body=body,
                peer=f"{host}:{port}",
                started=time.monotonic(),
                authorization_sha256=digest,
            )
            self._log.append(request)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        return request

    def _done(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _reply_for(self, request: RecordedRequest) -> Reply:
        with self._lock:
            rule = next(
                (r for r in self._rules if not r.exhausted() and r.match(request)),
                None,
            )
            if rule is not None:
                rule.used += 1
        reply = rule.action(request, self) if rule else self.honest_reply(request)
        if request.family is not None and self.latency:
            reply = replace(reply, delay=reply.delay + self.latency)
        return reply

    def _wait(self, seconds: float) -> None:
        # Wakes early when the server stops, so a slow reply never holds up a test.
        self._stopping.wait(seconds)

    def _track(self, connection: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # A reply written as headers then body would otherwise wait for a delayed ACK.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, opened=True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, opened=False)
        with contextlib.suppress(OSError):  # the client hung up first: nothing to flush
            super().finish()

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is the record; stderr noise helps nobody

    def _serve(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        request = owner._record(self, raw)
        try:
            try:
                reply = owner._reply_for(request)
            except Exception as exc:
                # A bug in a test's action: say so in the reply instead of dropping.
                reply = _json_reply(500, error_body(500, f"fault server bug: {exc!r}"))
            if reply.delay:
                owner._wait(reply.delay)
            if reply.drop or owner._stopping.is_set():
                self.close_connection = True
                return
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client gave up (timeout) or hung up
        finally:
            owner._done()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # stop() closes the connections itself; joining handler threads would wait
    # for clients that keep their connection open.
    block_on_close = False

    def __init__(self, owner: FaultServer) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client closing its end mid-request is part of the tests
        super().handle_error(request, client_address)


# -- driving either client ---------------------------------------------------------


class EitherClient:
    """A ``RankingClient`` or an ``AsyncRankingClient`` behind one awaitable interface.

    ``kind`` is ``"sync"`` or ``"async"``. The sync client is called directly from the
    test's coroutine: it never touches the event loop, which the tests thereby check.

    Example::

        client = EitherClient("sync", base_url=server.url)
        ranked = await client.rank("query", ["a", "b"], top_n=1)
        await client.close()
    """

    def __init__(self, kind: str, **options: Any) -> None:
        if kind not in ("sync", "async"):
            raise ValueError(f"kind must be 'sync' or 'async', got {kind!r}")
        self.kind = kind
        self.client: RankingClient | AsyncRankingClient = (
            RankingClient(**options) if kind == "sync" else AsyncRankingClient(**options)
        )

    async def rank(self, query: str, passages: Sequence[str], **kwargs: Any) -> list[RankedPassage]:
        """``client.rank(query, passages, **kwargs)``, awaited for the async client."""
        if isinstance(self.client, AsyncRankingClient):
            return await self.client.rank(query, passages, **kwargs)
        return self.client.rank(query, passages, **kwargs)

    async def list_models(self) -> list[str]:
        """``client.list_models()``, awaited for the async client."""
        if isinstance(self.client, AsyncRankingClient):
            return await self.client.list_models()
        return self.client.list_models()

    async def close(self) -> None:
        """Close the client's connections."""
        if isinstance(self.client, AsyncRankingClient):
            await self.client.aclose()
        else:
            self.client.close()
