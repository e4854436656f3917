"""The lexical stand-in scorer: pair-only, deterministic, logit-like."""

from __future__ import annotations

import hashlib
import math

from hypothesis import given
from hypothesis import strategies as st

from nimrank.server.scoring import (
    AVG_DOC_LEN,
    EMPTY_PASSAGE_LOGIT,
    K1,
    LOGIT_SCALE,
    NO_MATCH_LOGIT,
    B,
    image_logit,
    prepare_query,
    score,
    score_passages,
    score_prepared,
    sigmoid,
    stem,
    term_weight,
    tokenize,
)
from seed_examples import NVIDIA_RERANK_PASSAGES as SEED_PASSAGES
from seed_examples import QUERY as SEED_QUERY

MAX_LOGIT = LOGIT_SCALE * (K1 + 1.0) + NO_MATCH_LOGIT

texts = st.text(max_size=200)
wordy = st.lists(
    st.sampled_from(["gpu", "GPUs", "memory", "the", "of", "H100", "cake", "bandwidth", "é"]),
    max_size=30,
).map(" ".join)
passages_lists = st.lists(st.one_of(texts, wordy), min_size=1, max_size=12)


def test_seed_example_ranks_the_h100_passage_first() -> None:
    logits = score_passages(SEED_QUERY, SEED_PASSAGES)
    order = sorted(range(3), key=lambda i: -logits[i])
    assert order[0] == 2
    assert logits[2] > 0


def test_seed_example_ranks_a100_last_as_the_nim_does() -> None:
    logits = score_passages(SEED_QUERY, SEED_PASSAGES)
    assert logits[2] > logits[0] > logits[1]


@given(query=st.one_of(texts, wordy), passages=passages_lists, data=st.data())
def test_score_depends_only_on_the_pair(
    query: str, passages: list[str], data: st.DataObject
) -> None:
    together = score_passages(query, passages)
    alone = [score(query, passage) for passage in passages]
    assert together == alone
    # Any other batch holding the same passage gives it the same score.
    shuffled = data.draw(st.permutations(passages))
    rescored = dict(zip(shuffled, score_passages(query, shuffled), strict=True))
    for passage, logit in zip(passages, together, strict=True):
        assert rescored[passage] == logit


@given(query=st.one_of(texts, wordy), passage=st.one_of(texts, wordy))
def test_score_is_finite_and_bounded(query: str, passage: str) -> None:
    logit = score(query, passage)
    assert math.isfinite(logit)
    assert EMPTY_PASSAGE_LOGIT <= logit <= MAX_LOGIT


def test_passage_without_query_terms_scores_clearly_negative() -> None:
    assert score(SEED_QUERY, "A recipe for lemon cake with sugar.") == NO_MATCH_LOGIT
    assert NO_MATCH_LOGIT < -1


def test_strong_match_scores_positive() -> None:
    assert score("GPU memory bandwidth", "GPU memory bandwidth is 3 TB/s.") > 2


def test_stopword_overlap_alone_is_no_match() -> None:
    assert score(SEED_QUERY, "What is the point of it all?") == NO_MATCH_LOGIT


def test_empty_and_whitespace_passages_score_lowest_but_finite() -> None:
    for passage in ["", "   ", "\n\t", "!!! ---"]:
        logit = score(SEED_QUERY, passage)
        assert logit == EMPTY_PASSAGE_LOGIT
        assert math.isfinite(logit)
    assert EMPTY_PASSAGE_LOGIT < NO_MATCH_LOGIT


def test_stopword_only_query_still_separates_passages() -> None:
    query = "what is it"
    assert score(query, "what is it") > score(query, "nothing relevant here")


def test_empty_query_scores_every_passage_as_no_match() -> None:
    assert score_passages("", ["gpu", "memory"]) == [NO_MATCH_LOGIT, NO_MATCH_LOGIT]


def test_repeating_a_term_helps_with_saturation() -> None:
    # Same passage length, only the term frequency changes.
    once, twice, many = (
        score("bandwidth", " ".join(["bandwidth"] * n + ["filler"] * (30 - n))) for n in (1, 2, 20)
    )
    assert once < twice < many < MAX_LOGIT
    # Diminishing returns: the 2nd occurrence is worth more than each of the next 18.
    assert twice - once > (many - twice) / 18


def test_longer_passage_with_the_same_matches_scores_lower() -> None:
    short = "memory bandwidth of the GPU"
    long = short + " " + " ".join(f"filler{i}" for i in range(200))
    assert score(SEED_QUERY, short) > score(SEED_QUERY, long) > NO_MATCH_LOGIT


def test_more_query_terms_covered_scores_higher() -> None:
    assert score(SEED_QUERY, "GPU memory bandwidth H100") > score(SEED_QUERY, "GPU memory")


def test_plurals_and_case_match() -> None:
    assert score("GPUs", "the gpu") == score("gpu", "the GPUs")
    assert score("GPUs", "the gpu") > NO_MATCH_LOGIT
    assert score("memories", "memory") > NO_MATCH_LOGIT


def test_stemmer_only_folds_plurals() -> None:
    assert stem("gpus") == "gpu"
    assert stem("cpus") == "cpu"
    assert stem("memories") == "memory"
    assert stem("boxes") == "box"
    assert stem("classes") == "class"
    for word in ["bus", "status", "analysis", "class", "gas", "does"]:
        assert stem(word) == word


def test_tokenizer_casefolds_unicode_words() -> None:
    assert tokenize("Straße NVSwitch™, TB/s") == ["strasse", "nvswitch", "tb", "s"]
    assert score("straße", "STRASSE") > NO_MATCH_LOGIT


def test_term_weights_are_fixed_and_ignore_stopwords() -> None:
    assert term_weight("the") == 0.0
    assert term_weight("h100") > term_weight("gpu")
    assert term_weight("bandwidth") > term_weight("gpu")
    assert prepare_query("the GPU, the gpu").terms == {"gpu": term_weight("gpu")}


def test_prepared_query_gives_the_same_scores() -> None:
    prepared = prepare_query(SEED_QUERY)
    assert [score_prepared(prepared, p) for p in SEED_PASSAGES] == score_passages(
        SEED_QUERY, SEED_PASSAGES
    )


@given(st.floats(allow_nan=False, allow_infinity=True))
def test_sigmoid_stays_in_unit_interval(logit: float) -> None:
    value = sigmoid(logit)
    assert 0.0 <= value <= 1.0


def test_sigmoid_is_monotonic_over_the_logit_range() -> None:
    values = [sigmoid(x / 4) for x in range(-60, 60)]
    assert values == sorted(values)
    assert len(set(values)) == len(values)
    assert sigmoid(0.0) == 0.5


def _reference_score(query: str, passage: str) -> float:
    """The scoring rule written plainly: tokenize, stem every token, sum in order."""
    prepared = prepare_query(query)
    tokens = tokenize(passage)
    if not tokens:
        return EMPTY_PASSAGE_LOGIT
    counts: dict[str, int] = {}
    for token in tokens:
        if token in prepared.terms:
            counts[token] = counts.get(token, 0) + 1
    if not counts:
        return NO_MATCH_LOGIT
    norm = K1 * (1.0 - B + B * len(tokens) / AVG_DOC_LEN)
    gained = 0.0  # left to right, as the rule says (sum() compensates from Python 3.12 on)
    for t, tf in counts.items():
        gained += prepared.terms[t] * tf * (K1 + 1.0) / (tf + norm)
    return LOGIT_SCALE * gained / prepared.total_weight + NO_MATCH_LOGIT


# Words that exercise every stemming rule, in ASCII and not.
_STEM_WORDS = [
    "gpu",
    "gpus",
    "GPUs",
    "memory",
    "memories",
    "box",
    "boxes",
    "class",
    "classes",
    "status",
    "bus",
    "buses",
    "analysis",
    "wish",
    "wishes",
    "glass",
    "glasses",
    "fly",
    "flies",
    "y",
    "ys",
    "s",
    "does",
    "the",
    "H100",
    "h100s",
    "x",
    "xes",
    "café",
    "Straße",
    "naïve_word",
    "snake_case",
    "3TB",
    "900GB",
]
stem_heavy = st.lists(
    st.one_of(st.sampled_from(_STEM_WORDS), st.text(max_size=6)), max_size=40
).flatmap(lambda words: st.sampled_from([" ", ",", "-", "  ", "/"]).map(lambda s: s.join(words)))


@given(query=st.one_of(stem_heavy, texts), passage=st.one_of(stem_heavy, texts))
def test_the_fast_ascii_path_scores_exactly_like_the_plain_rule(query: str, passage: str) -> None:
    # The server counts ASCII passages through the query's surface forms, not
    # by stemming every word; the score must be the same float, bit for bit.
    assert score(query, passage) == _reference_score(query, passage)
    ascii_only = passage.encode("ascii", "ignore").decode()
    assert score(query, ascii_only) == _reference_score(query, ascii_only)


def test_image_logit_is_the_documented_sha256_fraction() -> None:
    data = b"\x89PNG not really"
    fraction = int.from_bytes(hashlib.sha256(data).digest()[:8], "big") / 2.0**64
    assert image_logit(data) == 2.0 * fraction - 1.0
    assert image_logit(data) == image_logit(bytes(data))
    assert image_logit(b"a") != image_logit(b"b")
    assert all(-1.0 <= image_logit(bytes([n])) < 1.0 for n in range(256))
