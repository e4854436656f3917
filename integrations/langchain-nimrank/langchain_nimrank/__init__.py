"""LangChain document compressor for nimrank: ``from langchain_nimrank import NIMRerank``.

A drop-in for ``langchain_nvidia_ai_endpoints.NVIDIARerank`` (same constructor
parameters) that sends its batches concurrently through ``nimrank``'s client,
returns scored copies of the documents, and also speaks the Cohere/Jina-style
``/v1/rerank`` protocol.
"""

from __future__ import annotations

from .compressor import NIMRerank

__all__ = ["NIMRerank"]
