"""Smoke check of the ``langchain-nimrank`` wheel: its README quickstart."""

from __future__ import annotations

import asyncio

from langchain_core.documents import Document
from serving import PASSAGES, QUERY, check_ranking, nimrank_serve

from langchain_nimrank import NIMRerank


def main() -> None:
    documents = [Document(page_content=text) for text in PASSAGES]
    with nimrank_serve() as base_url:
        reranker = NIMRerank(base_url=base_url, top_n=2)
        ranked = reranker.compress_documents(documents, QUERY)
        check_ranking("langchain-nimrank", [d.page_content for d in ranked])
        ranked = asyncio.run(reranker.acompress_documents(documents, QUERY))
        check_ranking("langchain-nimrank (async)", [d.page_content for d in ranked])


if __name__ == "__main__":
    main()
