"""Smoke check of the ``nimrank-haystack`` wheel: its README quickstart pipeline."""

from __future__ import annotations

import os

os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"

import asyncio

from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from serving import PASSAGES, QUERY, check_ranking, nimrank_serve

from haystack_integrations.components.rankers.nimrank import NIMRanker


def main() -> None:
    store = InMemoryDocumentStore()
    store.write_documents([Document(content=text) for text in PASSAGES])
    with nimrank_serve() as api_url:
        pipeline = Pipeline()
        pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=3))
        pipeline.add_component("ranker", NIMRanker(api_url=api_url, top_k=2))
        pipeline.connect("retriever.documents", "ranker.documents")
        inputs = {"retriever": {"query": QUERY}, "ranker": {"query": QUERY}}
        result = pipeline.run(inputs)
        check_ranking("nimrank-haystack", [d.content for d in result["ranker"]["documents"]])
        result = asyncio.run(pipeline.run_async(inputs))
        check_ranking(
            "nimrank-haystack (async)", [d.content for d in result["ranker"]["documents"]]
        )


if __name__ == "__main__":
    main()
