"""Rerank a LangChain retriever's candidates with NIMRerank, offline.

An in-memory vector store finds candidates; ``NIMRerank`` inside LangChain's
``ContextualCompressionRetriever`` reranks them through the embedded
NIM-compatible server (``nimrank serve``, a lexical stand-in for a GPU
reranker) that this script starts on a free loopback port. No API key and no
network are needed:

    .venv/bin/python examples/langchain_retriever.py

The store's embedding is langchain-core's ``DeterministicFakeEmbedding`` (a
hash of the text, blind to meaning), so its candidates come in an arbitrary
order: the reranker is what puts the answer first. The script runs the
retriever with ``invoke`` and then with ``ainvoke`` (the async client, no
worker thread). Point ``base_url`` at a real NIM (``http://host:8000/v1``), or
drop it and set ``NVIDIA_API_KEY`` for NVIDIA's hosted catalog, to rerank with
a cross-encoder instead.
"""

from __future__ import annotations

import asyncio
import sys

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore

from langchain_nimrank import NIMRerank
from nimrank.server import RankingServer

try:
    from langchain_classic.retrievers import ContextualCompressionRetriever
except ImportError:  # LangChain 1.0 moved the retrievers out of the `langchain` package.
    sys.exit("This example needs LangChain's retrievers: pip install langchain-classic")

QUERY = "What is the GPU memory bandwidth of H100 SXM?"
CANDIDATES = 10  # what the vector store hands the reranker
TOP_N = 3

PASSAGES = [
    (
        "H100 SXM",
        "The H100 SXM GPU delivers 3.35 terabytes per second of memory bandwidth "
        "from 80GB of HBM3 memory.",
    ),
    (
        "A100",
        "The A100 80GB GPU debuts the world's fastest memory bandwidth at over 2 "
        "terabytes per second (TB/s).",
    ),
    (
        "Grace Hopper",
        "The Hopper GPU is paired with the Grace CPU over a chip-to-chip "
        "interconnect delivering 900GB/s of bandwidth.",
    ),
    (
        "H100 PCIe",
        "H100 PCIe cards fit standard servers, draw up to 350 watts and offer "
        "2 TB/s of memory bandwidth.",
    ),
    ("NVLink", "NVLink connects GPUs in a server at 900 gigabytes per second."),
    ("GPU basics", "A GPU is a processor built for parallel work such as graphics and AI."),
    ("HBM", "High bandwidth memory stacks DRAM dies beside the processor."),
    ("Cooling", "Liquid cooling lets dense racks run at full power."),
    ("Tensor cores", "Tensor cores multiply matrices in mixed precision."),
    ("InfiniBand", "InfiniBand networking links servers with low latency."),
    ("L40S", "The L40S GPU targets graphics and inference with 48GB of GDDR6 memory."),
    ("DGX", "A DGX H100 system holds eight H100 SXM GPUs."),
    ("MIG", "Multi-Instance GPU splits one GPU into up to seven isolated instances."),
    ("CUDA", "CUDA is the programming model for NVIDIA GPUs."),
]


def show(title: str, documents: list[Document]) -> None:
    print(title)
    for rank, doc in enumerate(documents, start=1):
        score = doc.metadata.get("relevance_score")
        shown = f"{score:6.2f}" if score is not None else "     -"
        print(f"  {rank:2d}. [{shown}] {doc.metadata['title']}: {doc.page_content[:60]}")
    print()


def build_retriever(server_url: str) -> tuple[BaseRetriever, ContextualCompressionRetriever]:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=256))
    store.add_documents(
        [Document(page_content=text, metadata={"title": title}) for title, text in PASSAGES]
    )
    candidates = store.as_retriever(search_kwargs={"k": CANDIDATES})
    # The ranking models the service lists, as NVIDIARerank.get_available_models gives them.
    # (Without model=..., NIMRerank takes the first one and warns which.)
    (model, *_) = NIMRerank.get_available_models(base_url=server_url)
    print(f"The service ranks with: {model.id}\n")
    reranker = NIMRerank(
        base_url=server_url,  # the embedded stand-in; a real NIM takes the same URL shape
        model=model.id,
        top_n=TOP_N,
        max_batch_size=4,  # 10 candidates -> 3 requests, sent concurrently
    )
    return candidates, ContextualCompressionRetriever(
        base_compressor=reranker, base_retriever=candidates
    )


async def main_async(retriever: ContextualCompressionRetriever) -> list[Document]:
    try:
        return await retriever.ainvoke(QUERY)
    finally:
        # The async client's connections belong to this event loop: close them with it.
        reranker = retriever.base_compressor
        assert isinstance(reranker, NIMRerank)
        await reranker.aclose()


def main() -> None:
    print(f"Query: {QUERY}\n")
    with RankingServer() as server:
        candidates, retriever = build_retriever(server.url)
        show(f"Vector store candidates (k={CANDIDATES}, fake embedding):", candidates.invoke(QUERY))

        best = retriever.invoke(QUERY)
        show(f"Reranked by NIMRerank, top {TOP_N} (invoke):", best)

        best_async = asyncio.run(main_async(retriever))
        show(f"Reranked by NIMRerank, top {TOP_N} (ainvoke):", best_async)

        batches = [request for request in server.requests if request.path == "/v1/ranking"]
        print(
            f"The server handled {len(batches)} ranking requests for the two retrievals "
            f"(at most {server.max_in_flight} at once)."
        )
        assert [doc.page_content for doc in best] == [doc.page_content for doc in best_async]
        assert best[0].metadata["title"] == "H100 SXM", "the answer should rank first"


if __name__ == "__main__":
    main()
