"""``NIMRanker``: a Haystack ranker backed by the shared nimrank client.

The component is mapping code only. It turns Documents into passage texts
(prefix, selected meta fields, content), hands them to
:class:`nimrank.RankingClient` / :class:`nimrank.AsyncRankingClient`, and turns
the ranking back into scored copies of the Documents. Batching, concurrency,
retries and HTTP all live in the client.
"""

from __future__ import annotations

import enum
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import Secret, deserialize_secrets_inplace

from nimrank import DEFAULT_MODEL, AsyncRankingClient, RankedPassage, RankingClient
from nimrank.validation import check_int, check_number, check_query

__all__ = ["NIMRanker"]

_TRUNCATE_VALUES = (None, "NONE", "END")
_DEFAULT_TIMEOUT = 60.0


@component
class NIMRanker:
    """Rank Documents by relevance to a query with an NVIDIA NIM (or Cohere/Jina-style) reranker.

    A drop-in for ``NvidiaRanker`` from ``nvidia-haystack``: the same constructor
    parameters, in the same order, plus batching, concurrency, retries, a
    score threshold and client-side truncation from :mod:`nimrank`.

    Usage example::

        from haystack import Document
        from haystack_integrations.components.rankers.nimrank import NIMRanker

        ranker = NIMRanker(api_url="http://localhost:8000/v1", top_k=2)
        result = ranker.run(
            query="What is the capital of Germany?",
            documents=[
                Document(content="Berlin is the capital of Germany."),
                Document(content="Paris is the capital of France."),
            ],
        )
        print(result["documents"][0].content, result["documents"][0].score)

    Output Documents are copies of the input ones (``dataclasses.replace``)
    with ``score`` set to the reranker's score, best first; the inputs are not
    modified. Documents sharing an ``id`` are ranked once (the copy with the
    highest incoming score is kept, as Haystack's own rankers do). A Document
    without text content is not sent; it ranks after every scored Document,
    with ``score=None``, and is left out when a score threshold applies.
    """

    def __init__(
        self,
        model: str | None = None,
        truncate: str | None = None,
        api_url: str | None = None,
        api_key: Secret | None = Secret.from_env_var("NVIDIA_API_KEY", strict=False),  # noqa: B008
        top_k: int = 5,
        query_prefix: str = "",
        document_prefix: str = "",
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        timeout: float | None = None,
        *,
        protocol: str = "nim",
        max_batch_size: int = 32,
        max_concurrency: int = 8,
        max_retries: int = 3,
        score_threshold: float | None = None,
        score_transform: str = "raw",
        max_passage_chars: int | None = None,
        chunking: bool = False,
        chunk_overlap_chars: int | None = None,
        max_chunks_per_doc: int | None = None,
    ) -> None:
        """Create a NIMRanker.

        The first ten parameters are ``NvidiaRanker``'s, in its order.

        Args:
            model: ranking model id; ``None`` means nimrank's default
                (``nvidia/llama-3.2-nv-rerankqa-1b-v2``).
            truncate: NIM's server-side truncation, ``"NONE"``, ``"END"`` or
                ``None`` (the server's default); ``RankerTruncateMode`` members
                are accepted too. NIM protocol only.
            api_url: the service, e.g. ``"http://localhost:8000/v1"`` for a
                self-hosted NIM, or a full ``.../ranking`` / ``.../rerank`` URL.
                ``None``: the ``NVIDIA_API_URL`` environment variable if set,
                else NVIDIA's hosted catalog (which needs a key), as is
                ``"https://integrate.api.nvidia.com/v1"``, NvidiaRanker's default.
            api_key: the API key, as a Haystack ``Secret`` (serialized as a
                reference, never its value). Without one the client also looks
                at ``NVIDIA_API_KEY`` / ``NVIDIA_NIM_API_KEY`` (NIM protocol).
            top_k: how many Documents to return; must be > 0.
            query_prefix: prepended to the query, e.g. an instruction.
            document_prefix: prepended to each Document's passage text.
            meta_fields_to_embed: meta fields whose (non-empty) values precede
                the content in the passage text.
            embedding_separator: joins the meta values and the content.
            timeout: seconds per request; ``None``: ``NVIDIA_TIMEOUT`` or 60.
            protocol: ``"nim"`` (``/v1/ranking``) or ``"cohere"``
                (``/v1/rerank``: Cohere, Jina, vLLM, a LiteLLM proxy).
            max_batch_size: passages per request (at most 512 for NIM).
            max_concurrency: requests in flight at once.
            max_retries: retries per request on 429, 5xx, timeouts and
                connection errors.
            score_threshold: drop Documents scoring below it.
            score_transform: ``"raw"`` scores (NIM logits) or ``"sigmoid"``.
            max_passage_chars: cut passages longer than this on the client
                (``None``: send them whole).
            chunking: score long passages as overlapping windows of
                ``max_passage_chars`` and keep the best window's score.
            chunk_overlap_chars: characters shared by neighbouring windows.
            max_chunks_per_doc: at most this many windows per Document.

        Raises:
            ValueError, TypeError: for an invalid ``top_k``, ``truncate``,
                ``score_threshold`` or text option. The client's own options
                (batch size, protocol, URL, key ...) are checked by
                ``warm_up()``, which ``Pipeline.run`` calls before running any
                component.
        """
        check_int("top_k", top_k, minimum=1)
        if isinstance(truncate, enum.Enum):
            # RankerTruncateMode from nvidia-haystack: keep its plain value so
            # the component serializes to plain YAML.
            truncate = truncate.value
        if truncate not in _TRUNCATE_VALUES:
            raise ValueError(f"truncate must be 'NONE', 'END' or None, got {truncate!r}")
        if score_threshold is not None:
            check_number("score_threshold", score_threshold)
        if model is not None and not isinstance(model, str):
            raise TypeError(f"model must be a string, got {model!r}")
        if api_url is not None and not isinstance(api_url, str):
            raise TypeError(f"api_url must be a string, got {api_url!r}")
        for name, text in (
            ("query_prefix", query_prefix),
            ("document_prefix", document_prefix),
            ("embedding_separator", embedding_separator),
        ):
            if not isinstance(text, str):
                raise TypeError(f"{name} must be a string, got {text!r}")
        fields = list(meta_fields_to_embed or [])
        if not all(isinstance(name, str) for name in fields):
            raise TypeError(f"meta_fields_to_embed must be a list of strings, got {fields!r}")

        self.model = model or DEFAULT_MODEL
        self.truncate = truncate
        self.api_url = api_url
        self.api_key = api_key
        self.top_k = top_k
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.meta_fields_to_embed = fields
        self.embedding_separator = embedding_separator
        self.timeout = timeout
        self.protocol = protocol
        self.max_batch_size = max_batch_size
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.score_threshold = score_threshold
        self.score_transform = score_transform
        self.max_passage_chars = max_passage_chars
        self.chunking = chunking
        self.chunk_overlap_chars = chunk_overlap_chars
        self.max_chunks_per_doc = max_chunks_per_doc

        self._client: RankingClient | None = None
        self._async_client: AsyncRankingClient | None = None
        # Pipeline.run_async may run sync components in threads; build clients once.
        self._lock = threading.Lock()

    # -- serialization -------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Serialize the component; the API key is stored as a reference, never its value.

        Raises:
            ValueError: when ``api_key`` is a token secret (``Secret.from_token``),
                which Haystack refuses to serialize.
        """
        return default_to_dict(
            self,
            model=self.model,
            truncate=self.truncate,
            api_url=self.api_url,
            api_key=self.api_key.to_dict() if self.api_key is not None else None,
            top_k=self.top_k,
            query_prefix=self.query_prefix,
            document_prefix=self.document_prefix,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            timeout=self.timeout,
            protocol=self.protocol,
            max_batch_size=self.max_batch_size,
            max_concurrency=self.max_concurrency,
            max_retries=self.max_retries,
            score_threshold=self.score_threshold,
            score_transform=self.score_transform,
            max_passage_chars=self.max_passage_chars,
            chunking=self.chunking,
            chunk_overlap_chars=self.chunk_overlap_chars,
            max_chunks_per_doc=self.max_chunks_per_doc,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NIMRanker:
        """Rebuild a component from :meth:`to_dict`'s output (``data`` is not modified)."""
        init_parameters = dict(data.get("init_parameters", {}))
        deserialize_secrets_inplace(init_parameters, keys=["api_key"])
        return default_from_dict(cls, {**data, "init_parameters": init_parameters})

    # -- clients ----------------------------------------------------------------

    def warm_up(self) -> None:
        """Create the ranking clients (once; later calls do nothing).

        Checks the client options and, for NVIDIA's hosted catalog, that a key
        is available. Running without calling it first works too.

        Raises:
            ValueError, TypeError: an invalid client option.
            nimrank.MissingAPIKeyError: the hosted catalog and no key.
        """
        self._sync_client()
        self._async_ranking_client()

    async def warm_up_async(self) -> None:
        """Like :meth:`warm_up` (``Pipeline.run_async`` calls it instead)."""
        self.warm_up()

    def close(self) -> None:
        """Close the synchronous client (``Pipeline.close`` calls it)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def close_async(self) -> None:
        """Close the sync client and the async client's connections on the running loop.

        ``Pipeline.close_async`` calls it. The async client stays: a later run,
        on this loop or another, opens new connections.
        """
        self.close()
        if self._async_client is not None:
            await self._async_client.aclose()

    def _sync_client(self) -> RankingClient:
        with self._lock:
            if self._client is None:
                self._client = RankingClient(**self._client_options())
            return self._client

    def _async_ranking_client(self) -> AsyncRankingClient:
        # One client serves every event loop: it keeps a connection pool per loop.
        with self._lock:
            if self._async_client is None:
                self._async_client = AsyncRankingClient(**self._client_options())
            return self._async_client

    def _client_options(self) -> dict[str, Any]:
        # NvidiaRanker's default, https://integrate.api.nvidia.com/v1, needs no
        # special case: the client takes it to mean the hosted catalog.
        api_url = self.api_url if self.api_url is not None else os.environ.get("NVIDIA_API_URL")
        timeout = self.timeout
        if timeout is None:
            timeout = float(os.environ.get("NVIDIA_TIMEOUT", _DEFAULT_TIMEOUT))
        return {
            "model": self.model,
            "base_url": api_url,
            "api_key": self.api_key.resolve_value() if self.api_key is not None else None,
            "protocol": self.protocol,
            "truncate": self.truncate,
            "max_batch_size": self.max_batch_size,
            "max_concurrency": self.max_concurrency,
            "timeout": timeout,
            "max_retries": self.max_retries,
            "max_passage_chars": self.max_passage_chars,
            "chunking": self.chunking,
            "chunk_overlap_chars": self.chunk_overlap_chars,
            "max_chunks_per_doc": self.max_chunks_per_doc,
            "score_transform": self.score_transform,
            "score_threshold": self.score_threshold,
        }

    # -- running -------------------------------------------------------------

    @component.output_types(documents=list[Document])
    def run(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """Rank ``documents`` by relevance to ``query``, best first.

        Args:
            query: what the Documents are ranked against (``query_prefix`` is
                prepended).
            documents: the candidates; Documents sharing an ``id`` are ranked once.
            top_k: return at most this many (> 0); default: the init value.
            score_threshold: drop Documents scoring below it; default: the
                init value. ``0.0`` is a threshold like any other.

        Returns:
            ``{"documents": [...]}``: scored copies of the Documents, best first;
            Documents without content last, with ``score=None``.

        Raises:
            ValueError, TypeError: invalid arguments, before any request.
            nimrank.RankingError: the ranking failed (a subclass says how).
        """
        call = self._prepare(query, documents, top_k, score_threshold)
        if call is None:
            return {"documents": []}
        ranked = self._sync_client().rank(
            call.query, call.passages, top_n=call.top_k, score_threshold=call.score_threshold
        )
        return {"documents": call.scored(ranked)}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
    ) -> dict[str, list[Document]]:
        """Asynchronous :meth:`run`: batches go out as concurrent requests on this loop."""
        call = self._prepare(query, documents, top_k, score_threshold)
        if call is None:
            return {"documents": []}
        ranked = await self._async_ranking_client().rank(
            call.query, call.passages, top_n=call.top_k, score_threshold=call.score_threshold
        )
        return {"documents": call.scored(ranked)}

    def _prepare(
        self,
        query: str,
        documents: list[Document],
        top_k: int | None,
        score_threshold: float | None,
    ) -> _Call | None:
        """Check the arguments and build the passages; ``None`` when there is nothing to rank."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, got {type(query).__name__}")
        if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
            kind = type(documents).__name__
            raise TypeError(f"documents must be a list of Documents, got {kind}")
        for position, document in enumerate(documents):
            if not isinstance(document, Document):
                raise TypeError(
                    f"documents[{position}] must be a Document, got {type(document).__name__}"
                )
        top_k = self.top_k if top_k is None else check_int("top_k", top_k, minimum=1)
        if score_threshold is None:
            score_threshold = self.score_threshold
        else:
            check_number("score_threshold", score_threshold)
        if not documents:
            return None
        # Checked before the prefix is added: a prefix alone is not a question.
        check_query(query)
        unique = _unique_by_id(documents)
        return _Call(
            query=self.query_prefix + query,
            documents=unique,
            passages=[self._passage_text(document) for document in unique],
            top_k=top_k,
            score_threshold=score_threshold,
        )

    def _passage_text(self, document: Document) -> str:
        """The text sent for ``document``: prefix, meta values, content; ``""`` without content.

        A Document whose content is missing or blank is not ranked at all, even
        when it has meta fields: a score for its title alone would not be
        comparable with the others, and a prefix alone is no passage.
        """
        content = document.content or ""
        if not content.strip():
            return ""
        # Same selection as NvidiaRanker (values that are present and truthy), so
        # that switching sends the same text.
        meta = document.meta
        meta_values = [str(meta[name]) for name in self.meta_fields_to_embed if meta.get(name)]
        return self.document_prefix + self.embedding_separator.join([*meta_values, content])


@dataclass(frozen=True)
class _Call:
    """One run's passages and how to map the ranking back to Documents."""

    query: str
    documents: list[Document]
    passages: list[str]
    top_k: int
    score_threshold: float | None

    def scored(self, ranked: list[RankedPassage]) -> list[Document]:
        """Copies of the ranked Documents with their scores, in ranking order."""
        out = []
        for passage in ranked:
            score: float | None = passage.score
            if not self.passages[passage.index]:
                # Not sent, so not scored: the client's placeholder (-inf, or 0.0
                # after a sigmoid) is no score. Haystack's "no score" is None (and
                # -inf would not survive JSON); with a threshold there is nothing
                # to hold against it, so the Document is left out.
                if self.score_threshold is not None:
                    continue
                score = None
            out.append(replace(self.documents[passage.index], score=score))
        return out


def _unique_by_id(documents: Sequence[Document]) -> list[Document]:
    """One Document per ``id``: the copy with the highest incoming score (first on a tie).

    The same rule as Haystack's own rankers; each id keeps the position of its
    first occurrence, which decides the order of equal rerank scores.
    """
    best: dict[str, Document] = {}
    for document in documents:
        kept = best.get(document.id)
        if kept is None or _incoming_score(document) > _incoming_score(kept):
            best[document.id] = document
    return list(best.values())


def _incoming_score(document: Document) -> float:
    return document.score if document.score is not None else -math.inf
