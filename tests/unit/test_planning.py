"""Planning: dedupe, truncation, chunking, batching and the merge back (property tests).

Scores are made a function of the text sent (``score_of``), so every check can
tell whether a passage got its own score or another one's.
"""

from __future__ import annotations

import gc
import itertools
import math
import random
import sys
import threading
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from nimrank import planning
from nimrank.planning import (
    PassageOptions,
    Plan,
    cut_at_word_boundary,
    describe_passages,
    final_ranking,
    merge_rankings,
    plan_batches,
    select,
    sigmoid,
    split_windows,
)
from nimrank.protocols import COHERE, NIM, WireProtocol
from nimrank.results import Passage, RankedPassage, make_ranked

PROPERTY = settings(max_examples=100, deadline=None)

# Texts chosen to collide: duplicates, blanks, and look-alikes that must stay apart.
TRICKY = [
    "",
    " ",
    "\n\t ",
    "\u3000",
    "café",
    "cafe\u0301",  # the same word with a combining accent: another text
    "🦜🔗 LangChain",
    "👩‍👩‍👧 family",
    "ｆｕｌｌ width",
    "GPU memory bandwidth",
    "GPU memory bandwidth ",  # differs by a trailing space: another text
    "the same passage",
    "the same passage",
]
# Whitespace Python's str.isspace() knows, beyond the ASCII four.
SPACES = [" ", "  ", "\n", "\t", "\r\n", "\u00a0", "\u2003", "\u3000", "\x0c"]

passage_text = st.one_of(st.sampled_from(TRICKY), st.text(max_size=30))
passage_lists = st.lists(passage_text, max_size=40)
batch_sizes = st.one_of(st.integers(min_value=1, max_value=12), st.just(512))

word = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")),
    min_size=1,
    max_size=14,
)


@st.composite
def worded_text(draw: st.DrawFn) -> str:
    """Words (some longer than any limit) between runs of assorted whitespace."""
    words = draw(st.lists(word, min_size=1, max_size=25))
    separators = draw(
        st.lists(st.sampled_from(SPACES), min_size=len(words) + 1, max_size=len(words) + 1)
    )
    lead = separators[0] if draw(st.booleans()) else ""
    tail = separators[-1] if draw(st.booleans()) else ""
    return lead + "".join(w + s for w, s in zip(words, [*separators[1:-1], ""], strict=True)) + tail


@st.composite
def distinct_char_text(draw: st.DrawFn) -> str:
    """A worded text whose non-space characters are all different.

    Only ``isspace`` matters to the splitter, so this loses nothing, and it lets
    a test find where each window starts: its first character occurs once.
    """
    lengths = draw(st.lists(st.integers(min_value=1, max_value=14), min_size=1, max_size=25))
    separators = draw(
        st.lists(st.sampled_from(SPACES), min_size=len(lengths), max_size=len(lengths))
    )
    lead = draw(st.sampled_from(["", " ", "\n"]))
    pieces, next_char = [lead], 0x4E00  # CJK ideographs: letters, never space
    for length, separator in zip(lengths, separators, strict=True):
        pieces.append("".join(chr(next_char + k) for k in range(length)))
        pieces.append(separator)
        next_char += length
    return "".join(pieces)


def score_of(text: str) -> float:
    """A score that depends only on the text, coarse enough to make ties."""
    return float(zlib.crc32(text.encode("utf-8", "surrogatepass")) % 13) - 6.0


def as_text(segment: str | Passage) -> str:
    """A segment of a text-only plan: a plain string."""
    assert isinstance(segment, str), segment
    return segment


def scored(passage: RankedPassage) -> float:
    """The score of a passage that was sent."""
    assert passage.score is not None, passage
    return passage.score


def scores_through(plan: Plan, protocol: WireProtocol, rng: random.Random) -> list[float]:
    """Score every batch as a server would: answers in any order, read back by index."""
    scores: list[float] = []
    for batch in range(len(plan.batches)):
        texts = [as_text(segment) for segment in plan.batch_texts(batch)]
        answer = [(index, score_of(text)) for index, text in enumerate(texts)]
        rng.shuffle(answer)
        key, score_key = (
            ("rankings", "logit") if protocol is NIM else ("results", "relevance_score")
        )
        body = {key: [{"index": i, score_key: s} for i, s in answer]}
        scores.extend(protocol.parse_response(body, len(texts)))
    return scores


def is_blank(text: str) -> bool:
    return not text.strip()


def sort_key(passage: RankedPassage) -> float:
    return -math.inf if passage.score is None else passage.score


def assert_ranking_order(ranking: Sequence[RankedPassage]) -> None:
    """Best first, ties in input order, unscored (None) last in input order."""
    for better, worse in itertools.pairwise(ranking):
        assert better.score is not None or worse.score is None, (better, worse)
        assert sort_key(better) > sort_key(worse) or (
            sort_key(better) == sort_key(worse) and better.index < worse.index
        ), (better, worse)


# -- plan_batches + merge_rankings: the whole-input invariants ------------------


@PROPERTY
@given(
    passages=passage_lists,
    max_batch_size=batch_sizes,
    protocol=st.sampled_from([NIM, COHERE]),
    rng=st.randoms(use_true_random=False),
)
def test_every_passage_comes_back_once_with_its_own_score(
    passages: list[str], max_batch_size: int, protocol: WireProtocol, rng: random.Random
) -> None:
    plan = plan_batches(passages, max_batch_size)

    for batch in plan.batches:
        assert 1 <= len(batch) <= max_batch_size
    # Each distinct non-blank text is sent exactly once, in first-seen order.
    sent = [plan.segments[s] for batch in plan.batches for s in batch]
    assert sent == list(dict.fromkeys(p for p in passages if not is_blank(p)))

    ranking = merge_rankings(plan, scores_through(plan, protocol, rng))

    assert sorted(p.index for p in ranking) == list(range(len(passages)))
    for passage in ranking:
        text = passages[passage.index]
        assert passage.text == text
        assert passage.score == (None if is_blank(text) else score_of(text))
    assert_ranking_order(ranking)
    # Blank passages are last, in input order, and only they score None.
    blanks = [p for p in ranking if p.score is None]
    assert ranking[len(ranking) - len(blanks) :] == blanks
    assert {p.index for p in blanks} == {i for i, t in enumerate(passages) if is_blank(t)}


@PROPERTY
@given(passages=passage_lists, max_batch_size=batch_sizes)
def test_batches_cover_the_segments_in_order_without_overlap(
    passages: list[str], max_batch_size: int
) -> None:
    plan = plan_batches(passages, max_batch_size)
    flat = [s for batch in plan.batches for s in batch]
    assert flat == list(range(len(plan.segments)))
    # Only the last batch may be short.
    assert all(len(batch) == max_batch_size for batch in plan.batches[:-1])


@PROPERTY
@given(passages=passage_lists, max_batch_size=batch_sizes)
def test_passages_in_batch_names_exactly_the_owners_of_its_texts(
    passages: list[str], max_batch_size: int
) -> None:
    plan = plan_batches(passages, max_batch_size)
    seen: set[int] = set()
    for batch in range(len(plan.batches)):
        texts = set(plan.batch_texts(batch))
        held = plan.passages_in_batch(batch)
        assert held == sorted(i for i, p in enumerate(passages) if p in texts)
        seen.update(held)
    assert seen == {i for i, p in enumerate(passages) if not is_blank(p)}


def test_passages_in_batch_is_safe_to_ask_from_many_threads_at_once() -> None:
    # RankingClient builds each batch's request on its own worker thread. A
    # lookup table filled lazily on first use let one thread read it half-built
    # (KeyError); a tiny switch interval makes that interleaving near-certain.
    passages = [f"passage {i}" for i in range(2000)]
    workers = 8
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(20):
            plan = plan_batches(passages, 8)
            start = threading.Barrier(workers)

            def ask(worker: int, plan: Plan = plan, start: threading.Barrier = start) -> int:
                start.wait()
                batches = range(worker, len(plan.batches), workers)
                return sum(len(plan.passages_in_batch(b)) for b in batches)

            with ThreadPoolExecutor(max_workers=workers) as pool:
                assert sum(pool.map(ask, range(workers))) == len(passages)
    finally:
        sys.setswitchinterval(old_interval)


def test_plan_of_nothing_sends_nothing() -> None:
    plan = plan_batches([], 32)
    assert plan.batches == ()
    assert merge_rankings(plan, []) == []


def test_all_blank_passages_send_nothing_and_rank_in_input_order() -> None:
    plan = plan_batches(["", "  ", "\n"], 32)
    assert plan.batches == ()
    assert [(p.index, p.score) for p in merge_rankings(plan, [])] == [
        (0, None),
        (1, None),
        (2, None),
    ]


def test_ties_keep_input_order() -> None:
    plan = plan_batches(["a", "b", "c", "d"], 2)
    ranking = merge_rankings(plan, [1.0, 2.0, 1.0, 2.0])
    assert [p.index for p in ranking] == [1, 3, 0, 2]


def test_duplicates_share_one_segment_and_one_score() -> None:
    plan = plan_batches(["x", "y", "x", "x"], 32)
    assert plan.segments == ("x", "y")
    ranking = merge_rankings(plan, [5.0, 1.0])
    assert [(p.index, p.score) for p in ranking] == [(0, 5.0), (2, 5.0), (3, 5.0), (1, 1.0)]


def test_merge_refuses_a_wrong_number_of_scores() -> None:
    plan = plan_batches(["a", "b"], 32)
    with pytest.raises(ValueError, match="expected 2 segment scores, got 1"):
        merge_rankings(plan, [1.0])


# -- client-side truncation ----------------------------------------------------


@PROPERTY
@given(
    passages=st.lists(st.one_of(worded_text(), passage_text), max_size=12),
    limit=st.integers(min_value=1, max_value=40),
)
def test_truncation_keeps_the_start_of_each_passage_within_the_limit(
    passages: list[str], limit: int
) -> None:
    plan = plan_batches(passages, 8, PassageOptions(max_passage_chars=limit))
    for text, segment_ids in zip(passages, plan.segments_of, strict=True):
        if is_blank(text):
            assert segment_ids == ()
            continue
        assert len(segment_ids) == 1
        segment = as_text(plan.segments[segment_ids[0]])
        if len(text) <= limit:
            assert segment == text
            continue
        assert 0 < len(segment) <= limit
        assert not segment[0].isspace()
        assert not segment[-1].isspace()
        # The start of the text (after leading whitespace) is what is kept.
        body = text.lstrip()
        assert body.startswith(segment)
        # Cut at a word boundary, unless the first word alone is over the limit.
        rest = body[len(segment) :]
        if rest and not rest[0].isspace():
            assert not any(c.isspace() for c in segment)
            assert len(segment) == limit


def test_truncation_cuts_between_words() -> None:
    plan = plan_batches(["alpha beta gamma"], 8, PassageOptions(max_passage_chars=12))
    assert plan.segments == ("alpha beta",)


def test_truncation_of_text_with_leading_whitespace_sends_a_non_empty_start() -> None:
    text = "\n\n" + "https://example.com/" + "a" * 60 + " tail"
    plan = plan_batches([text], 8, PassageOptions(max_passage_chars=30))
    assert plan.segments == (text.lstrip()[:30],)


def test_passages_equal_after_truncation_are_scored_once() -> None:
    options = PassageOptions(max_passage_chars=5)
    plan = plan_batches(["same start A", "same start B"], 8, options)
    assert plan.segments == ("same",)
    assert plan.segments_of == ((0,), (0,))


# -- cut_at_word_boundary ------------------------------------------------------


@PROPERTY
@given(
    text=st.one_of(worded_text(), st.text(max_size=60)), limit=st.integers(1, 30), data=st.data()
)
def test_cut_never_splits_a_word_that_fits(text: str, limit: int, data: st.DataObject) -> None:
    starts = [i for i, c in enumerate(text) if not c.isspace()]
    assume(starts)
    start = data.draw(st.sampled_from(starts))
    end = cut_at_word_boundary(text, start, limit)

    assert start < end <= min(start + limit, len(text))
    boundaries = [
        p
        for p in range(start + 1, start + limit + 1)
        if p == len(text) or (p < len(text) and text[p].isspace())
    ]
    if boundaries:
        # The longest piece that ends at a word boundary.
        assert end == max(boundaries)
    else:
        # No boundary within reach: the word is longer than the limit and is cut.
        assert end == start + limit
        assert not any(c.isspace() for c in text[start:end])


@pytest.mark.parametrize(
    ("text", "start", "limit", "end"),
    [
        ("alpha beta gamma", 0, 12, 10),
        ("alpha beta gamma", 0, 10, 10),
        ("alpha beta gamma", 0, 100, 16),
        ("alpha beta gamma", 6, 6, 10),
        ("supercalifragilistic", 0, 5, 5),
        ("alpha\u3000beta", 0, 8, 5),  # an ideographic space is a word boundary too
        ("alpha\u00a0beta", 0, 8, 5),
    ],
)
def test_cut_examples(text: str, start: int, limit: int, end: int) -> None:
    assert cut_at_word_boundary(text, start, limit) == end


# -- split_windows (chunking) --------------------------------------------------


@st.composite
def window_settings(draw: st.DrawFn) -> tuple[int, int, int | None]:
    limit = draw(st.integers(min_value=1, max_value=40))
    overlap = draw(st.integers(min_value=0, max_value=limit - 1))
    max_windows = draw(st.one_of(st.none(), st.integers(min_value=1, max_value=6)))
    return limit, overlap, max_windows


@PROPERTY
@given(text=st.one_of(worded_text(), st.text(max_size=120)), config=window_settings())
def test_windows_are_non_empty_within_the_limit_and_capped(
    text: str, config: tuple[int, int, int | None]
) -> None:
    limit, overlap, max_windows = config
    windows = split_windows(text, limit, overlap, max_windows)
    assert (not windows) == is_blank(text)
    if max_windows is not None:
        assert len(windows) <= max_windows
    for window in windows:
        assert 0 < len(window) <= limit
        assert not window[0].isspace()
        assert not window[-1].isspace()
        assert window in text


def window_starts(text: str, windows: Sequence[str]) -> list[int]:
    # Each non-space character of a distinct_char_text occurs exactly once.
    return [text.index(window[0]) for window in windows]


@PROPERTY
@given(text=distinct_char_text(), config=window_settings())
def test_windows_start_at_words_and_overlap_or_touch(
    text: str, config: tuple[int, int, int | None]
) -> None:
    limit, overlap, max_windows = config
    windows = split_windows(text, limit, overlap, max_windows)
    starts = window_starts(text, windows)
    ends = [start + len(window) for start, window in zip(starts, windows, strict=True)]
    for i, (start, window) in enumerate(zip(starts, windows, strict=True)):
        assert text[start : start + len(window)] == window
        word_start = start == 0 or text[start - 1].isspace()
        # Only a word longer than the limit is split, and its next piece starts
        # where the previous window stopped.
        continues_long_word = (
            i > 0 and ends[i - 1] == start and not any(c.isspace() for c in windows[i - 1])
        )
        assert word_start or continues_long_word, (windows, i)
    for i in range(1, len(windows)):
        assert starts[i - 1] < starts[i]
        # Overlap or touch: no non-space character between two windows is skipped.
        gap = text[ends[i - 1] : starts[i]]
        assert not gap.strip(), (windows, i)


@PROPERTY
@given(text=distinct_char_text(), config=window_settings())
def test_uncapped_windows_cover_every_non_space_character(
    text: str, config: tuple[int, int, int | None]
) -> None:
    limit, overlap, _ = config
    windows = split_windows(text, limit, overlap, None)
    covered: set[int] = set()
    for start, window in zip(window_starts(text, windows), windows, strict=True):
        covered.update(range(start, start + len(window)))
    assert {i for i, c in enumerate(text) if not c.isspace()} <= covered


@PROPERTY
@given(text=distinct_char_text(), config=window_settings())
def test_next_window_repeats_a_last_word_that_fits_in_the_overlap(
    text: str, config: tuple[int, int, int | None]
) -> None:
    limit, overlap, max_windows = config
    windows = split_windows(text, limit, overlap, max_windows)
    starts = window_starts(text, windows)
    for i in range(1, len(windows)):
        previous, start = windows[i - 1], starts[i - 1]
        spaces = [k for k, c in enumerate(previous) if c.isspace()]
        if not spaces:
            continue
        last_word = start + spaces[-1] + 1
        # Where the previous window's piece of text ended (before trailing space).
        piece_end = cut_at_word_boundary(text, start, limit)
        if piece_end - last_word <= overlap:
            assert starts[i] <= last_word, (windows, i)


def test_windows_example() -> None:
    text = "one two three four five six"
    assert split_windows(text, 9, 4, None) == ["one two", "two three", "four five", "five six"]
    assert split_windows(text, 9, 0, None) == ["one two", "three", "four five", "six"]
    assert split_windows(text, 9, 4, 2) == ["one two", "two three"]


def test_long_word_is_cut_into_touching_pieces() -> None:
    assert split_windows("abcdefghij", 4, 2, None) == ["abcd", "efgh", "ij"]


@PROPERTY
@given(
    passages=st.lists(st.one_of(worded_text(), st.sampled_from(TRICKY)), max_size=10),
    config=window_settings(),
    max_batch_size=batch_sizes,
    rng=st.randoms(use_true_random=False),
)
def test_chunked_passage_scores_its_best_window(
    passages: list[str],
    config: tuple[int, int, int | None],
    max_batch_size: int,
    rng: random.Random,
) -> None:
    limit, overlap, max_windows = config
    options = PassageOptions(
        max_passage_chars=limit,
        chunking=True,
        chunk_overlap_chars=overlap,
        max_chunks_per_doc=max_windows,
    )
    plan = plan_batches(passages, max_batch_size, options)
    # Each distinct window is sent once, however many passages share it.
    assert len(set(plan.segments)) == len(plan.segments)
    assert all(len(as_text(segment)) <= limit for segment in plan.segments)

    ranking = merge_rankings(plan, scores_through(plan, NIM, rng))
    assert sorted(p.index for p in ranking) == list(range(len(passages)))
    for passage in ranking:
        text = passages[passage.index]
        if is_blank(text):
            expected = None
        elif len(text) <= limit:
            expected = score_of(text)
        else:
            expected = max(score_of(w) for w in split_windows(text, limit, overlap, max_windows))
        assert passage.score == expected
        assert passage.text == text  # the whole passage comes back, not a window
    assert_ranking_order(ranking)


def test_window_repeated_inside_a_passage_is_one_segment() -> None:
    options = PassageOptions(max_passage_chars=4, chunking=True, chunk_overlap_chars=0)
    plan = plan_batches(["spam spam spam"], 8, options)
    assert plan.segments == ("spam",)
    assert plan.segments_of == ((0,),)


# -- select: transform, then threshold, then top_n ------------------------------

finite_scores = st.floats(min_value=-1000, max_value=1000, allow_nan=False)


@PROPERTY
@given(a=finite_scores, b=finite_scores)
def test_sigmoid_is_monotone_and_within_zero_and_one(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 0.0 <= sigmoid(low) <= sigmoid(high) <= 1.0


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (0.0, 0.5),
        (1000.0, 1.0),
        (-1000.0, 0.0),
        (1e308, 1.0),
        (-1e308, 0.0),
        (2.0, 0.8807970779778823),
    ],
)
def test_sigmoid_values_without_overflow(x: float, expected: float) -> None:
    value = sigmoid(x)
    assert type(value) is float
    assert value == pytest.approx(expected, abs=1e-15)


def test_sigmoid_is_symmetric() -> None:
    for x in (0.1, 1.0, 5.0, 30.0):
        assert sigmoid(x) + sigmoid(-x) == pytest.approx(1.0, abs=1e-15)


def ranking_of(scores: Sequence[float]) -> list[RankedPassage]:
    """A merged ranking (sorted, ties in input order) over the given scores."""
    plan = plan_batches([f"p{i}" for i in range(len(scores))], 4)
    return merge_rankings(plan, list(scores))


@PROPERTY
@given(
    scores=st.lists(finite_scores, max_size=20),
    transform=st.sampled_from(["raw", "sigmoid"]),
    threshold=st.one_of(st.none(), st.floats(min_value=-5, max_value=5)),
    top_n=st.one_of(st.none(), st.integers(min_value=0, max_value=25)),
)
def test_select_transforms_then_thresholds_then_cuts(
    scores: list[float], transform: str, threshold: float | None, top_n: int | None
) -> None:
    ranking = ranking_of(scores)
    out = select(ranking, score_transform=transform, score_threshold=threshold, top_n=top_n)

    transformed = [sigmoid(scored(p)) if transform == "sigmoid" else scored(p) for p in ranking]
    kept = [
        (p.index, score)
        for p, score in zip(ranking, transformed, strict=True)
        if threshold is None or score >= threshold
    ]
    expected = kept if top_n is None else kept[:top_n]
    assert [(p.index, p.score) for p in out] == expected
    assert all(p.text == f"p{p.index}" for p in out)


def test_threshold_applies_to_the_transformed_score() -> None:
    ranking = ranking_of([3.0, 0.0, -3.0])
    # On raw scores 0.5 would drop the 0.0 logit; on sigmoid scores it keeps it (0.5).
    out = select(ranking, score_transform="sigmoid", score_threshold=0.5)
    assert [p.index for p in out] == [0, 1]
    assert [p.index for p in select(ranking, score_threshold=0.5)] == [0]


def test_threshold_is_applied_before_top_n() -> None:
    ranking = ranking_of([5.0, 4.0, 1.0, 0.0])
    assert [p.index for p in select(ranking, score_threshold=2.0, top_n=3)] == [0, 1]
    assert [p.index for p in select(ranking, top_n=3)] == [0, 1, 2]


@pytest.mark.parametrize(("top_n", "count"), [(0, 0), (1, 1), (3, 3), (10, 3), (None, 3)])
def test_top_n_cuts_the_ranking(top_n: int | None, count: int) -> None:
    assert len(select(ranking_of([1.0, 2.0, 3.0]), top_n=top_n)) == count


def test_sigmoid_keeps_the_order_of_logits_it_rounds_together() -> None:
    # sigmoid(40) == sigmoid(41) == 1.0 in float64; the raw order must survive.
    ranking = ranking_of([40.0, 41.0])
    out = select(ranking, score_transform="sigmoid")
    assert [p.index for p in out] == [1, 0]
    assert [p.score for p in out] == [1.0, 1.0]


def test_raw_transform_leaves_scores_untouched() -> None:
    ranking = ranking_of([12.5, -7.25])
    assert select(ranking) == ranking


@pytest.mark.parametrize("transform", ["raw", "sigmoid"])
def test_blank_passages_stay_unscored_under_any_transform_and_no_threshold_keeps_them(
    transform: str,
) -> None:
    plan = plan_batches(["gpu", "  ", "cpu"], 8)
    ranking = merge_rankings(plan, [2.0, -30.0])

    everything = select(ranking, score_transform=transform)
    assert [(p.index, p.score) for p in everything][-1] == (1, None)

    kept = select(ranking, score_transform=transform, score_threshold=0.0)
    assert 1 not in [p.index for p in kept]


# -- final_ranking: merge + select, making only the results kept ---------------


def test_a_large_plan_holds_no_container_per_passage() -> None:
    # The cost per passage stays flat in N: no tuple, list or result object per
    # passage is made until the results are (gc tracks every container).
    import gc

    passages = [f"passage {i}" for i in range(20_000)]
    gc.collect()
    before = len(gc.get_objects())
    plan = plan_batches(passages, 32)
    assert len(gc.get_objects()) - before < 1_000
    assert len(plan.batches) == 625
    ten = final_ranking(plan, [float(i % 7) for i in range(20_000)], top_n=10)
    assert [p.index for p in ten] == [6, 13, 20, 27, 34, 41, 48, 55, 62, 69]


# -- image passages: Passage(text=..., image=...) mixed with strings -----------

IMAGES = ["data:image/png;base64,AAAA", "data:image/png;base64,BBBB", "data:image/gif;base64,R0lG"]
some_text = st.one_of(st.none(), passage_text, worded_text())
mixed_passage = st.one_of(
    passage_text,
    st.builds(Passage, text=some_text, image=st.one_of(st.none(), st.sampled_from(IMAGES))),
)


def key_of(passage: str | Passage) -> tuple[str | None, str | None]:
    """The dedupe key: (text, image); blank text beside an image is no text."""
    if isinstance(passage, str):
        return passage, None
    text = passage.text if passage.text is not None and not is_blank(passage.text) else None
    return (text if passage.image is not None else passage.text), passage.image


def segment_score(segment: str | Passage) -> float:
    """A score of everything a segment sends: its text and its image."""
    if isinstance(segment, str):
        return score_of(segment)
    return score_of(f"{segment.text!r}|{segment.image}")


def is_unscored(passage: str | Passage) -> bool:
    text = passage if isinstance(passage, str) else passage.text
    image = None if isinstance(passage, str) else passage.image
    return image is None and (text is None or is_blank(text))


@PROPERTY
@given(
    passages=st.lists(mixed_passage, max_size=30),
    max_batch_size=batch_sizes,
    chunk=st.one_of(st.none(), window_settings()),
    rng=st.randoms(use_true_random=False),
)
def test_mixed_passages_come_back_once_each_with_their_own_score(
    passages: list[str | Passage],
    max_batch_size: int,
    chunk: tuple[int, int, int | None] | None,
    rng: random.Random,
) -> None:
    options = (
        PassageOptions()
        if chunk is None
        else PassageOptions(
            max_passage_chars=chunk[0],
            chunking=True,
            chunk_overlap_chars=chunk[1],
            max_chunks_per_doc=chunk[2],
        )
    )
    plan = plan_batches(passages, max_batch_size, options)

    # Batches: consecutive segment ids, every segment once, only the last one short.
    assert [s for batch in plan.batches for s in batch] == list(range(len(plan.segments)))
    assert all(len(batch) == max_batch_size for batch in plan.batches[:-1])
    # Each distinct segment is sent once; an image travels only in a Passage
    # segment, and a text-only segment is a plain string.
    assert len(set(plan.segments)) == len(plan.segments)
    for segment in plan.segments:
        if isinstance(segment, Passage):
            assert segment.image is not None
            assert segment.text is None or not is_blank(segment.text)

    for passage, ids in zip(passages, plan.segments_of, strict=True):
        if is_unscored(passage):
            assert ids == ()
            continue
        segments = [plan.segments[s] for s in ids]
        if isinstance(passage, Passage) and passage.image is not None:
            # Every window carries the image; an image-only passage is one segment.
            assert all(isinstance(s, Passage) and s.image == passage.image for s in segments)
            if key_of(passage)[0] is None:
                assert segments == [Passage(image=passage.image)]
        else:
            assert all(isinstance(s, str) for s in segments)
    # Same (text, image) key, same segments.
    by_key: dict[tuple[str | None, str | None], tuple[int, ...]] = {}
    for passage, ids in zip(passages, plan.segments_of, strict=True):
        if not is_unscored(passage):
            assert by_key.setdefault(key_of(passage), ids) == ids

    # Score every batch through the NIM wire format, answers shuffled.
    scores: list[float] = []
    for batch in range(len(plan.batches)):
        sent = NIM.build_request(
            model="m", query="q", passages=plan.batch_texts(batch), truncate=None
        )["passages"]
        for item, segment in zip(sent, plan.batch_texts(batch), strict=True):
            if isinstance(segment, Passage):
                assert item.get("image") == segment.image
                assert ("text" in item) == (segment.text is not None)
            else:
                assert item == {"text": segment}
        answer = [(i, segment_score(s)) for i, s in enumerate(plan.batch_texts(batch))]
        rng.shuffle(answer)
        body = {"rankings": [{"index": i, "logit": s} for i, s in answer]}
        scores.extend(NIM.parse_response(body, len(answer)))

    ranking = merge_rankings(plan, scores)
    assert sorted(p.index for p in ranking) == list(range(len(passages)))
    for ranked in ranking:
        passage = passages[ranked.index]
        ids = plan.segments_of[ranked.index]
        if is_unscored(passage):
            assert ranked.score is None
        else:
            assert ranked.score == max(segment_score(plan.segments[s]) for s in ids)
        if isinstance(passage, Passage):
            assert (ranked.text, ranked.image) == (passage.text or "", passage.image)
        else:
            assert (ranked.text, ranked.image) == (passage, None)
    assert_ranking_order(ranking)
    # Unscored passages, and only they, are last in input order.
    unscored = [p.index for p in ranking if p.score is None]
    assert unscored == [i for i, p in enumerate(passages) if is_unscored(p)]
    assert [p.index for p in ranking[len(ranking) - len(unscored) :]] == unscored


def test_passage_without_an_image_is_the_same_passage_as_its_text() -> None:
    plan = plan_batches(["x", Passage(text="x"), Passage(text="x", image=IMAGES[0])], 8)
    assert plan.segments == ("x", Passage(text="x", image=IMAGES[0]))
    assert plan.segments_of == ((0,), (0,), (1,))


def test_blank_passages_of_every_kind_are_unscored() -> None:
    plan = plan_batches([Passage(), Passage(text="  "), Passage(text=""), "\n"], 8)
    assert plan.batches == ()
    assert [p.score for p in merge_rankings(plan, [])] == [None] * 4


def test_image_with_blank_text_is_sent_as_the_image_alone() -> None:
    plan = plan_batches([Passage(text=" \n", image=IMAGES[0]), Passage(image=IMAGES[0])], 8)
    assert plan.segments == (Passage(image=IMAGES[0]),)
    assert plan.segments_of == ((0,), (0,))


def test_chunked_image_passage_sends_each_window_with_the_image() -> None:
    options = PassageOptions(max_passage_chars=9, chunking=True, chunk_overlap_chars=0)
    plan = plan_batches([Passage("one two three four", IMAGES[1])], 8, options)
    assert plan.segments == (
        Passage("one two", IMAGES[1]),
        Passage("three", IMAGES[1]),
        Passage("four", IMAGES[1]),
    )
    ranking = merge_rankings(plan, [1.0, 3.0, 2.0])
    assert ranking == [RankedPassage(0, 3.0, "one two three four", IMAGES[1])]


def test_truncation_cuts_the_text_and_keeps_the_image() -> None:
    plan = plan_batches([Passage("alpha beta gamma", IMAGES[2])], 8, PassageOptions(12))
    assert plan.segments == (Passage("alpha beta", IMAGES[2]),)


@pytest.mark.parametrize("transform", ["raw", "sigmoid"])
def test_unscored_passages_stay_none_in_final_ranking_and_no_threshold_keeps_them(
    transform: str,
) -> None:
    plan = plan_batches(["gpu", "  ", "cpu"], 8)
    everything = final_ranking(plan, [2.0, -30.0], score_transform=transform)
    assert [(p.index, p.score is None) for p in everything][-1] == (1, True)
    kept = final_ranking(plan, [2.0, -30.0], score_transform=transform, score_threshold=-1e9)
    assert 1 not in [p.index for p in kept]


@pytest.mark.parametrize(
    ("indices", "text"),
    [
        ([], "no passages"),
        ([5], "passage 5"),
        ([32, 33, 34], "passages 32-34"),
        ([0, 2, 3, 4, 9], "passages 0, 2-4, 9"),
        (list(range(0, 30, 2)), "passages 0, 2, 4, 6, 8, 10 ... (15 in all)"),
    ],
)
def test_describe_passages(indices: list[int], text: str) -> None:
    assert describe_passages(indices) == text


@PROPERTY
@given(
    passages=st.lists(mixed_passage, max_size=40),
    transform=st.sampled_from(["raw", "sigmoid"]),
    threshold=st.one_of(st.none(), st.floats(min_value=-8, max_value=8)),
    top_n=st.one_of(st.none(), st.integers(min_value=0, max_value=45)),
)
def test_final_ranking_is_select_of_the_merged_ranking(
    passages: list[str | Passage], transform: str, threshold: float | None, top_n: int | None
) -> None:
    plan = plan_batches(passages, 5)
    scores = [segment_score(segment) for segment in plan.segments]
    expected = select(
        merge_rankings(plan, scores),
        score_transform=transform,
        score_threshold=threshold,
        top_n=top_n,
    )
    assert (
        final_ranking(
            plan, scores, score_transform=transform, score_threshold=threshold, top_n=top_n
        )
        == expected
    )


@pytest.mark.parametrize("top_n", [0, 1, 3, 10, 49, 50, 51, 199, 200, 201, None])
def test_final_ranking_of_the_best_few_keeps_ties_and_blanks_in_input_order(
    top_n: int | None,
) -> None:
    # Many ties (13 distinct scores) and blanks: the best-few path must agree
    # with sorting everything.
    rng = random.Random(top_n)
    passages = [rng.choice(["", " ", f"p{i}"]) if i % 5 == 0 else f"p{i}" for i in range(200)]
    plan = plan_batches(passages, 16)
    scores = [score_of(as_text(segment)) for segment in plan.segments]
    for transform in ("raw", "sigmoid"):
        assert final_ranking(plan, scores, score_transform=transform, top_n=top_n) == select(
            merge_rankings(plan, scores), score_transform=transform, top_n=top_n
        )


def test_describe_batch_names_the_batch_and_its_passages() -> None:
    plan = plan_batches(["a", "b", "", "c", "a", "d"], 2)
    assert [plan.describe_batch(b) for b in range(len(plan.batches))] == [
        "batch 1 of 2 (passages 0-1, 4)",
        "batch 2 of 2 (passages 3, 5)",
    ]


def test_a_bulk_merge_leaves_the_cycle_collector_as_it_found_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The merge pauses the collector while it makes many results; it must be
    # back on after, also when making them fails, and stay off if it was off.
    texts = [f"passage {i}" for i in range(2_000)]
    plan = plan_batches(texts, 64)
    scores = [float(i % 97) for i in range(len(plan.segments))]
    seen: list[bool] = []
    real = make_ranked

    def spy(*args: object) -> object:
        seen.append(gc.isenabled())
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(planning, "make_ranked", spy)
    assert gc.isenabled()
    assert len(final_ranking(plan, scores)) == 2_000
    assert not any(seen)
    assert gc.isenabled()

    seen.clear()
    assert len(final_ranking(plan, scores, top_n=10)) == 10  # ten results: not paused
    assert all(seen)
    assert gc.isenabled()

    def failing(*args: object) -> object:
        raise MemoryError

    monkeypatch.setattr(planning, "make_ranked", failing)
    with pytest.raises(MemoryError):
        final_ranking(plan, scores)
    assert gc.isenabled()

    monkeypatch.setattr(planning, "make_ranked", real)
    gc.disable()
    try:
        final_ranking(plan, scores)
        assert not gc.isenabled()
    finally:
        gc.enable()
