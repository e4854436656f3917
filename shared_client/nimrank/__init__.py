"""nimrank: rerank passages through NVIDIA NIM or Cohere/Jina-style ranking services.

>>> from nimrank import RankingClient
>>> client = RankingClient(base_url="http://localhost:8000/v1")  # doctest: +SKIP
>>> client.rank("What is the GPU memory bandwidth of H100 SXM?", passages)  # doctest: +SKIP
[RankedPassage(index=2, score=5.1, text='Accelerated servers with H100 ...'), ...]
"""

from __future__ import annotations

from ._version import __version__
from .client import (
    DEFAULT_MODEL,
    HOSTED_DEFAULT_MODEL,
    UNSET,
    AsyncRankingClient,
    RankingClient,
    base_url_from_environment,
)
from .client_pair import RankingClients
from .errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    MissingAPIKeyError,
    RankingConnectionError,
    RankingError,
    RankingTimeoutError,
    RateLimitError,
    ResponseFormatError,
    ServerError,
)
from .options import DEFAULT_OPTIONS, OptionValues, RankingOptions, describe_option
from .results import Passage, RankedPassage
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_OPTIONS",
    "HOSTED_DEFAULT_MODEL",
    "UNSET",
    "APIStatusError",
    "AsyncRankingClient",
    "AuthenticationError",
    "BadRequestError",
    "MissingAPIKeyError",
    "OptionValues",
    "Passage",
    "RankedPassage",
    "RankingClient",
    "RankingClients",
    "RankingConnectionError",
    "RankingError",
    "RankingOptions",
    "RankingTimeoutError",
    "RateLimitError",
    "ResponseFormatError",
    "RetryPolicy",
    "ServerError",
    "__version__",
    "base_url_from_environment",
    "describe_option",
]
