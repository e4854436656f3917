"""``NIMRerank``: a LlamaIndex node postprocessor backed by nimrank's client pair.

Mapping only: nodes become passages (text, or text and image), one
``nimrank.RankingClients`` pair ranks them (options, batching, retries, errors
and the clients' lifecycle all live in nimrank), and the ranking becomes new
``NodeWithScore`` objects.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from typing_extensions import TypedDict, Unpack

from llama_index.postprocessor.nimrank.node_passages import node_passage
from nimrank import (
    DEFAULT_OPTIONS,
    RankedPassage,
    RankingClients,
    RankingError,
    RankingOptions,
    RetryPolicy,
    base_url_from_environment,
    describe_option,
)

__all__ = ["Model", "NIMRerank"]

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

#: The metadata key that holds the retriever's score with ``keep_retrieval_score=True``.
RETRIEVAL_SCORE_KEY = "retrieval_score"

# Endings of other APIs' endpoints: such a base URL was most likely copied from
# another client's settings (it fails with a 404 at the first call).
_SUSPICIOUS_ENDINGS = ("/rankings", "/embeddings", "/completions")


def _option(name: str) -> Any:
    """A field for client option ``name``: its default and description are the core's."""
    return Field(default=getattr(DEFAULT_OPTIONS, name), description=describe_option(name))


@dataclass(frozen=True)
class Model:
    """A ranking model the service lists (``NVIDIARerank.available_models`` gives these too)."""

    id: str


class _Options(TypedDict, total=False):
    protocol: Literal["nim", "cohere"]
    truncate: Literal["NONE", "END"] | None
    max_batch_size: int
    max_concurrency: int
    timeout: float
    max_retries: int | None
    retry_policy: RetryPolicy
    extra_headers: Mapping[str, str]
    max_passage_chars: int | None
    chunking: bool
    chunk_overlap_chars: int | None
    max_chunks_per_doc: int | None
    score_transform: Literal["raw", "sigmoid"]
    score_threshold: float | None
    max_response_bytes: int
    http_transport: str
    top_n: int | None
    metadata_mode: MetadataMode
    keep_retrieval_score: bool
    on_error: Literal["raise", "passthrough"]
    callback_manager: CallbackManager | None


class NIMRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with an NVIDIA NIM (or Cohere/Jina-style) ranking service.

    A drop-in for ``llama_index.postprocessor.nvidia_rerank.NVIDIARerank`` (same
    ``model``, ``nvidia_api_key``/``api_key``, ``base_url``, ``top_n``, ``truncate``,
    ``max_batch_size``, assignable after construction), with every other
    ``nimrank.RankingOptions`` option under its own name, default and meaning, and
    ``metadata_mode``, ``keep_retrieval_score`` and ``on_error``. An ``ImageNode``
    (or a node with an ``image_resource``) is ranked by its image and its text, if
    any: use a VLM reranker. ``api_key``, ``extra_headers`` and ``retry_policy`` are
    no fields: ``to_dict()`` leaves them out, ``from_dict(data, api_key=...)`` takes them.

    Example::

        reranker = NIMRerank(base_url="http://localhost:8000/v1", top_n=3)
        engine = index.as_query_engine(similarity_top_k=40, node_postprocessors=[reranker])
        reranker.max_batch_size = 64  # checked now; the clients are rebuilt
    """

    model_config = ConfigDict(validate_assignment=True)

    model: str | None = _option("model")
    base_url: str | list[str] | None = _option("base_url")
    top_n: int | None = Field(
        default=5, ge=0, strict=True, description="How many nodes to return; None: all, ranked."
    )
    truncate: Literal["NONE", "END"] | None = _option("truncate")
    max_batch_size: int = _option("max_batch_size")
    protocol: Literal["nim", "cohere"] = _option("protocol")
    max_concurrency: int = _option("max_concurrency")
    timeout: float = _option("timeout")
    max_retries: int | None = _option("max_retries")
    max_passage_chars: int | None = _option("max_passage_chars")
    chunking: bool = _option("chunking")
    chunk_overlap_chars: int | None = _option("chunk_overlap_chars")
    max_chunks_per_doc: int | None = _option("max_chunks_per_doc")
    score_transform: Literal["raw", "sigmoid"] = _option("score_transform")
    score_threshold: float | None = _option("score_threshold")
    max_response_bytes: int = _option("max_response_bytes")
    http_transport: str = _option("http_transport")
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

    # The clients, and the one copy of the options they are made from (the key
    # included: it is no field, so no dump or repr shows it).
    _clients: RankingClients = PrivateAttr()

    def __init__(
        self,
        model: str | None = None,
        nvidia_api_key: str | None = None,
        api_key: str | None = None,
        base_url: str | list[str] | None = None,
        **options: Unpack[_Options],
    ) -> None:
        unknown = options.keys() - _Options.__annotations__.keys()
        if unknown:
            raise TypeError(f"NIMRerank got unexpected keyword arguments: {sorted(unknown)}")
        names = RankingOptions.__dataclass_fields__
        client_options: dict[str, Any] = {k: v for k, v in options.items() if k in names}
        # NVIDIARerank's rule when both are given: nvidia_api_key wins.
        key = nvidia_api_key or api_key
        settings = RankingOptions(model=model, base_url=base_url, api_key=key, **client_options)
        clients = RankingClients(settings)
        clients.check()  # a missing hosted key or a bad URL fails here, as in NVIDIARerank
        _warn_if_suspicious(settings)
        fields: dict[str, Any] = {k: v for k, v in options.items() if k not in _CLIENT_ONLY}
        fields.update({name: getattr(settings, name) for name in _OPTION_FIELDS})
        fields["callback_manager"] = options.get("callback_manager") or CallbackManager()
        super().__init__(**fields)
        self._clients = clients

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _OPTION_FIELDS:
            super().__setattr__(name, value)
            return
        # Checked by the core first: a bad value raises here and changes nothing.
        clients = self._clients
        old = clients.options
        new = old.replace(**{name: value})
        clients.options = new  # the old clients are closed
        try:
            clients.check()
            super().__setattr__(name, getattr(new, name))
        except BaseException:
            clients.options = old
            raise
        if name == "base_url":
            _warn_if_suspicious(new)

    def __copy__(self) -> NIMRerank:
        # A copy gets clients of its own: an option assigned on it must not
        # change (or close) the original's.
        duplicate = super().__copy__()
        duplicate._clients = RankingClients(self._clients.options)
        return duplicate

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> NIMRerank:
        duplicate = self.__copy__()
        object.__setattr__(duplicate, "__dict__", copy.deepcopy(self.__dict__, memo))
        return duplicate

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this postprocessor under."""
        return "NIMRerank"

    @property
    def available_models(self) -> list[Model]:
        """The ranking models the service lists (one request)."""
        return [Model(id=model_id) for model_id in self._clients.sync.list_models()]

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        client = self._clients.sync
        with self._rerank(nodes, query_bundle, client.model) as outcome:
            if nodes:
                try:
                    ranking = client.rank(outcome.query, self._passages(nodes), top_n=self.top_n)
                except RankingError as error:
                    outcome.nodes = self._passthrough(nodes, error)
                else:
                    outcome.nodes = self._rescored(nodes, ranking)
        return outcome.nodes

    @dispatcher.span
    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        client = self._clients.async_
        with self._rerank(nodes, query_bundle, client.model) as outcome:
            if nodes:
                try:
                    ranking = await client.rank(
                        outcome.query, self._passages(nodes), top_n=self.top_n
                    )
                except RankingError as error:
                    outcome.nodes = self._passthrough(nodes, error)
                else:
                    outcome.nodes = self._rescored(nodes, ranking)
        return outcome.nodes

    @contextmanager
    def _rerank(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None, model: str | None
    ) -> Iterator[_Outcome]:
        """The events around one rerank: instrumentation and callbacks, each ended on every path.

        ``model`` is the client's (``None`` until a self-hosted service was asked).
        """
        top_n = len(nodes) if self.top_n is None else self.top_n
        model = model or ""
        dispatcher.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=model)
        )
        outcome = _Outcome()
        try:
            if query_bundle is None:
                raise ValueError(
                    "NIMRerank needs a query to rank the nodes against: "
                    "pass query_str=... or query_bundle=... to postprocess_nodes"
                )
            outcome.query = query_bundle.query_str
            callbacks = self.callback_manager
            if not callbacks.handlers:  # nobody listens: skip the event's bookkeeping
                yield outcome
                return
            payload: dict[str, Any] = {
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: model,
                EventPayload.QUERY_STR: outcome.query,
                EventPayload.TOP_K: top_n,
            }
            # The legacy callback event, as NVIDIARerank and core's rerankers send it.
            with callbacks.event(CBEventType.RERANKING, payload=payload) as event:
                yield outcome
                event.on_end(payload={EventPayload.NODES: outcome.nodes})
        finally:
            # One end event for every start event: after an empty input and
            # after an error too, so traces never show a rerank still running.
            dispatcher.event(ReRankEndEvent(nodes=outcome.nodes))

    def close(self) -> None:
        """Close the clients' connections and worker threads (later use reopens them)."""
        self._clients.close()

    async def aclose(self) -> None:
        """Close both clients; the async one's connections in the running event loop."""
        await self._clients.aclose()

    def _passages(self, nodes: Sequence[NodeWithScore]) -> list[Any]:
        mode = self.metadata_mode
        return [node_passage(item.node, mode) for item in nodes]

    def _rescored(
        self, nodes: Sequence[NodeWithScore], ranking: Sequence[RankedPassage]
    ) -> list[NodeWithScore]:
        return [self._with_score(nodes[ranked.index], ranked.score) for ranked in ranking]

    def _passthrough(
        self, nodes: Sequence[NodeWithScore], error: RankingError
    ) -> list[NodeWithScore]:
        """The first ``top_n`` nodes in retrieval order; with ``on_error="raise"``, ``error``."""
        if self.on_error == "raise":
            raise error
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


#: The client options that are fields, spread from ``RankingOptions``.
_OPTION_FIELDS = frozenset(NIMRerank.model_fields) & frozenset(RankingOptions.__dataclass_fields__)
#: The options that go to the clients only (credentials, or not plain data).
_CLIENT_ONLY = frozenset({"api_key", "extra_headers", "retry_policy"})


@dataclass
class _Outcome:
    """One rerank's query and the nodes it returns."""

    query: str = ""
    nodes: list[NodeWithScore] = field(default_factory=list)


def _warn_if_suspicious(options: RankingOptions) -> None:
    urls = base_url_from_environment(options.base_url, options.protocol)
    for url in [urls] if isinstance(urls, str) else urls or ():
        if url.split("?")[0].rstrip("/").endswith(_SUSPICIOUS_ENDINGS):
            warnings.warn(
                f"NIMRerank: base_url {url.split('?')[0]!r} looks like another service's "
                "endpoint; pass the service's base URL (e.g. 'http://host:8000/v1') or its "
                "ranking URL",
                UserWarning,
                stacklevel=3,
            )


def _with_key(keys: list[str]) -> list[str]:
    return keys if RETRIEVAL_SCORE_KEY in keys else [*keys, RETRIEVAL_SCORE_KEY]
