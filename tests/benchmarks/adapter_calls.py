"""What each adapter adds to one small call of the client it wraps.

Against the fake NIM answering at once, the median of ``--calls`` sync calls of
``RankingClient.rank`` and of each framework's own entry point on the same
passages (LangChain ``compress_documents``, LlamaIndex ``postprocess_nodes``,
Haystack ``NIMRanker.run``), taking turns call by call, and what constructing a
Haystack ``NIMRanker`` costs.
The difference is the adapter's share, framework calls included (LlamaIndex's
``get_content`` and ``NodeWithScore``, Haystack's ``Document`` copies).

Beside each adapter, its framework's floor: the same client call wrapped in
only what the framework asks of any reranker (a ``floor`` row): LlamaIndex's
``get_content`` per node, ``NodeWithScore`` per result and the rerank
start/end events inside a postprocessor's span; Haystack's
``dataclasses.replace`` per result; LangChain's ``model_copy`` with the score
in ``metadata``. What an adapter adds beyond its floor is its own.

    .venv/bin/python tests/benchmarks/adapter_calls.py [--sizes 5,20,50] [--calls 400]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

from fakenim import MODEL, FakeNim
from haystack import Document as HaystackDocument
from langchain_core.documents import Document
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
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


_DISPATCHER = get_dispatcher(__name__)


class _FloorPostprocessor(BaseNodePostprocessor):
    """LlamaIndex's floor: what any reranking postprocessor does around the client's call."""

    client: Any = None

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        assert query_bundle is not None
        _DISPATCHER.event(
            ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=len(nodes), model_name=MODEL)
        )
        texts = [item.node.get_content(metadata_mode=MetadataMode.EMBED) for item in nodes]
        ranked = self.client.rank(query_bundle.query_str, texts)
        out = [NodeWithScore(node=nodes[p.index].node, score=p.score) for p in ranked]
        _DISPATCHER.event(ReRankEndEvent(nodes=out))
        return out


def _haystack_floor(client: RankingClient, documents: list[HaystackDocument]) -> object:
    ranked = client.rank(QUERY, [document.content or "" for document in documents])
    return {"documents": [dataclasses.replace(documents[p.index], score=p.score) for p in ranked]}


def _langchain_floor(client: RankingClient, documents: list[Document]) -> object:
    ranked = client.rank(QUERY, [document.page_content for document in documents])
    return [
        documents[p.index].model_copy(
            update={"metadata": {**documents[p.index].metadata, "relevance_score": p.score}}
        )
        for p in ranked
    ]


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
    floor = _FloorPostprocessor(client=client)
    adapters: dict[str, Callable[[], object]] = {
        "LangChain compress_documents": lambda: langchain.compress_documents(documents, QUERY),
        "LangChain floor": lambda: _langchain_floor(client, documents),
        "LlamaIndex postprocess_nodes": lambda: llama.postprocess_nodes(nodes, bundle),
        "LlamaIndex floor": lambda: floor.postprocess_nodes(nodes, bundle),
        "Haystack NIMRanker.run": lambda: haystack.run(query=QUERY, documents=haystack_documents),
        "Haystack floor": lambda: _haystack_floor(client, haystack_documents),
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
