"""The benchmark's passages: synthetic, deterministic, with a known full ranking.

Every passage is about 60 words (50 to 70) of filler from a small technical
vocabulary with the query's content words mixed in. Each passage gets its own
combination of query-word counts and length, and passages are kept only when
their score differs from every other one by a clear margin, so the correct
full order has no ties and "the order is right" is a strict comparison.

The scores come from the embedded server's own scorer
(:mod:`nimrank.server.scoring`), which depends only on the (query, passage)
pair: the order computed here in-process is the order the server implies.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

from nimrank.server.scoring import prepare_query, score_prepared, stem, tokenize

__all__ = ["QUERY", "Corpus", "make_corpus"]

QUERY: Final = "What is the HBM cache latency and memory bandwidth?"

# Query words of different lengths get different weights from the scorer, so
# swapping the counts of two of them changes the score instead of tying it.
_QUERY_WORDS: Final = ("HBM", "cache", "latency", "memory", "bandwidth")

# Scores closer than this are treated as a tie and avoided: a peer that maps
# logits through a sigmoid could otherwise round two of them together.
_MIN_GAP: Final = 1e-4

_SEED: Final = 20_240_611

_FILLER: Final = """
    accelerator address allocation architecture array asynchronous atomic batch
    benchmark block buffer bus capacity channel chip clock cluster coalesced
    compiler compute concurrency controller copy core counter cycle data
    datacenter decoder device die dispatch driver efficiency encoder engine
    execution fabric fetch firmware float format frequency function graph grid
    hardware host index inference instruction integer interconnect kernel lane
    launch layer layout library link load matrix model module network node
    operand operation optimizer package page partition pipeline port power
    precision prefetch processor profile program queue rack register request
    runtime scheduler sector server shader silicon socket stack storage stream
    switch system tensor thread tile token topology trace training transfer
    transformer unit vector voltage warp weight workload
    the of and to in a for with on is by from as at that this it
"""


@dataclass(frozen=True)
class Corpus:
    """A query and passages whose correct order is known.

    Attributes:
        query: the query every client ranks against.
        passages: the passage texts, in input order.
        scores: the server's logit for each passage (all distinct).
    """

    query: str
    passages: tuple[str, ...]
    scores: tuple[float, ...]

    def first(self, count: int) -> list[str]:
        """The first ``count`` passages: the input of a ``count``-passage run."""
        return list(self.passages[:count])

    def expected_order(self, count: int) -> list[int]:
        """Input indices of the first ``count`` passages, best first."""
        return sorted(range(count), key=lambda index: -self.scores[index])


def _filler_words() -> list[str]:
    """The vocabulary, minus anything the scorer would read as a query word."""
    query_terms = set(tokenize(" ".join(_QUERY_WORDS)))
    return [word for word in _FILLER.split() if stem(word) not in query_terms]


def _passage(rng: random.Random, counts: tuple[int, ...], length: int, filler: list[str]) -> str:
    words = [word for word, count in zip(_QUERY_WORDS, counts, strict=True) for _ in range(count)]
    words += rng.choices(filler, k=length - len(words))
    rng.shuffle(words)
    # Sentences of 8-14 words, so the text reads like prose to a human eye.
    sentences: list[str] = []
    start = 0
    while start < len(words):
        end = min(start + rng.randint(8, 14), len(words))
        sentence = " ".join(words[start:end])
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
        start = end
    return " ".join(sentences)


@lru_cache(maxsize=4)
def make_corpus(size: int = 1000, seed: int = _SEED) -> Corpus:
    """Build ``size`` passages with pairwise distinct scores (the same every time)."""
    rng = random.Random(seed)
    prepared = prepare_query(QUERY)
    filler = _filler_words()
    # Every (count of each query word 0-3, passage length 50-70) combination,
    # in a seeded random order: the input order is unrelated to relevance.
    combos = list(
        itertools.product(itertools.product(range(4), repeat=len(_QUERY_WORDS)), range(50, 71))
    )
    rng.shuffle(combos)
    passages: list[str] = []
    scores: list[float] = []
    taken: list[float] = []  # sorted, for the gap check
    for counts, length in combos:
        text = _passage(rng, counts, length, filler)
        score = score_prepared(prepared, text)
        at = bisect.bisect_left(taken, score)
        neighbours = taken[max(at - 1, 0) : at + 1]
        if any(abs(score - other) < _MIN_GAP for other in neighbours) or text in passages:
            continue
        taken.insert(at, score)
        passages.append(text)
        scores.append(score)
        if len(passages) == size:
            return Corpus(query=QUERY, passages=tuple(passages), scores=tuple(scores))
    raise ValueError(f"cannot make {size} passages with distinct scores from this vocabulary")
