"""NVIDIA NIM ``/v1/ranking``: ``{model, query: {text}, passages: [{text, image}], truncate}``
-> ``{rankings: [{index, logit}]}``.

NIM rejects unknown body fields, so nothing else is ever sent (no ``top_n``),
and it takes at most 512 passages in one request. A VLM reranker takes a
passage as ``{"text": ...}``, ``{"image": ...}`` or both; an image-only passage
has no ``text`` key at all (an empty string would be scored as text).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..results import Passage
from .base import scores_in

__all__ = ["KNOWN_VLM_MODELS", "NIM", "is_known_vlm"]

#: Ranking models known to take image passages.
KNOWN_VLM_MODELS = frozenset({"nvidia/llama-nemotron-rerank-vl-1b-v2"})
# A model whose name has a ``vl``/``vlm`` word (``...-rerank-vl-1b``, the embedded
# server's ``ranking-vlm``) is taken to be one too.
_VL_WORD = re.compile(r"(?:^|[-_/.])vlm?(?:$|[-_/.])")


def is_known_vlm(model: str) -> bool:
    """Whether ``model`` is known to rank image passages (for the client's warning).

    True for the ids in ``KNOWN_VLM_MODELS`` and for names with a ``vl`` or
    ``vlm`` word, compared case-insensitively.
    """
    name = model.strip().lower()
    return name in KNOWN_VLM_MODELS or _VL_WORD.search(name) is not None


def _passage_object(passage: str | Passage) -> dict[str, str]:
    if type(passage) is str:
        return {"text": passage}
    if isinstance(passage, Passage):
        sent: dict[str, str] = {}
        if passage.text is not None:
            sent["text"] = passage.text
        if passage.image is not None:
            sent["image"] = passage.image
        return sent
    return {"text": passage}


class _NimProtocol:
    name: str = "nim"
    endpoint: str = "ranking"
    full_url_markers: tuple[str, ...] = ("/ranking", "/reranking", "/retrieval/")
    max_batch_size: int | None = 512
    supports_images: bool = True

    def build_request(
        self, *, model: str, query: str, passages: Sequence[str | Passage], truncate: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "query": {"text": query},
            "passages": [
                {"text": passage} if type(passage) is str else _passage_object(passage)
                for passage in passages
            ],
        }
        if truncate is not None:
            body["truncate"] = truncate
        return body

    def parse_response(self, body: Any, batch_size: int) -> list[float]:
        return scores_in(body, "rankings", "logit", batch_size)


NIM = _NimProtocol()
