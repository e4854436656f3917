"""Truncation against chunking, on a passage whose answer comes late.

A RAG chunk is often longer than the reranker's window. Cut at the window and
whatever comes after the cut is never seen; split into overlapping windows and
the passage is scored by its best window. This script shows the difference on
the embedded lexical server (offline, no key):

    python examples/long_passages.py
"""

from __future__ import annotations

from typing import Any

from nimrank import RankingClient, RankingOptions
from nimrank.server import RankingServer

QUERY = "What is the memory bandwidth of the H100 SXM GPU?"

# ~1,900 characters of preamble, then the one sentence that answers the query.
FILLER = (
    "This datasheet describes the data center product family, its thermal design, "
    "supported server chassis, firmware update policy, warranty terms and the support "
    "channels available to enterprise customers. "
)
LONG_ANSWER = FILLER * 9 + (
    "The H100 SXM GPU delivers 3.35 terabytes per second of memory bandwidth from its HBM3 "
    "memory, the highest memory bandwidth of any GPU in the family."
)
SHORT_DISTRACTORS = [
    "The A100 GPU offers 2 terabytes per second of memory bandwidth on the 80GB model.",
    "H100 PCIe cards fit standard servers and draw up to 350 watts.",
    "GPU memory is high bandwidth memory stacked beside the die.",
]
PASSAGES = [LONG_ANSWER, *SHORT_DISTRACTORS]
WINDOW = 512  # characters the client sends per passage (or per window)


def rank_of_long_passage(client: RankingClient) -> tuple[int, float]:
    """Where the long passage lands (1 = first) and its score."""
    ranking = client.rank(QUERY, PASSAGES)
    position = next(i for i, passage in enumerate(ranking) if passage.index == 0)
    score = ranking[position].score
    assert score is not None  # only a blank passage is unscored
    return position + 1, score


def main() -> None:
    print(f"Query: {QUERY}")
    print(
        f"The long passage has {len(LONG_ANSWER)} characters; its answer starts at "
        f"character {LONG_ANSWER.index('The H100 SXM')}. Window: {WINDOW} characters.\n"
    )
    with RankingServer() as server:
        settings: dict[str, dict[str, Any]] = {
            "truncation (max_passage_chars only)": {"max_passage_chars": WINDOW},
            "chunking (max_passage_chars + chunking=True)": {
                "max_passage_chars": WINDOW,
                "chunking": True,
                "max_chunks_per_doc": 8,
            },
        }
        for name, options in settings.items():
            with RankingClient(RankingOptions(base_url=server.url, **options)) as client:
                position, score = rank_of_long_passage(client)
            print(
                f"{name:<46} long passage ranks {position} of {len(PASSAGES)} (score {score:+.3f})"
            )


if __name__ == "__main__":
    main()
