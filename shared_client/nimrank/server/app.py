"""The HTTP layer of `nimrank serve`: an asyncio server, the request log, fault rules.

What to answer is decided by :mod:`nimrank.server.routes` and how a request
is framed by :mod:`nimrank.server.http1`; this module moves bytes:

* One asyncio event loop (in a daemon thread for :meth:`RankingServer.start`,
  in the calling thread for ``nimrank serve``). Requests sleeping through
  their simulated GPU time overlap the way a dynamically batching GPU server
  overlaps them, at a fraction of a thread per connection's cost; with
  ``capacity=N`` only N are served at once and the rest queue, like a
  saturated replica.
* HTTP/1.1 keep-alive with an exact ``Content-Length`` on every response
  (errors included), one write per response, ``TCP_NODELAY`` (asyncio's
  default), so clients reuse connections and never wait on a delayed ACK.
* Bounded: a head of at most 64 KiB, a body of at most 64 MiB (413 past it,
  before reading it), at most :data:`MAX_JSON_VALUES` values in a large body
  before decoding it, ``max_connections`` connections (an idle one is closed
  to admit a new one, else the new one gets a 503), and ``idle_timeout`` for
  a connection that sends nothing. When file descriptors run out, asyncio
  pauses accepting for a second instead of spinning.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import math
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, TextIO

from nimrank.server.faults import Action, Match, Rule, is_ranking
from nimrank.server.http1 import BadRequest, RequestHead, parse_chunk_size, parse_head, printable
from nimrank.server.routes import (
    DEFAULT_MODEL_ID,
    MAX_JSON_VALUES,
    NotJson,
    Reply,
    ServerSettings,
    dispatch,
    nim_error,
    parse_json,
    too_many_values,
)

__all__ = ["DISCONNECTED", "IN_PROGRESS", "RankingServer", "RecordedRequest", "serve"]

logger = logging.getLogger("nimrank.server")

MAX_BODY_BYTES: Final = 64 * 1024 * 1024
"""Largest request body read; 1,000 long documents fit with room to spare."""

MAX_HEAD_BYTES: Final = 64 * 1024
"""Largest request line plus headers (431 past it)."""

KEEPALIVE_IDLE_SECONDS: Final = 75.0
"""Default ``idle_timeout``: a connection that sends no complete request (or
body) for this long is closed. Clients expire idle connections sooner (httpx
after 5 s), so they never write into one the server is closing."""

MAX_CONNECTIONS: Final = 512
"""Most connections by default, lowered to half the process's file
descriptors (see :func:`default_max_connections`)."""

_ACCEPT_BATCH: Final = 128
"""The listen backlog, which is also how many connections asyncio accepts in
one go before any of them is admitted: well above a benchmark's 64 at once
(a dropped SYN costs a 1 s retransmit). Lowered to a quarter of the file
descriptors, so the cap plus one batch still fits in them."""


def _descriptor_limit() -> int | None:
    try:
        import resource  # POSIX only

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def default_max_connections() -> int:
    """:data:`MAX_CONNECTIONS`, or fewer when the file-descriptor limit is low.

    Past the cap an idle connection is closed to admit a new one, so idle
    clients cannot hold every descriptor. Should accept() still run out of
    them, idle connections are closed and asyncio accepts again a second later
    (it never spins).
    """
    limit = _descriptor_limit()
    return MAX_CONNECTIONS if limit is None else max(1, min(MAX_CONNECTIONS, limit // 2))


DISCONNECTED: Final = 0
"""Status recorded for a request whose connection was closed without a reply."""

IN_PROGRESS: Final = -1
"""Status of a recorded request that has not been answered yet."""

_SECRET_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"}
)
_WRITE_HIGH_WATER: Final = 1 << 16
_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


def _mask(name: str, value: str) -> str:
    """Hide a credential but keep its scheme (``Bearer ***``) for assertions."""
    if name not in _SECRET_HEADERS:
        return value
    scheme, _, secret = value.partition(" ")
    return f"{scheme} ***" if secret and name.endswith("authorization") else "***"


@dataclass(eq=False)
class RecordedRequest:
    """One request as the server saw it (credentials masked).

    Recorded when its body has been read, before it is answered, so a client
    that gave up waiting still finds it in the log; ``status`` and
    ``finished`` are filled in when the reply is written.

    Attributes:
        number: arrival order, from 1, since start or :meth:`RankingServer.reset`.
        method: HTTP method.
        path: request path without the query string.
        headers: header names lowercased; values of ``authorization``,
            ``x-api-key`` and similar replaced by ``***`` (scheme kept).
        body: the parsed JSON body, or None when absent or not JSON.
        status: status code of the reply; ``DISCONNECTED`` (0) when the
            connection was closed without one, ``IN_PROGRESS`` (-1) until then.
        peer: ``"host:port"`` of the client socket; two requests with the
            same peer came over one (kept-alive) connection.
        started: ``time.monotonic()`` when the request had been read.
        finished: ``time.monotonic()`` when the reply was written
            (``started`` until then).
        url_query: the URL's query string ("" when none).
    """

    number: int
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    peer: str
    started: float
    finished: float
    authorization_sha256: str | None = field(default=None, repr=False)
    url_query: str = ""
    parsed: Any = field(default=None, repr=False)
    """The body as the routes take it (a :class:`NotJson` when not JSON)."""

    def authorization_is(self, value: str) -> bool:
        """Whether the ``Authorization`` header was exactly ``value``.

        Only a SHA-256 digest is kept, so tests can check which key a client
        sent without the key ever being stored or printed.
        """
        if self.authorization_sha256 is None:
            return False
        digest = hashlib.sha256(value.encode()).hexdigest()
        return hmac.compare_digest(digest, self.authorization_sha256)

    @property
    def client_port(self) -> int:
        """The client's source port: distinct ports are distinct connections."""
        return int(self.peer.rpartition(":")[2])

    @property
    def family(self) -> str | None:
        """``"nim"`` or ``"cohere"`` for a ranking request (a POST), else None."""
        if self.method != "POST":
            return None
        if self.path.endswith(("/ranking", "/reranking")):
            return "nim"
        if self.path.endswith("/rerank"):
            return "cohere"
        return None

    @property
    def query(self) -> str | None:
        """The query text of a ranking request."""
        if not isinstance(self.body, dict):
            return None
        query = self.body.get("query")
        if isinstance(query, dict):  # NIM: {"text": ...}
            query = query.get("text")
        return query if isinstance(query, str) else None

    @property
    def passages(self) -> list[str]:
        """The passage texts of a ranking request, in request order ([] otherwise)."""
        family = self.family
        if family is None or not isinstance(self.body, dict):
            return []
        items = self.body.get("passages" if family == "nim" else "documents")
        if not isinstance(items, list):
            return []
        texts = [item.get("text") if isinstance(item, dict) else item for item in items]
        return [text for text in texts if isinstance(text, str)]


class _State:
    """What the event loop and the test's threads share, behind one lock."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        log_requests: bool,
        log_size: int,
        log_stream: TextIO | None,
        api_key: str | None,
    ) -> None:
        self.settings = settings
        self.api_key = api_key
        self.log_requests = log_requests
        self.log_stream = log_stream
        self.lock = threading.Lock()
        self.log: deque[RecordedRequest] = deque(maxlen=log_size)
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_service = 0
        self.max_in_service = 0
        self.rules: list[Rule] = []

    def arrive(self, record: RecordedRequest) -> None:
        with self.lock:
            self.count += 1
            record.number = self.count
            self.log.append(record)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self, record: RecordedRequest, status: int, passages: int) -> None:
        # Counted out *before* the reply is written: a client that has its
        # answer finds its request complete in the log, and its next request
        # does not overlap this one in max_in_flight.
        with self.lock:
            self.in_flight -= 1
            record.status = status
            record.finished = time.monotonic()
        if self.log_requests:
            self.print_line(
                f"{record.method} {printable(record.path)} -> {status} "
                f"({passages} passages, {(record.finished - record.started) * 1000.0:.1f} ms, "
                f"{record.peer})"
            )

    def print_line(self, text: str) -> None:
        stream = self.log_stream if self.log_stream is not None else sys.stderr
        # A closed or broken log stream must not cost the client its reply.
        with contextlib.suppress(OSError, ValueError):
            print(f"nimrank serve: {text}", file=stream, flush=True)

    def take_rule(self, record: RecordedRequest) -> Rule | None:
        """The first rule with uses left that matches ``record``, its use counted."""
        with self.lock:
            for rule in self.rules:
                if rule.match(record):
                    rule.used += 1
                    if rule.exhausted():
                        self.rules.remove(rule)
                    return rule
        return None


class _Connection:
    """One client connection: its writer and, while it waits for a request, since when."""

    __slots__ = ("idle_since", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.idle_since: float | None = None


_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}


class _Dates:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def now(self) -> str:
        second = int(time.time())
        if second != self.second:
            self.second, self.text = second, formatdate(second, usegmt=True)
        return self.text


class _Service:
    """The asyncio side: accepts connections, reads requests, writes replies."""

    def __init__(
        self,
        owner: RankingServer,
        *,
        capacity: int | None,
        max_connections: int,
        idle_timeout: float,
    ) -> None:
        self.owner = owner
        self.state = owner._state
        self.capacity = capacity
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.slots: asyncio.Semaphore | None = None
        self.connections: dict[_Connection, asyncio.Task[None]] = {}
        self.server: asyncio.Server | None = None
        self.dates = _Dates()
        self.relieved = -math.inf  # when idle connections were last closed for descriptors

    async def open(self, host: str, port: int) -> int:
        """Bind and listen; returns the bound port."""
        if self.capacity is not None:
            self.slots = asyncio.Semaphore(self.capacity)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self.loop_error)
        limit = _descriptor_limit()
        backlog = _ACCEPT_BATCH if limit is None else max(8, min(_ACCEPT_BATCH, limit // 4))
        self.server = await asyncio.start_server(
            self.connection, host, port, limit=MAX_HEAD_BYTES, backlog=backlog
        )
        return int(self.server.sockets[0].getsockname()[1])

    def loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Out of file descriptors in accept(): free some (asyncio retries in 1 s)."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE):
            # asyncio reports each failed accept() of a batch: act once a second.
            if loop.time() - self.relieved < 1.0:
                return
            self.relieved = loop.time()
            idle = sorted(
                (c for c in self.connections if c.idle_since is not None),
                key=lambda c: c.idle_since or 0.0,
            )
            for connection in idle[: max(1, len(idle) // 4)]:
                connection.writer.transport.close()
            logger.warning(
                "nimrank serve: out of file descriptors; closed %d idle connections",
                min(len(idle), max(1, len(idle) // 4)),
            )
            return
        loop.default_exception_handler(context)

    async def close(self) -> None:
        """Stop listening, close every connection, cancel every request in progress."""
        if self.server is not None:
            self.server.close()
        tasks = list(self.connections.values())
        for connection in list(self.connections):
            connection.writer.transport.abort()
        # Also any task not registered yet (a connection accepted in the last
        # moment): none may be destroyed pending when the loop closes.
        tasks += [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ connections

    def admit(self, connection: _Connection) -> bool:
        """Make room for a new connection; False when every other one is busy."""
        if len(self.connections) < self.max_connections:
            return True
        idle = [c for c in self.connections if c.idle_since is not None]
        if not idle:
            return False
        # The longest-idle keep-alive connection goes, so idle clients cannot
        # starve ones with a request to make.
        oldest = min(idle, key=lambda c: c.idle_since or 0.0)
        oldest.writer.transport.close()
        return True

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(writer)
        task = asyncio.current_task()
        if not self.admit(conn):
            writer.write(self.encode(nim_error(503, "Too many connections"), close=True))
            writer.close()
            return
        assert task is not None
        self.connections[conn] = task
        peer_info = writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if peer_info else "?:0"
        loop = asyncio.get_running_loop()
        try:
            keep_alive = True
            while keep_alive:
                conn.idle_since = loop.time()
                # Silent too long: the transport closes and the read ends at EOF.
                # (A timer, not asyncio.timeout: that is 3.11+, wait_for costs a task.)
                timer = loop.call_later(self.idle_timeout, writer.transport.close)
                try:
                    data = await reader.readuntil(b"\r\n\r\n")
                except asyncio.LimitOverrunError:
                    writer.write(self.encode(nim_error(431, "Request head too large"), close=True))
                    return
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():  # e.g. LF-only line endings, then EOF
                        error = nim_error(400, "Malformed request head (lines end with CRLF)")
                        writer.write(self.encode(error, close=True))
                    return  # the client closed, or stayed silent too long
                finally:
                    timer.cancel()
                conn.idle_since = None
                keep_alive = await self.request(data[:-4], reader, writer, peer)
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to tell it
        except asyncio.CancelledError:
            # The server is stopping. Ending normally rather than cancelled:
            # asyncio 3.11's stream callback calls task.exception(), which
            # raises (and gets logged) for a cancelled task.
            return
        finally:
            self.connections.pop(conn, None)
            writer.close()

    async def request(
        self,
        data: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
    ) -> bool:
        """Read, answer and write one request; whether the connection stays open."""
        try:
            head = parse_head(data)
        except BadRequest as exc:
            line = data.lstrip(b"\r\n").split(b"\r\n", 1)[0].decode("latin-1")[:200]
            if self.state.log_requests:
                self.state.print_line(f"{printable(line)} -> {exc.status} ({exc}, {peer})")
            writer.write(self.encode(nim_error(exc.status, str(exc)), close=True))
            return False
        started = time.monotonic()
        error: Reply | None = None
        raw = b""
        timer = asyncio.get_running_loop().call_later(self.idle_timeout, writer.transport.close)
        try:
            raw = await self.read_body(head, reader, writer)
        except BadRequest as exc:
            error = nim_error(exc.status, str(exc))
        except asyncio.IncompleteReadError:
            return False  # the client hung up mid-body, or stalled past idle_timeout
        except asyncio.LimitOverrunError:
            error = nim_error(400, "Malformed chunked request body")
        finally:
            timer.cancel()
        parsed: Any = None
        if error is None and head.method == "POST":
            if too_many_values(raw):
                error = nim_error(
                    413, f"Request body holds more than {MAX_JSON_VALUES} JSON values"
                )
            else:
                parsed = parse_json(raw)
        record = RecordedRequest(
            number=0,
            method=head.method,
            path=head.path,
            headers={name: _mask(name, value) for name, value in head.headers.items()},
            body=None if isinstance(parsed, NotJson) else parsed,
            status=IN_PROGRESS,
            peer=peer,
            started=started,
            finished=started,
            authorization_sha256=_digest(head.headers.get("authorization")),
            url_query=head.query,
            parsed=parsed,
        )
        self.state.arrive(record)
        reply = Reply(500)
        try:
            reply = error if error is not None else await self.answer(record)
        except asyncio.CancelledError:
            reply = Reply(DISCONNECTED, drop=True)  # the server is stopping
            raise
        except Exception:
            # Only a bug lands here: routes answer every bad input with a 4xx.
            logger.exception("nimrank serve: internal error handling %s %s", head.method, head.path)
            reply = nim_error(500, "internal error in nimrank serve (a bug, see its log)")
        finally:
            status = DISCONNECTED if reply.drop else reply.status
            self.state.leave(record, status, reply.passages)
        if reply.drop:
            return False  # an injected hang-up: close without a byte
        close = error is not None or not head.keep_alive
        data = self.encode(reply, close=close, head_only=head.method == "HEAD")
        if reply.trickle > 0:
            for position in range(len(data)):
                writer.write(data[position : position + 1])
                await writer.drain()
                await asyncio.sleep(reply.trickle)
        else:
            writer.write(data)
            if writer.transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
                await writer.drain()
        return not close

    async def read_body(
        self, head: RequestHead, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes:
        if head.content_length is None and not head.chunked:
            return b""
        if head.content_length is not None and head.content_length > MAX_BODY_BYTES:
            raise _too_large()
        if head.expect_continue:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if head.content_length is not None:
            return await reader.readexactly(head.content_length)
        chunks: list[bytes] = []
        total = 0
        while True:
            size = parse_chunk_size((await reader.readuntil(b"\r\n"))[:-2])
            if size == 0:
                break
            total += size
            if total > MAX_BODY_BYTES:
                raise _too_large()
            chunk = await reader.readexactly(size + 2)
            if chunk[-2:] != b"\r\n":
                raise BadRequest("Malformed chunked request body (a chunk must end with CRLF)")
            chunks.append(chunk[:-2])
        for _ in range(100):
            if await reader.readuntil(b"\r\n") == b"\r\n":
                return b"".join(chunks)  # trailers ignored
        raise BadRequest("Too many trailer fields")

    async def answer(self, record: RecordedRequest) -> Reply:
        """The reply to a request whose body was read: a rule's, or the honest one.

        Ranking requests take a capacity slot (when there is a capacity) and
        count as in service while they are computed and their time passes;
        models and health requests are never queued or counted.
        """
        if record.family is None:
            return await self.compute(record)
        if self.slots is None:
            return await self.in_service(record)
        async with self.slots:  # capacity: the rest wait here, in arrival order
            return await self.in_service(record)

    async def in_service(self, record: RecordedRequest) -> Reply:
        state = self.state
        with state.lock:
            state.in_service += 1
            state.max_in_service = max(state.max_in_service, state.in_service)
        try:
            return await self.compute(record)
        finally:
            with state.lock:
                state.in_service -= 1

    async def compute(self, record: RecordedRequest) -> Reply:
        state = self.state
        rule = state.take_rule(record) if state.rules else None
        if rule is None:
            reply = self.owner.honest_reply(record)
        else:
            try:
                reply = rule.action(record, self.owner)
            except Exception as exc:
                # A bug in a test's action: say so in the reply instead of dropping.
                reply = nim_error(500, f"fault rule raised {exc!r}")
        pause = reply.delay
        if reply.passages:
            pause += state.settings.simulated_seconds(reply.passages)
        if pause > 0:
            await asyncio.sleep(pause)  # simulated GPU time; the loop keeps serving
        return reply

    def encode(self, reply: Reply, *, close: bool, head_only: bool = False) -> bytes:
        body = reply.body
        if isinstance(body, bytes):
            data = body  # raw bytes, e.g. a malformed body for client tests
        else:
            data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        lines = [
            f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Unknown')}",
            "Server: nimrank-serve",
            f"Date: {self.dates.now()}",
        ]
        if not any(name.lower() == "content-type" for name in reply.headers):
            lines.append("Content-Type: application/json")
        lines.extend(f"{name}: {value}" for name, value in reply.headers.items())
        lines.append(f"Content-Length: {len(data)}")
        if close:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        return head if head_only else head + data


def _too_large() -> BadRequest:
    return BadRequest(f"Request body larger than {MAX_BODY_BYTES} bytes", 413)


def _digest(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode("latin-1")).hexdigest()


class RankingServer:
    """A NIM-compatible ranking server on loopback, for tests and examples.

    Serves ``POST /v1/ranking`` (NIM), ``POST /v1/rerank`` and ``/rerank``
    (Cohere/Jina style), ``GET /v1/models`` and the NIM health endpoints,
    scored by the lexical stand-in of :mod:`nimrank.server.scoring`. Tests
    script misbehaviour with :meth:`add_rule` (see :mod:`nimrank.server.faults`).

    Example:
        >>> import httpx
        >>> with RankingServer() as server:
        ...     reply = httpx.post(
        ...         f"{server.url}/ranking",
        ...         json={
        ...             "model": "any",
        ...             "query": {"text": "memory bandwidth"},
        ...             "passages": [{"text": "a cake"}, {"text": "memory bandwidth"}],
        ...         },
        ...     )
        >>> reply.json()["rankings"][0]["index"]
        1

    Args:
        host: address to bind; loopback by default.
        port: port to bind; 0 picks a free one (read it from :attr:`port`).
        model: model id listed by ``/v1/models``.
        latency_ms: simulated GPU time per scoring request.
        per_passage_ms: simulated GPU time per scored passage.
        max_passages: NIM's cap on passages per request.
        max_documents: cap on documents per ``/rerank`` request.
        max_passage_tokens: passage length limit in whitespace words.
        log_requests: print one summary line per request.
        log_size: how many recent requests :attr:`requests` keeps (0: none).
        log_stream: where ``log_requests`` lines go (default ``sys.stderr``).
        api_key: when set, every request but the health probes must carry
            ``Authorization: Bearer <api_key>`` or gets a NIM-style 401, as the
            hosted API does (a self-hosted NIM, the default, asks for none).
        capacity: ranking requests served at once (None: no limit); the rest
            queue in arrival order, as on a saturated GPU replica. A served
            request takes its simulated latency, so one replica answers at
            most ``capacity / (latency_ms + per_passage_ms * passages)``
            requests per millisecond.
        max_connections: connections open at once (default
            :func:`default_max_connections`: 512, fewer under a low
            file-descriptor limit); past it the longest-idle one is closed, or
            the new one gets a 503 when none is idle.
        idle_timeout: seconds a connection may wait without sending a whole
            request head (or body) before it is closed.
        **settings: any other :class:`ServerSettings` field (``vlm_model``,
            ``shuffle_rankings``, ``rerank_scores``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        model: str = DEFAULT_MODEL_ID,
        latency_ms: float = 0.0,
        per_passage_ms: float = 0.0,
        max_passages: int = 512,
        max_documents: int = 1000,
        max_passage_tokens: int = 512,
        log_requests: bool = False,
        log_size: int = 10_000,
        log_stream: TextIO | None = None,
        api_key: str | None = None,
        capacity: int | None = None,
        max_connections: int | None = None,
        idle_timeout: float = KEEPALIVE_IDLE_SECONDS,
        **settings: Any,
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        if log_size < 0:
            raise ValueError(f"log_size must be >= 0, got {log_size}")
        if capacity is not None and (isinstance(capacity, bool) or capacity < 1):
            raise ValueError(f"capacity must be >= 1 or None, got {capacity}")
        if max_connections is None:
            max_connections = default_max_connections()
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if not (math.isfinite(idle_timeout) and idle_timeout > 0):
            raise ValueError(f"idle_timeout must be finite and > 0, got {idle_timeout}")
        if api_key is not None and not api_key:
            raise ValueError("api_key must be a non-empty string or None")
        self._host = host
        self._port = port
        self._state = _State(
            ServerSettings(
                model=model,
                latency_ms=latency_ms,
                per_passage_ms=per_passage_ms,
                max_passages=max_passages,
                max_documents=max_documents,
                max_passage_tokens=max_passage_tokens,
                **settings,
            ),
            log_requests=log_requests,
            log_size=log_size,
            log_stream=log_stream,
            api_key=api_key,
        )
        self._service_options: dict[str, Any] = {
            "capacity": capacity,
            "max_connections": max_connections,
            "idle_timeout": idle_timeout,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._bound_port: int | None = None
        self._lifecycle = threading.Lock()

    # ------------------------------------------------------------------ settings

    @property
    def settings(self) -> ServerSettings:
        """Current behaviour; assign a new value to change it while running."""
        return self._state.settings

    @settings.setter
    def settings(self, value: ServerSettings) -> None:
        self._state.settings = value

    def configure(self, **changes: Any) -> None:
        """Change some settings while running, e.g. ``configure(latency_ms=50)``."""
        self._state.settings = replace(self._state.settings, **changes)

    @property
    def capacity(self) -> int | None:
        """Ranking requests served at once (None: no limit)."""
        capacity: int | None = self._service_options["capacity"]
        return capacity

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        """The bound host."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._bound_port is None:
            raise RuntimeError("the server is not running; call start() first")
        return self._bound_port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, without the ``/v1`` prefix."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def origin(self) -> str:
        """Same as :attr:`base_url`: scheme, host and port."""
        return self.base_url

    @property
    def url(self) -> str:
        """``http://HOST:PORT/v1``: the base URL a NIM client is given."""
        return f"{self.base_url}/v1"

    # ------------------------------------------------------------------ lifecycle

    def _open(self, loop: asyncio.AbstractEventLoop) -> _Service:
        service = _Service(self, **self._service_options)
        self._bound_port = loop.run_until_complete(service.open(self._host, self._port))
        return service

    @staticmethod
    def _close(loop: asyncio.AbstractEventLoop, service: _Service) -> None:
        try:
            loop.run_until_complete(service.close())
        finally:
            loop.close()

    def start(self) -> RankingServer:
        """Bind and serve from a daemon thread; returns self.

        Works from anywhere, an async test included (the server has its own
        event loop). Raises OSError when the address cannot be bound.
        """
        with self._lifecycle:
            if self._loop is not None:
                raise RuntimeError("the server is already running")
            bound: concurrent.futures.Future[None] = concurrent.futures.Future()
            loop = asyncio.new_event_loop()

            def run() -> None:
                asyncio.set_event_loop(loop)
                try:
                    service = self._open(loop)
                except BaseException as exc:
                    loop.close()
                    bound.set_exception(exc)
                    return
                bound.set_result(None)
                try:
                    loop.run_forever()
                finally:
                    self._close(loop, service)

            self._thread = threading.Thread(target=run, name="nimrank-serve", daemon=True)
            self._thread.start()
            try:
                bound.result()
            except BaseException:
                self._thread.join()
                self._thread = None
                raise
            self._loop = loop
        return self

    def serve_forever(self, ready: Callable[[], None] | None = None) -> None:
        """Bind and serve in the calling thread until interrupted.

        ``ready`` is called once the socket accepts connections (the port is
        known by then). In the main thread, SIGINT (Ctrl-C) and SIGTERM stop
        the loop between two callbacks, and a KeyboardInterrupt propagates
        once everything is closed; from another thread, :meth:`stop` ends it.
        """
        with self._lifecycle:
            if self._loop is not None:
                raise RuntimeError("the server is already running")
            loop = asyncio.new_event_loop()
            try:
                service = self._open(loop)
            except BaseException:
                loop.close()
                raise
            self._loop = loop
        signalled: list[int] = []
        watched = _STOP_SIGNALS if threading.current_thread() is threading.main_thread() else ()

        def stop_on(signum: int) -> None:
            signalled.append(signum)
            loop.stop()

        for signum in watched:
            # Handled by the loop, not raised inside whatever callback runs:
            # an exception thrown into a reply being written would leave the
            # connection tasks half-done.
            loop.add_signal_handler(signum, stop_on, signum)
        try:
            if ready is not None:
                ready()
            loop.run_forever()
        finally:
            for signum in watched:
                loop.remove_signal_handler(signum)
            self._loop = None
            self._bound_port = None
            self._close(loop, service)
        if signalled:
            raise KeyboardInterrupt

    def stop(self) -> None:
        """Stop serving, close every connection and wake delayed replies; a no-op if not running."""
        with self._lifecycle:
            loop, thread = self._loop, self._thread
            if loop is None:
                return
            if thread is None:
                loop.call_soon_threadsafe(loop.stop)  # serve_forever closes up itself
                return
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            self._loop = None
            self._thread = None
            self._bound_port = None

    def __enter__(self) -> RankingServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ what happened

    @property
    def requests(self) -> list[RecordedRequest]:
        """The most recent requests, oldest first (a snapshot)."""
        with self._state.lock:
            return list(self._state.log)

    @property
    def ranking_requests(self) -> list[RecordedRequest]:
        """The ranking requests (NIM or Cohere family) among :attr:`requests`."""
        return [request for request in self.requests if request.family is not None]

    def sent_passages(self) -> list[str]:
        """Every passage text of every ranking request, in arrival order."""
        return [text for request in self.ranking_requests for text in request.passages]

    def client_ports(self) -> set[int]:
        """Distinct client ports of the ranking requests: the connections they used."""
        return {request.client_port for request in self.ranking_requests}

    @property
    def max_in_flight(self) -> int:
        """Most requests handled at the same time since start or :meth:`reset`
        (queued for a capacity slot included)."""
        return self._state.max_in_flight

    @property
    def max_in_service(self) -> int:
        """Most ranking requests served at the same time since start or :meth:`reset`
        (never above ``capacity``; queued ones and models/health requests not counted)."""
        return self._state.max_in_service

    def reset(self) -> None:
        """Forget recorded requests, the request count, the peaks and every rule."""
        with self._state.lock:
            self._state.log.clear()
            self._state.count = 0
            self._state.max_in_flight = self._state.in_flight
            self._state.max_in_service = self._state.in_service
            self._state.rules.clear()

    # ------------------------------------------------------------------ answers and rules

    def honest_reply(self, request: RecordedRequest) -> Reply:
        """The answer the server gives ``request`` when no rule applies."""
        refused = self._refuse_unauthorised(request)
        if refused is not None:
            return refused
        return dispatch(
            request.method, request.path, request.parsed, self._state.settings, seed=request.number
        )

    def _refuse_unauthorised(self, request: RecordedRequest) -> Reply | None:
        """A 401 when the server has a key and the request does not carry it.

        Health probes stay open, as on a NIM container: orchestrators poll them
        without credentials.
        """
        key = self._state.api_key
        if key is None or request.path.startswith("/v1/health/"):
            return None
        if request.authorization_is(f"Bearer {key}"):
            return None
        problem = "invalid API key" if "authorization" in request.headers else "missing API key"
        reply = nim_error(
            401, f"Authentication failed: {problem} (send Authorization: Bearer <key>)"
        )
        return Reply(reply.status, reply.body, {"WWW-Authenticate": "Bearer"})

    def add_rule(
        self, action: Action, *, match: Match | None = None, times: int | None = None
    ) -> Rule:
        """Answer requests ``match`` accepts with ``action``, at most ``times`` times.

        Rules are tried in the order they were added; the first that matches
        decides the reply (under a lock, so which request gets a fault is
        deterministic when the match looks at the request's content). An
        action gets the :class:`RecordedRequest` and this server and returns a
        :class:`Reply`, which may carry a ``delay``, ``drop`` the connection or
        ``trickle`` its bytes; :mod:`nimrank.server.faults` has ready ones.
        Other requests are answered honestly.

        Args:
            action: what to answer, e.g. ``faults.error(503, "warming up")``.
            match: which requests (default: every ranking request, NIM or
                Cohere family; models, health and unknown paths are left alone).
            times: how many requests at most (None: for ever).
        """
        if times is not None and times < 1:
            raise ValueError(f"times must be >= 1 or None, got {times}")
        rule = Rule(action, match or is_ranking, times)
        with self._state.lock:
            self._state.rules.append(rule)
        return rule

    def inject_fault(
        self,
        status: int,
        body: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        path: str | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with a canned reply.

        A shorthand for :meth:`add_rule`: retries (``inject_fault(503,
        headers={"Retry-After": "0"})``), error mapping (401, 429) or malformed
        bodies (``body=b"oops"`` or ``body={"rankings": [{"index": 7}]}``). A
        fault with no ``path`` matches any POST; with one it matches that path
        only. The simulated latency does not apply to faults.

        Args:
            status: HTTP status to send.
            body: JSON-serialisable payload, raw ``bytes``, or None for a
                NIM-style error body.
            headers: extra response headers.
            times: how many requests get it.
            path: only requests to this path (e.g. ``"/v1/ranking"``).
        """
        reply = nim_error(status, f"fault injected by RankingServer (HTTP {status})")
        if body is not None:
            reply = Reply(status, body)
        reply = Reply(reply.status, reply.body, dict(headers or {}))
        self.add_rule(lambda _request, _server: reply, match=_post_or_path(path), times=times)

    def inject_delay(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """Answer the next ``times`` matching requests honestly, ``seconds`` late.

        Matching is as for :meth:`inject_fault`.
        """
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
        self.add_rule(
            lambda request, server: replace(server.honest_reply(request), delay=seconds),
            match=_post_or_path(path),
            times=times,
        )

    def inject_disconnect(self, *, times: int = 1, path: str | None = None) -> None:
        """Close the connection of the next ``times`` matching requests without a reply.

        The request is read first, so the client sees the connection drop
        while it waits for the answer. Such requests are recorded with status
        ``DISCONNECTED`` (0). Matching is as for :meth:`inject_fault`.
        """
        dropped = Reply(DISCONNECTED, drop=True)
        self.add_rule(lambda _request, _server: dropped, match=_post_or_path(path), times=times)

    @property
    def pending_faults(self) -> int:
        """How many uses the rules with a ``times`` limit have left."""
        with self._state.lock:
            return sum(
                rule.times - rule.used for rule in self._state.rules if rule.times is not None
            )


def _post_or_path(path: str | None) -> Match:
    if path is None:
        return lambda request: request.method == "POST"
    return lambda request: request.path == path


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model: str = DEFAULT_MODEL_ID,
    latency_ms: float = 0.0,
    per_passage_ms: float = 0.0,
    max_passages: int = 512,
    max_documents: int = 1000,
    max_passage_tokens: int = 512,
    log_requests: bool = False,
    capacity: int | None = None,
    stream: TextIO | None = None,
) -> None:
    """Run the server in this thread until Ctrl-C or SIGTERM (``nimrank serve``).

    Prints ``nimrank serve: listening on http://HOST:PORT/v1 (lexical BM25
    stand-in)`` to ``stream`` (default stderr) once it accepts connections.
    Raises OSError when the address cannot be bound. No request log is kept
    in memory: nobody could read it.
    """
    out = stream if stream is not None else sys.stderr
    server = RankingServer(
        host,
        port,
        model=model,
        latency_ms=latency_ms,
        per_passage_ms=per_passage_ms,
        max_passages=max_passages,
        max_documents=max_documents,
        max_passage_tokens=max_passage_tokens,
        log_requests=log_requests,
        log_size=0,
        log_stream=out,
        capacity=capacity,
    )

    def announce() -> None:
        print(
            f"nimrank serve: listening on {server.url} (lexical BM25 stand-in)",
            file=out,
            flush=True,
        )

    try:
        server.serve_forever(ready=announce)
    except KeyboardInterrupt:
        print("nimrank serve: stopped", file=out, flush=True)
