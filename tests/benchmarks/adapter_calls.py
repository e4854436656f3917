"""What each adapter adds to one small call of the client it wraps.

Against the fake NIM answering at once, the median of ``--calls`` sync calls of
``RankingClient.rank`` and of each framework's own entry point on the same
passages (LangChain ``compress_documents``, LlamaIndex ``postprocess_nodes``,
Haystack ``NIMRanker.run``), taking turns call by call, and what constructing a
Haystack ``NIMRanker`` costs.
The difference is the adapter's share, framework calls included (LlamaIndex's
``get_content`` and ``NodeWithScore``, Haystack's ``Document`` copies).

    .venv/bin/python tests/benchmarks/adapter_calls.py [--sizes 5,20,50] [--calls 400]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable

from fakenim import MODEL, FakeNim
from haystack import Document as HaystackDocument
from langchain_core.documents import Document
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from run import QUERY, make_texts, table

from haystack_integrations.components.rankers.nimrank import NIMRanker
from langchain_nimrank import NIMRerank as LangChainRerank
from llama_index.postprocessor.nimrank import NIMRerank as LlamaIndexRerank
from nimrank import RankingClient


def median_ms(call: Callable[[], object], calls: int) -> float:
    for _ in range(30):  # warm: connections open, caches filled
        call()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def turns_ms(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU ms of each call, the calls taking turns round by round.

    Turn-taking gives every contender the same machine: noise on a shared
    one (another process, a frequency change) hits them alike. CPU time is
    this process's: what the adapter itself costs, without the server's share
    of the wall time (a server idle for longer between requests wakes up
    later, so any work before a request shows up a second time as latency).
    """
    for call in calls.values():
        for _ in range(30):  # warm: connections open, caches filled
            call()
    walls: dict[str, list[float]] = {name: [] for name in calls}
    cpus: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            cpu, wall = time.process_time(), time.perf_counter()
            call()
            walls[name].append(time.perf_counter() - wall)
            cpus[name].append(time.process_time() - cpu)
    return {
        name: (statistics.median(walls[name]) * 1000, statistics.median(cpus[name]) * 1000)
        for name in calls
    }


def size_rows(url: str, size: int, calls: int) -> list[list[object]]:
    """The client's call and each adapter's on ``size`` passages."""
    texts = make_texts(size)
    client = RankingClient(base_url=url, model=MODEL)
    langchain = LangChainRerank(base_url=url, model=MODEL, top_n=size)
    documents = [Document(page_content=text) for text in texts]
    llama = LlamaIndexRerank(base_url=url, model=MODEL, top_n=size)
    nodes = [NodeWithScore(node=TextNode(text=text)) for text in texts]
    bundle = QueryBundle(QUERY)
    haystack = NIMRanker(api_url=url, model=MODEL, top_k=size)
    haystack.warm_up()
    haystack_documents = [HaystackDocument(content=text) for text in texts]
    adapters: dict[str, Callable[[], object]] = {
        "LangChain compress_documents": lambda: langchain.compress_documents(documents, QUERY),
        "LlamaIndex postprocess_nodes": lambda: llama.postprocess_nodes(nodes, bundle),
        "Haystack NIMRanker.run": lambda: haystack.run(query=QUERY, documents=haystack_documents),
    }
    medians = turns_ms({"RankingClient.rank": lambda: client.rank(QUERY, texts), **adapters}, calls)
    wall, cpu = medians.pop("RankingClient.rank")
    rows: list[list[object]] = [[size, "RankingClient.rank", f"{wall:.3f}", "", f"{cpu:.3f}", ""]]
    for name, (took, spent) in medians.items():
        rows.append(
            [
                size,
                name,
                f"{took:.3f}",
                f"{took - wall:+.3f}",
                f"{spent:.3f}",
                f"{spent - cpu:+.3f}",
            ]
        )
    client.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", default="5,20,50")
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the fake NIM's model, named on every call
    rows: list[list[object]] = []
    with FakeNim(latency_ms=0, per_passage_ms=0) as server:
        for size in (int(part) for part in args.sizes.split(",")):
            rows += size_rows(server.url, size, args.calls)
        built = median_ms(lambda: NIMRanker(api_url=server.url, model=MODEL), args.calls)
    header = ["N", "call", "wall ms", "added wall ms", "CPU ms", "added CPU ms"]
    print(table(header, rows))
    print("\nMedians of single calls; CPU is this process's (the server runs in another).")
    print(f"\nNIMRanker(...) construction: {built:.3f} ms (median of {args.calls})")


if __name__ == "__main__":
    main()
