"""LlamaIndex node postprocessor that reranks through nimrank.

>>> from llama_index.postprocessor.nimrank import NIMRerank
>>> reranker = NIMRerank(base_url="http://localhost:8000/v1", top_n=3)  # doctest: +SKIP
"""

# Without its framework this package is useless: say which distribution brings
# it rather than leave a bare ModuleNotFoundError from deep inside the adapter.
try:
    import llama_index.core  # noqa: F401
except ModuleNotFoundError as exc:
    raise ImportError(
        "llama_index.postprocessor.nimrank needs llama-index-core, which is not installed: "
        "pip install llama-index-postprocessor-nimrank"
    ) from exc

from llama_index.postprocessor.nimrank.base import NIMRerank

__all__ = ["NIMRerank"]
