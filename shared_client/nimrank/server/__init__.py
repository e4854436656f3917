"""`nimrank serve`: a local NIM-compatible ranking server with a lexical scorer.

A stand-in for a real reranker so demos, examples and tests run with no GPU,
no API key and no network. It implements NVIDIA NIM's ``POST /v1/ranking``
contract (text passages, and image passages for the listed ``ranking-vlm``
model) and the Cohere/Jina-style ``POST /v1/rerank``, and labels itself a
lexical BM25 stand-in everywhere it can (``/v1/models``, the startup line).
Nothing in the client falls back to it silently. Tests script misbehaviour
with :meth:`RankingServer.add_rule` and the actions of
:mod:`nimrank.server.faults`.

Example:
    >>> from nimrank.server import RankingServer
    >>> with RankingServer(latency_ms=5) as server:
    ...     base_url = server.url  # http://127.0.0.1:<port>/v1
"""

from nimrank.server.app import DISCONNECTED, IN_PROGRESS, RankingServer, RecordedRequest, serve
from nimrank.server.faults import Rule
from nimrank.server.routes import (
    DEFAULT_MODEL_ID,
    MODEL_DESCRIPTION,
    VLM_MODEL_ID,
    Reply,
    ServerSettings,
)
from nimrank.server.scoring import (
    image_logit,
    prepare_query,
    score,
    score_passages,
    score_prepared,
    sigmoid,
)

__all__ = [
    "DEFAULT_MODEL_ID",
    "DISCONNECTED",
    "IN_PROGRESS",
    "MODEL_DESCRIPTION",
    "VLM_MODEL_ID",
    "RankingServer",
    "RecordedRequest",
    "Reply",
    "Rule",
    "ServerSettings",
    "image_logit",
    "prepare_query",
    "score",
    "score_passages",
    "score_prepared",
    "serve",
    "sigmoid",
]
