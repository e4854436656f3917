"""The HTTP layer of `nimrank serve`: sockets, threads, the request log.

What to answer is decided by :mod:`nimrank.server.routes`; this module only
moves bytes, so it can stay small and boring:

* ``ThreadingHTTPServer`` with daemon threads: every connection gets a
  thread, so requests sleeping through their simulated GPU time overlap the
  way a dynamically batching GPU server overlaps them.
* HTTP/1.1 keep-alive with an exact ``Content-Length`` on every response
  (errors included), so clients reuse connections.
* ``TCP_NODELAY`` and one ``send`` per small response: without them a reply
  written as headers then body waits on a delayed ACK, ~40 ms on loopback.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import math
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final, TextIO, cast
from urllib.parse import urlsplit

from nimrank.server.routes import (
    DEFAULT_MODEL_ID,
    NotJson,
    Reply,
    ServerSettings,
    dispatch,
    nim_error,
    parse_json,
)

__all__ = ["DISCONNECTED", "RankingServer", "RecordedRequest", "serve"]

logger = logging.getLogger("nimrank.server")

MAX_BODY_BYTES: Final = 64 * 1024 * 1024
"""Largest request body read; 1,000 long documents fit with room to spare."""

KEEPALIVE_IDLE_SECONDS: Final = 75.0
"""An idle keep-alive connection is closed after this long (clients expire
theirs sooner, e.g. httpx after 5 s, so they never write into a closing one)."""

# How often serve_forever looks for a stop request: a test fixture's stop()
# waits up to this long, while Ctrl-C interrupts the blocking CLI at once.
_THREAD_POLL_SECONDS: Final = 0.01
_BLOCKING_POLL_SECONDS: Final = 0.5
DISCONNECTED: Final = 0
"""Status recorded for a request whose connection was closed without a reply
(see :meth:`RankingServer.inject_disconnect`)."""
_SECRET_HEADERS: Final = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie"}
)


def _mask(name: str, value: str) -> str:
    """Hide a credential but keep its scheme (``Bearer ***``) for assertions."""
    if name not in _SECRET_HEADERS:
        return value
    scheme, _, secret = value.partition(" ")
    return f"{scheme} ***" if secret and name.endswith("authorization") else "***"


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it (credentials masked).

    Attributes:
        method: HTTP method.
        path: request path without the query string.
        headers: header names lowercased; values of ``authorization``,
            ``x-api-key`` and similar replaced by ``***`` (scheme kept).
        body: the parsed JSON body, or None when absent or not JSON.
        status: status code of the reply; ``DISCONNECTED`` (0) when the
            connection was closed without one.
        peer: ``"host:port"`` of the client socket; two requests with the
            same peer came over one (kept-alive) connection.
        started: ``time.monotonic()`` when handling began.
        finished: ``time.monotonic()`` when the reply was written.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int
    peer: str
    started: float
    finished: float
    authorization_sha256: str | None = field(default=None, repr=False)

    def authorization_is(self, value: str) -> bool:
        """Whether the ``Authorization`` header was exactly ``value``.

        Only a SHA-256 digest is kept, so tests can check which key a client
        sent without the key ever being stored or printed.
        """
        if self.authorization_sha256 is None:
            return False
        digest = hashlib.sha256(value.encode()).hexdigest()
        return hmac.compare_digest(digest, self.authorization_sha256)


@dataclass
class _Fault:
    """An injected misbehaviour: a canned reply, a late honest one, or a hang-up."""

    reply: Reply | None  # None: answer honestly (after ``delay``)
    path: str | None
    remaining: int
    delay: float = 0.0
    disconnect: bool = False


class _State:
    """Everything the handler threads share, behind one lock."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        log_requests: bool,
        log_size: int,
        log_stream: TextIO | None,
        api_key: str | None = None,
    ) -> None:
        self.settings = settings
        self.api_key = api_key
        self.log_requests = log_requests
        self.log_stream = log_stream
        self.lock = threading.Lock()
        self.log: deque[RecordedRequest] = deque(maxlen=log_size)
        self.in_flight = 0
        self.max_in_flight = 0
        self.faults: deque[_Fault] = deque()
        self.connections: set[socket.socket] = set()

    def enter(self) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self, record: RecordedRequest | None, passages: int) -> None:
        with self.lock:
            self.in_flight -= 1
            if record is not None:
                self.log.append(record)
        if record is not None and self.log_requests:
            elapsed_ms = (record.finished - record.started) * 1000.0
            stream = self.log_stream if self.log_stream is not None else sys.stderr
            line = (
                f"nimrank serve: {record.method} {record.path} -> {record.status} "
                f"({passages} passages, {elapsed_ms:.1f} ms, {record.peer})"
            )
            # A closed or broken log stream must not cost the client its reply.
            with contextlib.suppress(OSError, ValueError):
                print(line, file=stream, flush=True)

    def take_fault(self, method: str, path: str) -> _Fault | None:
        """Consume the first injected fault matching this request, if any."""
        with self.lock:
            for fault in self.faults:
                if fault.path == path or (fault.path is None and method == "POST"):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def close_connections(self) -> None:
        """Wake keep-alive threads blocked on idle sockets so they exit."""
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the peer
                connection.shutdown(socket.SHUT_RDWR)


class _BodyError(Exception):
    """The request body cannot be read; the reply says why."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    # Buffered writes: headers and a small body leave in a single send.
    wbufsize = 1 << 16
    timeout = KEEPALIVE_IDLE_SECONDS
    # The stdlib assumes HTTP/0.9 (a bare body, no status line) until a request
    # line parses; answer garbage with a proper HTTP/1.1 error instead.
    default_request_version = "HTTP/1.1"
    server_version = "nimrank-serve"
    sys_version = ""

    @property
    def _state(self) -> _State:
        return cast(_HTTPServer, self.server).state

    def setup(self) -> None:
        super().setup()
        with self._state.lock:
            self._state.connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self._state.lock:
                self._state.connections.discard(self.connection)

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """JSON for the errors ``http.server`` raises itself (never HTML, never 5xx)."""
        if code == 501 and self.command:
            # An unknown method on a parsed request: route it, so it gets a 405
            # (or a 404), the body is drained and the connection stays usable.
            self._serve()
            return
        self.close_connection = True
        status = 400 if code >= 500 else code
        detail = message or explain or "Bad request"
        reply = nim_error(status, f"{detail} (HTTP {code})" if status != code else detail)
        self._send(reply, self._encode(reply), head_only=False)

    def log_message(self, format: str, *args: Any) -> None:
        # http.server would print an access line per request to stderr;
        # --log-requests prints our own summary instead.
        logger.debug("%s " + format, self.address_string(), *args)

    # ------------------------------------------------------------------ internals

    def _serve(self) -> None:
        state = self._state
        started = time.monotonic()
        method = self.command
        path = urlsplit(self.path).path or "/"
        body: Any = None
        reply: Reply
        state.enter()
        try:
            try:
                raw = self._read_body()
            except _BodyError as exc:
                self.close_connection = True  # the unread body would poison the stream
                reply = exc.reply
            else:
                body = parse_json(raw) if method == "POST" else None
                fault = state.take_fault(method, path)
                if fault is not None and fault.delay > 0:
                    time.sleep(fault.delay)  # an injected slow reply
                if fault is not None and fault.disconnect:
                    # An injected hang-up: close without a byte, as a crashed
                    # worker or a dropped proxy connection would.
                    self.close_connection = True
                    reply = Reply(DISCONNECTED, None)
                elif fault is not None and fault.reply is not None:
                    reply = fault.reply
                else:
                    reply = self._refuse_unauthorised(path) or dispatch(
                        method, path, body, state.settings
                    )
                pause = state.settings.simulated_seconds(reply.passages) if reply.passages else 0
                if pause > 0:
                    time.sleep(pause)  # simulated GPU time; other threads keep serving
            data = b"" if reply.status == DISCONNECTED else self._encode(reply)
        except OSError as exc:
            # The client stalled or vanished mid-body: a connection problem, not a bug.
            self.close_connection = True
            reply = nim_error(400, f"Could not read the request body: {exc}")
            data = self._encode(reply)
        except Exception:
            # Only a bug lands here: routes answer every bad input with a 4xx.
            logger.exception("nimrank serve: internal error handling %s %s", method, path)
            reply = nim_error(500, "internal error in nimrank serve (a bug, see its log)")
            data = self._encode(reply)
        # Recorded and counted out *before* replying: a client that has its
        # answer must find the request in the log, and its next request must
        # not overlap this one in max_in_flight.
        record: RecordedRequest | None = None
        try:
            record = RecordedRequest(
                method=method,
                path=path,
                headers={k.lower(): _mask(k.lower(), v) for k, v in self.headers.items()},
                body=None if isinstance(body, NotJson) else body,
                status=reply.status,
                peer=f"{self.client_address[0]}:{self.client_address[1]}",
                started=started,
                finished=time.monotonic(),
                authorization_sha256=self._authorization_digest(),
            )
        finally:
            state.leave(record, reply.passages)
        if reply.status != DISCONNECTED:
            self._send(reply, data, head_only=method == "HEAD")

    def _refuse_unauthorised(self, path: str) -> Reply | None:
        """A 401 when the server has a key and the request does not carry it.

        Health probes stay open, as on a NIM container: orchestrators poll them
        without credentials.
        """
        key = self._state.api_key
        if key is None or path.startswith("/v1/health/"):
            return None
        sent = self.headers.get("Authorization", "")
        if hmac.compare_digest(sent.encode(), f"Bearer {key}".encode()):
            return None
        problem = "missing API key" if not sent else "invalid API key"
        reply = nim_error(
            401, f"Authentication failed: {problem} (send Authorization: Bearer <key>)"
        )
        return Reply(reply.status, reply.body, {"WWW-Authenticate": "Bearer"})

    def _authorization_digest(self) -> str | None:
        value = self.headers.get("Authorization")
        return None if value is None else hashlib.sha256(value.encode()).hexdigest()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("Content-Length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
            if length < 0:
                raise ValueError(length_header)
        except ValueError:
            raise _BodyError(nim_error(400, "Invalid Content-Length header")) from None
        if length > MAX_BODY_BYTES:
            raise _BodyError(self._too_large())
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BodyError(nim_error(400, "Malformed chunked request body")) from None
            if size == 0:
                while self.rfile.readline(1024).strip():
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise _BodyError(self._too_large())
            chunks.append(self.rfile.read(size))
            self.rfile.readline(1024)  # the CRLF closing the chunk

    @staticmethod
    def _too_large() -> Reply:
        return nim_error(413, f"Request body larger than {MAX_BODY_BYTES} bytes")

    @staticmethod
    def _encode(reply: Reply) -> bytes:
        if isinstance(reply.body, bytes):
            return reply.body  # injected raw bytes, e.g. a malformed body for client tests
        return json.dumps(reply.body, separators=(",", ":"), allow_nan=False).encode()

    def _send(self, reply: Reply, data: bytes, *, head_only: bool) -> None:
        try:
            self.send_response(reply.status)
            names = {name.lower() for name in reply.headers}
            if "content-type" not in names:
                self.send_header("Content-Type", "application/json")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head_only:
                self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell it


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops SYNs when a benchmark opens many
    # connections at once, and a dropped SYN costs a 1 s retransmit.
    request_queue_size = 1024

    def __init__(self, host: str, port: int, state: _State) -> None:
        self.state = state
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup
        # that can hang for seconds on a machine without network.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            logger.debug("connection from %s failed: %s", client_address, exc)
        else:
            logger.exception("nimrank serve: unexpected error for %s", client_address)


class RankingServer:
    """A NIM-compatible ranking server on loopback, for tests and examples.

    Serves ``POST /v1/ranking`` (NIM), ``POST /v1/rerank`` and ``/rerank``
    (Cohere/Jina style), ``GET /v1/models`` and the NIM health endpoints,
    scored by the lexical stand-in of :mod:`nimrank.server.scoring`.

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
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        if log_size < 0:
            raise ValueError(f"log_size must be >= 0, got {log_size}")
        settings = ServerSettings(
            model=model,
            latency_ms=latency_ms,
            per_passage_ms=per_passage_ms,
            max_passages=max_passages,
            max_documents=max_documents,
            max_passage_tokens=max_passage_tokens,
        )
        self._host = host
        self._port = port
        if api_key is not None and not api_key:
            raise ValueError("api_key must be a non-empty string or None")
        self._state = _State(
            settings,
            log_requests=log_requests,
            log_size=log_size,
            log_stream=log_stream,
            api_key=api_key,
        )
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

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

    # ------------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        """The bound host."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._httpd is None:
            raise RuntimeError("the server is not running; call start() first")
        return self._httpd.server_port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, without the ``/v1`` prefix."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """``http://HOST:PORT/v1``: the base URL a NIM client is given."""
        return f"{self.base_url}/v1"

    # ------------------------------------------------------------------ lifecycle

    def _bind(self) -> _HTTPServer:
        if self._httpd is not None:
            raise RuntimeError("the server is already running")
        self._httpd = _HTTPServer(self._host, self._port, self._state)
        return self._httpd

    def start(self) -> RankingServer:
        """Bind and serve from a daemon thread; returns self."""
        httpd = self._bind()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": _THREAD_POLL_SECONDS},
            name=f"nimrank-serve:{httpd.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self, ready: Callable[[], None] | None = None) -> None:
        """Bind and serve in the calling thread until interrupted.

        ``ready`` is called once the socket accepts connections (the port is
        known by then). A KeyboardInterrupt propagates after everything closed.
        """
        httpd = self._bind()
        try:
            if ready is not None:
                ready()
            httpd.serve_forever(poll_interval=_BLOCKING_POLL_SECONDS)
        finally:
            self._close()

    def stop(self) -> None:
        """Stop serving and close every connection; a no-op if not running."""
        if self._httpd is None:
            return
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._close()

    def _close(self) -> None:
        if self._httpd is not None:
            self._httpd.server_close()
            self._httpd = None
        self._state.close_connections()

    def __enter__(self) -> RankingServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ for tests

    @property
    def requests(self) -> list[RecordedRequest]:
        """The most recent requests, oldest first (a snapshot)."""
        with self._state.lock:
            return list(self._state.log)

    @property
    def max_in_flight(self) -> int:
        """Most requests handled at the same time since start or :meth:`reset`."""
        return self._state.max_in_flight

    def reset(self) -> None:
        """Forget recorded requests, the in-flight peak and pending faults."""
        with self._state.lock:
            self._state.log.clear()
            self._state.max_in_flight = self._state.in_flight
            self._state.faults.clear()

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

        For testing clients: retries (``inject_fault(503, headers={"Retry-After":
        "0"})``), error mapping (401, 429) or malformed bodies (``body=b"oops"``
        or ``body={"rankings": [{"index": 7}]}``). A fault with no ``path``
        matches any POST; with one it matches that path only. The simulated
        latency does not apply to faults.

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
        self._add_fault(_Fault(reply, path, times))

    def inject_delay(self, seconds: float, *, times: int = 1, path: str | None = None) -> None:
        """Answer the next ``times`` matching requests honestly, ``seconds`` late.

        For timeouts (a delay past the client's ``timeout``) and slow replies
        under load. Matching is as for :meth:`inject_fault`.
        """
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
        self._add_fault(_Fault(None, path, times, delay=seconds))

    def inject_disconnect(self, *, times: int = 1, path: str | None = None) -> None:
        """Close the connection of the next ``times`` matching requests without a reply.

        The request is read first, so the client sees the connection drop
        while it waits for the answer. Such requests are recorded with status
        ``DISCONNECTED`` (0). Matching is as for :meth:`inject_fault`.
        """
        self._add_fault(_Fault(None, path, times, disconnect=True))

    @property
    def pending_faults(self) -> int:
        """How many injected faults have not been used yet (all kinds)."""
        with self._state.lock:
            return sum(fault.remaining for fault in self._state.faults)

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining < 1:
            raise ValueError(f"times must be >= 1, got {fault.remaining}")
        with self._state.lock:
            self._state.faults.append(fault)


def _sigterm_as_interrupt() -> Callable[[], None]:
    """Make SIGTERM stop `serve` like Ctrl-C; returns a function undoing it."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


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
    )

    def announce() -> None:
        print(
            f"nimrank serve: listening on {server.url} (lexical BM25 stand-in)",
            file=out,
            flush=True,
        )

    restore = _sigterm_as_interrupt()
    try:
        server.serve_forever(ready=announce)
    except KeyboardInterrupt:
        print("nimrank serve: stopped", file=out, flush=True)
    finally:
        restore()
