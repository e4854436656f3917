"""The clients the benchmark times, each sending the same batches.

Every contender splits the passages into consecutive slices of ``batch``
texts, keeps at most ``in_flight`` requests in flight, and returns the input
indices best first: the raw ones with no client logic around the HTTP calls,
the nimrank ones through the public ``rank``. ``rank`` is what is timed;
construction and the first connection happen in the warm-up.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from fakenim import MODEL

from nimrank import AsyncRankingClient, RankingClient

__all__ = ["Contender", "build", "have_aiohttp", "have_httpx_aiohttp"]


class Session(Protocol):
    def rank(self, query: str, texts: Sequence[str]) -> list[int]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Contender:
    """A client as it appears in the tables.

    Attributes:
        name: its row label.
        transport: what moves the bytes ("httpx", "httpx sync", "aiohttp").
        ours: a nimrank client (its overhead is measured against the raw row
            of the same ``transport``).
        session: the connected client.
    """

    name: str
    transport: str
    ours: bool
    session: Session


def have_aiohttp() -> bool:
    """Whether aiohttp is importable (the aiohttp rows need it)."""
    return importlib.util.find_spec("aiohttp") is not None


def have_httpx_aiohttp() -> bool:
    """Whether the ``httpx-aiohttp`` package is importable."""
    return importlib.util.find_spec("httpx_aiohttp") is not None


def _bodies(query: str, texts: Sequence[str], size: int) -> list[tuple[int, dict[str, Any]]]:
    return [
        (
            start,
            {
                "model": MODEL,
                "query": {"text": query},
                "passages": [{"text": text} for text in texts[start : start + size]],
            },
        )
        for start in range(0, len(texts), size)
    ]


def _order(pairs: list[tuple[int, float]]) -> list[int]:
    pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return [index for index, _ in pairs]


def _collect(pairs: list[tuple[int, float]], offset: int, body: Any) -> None:
    for item in body["rankings"]:
        pairs.append((offset + item["index"], item["logit"]))


class RawHttpxSync:
    """``httpx.Client``; batches on a thread pool of ``in_flight`` workers."""

    def __init__(self, url: str, batch: int, in_flight: int) -> None:
        self._url = f"{url}/ranking"
        self._batch = batch
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        self._http = httpx.Client(timeout=60.0, limits=limits)
        self._pool = ThreadPoolExecutor(max_workers=in_flight)

    def _send(self, body: dict[str, Any]) -> Any:
        response = self._http.post(self._url, json=body)
        response.raise_for_status()
        return response.json()

    def rank(self, query: str, texts: Sequence[str]) -> list[int]:
        bodies = _bodies(query, texts, self._batch)
        pairs: list[tuple[int, float]] = []
        if len(bodies) == 1:
            _collect(pairs, 0, self._send(bodies[0][1]))
        else:
            answers = self._pool.map(self._send, [body for _, body in bodies])
            for (offset, _), answer in zip(bodies, answers, strict=True):
                _collect(pairs, offset, answer)
        return _order(pairs)

    def close(self) -> None:
        self._pool.shutdown()
        self._http.close()


class _Loop:
    """Runs coroutines on the benchmark's one event loop (it outlives the runs)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)


class RawHttpxAsync(_Loop):
    """``httpx.AsyncClient`` (httpcore, or the given transport); ``in_flight`` tasks."""

    def __init__(
        self,
        url: str,
        batch: int,
        in_flight: int,
        loop: asyncio.AbstractEventLoop,
        transport: Callable[[httpx.Limits], httpx.AsyncBaseTransport] | None = None,
        orjson: bool = False,
    ) -> None:
        super().__init__(loop)
        self._url = f"{url}/ranking"
        self._batch = batch
        self._in_flight = in_flight
        # orjson for both bodies, in place of the json module httpx uses.
        self._orjson = importlib.import_module("orjson") if orjson else None
        limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        options: dict[str, Any] = {"timeout": 60.0, "limits": limits}
        if transport is not None:
            options["transport"] = transport(limits)
        self._http = httpx.AsyncClient(**options)

    async def _send(self, gate: asyncio.Semaphore, body: dict[str, Any]) -> Any:
        codec = self._orjson
        async with gate:
            if codec is None:
                response = await self._http.post(self._url, json=body)
            else:
                headers = {"Content-Type": "application/json"}
                response = await self._http.post(
                    self._url, content=codec.dumps(body), headers=headers
                )
        response.raise_for_status()
        return response.json() if codec is None else codec.loads(response.content)

    async def _rank(self, query: str, texts: Sequence[str]) -> list[int]:
        bodies = _bodies(query, texts, self._batch)
        pairs: list[tuple[int, float]] = []
        gate = asyncio.Semaphore(self._in_flight)
        answers = await asyncio.gather(*(self._send(gate, body) for _, body in bodies))
        for (offset, _), answer in zip(bodies, answers, strict=True):
            _collect(pairs, offset, answer)
        return _order(pairs)

    def rank(self, query: str, texts: Sequence[str]) -> list[int]:
        order: list[int] = self.run(self._rank(query, texts))
        return order

    def close(self) -> None:
        self.run(self._http.aclose())


class RawAiohttp(_Loop):
    """``aiohttp.ClientSession`` with ``in_flight`` connections; ``in_flight`` tasks."""

    def __init__(
        self, url: str, batch: int, in_flight: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(loop)
        aiohttp = importlib.import_module("aiohttp")  # optional: typed Any

        self._url = f"{url}/ranking"
        self._batch = batch
        self._in_flight = in_flight

        async def session() -> Any:
            connector = aiohttp.TCPConnector(limit=in_flight)
            return aiohttp.ClientSession(connector=connector)

        self._http = self.run(session())

    async def _send(self, gate: asyncio.Semaphore, body: dict[str, Any]) -> Any:
        async with gate, self._http.post(self._url, json=body) as response:
            response.raise_for_status()
            return await response.json()

    async def _rank(self, query: str, texts: Sequence[str]) -> list[int]:
        bodies = _bodies(query, texts, self._batch)
        pairs: list[tuple[int, float]] = []
        gate = asyncio.Semaphore(self._in_flight)
        answers = await asyncio.gather(*(self._send(gate, body) for _, body in bodies))
        for (offset, _), answer in zip(bodies, answers, strict=True):
            _collect(pairs, offset, answer)
        return _order(pairs)

    def rank(self, query: str, texts: Sequence[str]) -> list[int]:
        order: list[int] = self.run(self._rank(query, texts))
        return order

    def close(self) -> None:
        self.run(self._http.close())


def _ours_transport(kind: str) -> Callable[[httpx.Limits], httpx.AsyncBaseTransport]:
    """The ``httpx-aiohttp`` package's transport for httpx (the only one this makes)."""
    if kind != "httpx-aiohttp":
        raise ValueError(f"no transport {kind!r}")
    package = importlib.import_module("httpx_aiohttp")  # optional: typed Any
    return lambda limits: package.AiohttpTransport(limits=limits)


class OursSync:
    """``nimrank.RankingClient.rank``."""

    def __init__(self, url: str, batch: int, in_flight: int) -> None:
        self._client = RankingClient(
            base_url=url, model=MODEL, max_batch_size=batch, max_concurrency=in_flight
        )

    def rank(self, query: str, texts: Sequence[str]) -> list[int]:
        return [passage.index for passage in self._client.rank(query, texts)]

    def close(self) -> None:
        self._client.close()


def _async_client(transport: str) -> type[AsyncRankingClient]:
    """``AsyncRankingClient``, or for the ``httpx-aiohttp`` package (no option of
    ours selects it) a subclass whose pool sends through that package's transport.
    """
    if transport in ("httpx", "aiohttp"):
        return AsyncRankingClient
    make = _ours_transport(transport)

    class WithTransport(AsyncRankingClient):
        def _httpx_options(self) -> dict[str, Any]:
            options: dict[str, Any] = super()._httpx_options()
            options["transport"] = make(options["limits"])
            return options

    return WithTransport


class OursAsync(_Loop):
    """``nimrank.AsyncRankingClient.rank`` (on the given transport)."""

    def __init__(
        self,
        url: str,
        batch: int,
        in_flight: int,
        loop: asyncio.AbstractEventLoop,
        transport: str,
    ) -> None:
        super().__init__(loop)
        self._client = _async_client(transport)(
            base_url=url,
            model=MODEL,
            max_batch_size=batch,
            max_concurrency=in_flight,
            http_transport="aiohttp" if transport == "aiohttp" else "httpx",
        )

    async def _rank(self, query: str, texts: Sequence[str]) -> list[int]:
        return [passage.index for passage in await self._client.rank(query, texts)]

    def rank(self, query: str, texts: Sequence[str]) -> list[int]:
        order: list[int] = self.run(self._rank(query, texts))
        return order

    def close(self) -> None:
        self.run(self._client.aclose())


RAW_HTTPX_ASYNC = "raw httpx async"
RAW_HTTPX_SYNC = "raw httpx sync (threads)"
RAW_AIOHTTP = "raw aiohttp"
RAW_HTTPX_AIOHTTP_PKG = "raw httpx async, httpx-aiohttp transport"
RAW_HTTPX_ORJSON = "raw httpx async, orjson bodies"
OURS_SYNC = "nimrank sync"
OURS_ASYNC = "nimrank async, http_transport='httpx'"
OURS_ASYNC_AIOHTTP = "nimrank async (default: aiohttp)"
OURS_ASYNC_AIOHTTP_PKG = "nimrank async, httpx-aiohttp transport"


def build(
    url: str,
    loop: asyncio.AbstractEventLoop,
    batch: int,
    in_flight: int,
    names: Sequence[str] | None = None,
) -> list[Contender]:
    """Every contender that can run here (aiohttp rows need aiohttp), or just ``names``."""
    makers: list[tuple[str, str, bool, Callable[[], Session]]] = [
        (RAW_HTTPX_SYNC, "httpx sync", False, lambda: RawHttpxSync(url, batch, in_flight)),
        (RAW_HTTPX_ASYNC, "httpx", False, lambda: RawHttpxAsync(url, batch, in_flight, loop)),
        (OURS_SYNC, "httpx sync", True, lambda: OursSync(url, batch, in_flight)),
        (OURS_ASYNC, "httpx", True, lambda: OursAsync(url, batch, in_flight, loop, "httpx")),
    ]
    if have_aiohttp():
        makers += [
            (RAW_AIOHTTP, "aiohttp", False, lambda: RawAiohttp(url, batch, in_flight, loop)),
            (
                OURS_ASYNC_AIOHTTP,
                "aiohttp",
                True,
                lambda: OursAsync(url, batch, in_flight, loop, "aiohttp"),
            ),
        ]
    if have_httpx_aiohttp():
        package = _ours_transport("httpx-aiohttp")
        makers += [
            (
                RAW_HTTPX_AIOHTTP_PKG,
                "httpx-aiohttp transport",
                False,
                lambda: RawHttpxAsync(url, batch, in_flight, loop, package),
            ),
            (
                OURS_ASYNC_AIOHTTP_PKG,
                "httpx-aiohttp transport",
                True,
                lambda: OursAsync(url, batch, in_flight, loop, "httpx-aiohttp"),
            ),
        ]
    if importlib.util.find_spec("orjson") is not None:
        # What nimrank would gain from orjson: the same raw rows with its codec.
        makers.append(
            (
                RAW_HTTPX_ORJSON,
                "httpx + orjson",
                False,
                lambda: RawHttpxAsync(url, batch, in_flight, loop, orjson=True),
            )
        )
    return [
        Contender(name, transport, ours, make())
        for name, transport, ours, make in makers
        if names is None or name in names
    ]
