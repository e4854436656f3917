"""The async client's aiohttp stack: ``http_transport="aiohttp"``, the default.

httpx's async stack (httpcore over anyio) spends about four times the CPU per
request of aiohttp's C-accelerated one, and httpx on top of aiohttp (the route
of the ``httpx-aiohttp`` package) still twice as much, in building and
reading its own request and response objects. :class:`AiohttpPool` sends
straight through one ``aiohttp.ClientSession`` instead and gives
``transport.asend`` what it reads from an ``httpx.Response`` streamed: the
status, case-insensitive headers and the raw body in chunks. Everything else stays
httpx-shaped: aiohttp's errors come out as the httpx exceptions httpcore would
raise for the same fault, ``transport.asend`` bounds the attempt's time and the
body's size as on httpx, and the client maps both stacks to the same
``RankingError`` types.

What the pool takes from httpx's defaults, so that switching stacks changes
nothing a caller sees: the proxy named by ``HTTP_PROXY``/``HTTPS_PROXY``/
``ALL_PROXY`` unless ``NO_PROXY`` exempts the host or ``host:port`` (read
once, at construction, as httpx does); Basic credentials from a URL's user
info (replacing the ``Authorization`` header, as httpx's URL auth does);
cookies kept for the pool's life, from any host; header lines up to 100 KiB;
repeated header names read as httpx reads them. No redirect is followed (the
client makes a 3xx an error), ``.netrc`` is not read. Where aiohttp's parser
is stricter than httpcore's (a duplicate ``Content-Length``, more than 128
header lines, bytes after a complete answer), the failure is a typed one;
``tests/hostile/test_stacks.py`` runs both stacks against the same servers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
import urllib.request
from collections.abc import AsyncIterator, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote

import httpx

__all__ = ["AiohttpPool", "require_aiohttp"]

_CHUNK = 64 * 1024
# httpcore accepts a response head of up to 100 KiB; aiohttp's default is 8 KiB
# a line. The same limit on both stacks: a server that works with one works
# with the other.
_MAX_HEAD = 100 * 1024
# URLs worked out and kept (a fleet's replicas, their model lists, readiness checks).
_MAX_TARGETS = 256


def require_aiohttp() -> Any:
    """The aiohttp module, or an ImportError saying how to install it.

    A client configured for the aiohttp stack calls this at construction, so
    an environment without aiohttp fails there and not at the first request.
    """
    try:
        import aiohttp
    except ImportError:
        raise ImportError(
            "http_transport='aiohttp' needs aiohttp (a dependency of nimrank: pip install "
            "'aiohttp>=3.9'), or pass http_transport='httpx'"
        ) from None
    return aiohttp


class AiohttpPool:
    """One ``aiohttp.ClientSession``, with the send ``transport.asend`` uses.

    The session is made on the first request (aiohttp binds it to the running
    event loop), with at most ``limits.max_connections`` connections; every
    request carries ``headers``.
    """

    # A class default: ``__del__`` reads it even when ``__init__`` raised.
    _session: Any = None

    def __init__(
        self,
        *,
        headers: Mapping[str, str] | None = None,
        limits: httpx.Limits | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._aiohttp = require_aiohttp()  # fail at construction, not at the first request
        self._headers = dict(headers or {})
        self._limits = limits or httpx.Limits()
        self._verify = verify
        self._proxies = urllib.request.getproxies()  # as httpx reads them: once, here
        self._timeouts: dict[float, Any] = {}
        # Per URL: aiohttp's URL object, the proxy and the Authorization header
        # it gets (few URLs, each sent many times: worked out once).
        self._targets: dict[str, tuple[Any, str | None, str | None]] = {}
        self.is_closed = False

    def _new_session(self) -> Any:
        lib = self._aiohttp
        connector = lib.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry,
            ssl=self._verify,
            # DNS answers are cached by aiohttp for 10 s by default; keep it.
        )
        return lib.ClientSession(
            connector=connector,
            # Cookies are kept from any host, an IP address too, as httpx keeps them.
            cookie_jar=lib.CookieJar(unsafe=True),
            # Every header is ours (User-Agent, Accept-Encoding, Content-Type).
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            auto_decompress=False,  # transport.asend decodes, within its size bound
            # Proxies are read once above: with trust_env aiohttp reads the
            # environment (and .netrc) again on a thread for every request.
            trust_env=False,
            max_line_size=_MAX_HEAD,
            max_field_size=_MAX_HEAD,
        )

    def _target(self, url: str) -> tuple[Any, str | None, str | None]:
        target = self._targets.get(url)
        if target is None:
            import yarl  # aiohttp's own URL type (one of its dependencies)

            parsed = yarl.URL(url)
            auth = None
            if parsed.raw_user is not None or parsed.raw_password is not None:
                user = unquote(parsed.raw_user or "")
                secret = unquote(parsed.raw_password or "")
                token = base64.b64encode(f"{user}:{secret}".encode()).decode("ascii")
                auth = f"Basic {token}"
                parsed = parsed.with_user(None)
            if len(self._targets) >= _MAX_TARGETS:  # polling URLs differ per request
                self._targets.clear()
            target = self._targets[url] = (parsed, self._proxy_for(parsed), auth)
        return target

    def _proxy_for(self, url: Any) -> str | None:
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if not proxy or not url.host:
            return None
        # With the port, so that a NO_PROXY entry naming host:port applies.
        where = url.host if url.explicit_port is None else f"{url.host}:{url.explicit_port}"
        if urllib.request.proxy_bypass(where):
            return None
        return proxy if "://" in proxy else f"http://{proxy}"  # as httpx reads a bare host

    def _timeout(self, seconds: float) -> Any:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = _client_timeout(self._aiohttp, seconds)
        return timeout

    async def send(
        self,
        method: str,
        url: str,
        content: bytes | None,
        *,
        headers: Mapping[str, str],
        timeout: float,
    ) -> StreamedResponse:
        """Send one request; the body is read as ``aiter_raw()`` is iterated.

        ``timeout`` bounds the attempt from here to the last byte of the body.

        Raises:
            httpx.TransportError: what httpcore would raise for the same fault.
            RuntimeError: the pool is closed.
        """
        if self.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        if self._session is None:
            self._session = self._new_session()
        target, proxy, auth = self._target(url)
        sent = {**self._headers, **headers}
        if auth is not None:
            sent["Authorization"] = auth
        try:
            response = await self._session.request(
                method,
                target,
                headers=sent,
                data=content,
                allow_redirects=False,
                timeout=self._timeout(timeout),
                proxy=proxy,
            )
        except _faults(self._aiohttp) as exc:
            raise _httpx_error(self._aiohttp, exc) from exc
        return StreamedResponse(response, self._aiohttp)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        self.is_closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def abandon(self) -> None:
        """Forget the pool without a word to its event loop: in a forked child.

        The child's copy of the loop shares the parent's epoll instance:
        closing these connections through it would unregister the parent's
        sockets there, and the parent would wait forever for its answers.
        Marked closed instead, the sockets are closed as they are collected,
        in the child only, as an httpx pool's are.
        """
        self.is_closed = True
        session, self._session = self._session, None
        if session is not None:
            # aiohttp's own finalizers (and ours) skip a closed connector. No
            # public call marks it closed without closing its connections.
            session.connector._closed = True

    def __del__(self) -> None:
        # A pool dropped unclosed (its event loop ended, or its client was never
        # closed) lets its sockets go, as an httpx pool does, without aiohttp's
        # "Unclosed client session" complaint on stderr: the connector is closed
        # here the way aiohttp's own finalizer closes it (on an ended loop that
        # only marks it closed).
        session = self._session
        if session is not None and not session.closed:
            with contextlib.suppress(Exception):
                session.connector._close()


class StreamedResponse:
    """What ``transport.asend`` reads of an answer: status, headers, raw body chunks."""

    __slots__ = ("_aiohttp", "_response", "headers", "status_code")

    # aiohttp objects are typed Any: the type check does not depend on its stubs.
    def __init__(self, response: Any, aiohttp: Any) -> None:
        self._response = response
        self._aiohttp = aiohttp
        self.status_code: int = response.status
        # aiohttp's own case-insensitive multidict (C), a copy transport.asend may
        # change. Read as httpx reads them instead: a repeated name (httpx joins
        # the values, aiohttp's get() would see the first only) and a value with
        # bytes past ASCII (aiohttp keeps them as lone surrogates, which no
        # terminal or log can print).
        headers = response.headers
        self.headers: MutableMapping[str, str] = (
            headers.copy()
            if all(value.isascii() for value in headers.values())
            and len(headers) == len({name.lower() for name in headers})
            else httpx.Headers(
                [
                    (name, value.encode("utf-8", "surrogateescape"))
                    for name, value in headers.items()
                ]
            )
        )

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk
        except _faults(self._aiohttp) as exc:
            raise _httpx_error(self._aiohttp, exc, reading=True) from exc

    async def aclose(self) -> None:
        self._response.release()


def _faults(aiohttp: Any) -> tuple[type[BaseException], ...]:
    """What aiohttp raises for a fault of the network or the server.

    Anything else (a bug, a test library's interception) passes through, as
    it does through httpcore. asyncio's TimeoutError is the builtin one only
    from Python 3.11 on.
    """
    return (aiohttp.ClientError, OSError, TimeoutError, asyncio.TimeoutError, ValueError)


def _client_timeout(aiohttp: Any, seconds: float) -> Any:
    # total bounds the whole attempt, as transport.asend's cancel scope does on
    # httpx: the wait for a connection, the head, every read of the body.
    return aiohttp.ClientTimeout(total=seconds, sock_connect=seconds, sock_read=seconds)


def _httpx_error(aiohttp: Any, exc: BaseException, *, reading: bool = False) -> Exception:
    """The httpx exception httpcore raises for the fault aiohttp raised ``exc`` for."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):  # the attempt's total
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.ClientResponseError):
        # aiohttp's parser refusing the response (headers too long, bad status line).
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message)
    if isinstance(exc, (aiohttp.ClientError, OSError)):
        return httpx.ReadError(message) if reading else httpx.ConnectError(message)
    if isinstance(exc, ValueError):  # e.g. a header value aiohttp refuses to send
        return httpx.LocalProtocolError(message)
    return httpx.TransportError(message)  # pragma: no cover - every fault is caught above
