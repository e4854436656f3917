"""Where the API key comes from. The key itself is never logged, shown or stored elsewhere."""

from __future__ import annotations

import os

import httpx

from . import errors
from .endpoints import Endpoints, display_url

__all__ = ["HOSTED_KEY_VARIABLES", "NIM_KEY_VARIABLES", "resolve_api_key"]

# Where a key comes from when none is passed, by protocol and host.
NIM_KEY_VARIABLES = ("NVIDIA_API_KEY", "NVIDIA_NIM_API_KEY")
HOSTED_KEY_VARIABLES = {
    "api.jina.ai": ("JINA_API_KEY",),
    "api.cohere.com": ("COHERE_API_KEY", "CO_API_KEY"),
}


def resolve_api_key(api_key: str | None, protocol: str, endpoints: Endpoints) -> str | None:
    """The key to send: ``api_key``, else the environment's, else ``None``.

    NIM reads ``NVIDIA_API_KEY`` then ``NVIDIA_NIM_API_KEY``; a Cohere-style
    service on a known host reads that host's variable. Hosted services need a
    key (``MissingAPIKeyError`` names the variable); others may need none.
    """
    if api_key is not None and not isinstance(api_key, str):
        raise TypeError("api_key must be a string")
    if api_key:
        return api_key
    if protocol == "nim":
        names: tuple[str, ...] = NIM_KEY_VARIABLES
        required = endpoints.hosted
    else:
        # Hosted Cohere-style services have their own variable; a local vLLM or
        # LiteLLM proxy may need no key at all.
        names = HOSTED_KEY_VARIABLES.get(httpx.URL(endpoints.ranking_url).host, ())
        required = bool(names)
    for name in names:
        if os.environ.get(name):
            return os.environ[name]
    if required:
        where = " or ".join(names)
        raise errors.MissingAPIKeyError(
            f"{display_url(endpoints.ranking_url)} needs an API key: pass api_key=... or set "
            f"{where}. "
            "For a self-hosted NIM pass base_url='http://host:8000/v1' instead.",
            url=display_url(endpoints.ranking_url),
        )
    return None
