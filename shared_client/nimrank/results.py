"""The value a ranking call returns."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RankedPassage"]


@dataclass(frozen=True, slots=True)
class RankedPassage:
    """One passage of a ranking.

    Attributes:
        index: the passage's position in the list given to ``rank``.
        score: the server's score for it (a NIM logit, a Cohere/Jina relevance
            score, or its sigmoid with ``score_transform="sigmoid"``);
            ``-inf`` for a blank passage, which is never sent.
        text: the passage as given (whole, even when only part was scored).
    """

    index: int
    score: float
    text: str
