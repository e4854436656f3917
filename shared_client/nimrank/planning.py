"""From passages to batches and back: pure functions, no I/O.

``plan_batches`` turns the input into the texts to send (each distinct text
once; long passages cut or split into windows) and groups them into batches.
``merge_rankings`` takes one score per sent text and builds a single ranking
over the whole input: one entry per input passage, best first, ties in input
order. Blank passages are never sent; they rank last with score ``-inf``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from .results import RankedPassage
from .validation import check_int

__all__ = [
    "PassageOptions",
    "Plan",
    "cut_at_word_boundary",
    "describe_passages",
    "merge_rankings",
    "plan_batches",
    "select",
    "sigmoid",
    "split_windows",
]

#: The score of a passage that was not sent (empty or whitespace only).
UNSCORED = -math.inf


@dataclass(frozen=True)
class PassageOptions:
    """Client-side handling of long passages.

    Attributes:
        max_passage_chars: longest text sent for one passage; ``None`` sends
            passages whole (the server may still truncate, see ``truncate``).
        chunking: when a passage is longer than ``max_passage_chars``, score
            overlapping windows of it and keep the best window's score,
            instead of cutting it at the limit.
        chunk_overlap_chars: characters shared by neighbouring windows.
        max_chunks_per_doc: at most this many windows per passage; text past
            the last window is not scored.
    """

    max_passage_chars: int | None = None
    chunking: bool = False
    chunk_overlap_chars: int = 0
    max_chunks_per_doc: int | None = None

    @classmethod
    def checked(
        cls,
        max_passage_chars: int | None,
        chunking: bool,
        chunk_overlap_chars: int | None,
        max_chunks_per_doc: int | None,
    ) -> PassageOptions:
        """Options from user arguments, refused with ``ValueError``/``TypeError``
        before any request; the overlap defaults to a tenth of the window."""
        if not isinstance(chunking, bool):
            raise TypeError(f"chunking must be True or False, got {chunking!r}")
        if max_passage_chars is None:
            if chunking:
                raise ValueError("chunking=True needs max_passage_chars: the window size")
            return cls()
        check_int("max_passage_chars", max_passage_chars, minimum=1)
        if chunk_overlap_chars is None:
            chunk_overlap_chars = max_passage_chars // 10
        check_int(
            "chunk_overlap_chars", chunk_overlap_chars, minimum=0, maximum=max_passage_chars - 1
        )
        if max_chunks_per_doc is not None:
            check_int("max_chunks_per_doc", max_chunks_per_doc, minimum=1)
        return cls(max_passage_chars, chunking, chunk_overlap_chars, max_chunks_per_doc)


@dataclass(frozen=True)
class Plan:
    """What to send for one ``rank`` call, and how to read the scores back.

    Attributes:
        passages: the input, as given.
        segments: the distinct texts to score, each sent once.
        segments_of: for each input passage, the ids of its segments (one, or
            several windows; none for a blank passage).
        batches: segment ids per request, in order.
    """

    passages: tuple[str, ...]
    segments: tuple[str, ...]
    segments_of: tuple[tuple[int, ...], ...]
    batches: tuple[tuple[int, ...], ...]
    _owners: dict[int, list[int]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Built here, once, not on first use: the sync client asks
        # ``passages_in_batch`` from several threads at the same time.
        for index, segment_ids in enumerate(self.segments_of):
            for segment in segment_ids:
                self._owners.setdefault(segment, []).append(index)

    def batch_texts(self, batch: int) -> list[str]:
        """The texts batch ``batch`` sends, in request order."""
        return [self.segments[segment] for segment in self.batches[batch]]

    def passages_in_batch(self, batch: int) -> list[int]:
        """Input indices of the passages whose text batch ``batch`` holds."""
        held = {index for segment in self.batches[batch] for index in self._owners[segment]}
        return sorted(held)


def cut_at_word_boundary(text: str, start: int, limit: int) -> int:
    """End of the longest piece of ``text[start:]`` within ``limit`` characters
    that does not split a word (a single word longer than the limit is cut)."""
    end = start + limit
    if end >= len(text):
        return len(text)
    # Any str.isspace() character ends a word, as everywhere else in this module
    # (a no-break or ideographic space too, not only the ASCII ones).
    for position in range(end, start, -1):
        if text[position].isspace():
            return position
    return end


def split_windows(text: str, limit: int, overlap: int, max_windows: int | None) -> list[str]:
    """Overlapping windows of at most ``limit`` characters covering ``text``.

    Windows end at word boundaries and start at the beginning of a word; each
    window begins about ``overlap`` characters before the previous one ended.
    At most ``max_windows`` windows are made (``None``: as many as needed).
    """
    windows: list[str] = []
    start = _skip_space(text, 0)
    while start < len(text):
        end = cut_at_word_boundary(text, start, limit)
        windows.append(text[start:end].rstrip())
        if end >= len(text) or (max_windows is not None and len(windows) >= max_windows):
            break
        next_start = _word_start_after(text, max(end - overlap, start + 1), end)
        start = _skip_space(text, next_start)
    return windows


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _word_start_after(text: str, position: int, end: int) -> int:
    """The first word start at or after ``position``, but never past ``end``."""
    while position < end and position > 0 and not text[position - 1].isspace():
        position += 1
    return position


def _segments_for(text: str, options: PassageOptions) -> list[str]:
    limit = options.max_passage_chars
    if limit is None or len(text) <= limit:
        return [text]
    if options.chunking:
        return split_windows(text, limit, options.chunk_overlap_chars, options.max_chunks_per_doc)
    # Cut from the first word: leading whitespace must not use up the limit
    # (or leave nothing but whitespace to send).
    start = _skip_space(text, 0)
    return [text[start : cut_at_word_boundary(text, start, limit)].rstrip()]


def plan_batches(
    passages: Sequence[str], max_batch_size: int, options: PassageOptions = PassageOptions()
) -> Plan:
    """Plan the requests for ``passages``: distinct texts, batches of ``max_batch_size``."""
    segment_ids: dict[str, int] = {}
    segments_of: list[tuple[int, ...]] = []
    for text in passages:
        if not text.strip():
            segments_of.append(())
            continue
        ids = []
        for segment in _segments_for(text, options):
            if segment not in segment_ids:
                segment_ids[segment] = len(segment_ids)
            ids.append(segment_ids[segment])
        # A window repeated inside one passage is scored once and counted once.
        segments_of.append(tuple(dict.fromkeys(ids)))
    count = len(segment_ids)
    batches = tuple(
        tuple(range(start, min(start + max_batch_size, count)))
        for start in range(0, count, max_batch_size)
    )
    return Plan(
        passages=tuple(passages),
        segments=tuple(segment_ids),
        segments_of=tuple(segments_of),
        batches=batches,
    )


def merge_rankings(plan: Plan, segment_scores: Sequence[float]) -> list[RankedPassage]:
    """One ranking over the whole input: best first, ties in input order.

    A passage's score is its best segment's score; a blank passage's is ``-inf``.
    """
    if len(segment_scores) != len(plan.segments):
        raise ValueError(f"expected {len(plan.segments)} segment scores, got {len(segment_scores)}")
    scored = [
        RankedPassage(
            index=index,
            score=max((segment_scores[s] for s in ids), default=UNSCORED),
            text=text,
        )
        for index, (text, ids) in enumerate(zip(plan.passages, plan.segments_of, strict=True))
    ]
    scored.sort(key=lambda passage: (-passage.score, passage.index))
    return scored


def sigmoid(x: float) -> float:
    """The logistic function in float64, without overflow for large ``|x|``."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def select(
    ranking: Sequence[RankedPassage],
    *,
    score_transform: str = "raw",
    score_threshold: float | None = None,
    top_n: int | None = None,
) -> list[RankedPassage]:
    """Apply the score transform, then the threshold, then ``top_n``.

    The order stays the one ``merge_rankings`` made: the transform is monotonic,
    and sorting on raw scores keeps apart logits that a sigmoid rounds together.
    A passage that was never scored keeps ``-inf`` whatever the transform, so it
    stays recognisable and no threshold lets it through.
    """
    out = list(ranking)
    if score_transform == "sigmoid":
        out = [
            RankedPassage(index=p.index, score=sigmoid(p.score), text=p.text)
            if p.score != UNSCORED
            else p
            for p in out
        ]
    if score_threshold is not None:
        out = [p for p in out if p.score >= score_threshold]
    return out if top_n is None else out[:top_n]


def describe_passages(indices: Sequence[int], limit: int = 6) -> str:
    """``passages 0-31`` / ``passages 3, 7, 9-12 ... (40 in all)``."""
    if not indices:
        return "no passages"
    runs: list[str] = []
    start = previous = indices[0]
    for index in [*indices[1:], None]:
        if index is not None and index == previous + 1:
            previous = index
            continue
        runs.append(str(start) if start == previous else f"{start}-{previous}")
        if index is not None:
            start = previous = index
    noun = "passage" if len(indices) == 1 else "passages"
    if len(runs) > limit:
        return f"{noun} {', '.join(runs[:limit])} ... ({len(indices)} in all)"
    return f"{noun} {', '.join(runs)}"
