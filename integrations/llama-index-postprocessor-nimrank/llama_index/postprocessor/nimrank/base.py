"""``NIMRerank``: a LlamaIndex node postprocessor backed by the nimrank clients.

Mapping only: nodes become texts, the shared client ranks them (batching,
concurrency, retries and errors all live there), and the ranking becomes new
``NodeWithScore`` objects. No HTTP code here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from llama_index.core.bridge.pydantic import (
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
)
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from nimrank import (
    DEFAULT_MODEL,
    AsyncRankingClient,
    RankedPassage,
    RankingClient,
    RankingError,
    RetryPolicy,
)
from nimrank.validation import check_number, check_query, check_top_n

__all__ = ["NIMRerank"]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

#: The metadata key that holds the retriever's score with ``keep_retrieval_score=True``.
RETRIEVAL_SCORE_KEY = "retrieval_score"

_ON_ERROR = ("raise", "passthrough")


class NIMRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with an NVIDIA NIM (or Cohere/Jina-style) ranking service.

    A drop-in for ``llama_index.postprocessor.nvidia_rerank.NVIDIARerank``: the
    same ``model``, ``api_key`` / ``nvidia_api_key``, ``base_url``, ``top_n``,
    ``truncate`` and ``max_batch_size``, plus concurrency, retries, timeouts,
    the Cohere protocol, client-side truncation/chunking, score options and a
    failure policy. ``postprocess_nodes`` uses ``nimrank.RankingClient``;
    ``apostprocess_nodes`` awaits ``nimrank.AsyncRankingClient`` (no thread pool).
    Both clients are created, and every option validated, in the constructor.

    Example::

        from llama_index.postprocessor.nimrank import NIMRerank

        reranker = NIMRerank(base_url="http://localhost:8000/v1", top_n=3)
        engine = index.as_query_engine(similarity_top_k=40, node_postprocessors=[reranker])

    Args:
        model: the ranking model (default ``nvidia/llama-3.2-nv-rerankqa-1b-v2``).
        nvidia_api_key: alias of ``api_key``, as in ``NVIDIARerank``.
        api_key: the key; else ``NVIDIA_API_KEY`` / ``NVIDIA_NIM_API_KEY`` (nim)
            or the host's own variable (cohere). Needed only by hosted services.
            Kept out of ``repr``, ``dict()``, ``model_dump()`` and logs.
        base_url: ``None`` for NVIDIA's hosted catalog, ``http://host:8000/v1``
            for a self-hosted NIM, or a full endpoint URL used as given.
        top_n: how many nodes to return (``None``: all of them, ranked).
        truncate: NIM's server-side truncation, ``"NONE"`` or ``"END"``.
        max_batch_size: passages per request (NIM accepts at most 512).
        max_concurrency: requests in flight at once for one query.
        timeout: seconds to wait for one response.
        max_retries: retries of a failed request (429, 5xx, timeouts, drops).
        protocol: ``"nim"`` (``/v1/ranking``) or ``"cohere"`` (``/v1/rerank``).
        max_passage_chars: cut passages to this many characters before sending.
        chunking: score long passages as overlapping windows of
            ``max_passage_chars`` and keep each node's best window.
        chunk_overlap_chars: overlap of those windows.
        max_chunks_per_doc: at most this many windows per node.
        score_transform: ``"raw"`` (the model's logit) or ``"sigmoid"`` (0..1).
        score_threshold: drop nodes scoring below it (after the transform).
        metadata_mode: which metadata joins a node's text for ranking
            (``MetadataMode.EMBED`` by default, as the embedding saw it).
        keep_retrieval_score: keep the retriever's score in each returned
            node's metadata under ``retrieval_score``.
        on_error: ``"raise"`` (default) lets a ``nimrank.RankingError``
            propagate; ``"passthrough"`` logs a warning and returns the first
            ``top_n`` nodes in retrieval order instead.
        retry_policy: backoff settings, a ``nimrank.RetryPolicy``.
        extra_headers: headers added to every request.
        callback_manager: LlamaIndex's (legacy) callback manager.

    ``api_key``, ``extra_headers`` and ``retry_policy`` go to the clients only:
    they are not fields, so ``to_dict()`` leaves them out (they may hold
    credentials) and ``from_dict(data, api_key=...)`` takes them again.
    """

    # Assignments are validated; the options the clients were built with are
    # frozen, because the clients are built once, in the constructor.
    model_config = ConfigDict(validate_assignment=True)

    model: str = Field(default=DEFAULT_MODEL, frozen=True, description="The ranking model.")
    base_url: str | None = Field(
        default=None,
        frozen=True,
        description="None: NVIDIA's hosted catalog; else a base URL or full endpoint URL.",
    )
    top_n: int | None = Field(
        default=5, description="How many nodes to return; None returns all, ranked."
    )
    truncate: Literal["NONE", "END"] | None = Field(
        default=None, frozen=True, description="NIM's server-side truncation of long passages."
    )
    max_batch_size: int = Field(default=32, frozen=True, description="Passages per request.")
    max_concurrency: int = Field(
        default=8, frozen=True, description="Requests in flight at once for one query."
    )
    timeout: float = Field(default=60.0, frozen=True, description="Seconds to wait per request.")
    max_retries: int = Field(
        default=3, frozen=True, description="Retries of a failed request after the first try."
    )
    protocol: Literal["nim", "cohere"] = Field(
        default="nim", frozen=True, description="Wire protocol: NIM /v1/ranking or /v1/rerank."
    )
    max_passage_chars: int | None = Field(
        default=None, frozen=True, description="Cut passages to this many characters."
    )
    chunking: bool = Field(
        default=False, frozen=True, description="Score long passages as windows, keep the best."
    )
    chunk_overlap_chars: int | None = Field(
        default=None, frozen=True, description="Overlap of chunking windows."
    )
    max_chunks_per_doc: int | None = Field(
        default=None, frozen=True, description="At most this many windows per node."
    )
    score_transform: Literal["raw", "sigmoid"] = Field(
        default="raw", frozen=True, description="'raw' logits or their 'sigmoid'."
    )
    score_threshold: float | None = Field(
        default=None, description="Drop nodes scoring below it (after the transform)."
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Metadata included in a node's text for ranking."
    )
    keep_retrieval_score: bool = Field(
        default=False,
        strict=True,
        description="Keep the retriever's score in node metadata as 'retrieval_score'.",
    )
    on_error: Literal["raise", "passthrough"] = Field(
        default="raise",
        description="'raise' a ranking error, or 'passthrough' the nodes in retrieval order.",
    )

    # Built once, in the constructor, and reused by every query. The key goes
    # to them and nowhere else: it is not a field, so no dump or repr has it.
    _client: RankingClient = PrivateAttr()
    _async_client: AsyncRankingClient = PrivateAttr()

    def __init__(
        self,
        model: str | None = None,
        nvidia_api_key: str | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        top_n: int | None = 5,
        truncate: Literal["NONE", "END"] | None = None,
        max_batch_size: int = 32,
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
        protocol: Literal["nim", "cohere"] = "nim",
        max_passage_chars: int | None = None,
        chunking: bool = False,
        chunk_overlap_chars: int | None = None,
        max_chunks_per_doc: int | None = None,
        score_transform: Literal["raw", "sigmoid"] = "raw",
        score_threshold: float | None = None,
        metadata_mode: MetadataMode = MetadataMode.EMBED,
        keep_retrieval_score: bool = False,
        on_error: Literal["raise", "passthrough"] = "raise",
        retry_policy: RetryPolicy | None = None,
        extra_headers: Mapping[str, str] | None = None,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        key = nvidia_api_key or api_key
        client_options: dict[str, Any] = {
            "model": DEFAULT_MODEL if model is None else model,
            "base_url": base_url,
            "protocol": protocol,
            "truncate": truncate,
            "max_batch_size": max_batch_size,
            "max_concurrency": max_concurrency,
            "timeout": timeout,
            "max_retries": max_retries,
            "max_passage_chars": max_passage_chars,
            "chunking": chunking,
            "chunk_overlap_chars": chunk_overlap_chars,
            "max_chunks_per_doc": max_chunks_per_doc,
            "score_transform": score_transform,
        }
        # Options that may hold credentials (the key, a gateway's headers) or are
        # not plain data (the retry policy) go to the clients only, never into a field.
        unserialized: dict[str, Any] = {
            "api_key": key,
            "extra_headers": extra_headers,
            "retry_policy": retry_policy,
        }
        # The client checks its own options (with nimrank's messages) and resolves
        # the key: a bad option or a missing hosted key fails here, not at a query.
        client = RankingClient(**client_options, **unserialized)
        try:
            async_client = AsyncRankingClient(**client_options, **unserialized)
            fields: dict[str, Any] = {
                **client_options,
                "top_n": top_n,
                "score_threshold": score_threshold,
                "metadata_mode": metadata_mode,
                "keep_retrieval_score": keep_retrieval_score,
                "on_error": on_error,
                "callback_manager": callback_manager or CallbackManager(),
            }
            super().__init__(**fields)
        except BaseException:
            client.close()
            raise
        self._client = client
        self._async_client = async_client

    @field_validator("top_n", mode="before")
    @classmethod
    def _check_top_n(cls, value: Any) -> int | None:
        return check_top_n(value)

    @field_validator("score_threshold", mode="before")
    @classmethod
    def _check_score_threshold(cls, value: Any) -> float | None:
        return None if value is None else check_number("score_threshold", value)

    @field_validator("on_error", mode="before")
    @classmethod
    def _check_on_error(cls, value: Any) -> Any:
        if value not in _ON_ERROR:
            raise ValueError(f"on_error must be 'raise' or 'passthrough', got {value!r}")
        return value

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this postprocessor under."""
        return "NIMRerank"

    # -- the two entry points --------------------------------------------------

    @dispatcher.span
    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query = _query_text(query_bundle)
        with self._rerank(nodes, query_bundle) as outcome:
            if nodes:
                try:
                    ranking = self._client.rank(
                        query,
                        self._texts(nodes),
                        top_n=self.top_n,
                        score_threshold=self.score_threshold,
                    )
                except RankingError as error:
                    outcome.failed(error)
                else:
                    outcome.ranked(ranking)
        return outcome.nodes

    @dispatcher.span
    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query = _query_text(query_bundle)
        with self._rerank(nodes, query_bundle) as outcome:
            if nodes:
                try:
                    ranking = await self._async_client.rank(
                        query,
                        self._texts(nodes),
                        top_n=self.top_n,
                        score_threshold=self.score_threshold,
                    )
                except RankingError as error:
                    outcome.failed(error)
                else:
                    outcome.ranked(ranking)
        return outcome.nodes

    @contextmanager
    def _rerank(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> Iterator[_Outcome]:
        """The events around one rerank, and what it returns (shared by both entry points)."""
        dispatcher.event(self._start_event(nodes, query_bundle))
        outcome = _Outcome(self, nodes)
        try:
            yield outcome
        finally:
            # One end event for every start event: after an empty input and
            # after an error too, so traces never show a rerank still running.
            dispatcher.event(ReRankEndEvent(nodes=outcome.nodes))

    # -- closing ---------------------------------------------------------------

    def close(self) -> None:
        """Close the synchronous client's connections and worker threads."""
        self._client.close()

    async def aclose(self) -> None:
        """Close the async client's connections in the running event loop, and the sync client."""
        await self._async_client.aclose()
        self.close()

    # -- mapping in and out ------------------------------------------------------

    def _texts(self, nodes: Sequence[NodeWithScore]) -> list[str]:
        return [item.node.get_content(metadata_mode=self.metadata_mode) for item in nodes]

    def _rescored(
        self, nodes: Sequence[NodeWithScore], ranking: Sequence[RankedPassage]
    ) -> list[NodeWithScore]:
        return [self._with_score(nodes[ranked.index], ranked.score) for ranked in ranking]

    def _passthrough(
        self, nodes: Sequence[NodeWithScore], error: RankingError
    ) -> list[NodeWithScore]:
        kept = list(nodes) if self.top_n is None else list(nodes[: self.top_n])
        logger.warning(
            "NIMRerank: ranking failed, returning %d of %d nodes in retrieval order "
            "(on_error='passthrough'): %s: %s",
            len(kept),
            len(nodes),
            type(error).__name__,
            error,
        )
        return [self._with_score(item, item.score) for item in kept]

    def _with_score(self, item: NodeWithScore, score: float | None) -> NodeWithScore:
        """A new ``NodeWithScore``; the caller's objects are never changed."""
        node = item.node
        if self.keep_retrieval_score:
            # A copy with its own metadata dict: the original node may be shared
            # (a docstore, another query's results). The score is kept out of the
            # text that embeddings, rerankers and the LLM see.
            node = node.model_copy(
                update={
                    "metadata": {**node.metadata, RETRIEVAL_SCORE_KEY: item.score},
                    "excluded_embed_metadata_keys": _with_key(node.excluded_embed_metadata_keys),
                    "excluded_llm_metadata_keys": _with_key(node.excluded_llm_metadata_keys),
                }
            )
        return NodeWithScore(node=node, score=score)

    def _start_event(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> ReRankStartEvent:
        return ReRankStartEvent(
            query=query_bundle,
            nodes=nodes,
            top_n=len(nodes) if self.top_n is None else self.top_n,
            model_name=self.model,
        )


class _Outcome:
    """The nodes one rerank returns: the ranking, or what ``on_error`` says on failure."""

    def __init__(self, owner: NIMRerank, nodes: list[NodeWithScore]) -> None:
        self._owner = owner
        self._input = nodes
        self.nodes: list[NodeWithScore] = []

    def ranked(self, ranking: Sequence[RankedPassage]) -> None:
        self.nodes = self._owner._rescored(self._input, ranking)

    def failed(self, error: RankingError) -> None:
        if self._owner.on_error == "raise":
            raise error
        self.nodes = self._owner._passthrough(self._input, error)


def _query_text(query_bundle: QueryBundle | None) -> str:
    if query_bundle is None:
        raise ValueError(
            "NIMRerank needs a query to rank the nodes against: "
            "pass query_str=... or query_bundle=... to postprocess_nodes"
        )
    return check_query(query_bundle.query_str)


def _with_key(keys: list[str]) -> list[str]:
    return keys if RETRIEVAL_SCORE_KEY in keys else [*keys, RETRIEVAL_SCORE_KEY]
