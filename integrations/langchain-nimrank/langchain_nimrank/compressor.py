"""``NIMRerank``: a LangChain ``BaseDocumentCompressor`` on nimrank's ranking clients.

Mapping code only: documents become texts, ``RankingClient.rank`` (or
``AsyncRankingClient.rank``) ranks them, and the ranked indices become scored
copies of the documents. Batching, concurrency, retries, truncation and errors
are the client's.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import (
    AliasChoices,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from nimrank import DEFAULT_MODEL, AsyncRankingClient, RankedPassage, RankingClient, RetryPolicy

__all__ = ["NIMRerank"]

# ``rerank(top_n=-1)`` means "the compressor's top_n", as in LangChain's JinaRerank.
_OWN_TOP_N = -1


class NIMRerank(BaseDocumentCompressor):
    """Rerank LangChain documents with an NVIDIA NIM (or Cohere/Jina-style) ranking service.

    Takes ``NVIDIARerank``'s parameters, so switching is an import change,
    plus nimrank's own (concurrency, timeout, retries, protocol, passage and
    score options). Batches of ``max_batch_size`` documents are sent
    concurrently (at most ``max_concurrency`` at a time) and merged into one
    ranking. The returned documents are copies carrying
    ``metadata["relevance_score"]``; the input documents are left untouched.

    Example::

        from langchain_nimrank import NIMRerank
        from langchain_core.documents import Document

        reranker = NIMRerank(base_url="http://localhost:8000/v1", top_n=3)
        best = reranker.compress_documents(
            [Document(page_content=text) for text in passages],
            query="What is the GPU memory bandwidth of H100 SXM?",
        )
        best[0].metadata["relevance_score"]

    Inside a retriever (``pip install langchain-classic``)::

        from langchain_classic.retrievers import ContextualCompressionRetriever

        retriever = ContextualCompressionRetriever(
            base_compressor=reranker, base_retriever=vectorstore.as_retriever()
        )

    The connection pools are kept open between calls; ``close()`` (and, from
    asyncio code, ``await aclose()``) releases them.
    """

    # hide_input_in_errors: a validation error must not print the api_key it was given.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    # -- NVIDIARerank's parameters ---------------------------------------------

    model: str = Field(
        default=DEFAULT_MODEL,
        description=f"The ranking model (None: nimrank's default, {DEFAULT_MODEL!r}).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        # NVIDIARerank takes both spellings.
        validation_alias=AliasChoices("api_key", "nvidia_api_key"),
        description="API key (also accepted as nvidia_api_key); default: the "
        "NVIDIA_API_KEY or NVIDIA_NIM_API_KEY environment variable for the NIM "
        "protocol. Needed only by hosted services.",
    )
    base_url: str | None = Field(
        default=None,
        description="'http://host:8000/v1' for a self-hosted NIM; None for NVIDIA's "
        "hosted catalog; a full URL ending in /ranking, /reranking or /rerank is "
        "used as given.",
    )
    truncate: Literal["NONE", "END"] | None = Field(
        default=None,
        description="NIM's server-side truncation of passages longer than the model's "
        "context: 'END' cuts them, 'NONE' refuses them; None: the server's default.",
    )
    max_batch_size: int = Field(default=32, description="Documents per request (NIM: <= 512).")
    top_n: int | None = Field(
        default=5, ge=0, description="How many documents to return (None: all of them)."
    )
    extra_headers: dict[str, str] = Field(
        default_factory=dict,
        # Newer NVIDIARerank releases call it default_headers.
        validation_alias=AliasChoices("extra_headers", "default_headers"),
        description="Headers added to every request (also accepted as default_headers).",
        # They may carry credentials of their own (a proxy's token).
        repr=False,
    )

    # -- nimrank's own ---------------------------------------------------------

    protocol: Literal["nim", "cohere"] = Field(
        default="nim",
        description="'nim' for NIM's /v1/ranking; 'cohere' for the /v1/rerank API of "
        "Jina, Cohere, vLLM or a LiteLLM proxy (needs base_url).",
    )
    max_concurrency: int = Field(default=8, description="Requests in flight at once.")
    timeout: float = Field(default=60.0, description="Seconds to wait for each response.")
    max_retries: int = Field(
        default=3, description="Retries of a failed request (429, 5xx, timeouts, connection)."
    )
    max_passage_chars: int | None = Field(
        default=None,
        description="Cut each document to this many characters before sending "
        "(with chunking: the window size).",
    )
    chunking: bool = Field(
        default=False,
        description="Score long documents as overlapping windows of max_passage_chars "
        "and keep each document's best window score.",
    )
    chunk_overlap_chars: int | None = Field(
        default=None, description="Overlap of the windows (default: a tenth of the window)."
    )
    max_chunks_per_doc: int | None = Field(
        default=None, description="Score at most this many windows of one document."
    )
    score_transform: Literal["raw", "sigmoid"] = Field(
        default="raw",
        description="'raw': the server's score (a NIM logit); 'sigmoid': mapped into (0, 1).",
    )
    score_threshold: float | None = Field(
        default=None, description="Drop documents scoring below this (after score_transform)."
    )
    retry_policy: RetryPolicy | None = Field(
        default=None,
        description="Backoff settings (nimrank.RetryPolicy); max_retries still applies.",
    )

    # -- clients, built from the fields above ----------------------------------

    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _settings: dict[str, Any] | None = PrivateAttr(default=None)
    _client: RankingClient | None = PrivateAttr(default=None)
    # Serves every event loop: the client keeps one connection pool per loop.
    _async: AsyncRankingClient | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _refuse_conflicting_aliases(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            for one, other in (("api_key", "nvidia_api_key"), ("extra_headers", "default_headers")):
                if data.get(one) is not None and data.get(other) is not None:
                    raise ValueError(f"pass {one} or {other}, not both")
        return data

    @field_validator("model", mode="before")
    @classmethod
    def _default_model_for_none(cls, model: Any) -> Any:
        # NVIDIARerank(model=None) means "the default model".
        return DEFAULT_MODEL if model is None else model

    def __init__(self, **data: Any) -> None:
        """Create the compressor; the fields above are its keyword arguments.

        Raises:
            ValueError, TypeError: an option the client refuses, with the
                client's message (e.g. ``max_batch_size=0``).
            nimrank.MissingAPIKeyError: no ``base_url`` (NVIDIA's hosted
                catalog) and no key passed or in the environment.
        """
        super().__init__(**data)
        # Build the client now so that a bad option fails here, with the
        # client's own error, rather than at the first query. A field assigned
        # later is checked by the client rebuilt on the next call.
        self._sync_client()

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> NIMRerank:
        # The clients (a lock, sockets, threads) are not copied: the copy
        # builds its own on first use.
        fields = {
            name: copy.deepcopy(getattr(self, name), memo) for name in type(self).model_fields
        }
        return type(self).model_construct(**fields)

    # -- LangChain's interface -------------------------------------------------

    def compress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Rank ``documents`` against ``query`` and return the best ``top_n``.

        Args:
            documents: the retrieved documents; their ``page_content`` is ranked.
            query: what the documents are ranked against.
            callbacks: accepted for LangChain's interface; not used.

        Returns:
            Copies of the best ``top_n`` documents, best first, each with
            ``metadata["relevance_score"]``. Ties keep the input order.

        Raises:
            nimrank.RankingError: a subclass saying what failed.
        """
        ranked = self._sync_client().rank(query, _page_contents(documents), top_n=self.top_n)
        return _scored_copies(documents, ranked)

    async def acompress_documents(
        self,
        documents: Sequence[Document],
        query: str,
        callbacks: Callbacks | None = None,
    ) -> Sequence[Document]:
        """Like ``compress_documents``, on the event loop (no worker thread)."""
        client = self._async_client()
        ranked = await client.rank(query, _page_contents(documents), top_n=self.top_n)
        return _scored_copies(documents, ranked)

    def rerank(
        self,
        documents: Sequence[str | Document | dict[str, Any]],
        query: str,
        *,
        top_n: int | None = _OWN_TOP_N,
    ) -> list[dict[str, Any]]:
        """Rank texts, documents or ``{"text": ...}`` dicts, as LangChain's ``JinaRerank`` does.

        Args:
            documents: strings, ``Document`` objects (their ``page_content``)
                or dicts with a ``"text"`` string, in any mix.
            query: what the documents are ranked against.
            top_n: how many results (-1, the default: the compressor's
                ``top_n``; None: all of them; 0: none, and no request is sent).

        Returns:
            ``[{"index": i, "relevance_score": score}, ...]``, best first;
            ``index`` is the position in ``documents``.
        """
        ranked = self._sync_client().rank(query, _texts(documents), top_n=self._top_n(top_n))
        return [{"index": item.index, "relevance_score": item.score} for item in ranked]

    async def arerank(
        self,
        documents: Sequence[str | Document | dict[str, Any]],
        query: str,
        *,
        top_n: int | None = _OWN_TOP_N,
    ) -> list[dict[str, Any]]:
        """Like ``rerank``, on the event loop."""
        client = self._async_client()
        ranked = await client.rank(query, _texts(documents), top_n=self._top_n(top_n))
        return [{"index": item.index, "relevance_score": item.score} for item in ranked]

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        """Close the synchronous client's connections and worker threads."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close the async client's connections on the running event loop (and the sync client)."""
        with self._lock:
            client = self._async
        if client is not None:
            await client.aclose()
        self.close()

    # -- helpers ---------------------------------------------------------------

    def _top_n(self, top_n: int | None) -> int | None:
        return self.top_n if top_n == _OWN_TOP_N else top_n

    def _client_settings(self) -> dict[str, Any]:
        """The ``RankingClient`` options the fields stand for (the key still a SecretStr)."""
        return {
            "model": self.model,
            "base_url": self.base_url,
            "api_key": self.api_key,
            "protocol": self.protocol,
            "truncate": self.truncate,
            "max_batch_size": self.max_batch_size,
            "max_concurrency": self.max_concurrency,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "extra_headers": dict(self.extra_headers),
            "max_passage_chars": self.max_passage_chars,
            "chunking": self.chunking,
            "chunk_overlap_chars": self.chunk_overlap_chars,
            "max_chunks_per_doc": self.max_chunks_per_doc,
            "score_transform": self.score_transform,
            "score_threshold": self.score_threshold,
            "retry_policy": self.retry_policy,
        }

    def _refresh_clients(self) -> tuple[RankingClient, AsyncRankingClient]:
        """Both clients, rebuilt together if a field changed since they were built."""
        with self._lock:
            settings = self._client_settings()
            client, async_client = self._client, self._async
            if async_client is None or settings != self._settings:
                # The old clients are not closed here: a copy of this compressor
                # (``model_copy``) may still be using them.
                options = _unwrap_key(settings)
                client, async_client = RankingClient(**options), AsyncRankingClient(**options)
                self._settings = settings
            elif client is None:
                # close() closed it for good; the async client reopens by itself.
                client = RankingClient(**_unwrap_key(settings))
            self._client, self._async = client, async_client
            return client, async_client

    def _sync_client(self) -> RankingClient:
        return self._refresh_clients()[0]

    def _async_client(self) -> AsyncRankingClient:
        return self._refresh_clients()[1]


def _unwrap_key(settings: dict[str, Any]) -> dict[str, Any]:
    key = settings["api_key"]
    return {**settings, "api_key": key.get_secret_value() if key is not None else None}


def _page_contents(documents: Sequence[Document]) -> list[str]:
    if isinstance(documents, (str, Document)):
        raise TypeError("documents must be a list of Document objects, not a single one")
    texts = []
    for position, document in enumerate(documents):
        if not isinstance(document, Document):
            raise TypeError(
                f"documents[{position}] must be a langchain Document, got "
                f"{type(document).__name__} (rerank() takes plain strings)"
            )
        texts.append(document.page_content)
    return texts


def _texts(documents: Sequence[str | Document | dict[str, Any]]) -> list[str]:
    if isinstance(documents, (str, Document, dict)):
        raise TypeError("documents must be a list, not a single document")
    texts = []
    for position, document in enumerate(documents):
        if isinstance(document, str):
            texts.append(document)
        elif isinstance(document, Document):
            texts.append(document.page_content)
        elif isinstance(document, dict) and isinstance(document.get("text"), str):
            texts.append(document["text"])
        else:
            raise TypeError(
                f"documents[{position}] must be a str, a Document or a dict with a "
                f"'text' string, got {type(document).__name__}"
            )
    return texts


def _scored_copies(documents: Sequence[Document], ranked: list[RankedPassage]) -> list[Document]:
    # A new metadata dict per copy: the caller's documents are never changed.
    # The metadata values themselves are shared, not deep-copied.
    return [
        documents[item.index].model_copy(
            update={"metadata": {**documents[item.index].metadata, "relevance_score": item.score}}
        )
        for item in ranked
    ]
