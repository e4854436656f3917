"""The Cohere/Jina-style ``/v1/rerank``, spoken by Jina, Cohere, vLLM, Infinity and
the LiteLLM proxy: ``{model, query, documents: [str], top_n, return_documents}``
-> ``{results: [{index, relevance_score}]}``.

These servers sort ``results`` by score and may cut them to ``top_n``; we ask
for every document of the batch and match scores back by ``index``. Documents
are text only: image passages are refused before any request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..results import Passage
from .base import scores_in

__all__ = ["COHERE"]


class _CohereProtocol:
    name: str = "cohere"
    endpoint: str = "rerank"
    full_url_markers: tuple[str, ...] = ("/rerank",)
    max_batch_size: int | None = None
    supports_images: bool = False

    def build_request(
        self, *, model: str, query: str, passages: Sequence[str | Passage], truncate: str | None
    ) -> dict[str, Any]:
        # `truncate` is NIM's switch; the client refuses it for this protocol.
        return {
            "model": model,
            "query": query,
            "documents": [_document(position, p) for position, p in enumerate(passages)],
            "top_n": len(passages),
            "return_documents": False,
        }

    def parse_response(self, body: Any, batch_size: int) -> list[float]:
        return scores_in(body, "results", "relevance_score", batch_size)


def _document(position: int, passage: str | Passage) -> str:
    if type(passage) is str:
        return passage
    if isinstance(passage, Passage):
        if passage.image is not None:
            raise ValueError(
                f"passage {position} of the batch has an image: the cohere protocol sends "
                "text only (image passages need protocol='nim' and a VLM reranker)"
            )
        return passage.text or ""
    return passage


COHERE = _CohereProtocol()
