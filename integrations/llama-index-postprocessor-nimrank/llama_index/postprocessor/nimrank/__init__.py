"""LlamaIndex node postprocessor that reranks through nimrank.

>>> from llama_index.postprocessor.nimrank import NIMRerank
>>> reranker = NIMRerank(base_url="http://localhost:8000/v1", top_n=3)  # doctest: +SKIP
"""

from llama_index.postprocessor.nimrank.base import NIMRerank

__all__ = ["NIMRerank"]
