"""The client tests' server: :class:`nimrank.server.RankingServer` set up to catch clients out.

No second HTTP server: :class:`FaultServer` is the embedded server with the
settings the client tests want, and the fault rules are the server's own
(:meth:`RankingServer.add_rule` with the actions of
:mod:`nimrank.server.faults`, re-exported here so tests write ``fs.error(...)``):

* NIM rankings come back shuffled (seeded per request), never best first, so a
  client that matched scores by position instead of by ``index`` gets caught;
* the Cohere family returns raw logits as ``relevance_score``, as the LiteLLM
  proxy does for NIM models, so scores below zero exist on both;
* ``/v1/models`` lists one NVIDIA model id.

The module also holds :class:`EitherClient`, which drives a ``RankingClient`` or an
``AsyncRankingClient`` through one awaitable interface so that one parametrised
test covers both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nimrank import AsyncRankingClient, RankedPassage, RankingClient
from nimrank.server import RankingServer, RecordedRequest, Reply, Rule
from nimrank.server.faults import *  # noqa: F403 - the rule vocabulary, as fs.error(...)
from nimrank.server.faults import STATUS_PATH, Action, Match
from nimrank.server.scoring import score_passages

__all__ = [
    "STATUS_PATH",
    "Action",
    "EitherClient",
    "FaultServer",
    "Match",
    "RecordedRequest",
    "Reply",
    "Rule",
    "honest_scores",
]

FAULT_SERVER_MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"


def honest_scores(query: str, passages: Sequence[str]) -> list[float]:
    """The score of each passage, a function of (query, passage) only."""
    return score_passages(query, passages)


class FaultServer(RankingServer):
    """The embedded server as the client tests use it (see the module docstring).

    Takes every :class:`RankingServer` option; these defaults differ.
    """

    def __init__(self, **options: Any) -> None:
        defaults: dict[str, Any] = {
            "model": FAULT_SERVER_MODEL,
            "vlm_model": None,
            "shuffle_rankings": True,
            "rerank_scores": "logit",
        }
        super().__init__(**{**defaults, **options})

    def __enter__(self) -> FaultServer:
        self.start()
        return self

    def status_url(self, request_id: str) -> str:
        """Where this server answers a status poll; a stand-in for ``nvcf_status_url``."""
        return f"{self.origin}{STATUS_PATH}{request_id}"


class EitherClient:
    """A ``RankingClient`` or an ``AsyncRankingClient`` behind one awaitable interface.

    ``kind`` is ``"sync"`` or ``"async"``. The sync client is called directly from the
    test's coroutine: it never touches the event loop, which the tests thereby check.

    Example::

        client = EitherClient("sync", base_url=server.url)
        ranked = await client.rank("query", ["a", "b"], top_n=1)
        await client.close()
    """

    def __init__(self, kind: str, **options: Any) -> None:
        if kind not in ("sync", "async"):
            raise ValueError(f"kind must be 'sync' or 'async', got {kind!r}")
        self.kind = kind
        self.client: RankingClient | AsyncRankingClient = (
            RankingClient(**options) if kind == "sync" else AsyncRankingClient(**options)
        )

    async def rank(self, query: str, passages: Sequence[str], **kwargs: Any) -> list[RankedPassage]:
        """``client.rank(query, passages, **kwargs)``, awaited for the async client."""
        if isinstance(self.client, AsyncRankingClient):
            return await self.client.rank(query, passages, **kwargs)
        return self.client.rank(query, passages, **kwargs)

    async def list_models(self) -> list[str]:
        """``client.list_models()``, awaited for the async client."""
        if isinstance(self.client, AsyncRankingClient):
            return await self.client.list_models()
        return self.client.list_models()

    async def close(self) -> None:
        """Close the client's connections."""
        if isinstance(self.client, AsyncRankingClient):
            await self.client.aclose()
        else:
            self.client.close()
