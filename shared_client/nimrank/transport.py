"""One HTTP attempt, bounded in time and in size, whatever the server does.

``send`` (sync) and ``asend`` (async) make one request and return its status,
headers and decoded body. Two promises hold against a hostile or broken server:

* **Time.** ``timeout`` bounds the whole attempt, from connecting to the last
  byte of the body, not each socket read: a server trickling a byte every
  0.9 s fails a ``timeout=2`` attempt after about 2 s. Async: one cancel scope
  around the attempt. Sync: no thread can interrupt a blocking read, so every
  read, write and connect of the attempt is given only the time that is left
  (a wrapper around httpcore's network backend reads the attempt's deadline
  from a context variable); past it, httpx's own ``ReadTimeout`` etc.
* **Size.** The decoded body may not exceed ``max_bytes``
  (:data:`DEFAULT_MAX_RESPONSE_BYTES`); past it, :class:`ResponseTooLarge`,
  raised as soon as the bound is crossed, having held at most about
  ``max_bytes`` in memory: a 2 GiB body, an endless chunked body or a
  compression bomb ends after reading a little more than ``max_bytes``.

Compression: only ``gzip`` and ``deflate`` are advertised, decoded here with
zlib's output bound (``max_length``), so a bomb inflates no further than the
cap. zstd and brotli are not advertised: their Python bindings have no output
bound per call (196 KiB of zstd can inflate to gigabytes in one call), and a
ranking answer is a few kilobytes of scores, which gains nothing from them. A
server that sends them anyway gets ``httpx.DecodingError``.
"""

from __future__ import annotations

import contextlib
import socket
import time
import weakref
import zlib
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, NamedTuple

import anyio
import httpcore
import httpx

if TYPE_CHECKING:
    from ._aiohttp import AiohttpPool, StreamedResponse

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "LONGEST_TIMEOUT",
    "Reply",
    "ResponseTooLarge",
    "asend",
    "send",
]

#: The default bound on one decoded response body: a batch of 512 scores is
#: about 20 KB, NVIDIA's hosted model list about 200 KB.
DEFAULT_MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024

#: Longer timeouts are taken as this long (about 11 days): the socket layer
#: overflows on 1e10 s or infinity, and no answer is worth waiting longer.
LONGEST_TIMEOUT: Final = 1e6

_ACCEPT_ENCODING: Final = "gzip, deflate"
# wbits 32 + 15: zlib detects a gzip or a zlib header by itself.
_ZLIB_ENCODINGS: Final = frozenset({"gzip", "x-gzip", "deflate"})

# When the running sync attempt must be over (time.monotonic()), or None.
_deadline: ContextVar[float | None] = ContextVar("nimrank_transport_deadline", default=None)


class ResponseTooLarge(httpx.RequestError):
    """The response body is larger than the client accepts (``limit`` bytes, decoded).

    An ``httpx.RequestError`` but not a ``TransportError``: asking again would
    get the same body, so it is not retried.
    """

    def __init__(self, limit: int) -> None:
        super().__init__(f"the response body is larger than {limit} bytes")
        self.limit = limit


class Reply(NamedTuple):
    """One HTTP answer, read whole: status, headers and the decoded body.

    A named tuple: a dataclass would add ~1 ms to every import of the client.

    ``headers`` (case-insensitive: ``httpx.Headers``, or aiohttp's ``CIMultiDict``)
    are the server's, less ``Content-Encoding`` and ``Content-Length``,
    which described the raw body, not ``content``.
    """

    status: int
    headers: Mapping[str, str]
    content: bytes


def send(
    http: httpx.Client,
    method: str,
    url: str,
    content: bytes | None,
    *,
    timeout: float,
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Reply:
    """One request on ``http``, done within ``timeout`` seconds, its body within ``max_bytes``.

    Raises:
        httpx.TimeoutException: the attempt took longer than ``timeout``.
        ResponseTooLarge: the decoded body is larger than ``max_bytes``.
        httpx.TransportError: as httpx raises it (connection refused, dropped ...).
    """
    _bound_reads(http)
    timeout = min(timeout, LONGEST_TIMEOUT)
    token = _deadline.set(time.monotonic() + timeout)
    try:
        request = _request(http, method, url, content, timeout)
        response = http.send(request, stream=True)
        try:
            body = _Body(response.status_code, response.headers, max_bytes)
            for chunk in response.iter_raw():
                body.feed(chunk)
                if time.monotonic() > _deadline_now():
                    raise httpx.ReadTimeout("the attempt took too long", request=request)
            return body.reply()
        finally:
            response.close()
    finally:
        _deadline.reset(token)


async def asend(
    http: httpx.AsyncClient | AiohttpPool,
    method: str,
    url: str,
    content: bytes | None,
    *,
    timeout: float,  # noqa: ASYNC109 - one attempt's bound, part of the interface
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
) -> Reply:
    """The async ``send``, on httpx or on aiohttp: the same bounds.

    On httpx, one cancel scope around the attempt. On aiohttp, its own total
    timer, which covers the same span (the wait for a connection, connecting,
    the head and every read of the body) at a fraction of a cancel scope's CPU.
    """
    timeout = min(timeout, LONGEST_TIMEOUT)
    if not isinstance(http, httpx.AsyncClient):
        headers = _HEADERS if content is None else _BODY_HEADERS
        return await _read(
            await http.send(method, url, content, headers=headers, timeout=timeout), max_bytes
        )
    request = _request(http, method, url, content, timeout)
    try:
        with anyio.fail_after(timeout):
            return await _read(await http.send(request, stream=True), max_bytes)
    except TimeoutError:
        raise httpx.ReadTimeout("the attempt took too long", request=request) from None


async def _read(response: httpx.Response | StreamedResponse, max_bytes: int) -> Reply:
    try:
        body = _Body(response.status_code, response.headers, max_bytes)
        async for chunk in response.aiter_raw():
            body.feed(chunk)
        return body.reply()
    finally:
        await response.aclose()


_HEADERS: Final = {"Accept-Encoding": _ACCEPT_ENCODING}
_BODY_HEADERS: Final = {**_HEADERS, "Content-Type": "application/json"}


def _request(
    http: httpx.Client | httpx.AsyncClient,
    method: str,
    url: str,
    content: bytes | None,
    timeout: float,
) -> httpx.Request:
    headers = _HEADERS if content is None else _BODY_HEADERS
    # pool=None: waiting for a free connection is queued work, not a slow server.
    return http.build_request(
        method, url, content=content, headers=headers, timeout=httpx.Timeout(timeout, pool=None)
    )


class _Body:
    """The body read so far, decoded, refused once it passes ``max_bytes``."""

    # ``headers`` become the Reply's: the caller hands over a mapping of its own.
    def __init__(self, status: int, headers: MutableMapping[str, str], max_bytes: int) -> None:
        self._status = status
        self._headers = headers
        self._max_bytes = max_bytes
        self._raw = 0
        self._decoded = bytearray()
        encoding = headers.get("Content-Encoding", "identity").strip().lower()
        self._zlib: Any = None
        if encoding in _ZLIB_ENCODINGS:
            self._zlib = zlib.decompressobj(32 + zlib.MAX_WBITS)
        elif encoding != "identity":
            raise httpx.DecodingError(
                f"the server sent Content-Encoding {encoding[:40]!r}, which was not asked for"
            )
        length = headers.get("Content-Length", "")
        if self._zlib is None and length.isdigit() and int(length) > max_bytes:
            raise ResponseTooLarge(max_bytes)  # refused before reading a byte of it

    def feed(self, chunk: bytes) -> None:
        # The raw bytes count too: a compressed stream that never inflates
        # (empty deflate blocks, forever) is still a body without end.
        self._raw += len(chunk)
        if self._raw > self._max_bytes:
            raise ResponseTooLarge(self._max_bytes)
        if self._zlib is None:
            self._add(chunk)
            return
        try:
            while chunk:
                room = self._max_bytes + 1 - len(self._decoded)
                self._add(self._zlib.decompress(chunk, room))
                chunk = self._zlib.unconsumed_tail
        except zlib.error as exc:
            raise httpx.DecodingError(f"the compressed body is corrupt: {exc}") from None

    def _add(self, data: bytes) -> None:
        self._decoded += data
        if len(self._decoded) > self._max_bytes:
            raise ResponseTooLarge(self._max_bytes)

    def reply(self) -> Reply:
        if self._zlib is not None:
            self._add(self._zlib.flush())
        headers = self._headers
        for name in ("Content-Encoding", "Content-Length"):
            if name in headers:
                del headers[name]  # every occurrence, on either mapping
        return Reply(self._status, headers, bytes(self._decoded))


# -- the sync deadline: every network call of the attempt gets the time left -----------


def _deadline_now() -> float:
    deadline = _deadline.get()
    return float("inf") if deadline is None else deadline


def _left(timeout: float | None, expired: type[Exception]) -> float | None:
    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise expired("the attempt took too long")
    return left if timeout is None else min(timeout, left)


class _BoundedStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def abort(self) -> None:
        """Wake a read blocked on this connection: it ends as a dropped connection.

        ``shutdown``, not ``close``: the descriptor stays this stream's until
        httpcore closes it, so no other connection can take its number while a
        thread still reads from it.
        """
        sock = self._stream.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._stream.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _BoundedBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend
        self.streams: weakref.WeakSet[_BoundedStream] = weakref.WeakSet()

    def _opened(self, stream: httpcore.NetworkStream) -> _BoundedStream:
        bounded = _BoundedStream(stream)
        self.streams.add(bounded)
        return bounded

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return self._opened(
            self._backend.connect_tcp(host, port, left, local_address, socket_options)
        )

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return self._opened(self._backend.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def abort(http: httpx.Client) -> None:
    """End every request in flight on ``http`` at once, from any thread.

    Each blocked read wakes with a connection error; closing the pool is left
    to whoever holds it (see ``_BoundedStream.abort``).
    """
    for backend in _backends(http):
        if isinstance(backend, _BoundedBackend):
            for stream in list(backend.streams):
                stream.abort()


def _backends(http: httpx.Client) -> list[Any]:
    transports: list[Any] = [getattr(http, "_transport", None)]
    transports += list(getattr(http, "_mounts", {}).values())
    return [getattr(getattr(t, "_pool", None), "_network_backend", None) for t in transports]


def _bound_reads(http: httpx.Client) -> None:
    """Put the deadline wrapper under ``http``'s connection pool, once.

    httpx passes a request's read timeout to every read of a phase (headers,
    body), so a trickle resets it forever; only the network backend sees each
    read. httpx offers no public way to choose it: this reaches through two
    private attributes, and a transport without them (a mock, another library's)
    keeps the body-side bound only. tests/hostile checks it still takes hold.
    """
    transports: list[Any] = [getattr(http, "_transport", None)]
    transports += list(getattr(http, "_mounts", {}).values())
    for transport in transports:
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if isinstance(backend, httpcore.NetworkBackend) and not isinstance(
            backend, _BoundedBackend
        ):
            pool._network_backend = _BoundedBackend(backend)  # type: ignore[union-attr]
