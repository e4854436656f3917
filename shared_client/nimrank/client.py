"""``RankingClient`` and ``AsyncRankingClient``.

Both share ``_BaseClient``: configuration, validation, request building,
status-to-error mapping, retry decisions and the merge. The two shells only
send, wait and sleep; they read as the same few lines, one with ``await``.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import certifi
import httpx

from . import errors
from ._version import __version__
from .endpoints import (
    Endpoints,
    display_url,
    is_full_endpoint,
    nvcf_status_url,
    resolve_endpoints,
)
from .keys import resolve_api_key
from .planning import (
    PassageOptions,
    Plan,
    describe_passages,
    final_ranking,
    plan_batches,
)
from .protocols import (
    PROTOCOLS,
    MalformedResponse,
    WireProtocol,
    decode_json,
    parse_model_list,
    server_message,
)
from .results import RankedPassage
from .retry import RETRYABLE_STATUSES, RetryPolicy
from .validation import check_int, check_number, check_passages, check_query, check_top_n

__all__ = ["DEFAULT_MODEL", "UNSET", "AsyncRankingClient", "RankingClient"]

logger = logging.getLogger("nimrank")

DEFAULT_MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"

_TRUNCATE_VALUES = (None, "NONE", "END")
_SCORE_TRANSFORMS = ("raw", "sigmoid")
# Pause between polls of a hosted request answered with 202 Accepted.
_POLL_INTERVAL = 0.2
# What h11 accepts as a header value. Anything else fails at send time with an
# error that quotes the whole value (a key read from a file with its newline).
_HEADER_VALUE = re.compile(r"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?", re.ASCII)


class _Unset(enum.Enum):
    UNSET = "UNSET"


#: "Use the client's setting" for per-call options where ``None`` means something.
UNSET = _Unset.UNSET


@dataclass(frozen=True)
class _Request:
    """One HTTP request of a call, with what to say about it if it fails."""

    method: str
    url: str
    body: dict[str, Any] | None
    what: str  # e.g. "batch 2 of 4 (passages 32-63)"
    passages: tuple[int, ...] = ()
    size: int = 0

    @property
    def shown_url(self) -> str:
        """The URL as messages show it: a key in its query string is masked."""
        return display_url(self.url)


@dataclass(frozen=True)
class _Failure:
    error: errors.RankingError
    retryable: bool
    retry_after: str | None = None


#: ``progress(scored, total)``: texts scored so far, of the texts the call sends.
ProgressCallback = Callable[[int, int], None]


class _Call:
    """The state of one ``rank`` call."""

    def __init__(
        self,
        plan: Plan,
        top_n: int | None,
        score_threshold: float | None,
        progress: ProgressCallback | None,
    ) -> None:
        self.plan = plan
        self.top_n = top_n
        self.score_threshold = score_threshold
        # Set once a batch has failed for good: the others stop retrying.
        self.abandoned = False
        self._progress = progress
        self._scored = 0
        # The sync client's batches finish on worker threads.
        self._lock = threading.Lock()

    def batch_scored(self, size: int) -> None:
        """Count a batch of ``size`` texts as scored and tell the progress callback."""
        if self._progress is None:
            return
        with self._lock:
            self._scored += size
            scored = self._scored
        self._progress(scored, len(self.plan.segments))


class _BaseClient:
    """Configuration and everything that is not I/O, shared by both clients."""

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        base_url: str | None = None,
        api_key: str | None = None,
        protocol: str = "nim",
        truncate: str | None = None,
        max_batch_size: int = 32,
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int | None = None,
        extra_headers: Mapping[str, str] | None = None,
        max_passage_chars: int | None = None,
        chunking: bool = False,
        chunk_overlap_chars: int | None = None,
        max_chunks_per_doc: int | None = None,
        score_transform: str = "raw",
        score_threshold: float | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {sorted(PROTOCOLS)}, got {protocol!r}")
        wire = PROTOCOLS[protocol]
        if truncate not in _TRUNCATE_VALUES:
            raise ValueError(f"truncate must be 'NONE', 'END' or None, got {truncate!r}")
        if truncate is not None and protocol != "nim":
            raise ValueError(
                "truncate is NIM's server-side switch; for the cohere protocol "
                "use max_passage_chars (and chunking) instead"
            )
        check_int("max_batch_size", max_batch_size, minimum=1, maximum=wire.max_batch_size)
        check_int("max_concurrency", max_concurrency, minimum=1)
        check_number("timeout", timeout, positive=True)
        if max_retries is not None:
            check_int("max_retries", max_retries, minimum=0)
        if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
            raise TypeError(f"retry_policy must be a nimrank.RetryPolicy, got {retry_policy!r}")
        if score_transform not in _SCORE_TRANSFORMS:
            raise ValueError(f"score_transform must be 'raw' or 'sigmoid', got {score_transform!r}")
        if score_threshold is not None:
            check_number("score_threshold", score_threshold)
        self._passage_options = PassageOptions.checked(
            max_passage_chars, chunking, chunk_overlap_chars, max_chunks_per_doc
        )
        if base_url is None and protocol != "nim":
            raise ValueError(
                "the cohere protocol needs a base_url, e.g. 'https://api.jina.ai/v1' for Jina "
                "or 'http://localhost:4000' for a LiteLLM proxy"
            )
        self.model = model
        self.protocol = protocol
        self.truncate = truncate
        self.max_batch_size = max_batch_size
        self.max_concurrency = max_concurrency
        self.timeout = float(timeout)
        self.score_transform = score_transform
        self.score_threshold = score_threshold
        # max_retries, when given, wins; otherwise the policy's own count (3 by default).
        self.retry_policy = retry_policy or RetryPolicy()
        if max_retries is not None:
            self.retry_policy = self.retry_policy.with_retries(max_retries)
        self._wire: WireProtocol = wire
        _check_endpoint_protocol(base_url, protocol)
        self.endpoints: Endpoints = resolve_endpoints(
            base_url,
            model=model,
            endpoint=wire.endpoint,
            full_url_markers=wire.full_url_markers,
            hosted_catalog=protocol == "nim",
        )
        self.base_url = base_url
        key = self._key = resolve_api_key(api_key, protocol, self.endpoints)
        self._headers = {
            "Accept": "application/json",
            "User-Agent": f"nimrank/{__version__}",
            **dict(extra_headers or {}),
        }
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        _check_header_values(self._headers)

    @property
    def max_retries(self) -> int:
        """Retries per request after the first attempt."""
        return self.retry_policy.max_retries

    @property
    def passage_options(self) -> PassageOptions:
        """The client-side truncation and chunking settings."""
        return self._passage_options

    def __repr__(self) -> str:
        # The key is never shown, only whether one is set.
        key = "'***'" if "Authorization" in self._headers else "None"
        url = display_url(self.endpoints.ranking_url)
        return (
            f"{type(self).__name__}(model={self.model!r}, url={url!r}, "
            f"protocol={self.protocol!r}, api_key={key})"
        )

    def _httpx_options(self) -> dict[str, Any]:
        return {
            "verify": _default_ssl_context(),
            "headers": self._headers,
            # No pool timeout: a request waiting for a free connection is queued
            # work, not a slow server.
            "timeout": httpx.Timeout(self.timeout, pool=None),
            "limits": httpx.Limits(
                max_connections=self.max_concurrency,
                max_keepalive_connections=self.max_concurrency,
            ),
            # Not followed: httpx drops only Authorization on a cross-origin
            # redirect, so extra_headers (a proxy's token) would travel on. A 3xx
            # is an error naming where the service moved.
            "follow_redirects": False,
        }

    def _redact(self, text: str) -> str:
        """``text`` without the key: a server that echoes headers must not leak it."""
        return text.replace(self._key, "***") if self._key else text

    # -- one rank call ------------------------------------------------------

    def _prepare(
        self,
        query: str,
        passages: Sequence[str],
        top_n: int | None,
        score_threshold: float | _Unset | None,
        progress: ProgressCallback | None,
    ) -> _Call:
        check_query(query)
        texts = check_passages(passages, images=self._wire.supports_images)
        top_n = check_top_n(top_n)
        if score_threshold is UNSET:
            score_threshold = self.score_threshold
        elif score_threshold is not None:
            check_number("score_threshold", score_threshold)
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be a callable or None, got {progress!r}")
        plan = plan_batches(texts, self.max_batch_size, self._passage_options)
        return _Call(plan, top_n, score_threshold, progress)

    def _batch_request(self, call: _Call, query: str, batch: int) -> _Request:
        plan = call.plan
        texts = plan.batch_texts(batch)
        held = plan.passages_in_batch(batch)
        return _Request(
            method="POST",
            url=self.endpoints.ranking_url,
            body=self._wire.build_request(
                model=self.model, query=query, passages=texts, truncate=self.truncate
            ),
            what=f"batch {batch + 1} of {len(plan.batches)} ({describe_passages(held)})",
            passages=tuple(held),
            size=len(texts),
        )

    def _batch_scores(
        self, call: _Call, request: _Request, response: httpx.Response
    ) -> list[float]:
        try:
            scores = self._wire.parse_response(decode_json(response.content), request.size)
        except (MalformedResponse, ValueError) as exc:
            raise errors.ResponseFormatError(
                f"Unusable response from {request.shown_url} for {request.what}: {exc}. "
                f"Body starts: {self._redact(response.text)[:200]!r}",
                url=request.shown_url,
                passages=request.passages,
            ) from None
        call.batch_scored(request.size)
        return scores

    def _finish(self, call: _Call, batch_scores: Sequence[list[float]]) -> list[RankedPassage]:
        segment_scores = [score for scores in batch_scores for score in scores]
        return final_ranking(
            call.plan,
            segment_scores,
            score_transform=self.score_transform,
            score_threshold=call.score_threshold,
            top_n=call.top_n,
        )

    # -- models --------------------------------------------------------------

    def _models_request(self) -> _Request:
        return _Request("GET", self.endpoints.models_url, None, what="the model list")

    def _model_ids(self, request: _Request, response: httpx.Response) -> list[str]:
        try:
            ids = parse_model_list(decode_json(response.content))
        except MalformedResponse as exc:
            raise errors.ResponseFormatError(
                f"Unusable model list from {request.shown_url}: {exc}", url=request.shown_url
            ) from None
        if self.endpoints.hosted:
            # The hosted catalog lists every kind of model; only rankers serve here.
            ids = [model_id for model_id in ids if "rerank" in model_id]
        return ids

    # -- failures and retries ------------------------------------------------

    def _polling_url(self, response: httpx.Response) -> str | None:
        """For a hosted ``202 Accepted``, where to ask for the result.

        Only NVIDIA's hosted catalog defers work this way; polling anything else
        would send the key to NVCF on a stranger's say-so.
        """
        if response.status_code != 202 or not self.endpoints.hosted:
            return None
        request_id = response.headers.get("NVCF-REQID")
        return nvcf_status_url(request_id) if request_id else None

    def _poll_timeout(self, request: _Request) -> _Failure:
        return _Failure(
            errors.RankingTimeoutError(
                f"{request.shown_url} accepted {request.what} but had no result within "
                f"{self.timeout:g}s of polling",
                url=request.shown_url,
                passages=request.passages,
            ),
            retryable=False,
        )

    def _failure_for_status(self, request: _Request, response: httpx.Response) -> _Failure | None:
        status = response.status_code
        if 200 <= status < 300:
            return None
        message = server_message(self._redact(response.text))
        if 300 <= status < 400:
            moved_to = display_url(response.headers.get("Location", "(no Location header)"))
            message = f"redirected to {moved_to}; use that as base_url"
        error_class, hint = errors.error_for_status(status)
        reason = response.reason_phrase or "error"
        error = error_class(
            f"HTTP {status} {reason} from {request.shown_url} for {request.what}: {message}{hint}",
            status_code=status,
            server_message=message,
            url=request.shown_url,
            passages=request.passages,
        )
        retry_after = response.headers.get("Retry-After")
        if retry_after is None and "retry-after-ms" in response.headers:
            retry_after = "ms:" + response.headers["retry-after-ms"]
        return _Failure(error, status in RETRYABLE_STATUSES, retry_after)

    def _failure_for_exception(self, request: _Request, exc: httpx.HTTPError) -> _Failure:
        if isinstance(exc, httpx.TimeoutException):
            error: errors.RankingError = errors.RankingTimeoutError(
                f"No answer from {request.shown_url} within {self.timeout:g}s for {request.what} "
                f"({type(exc).__name__})",
                url=request.shown_url,
                passages=request.passages,
            )
            return _Failure(error, retryable=True)
        # Errors of the request itself (a scheme or header httpx cannot send)
        # will not get better by sending it again.
        retryable = isinstance(exc, httpx.TransportError) and not isinstance(
            exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
        )
        error = errors.RankingConnectionError(
            f"Could not get an answer from {request.shown_url} for {request.what}: "
            f"{type(exc).__name__}: {self._redact(str(exc))}",
            url=request.shown_url,
            passages=request.passages,
        )
        return _Failure(error, retryable=retryable)

    def _retry_wait(
        self, request: _Request, failure: _Failure, attempt: int, call: _Call | None
    ) -> float | None:
        """Seconds to wait before retry ``attempt``, or None to give up."""
        policy = self.retry_policy
        if not failure.retryable or attempt > policy.max_retries or (call and call.abandoned):
            if failure.retryable and attempt > 1:
                failure.error.args = (f"{failure.error.args[0]} (after {attempt - 1} retries)",)
            if call is not None:
                call.abandoned = True
            return None
        wait = policy.delay(attempt, failure.retry_after)
        logger.info(
            "nimrank: %s; retrying %s in %.2fs (retry %d of %d)",
            failure.error,
            request.what,
            wait,
            attempt,
            policy.max_retries,
        )
        return wait


class RankingClient(_BaseClient):
    """Rank passages against a query, from synchronous code.

    Batches go out concurrently on a thread pool (never more than
    ``max_concurrency`` at once) over one connection pool that is kept open;
    no event loop is involved, so it also works inside a running one
    (a notebook, an async server's sync handler).

    Example::

        from nimrank import RankingClient

        with RankingClient(base_url="http://localhost:8000/v1") as client:
            for p in client.rank("What is the memory bandwidth of H100?", passages, top_n=3):
                print(p.index, p.score, p.text)

    See ``README.md`` for every option; ``AsyncRankingClient`` takes the same ones.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # Both made on first use, and again after close(): a closed client that
        # is used again (an adapter's copy, a notebook cell) reopens, as the
        # async client does.
        self._http: httpx.Client | None = None
        self._workers: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def rank(
        self,
        query: str,
        passages: Sequence[str],
        *,
        top_n: int | None = None,
        score_threshold: float | _Unset | None = UNSET,
        progress: ProgressCallback | None = None,
    ) -> list[RankedPassage]:
        """Rank ``passages`` against ``query``, best first.

        Args:
            query: what the passages are ranked against.
            passages: the texts to rank; identical texts are scored once.
            top_n: return only the best ``top_n`` (``None``: all of them).
            score_threshold: drop passages scoring below it (after the score
                transform); default: the client's ``score_threshold``.
            progress: called as ``progress(scored, total)`` each time a batch
                is scored, counting the distinct texts sent (input passages,
                or their windows with chunking); possibly from a worker thread.

        Returns:
            One ``RankedPassage`` per input passage (before ``top_n`` and the
            threshold), carrying its index in ``passages``. Blank passages are
            not sent and rank last with score ``None``.

        Raises:
            RankingError: a subclass saying what failed (see ``nimrank.errors``).
        """
        call = self._prepare(query, passages, top_n, score_threshold, progress)
        if call.top_n == 0:
            return []
        batches = range(len(call.plan.batches))

        def rank_batch(batch: int) -> list[float]:
            request = self._batch_request(call, query, batch)
            try:
                return self._batch_scores(call, request, self._send(request, call))
            except BaseException:
                # Whatever the failure (a 401, a malformed body), the other
                # batches stop retrying: the call has failed.
                call.abandoned = True
                raise

        if len(batches) <= 1:
            results = [rank_batch(batch) for batch in batches]
        else:
            futures: list[Future[list[float]]] = []
            try:
                futures.extend(self._executor().submit(rank_batch, batch) for batch in batches)
                # Raise the first failure in time, as the async client does: a batch
                # that gave up because another failed is not the cause.
                for future in as_completed(futures):
                    error = future.exception()
                    if error is not None:
                        raise error
            except BaseException:
                # A failed batch, or Ctrl-C (or any signal-raised exception) while
                # waiting: the batches not started yet must not run on the shared
                # pool after the call is over, nor the running ones retry.
                call.abandoned = True
                for other in futures:
                    other.cancel()
                raise
            results = [future.result() for future in futures]
        return self._finish(call, results)

    def list_models(self) -> list[str]:
        """The ids of the ranking models the service offers."""
        request = self._models_request()
        return self._model_ids(request, self._send(request, None))

    def _send(self, request: _Request, call: _Call | None) -> httpx.Response:
        attempt = 0
        while True:
            try:
                http = self._pool()
                response = http.request(request.method, request.url, json=request.body)
                deadline = time.monotonic() + self.timeout
                while (poll_url := self._polling_url(response)) is not None:
                    if time.monotonic() > deadline:
                        raise self._poll_timeout(request).error
                    time.sleep(_POLL_INTERVAL)
                    response = http.get(poll_url)
                failure = self._failure_for_status(request, response)
            except httpx.HTTPError as exc:
                failure = self._failure_for_exception(request, exc)
            if failure is None:
                return response
            attempt += 1
            wait = self._retry_wait(request, failure, attempt, call)
            if wait is None:
                raise failure.error
            time.sleep(wait)

    def _pool(self) -> httpx.Client:
        """The connection pool, made on first use."""
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(**self._httpx_options())
            return self._http

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(
                    max_workers=self.max_concurrency, thread_name_prefix="nimrank"
                )
            return self._workers

    def close(self) -> None:
        """Close the connection pool and the worker threads (a later call reopens them)."""
        with self._lock:
            workers, self._workers = self._workers, None
            http, self._http = self._http, None
        if workers is not None:
            workers.shutdown(wait=True)
        if http is not None:
            http.close()

    def __enter__(self) -> RankingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncRankingClient(_BaseClient):
    """Rank passages against a query, from asyncio code.

    Takes the same options as ``RankingClient``. Batches are sent as
    concurrent tasks, never more than ``max_concurrency`` in flight, over one
    connection pool that is kept open until ``aclose()``.

    Example::

        from nimrank import AsyncRankingClient

        async with AsyncRankingClient(base_url="http://localhost:8000/v1") as client:
            ranked = await client.rank("What is the memory bandwidth of H100?", passages)
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # An httpx connection belongs to the event loop that opened it. Most
        # programs run one loop, so this holds one pool; a script that calls
        # asyncio.run() twice, or threads with loops of their own, get one each
        # instead of "Event loop is closed".
        self._pools: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._pools_lock = threading.Lock()

    async def rank(
        self,
        query: str,
        passages: Sequence[str],
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
        in_flight = asyncio.Semaphore(self.max_concurrency)

        async def rank_batch(batch: int) -> list[float]:
            request = self._batch_request(call, query, batch)
            async with in_flight:
                response = await self._send(request, call)
            return self._batch_scores(call, request, response)

        batches = range(len(call.plan.batches))
        if len(batches) <= 1:
            results = [await rank_batch(batch) for batch in batches]
        else:
            results = await _gather_or_cancel([rank_batch(batch) for batch in batches])
        return self._finish(call, results)

    async def list_models(self) -> list[str]:
        """The ids of the ranking models the service offers."""
        request = self._models_request()
        return self._model_ids(request, await self._send(request, None))

    async def _send(self, request: _Request, call: _Call | None) -> httpx.Response:
        attempt = 0
        while True:
            try:
                http = self._pool()
                response = await http.request(request.method, request.url, json=request.body)
                deadline = time.monotonic() + self.timeout
                while (poll_url := self._polling_url(response)) is not None:
                    if time.monotonic() > deadline:
                        raise self._poll_timeout(request).error
                    await asyncio.sleep(_POLL_INTERVAL)
                    response = await http.get(poll_url)
                failure = self._failure_for_status(request, response)
            except httpx.HTTPError as exc:
                failure = self._failure_for_exception(request, exc)
            if failure is None:
                return response
            attempt += 1
            wait = self._retry_wait(request, failure, attempt, call)
            if wait is None:
                raise failure.error
            await asyncio.sleep(wait)

    def _pool(self) -> httpx.AsyncClient:
        """The connection pool of the running event loop, made on first use."""
        loop = asyncio.get_running_loop()
        with self._pools_lock:
            pool = self._pools.get(loop)
            if pool is None:
                # Pools of loops that have ended are dead: their sockets went
                # with the loop, and keeping them would keep the loop alive.
                for ended in [other for other in self._pools if other.is_closed()]:
                    del self._pools[ended]
                pool = self._pools[loop] = httpx.AsyncClient(**self._httpx_options())
            return pool

    async def aclose(self) -> None:
        """Close the connection pool of the running event loop (and forget ended ones)."""
        loop = asyncio.get_running_loop()
        with self._pools_lock:
            pool = self._pools.pop(loop, None)
            self._pools = {other: p for other, p in self._pools.items() if not other.is_closed()}
        if pool is not None:
            await pool.aclose()

    async def __aenter__(self) -> AsyncRankingClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def _gather_or_cancel(coroutines: list[Any]) -> list[Any]:
    """Run ``coroutines`` as tasks; on the first failure cancel the rest and re-raise."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


# -- helpers -------------------------------------------------------------------


def _check_endpoint_protocol(base_url: str | None, protocol: str) -> None:
    """Refuse a full endpoint URL of the other protocol (it would become a 404 path)."""
    if not isinstance(base_url, str) or is_full_endpoint(
        base_url, PROTOCOLS[protocol].full_url_markers
    ):
        return
    for name, other in PROTOCOLS.items():
        if name != protocol and is_full_endpoint(base_url, other.full_url_markers):
            raise ValueError(
                f"base_url {base_url!r} is a {name} endpoint (.../{other.endpoint}) but "
                f"protocol is {protocol!r}: pass protocol={name!r}, or a base URL such "
                "as 'http://host:8000/v1'"
            )


def _check_header_values(headers: Mapping[str, str]) -> None:
    """Refuse, before any request, a header value the HTTP layer would refuse.

    httpx's refusal quotes the value, key and all, into the error and the retry
    log; this message names the header and never shows the value.
    """
    for name, value in headers.items():
        if isinstance(value, str) and _HEADER_VALUE.fullmatch(value) is None:
            what = "the API key" if name == "Authorization" else f"extra_headers[{name!r}]"
            raise ValueError(
                f"{what} has leading or trailing whitespace, a line break or a NUL "
                "(a newline read from a file?): strip it"
            )


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds; without sharing it every
    # client (and every adapter that builds one) pays that again.
    return ssl.create_default_context(cafile=certifi.where())
