"""Every error nimrank raises on purpose, in one place.

The tree, so you can see what an ``except`` catches::

    RankingError
    ├── MissingAPIKeyError        (also a ValueError: raised at construction)
    ├── APIStatusError            the server answered with an error status
    │   ├── AuthenticationError   401, 403: the key is missing, wrong or not allowed
    │   ├── BadRequestError       400, 404, 413, 422, other 4xx, and redirects (3xx)
    │   ├── RateLimitError        429, after the retries ran out
    │   └── ServerError           5xx, after the retries ran out
    ├── RankingTimeoutError       no answer within ``timeout``, after the retries
    ├── RankingConnectionError    could not connect, or the connection dropped
    └── ResponseFormatError       a 2xx body that is not the protocol's shape, or
                                  whose indices or scores do not add up

Invalid arguments are plain ``ValueError`` / ``TypeError`` raised before any
request is sent. Messages carry the status, the server's own message, the URL
and which passages the failed batch held, and never the API key.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "APIStatusError",
    "AuthenticationError",
    "BadRequestError",
    "MissingAPIKeyError",
    "RankingConnectionError",
    "RankingError",
    "RankingTimeoutError",
    "RateLimitError",
    "ResponseFormatError",
    "ServerError",
    "error_for_status",
]


class RankingError(Exception):
    """Base class of every error nimrank raises about a ranking call.

    Attributes:
        url: the URL the failed request went to (never carries a key).
        passages: input indices of the passages the failed batch held
            (empty for calls that are not about passages, e.g. listing models).
    """

    def __init__(
        self,
        message: str,
        *,
        url: str | None = None,
        passages: Sequence[int] = (),
    ) -> None:
        self.url = url
        self.passages: tuple[int, ...] = tuple(passages)
        super().__init__(message)


class MissingAPIKeyError(RankingError, ValueError):
    """No API key where the service needs one (the hosted NVIDIA catalog)."""


class APIStatusError(RankingError):
    """The server answered with an error status.

    Attributes:
        status_code: the HTTP status.
        server_message: the server's own explanation, taken from its body.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        server_message: str,
        url: str | None = None,
        passages: Sequence[int] = (),
    ) -> None:
        self.status_code = status_code
        self.server_message = server_message
        super().__init__(message, url=url, passages=passages)


class AuthenticationError(APIStatusError):
    """401 or 403: the API key is missing, invalid or lacks access to the model."""


class BadRequestError(APIStatusError):
    """A 4xx other than 401/403/429, or a redirect: the request itself must change.

    Redirects are not followed (``extra_headers`` could carry a token to another
    host); the message names where the service moved.
    """


class RateLimitError(APIStatusError):
    """429 Too Many Requests, still refused after every retry."""


class ServerError(APIStatusError):
    """A 5xx status, still failing after every retry."""


class RankingTimeoutError(RankingError):
    """The server did not answer within the timeout, after every retry."""


class RankingConnectionError(RankingError):
    """The connection could not be made or broke, after every retry."""


class ResponseFormatError(RankingError):
    """A successful status whose body cannot be trusted.

    Raised for non-JSON bodies, bodies of the wrong shape, and rankings whose
    indices are missing, repeated or out of range or whose scores are not
    finite numbers: nimrank never guesses which passage a score belongs to.
    """


def error_for_status(status: int) -> tuple[type[APIStatusError], str]:
    """The error class for an HTTP error ``status``, and a hint to add to its message."""
    if status in (401, 403):
        return AuthenticationError, " (check api_key or the key's environment variable)"
    if status == 429:
        return RateLimitError, ""
    if status >= 500:
        return ServerError, ""
    if status == 404:
        return BadRequestError, " (check base_url and model)"
    return BadRequestError, ""
