"""``NIMRerank``: a LangChain ``BaseDocumentCompressor`` on nimrank's ranking clients.

Documents become passages (``documents.py``), one ``nimrank.RankingClients``
pair ranks them, and the ranking becomes scored copies. The fields are
nimrank's options (``parameters.py``): every default, description and check is
nimrank's (``RankingOptions``), as are batching, retries, the client lifecycle
and the errors.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_serializer
from typing_extensions import Self

from nimrank import AsyncRankingClient, RankingClient, RankingClients, RankingOptions, RetryPolicy

from .documents import index_scores, passages_of, scored_copies
from .parameters import OPTION_NAMES, Model, core_value, mask_values, nvidia_spellings, option

if TYPE_CHECKING:
    # Only an annotation here; importing it loads LangChain's callback manager (~100 ms).
    from langchain_core.callbacks import Callbacks

__all__ = ["Model", "NIMRerank"]

# ``rerank(top_n=-1)`` means "the compressor's top_n", as in LangChain's JinaRerank.
_OWN_TOP_N = -1


class NIMRerank(BaseDocumentCompressor):
    """Rerank LangChain documents with an NVIDIA NIM (or Cohere/Jina-style) ranking service.

    Takes ``NVIDIARerank``'s parameters, so switching is an import change, and
    every other nimrank option; any may be assigned later (checked at once).
    Results are copies with ``metadata["relevance_score"]`` (``None``: a blank
    document, not sent, ranked last). ``metadata["image"]`` (a base64
    ``data:image/...`` URL) makes a document an image passage for a VLM reranker.

    Example::

        reranker = NIMRerank(base_url="http://localhost:8000/v1", top_n=3)
        best = reranker.compress_documents(documents, query="What is H100's bandwidth?")
        best[0].metadata["relevance_score"]

    The connections stay open between calls; ``close()`` / ``await aclose()`` release them.
    """

    # strict: a value the core would refuse is not coerced into one it accepts.
    # hide_input_in_errors: a validation error must not print the key it was given.
    # defer_build: the schema is built at the first construction, not at import.
    model_config = ConfigDict(
        defer_build=True,
        extra="forbid",
        validate_assignment=True,
        strict=True,
        hide_input_in_errors=True,
        arbitrary_types_allowed=True,
    )

    # NVIDIARerank's parameters, then nimrank's own (see describe_option).
    model: str | None = option("model")
    api_key: SecretStr | None = option("api_key")
    base_url: str | list[str] | None = option("base_url")
    truncate: str | None = option("truncate")
    max_batch_size: int = option("max_batch_size")
    top_n: int | None = Field(
        default=5, ge=0, description="How many documents to return (None: all of them)."
    )
    default_headers: dict[str, str] = option("extra_headers")
    protocol: str = option("protocol")
    max_concurrency: int = option("max_concurrency")
    timeout: float = option("timeout")
    max_retries: int | None = option("max_retries")
    retry_policy: RetryPolicy = option("retry_policy")
    max_passage_chars: int | None = option("max_passage_chars")
    chunking: bool = option("chunking")
    chunk_overlap_chars: int | None = option("chunk_overlap_chars")
    max_chunks_per_doc: int | None = option("max_chunks_per_doc")
    score_transform: str = option("score_transform")
    score_threshold: float | None = option("score_threshold")
    max_response_bytes: int = option("max_response_bytes")
    http_transport: str = option("http_transport")

    _clients: RankingClients = PrivateAttr()

    def __init__(self, **data: Any) -> None:
        """Take the fields as keywords (and ``nvidia_api_key``, ``nvidia_base_url``, which win).

        Raises:
            ValueError, TypeError: an option nimrank refuses, with its message.
            nimrank.MissingAPIKeyError: NVIDIA's hosted catalog and no key.
        """
        super().__init__(**nvidia_spellings(data))
        # A missing key or a bad URL fails here, not at the first call (and
        # outside pydantic, which would turn MissingAPIKeyError into its own error).
        self._clients.check()

    def model_post_init(self, context: Any, /) -> None:
        # After every way of making one (also model_validate): the options are checked here.
        self._clients = RankingClients(self._options())

    def __setattr__(self, name: str, value: Any) -> None:
        core_name = OPTION_NAMES.get(name)
        if core_name is None:  # top_n, private attributes, extra_headers' property
            super().__setattr__(name, value)
            return
        old_value, old_options = self.__dict__[name], self._clients.options
        super().__setattr__(name, value)  # pydantic's type check
        try:
            # The core checks the new value now; the pair closes the old clients.
            self._clients.update(**{core_name: core_value(getattr(self, name))})
            self._clients.check()
        except BaseException:
            self.__dict__[name] = old_value
            self._clients.options = old_options
            raise

    @property
    def extra_headers(self) -> dict[str, str]:
        """``default_headers`` under its older name (nimrank's option name)."""
        return self.default_headers

    @extra_headers.setter
    def extra_headers(self, headers: dict[str, str]) -> None:
        self.default_headers = headers

    @field_serializer("default_headers")
    def _mask_header_values(self, headers: dict[str, str]) -> dict[str, str]:
        # model_dump() is printed and logged; header values may be credentials.
        return mask_values(headers)

    # -- LangChain's interface -------------------------------------------------

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Copies of the best ``top_n`` documents for ``query``, best first (ties: input order).

        Raises:
            ValueError: a ``metadata["image"]`` that is not a base64 data URL.
            nimrank.RankingError: a subclass saying what failed.
        """
        ranked = self._clients.sync.rank(query, passages_of(documents), top_n=self.top_n)
        return scored_copies(documents, ranked)

    async def acompress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        """Like ``compress_documents``, on the event loop (no worker thread)."""
        client = self._clients.async_
        ranked = await client.rank(query, passages_of(documents), top_n=self.top_n)
        return scored_copies(documents, ranked)

    def rerank(
        self,
        documents: Sequence[str | Document | dict[str, Any]],
        query: str,
        *,
        model: str | None = None,
        top_n: int | None = _OWN_TOP_N,
        max_chunks_per_doc: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rank strings, documents or ``{"text": ...}`` dicts, as LangChain's ``JinaRerank`` does.

        Returns ``[{"index": i, "relevance_score": score}, ...]``, best first.
        ``top_n=-1`` means the compressor's (None: all); ``model`` and
        ``max_chunks_per_doc`` apply to this call only (None: the compressor's).
        """
        passages, top_n = passages_of(documents, mixed=True), self._top_n(top_n)
        changes = _per_call(model=model, max_chunks_per_doc=max_chunks_per_doc)
        if not changes:
            return index_scores(self._clients.sync.rank(query, passages, top_n=top_n))
        with RankingClient(self._clients.options, **changes) as client:
            return index_scores(client.rank(query, passages, top_n=top_n))

    async def arerank(
        self,
        documents: Sequence[str | Document | dict[str, Any]],
        query: str,
        *,
        model: str | None = None,
        top_n: int | None = _OWN_TOP_N,
        max_chunks_per_doc: int | None = None,
    ) -> list[dict[str, Any]]:
        """Like ``rerank``, on the event loop."""
        passages, top_n = passages_of(documents, mixed=True), self._top_n(top_n)
        changes = _per_call(model=model, max_chunks_per_doc=max_chunks_per_doc)
        if not changes:
            return index_scores(await self._clients.async_.rank(query, passages, top_n=top_n))
        async with AsyncRankingClient(self._clients.options, **changes) as client:
            return index_scores(await client.rank(query, passages, top_n=top_n))

    @property
    def available_models(self) -> list[Model]:
        """The ranking models the service lists (``model.id`` names each)."""
        return [Model(model_id) for model_id in self._clients.sync.list_models()]

    @classmethod
    def get_available_models(cls, **kwargs: Any) -> list[Model]:
        """The ranking models of the service that ``NIMRerank(**kwargs)`` would use."""
        reranker = cls(**kwargs)
        try:
            return reranker.available_models
        finally:
            reranker.close()

    def close(self) -> None:
        """Close the clients' connections (a later call reopens them)."""
        self._clients.close()

    async def aclose(self) -> None:
        """Like ``close``; the async pool of the running event loop is awaited closed."""
        await self._clients.aclose()

    # -- copies: each has clients of its own -------------------------------------

    def __copy__(self) -> NIMRerank:
        clone = super().__copy__()
        clone._clients = RankingClients(self._clients.options)
        return clone

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> NIMRerank:
        # The clients (locks, sockets, threads) are not copied: the copy makes its own.
        clone = self.__copy__()
        clone.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return clone

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied (checked by nimrank) and clients of its own."""
        clone = super().model_copy(update=update, deep=deep)
        if update:
            clone._clients.options = clone._options()
        return clone

    def __getstate__(self) -> dict[Any, Any]:
        # Like RankingOptions: the key does not travel; the unpickled copy
        # reads NVIDIA_API_KEY from its own environment.
        state = super().__getstate__()
        fields = {**state["__dict__"], "api_key": None}
        return {**state, "__dict__": fields, "__pydantic_private__": {}}

    def __setstate__(self, state: dict[Any, Any]) -> None:
        super().__setstate__(state)
        self._clients = RankingClients(self._options())

    # -- helpers ---------------------------------------------------------------

    def _options(self) -> RankingOptions:
        return RankingOptions(
            **{core: core_value(getattr(self, name)) for name, core in OPTION_NAMES.items()}
        )

    def _top_n(self, top_n: int | None) -> int | None:
        return self.top_n if top_n == _OWN_TOP_N else top_n


def _per_call(**changes: Any) -> dict[str, Any]:
    """``rerank()``'s per-call options that were given (None: the compressor's)."""
    return {name: value for name, value in changes.items() if value is not None}
