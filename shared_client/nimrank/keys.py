"""Where the API key comes from. The key itself is never logged, shown or stored elsewhere."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import httpx

from . import errors
from .endpoints import Endpoints, display_url

__all__ = ["HOSTED_KEY_VARIABLES", "NIM_KEY_VARIABLES", "check_header_values", "resolve_api_key"]

# Where a key comes from when none is passed, by protocol and host.
NIM_KEY_VARIABLES = ("NVIDIA_API_KEY", "NVIDIA_NIM_API_KEY")
HOSTED_KEY_VARIABLES = {
    "api.jina.ai": ("JINA_API_KEY",),
    "api.cohere.com": ("COHERE_API_KEY", "CO_API_KEY"),
}


def resolve_api_key(api_key: str | None, protocol: str, endpoints: Endpoints) -> str | None:
    """The key to send: ``api_key``, else the environment's, else ``None``.

    NIM reads ``NVIDIA_API_KEY`` then ``NVIDIA_NIM_API_KEY``; a Cohere-style
    service on a known host reads that host's variable. ``api_key=""`` sends
    no key and reads no variable (a proxy that must not see one). Hosted
    services need a key (``MissingAPIKeyError`` names the variable); others may
    need none.
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
    for name in names if api_key is None else ():
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


# What a header value may be: visible ASCII, single inner spaces or tabs, no
# leading or trailing whitespace. Anything else fails only at send time, with an
# error (UnicodeEncodeError, LocalProtocolError) whose repr quotes the value.
_HEADER_VALUE = re.compile(r"(?:[!-~]+(?:[ \t]+[!-~]+)*)?")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def check_header_values(headers: Mapping[str, object]) -> dict[str, str]:
    """``headers`` as ``str`` to ``str``, or a ``ValueError``/``TypeError`` that hides the value.

    Refused before any request: a value that is not a ``str``, or holds a
    non-ASCII character (a no-break space pasted from a web page), a line
    break, a NUL or other control character, or leading/trailing whitespace.
    The message names the header (``the API key`` for ``Authorization``),
    never its value.
    """
    if not isinstance(headers, Mapping):
        raise TypeError(f"extra_headers must be a mapping, got {type(headers).__name__}")
    checked: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ValueError(
                "extra_headers has a header name that is not a plain ASCII token "
                f"(letters, digits, -): {_shown_name(name)}"
            )
        what = "the API key" if name.lower() == "authorization" else f"extra_headers[{name!r}]"
        if not isinstance(value, str):
            raise TypeError(f"{what} must be a string, got {type(value).__name__}")
        if not _HEADER_VALUE.fullmatch(value):
            raise ValueError(
                f"{what} has a character HTTP headers cannot carry: a non-ASCII one (a "
                "no-break space pasted from a web page?), a line break, a NUL, or leading "
                "or trailing whitespace (a newline read from a file?). Its value is not shown."
            )
        checked[name] = value
    return checked


def _shown_name(name: object) -> str:
    # A header name is not a secret, but it may be garbage: show it short and escaped.
    return ascii(name)[:40] if isinstance(name, str) else type(name).__name__
