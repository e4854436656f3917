"""Other NIM rerank clients, driven the way their users drive them.

Each peer is wrapped in a :class:`Session`: ``inputs`` turns texts into the
peer's own input objects (built before the clock starts, as a user already
has them), ``rank`` runs the peer's public ranking call and returns the input
indices best first. Every peer is asked for *all* passages (``top_n`` /
``top_k`` = the input size) so the full order can be checked.

What each one sends, read from its installed source (versions pinned in
tests/interop/requirements-peers.txt):

* LangChain ``NVIDIARerank.compress_documents``: batches of
  ``max_batch_size`` (default 32), one request after another, a new
  ``requests.Session`` (so a new connection) per request.
* LlamaIndex ``NVIDIARerank.postprocess_nodes``: batches of
  ``max_batch_size`` (default 64), one after another, one kept-alive
  ``httpx.Client``.
* Haystack ``NvidiaRanker.run``: every document in one request.
* LiteLLM ``rerank`` (``nvidia_nim/ranking/<model>`` -> ``/v1/ranking``):
  every document in one request.

The peers are imported lazily by module name so this file type-checks and
imports without them; :func:`load_peers` says which ones are missing.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["FAKE_API_KEY", "MODEL", "Peer", "Session", "load_peers"]

MODEL = "nimrank/lexical-bm25"
"""The model the embedded server lists; LlamaIndex checks the name against it."""

FAKE_API_KEY = "nvapi-fake-bench"
"""Fake key (not a credential) for peers that demand one even for a local URL."""


class Session(Protocol):
    """One peer client, connected to one server."""

    def inputs(self, texts: Sequence[str]) -> Any:
        """The peer's input objects for ``texts`` (not timed)."""
        ...

    def rank(self, query: str, inputs: Any) -> list[int]:
        """Rank everything; input indices, best first (timed)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class Peer:
    """A peer library as it appears in the table.

    Attributes:
        name: label in the table and the chart.
        batching: how it splits the input, in a few words.
        modules: what must import for it to run.
        connect: builds a session against a server's ``/v1`` base URL.
    """

    name: str
    batching: str
    modules: tuple[str, ...]
    connect: Callable[[str], Session]


def _module(name: str) -> Any:
    return importlib.import_module(name)


class _LangChain:
    def __init__(self, url: str) -> None:
        self._document = _module("langchain_core.documents").Document
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "model unknown": ours is a stand-in
            self._ranker = _module("langchain_nvidia_ai_endpoints").NVIDIARerank(
                base_url=url,
                model=MODEL,
                api_key=FAKE_API_KEY,
                usage_telemetry_enabled=False,
            )

    def inputs(self, texts: Sequence[str]) -> Any:
        return [
            self._document(page_content=text, metadata={"index": index})
            for index, text in enumerate(texts)
        ]

    def rank(self, query: str, inputs: Any) -> list[int]:
        self._ranker.top_n = len(inputs)
        ranked = self._ranker.compress_documents(inputs, query)
        return [int(document.metadata["index"]) for document in ranked]

    def close(self) -> None:
        pass  # it opens a session per request and keeps none


class _LlamaIndex:
    def __init__(self, url: str) -> None:
        self._schema = _module("llama_index.core.schema")
        module = _module("llama_index.postprocessor.nvidia_rerank")
        self._ranker = module.NVIDIARerank(base_url=url, model=MODEL, api_key=FAKE_API_KEY)

    def inputs(self, texts: Sequence[str]) -> Any:
        # The index rides in the node id: metadata would be embedded into the
        # text sent (MetadataMode.EMBED) and change the scores.
        return [
            self._schema.NodeWithScore(node=self._schema.TextNode(text=text, id_=str(index)))
            for index, text in enumerate(texts)
        ]

    def rank(self, query: str, inputs: Any) -> list[int]:
        self._ranker.top_n = len(inputs)
        ranked = self._ranker.postprocess_nodes(inputs, self._schema.QueryBundle(query))
        return [int(node.node.node_id) for node in ranked]

    def close(self) -> None:
        self._ranker.client.close()


class _Haystack:
    def __init__(self, url: str) -> None:
        self._document = _module("haystack").Document
        secret = _module("haystack.utils").Secret
        rankers = _module("haystack_integrations.components.rankers.nvidia")
        self._ranker = rankers.NvidiaRanker(
            api_url=url, model=MODEL, api_key=secret.from_token(FAKE_API_KEY)
        )
        self._ranker.warm_up()

    def inputs(self, texts: Sequence[str]) -> Any:
        return [self._document(content=text, id=str(index)) for index, text in enumerate(texts)]

    def rank(self, query: str, inputs: Any) -> list[int]:
        ranked = self._ranker.run(query, inputs, top_k=len(inputs))["documents"]
        return [int(document.id) for document in ranked]

    def close(self) -> None:
        self._ranker.close()


class _LiteLLM:
    def __init__(self, url: str) -> None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # see load_peers
        self._litellm = _module("litellm")
        self._litellm.suppress_debug_info = True
        self._url = url

    def inputs(self, texts: Sequence[str]) -> Any:
        return list(texts)

    def rank(self, query: str, inputs: Any) -> list[int]:
        # "ranking/" selects NIM's self-hosted /v1/ranking route; without it
        # LiteLLM targets the hosted catalog's /v1/retrieval/.../reranking path.
        response = self._litellm.rerank(
            model=f"nvidia_nim/ranking/{MODEL}",
            query=query,
            documents=inputs,
            api_base=self._url,
            api_key=FAKE_API_KEY,
        )
        return [int(result["index"]) for result in response.results]

    def close(self) -> None:
        pass


PEERS: tuple[Peer, ...] = (
    Peer(
        "LangChain NVIDIARerank",
        "32 per request, one after another",
        ("langchain_nvidia_ai_endpoints", "langchain_core"),
        _LangChain,
    ),
    Peer(
        "LlamaIndex NVIDIARerank",
        "64 per request, one after another",
        ("llama_index.postprocessor.nvidia_rerank",),
        _LlamaIndex,
    ),
    Peer(
        "Haystack NvidiaRanker",
        "all in one request",
        ("haystack_integrations.components.rankers.nvidia",),
        _Haystack,
    ),
    Peer(
        "LiteLLM rerank (nvidia_nim)",
        "all in one request",
        ("litellm",),
        _LiteLLM,
    ),
)


def load_peers() -> tuple[list[Peer], list[str]]:
    """The peers that import here, and a note for each one that does not."""
    # Use LiteLLM's bundled model price list instead of fetching one at import.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    found: list[Peer] = []
    missing: list[str] = []
    for peer in PEERS:
        try:
            for name in peer.modules:
                importlib.import_module(name)
        except ImportError as exc:
            missing.append(f"{peer.name}: not installed ({exc.name or exc})")
        else:
            found.append(peer)
    return found, missing
