"""nimrank: rerank passages through NVIDIA NIM or Cohere/Jina-style ranking services.

>>> from nimrank import RankingClient
>>> client = RankingClient(base_url="http://localhost:8000/v1")  # doctest: +SKIP
>>> client.rank("What is the GPU memory bandwidth of H100 SXM?", passages)  # doctest: +SKIP
[RankedPassage(index=2, score=5.1, text='Accelerated servers with H100 ...'), ...]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

# Where each public name lives. ``import nimrank`` loads none of these modules:
# a name loads its module on first use (PEP 562), so a program that only needs
# the errors, or imports nimrank to hand it to an adapter later, does not pay
# for the client, its HTTP stack and the protocol tables up front.
_HOMES = {
    "DEFAULT_MODEL": "client",
    "HOSTED_DEFAULT_MODEL": "client",
    "UNSET": "client",
    "AsyncRankingClient": "async_client",
    "RankingClient": "client",
    "base_url_from_environment": "client",
    "RankingClients": "client_pair",
    "APIStatusError": "errors",
    "AuthenticationError": "errors",
    "BadRequestError": "errors",
    "MissingAPIKeyError": "errors",
    "RankingConnectionError": "errors",
    "RankingError": "errors",
    "RankingTimeoutError": "errors",
    "RateLimitError": "errors",
    "ResponseFormatError": "errors",
    "ServerError": "errors",
    "DEFAULT_OPTIONS": "options",
    "OptionValues": "options",
    "RankingOptions": "options",
    "describe_option": "options",
    "Passage": "results",
    "RankedPassage": "results",
    "RetryPolicy": "retry",
}

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

if TYPE_CHECKING:
    from .async_client import AsyncRankingClient
    from .client import (
        DEFAULT_MODEL,
        HOSTED_DEFAULT_MODEL,
        UNSET,
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
else:
    # Hidden from type checkers: a module __getattr__ would make them accept
    # any misspelt name as Any.

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module 'nimrank' has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{home}", __name__), name)
        globals()[name] = value  # the next lookup is a plain module attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_HOMES})
