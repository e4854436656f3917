"""LangChain documents as nimrank passages, and nimrank's ranking as LangChain results."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document

from nimrank import Passage, RankedPassage

__all__ = ["index_scores", "passages_of", "scored_copies"]


def _document_passage(position: int, document: Document) -> str | Passage:
    """``page_content``, or with ``metadata["image"]`` an image passage, as NVIDIARerank sends."""
    image = document.metadata.get("image")
    if not image:  # as in NVIDIARerank: an unset or empty image means text only
        return document.page_content
    if not isinstance(image, str):
        raise ValueError(
            f"documents[{position}].metadata['image'] must be a base64 data URL string, "
            f"'data:image/<type>;base64,<payload>', got {type(image).__name__}"
        )
    # An image-only document is sent without text, not with an empty one.
    return Passage(document.page_content or None, image)


def passages_of(documents: Sequence[Any], *, mixed: bool = False) -> list[str | Passage]:
    """Documents (with ``mixed``: also strings and ``{"text": ...}`` dicts) as passages."""
    if isinstance(documents, (str, Document, dict)):
        raise TypeError("documents must be a list, not a single document")
    passages: list[str | Passage] = []
    for position, document in enumerate(documents):
        if isinstance(document, Document):
            passages.append(_document_passage(position, document))
        elif mixed and isinstance(document, str):
            passages.append(document)
        elif mixed and isinstance(document, dict) and isinstance(document.get("text"), str):
            passages.append(document["text"])
        else:
            wanted = "a str, a Document or a dict with a 'text' string" if mixed else ""
            wanted = wanted or "a langchain Document (rerank() also takes strings)"
            raise TypeError(
                f"documents[{position}] must be {wanted}, got {type(document).__name__}"
            )
    return passages


def index_scores(ranked: list[RankedPassage]) -> list[dict[str, Any]]:
    """JinaRerank's result shape: ``[{"index": i, "relevance_score": score}, ...]``."""
    return [{"index": item.index, "relevance_score": item.score} for item in ranked]


def scored_copies(documents: Sequence[Document], ranked: list[RankedPassage]) -> list[Document]:
    """The ranked documents, best first, as copies with ``metadata["relevance_score"]``."""
    # A new metadata dict per copy: the caller's documents are never changed.
    # The metadata values themselves are shared, not deep-copied.
    return [
        documents[item.index].model_copy(
            update={"metadata": {**documents[item.index].metadata, "relevance_score": item.score}}
        )
        for item in ranked
    ]
