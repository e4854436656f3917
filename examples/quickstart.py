"""Rerank the H100 example from NVIDIA's documentation.

With NVIDIA_API_KEY set, this asks NVIDIA's hosted catalog. Without one it
starts the embedded lexical server (`nimrank serve`) on a free loopback port
and asks that instead, so it runs with no key and no network:

    python examples/quickstart.py
"""

from __future__ import annotations

import os
from contextlib import ExitStack

from nimrank import RankingClient
from nimrank.server import RankingServer

QUERY = "What is the GPU memory bandwidth of H100 SXM?"
PASSAGES = [
    "The Hopper GPU is paired with the Grace CPU using NVIDIA's ultra-fast chip-to-chip "
    "interconnect, delivering 900GB/s of bandwidth, 7X faster than PCIe Gen5. This innovative "
    "design will deliver up to 30X higher aggregate system memory bandwidth to the GPU compared "
    "to today's fastest servers and up to 10X higher performance for applications running "
    "terabytes of data.",
    "A100 provides up to 20X higher performance over the prior generation and can be partitioned "
    "into seven GPU instances to dynamically adjust to shifting demands. The A100 80GB debuts the "
    "world's fastest memory bandwidth at over 2 terabytes per second (TB/s) to run the largest "
    "models and datasets.",
    "Accelerated servers with H100 deliver the compute power—along with 3 terabytes per second "
    "(TB/s) of memory bandwidth per GPU and scalability with NVLink and NVSwitch™.",
]


def main() -> None:
    with ExitStack() as stack:
        base_url = model = None  # the hosted catalog and its default model
        if os.environ.get("NVIDIA_API_KEY"):
            print("Ranking with NVIDIA's hosted catalog (NVIDIA_API_KEY is set).")
        else:
            server = stack.enter_context(RankingServer())
            base_url, model = server.url, server.settings.model
            print(f"No NVIDIA_API_KEY: ranking with the embedded lexical server at {base_url}.")
        client = stack.enter_context(RankingClient(base_url=base_url, model=model))
        print(f"Query: {QUERY}\n")
        for rank, passage in enumerate(client.rank(QUERY, PASSAGES), start=1):
            print(f"{rank}. [passage {passage.index}, score {passage.score:+.3f}]")
            print(f"   {passage.text[:110]}{'...' if len(passage.text) > 110 else ''}")


if __name__ == "__main__":
    main()
