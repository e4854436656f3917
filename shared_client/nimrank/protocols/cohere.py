"""The Cohere/Jina-style ``/v1/rerank``, spoken by Jina, Cohere, vLLM, Infinity and
the LiteLLM proxy: ``{model, query, documents: [str], top_n, return_documents}``
-> ``{results: [{index, relevance_score}]}``.

These servers sort ``results`` by score and may cut them to ``top_n``; we ask
for every document of the batch and match scores back by ``index``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import entries, scores_by_position

__all__ = ["COHERE"]


class _CohereProtocol:
    name: str = "cohere"
    endpoint: str = "rerank"
    full_url_markers: tuple[str, ...] = ("/rerank",)
    max_batch_size: int | None = None

    def build_request(
        self, *, model: str, query: str, passages: Sequence[str], truncate: str | None
    ) -> dict[str, Any]:
        # `truncate` is NIM's switch; the client refuses it for this protocol.
        return {
            "model": model,
            "query": query,
            "documents": list(passages),
            "top_n": len(passages),
            "return_documents": False,
        }

    def parse_response(self, body: Any, batch_size: int) -> list[float]:
        results = entries(body, "results")
        return scores_by_position(
            ((item.get("index"), item.get("relevance_score")) for item in results), batch_size
        )


COHERE = _CohereProtocol()
