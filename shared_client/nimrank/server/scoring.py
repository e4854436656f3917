"""A lexical BM25-style scorer that behaves like a cross-encoder.

`nimrank serve` needs *some* relevance function so that demos, examples and
tests work with no GPU and no network. A real reranker scores each
(query, passage) pair on its own; this scorer keeps that property on purpose:

* No statistic is taken from the other passages of a request (classic BM25
  computes IDF over the collection). A term's weight is fixed: English
  stopwords weigh nothing, other terms weigh a little more the longer they
  are. Length normalisation uses a fixed average document length. So
  splitting passages across batches, reordering them or deduplicating them
  can never change a score - exactly what the client's batching relies on.
* The result looks like a logit: a passage sharing no content word with the
  query scores :data:`NO_MATCH_LOGIT` (clearly negative), a good match scores
  positive, and an empty passage scores :data:`EMPTY_PASSAGE_LOGIT`, the
  lowest value there is.

Everything here is a pure function of its arguments.

Example:
    >>> query = prepare_query("GPU memory bandwidth")
    >>> score_prepared(query, "H100 has 3 TB/s of memory bandwidth per GPU") > 0
    True
    >>> score_prepared(query, "A recipe for lemon cake")
    -5.0
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache

__all__ = [
    "AVG_DOC_LEN",
    "EMPTY_PASSAGE_LOGIT",
    "K1",
    "LOGIT_SCALE",
    "NO_MATCH_LOGIT",
    "STOPWORDS",
    "B",
    "PreparedQuery",
    "image_logit",
    "prepare_query",
    "score",
    "score_passages",
    "score_prepared",
    "sigmoid",
    "stem",
    "term_weight",
    "tokenize",
]

K1 = 1.2
"""BM25 term-frequency saturation: the 2nd occurrence helps, the 10th barely."""

B = 0.75
"""BM25 length normalisation strength (0 = none, 1 = full)."""

AVG_DOC_LEN = 60.0
"""Fixed average passage length in tokens; a collection statistic would make
a score depend on the other passages of the request."""

NO_MATCH_LOGIT = -5.0
"""Logit of a non-empty passage sharing no content term with the query."""

LOGIT_SCALE = 8.0
"""Logit gained by covering every query term once in an average-length passage."""

EMPTY_PASSAGE_LOGIT = -10.0
"""Logit of a passage with no word at all; finite so JSON can carry it."""

# Written for this project: function words that carry no topical signal
# (plus the fragments \w+ leaves of contractions: "don't" -> "don", "t").
_STOPWORD_TEXT = """
    a about above after again against all also am an and any are as at be because been
    before being below between both but by can could did do does doing don down during
    each few for from further had has have having he her here hers herself him himself
    his how i if in into is it its itself just let me more most my myself no nor not of
    off on once only or other our ours ourselves out over own same she should so some
    such than that the their theirs them themselves then there these they this those
    through to too under until up upon very was we were what when where which while who
    whom why will with would you your yours yourself yourselves s t d ll m re ve
"""
STOPWORDS: frozenset[str] = frozenset(_STOPWORD_TEXT.split())

_WORD = re.compile(r"\w+")

# For ASCII text, \w+ is runs of [A-Za-z0-9_] and casefold() is lower(): the
# same tokens come out of bytes.translate + split, about 8x faster than the
# regex (the server's hot path; see tests/benchmarks/server_throughput.py).
_ASCII_WORD_BYTES = bytes(
    c if c < 128 and (chr(c).isalnum() or c == 0x5F) else 0x20 for c in range(256)
)


@lru_cache(maxsize=1 << 16)
def stem(token: str) -> str:
    """Reduce a lowercase token to a crude stem by stripping plural endings.

    Deliberately light: it only folds plurals (``gpus`` -> ``gpu``,
    ``memories`` -> ``memory``, ``boxes`` -> ``box``) and leaves words such as
    ``bus``, ``status``, ``analysis`` or ``class`` alone. Both the query and
    the passage go through it, so an imperfect stem still matches itself.
    """
    if len(token) <= 3 or not token.endswith("s") or token in STOPWORDS:
        return token  # stopwords stay whole so "does" is not mistaken for "doe"
    if token.endswith("ies") and len(token) > 4:
        return token[:-3] + "y"
    if token.endswith(("sses", "xes", "ches", "shes", "zes")):
        return token[:-2]
    if token.endswith(("ss", "is")) or (token.endswith("us") and len(token) > 4):
        # "class", "analysis", "status", "virus" are singular; four-letter
        # "-us" words are mostly acronym plurals ("gpus", "cpus", "tpus").
        return token
    return token[:-1]


def tokenize(text: str) -> list[str]:
    """Split ``text`` into stemmed, case-folded unicode word tokens."""
    return [stem(token) for token in _WORD.findall(text.casefold())]


def term_weight(term: str) -> float:
    """Fixed weight of a stemmed query term; 0 for stopwords.

    Longer words tend to be more specific, so weight grows mildly with length
    (0.7 for two letters, 1.0 for four, capped at 1.6). Tokens mixing letters
    and digits (``h100``, ``a100``, ``900gb``) are usually product or model
    names and get a 25% bonus.
    """
    if term in STOPWORDS:
        return 0.0
    weight = min(max(0.4 + 0.15 * len(term), 0.7), 1.6)
    if any(ch.isdigit() for ch in term) and not term.isdigit():
        weight *= 1.25
    return weight


@dataclass(frozen=True)
class PreparedQuery:
    """A query reduced to its weighted terms, computed once per request.

    Attributes:
        terms: stemmed term -> weight; only terms that can contribute.
        total_weight: sum of the weights, the normaliser of a passage's score.
        surfaces: every ASCII word (as bytes) that :func:`stem` maps to one of
            the terms -> that term. Derived from ``terms``; it lets an ASCII
            passage be scored without stemming its words (the server's hot path).
    """

    terms: Mapping[str, float]
    total_weight: float
    surfaces: Mapping[bytes, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "surfaces", _surfaces(self.terms))


def _surfaces(terms: Iterable[str]) -> dict[bytes, str]:
    """The ASCII words that stem to each term.

    :func:`stem` only ever keeps a word, drops a final ``s``, drops ``es``, or
    turns ``ies`` into ``y``, so a term's words are among ``term``, ``term+s``,
    ``term+es`` and ``term[:-1]+ies``; each candidate is kept only if it really
    stems to the term, so the map is exact.
    """
    found: dict[bytes, str] = {}
    for term in terms:
        if not term.isascii():
            continue  # never a token of an ASCII passage
        candidates = [term, f"{term}s", f"{term}es"]
        if term.endswith("y"):
            candidates.append(f"{term[:-1]}ies")
        for word in candidates:
            if _WORD.fullmatch(word) and stem(word) == term:
                found[word.encode("ascii")] = term
    return found


def prepare_query(query: str) -> PreparedQuery:
    """Extract the weighted terms of ``query``.

    Repeated query words count once. A query made only of stopwords
    ("what is it") falls back to weighting every word 1, so it still
    separates passages instead of scoring them all alike.
    """
    unique = dict.fromkeys(tokenize(query))
    terms = {term: term_weight(term) for term in unique}
    terms = {term: weight for term, weight in terms.items() if weight > 0.0}
    if not terms:
        terms = dict.fromkeys(unique, 1.0)
    return PreparedQuery(terms=terms, total_weight=_add_in_order(terms.values()))


def _add_in_order(values: Iterable[float]) -> float:
    """Left-to-right float addition: the same bits on every Python (``sum()`` of
    floats rounds differently from 3.12 on, which compensates its errors)."""
    total = 0.0
    for value in values:
        total += value
    return total


_CACHED_PASSAGE_CHARS = 8192
"""Passages up to this long have their word counts cached (:func:`_ascii_counts`)."""


@lru_cache(maxsize=1024)  # a few MiB at most, and full after the first few calls
def _ascii_counts(passage: str) -> tuple[int, dict[bytes, int]]:
    """An ASCII passage's token count and its words' counts (in order of first occurrence).

    Same tokens as \\w+ on the casefolded text (see _ASCII_WORD_BYTES).
    Cached because tests, benchmarks and fleets of replicas score the same
    corpus again and again; the query plays no part, so any query reuses it.
    """
    tokens = passage.encode("ascii").lower().translate(_ASCII_WORD_BYTES).split()
    return len(tokens), Counter(tokens)


def _frequencies(query: PreparedQuery, passage: str) -> tuple[int, dict[str, int]]:
    """The passage's token count and how often each query term occurs in it."""
    frequencies: dict[str, int] = {}
    if passage.isascii():
        if len(passage) <= _CACHED_PASSAGE_CHARS:
            length, counts = _ascii_counts(passage)
        else:
            length, counts = _ascii_counts.__wrapped__(passage)
        # Only the words that stem to a query term are looked at, in order of
        # first occurrence, so the float sum in score_prepared adds up in the
        # same order as on the path that stems every word.
        surfaces = query.surfaces
        found = [word for word in surfaces if word in counts]
        if len(found) > 1:
            found.sort(key=list(counts).index)
        for word in found:
            term = surfaces[word]
            frequencies[term] = frequencies.get(term, 0) + counts[word]
        return length, frequencies
    words = _WORD.findall(passage.casefold())
    terms = query.terms
    # Count surface forms first (C speed), then stem each distinct form once.
    for word, count in Counter(words).items():
        term = stem(word)
        if term in terms:
            frequencies[term] = frequencies.get(term, 0) + count
    return len(words), frequencies


def score_prepared(query: PreparedQuery, passage: str) -> float:
    """Logit-like relevance of ``passage`` to an already prepared query.

    ``LOGIT_SCALE * coverage + NO_MATCH_LOGIT``, where coverage is the
    weighted BM25 term saturation of the query terms divided by the query's
    total weight (1.0 when each term occurs once in a passage of average
    length, at most ``K1 + 1``).
    """
    length, frequencies = _frequencies(query, passage)
    if not length:
        return EMPTY_PASSAGE_LOGIT
    if not frequencies:
        return NO_MATCH_LOGIT
    terms = query.terms
    length_norm = K1 * (1.0 - B + B * length / AVG_DOC_LEN)
    gained = 0.0
    for term, tf in frequencies.items():
        gained += terms[term] * tf * (K1 + 1.0) / (tf + length_norm)
    return LOGIT_SCALE * gained / query.total_weight + NO_MATCH_LOGIT


def score(query: str, passage: str) -> float:
    """Logit-like relevance of one (query, passage) pair.

    Example:
        >>> score("memory bandwidth", "3 TB/s of memory bandwidth") > 0
        True
    """
    return score_prepared(prepare_query(query), passage)


def score_passages(query: str, passages: Iterable[str]) -> list[float]:
    """Score each passage against ``query``; the query is prepared once.

    ``score_passages(q, ps)[i] == score(q, ps[i])`` always holds: a passage's
    score does not depend on its neighbours.
    """
    prepared = prepare_query(query)
    return [score_prepared(prepared, passage) for passage in passages]


def image_logit(image: bytes) -> float:
    """The image term of a VLM passage's logit: a stable value in [-1, 1).

    The stand-in cannot see; it derives a number from the image bytes so the
    same image always scores the same (on every run and machine) and different
    images differ: ``2 * u - 1`` where ``u`` is the first 8 bytes of the
    image's SHA-256 read as a big-endian fraction of 2**64. A passage with
    text and image scores its text's logit plus this; an image-only passage
    scores this alone.
    """
    fraction = int.from_bytes(hashlib.sha256(image).digest()[:8], "big") / 2.0**64
    return 2.0 * fraction - 1.0


def sigmoid(logit: float) -> float:
    """Map a logit to (0, 1) the way Cohere/Jina-style relevance scores look.

    Written to stay finite for any float input (no overflow in ``exp``).
    """
    if logit >= 0.0:
        return 1.0 / (1.0 + math.exp(-logit))
    odds = math.exp(logit)
    return odds / (1.0 + odds)
