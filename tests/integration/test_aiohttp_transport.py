"""The aiohttp transport for httpx: same answers and same exceptions as httpx's own.

Each test runs a small scripted HTTP server on 127.0.0.1 and sends through an
``httpx.AsyncClient`` on ``make_async_transport("aiohttp")``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from nimrank._aiohttp import make_async_transport

pytest.importorskip("aiohttp")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


async def _serve(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


def _client(timeout: float = 5.0) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=make_async_transport("aiohttp"), timeout=timeout)


async def test_a_json_post_round_trips_with_httpx_headers() -> None:
    seen: dict[str, bytes] = {}

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen["head"], seen["body"] = await _read_request(reader)
        body = json.dumps({"got": json.loads(seen["body"])}).encode()
        writer.write(
            b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nx-id: 7\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        await writer.drain()
        writer.close()

    async for url in _serve(echo):
        async with _client() as http:
            response = await http.post(url + "/v1/ranking", json={"a": [1, 2]})
    assert response.status_code == 201
    assert response.reason_phrase == "Created"
    assert response.headers["x-id"] == "7"
    assert response.json() == {"got": {"a": [1, 2]}}
    head = seen["head"].lower()
    assert b"content-type: application/json" in head
    assert b"user-agent: python-httpx/" in head  # httpx's headers, not aiohttp's
    assert b"post /v1/ranking http/1.1" in head


async def test_refused_connection_is_httpx_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # type: ignore[arg-type,return-value]
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with _client() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://127.0.0.1:{port}/")


async def test_silent_server_is_httpx_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async for url in _serve(silent):
        async with _client(timeout=0.2) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(url)


@pytest.mark.parametrize(
    "reply",
    [
        b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"short',  # body cut off
        b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 200_000 + b"\r\n\r\n",  # > 100 KiB, as httpx
        b"",  # closed before any answer
    ],
    ids=["truncated-body", "huge-header", "no-answer"],
)
async def test_broken_answers_are_httpx_transport_errors(reply: bytes) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(reply)
        await writer.drain()
        writer.close()

    async for url in _serve(broken):
        async with _client() as http:
            with pytest.raises(httpx.TransportError) as caught:
                await http.get(url)  # reads the body too
    assert not isinstance(caught.value, httpx.TimeoutException)


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="'httpx' or 'aiohttp'"):
        make_async_transport("curl")  # type: ignore[arg-type]


def test_missing_aiohttp_says_which_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(ImportError, match=r"nimrank\[aiohttp\]"):
        make_async_transport("aiohttp")


async def test_a_long_header_httpx_accepts_is_accepted() -> None:
    async def long_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 50_000 + b"\r\ncontent-length: 2\r\n\r\n{}"
        )
        await writer.drain()
        writer.close()

    async for url in _serve(long_header):
        async with _client() as http:
            response = await http.get(url)
    assert response.json() == {}
    assert len(response.headers["x-big"]) == 50_000
