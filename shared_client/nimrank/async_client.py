"""``AsyncRankingClient``: ``RankingClient``'s calls from asyncio code.

Everything that is not I/O (options, request building, status-to-error
mapping, retry decisions, the merge) is ``client._BaseClient``'s, shared with
the sync client; this module holds what asyncio needs: a connection pool and
request slots per event loop, tasks for the batches, ``await`` where the sync
client blocks. Its own module so that a program using only the sync client
never imports asyncio or aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from . import _aiohttp, transport
from .client import (
    _ABANDONED,
    _POLL_INTERVAL,
    UNSET,
    ProgressCallback,
    _BaseClient,
    _Call,
    _Failure,
    _Request,
    _Unset,
)
from .options import RankingOptions
from .results import Passage, RankedPassage
from .retry import Outcome

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11 on

    from .options import OptionValues

__all__ = ["AsyncRankingClient", "gather_or_cancel"]

_T = TypeVar("_T")


class AsyncRankingClient(_BaseClient):
    """Rank passages against a query, from asyncio code.

    Takes the same options as ``RankingClient``. Batches are sent as
    concurrent tasks, never more than ``max_concurrency`` in flight across
    every call on the client in one event loop, over one connection pool per
    loop that is kept open until ``aclose()``.

    Example::

        from nimrank import AsyncRankingClient

        async with AsyncRankingClient(base_url="http://localhost:8000/v1") as client:
            ranked = await client.rank("What is the memory bandwidth of H100?", passages)
    """

    def __init__(
        self, options: RankingOptions | None = None, /, **changes: Unpack[OptionValues]
    ) -> None:
        super().__init__(options, **changes)
        if self.options.http_transport == "aiohttp":
            _aiohttp.require_aiohttp()  # a missing aiohttp fails here, not at the first call

    def _reset_io(self) -> None:
        super()._reset_io()
        # In a forked child: the parent's pools, let go without touching its loop.
        for io in getattr(self, "_loops", {}).values():
            if isinstance(io.http, _aiohttp.AiohttpPool):
                io.http.abandon()
        # An httpx connection belongs to the event loop that opened it. Most
        # programs run one loop, so this holds one; a script that calls
        # asyncio.run() twice, or threads with loops of their own, get one each
        # instead of "Event loop is closed".
        self._loops: dict[asyncio.AbstractEventLoop, _LoopIO] = {}
        self._loops_lock = threading.Lock()

    async def rank(
        self,
        query: str,
        passages: Sequence[str | Passage],
        *,
        top_n: int | None = None,
        score_threshold: float | _Unset | None = UNSET,
        progress: ProgressCallback | None = None,
    ) -> list[RankedPassage]:
        """Rank ``passages`` against ``query``, best first (see ``RankingClient.rank``).

        ``progress`` is called on the event loop's thread.
        """
        call = self._prepare(query, passages, top_n, score_threshold, progress)
        if call.top_n == 0:
            return []
        if not call.plan.batches:
            return self._finish(call, [])
        model = self._model or await self._discover_model()
        self._check_model_takes(call, model)
        slots = self._io().slots

        with self._call_span(call, model) as trace:

            async def rank_batch(batch: int) -> list[float]:
                request = self._batch_request(call, model, batch)
                with trace.batch(batch, request.size):
                    async with slots:
                        response = await self._send(request, call)
                    return self._batch_scores(call, request, response)

            batches = range(len(call.plan.batches))
            return self._finish(call, await gather_or_cancel([rank_batch(b) for b in batches]))

    async def list_models(self) -> list[str]:
        """The ids of the ranking models the service offers."""
        request = self._models_request()
        return self._model_ids(request, await self._send(request, None))

    async def _discover_model(self) -> str:
        request = self._models_request()
        ids = self._model_ids(request, await self._send(request, None))
        return self._discovered(request, ids)

    async def _send(self, request: _Request, call: _Call | None) -> transport.Reply:
        attempt = 0
        while True:
            lease = await self._fleet.aacquire() if self._fleet else None
            target = self._target(request, lease)
            http = self._io().http
            failure: _Failure | None = _ABANDONED
            try:
                response = await transport.asend(http, **self._attempt(target))
                deadline = time.monotonic() + self.options.timeout
                while (poll_url := self._polling_url(response)) is not None:
                    if time.monotonic() > deadline:
                        raise self._poll_timeout(target).error
                    await asyncio.sleep(_POLL_INTERVAL)
                    response = await transport.asend(http, **self._attempt(target, poll_url))
                failure = self._failure_for_status(target, response)
            except httpx.HTTPError as exc:
                failure = self._failure_for_exception(target, exc)
            except RuntimeError as exc:
                failure = self._failure_if_closed(target, exc, http.is_closed)
            finally:
                self._give_back(lease, failure)
            if lease and lease.probe and (failure is None or failure.outcome is Outcome.OK):
                continue  # the replica is back: send the request itself, not an attempt
            if failure is None:
                return response
            attempt += 1
            wait = self._retry_wait(target, failure, attempt, call)
            if wait is None:
                raise failure.error
            await asyncio.sleep(wait)

    def _io(self) -> _LoopIO:
        """The connection pool and request slots of the running event loop, made on first use."""
        loop = asyncio.get_running_loop()
        with self._loops_lock:
            io = self._loops.get(loop)
            if io is None:
                # Pools of loops that have ended are dead: their sockets went
                # with the loop, and keeping them would keep the loop alive.
                for ended in [other for other in self._loops if other.is_closed()]:
                    del self._loops[ended]
                io = self._loops[loop] = _LoopIO(self._async_pool(), asyncio.Semaphore(self._slots))
            return io

    def _async_pool(self) -> httpx.AsyncClient | _aiohttp.AiohttpPool:
        options = self._httpx_options()
        if self.options.http_transport == "aiohttp":
            return _aiohttp.AiohttpPool(
                headers=options["headers"], limits=options["limits"], verify=options["verify"]
            )
        return httpx.AsyncClient(**options)

    async def aclose(self) -> None:
        """Close the connection pool of the running event loop (and forget ended ones)."""
        loop = asyncio.get_running_loop()
        with self._loops_lock:
            io = self._loops.pop(loop, None)
            self._loops = {other: v for other, v in self._loops.items() if not other.is_closed()}
        if io is not None:
            await io.http.aclose()

    def discard(self) -> None:
        """Close every pool from outside its loop (an adapter's options changed).

        A pool whose loop still runs is closed on that loop; one whose loop has
        ended lost its sockets with it.
        """
        with self._loops_lock:
            loops, self._loops = self._loops, {}
        for loop, io in loops.items():
            if not loop.is_closed():
                # The loop may close in the meantime: then its sockets are gone too.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_close_soon, io.http)

    async def __aenter__(self) -> AsyncRankingClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


@dataclass(frozen=True)
class _LoopIO:
    """What an async client keeps per event loop."""

    http: httpx.AsyncClient | _aiohttp.AiohttpPool
    #: Bounds requests in flight across every call on this loop.
    slots: asyncio.Semaphore


#: Closes scheduled by ``discard()``, kept until done (the loop holds tasks weakly).
_CLOSING: set[asyncio.Task[None]] = set()


def _close_soon(http: httpx.AsyncClient | _aiohttp.AiohttpPool) -> None:
    task = asyncio.ensure_future(http.aclose())
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


async def gather_or_cancel(coroutines: Iterable[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run ``coroutines`` as tasks; on the first failure cancel the rest and re-raise.

    A failed batch must not leave its siblings running (and retrying) after the
    call is over; ``asyncio.gather`` alone leaves them. The Ray engine's rows use it too.
    """
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    if len(tasks) == 1:
        return [await tasks[0]]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
