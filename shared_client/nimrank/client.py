"""``RankingClient``, and ``_BaseClient``: orchestration of one ranking call.

``_BaseClient`` holds what both clients share: the options, request building,
status-to-error mapping, retry decisions and the merge. The two shells only
send, wait and sleep; they read as the same few lines, one with ``await``
(``AsyncRankingClient`` is in ``async_client.py``, so that a sync program never
imports asyncio or aiohttp). What is not
orchestration lives elsewhere: options in ``options.py``, the plan and merge
in ``planning.py``, wire formats in ``protocols/``, keys and headers in
``keys.py``, URLs in ``endpoints.py``, retry timing in ``retry.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import http
import logging
import os
import queue
import ssl
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import certifi
import httpx

from . import errors, tracing, transport
from ._version import __version__
from .endpoints import (
    Endpoints,
    display_url,
    is_full_endpoint,
    nvcf_status_url,
    resolve_endpoints,
)
from .keys import check_header_values, resolve_api_key
from .options import DEFAULT_OPTIONS, OptionValues, RankingOptions
from .planning import (
    Plan,
    final_ranking,
    plan_batches,
)
from .protocols import (
    PROTOCOLS,
    MalformedResponse,
    WireProtocol,
    decode_json,
    encode_json,
    parse_model_list,
    server_message,
)
from .protocols.nim import is_known_vlm
from .redaction import Secrets, protect_logs, without_quoted_bytes
from .results import Passage, RankedPassage
from .retry import RETRYABLE_STATUSES, Outcome, outcome_for_status
from .validation import check_number, check_passages, check_query, check_top_n

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.11 on

    from .fleet import Lease, ReplicaStats
    from .replicas import Replicas

__all__ = [
    "DEFAULT_MODEL",
    "HOSTED_DEFAULT_MODEL",
    "UNSET",
    "RankingClient",
]

logger = logging.getLogger("nimrank")

#: The model NVIDIA's hosted catalog is asked for when none is named: the one
#: NVIDIA's newest LangChain integration defaults to.
HOSTED_DEFAULT_MODEL = "nvidia/llama-nemotron-rerank-1b-v2"
#: Kept for code that imported it: the hosted default.
DEFAULT_MODEL = HOSTED_DEFAULT_MODEL

#: Where a base URL comes from when none is passed (NIM protocol), in order:
#: NVIDIA's LangChain and LlamaIndex classes read the first, its Haystack one the second.
BASE_URL_VARIABLES = ("NVIDIA_BASE_URL", "NVIDIA_API_URL")

# Pause between polls of a hosted request answered with 202 Accepted.
_POLL_INTERVAL = 0.2

_T = TypeVar("_T")


class _Unset(enum.Enum):
    UNSET = "UNSET"


#: "Use the client's setting" for per-call options where ``None`` means something.
UNSET = _Unset.UNSET


@dataclass(frozen=True)
class _Request:
    """One HTTP request of a call, and how to name it if it fails.

    A batch's name and passages are worked out only when a message needs them:
    a call that succeeds never builds that text.
    """

    method: str
    url: str
    body: dict[str, Any] | None
    #: Which of a replica's ``Endpoints`` URLs it goes to, when a fleet picks the replica.
    endpoint: str = "ranking_url"
    label: str = ""  # a request that is not a batch: "the model list"
    size: int = 0
    plan: Plan | None = None
    batch: int = 0

    @functools.cached_property
    def what(self) -> str:
        """E.g. ``batch 2 of 4 (passages 32-63)``."""
        return self.label if self.plan is None else self.plan.describe_batch(self.batch)

    @functools.cached_property
    def passages(self) -> tuple[int, ...]:
        """Input indices of the passages the batch holds."""
        return () if self.plan is None else tuple(self.plan.passages_in_batch(self.batch))

    @property
    def shown_url(self) -> str:
        """The URL as messages show it: a key in its query string is masked."""
        return display_url(self.url)


class _Failure(NamedTuple):
    """Why an attempt failed, whether to retry it, and what it says of its replica."""

    error: errors.RankingError
    retryable: bool
    retry_after: str | None = None
    #: What the failure says about the replica that answered (for a fleet).
    outcome: Outcome = Outcome.OK


# The request of an attempt that ended in an exception (Ctrl-C, cancellation):
# nothing to judge its replica by.
_ABANDONED = _Failure(errors.RankingError("abandoned"), False, outcome=Outcome.ABANDONED)


#: ``progress(scored, total)``: texts scored so far, of the texts the call sends.
ProgressCallback = Callable[[int, int], None]


class _Call:
    """The state of one ``rank`` call."""

    def __init__(
        self,
        query: str,
        plan: Plan,
        top_n: int | None,
        score_threshold: float | None,
        progress: ProgressCallback | None,
    ) -> None:
        self.query = query
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
        self, options: RankingOptions | None = None, /, **changes: Unpack[OptionValues]
    ) -> None:
        if options is None:
            options = DEFAULT_OPTIONS
        elif not isinstance(options, RankingOptions):
            raise TypeError(f"options must be a nimrank.RankingOptions, got {options!r}")
        #: The options this client was made from (a frozen value).
        self.options = options = options.replace(**changes) if changes else options
        self._wire: WireProtocol = PROTOCOLS[options.protocol]
        base_url = base_url_from_environment(options.base_url, options.protocol)
        urls = (base_url,) if base_url is None or isinstance(base_url, str) else tuple(base_url)
        for url in urls:
            _check_endpoint_protocol(url, options.protocol)
        #: Where requests go: one ``Endpoints`` per replica (one without a fleet).
        self.replicas: tuple[Endpoints, ...] = tuple(
            resolve_endpoints(
                url,
                model=options.model or HOSTED_DEFAULT_MODEL,
                endpoint=self._wire.endpoint,
                full_url_markers=self._wire.full_url_markers,
                hosted_catalog=options.protocol == "nim",
            )
            for url in urls
        )
        if len(self.replicas) > 1 and any(replica.hosted for replica in self.replicas):
            raise ValueError(
                "a list of base URLs is a fleet of self-hosted replicas; NVIDIA's hosted "
                "API balances on its side: pass its URL alone"
            )
        #: The first (or only) replica's endpoints.
        self.endpoints: Endpoints = self.replicas[0]
        # Requests in flight at most: max_concurrency on each replica.
        self._slots = options.max_concurrency * len(self.replicas)
        # A self-hosted service without a model named is asked which it serves,
        # once, at the first call (NVIDIA's own classes do the same).
        self._model: str | None = options.model or (
            HOSTED_DEFAULT_MODEL if self.endpoints.hosted else None
        )
        self.retry_policy = options.effective_retry_policy
        key = self._key = resolve_api_key(options.api_key, options.protocol, self.endpoints)
        headers = {
            "Accept": "application/json",
            "User-Agent": f"nimrank/{__version__}",
            **options.extra_headers,
        }
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._headers = check_header_values(headers)
        # Every secret the client holds, masked in its messages and in the
        # nimrank, httpx and httpcore loggers (which hold it weakly: kept here).
        self._secrets = Secrets.of_client(
            api_key=key,
            base_url=[replica.ranking_url for replica in self.replicas],
            extra_headers=options.extra_headers,
        )
        protect_logs(self._secrets)
        self._reset_io()
        _LIVE_CLIENTS.add(self)

    def _reset_io(self) -> None:
        """Forget every lock, pool and thread: at construction, and in a forked child.

        A child of ``fork()`` must never touch its parent's connections (two
        processes reading one socket get each other's answers), thread pool
        (its threads do not exist there) or locks (one may be held forever).
        """
        self._model_lock = threading.Lock()
        # A fleet's leases and statistics start afresh: the parent's requests in
        # flight are not the child's.
        self._fleet: Replicas | None = None
        if len(self.replicas) > 1:
            from .replicas import Replicas  # only a fleet needs it (and asyncio)

            # Named as messages show them: the statistics are for everyone's eyes.
            urls = [display_url(replica.ranking_url) for replica in self.replicas]
            self._fleet = Replicas(urls, per_replica=self.options.max_concurrency)

    @property
    def model(self) -> str | None:
        """The model the client sends (``None`` until a self-hosted service was asked)."""
        return self._model

    @property
    def timeout(self) -> float:
        """Seconds one request may take."""
        return self.options.timeout

    @property
    def max_retries(self) -> int:
        """Retries per request after the first attempt."""
        return self.retry_policy.max_retries

    def replica_stats(self) -> tuple[ReplicaStats, ...]:
        """Each replica's counters (requests, failures, ejections, latency), in order.

        Empty unless ``base_url`` lists several replicas. A snapshot: plain values.
        """
        return () if self._fleet is None else self._fleet.stats()

    def __reduce__(self) -> Any:
        raise TypeError(
            f"a {type(self).__name__} holds connections and threads and does not pickle: "
            "pickle client.options (a RankingOptions; the API key stays behind) and build a "
            "client from it in the worker"
        )

    def __repr__(self) -> str:
        # The key is never shown, only whether one is set.
        key = "'***'" if "Authorization" in self._headers else "None"
        urls = [display_url(replica.ranking_url) for replica in self.replicas]
        where = f"url={urls[0]!r}" if len(urls) == 1 else f"urls={urls!r}"
        return (
            f"{type(self).__name__}(model={self._model!r}, {where}, "
            f"protocol={self.options.protocol!r}, api_key={key})"
        )

    def _httpx_options(self) -> dict[str, Any]:
        concurrency = self._slots
        return {
            "verify": _default_ssl_context(),
            "headers": self._headers,
            # No pool timeout: a request waiting for a free connection is queued
            # work, not a slow server.
            "timeout": httpx.Timeout(self.options.timeout, pool=None),
            "limits": httpx.Limits(
                max_connections=concurrency, max_keepalive_connections=concurrency
            ),
            # Not followed: httpx drops only Authorization on a cross-origin
            # redirect, so extra_headers (a proxy's token) would travel on. A 3xx
            # is an error naming where the service moved.
            "follow_redirects": False,
        }

    def _redact(self, text: str) -> str:
        """``text`` without any secret: a server that echoes headers must not leak one."""
        return self._secrets.mask(text)

    def _target(self, request: _Request, lease: Lease | None) -> _Request:
        """``request`` as sent on ``lease``: at its replica, or that replica's readiness check."""
        if lease is None:
            return request
        replica = self.replicas[lease.replica]
        if lease.probe:
            return dataclasses.replace(request, method="GET", url=replica.ready_url, body=None)
        return dataclasses.replace(request, url=getattr(replica, request.endpoint))

    def _give_back(self, lease: Lease | None, failure: _Failure | None) -> None:
        """Release ``lease`` with what its attempt said about the replica."""
        if lease is None or self._fleet is None:
            return
        if not lease.probe:
            tracing.record_replica(lease.url)
        outcome = Outcome.OK if failure is None else failure.outcome
        retry_after = None
        if outcome is Outcome.THROTTLED and failure is not None:
            retry_after = self.retry_policy.asked_wait(failure.retry_after)
        self._fleet.release(lease, outcome, retry_after)

    def _attempt(self, request: _Request, url: str | None = None) -> dict[str, Any]:
        """The arguments of ``transport.send`` for one attempt of ``request``."""
        return {
            "method": "GET" if url else request.method,
            "url": url or request.url,
            "content": None if url or request.body is None else encode_json(request.body),
            "timeout": self.options.timeout,
            "max_bytes": self.options.max_response_bytes,
        }

    # -- one rank call ------------------------------------------------------

    def _prepare(
        self,
        query: str,
        passages: Sequence[str | Passage],
        top_n: int | None,
        score_threshold: float | _Unset | None,
        progress: ProgressCallback | None,
    ) -> _Call:
        """Check the arguments and plan the batches: all before any request."""
        check_query(query)
        texts = check_passages(passages, images=self._wire.supports_images)
        top_n = check_top_n(top_n)
        if score_threshold is UNSET:
            score_threshold = self.options.score_threshold
        elif score_threshold is not None:
            check_number("score_threshold", score_threshold)
        if progress is not None and not callable(progress):
            raise TypeError(f"progress must be a callable or None, got {progress!r}")
        plan = plan_batches(texts, self.options.max_batch_size, self.options.passage_options)
        return _Call(query, plan, top_n, score_threshold, progress)

    def _check_model_takes(self, call: _Call, model: str) -> None:
        """Warn once per call when images go to a model not known to read them."""
        if call.plan.text_only or is_known_vlm(model):
            return
        if any(isinstance(p, Passage) and p.image is not None for p in call.plan.passages):
            warnings.warn(
                f"nimrank: image passages sent to {model!r}, which is not known to be a "
                "VLM reranker (e.g. nvidia/llama-nemotron-rerank-vl-1b-v2)",
                UserWarning,
                stacklevel=4,
            )

    def _batch_request(self, call: _Call, model: str, batch: int) -> _Request:
        texts = call.plan.batch_texts(batch)
        return _Request(
            method="POST",
            url=self.endpoints.ranking_url,
            body=self._wire.build_request(
                model=model, query=call.query, passages=texts, truncate=self.options.truncate
            ),
            size=len(texts),
            plan=call.plan,
            batch=batch,
        )

    def _batch_scores(self, call: _Call, request: _Request, reply: transport.Reply) -> list[float]:
        tracing.record_status(reply.status)
        try:
            scores = self._wire.parse_response(decode_json(reply.content), request.size)
        except (MalformedResponse, ValueError) as exc:
            problem = str(exc)
        else:
            call.batch_scored(request.size)
            return scores
        # Raised outside the except block: the body must not ride along on
        # __context__ (it may echo a secret in a spelling not masked yet).
        body = self._redact(reply.content[:400].decode("utf-8", "replace"))[:200]
        raise errors.ResponseFormatError(
            f"Unusable response from {request.shown_url} for {request.what}: "
            f"{self._redact(problem)}. Body starts: {body!r}",
            url=request.shown_url,
            passages=request.passages,
        )

    def _call_span(
        self, call: _Call, model: str
    ) -> contextlib.AbstractContextManager[tracing.CallTrace]:
        """The tracing span of ``call`` (see ``nimrank.tracing``)."""
        return tracing.call_span(
            type(self).__name__,
            model=model,
            protocol=self.options.protocol,
            url=self.endpoints.ranking_url,
            passages=len(call.plan.passages),
            sent=len(call.plan.segments),
            batches=len(call.plan.batches),
        )

    def _finish(self, call: _Call, batch_scores: Sequence[list[float]]) -> list[RankedPassage]:
        segment_scores = [score for scores in batch_scores for score in scores]
        return final_ranking(
            call.plan,
            segment_scores,
            score_transform=self.options.score_transform,
            score_threshold=call.score_threshold,
            top_n=call.top_n,
        )

    # -- models --------------------------------------------------------------

    def _models_request(self) -> _Request:
        return _Request(
            "GET", self.endpoints.models_url, None, endpoint="models_url", label="the model list"
        )

    def _model_ids(self, request: _Request, reply: transport.Reply) -> list[str]:
        try:
            ids = parse_model_list(decode_json(reply.content))
        except MalformedResponse as exc:
            problem = self._redact(str(exc))
        else:
            if self.endpoints.hosted:
                # The hosted catalog lists every kind of model; only rankers serve here.
                ids = [model_id for model_id in ids if "rerank" in model_id]
            return ids
        raise errors.ResponseFormatError(
            f"Unusable model list from {request.shown_url}: {problem}", url=request.shown_url
        )

    def _discovered(self, request: _Request, ids: Sequence[str]) -> str:
        """Take the first model the service lists (once per client), as NVIDIA's classes do."""
        if not ids:
            raise errors.ResponseFormatError(
                f"{request.shown_url} lists no ranking model: pass model=... naming the "
                "model the service runs",
                url=request.shown_url,
            )
        with self._model_lock:
            if self._model is None:
                self._model = ids[0]
                warnings.warn(
                    f"nimrank: no model given; using {ids[0]!r}, the first model "
                    f"{request.shown_url} lists (pass model=... to choose)",
                    UserWarning,
                    stacklevel=4,
                )
            return self._model

    # -- failures and retries ------------------------------------------------

    def _polling_url(self, response: transport.Reply) -> str | None:
        """For a hosted ``202 Accepted``, where to ask for the result.

        Only NVIDIA's hosted catalog defers work this way; polling anything else
        would send the key to NVCF on a stranger's say-so.
        """
        if response.status != 202 or not self.endpoints.hosted:
            return None
        request_id = response.headers.get("NVCF-REQID")
        return nvcf_status_url(request_id) if request_id else None

    def _poll_timeout(self, request: _Request) -> _Failure:
        return _Failure(
            errors.RankingTimeoutError(
                f"{request.shown_url} accepted {request.what} but had no result within "
                f"{self.options.timeout:g}s of polling",
                url=request.shown_url,
                passages=request.passages,
            ),
            retryable=False,
        )

    def _failure_for_status(self, request: _Request, response: transport.Reply) -> _Failure | None:
        status = response.status
        if 200 <= status < 300:
            return None
        text = response.content[:65536].decode("utf-8", "replace")
        message = self._redact(server_message(text))
        if 300 <= status < 400:
            location = response.headers.get("Location", "(no Location header)")
            message = f"redirected to {self._redact(display_url(location))}; use that as base_url"
        error_class, hint = errors.error_for_status(status)
        reason = _reason_phrase(status)
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
        return _Failure(
            error, status in RETRYABLE_STATUSES, retry_after, outcome_for_status(status)
        )

    def _failure_for_exception(self, request: _Request, exc: httpx.HTTPError) -> _Failure:
        if isinstance(exc, transport.ResponseTooLarge):
            return _Failure(
                errors.ResponseFormatError(
                    f"The response from {request.shown_url} for {request.what} is larger than "
                    f"{exc.limit} bytes (max_response_bytes)",
                    url=request.shown_url,
                    passages=request.passages,
                ),
                retryable=False,
            )
        if isinstance(exc, httpx.TimeoutException):
            error: errors.RankingError = errors.RankingTimeoutError(
                f"No answer from {request.shown_url} within {self.options.timeout:g}s for "
                f"{request.what} "
                f"({type(exc).__name__})",
                url=request.shown_url,
                passages=request.passages,
            )
            return _Failure(error, retryable=True, outcome=Outcome.FAILED)
        # Errors of the request itself (a scheme or header httpx cannot send)
        # will not get better by sending it again.
        retryable = isinstance(exc, httpx.TransportError) and not isinstance(
            exc, (httpx.UnsupportedProtocol, httpx.LocalProtocolError)
        )
        error = errors.RankingConnectionError(
            f"Could not get an answer from {request.shown_url} for {request.what}: "
            f"{type(exc).__name__}: {self._redact(without_quoted_bytes(str(exc)))}",
            url=request.shown_url,
            passages=request.passages,
        )
        return _Failure(
            error, retryable=retryable, outcome=Outcome.FAILED if retryable else Outcome.OK
        )

    def _failure_if_closed(self, request: _Request, exc: RuntimeError, closed: bool) -> _Failure:
        """A call that lost a race with ``close()`` fails typed, at once."""
        if not closed:
            raise exc
        error = errors.RankingConnectionError(
            f"The client was closed while sending {request.what} to {request.shown_url}",
            url=request.shown_url,
            passages=request.passages,
        )
        return _Failure(error, retryable=False, outcome=Outcome.ABANDONED)

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
        if self._fleet is not None and failure.outcome is not Outcome.OK:
            # Another replica takes it at once; the fleet holds this one back
            # (ejected, or throttled for its Retry-After) and waits when all are.
            wait = 0.0
        tracing.record_retry(attempt, failure.error, wait)
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
    ``max_concurrency`` at once, across every call on the client) over one
    connection pool that is kept open; no event loop is involved, so it also
    works inside a running one (a notebook, an async server's sync handler).

    Example::

        from nimrank import RankingClient

        with RankingClient(base_url="http://localhost:8000/v1") as client:
            for p in client.rank("What is the memory bandwidth of H100?", passages, top_n=3):
                print(p.index, p.score, p.text)

    Takes a ``RankingOptions`` value, its fields as keyword arguments, or both
    (the keywords change the value); ``AsyncRankingClient`` takes the same.
    """

    def __init__(
        self, options: RankingOptions | None = None, /, **changes: Unpack[OptionValues]
    ) -> None:
        super().__init__(options, **changes)

    def _reset_io(self) -> None:
        super()._reset_io()
        # Both made on first use, and again after close(): a closed client that
        # is used again (an adapter's copy, a notebook cell) reopens.
        self._http: httpx.Client | None = None
        self._workers: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        # Requests in flight per pool: close() never closes a pool another thread
        # is reading from (the socket's number could be reused under that read);
        # the last request on a pool that close() retired closes it.
        self._users: dict[httpx.Client, int] = {}

    def rank(
        self,
        query: str,
        passages: Sequence[str | Passage],
        *,
        top_n: int | None = None,
        score_threshold: float | _Unset | None = UNSET,
        progress: ProgressCallback | None = None,
    ) -> list[RankedPassage]:
        """Rank ``passages`` against ``query``, best first.

        Args:
            query: what the passages are ranked against.
            passages: the texts (or ``Passage`` values with a text and/or an
                image) to rank; identical ones are scored once.
            top_n: return only the best ``top_n`` (``None``: all of them).
            score_threshold: drop passages scoring below it (after the score
                transform); default: the client's ``score_threshold``.
            progress: called as ``progress(scored, total)`` each time a batch
                is scored, counting the distinct texts sent (input passages,
                or their windows with chunking); possibly from a worker thread.

        Returns:
            One ``RankedPassage`` per input passage (before ``top_n`` and the
            threshold), carrying its index in ``passages``. Blank passages are
            not sent and rank last, in input order, with score ``None``.

        Raises:
            RankingError: a subclass saying what failed (see ``nimrank.errors``).
        """
        call = self._prepare(query, passages, top_n, score_threshold, progress)
        if call.top_n == 0:
            return []
        if not call.plan.batches:
            return self._finish(call, [])
        model = self._model or self._discover_model()
        self._check_model_takes(call, model)

        with self._call_span(call, model) as trace:

            def rank_batch(batch: int) -> list[float]:
                request = self._batch_request(call, model, batch)
                with trace.batch(batch, request.size):
                    return self._batch_scores(call, request, self._send(request, call))

            return self._finish(call, self._map_or_cancel(call, rank_batch))

    def list_models(self) -> list[str]:
        """The ids of the ranking models the service offers."""
        request = self._models_request()
        return self._model_ids(request, self._send(request, None))

    def _discover_model(self) -> str:
        request = self._models_request()
        return self._discovered(request, self._model_ids(request, self._send(request, None)))

    def _map_or_cancel(self, call: _Call, rank_batch: Callable[[int], _T]) -> list[_T]:
        """``rank_batch`` over every batch on the worker threads, in batch order.

        The first failure in time is raised (a batch that gave up because
        another failed is not the cause), as ``async_client.gather_or_cancel`` does.
        """
        batches = range(len(call.plan.batches))
        if len(batches) == 1:
            return [_abandon_on_failure(call, rank_batch, 0)]
        futures: list[Future[_T]] = []
        # Done callbacks, not as_completed(): they also fire for a batch that
        # close() cancelled, which as_completed() would wait for forever.
        done: queue.SimpleQueue[Future[_T]] = queue.SimpleQueue()
        try:
            workers = self._executor()
            for batch in batches:
                try:
                    future = workers.submit(_abandon_on_failure, call, rank_batch, batch)
                except RuntimeError:  # "cannot schedule new futures after shutdown"
                    raise _closed_during(call) from None
                future.add_done_callback(done.put)
                futures.append(future)
            for _ in futures:
                future = done.get()
                if future.cancelled():
                    raise _closed_during(call)
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
        return [future.result() for future in futures]

    def _send(self, request: _Request, call: _Call | None) -> transport.Reply:
        attempt = 0
        while True:
            # Late binding: a fleet picks the replica now, when a slot is free.
            lease = self._fleet.acquire() if self._fleet else None
            target = self._target(request, lease)
            http = self._lease()
            failure: _Failure | None = _ABANDONED
            try:
                response = transport.send(http, **self._attempt(target))
                deadline = time.monotonic() + self.options.timeout
                while (poll_url := self._polling_url(response)) is not None:
                    if time.monotonic() > deadline:
                        raise self._poll_timeout(target).error
                    time.sleep(_POLL_INTERVAL)
                    response = transport.send(http, **self._attempt(target, poll_url))
                failure = self._failure_for_status(target, response)
            except httpx.HTTPError as exc:
                failure = self._failure_for_exception(target, exc)
            except RuntimeError as exc:
                failure = self._failure_if_closed(target, exc, http.is_closed)
            finally:
                retired = self._release(http)
                self._give_back(lease, failure)
            if failure is not None and retired:
                # close() ended this request: no retry on a pool opened after it.
                failure = self._failure_if_closed(target, RuntimeError(), closed=True)
            if lease and lease.probe and (failure is None or failure.outcome is Outcome.OK):
                continue  # the replica is back: send the request itself, not an attempt
            if failure is None:
                return response
            attempt += 1
            wait = self._retry_wait(target, failure, attempt, call)
            if wait is None:
                raise failure.error
            time.sleep(wait)

    def _pool(self) -> httpx.Client:
        """The connection pool, made on first use."""
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(**self._httpx_options())
            return self._http

    def _lease(self) -> httpx.Client:
        """The pool, counted as in use until ``_release``."""
        http = self._pool()
        with self._lock:
            self._users[http] = self._users.get(http, 0) + 1
        return http

    def _release(self, http: httpx.Client) -> bool:
        """Count a request on ``http`` as done; whether ``close()`` retired the pool."""
        with self._lock:
            left = self._users[http] = self._users[http] - 1
            retired = http is not self._http
            if left == 0:
                del self._users[http]
        if retired and left == 0:
            http.close()
        return retired

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._workers is None:
                self._workers = ThreadPoolExecutor(
                    max_workers=self._slots, thread_name_prefix="nimrank"
                )
            return self._workers

    def close(self) -> None:
        """Close the connection pool and the worker threads (a later call reopens them).

        Returns at once: batches not yet started are cancelled and requests in
        flight are ended (their call raises ``RankingConnectionError``).
        """
        with self._lock:
            workers, self._workers = self._workers, None
            http, self._http = self._http, None
            in_use = http in self._users
        if workers is not None:
            workers.shutdown(wait=False, cancel_futures=True)
        if http is not None and in_use:
            transport.abort(http)  # the last request to end closes the pool
        elif http is not None:
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


def _closed_during(call: _Call) -> errors.RankingConnectionError:
    return errors.RankingConnectionError(
        "The client was closed during the call: its batches not yet sent were cancelled",
        passages=range(len(call.plan.passages)),
    )


def _abandon_on_failure(call: _Call, rank_batch: Callable[[int], _T], batch: int) -> _T:
    try:
        return rank_batch(batch)
    except BaseException:
        # Whatever the failure (a 401, a malformed body), the other batches stop
        # retrying: the call has failed.
        call.abandoned = True
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


def base_url_from_environment(
    base_url: str | Sequence[str] | None, protocol: str
) -> str | Sequence[str] | None:
    """``base_url``, else (NIM protocol) the first of ``BASE_URL_VARIABLES`` that is set.

    The one rule for the client and every adapter: an explicit base URL wins;
    ``None`` means NVIDIA's hosted catalog only when no variable names another.
    """
    if base_url is not None or protocol != "nim":
        return base_url
    for name in BASE_URL_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


#: Every client alive, so that a forked child can make them forget their I/O.
_LIVE_CLIENTS: weakref.WeakSet[_BaseClient] = weakref.WeakSet()


def _forget_io_after_fork() -> None:
    for client in list(_LIVE_CLIENTS):
        client._reset_io()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forget_io_after_fork)


def _reason_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "error"


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes tens of milliseconds; without sharing it every
    # client (and every adapter that builds one) pays that again.
    return ssl.create_default_context(cafile=certifi.where())
