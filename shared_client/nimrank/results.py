"""The values a ranking call takes and returns: ``Passage`` and ``RankedPassage``."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Passage", "RankedPassage"]


@dataclass(frozen=True, slots=True)
class Passage:
    """A passage with an image, text, or both, for a vision-language reranker.

    ``rank()`` takes plain strings and ``Passage`` values in any mix; a
    ``Passage`` without an image is the same passage as its text.

    Attributes:
        text: the passage's text, or ``None``.
        image: a base64 data URL, ``data:image/<subtype>;base64,<payload>``
            (``image/png``, ``image/jpeg``, ...), or ``None``.

    Example::

        Passage(image="data:image/png;base64,iVBORw0KGgo...", text="Figure 3: H100 die")

    A passage with neither an image nor any non-blank text is not sent and
    comes back unscored (``score is None``), as a blank string does.
    """

    text: str | None = None
    image: str | None = None

    def __post_init__(self) -> None:
        for name in ("text", "image"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"Passage.{name} must be a str or None, got {type(value).__name__}")

    def __repr__(self) -> str:
        return f"Passage(text={self.text!r}, image={_short(self.image)})"


@dataclass(frozen=True, slots=True)
class RankedPassage:
    """One passage of a ranking.

    Attributes:
        index: the passage's position in the list given to ``rank``.
        score: the server's score for it (a NIM logit, a Cohere/Jina relevance
            score, or its sigmoid with ``score_transform="sigmoid"``);
            ``None`` for a passage that was never sent (blank: no text and no
            image). Unscored passages rank last, in input order, and no
            ``score_threshold`` keeps them.
        text: the passage's text as given (whole, even when only part was
            scored); ``""`` for an image-only ``Passage``.
        image: the passage's image data URL for a ``Passage`` with one, else ``None``.
    """

    index: int
    score: float | None
    text: str
    image: str | None = None

    def __repr__(self) -> str:
        return (
            f"RankedPassage(index={self.index!r}, score={self.score!r}, text={self.text!r}, "
            f"image={_short(self.image)})"
        )


def _short(image: str | None) -> str:
    # An image is often megabytes of base64: show its start and its size only.
    if image is None or len(image) <= 48:
        return repr(image)
    return f"{image[:40]!r}...({len(image)} chars)"


# A frozen dataclass's __init__ sets each field through object.__setattr__;
# the slots' own descriptors do it ~2.4x faster, and a 100,000-passage call
# makes 100,000 results. Only the merge uses this; users call RankedPassage().
_new = object.__new__
_set_index, _set_score, _set_text, _set_image = (
    vars(RankedPassage)[name].__set__ for name in ("index", "score", "text", "image")
)


def make_ranked(
    index: int, score: float | None, text: str, image: str | None = None
) -> RankedPassage:
    """``RankedPassage(index, score, text, image)``, made faster: the same frozen value."""
    passage: RankedPassage = _new(RankedPassage)
    _set_index(passage, index)
    _set_score(passage, score)
    _set_text(passage, text)
    _set_image(passage, image)
    return passage
