"""Rerank BM25 results in a Haystack pipeline with NIMRanker, offline.

A BM25 retriever over an in-memory store finds candidates; NIMRanker reranks
them through the embedded NIM-compatible server (`nimrank serve`, a lexical
stand-in for a GPU reranker) that this script starts on a free loopback port.
No API key and no network are needed:

    .venv/bin/python examples/haystack_pipeline.py

It prints the top documents before and after reranking, then saves the
pipeline as YAML, loads it back and runs the loaded copy with
``Pipeline.run_async``. Point ``api_url`` at a real NIM
(``http://host:8000/v1``) to rerank with a cross-encoder instead.
"""

from __future__ import annotations

import os

# Haystack reads this when it is imported: no usage statistics leave the machine.
os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")

import asyncio

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore

from haystack_integrations.components.rankers.nimrank import NIMRanker
from nimrank.server import RankingServer

QUERY = "What is the GPU memory bandwidth of H100 SXM?"
TOP_K = 3

DOCUMENTS = [
    Document(
        content="The Hopper GPU is paired with the Grace CPU using NVIDIA's ultra-fast "
        "chip-to-chip interconnect, delivering 900GB/s of bandwidth, 7X faster than PCIe Gen5.",
        meta={"title": "Grace Hopper Superchip"},
    ),
    Document(
        content="A100 provides up to 20X higher performance over the prior generation. The A100 "
        "80GB debuts the world's fastest memory bandwidth at over 2 terabytes per second (TB/s).",
        meta={"title": "A100 Tensor Core GPU"},
    ),
    Document(
        content="Accelerated servers with H100 deliver the compute power, along with 3 terabytes "
        "per second (TB/s) of memory bandwidth per GPU and scalability with NVLink and NVSwitch.",
        meta={"title": "H100 SXM memory bandwidth"},
    ),
    Document(
        content="What is a GPU? A graphics processing unit is a processor built for parallel "
        "work. What it does well is what many AI workloads need.",
        meta={"title": "GPU basics"},
    ),
    Document(
        content="The H100 NVL pairs two GPUs over NVLink bridges for large language models.",
        meta={"title": "H100 NVL"},
    ),
    Document(
        content="Gaming cards use GDDR6, which is cheaper than the HBM of data centre GPUs.",
        meta={"title": "Gaming GPU memory"},
    ),
    Document(
        content="SXM is a socket form factor for data centre accelerators.",
        meta={"title": "SXM form factor"},
    ),
    Document(content="Pasta should be cooked in plenty of salted water.", meta={"title": "Pasta"}),
]


def build_pipeline(api_url: str) -> Pipeline:
    """BM25 retrieval of up to 8 candidates, reranked by NIMRanker down to TOP_K."""
    store = InMemoryDocumentStore()
    store.write_documents(DOCUMENTS)
    pipeline = Pipeline()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=8))
    pipeline.add_component(
        "ranker",
        NIMRanker(
            api_url=api_url,
            top_k=TOP_K,
            meta_fields_to_embed=["title"],  # the title is ranked with the content
            max_batch_size=4,  # 8 candidates: two requests, sent concurrently
        ),
    )
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def show(heading: str, documents: list[Document]) -> None:
    print(heading)
    for rank, document in enumerate(documents, start=1):
        content = document.content or ""
        shown = content if len(content) <= 70 else content[:70] + "..."
        score = "no score" if document.score is None else f"score {document.score:+.3f}"
        print(f"  {rank}. [{score}] {document.meta.get('title')}: {shown}")
    print()


def main() -> None:
    inputs = {"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}
    with RankingServer() as server:
        print(f"Embedded lexical ranking server (a stand-in for a NIM) at {server.url}")
        print(f"Query: {QUERY}\n")

        pipeline = build_pipeline(server.url)
        result = pipeline.run(inputs, include_outputs_from={"retriever"})
        show(f"Top {TOP_K} by BM25 retrieval:", result["retriever"]["documents"][:TOP_K])
        show(f"Top {TOP_K} after NIMRanker:", result["ranker"]["documents"])
        pipeline.close()

        # The pipeline saves as YAML (the API key as an env-var reference, never
        # its value) and loads back; the loaded copy runs asynchronously too.
        yaml_text = pipeline.dumps()
        loaded = Pipeline.loads(yaml_text)

        async def run_loaded() -> list[Document]:
            try:
                output = await loaded.run_async(inputs)
            finally:
                await loaded.close_async()
            return list(output["ranker"]["documents"])

        again = asyncio.run(run_loaded())
        same = [d.id for d in again] == [d.id for d in result["ranker"]["documents"]]
        print(f"Saved as {len(yaml_text.splitlines())} lines of YAML, loaded back and run with")
        print(f"Pipeline.run_async: same top {TOP_K}: {'yes' if same else 'NO'}")
        print(f"Requests the server answered: {len(server.requests)}")


if __name__ == "__main__":
    main()
