"""Rerank a LlamaIndex query engine's candidates with NIMRerank, offline.

    .venv/bin/python examples/llama_index_query_engine.py

Starts the embedded ranking server (a lexical BM25 stand-in for a NIM reranker:
no GPU, no key, no network) on a free loopback port, indexes a dozen short
documents with LlamaIndex's MockEmbedding and answers with MockLLM, then shows
the retriever's top nodes before and after NIMRerank, with sync ``query()``
and async ``aquery()``.

With a real reranker the only change is the constructor:

    NIMRerank(base_url="http://localhost:8000/v1", top_n=3)  # a self-hosted NIM
    NIMRerank(top_n=3)  # NVIDIA's hosted catalog, key from NVIDIA_API_KEY
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.response.schema import Response
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM
from llama_index.core.schema import NodeWithScore

from llama_index.postprocessor.nimrank import NIMRerank
from nimrank.server import RankingServer

QUERY = "What is the GPU memory bandwidth of H100 SXM?"
CANDIDATES = 12  # what the retriever hands to the reranker
TOP_N = 3  # what the reranker hands to the LLM
DOCUMENTS = {
    "h100-datasheet": "Accelerated servers with H100 SXM deliver 3 terabytes per second (TB/s) "
    "of GPU memory bandwidth and scale with NVLink and NVSwitch.",
    "grace-hopper": "The Hopper GPU is paired with the Grace CPU over a 900GB/s chip-to-chip "
    "interconnect, 7X faster than PCIe Gen5.",
    "a100-datasheet": "The A100 80GB debuts over 2 terabytes per second of memory bandwidth to "
    "run the largest models and datasets.",
    "h100-nvl": "H100 NVL pairs two GPUs with 3.9 TB/s of memory bandwidth each for LLM inference.",
    "hgx": "SXM modules mount directly on the HGX baseboard.",
    "roofline": "GPU memory bandwidth, not compute, bounds the decode phase of large model "
    "inference.",
    "cafeteria": "The cafeteria serves soup on Fridays.",
    "parking": "Visitor parking is behind building B.",
    "bananas": "Bananas are a good source of potassium.",
    "tennis": "Tennis balls are yellow so that players can see them.",
    "printer": "The third-floor printer jams on thick paper.",
    "holidays": "The office closes between Christmas and New Year.",
}


def show(title: str, nodes: Sequence[NodeWithScore]) -> None:
    print(title)
    for rank, item in enumerate(nodes, start=1):
        text = item.node.get_content()
        print(f"  {rank}. {item.score:+7.3f}  [{item.node.metadata['source']}] {text[:64]}...")
    print()


async def ask_async(engine: BaseQueryEngine, reranker: NIMRerank) -> Response:
    response = await engine.aquery(QUERY)
    await reranker.aclose()  # the async client's connections belong to this event loop
    assert isinstance(response, Response)
    return response


def main() -> None:
    documents = [Document(text=text, metadata={"source": key}) for key, text in DOCUMENTS.items()]
    # MockEmbedding gives every text the same vector, so every node ties and the
    # retrieval order below is arbitrary: whatever order the reranker prints is
    # its own. Swap in a real embedding model for a real application.
    index = VectorStoreIndex.from_documents(documents, embed_model=MockEmbedding(embed_dim=64))

    with RankingServer() as server:
        print(f"Embedded ranking server (lexical BM25 stand-in) at {server.url}")
        print(f"Query: {QUERY}\n")

        retrieved = index.as_retriever(similarity_top_k=CANDIDATES).retrieve(QUERY)
        show(f"Top {TOP_N} of {len(retrieved)} retrieved, before reranking:", retrieved[:TOP_N])

        # The one line a query engine needs (without model=..., the first model the
        # server lists is used, with a warning); max_batch_size=5 makes the client
        # send the 12 candidates as 3 concurrent requests.
        model = server.settings.model
        reranker = NIMRerank(base_url=server.url, model=model, top_n=TOP_N, max_batch_size=5)
        engine = index.as_query_engine(
            llm=MockLLM(), similarity_top_k=CANDIDATES, node_postprocessors=[reranker]
        )

        response = engine.query(QUERY)
        show("After NIMRerank, query():", response.source_nodes)

        response = asyncio.run(ask_async(engine, reranker))
        show("After NIMRerank, aquery():", response.source_nodes)

        # Options can change on a running reranker: checked at once, clients rebuilt.
        reranker.max_batch_size = 12
        engine.query(QUERY)

        reranker.close()
        batches = [len(request.body["passages"]) for request in server.requests]
        print(f"The server answered {len(batches)} ranking requests of {batches} passages.")


if __name__ == "__main__":
    main()
