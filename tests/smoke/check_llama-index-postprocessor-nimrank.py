"""Smoke check of the ``llama-index-postprocessor-nimrank`` wheel: its README quickstart."""

from __future__ import annotations

import asyncio

from llama_index.core.schema import NodeWithScore, TextNode
from serving import PASSAGES, QUERY, check_ranking, nimrank_serve

from llama_index.postprocessor.nimrank import NIMRerank


def main() -> None:
    nodes = [NodeWithScore(node=TextNode(text=text), score=0.0) for text in PASSAGES]
    with nimrank_serve() as base_url:
        reranker = NIMRerank(base_url=base_url, top_n=2)
        ranked = reranker.postprocess_nodes(nodes, query_str=QUERY)
        check_ranking("llama-index-postprocessor-nimrank", [n.node.get_content() for n in ranked])
        ranked = asyncio.run(reranker.apostprocess_nodes(nodes, query_str=QUERY))
        check_ranking("llama-index (async)", [n.node.get_content() for n in ranked])


if __name__ == "__main__":
    main()
