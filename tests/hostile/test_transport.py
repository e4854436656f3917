"""transport.send / asend against the hostile server: time and size bounds (issue 11, 6 and 7)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import tracemalloc

import httpx
import pytest

from hostile.hostileserver import (
    HostileServer,
    bomb,
    chunked_forever,
    gzip_of,
    huge_body,
    measure,
    ok_body,
    respond,
    slow,
    trickle,
    trickle_headers,
)
from nimrank import transport
from nimrank._aiohttp import AiohttpPool
from nimrank.options import HttpTransport
from nimrank.transport import DEFAULT_MAX_RESPONSE_BYTES, Reply, ResponseTooLarge

# Generous against a shared 2-core machine, tight against "36-54 s".
SLACK = 1.5


def sync_send(url: str, *, timeout: float = 2.0, max_bytes: int = 1 << 20) -> Reply:
    with httpx.Client() as http:
        return transport.send(http, "POST", url, b"{}", timeout=timeout, max_bytes=max_bytes)


async def async_send(
    url: str, *, timeout: float = 2.0, max_bytes: int = 1 << 20, kind: HttpTransport = "httpx"
) -> Reply:
    http = httpx.AsyncClient() if kind == "httpx" else AiohttpPool()
    try:
        return await transport.asend(http, "POST", url, b"{}", timeout=timeout, max_bytes=max_bytes)
    finally:
        await http.aclose()


#: The async client's two HTTP stacks (http_transport): every bound holds on both.
ASYNC_TRANSPORTS = [
    "httpx",
    pytest.param(
        "aiohttp",
        marks=pytest.mark.skipif(
            importlib.util.find_spec("aiohttp") is None, reason="aiohttp is not installed"
        ),
    ),
]


def test_a_good_answer_comes_back_whole() -> None:
    with HostileServer(respond(200, ok_body(3), {"X-Extra": "yes"})) as server:
        reply = sync_send(server.url + "/ranking")
    assert reply.status == 200
    assert reply.headers["X-Extra"] == "yes"
    assert json.loads(reply.content)["rankings"][2]["index"] == 2


@pytest.mark.parametrize("kind", ASYNC_TRANSPORTS)
async def test_a_good_answer_comes_back_whole_async(kind: HttpTransport) -> None:
    with HostileServer(respond(200, ok_body(3))) as server:
        reply = await async_send(server.url + "/ranking", kind=kind)
    assert json.loads(reply.content) == json.loads(ok_body(3))


def test_a_gzip_answer_is_decoded_and_only_gzip_and_deflate_are_asked_for() -> None:
    with HostileServer(respond(200, gzip_of(ok_body(2)), {"Content-Encoding": "gzip"})) as server:
        reply = sync_send(server.url)
        sent = server.requests[0].decode("latin-1").lower()
    assert json.loads(reply.content) == json.loads(ok_body(2))
    assert "accept-encoding: gzip, deflate\r\n" in sent


@pytest.mark.parametrize(
    "script",
    [
        trickle(ok_body(1), interval=0.9),
        pytest.param(trickle(b"", interval=0.9, forever=True), marks=pytest.mark.hostile),
    ],
    ids=["trickled-body", "endless-trickle"],
)
def test_a_trickled_body_fails_within_the_timeout(script: object) -> None:
    with HostileServer(script) as server:  # type: ignore[arg-type]
        elapsed, error = measure(lambda: sync_send(server.url, timeout=2.0))
    assert isinstance(error, httpx.TimeoutException), error
    assert 1.8 <= elapsed <= 2.0 + SLACK, elapsed


@pytest.mark.hostile
def test_trickled_headers_fail_within_the_timeout() -> None:
    with HostileServer(trickle_headers(ok_body(1), interval=0.9)) as server:
        elapsed, error = measure(lambda: sync_send(server.url, timeout=2.0))
    assert isinstance(error, httpx.TimeoutException), error
    assert 1.8 <= elapsed <= 2.0 + SLACK, elapsed


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(trickle(ok_body(1), interval=0.9), marks=pytest.mark.hostile),
        trickle_headers(ok_body(1), interval=0.9),
    ],
    ids=["trickled-body", "trickled-headers"],
)
@pytest.mark.parametrize("kind", ASYNC_TRANSPORTS)
async def test_a_trickle_fails_within_the_timeout_async(
    script: object, kind: HttpTransport
) -> None:
    with HostileServer(script) as server:  # type: ignore[arg-type]
        started = _now()
        with pytest.raises(httpx.TimeoutException):
            await async_send(server.url, timeout=2.0, kind=kind)
        elapsed = _now() - started
    assert 1.8 <= elapsed <= 2.0 + SLACK, elapsed


def test_a_silent_server_fails_within_the_timeout() -> None:
    with HostileServer(slow(30, respond(200, ok_body(1)))) as server:
        elapsed, error = measure(lambda: sync_send(server.url, timeout=1.0))
    assert isinstance(error, httpx.TimeoutException), error
    assert elapsed <= 1.0 + SLACK


@pytest.mark.hostile
def test_the_bound_holds_on_a_reused_connection() -> None:
    # The deadline wrapper sits under the pool: a kept-alive connection made by
    # an earlier attempt is bounded too.
    keep = {"Connection": "keep-alive"}

    def first_then_trickle(conn: object) -> None:
        from hostile.hostileserver import Connection, response_bytes

        assert isinstance(conn, Connection)
        conn.send(response_bytes(200, ok_body(1), keep))
        # The same connection's second request is answered a byte at a time.
        conn.sock.recv(65536)
        trickle_headers(ok_body(1), interval=0.9)(conn)

    with HostileServer(first_then_trickle) as server, httpx.Client() as http:
        transport.send(http, "POST", server.url, b"{}", timeout=2.0, max_bytes=1 << 20)
        elapsed, error = measure(
            lambda: transport.send(http, "POST", server.url, b"{}", timeout=2.0, max_bytes=1 << 20)
        )
    assert isinstance(error, httpx.TimeoutException), error
    assert elapsed <= 2.0 + SLACK


def test_a_declared_length_over_the_cap_is_refused_before_reading() -> None:
    with HostileServer(huge_body(2 << 30)) as server:
        elapsed, error = measure(lambda: sync_send(server.url, max_bytes=1 << 20))
    assert isinstance(error, ResponseTooLarge), error
    assert error.limit == 1 << 20
    assert elapsed < 1.0


def measure_send(kind: str, url: str) -> tuple[float, BaseException | None]:
    """``measure`` of one send with a 1 MiB cap: sync, or async on transport ``kind``."""
    if kind == "sync":
        return measure(lambda: sync_send(url, max_bytes=1 << 20))
    stack: HttpTransport = "aiohttp" if kind == "aiohttp" else "httpx"
    return measure(lambda: asyncio.run(async_send(url, max_bytes=1 << 20, kind=stack)))


@pytest.mark.parametrize("kind", ["sync", *ASYNC_TRANSPORTS])
def test_an_endless_chunked_body_ends_at_the_cap(kind: str) -> None:
    with HostileServer(chunked_forever()) as server:
        elapsed, error = measure_send(kind, server.url)
    assert isinstance(error, ResponseTooLarge), error
    assert elapsed < 1.5


@pytest.mark.parametrize("kind", ["sync", *ASYNC_TRANSPORTS])
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compression_bomb_ends_at_the_cap_with_little_memory(encoding: str, kind: str) -> None:
    with HostileServer(bomb(encoding)) as server:
        tracemalloc.start()
        try:
            elapsed, error = measure_send(kind, server.url)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert isinstance(error, ResponseTooLarge), error
    assert elapsed < 1.5
    assert peak < 16 << 20, peak  # 64 MiB inflated; a few MiB held at most


def test_an_encoding_not_asked_for_is_refused() -> None:
    # zstd: 196 KiB can inflate to gigabytes in one call, and its bindings have
    # no output bound, so it is never advertised and never decoded.
    with HostileServer(bomb("zstd")) as server:
        elapsed, error = measure(lambda: sync_send(server.url))
    assert isinstance(error, httpx.DecodingError), error
    assert "zstd" in str(error)
    assert elapsed < 1.5


def test_the_default_cap_is_a_few_mib() -> None:
    assert 1 << 20 <= DEFAULT_MAX_RESPONSE_BYTES <= 16 << 20


def test_too_large_is_not_a_transport_error_so_it_is_not_retried() -> None:
    assert not issubclass(ResponseTooLarge, httpx.TransportError)
    assert issubclass(ResponseTooLarge, httpx.HTTPError)


def test_the_read_bound_reaches_the_pool_of_httpx() -> None:
    # transport.py reaches through two private httpx/httpcore attributes; if a
    # release renames them this fails here, not silently in production.
    with httpx.Client() as http:
        transport._bound_reads(http)
        backend = http._transport._pool._network_backend  # type: ignore[attr-defined]
    assert isinstance(backend, transport._BoundedBackend)


def _now() -> float:
    import time

    return time.monotonic()


@pytest.mark.parametrize("timeout", [float("inf"), 1e10, 1e300])
def test_an_absurd_timeout_is_taken_as_the_longest_not_an_overflow(timeout: float) -> None:
    with HostileServer(respond(200, ok_body(1))) as server:
        assert sync_send(server.url, timeout=timeout).status == 200


def test_the_reply_headers_do_not_describe_the_raw_body() -> None:
    # content is decoded: a Content-Encoding left in would have it decoded twice.
    with HostileServer(respond(200, gzip_of(ok_body(2)), {"Content-Encoding": "gzip"})) as server:
        reply = sync_send(server.url)
    assert "Content-Encoding" not in reply.headers
    assert "Content-Length" not in reply.headers
    assert reply.headers["Content-Type"] == "application/json"
