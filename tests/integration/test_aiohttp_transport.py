"""The aiohttp stack (``AiohttpPool`` under ``transport.asend``): httpx's answers and exceptions.

Each test runs a small scripted HTTP server on 127.0.0.1 and sends through an
``AiohttpPool``, the async client's default stack.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from nimrank import transport
from nimrank._aiohttp import AiohttpPool

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


async def _send(
    url: str, method: str = "GET", content: bytes | None = None, timeout: float = 5.0, **pool: Any
) -> transport.Reply:
    http = AiohttpPool(**pool)
    try:
        return await transport.asend(http, method, url, content, timeout=timeout)
    finally:
        await http.aclose()


async def _answer(writer: asyncio.StreamWriter, body: bytes = b"{}") -> None:
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    writer.close()


def _replying(raw: bytes) -> Handler:
    """A handler that reads one request and answers ``raw``, byte for byte."""

    async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(raw)
        await writer.drain()
        writer.close()

    return reply


async def test_a_json_post_round_trips_with_our_headers() -> None:
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
        reply = await _send(
            url + "/v1/ranking", "POST", b'{"a":[1,2]}', headers={"User-Agent": "nimrank/test"}
        )
    assert reply.status == 201
    assert reply.headers["x-id"] == "7"
    assert json.loads(reply.content) == {"got": {"a": [1, 2]}}
    head = seen["head"].lower()
    assert b"content-type: application/json" in head
    assert b"accept-encoding: gzip, deflate" in head
    assert b"user-agent: nimrank/test" in head  # ours, not aiohttp's
    assert b"aiohttp" not in head
    assert b"post /v1/ranking http/1.1" in head


async def test_credentials_in_the_url_become_basic_auth_as_on_httpx() -> None:
    seen: list[bytes] = []

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await _read_request(reader))[0])
        await _answer(writer)

    async for url in _serve(record):
        with_user = url.replace("http://", "http://us%20er:s3cret@")
        await _send(with_user + "/v1/models", headers={"Authorization": "Bearer other"})
        async with httpx.AsyncClient(headers={"Authorization": "Bearer other"}) as http:
            await http.get(with_user + "/v1/models")
    ours, theirs = (head.lower() for head in seen)
    assert b"authorization: basic dxmgzxi6cznjcmv0\r\n" in ours  # base64 of "us er:s3cret"
    assert b"s3cret" not in ours
    assert b"bearer" not in ours
    assert ours.split(b"\r\n")[0] == theirs.split(b"\r\n")[0] == b"get /v1/models http/1.1"
    assert b"authorization: basic dxmgzxi6cznjcmv0\r\n" in theirs


async def test_the_proxy_of_the_environment_is_used_unless_no_proxy_exempts_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await _read_request(reader))[0])
        await _answer(writer)

    async for proxy_url in _serve(proxy):
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        reply = await _send("http://ranker.invalid:8000/v1/models")
        assert reply.status == 200
        assert seen[0].startswith(b"GET http://ranker.invalid:8000/v1/models HTTP/1.1")
        monkeypatch.setenv("NO_PROXY", "ranker.invalid")
        with pytest.raises(httpx.ConnectError):  # straight to the (unresolvable) host
            await _send("http://ranker.invalid:8000/v1/models")
    assert len(seen) == 1


async def test_a_closed_pool_refuses_to_send() -> None:
    http = AiohttpPool()
    await http.aclose()
    assert http.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        await transport.asend(http, "GET", "http://127.0.0.1:1/", None, timeout=1.0)


async def test_refused_connection_is_httpx_connect_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # type: ignore[arg-type,return-value]
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await _send(f"http://127.0.0.1:{port}/")


async def test_silent_server_is_httpx_read_timeout_within_the_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    async for url in _serve(silent):
        started = time.monotonic()
        with pytest.raises(httpx.ReadTimeout):
            await _send(url, timeout=0.3)
        assert time.monotonic() - started < 2.0


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
    async for url in _serve(_replying(reply)):
        with pytest.raises(httpx.TransportError) as caught:
            await _send(url)  # reads the body too
    assert not isinstance(caught.value, httpx.TimeoutException)


def test_missing_aiohttp_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(ImportError, match="http_transport='httpx'"):
        AiohttpPool()


async def test_a_long_header_httpx_accepts_is_accepted() -> None:
    head = b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 50_000 + b"\r\ncontent-length: 2\r\n\r\n{}"
    async for url in _serve(_replying(head)):
        reply = await _send(url)
    assert reply.content == b"{}"
    assert len(reply.headers["x-big"]) == 50_000


async def test_header_values_past_ascii_read_as_httpx_reads_them() -> None:
    head = b"HTTP/1.1 307 Temporary Redirect\r\nlocation: /caf\xe9\xff\r\ncontent-length: 0\r\n\r\n"

    async for url in _serve(_replying(head)):
        reply = await _send(url)
        async with httpx.AsyncClient() as http:
            theirs = await http.get(url)
    assert reply.headers["Location"] == theirs.headers["Location"]
    reply.headers["Location"].encode("utf-8")  # printable: no lone surrogate
