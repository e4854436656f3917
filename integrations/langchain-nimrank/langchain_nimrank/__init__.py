"""LangChain document compressor for nimrank: ``from langchain_nimrank import NIMRerank``.

A drop-in for ``langchain_nvidia_ai_endpoints.NVIDIARerank`` (same constructor
parameters) that sends its batches concurrently through ``nimrank``'s client,
returns scored copies of the documents, and also speaks the Cohere/Jina-style
``/v1/rerank`` protocol.
"""

from __future__ import annotations

# Without its framework this package is useless: say which distribution brings
# it rather than leave a bare ModuleNotFoundError from deep inside the adapter.
try:
    import langchain_core  # noqa: F401
except ModuleNotFoundError as exc:
    raise ImportError(
        "langchain_nimrank needs langchain-core, which is not installed: "
        "pip install langchain-nimrank"
    ) from exc

from .compressor import NIMRerank

__all__ = ["NIMRerank"]
