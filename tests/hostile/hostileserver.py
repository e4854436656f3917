"""A byte-level hostile HTTP server for tests: raw sockets on 127.0.0.1.

Each connection is answered by a *script*, a function given the connection
after its request was read. The script writes whatever bytes it likes, as
slowly as it likes: a byte every 0.9 s, an endless chunked body, a compression
bomb, JSON nested a thousand deep, a 3xx whose Location holds the key, the
request's headers echoed back JSON-escaped. Scripts end when the client goes
away or the server stops, so no test leaves a thread writing.

    with HostileServer(trickle(ok_body(1), interval=0.9)) as server:
        client.rank(..., base_url=server.url)

``server.requests`` holds every request received (raw bytes), for tests that
check what the client sent.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

__all__ = [
    "Connection",
    "HostileServer",
    "bomb",
    "chunked_forever",
    "echo_headers",
    "gzip_of",
    "huge_body",
    "measure",
    "nested_json",
    "ok_body",
    "redirect",
    "respond",
    "response_bytes",
    "slow",
    "trickle",
    "trickle_headers",
]


class Connection:
    """One accepted connection, as a script sees it."""

    def __init__(self, sock: socket.socket, request: bytes, stopped: threading.Event) -> None:
        self.sock = sock
        self.request = request
        self.stopped = stopped

    @property
    def headers(self) -> dict[str, str]:
        """The request's headers (names lower-cased)."""
        head = self.request.split(b"\r\n\r\n", 1)[0].decode("latin-1")
        pairs = (line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
        return {name.strip().lower(): value.strip() for name, value in pairs}

    @property
    def body(self) -> bytes:
        return self.request.split(b"\r\n\r\n", 1)[1]

    def send(self, data: bytes) -> bool:
        """Write ``data``; False once the client has gone or the server stopped."""
        if self.stopped.is_set():
            return False
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def wait(self, seconds: float) -> bool:
        """Sleep ``seconds``; False if the server stopped meanwhile."""
        return not self.stopped.wait(seconds)


Script = Callable[[Connection], None]


class HostileServer:
    """Serves each connection with ``script`` (or the next of ``scripts``, the last repeating)."""

    def __init__(self, *scripts: Script) -> None:
        if not scripts:
            raise ValueError("a HostileServer needs at least one script")
        self._scripts = list(scripts)
        self._listener = socket.create_server(("127.0.0.1", 0))
        # Closing a listening socket does not wake a thread blocked in accept().
        self._listener.settimeout(0.05)
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.requests: list[bytes] = []
        host, port = self._listener.getsockname()[:2]
        self.url = f"http://{host}:{port}/v1"
        self._acceptor = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> HostileServer:
        self._acceptor.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop accepting, end every script and close every connection."""
        self._stopped.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)
        for thread in [self._acceptor, *self._threads]:
            if thread.is_alive():
                thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(None)
            with self._lock:
                index = min(len(self._threads), len(self._scripts) - 1)
                self._sockets.append(sock)
                thread = threading.Thread(
                    target=self._serve, args=(sock, self._scripts[index]), daemon=True
                )
                self._threads.append(thread)
            thread.start()

    def _serve(self, sock: socket.socket, script: Script) -> None:
        try:
            request = _read_request(sock)
            if request is None:
                return
            with self._lock:
                self.requests.append(request)
            script(Connection(sock, request, self._stopped))
        except OSError:
            pass
        finally:
            _close(sock)


def _read_request(sock: socket.socket) -> bytes | None:
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    sock.settimeout(None)
    return head + b"\r\n\r\n" + body


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


# -- what a script may send ---------------------------------------------------------------


def ok_body(count: int, score: float = 1.0) -> bytes:
    """A well-formed NIM ranking body for ``count`` passages."""
    rankings = [{"index": i, "logit": score - i} for i in range(count)]
    return json.dumps({"rankings": rankings}).encode()


def response_bytes(
    status: int = 200,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    length: int | None = None,
) -> bytes:
    """A whole HTTP/1.1 response; ``length`` overrides Content-Length (to lie)."""
    fields = {"Content-Type": "application/json", "Connection": "close", **(headers or {})}
    if "Transfer-Encoding" not in fields:
        fields["Content-Length"] = str(len(body) if length is None else length)
    head = f"HTTP/1.1 {status} Hostile\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return head.encode("latin-1") + b"\r\n" + body


def respond(status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None) -> Script:
    """Answer at once."""

    def script(conn: Connection) -> None:
        conn.send(response_bytes(status, body, headers))

    return script


def slow(seconds: float, then: Script) -> Script:
    """Say nothing for ``seconds`` (for Ctrl-C and close() tests), then run ``then``."""

    def script(conn: Connection) -> None:
        if conn.wait(seconds):
            then(conn)

    return script


def trickle(body: bytes, *, interval: float = 0.9, forever: bool = False) -> Script:
    """Headers at once, then the body one byte every ``interval``.

    ``forever``: a chunked body of one-byte chunks that never ends.
    """

    def script(conn: Connection) -> None:
        if forever:
            head = response_bytes(200, headers={"Transfer-Encoding": "chunked"})
            while conn.send(head) and conn.wait(interval):
                head = b"1\r\n \r\n"
            return
        if not conn.send(response_bytes(200, b"", length=len(body))):
            return
        for i in range(len(body)):
            if not conn.wait(interval) or not conn.send(body[i : i + 1]):
                return

    return script


def trickle_headers(body: bytes, *, interval: float = 0.9) -> Script:
    """The status line and headers one byte every ``interval``, then the body."""

    def script(conn: Connection) -> None:
        whole = response_bytes(200, body)
        head_end = whole.index(b"\r\n\r\n") + 4
        for i in range(head_end):
            if not conn.wait(interval) or not conn.send(whole[i : i + 1]):
                return
        conn.send(whole[head_end:])

    return script


def huge_body(size: int, *, chunk: int = 1 << 16) -> Script:
    """A Content-Length of ``size`` bytes (2 GiB, say), then zeros until the client stops."""

    def script(conn: Connection) -> None:
        if not conn.send(response_bytes(200, b"", length=size)):
            return
        block = b"0" * chunk
        for _ in range(size // chunk):
            if not conn.send(block):
                return

    return script


def chunked_forever(piece: bytes = b'{"rankings": [' + b" " * 4000) -> Script:
    """A chunked body that never ends."""

    def script(conn: Connection) -> None:
        if not conn.send(response_bytes(200, headers={"Transfer-Encoding": "chunked"})):
            return
        frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        while conn.send(frame):
            pass

    return script


def bomb(encoding: str, inflated: int = 64 << 20) -> Script:
    """A body of ``inflated`` zeros compressed with ``encoding`` (gzip, deflate or zstd)."""
    payload = _compressed(encoding, inflated)

    def script(conn: Connection) -> None:
        conn.send(response_bytes(200, payload, {"Content-Encoding": encoding}))

    return script


@functools.cache
def _compressed(encoding: str, size: int) -> bytes:
    block = bytes(1 << 20)
    if encoding == "zstd":
        try:
            import zstandard
        except ImportError:  # a fake frame: the client must refuse it without zstd
            return b"\x28\xb5\x2f\xfd" + bytes(64)
        compressor = zstandard.ZstdCompressor(level=3).compressobj()
        frames = [compressor.compress(block) for _ in range(size // len(block))]
        return bytes(b"".join(frames) + compressor.flush())
    if encoding == "gzip":
        stream: Any = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    else:
        stream = zlib.compressobj(9)
    frames = [stream.compress(block) for _ in range(size // len(block))]
    return bytes(b"".join(frames) + stream.flush())


def nested_json(depth: int = 100_000) -> bytes:
    """A JSON array nested ``depth`` deep: Python's json recurses once per level."""
    return b"[" * depth + b"]" * depth


def redirect(location: str, status: int = 307) -> Script:
    """A redirect to ``location`` (which may hold the key)."""
    return respond(status, b"", {"Location": location})


def echo_headers(status: int = 400, *, escape: Callable[[str], str] | None = None) -> Script:
    """Echo the request's headers in a JSON error body, each value spelt by ``escape``.

    ``escape`` defaults to JSON's ``\\/`` for slashes and ``\\u002d`` for dashes:
    text that decodes to the plain value but matches no plain search.
    """
    spell = escape or (lambda value: value.replace("/", "\\/").replace("-", "\\u002d"))

    def script(conn: Connection) -> None:
        fields = ", ".join(f'"{name}": "{spell(value)}"' for name, value in conn.headers.items())
        body = ('{"detail": {' + fields + "}}").encode()
        conn.send(response_bytes(status, body))

    return script


def measure(work: Callable[[], object]) -> tuple[float, BaseException | None]:
    """Seconds ``work`` took, and what it raised (None when it returned)."""
    started = time.monotonic()
    try:
        work()
    except BaseException as exc:  # the test decides what was expected
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


def gzip_of(data: bytes) -> bytes:
    """``data`` gzip-compressed (a well-behaved compressed answer)."""
    return gzip.compress(data)
