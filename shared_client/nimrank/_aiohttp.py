"""An aiohttp-backed transport for ``httpx.AsyncClient`` (the ``aiohttp`` extra).

httpx's own async stack (httpcore over anyio) spends more CPU per request than
aiohttp's C-accelerated HTTP parser; with this transport the client keeps its
httpx-shaped API (``httpx.Request``/``httpx.Response``, httpx's exceptions,
timeouts from ``httpx.Timeout``) while aiohttp moves the bytes.

What still applies from ``httpx.AsyncClient(...)`` with this transport:
``timeout`` (connect and read per request; ``pool`` bounds the wait for a free
connection), ``headers``, ``follow_redirects`` (httpx follows, or not: aiohttp
never does on its own), ``event_hooks``, ``base_url``, ``auth``. What does not:
``limits``, ``verify``, ``cert``, ``trust_env``, ``proxy``, ``http2`` (httpx
ignores them once a transport is given): pass them to
:func:`make_async_transport` instead (limits and verify are taken there).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any, Literal

import httpx

__all__ = ["AiohttpTransport", "make_async_transport", "require_aiohttp"]

TransportKind = Literal["httpx", "aiohttp"]

_CHUNK = 64 * 1024
# httpcore accepts a response head of up to 100 KiB; aiohttp's default is 8 KiB
# a line. The same limit on both transports: a server that works with one works
# with the other.
_MAX_HEAD = 100 * 1024


def make_async_transport(
    kind: TransportKind = "httpx",
    *,
    limits: httpx.Limits | None = None,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncBaseTransport:
    """The transport an ``httpx.AsyncClient`` sends through.

    Args:
        kind: ``"httpx"`` (httpcore, the default) or ``"aiohttp"`` (needs the
            ``aiohttp`` extra: ``pip install 'nimrank[aiohttp]'``).
        limits: connection limits (``max_connections``, ``keepalive_expiry``).
        verify: an ``ssl.SSLContext``, or False to skip certificate checks.

    Raises:
        ValueError: an unknown ``kind``.
        ImportError: ``kind="aiohttp"`` without aiohttp installed.
    """
    limits = limits or httpx.Limits()
    if kind == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits, verify=verify)
    if kind == "aiohttp":
        return AiohttpTransport(limits=limits, verify=verify)
    raise ValueError(f"transport must be 'httpx' or 'aiohttp', got {kind!r}")


def require_aiohttp() -> Any:
    """The aiohttp module, or an ImportError naming the extra that installs it.

    A client configured for the aiohttp transport calls this at construction,
    so a missing extra fails there and not at the first request.
    """
    try:
        import aiohttp
    except ImportError:
        raise ImportError(
            "http_transport='aiohttp' needs aiohttp: pip install 'nimrank[aiohttp]'"
        ) from None
    return aiohttp


class _Body(httpx.AsyncByteStream):
    """The response body, read from aiohttp as the caller iterates."""

    # aiohttp objects are typed Any: it is an optional dependency, and the
    # type check must pass without it.
    def __init__(self, response: Any, errors: Any) -> None:
        self._response = response
        self._errors = errors

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk
        except Exception as exc:
            raise self._errors(exc, reading=True) from exc

    async def aclose(self) -> None:
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Sends ``httpx.Request`` objects through one ``aiohttp.ClientSession``.

    The session is made on the first request (aiohttp binds it to the running
    event loop), with at most ``limits.max_connections`` connections. aiohttp
    errors come out as the httpx exceptions httpcore would raise for the same
    fault, so code that catches ``httpx.TimeoutException`` or
    ``httpx.TransportError`` works unchanged.
    """

    def __init__(
        self, *, limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True
    ) -> None:
        self._aiohttp = require_aiohttp()  # fail at construction, not at the first request
        self._limits = limits or httpx.Limits()
        self._verify = verify
        self._session: Any = None

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
            # httpx already set every header (Host, User-Agent, Accept-Encoding).
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            auto_decompress=False,  # httpx decodes by Content-Encoding
            trust_env=False,
            max_line_size=_MAX_HEAD,
            max_field_size=_MAX_HEAD,
        )

    def _map(self, exc: BaseException, *, reading: bool = False) -> Exception:
        aiohttp = self._aiohttp
        message = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return httpx.ConnectTimeout(message)
        if isinstance(exc, aiohttp.SocketTimeoutError):
            return httpx.ReadTimeout(message)
        if isinstance(exc, TimeoutError):  # aiohttp's own timeouts are subclasses, caught above
            return httpx.ReadTimeout(message) if reading else httpx.PoolTimeout(message)
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
        return httpx.TransportError(message)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request``; the body is read lazily through the response stream."""
        aiohttp = self._aiohttp
        if self._session is None:
            self._session = self._new_session()
        timeout = request.extensions.get("timeout", {})
        client_timeout = aiohttp.ClientTimeout(
            total=None,
            connect=timeout.get("pool"),  # aiohttp's "connect" includes the pool wait
            sock_connect=timeout.get("connect"),
            sock_read=timeout.get("read"),
        )
        content = await request.aread()
        try:
            response = await self._session.request(
                request.method,
                str(request.url),
                headers=list(request.headers.multi_items()),
                data=content or None,
                allow_redirects=False,
                timeout=client_timeout,
            )
        except Exception as exc:
            raise self._map(exc) from exc
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),
            stream=_Body(response, self._map),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("ascii", "replace"),
            },
        )

    async def aclose(self) -> None:
        """Close the session and its connections."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
