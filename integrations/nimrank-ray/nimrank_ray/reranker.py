"""The Ray Data actor that reranks rows, and ``rerank_dataset`` that runs a pool of them.

Facts of Ray Data (2.60) this module is built on:

* A callable class in ``map_batches`` runs on actors
  (``compute=ray.data.ActorPoolStrategy(size=n)`` or ``(min_size, max_size)``;
  the old ``concurrency=`` argument is deprecated). Its constructor runs once
  per actor, so each actor owns one ``nimrank.AsyncRankingClient`` and its
  kept-alive connections.
* An ``async def __call__`` runs on an event loop thread of the actor's own,
  with up to ``RAY_DATA_DEFAULT_ASYNC_BATCH_UDF_MAX_CONCURRENCY`` (default 4)
  batches at once per actor. Inside a batch the rows are ranked concurrently,
  never more than ``rows_in_flight`` per actor across those batches.
* Ray does not retry an exception raised by application code: it fails the
  job. The client already retries what is worth retrying, so ``on_error="raise"``
  fails the job on a row that still fails, and ``on_error="record"`` writes the
  error into the row (scores and ranking null) and goes on.

Options cross to the actors as plain data (keyword arguments of the client);
the API key never does: each worker reads it from its own environment.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

import nimrank
from nimrank.async_client import gather_or_cancel
from nimrank.validation import check_int, check_number, check_top_n

if TYPE_CHECKING:
    import ray.data

__all__ = ["Reranker", "rerank_dataset"]

OnError = Literal["raise", "record"]

_ROW_ERRORS = (nimrank.RankingError, ValueError, TypeError)
"""What ``on_error="record"`` records: a service's typed errors and a row's bad
data (a null query, a passage that is not a string). Anything else is a bug
and fails the job."""

_SCORES_TYPE = pa.list_(pa.float64())
_RANKING_TYPE = pa.list_(pa.int64())


def _check_layout(columns: Mapping[str, str], top_n: Any, on_error: Any) -> None:
    for name, value in columns.items():
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name} must be a non-empty column name, got {value!r}")
    if len(set(columns.values())) != len(columns):
        raise ValueError(f"column names must be distinct, got {dict(columns)}")
    check_top_n(top_n)
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")


def _check_client_options(options: Mapping[str, Any]) -> dict[str, Any]:
    if "api_key" in options:
        raise ValueError(
            "api_key is not sent to Ray workers (it would be pickled into every task): "
            "set NVIDIA_API_KEY (or the protocol's key variable) in the workers' environment"
        )
    return dict(options)


class Reranker:
    """A Ray Data actor: adds each row's passage scores and ranking to a batch.

    Use it with ``batch_format="pyarrow"`` on an actor pool; ``rerank_dataset``
    does exactly that. Output columns that already exist are replaced.

    Example::

        ds.map_batches(
            Reranker,
            fn_constructor_kwargs={"client_options": {"base_url": url}, "top_n": 10},
            batch_format="pyarrow",
            batch_size=64,
            compute=ray.data.ActorPoolStrategy(size=2),
            num_cpus=0.25,
        )

    Args:
        client_options: keyword arguments of ``nimrank.AsyncRankingClient``
            (plain data; never ``api_key``: the worker's environment has it).
        query_column: the column holding each row's query.
        passages_column: the column holding each row's list of passages.
        scores_column: gets every passage's score, in input order.
        ranking_column: gets the passages' indices, best first, cut to ``top_n``.
        top_n: how many indices the ranking keeps (None: all).
        on_error: ``"raise"`` fails the job on the first row that fails;
            ``"record"`` writes ``"<ErrorType>: <message>"`` into
            ``error_column`` and nulls into the scores and the ranking.
        error_column: the error column, with ``on_error="record"`` (null when
            the row was ranked).
        rows_in_flight: rows this actor ranks at once, across its batches.
    """

    def __init__(
        self,
        client_options: Mapping[str, Any] | None = None,
        *,
        query_column: str = "query",
        passages_column: str = "passages",
        scores_column: str = "scores",
        ranking_column: str = "ranking",
        top_n: int | None = None,
        on_error: OnError = "raise",
        error_column: str = "error",
        rows_in_flight: int = 8,
    ) -> None:
        columns = {
            "query_column": query_column,
            "passages_column": passages_column,
            "scores_column": scores_column,
            "ranking_column": ranking_column,
            "error_column": error_column,
        }
        _check_layout(columns, top_n, on_error)
        check_int("rows_in_flight", rows_in_flight, minimum=1)
        self._client = nimrank.AsyncRankingClient(**_check_client_options(client_options or {}))
        self.query_column = query_column
        self.passages_column = passages_column
        self.scores_column = scores_column
        self.ranking_column = ranking_column
        self.top_n = top_n
        self.on_error: OnError = on_error
        self.error_column = error_column
        self.rows_in_flight = rows_in_flight
        # asyncio primitives belong to one loop: Ray gives the actor one, but
        # a user calling the class directly may use several.
        self._slots: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def __repr__(self) -> str:
        return f"Reranker(client={self._client!r}, top_n={self.top_n}, on_error={self.on_error!r})"

    async def __call__(self, batch: pa.Table) -> pa.Table:
        """The batch with the scores and ranking columns (and the error column) added."""
        queries = batch.column(self.query_column).to_pylist()
        passages = batch.column(self.passages_column).to_pylist()
        rows = await gather_or_cancel(
            [self._rank_row(query, texts) for query, texts in zip(queries, passages, strict=True)]
        )
        added: dict[str, pa.Array] = {
            self.scores_column: pa.array([row[0] for row in rows], type=_SCORES_TYPE),
            self.ranking_column: pa.array([row[1] for row in rows], type=_RANKING_TYPE),
        }
        if self.on_error == "record":
            added[self.error_column] = pa.array([row[2] for row in rows], type=pa.string())
        table = batch.drop_columns([name for name in added if name in batch.column_names])
        for name, values in added.items():
            table = table.append_column(name, values)
        return table

    async def _rank_row(
        self, query: Any, passages: Any
    ) -> tuple[list[float | None] | None, list[int] | None, str | None]:
        loop = asyncio.get_running_loop()
        slots = self._slots.get(loop)
        if slots is None:
            slots = self._slots[loop] = asyncio.Semaphore(self.rows_in_flight)
        try:
            async with slots:
                # score_threshold=None: every passage gets its score, whatever
                # the client's threshold; the ranking is cut by top_n only.
                ranked = await self._client.rank(query, passages, score_threshold=None)
        except _ROW_ERRORS as exc:
            if self.on_error == "raise":
                raise
            return None, None, f"{type(exc).__name__}: {exc}"
        scores: list[float | None] = [None] * len(passages)  # the client scores every one
        for passage in ranked:
            scores[passage.index] = passage.score
        ranking = [passage.index for passage in ranked]
        return scores, ranking[: self.top_n] if self.top_n is not None else ranking, None


def rerank_dataset(
    ds: ray.data.Dataset,
    *,
    query_column: str = "query",
    passages_column: str = "passages",
    scores_column: str = "scores",
    ranking_column: str = "ranking",
    top_n: int | None = None,
    workers: int | tuple[int, int] = 1,
    rows_per_batch: int = 64,
    cpus_per_worker: float = 0.25,
    rows_in_flight: int = 8,
    on_error: OnError = "raise",
    error_column: str = "error",
    **client_options: Any,
) -> ray.data.Dataset:
    """``ds`` with each row's passage scores and ranking, computed on an actor pool.

    Lazy, as Ray Datasets are: nothing is sent until the result is consumed.

    Example::

        ranked = rerank_dataset(ds, base_url="http://nim:8000/v1", workers=(1, 4), top_n=10)

    Args:
        ds: rows with a query column and a list-of-passages column.
        query_column, passages_column, scores_column, ranking_column, top_n,
            on_error, error_column, rows_in_flight: as for :class:`Reranker`.
        workers: actors in the pool: a number, or ``(min, max)`` to autoscale.
        rows_per_batch: rows Ray hands an actor at once.
        cpus_per_worker: CPUs each actor reserves (fractional: it waits on I/O).
        **client_options: keyword arguments of ``nimrank.AsyncRankingClient``
            (``base_url``, ``model``, ``max_concurrency``, ...), never ``api_key``.

    Raises:
        ValueError, TypeError: for a bad argument, before any row is ranked.
    """
    import ray.data  # deferred: importing Ray is slow, and only this needs it

    _check_layout(
        {
            "query_column": query_column,
            "passages_column": passages_column,
            "scores_column": scores_column,
            "ranking_column": ranking_column,
            "error_column": error_column,
        },
        top_n,
        on_error,
    )
    options = _check_client_options(client_options)
    # A typo in an option fails here, not in every actor; a missing key does
    # not: the workers' environment may have the key the driver lacks.
    with contextlib.suppress(nimrank.MissingAPIKeyError):
        nimrank.AsyncRankingClient(**options)
    if isinstance(workers, tuple):
        if len(workers) != 2:
            raise ValueError(f"workers must be a number or (min, max), got {workers!r}")
        low = check_int("workers[0]", workers[0], minimum=1)
        high = check_int("workers[1]", workers[1], minimum=low)
        compute = ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    else:
        compute = ray.data.ActorPoolStrategy(size=check_int("workers", workers, minimum=1))
    check_int("rows_per_batch", rows_per_batch, minimum=1)
    check_int("rows_in_flight", rows_in_flight, minimum=1)
    if check_number("cpus_per_worker", cpus_per_worker) < 0:
        raise ValueError(f"cpus_per_worker must be >= 0, got {cpus_per_worker}")
    return ds.map_batches(
        Reranker,
        fn_constructor_kwargs={
            "client_options": options,
            "query_column": query_column,
            "passages_column": passages_column,
            "scores_column": scores_column,
            "ranking_column": ranking_column,
            "top_n": top_n,
            "on_error": on_error,
            "error_column": error_column,
            "rows_in_flight": rows_in_flight,
        },
        batch_format="pyarrow",
        batch_size=rows_per_batch,
        compute=compute,
        num_cpus=cpus_per_worker,
    )
