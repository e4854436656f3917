"""The async client's two HTTP stacks against the same misbehaving servers: the same outcome.

Each case was found by running the aiohttp stack (the default) against what
httpx's stack already handled; each runs on both.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from typing import Any

import pytest

from hostile.hostileserver import (
    Connection,
    HostileServer,
    echo_headers,
    ok_body,
    respond,
    response_bytes,
)
from nimrank import AsyncRankingClient, RankedPassage, RankingError, RetryPolicy
from nimrank.options import HttpTransport

KEY = "nvapi-Stacks/Key-0123456789abcdef"
STACKS: list[HttpTransport] = ["aiohttp", "httpx"]


def rank(stack: HttpTransport, url: str, calls: int = 1, **options: Any) -> list[RankedPassage]:
    """``calls`` calls of one async client on ``stack``; the last call's ranking."""

    async def run() -> list[RankedPassage]:
        async with AsyncRankingClient(
            base_url=url, model="m", api_key=KEY, timeout=5, http_transport=stack, **options
        ) as client:
            ranked: list[RankedPassage] = []
            for _ in range(calls):
                ranked = await client.rank("gpu", ["gpu memory"])
            return ranked

    return asyncio.run(run())


def failure(stack: HttpTransport, url: str, **options: Any) -> RankingError:
    with pytest.raises(RankingError) as caught:
        rank(stack, url, max_retries=0, **options)
    return caught.value


def sends(raw: bytes) -> Callable[[Connection], None]:
    def script(conn: Connection) -> None:
        conn.send(raw)

    return script


# A line the parser refuses, echoing the key 20 characters past its first 100
# bytes' start: a parser that quotes the line cut would show most of the key.
_PAD = b"p" * (100 - len("X-Echo: Bearer ") - 20)
REFUSED_LINES = {
    "a header line past 100 KiB": response_bytes(
        200, ok_body(1), {"X-Echo": "Bearer " + (_PAD + KEY.encode()).decode() + "v" * 110_000}
    ),
    "a status line past 100 KiB": b"HTTP/1.1 200 "
    + _PAD
    + KEY.encode()
    + b"v" * 110_000
    + b"\r\nContent-Length: 0\r\n\r\n",
    "a header name with a control byte": b"HTTP/1.1 200 OK\r\nX"
    + _PAD
    + KEY.encode()[:20]
    + b"\x01"
    + KEY.encode()[20:]
    + b": v\r\nContent-Length: 0\r\n\r\n",
}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("raw", REFUSED_LINES.values(), ids=REFUSED_LINES.keys())
def test_a_key_echoed_where_the_parser_quotes_bytes_is_never_shown_even_cut(
    stack: HttpTransport, raw: bytes
) -> None:
    with HostileServer(sends(raw)) as server:
        try:
            rank(stack, server.url, max_retries=0)
        except RankingError as error:
            shown = str(error)
        else:
            return  # accepted (httpx takes long header lines): nothing shown
    assert KEY[:12] not in shown, shown


@pytest.mark.parametrize("stack", STACKS)
def test_a_connection_the_server_closes_after_answering_costs_a_retry_not_a_call(
    stack: HttpTransport,
) -> None:
    # The answer says keep-alive, then the server closes at once: calls back to
    # back may take that connection as it goes (on both stacks: the close can
    # still be in flight). The retry sends on a new connection; every call ranks.
    keep_alive = respond(200, ok_body(1), {"Connection": "keep-alive"})
    with HostileServer(keep_alive) as server:
        ranked = rank(stack, server.url, calls=40, retry_policy=RetryPolicy(initial_delay=0))
    assert [p.index for p in ranked] == [0]
    assert len(server.requests) < 60


@pytest.mark.parametrize("stack", STACKS)
def test_cookies_from_a_server_at_an_ip_address_are_sent_back(stack: HttpTransport) -> None:
    # A load balancer's sticky-session cookie (AWS ALB's, say), set by 127.0.0.1.
    sticky = respond(200, ok_body(1), {"Set-Cookie": "AWSALB=pod-3; Path=/"})
    with HostileServer(sticky) as server:
        rank(stack, server.url, calls=2)
        second = server.requests[1].decode("latin-1").lower()
    assert "cookie: awsalb=pod-3" in second


@pytest.mark.parametrize("stack", STACKS)
def test_repeated_header_names_are_read_as_httpx_reads_them(stack: HttpTransport) -> None:
    # httpx joins repeated values: "gzip, identity" is not an encoding asked for.
    raw = response_bytes(200, ok_body(1)).replace(
        b"\r\n\r\n", b"\r\nContent-Encoding: identity\r\nContent-Encoding: gzip\r\n\r\n", 1
    )
    with HostileServer(sends(raw)) as server:
        error = failure(stack, server.url)
    assert "Content-Encoding 'identity, gzip', which was not asked for" in str(error)


@pytest.mark.parametrize("stack", STACKS)
def test_no_proxy_naming_host_and_port_sends_straight_to_it(
    stack: HttpTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    with HostileServer(respond(200, ok_body(1))) as server:
        host_port = server.url.removeprefix("http://").removesuffix("/v1")
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setenv("NO_PROXY", host_port)
        ranked = rank(stack, server.url, max_retries=0)
    assert [p.index for p in ranked] == [0]


@pytest.mark.parametrize("stack", STACKS)
def test_basic_credentials_from_the_url_are_masked_when_the_server_echoes_them(
    stack: HttpTransport,
) -> None:
    token = base64.b64encode(b"reader:pw-Stacks-9876").decode()
    with HostileServer(echo_headers(400, escape=lambda value: value)) as server:
        url = server.url.replace("http://", "http://reader:pw-Stacks-9876@")
        error = failure(stack, url)
    assert "Basic ***" in str(error)
    assert token not in str(error)
