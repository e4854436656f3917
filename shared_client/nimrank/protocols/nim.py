"""NVIDIA NIM ``/v1/ranking``: ``{model, query: {text}, passages: [{text}], truncate}``
-> ``{rankings: [{index, logit}]}``.

NIM rejects unknown body fields, so nothing else is ever sent (no ``top_n``),
and it takes at most 512 passages in one request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import entries, scores_by_position

__all__ = ["NIM"]


class _NimProtocol:
    name: str = "nim"
    endpoint: str = "ranking"
    full_url_markers: tuple[str, ...] = ("/ranking", "/reranking", "/retrieval/")
    max_batch_size: int | None = 512

    def build_request(
        self, *, model: str, query: str, passages: Sequence[str], truncate: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "query": {"text": query},
            "passages": [{"text": text} for text in passages],
        }
        if truncate is not None:
            body["truncate"] = truncate
        return body

    def parse_response(self, body: Any, batch_size: int) -> list[float]:
        rankings = entries(body, "rankings")
        return scores_by_position(
            ((item.get("index"), item.get("logit")) for item in rankings), batch_size
        )


NIM = _NimProtocol()
