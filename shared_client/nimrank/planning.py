"""From passages to batches and back: pure functions, no I/O.

``plan_batches`` turns the input into the segments to send (each distinct
passage once; long texts cut or split into windows) and groups them into
batches. ``merge_rankings`` takes one score per segment and builds a single
ranking over the whole input: one entry per input passage, best first, ties in
input order.

The rules for a passage, a string or a ``Passage(text=..., image=...)``:

- Two passages are the same when their (text, image) pairs are equal; a
  ``Passage`` without an image is the same passage as its text. The same
  passage is sent once and its score shared.
- A passage with neither an image nor any non-blank text is not sent: it is
  unscored (``score is None``) and ranks last, in input order.
- Truncation (``max_passage_chars``) and chunking apply to the text only. With
  chunking, every window of an image+text passage carries the image; an
  image-only passage is one segment. Blank text beside an image is not sent.

The work is a few C-level passes per passage (one dict look-up to dedupe, one
list look-up to read a score back, one sort on a plain float key), with no
object per passage but the results, so the cost per passage stays flat in N.
"""

from __future__ import annotations

import gc
import heapq
import math
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import compress, count, repeat
from operator import is_, is_not
from typing import cast

from .results import Passage, RankedPassage, make_ranked
from .validation import check_int

__all__ = [
    "PassageOptions",
    "Plan",
    "Segment",
    "cut_at_word_boundary",
    "describe_passages",
    "final_ranking",
    "merge_rankings",
    "plan_batches",
    "select",
    "sigmoid",
    "split_windows",
]

#: What one request carries for one passage: its text, or a ``Passage`` with an image.
Segment = str | Passage

# str.__instancecheck__ through map(): an all-strings check at C speed.
_is_str = str.__instancecheck__


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


@dataclass(frozen=True, eq=False)
class Plan:
    """What to send for one ``rank`` call, and how to read the scores back.

    Attributes:
        passages: the input, as given.
        segments: the distinct things to score, each sent once: a text, or a
            ``Passage`` when it carries an image.
        batches: segment ids per request, in order (consecutive ids).
        max_batch_size: the most segments in one batch.
    """

    passages: tuple[str | Passage, ...]
    segments: tuple[Segment, ...]
    batches: tuple[range, ...]
    max_batch_size: int
    # Per input passage: its first segment id (-1 for a passage not sent), and
    # for the few with several segments (chunking), all of them.
    _first: Sequence[int]
    _more: Mapping[int, tuple[int, ...]]
    # Whether every passage is a plain str (the results need no unpacking).
    _plain: bool = True

    @property
    def text_only(self) -> bool:
        """Whether every passage is a plain ``str`` (so none carries an image)."""
        return self._plain

    @property
    def segments_of(self) -> tuple[tuple[int, ...], ...]:
        """For each input passage, the ids of its segments (none for an unsent one)."""
        more = self._more
        return tuple(
            more.get(index, (first,)) if first >= 0 else ()
            for index, first in enumerate(self._first)
        )

    def batch_texts(self, batch: int) -> list[Segment]:
        """The segments batch ``batch`` sends, in request order."""
        ids = self.batches[batch]
        return list(self.segments[ids.start : ids.stop])

    def passages_in_batch(self, batch: int) -> list[int]:
        """Input indices of the passages whose segments batch ``batch`` holds."""
        segments, owners = self._owners_by_segment
        ids = self.batches[batch]
        held = owners[bisect_left(segments, ids.start) : bisect_left(segments, ids.stop)]
        # A chunked passage may hold several segments of one batch.
        return sorted(set(held)) if self._more else sorted(held)

    def describe_batch(self, batch: int) -> str:
        """``batch 2 of 4 (passages 32-63)``: how error messages name a batch."""
        held = self.passages_in_batch(batch)
        return f"batch {batch + 1} of {len(self.batches)} ({describe_passages(held)})"

    @cached_property
    def _owners_by_segment(self) -> tuple[list[int], list[int]]:
        """(segment ids ascending, the input passage that holds each), for ``passages_in_batch``.

        Built on first use only, in C-level passes (a sort, a map): error
        messages need it, a call that succeeds does not. It is stored whole once
        built, so threads asking at the same time never see half of it.
        """
        first = self._first
        if not self._more:
            owners = sorted(range(len(first)), key=first.__getitem__)
            return list(map(first.__getitem__, owners)), owners
        pairs = sorted(
            (segment, index) for index, ids in enumerate(self.segments_of) for segment in ids
        )
        return [segment for segment, _ in pairs], [index for _, index in pairs]

    def passage_scores(self, segment_scores: Sequence[float]) -> list[float | None]:
        """Each input passage's score: its best segment's, ``None`` if not sent."""
        if len(segment_scores) != len(self.segments):
            raise ValueError(
                f"expected {len(self.segments)} segment scores, got {len(segment_scores)}"
            )
        # Index -1 (not sent) reads the sentinel appended at the end.
        table: list[float | None] = [*segment_scores, None]
        scores = list(map(table.__getitem__, self._first))
        for index, ids in self._more.items():
            scores[index] = max(segment_scores[segment] for segment in ids)
        return scores

    def text_of(self, index: int) -> tuple[str, str | None]:
        """The text and image a ranking shows for input passage ``index``."""
        passage = self.passages[index]
        if type(passage) is str or not isinstance(passage, Passage):
            return passage, None
        return (passage.text if passage.text is not None else ""), passage.image


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


def _segments_of_passage(passage: str | Passage, options: PassageOptions) -> list[Segment]:
    text: str | None
    if isinstance(passage, Passage):
        text, image = passage.text, passage.image
    else:
        text, image = passage, None
    if not text or text.isspace():
        return [] if image is None else [Passage(image=image)]
    if image is None:
        return list(_segments_for(text, options))
    return [Passage(window, image) for window in _segments_for(text, options)]


def plan_batches(
    passages: Sequence[str | Passage],
    max_batch_size: int,
    options: PassageOptions = PassageOptions(),
) -> Plan:
    """Plan the requests for ``passages``: distinct segments, batches of ``max_batch_size``.

    ``passages`` must have passed ``validation.check_passages``.
    """
    passages = tuple(passages)
    segment_ids: dict[Segment, int] = {}
    more: dict[int, tuple[int, ...]] = {}
    plain = all(map(_is_str, passages))
    if plain and options.max_passage_chars is None:
        # The common case, one C-level pass: each non-blank text gets the id
        # of its first occurrence (the next free one if it is new).
        new_id = segment_ids.setdefault
        texts = cast("tuple[str, ...]", passages)
        first = [
            new_id(text, len(segment_ids)) if text and not text.isspace() else -1 for text in texts
        ]
    else:
        first = []
        for index, passage in enumerate(passages):
            ids = [
                segment_ids.setdefault(segment, len(segment_ids))
                for segment in _segments_of_passage(passage, options)
            ]
            # A window repeated inside one passage is scored once and counted once.
            unique = tuple(dict.fromkeys(ids))
            first.append(unique[0] if unique else -1)
            if len(unique) > 1:
                more[index] = unique
    count = len(segment_ids)
    return Plan(
        passages=passages,
        segments=tuple(segment_ids),
        batches=tuple(
            range(start, min(start + max_batch_size, count))
            for start in range(0, count, max_batch_size)
        ),
        max_batch_size=max_batch_size,
        _first=first,
        _more=more,
        _plain=plain,
    )


def _order(scores: Sequence[float | None], limit: int | None = None) -> list[int]:
    """Input indices best first, ties in input order, unscored last in input order.

    With ``limit``, only the first ``limit`` of that order.
    """
    scored: Sequence[int] = range(len(scores))
    unscored: list[int] = []
    if None in scores:
        scored = list(compress(count(), map(is_not, scores, repeat(None))))
        unscored = list(compress(count(), map(is_, scores, repeat(None))))
    key = cast("Callable[[int], float]", scores.__getitem__)
    if limit is not None and limit * 4 < len(scored):
        # The best few of many: ~8x faster than sorting all of them (top 10 of
        # 100,000), and documented to equal sorted(..., reverse=True)[:limit].
        return heapq.nlargest(limit, scored, key=key)
    # A stable sort with reverse=True keeps equal scores in input order.
    order = sorted(scored, key=key, reverse=True)
    order += unscored
    return order if limit is None else order[:limit]


def _results(
    plan: Plan, order: Sequence[int], scores: Sequence[float | None]
) -> list[RankedPassage]:
    # Many results pause the cycle collector while they are made: every 700
    # new objects set it off, and each full pass walks every result made so
    # far (at 100,000 results, a fifth of the merge). Results hold no cycles:
    # nothing is lost by waiting. A collector the application turned off
    # stays off; one another thread turns off meanwhile is on again after
    # (the process has one switch). No context manager: a Ctrl-C landing
    # between its entry and its try block would leave the collector off.
    paused = len(order) >= _BULK and gc.isenabled()
    try:
        if paused:
            gc.disable()
        if plan._plain:
            texts = cast("tuple[str, ...]", plan.passages)
            return [make_ranked(index, scores[index], texts[index]) for index in order]
        text_of = plan.text_of
        return [make_ranked(index, scores[index], *text_of(index)) for index in order]
    finally:
        if paused:
            gc.enable()


#: Results from which making them pauses the cycle collector (below, it runs once at most).
_BULK = 1_000


def merge_rankings(plan: Plan, segment_scores: Sequence[float]) -> list[RankedPassage]:
    """One ranking over the whole input: best first, ties in input order.

    A passage's score is its best segment's score; one that was not sent
    scores ``None`` and ranks last, in input order.
    """
    scores = plan.passage_scores(segment_scores)
    return _results(plan, _order(scores), scores)


def final_ranking(
    plan: Plan,
    segment_scores: Sequence[float],
    *,
    score_transform: str = "raw",
    score_threshold: float | None = None,
    top_n: int | None = None,
) -> list[RankedPassage]:
    """``select(merge_rankings(plan, segment_scores), ...)``, making only the results kept.

    With ``top_n=10`` over 100,000 passages, ten ``RankedPassage`` values are made.
    """
    scores = plan.passage_scores(segment_scores)
    # top_n first: the threshold keeps a prefix of the order (below), so the
    # order of the two cuts does not matter, and this one is cheaper.
    order = _order(scores, top_n)
    if score_transform == "sigmoid":
        # Only for the passages that may be kept.
        scores = list(scores)
        for index in order:
            score = scores[index]
            if score is not None:
                scores[index] = sigmoid(score)
    if score_threshold is not None:
        # The transform is monotonic and unscored passages come last, so the
        # passages kept are a prefix of the order.
        kept = 0
        for index in order:
            score = scores[index]
            if score is None or score < score_threshold:
                break
            kept += 1
        order = order[:kept]
    return _results(plan, order, scores)


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
    A passage that was never scored keeps ``None`` whatever the transform, and
    no threshold lets it through.
    """
    out = list(ranking)
    if score_transform == "sigmoid":
        out = [
            p
            if p.score is None
            else RankedPassage(index=p.index, score=sigmoid(p.score), text=p.text, image=p.image)
            for p in out
        ]
    if score_threshold is not None:
        out = [p for p in out if p.score is not None and p.score >= score_threshold]
    return out if top_n is None else out[:top_n]


def describe_passages(indices: Sequence[int], limit: int = 6) -> str:
    """``passages 0-31`` / ``passages 3, 7, 9-12 ... (40 in all)``; ``indices`` ascending."""
    if not indices:
        return "no passages"
    if len(indices) > 1 and indices[-1] - indices[0] == len(indices) - 1:
        return f"passages {indices[0]}-{indices[-1]}"  # one run: the common case
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
