"""Every secret a client holds, masked in every text people or logs may see.

A client holds secrets in four places: the API key, a password (or a bare
token) in the base URL's userinfo, values in its query string (``?api-key=``,
or a bare ``?KEY``), and ``extra_headers`` values (a gateway's token).
:class:`Secrets` gathers them once; :meth:`Secrets.mask` replaces each in any
text with ``***``, in every spelling a server or a log may give it: plain,
JSON-escaped (``\\/``, ``\\u002d``, even one character at a time), percent-
encoded (``%2D``) or as a bytes repr escape (``\\x2d``). So a server echoing the
key inside a JSON error, a ``Location`` header, a message or a repr never shows it,
whether the text is masked before or after JSON decoding.

:func:`protect_logs` adds a ``logging.Filter`` to the ``nimrank``, ``httpx``,
``httpcore`` and ``aiohttp`` loggers (httpx's INFO line prints the URL with its
query string; httpcore's DEBUG lines print response headers; aiohttp's name
the URL of a request it could not complete). It changes nothing else in the
user's logging configuration: no handler, level or propagation is touched.
"""

from __future__ import annotations

import base64
import logging
import re
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Final
from urllib.parse import unquote, urlsplit

from .endpoints import display_url

__all__ = [
    "LOGGERS",
    "MASK",
    "SecretFilter",
    "Secrets",
    "display_url",
    "protect_logs",
    "url_secrets",
]

MASK: Final = "***"
#: Shorter values are not masked: they would garble every message (``X-Debug: 1``)
#: and a 3-character secret is no secret.
MIN_SECRET_LENGTH: Final = 4
#: The loggers whose records are masked. httpcore and aiohttp log on child
#: loggers, which a filter on the parent alone would not see.
LOGGERS: Final = (
    "nimrank",
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "aiohttp",
    "aiohttp.client",
    "aiohttp.internal",
)


class Secrets:
    """The secrets of one client, and the one pattern that finds any of them."""

    def __init__(self, values: Iterable[str]) -> None:
        distinct = {value for value in values if len(value) >= MIN_SECRET_LENGTH}
        # Longest first: a secret that contains another is masked whole.
        ordered = sorted(distinct, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(_spellings(value) for value in ordered)) if ordered else None
        )

    @classmethod
    def of_client(
        cls,
        *,
        api_key: str | None,
        base_url: str | Sequence[str] | None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Secrets:
        """The secrets a client built from these options holds (``base_url``: one or a fleet)."""
        values = [api_key or ""]
        for url in [base_url] if isinstance(base_url, str) else base_url or ():
            values += url_secrets(url)
        values += [value for value in (extra_headers or {}).values() if isinstance(value, str)]
        return cls(values)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def mask(self, text: str) -> str:
        """``text`` with every secret, in any spelling, replaced by ``***``."""
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def __repr__(self) -> str:
        return "Secrets(***)"


#: What HTTP parsers quote of the bytes they refused: ``b'...'``, ``bytearray(b'...')``.
_QUOTED_BYTES: Final = re.compile(r"""(?:bytearray\(|\bb['"]).*""", re.DOTALL)


def without_quoted_bytes(text: str) -> str:
    """``text`` up to where it quotes a server's bytes.

    httpcore's and aiohttp's parsers quote the line they refused, aiohttp's cut
    at 100 bytes: a key the server echoed there may be shown cut, and a mask
    recognizes a whole secret only.
    """
    return _QUOTED_BYTES.sub("(the server's bytes are not shown)", text)


def url_secrets(url: str) -> list[str]:
    """The values in ``url`` that may be secrets: userinfo and query values."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return []
    values = [username or "", password or ""]
    for item in parts.query.split("&"):
        _, _, value = item.rpartition("=")  # a bare ?KEY is its own value
        values.append(value)
    # Both spellings: the raw one travels, the decoded one may be echoed.
    values += [unquote(value) for value in values]
    if username or password:
        # The Basic credentials HTTP makes of them travel too, in an
        # Authorization header that a server may echo.
        pair = f"{unquote(username or '')}:{unquote(password or '')}"
        values.append(base64.b64encode(pair.encode()).decode("ascii"))
    return values


def _spellings(secret: str) -> str:
    """A regular expression matching ``secret`` with each character spelled any way."""
    return "".join(_char(c) for c in secret)


def _char(c: str) -> str:
    code = ord(c)
    ways = [re.escape(c)]
    if code < 0x10000:
        ways.append(rf"\\u(?i:{code:04x})")  # JSON: \u002d, \u002D
    if code < 0x100:
        ways.append(rf"%(?i:{code:02x})")  # percent-encoding: %2D
        ways.append(rf"\\x(?i:{code:02x})")  # bytes repr: \x2d
    if c in '/\\"':
        ways.append(re.escape("\\" + c))  # JSON: \/ \\ \"
    return f"(?:{'|'.join(ways)})"


# -- logs ----------------------------------------------------------------------------


class SecretFilter(logging.Filter):
    """Masks the secrets of every live client in each record it sees; drops none."""

    def __init__(self) -> None:
        super().__init__()
        self._clients: weakref.WeakSet[Secrets] = weakref.WeakSet()

    def add(self, secrets: Secrets) -> None:
        """Mask ``secrets`` too, for as long as something holds them."""
        if secrets:
            self._clients.add(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        clients = list(self._clients)
        if not clients:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's to report
            return True
        masked = message
        for secrets in clients:
            masked = secrets.mask(masked)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_FILTER: Final = SecretFilter()


def protect_logs(secrets: Secrets) -> None:
    """Mask ``secrets`` in every record of the nimrank, httpx, httpcore and aiohttp loggers.

    The client calls it once at construction, holding ``secrets`` for its
    lifetime (the filter keeps only a weak reference). Idempotent.
    """
    _FILTER.add(secrets)
    # A filter on a logger does not see its children's records: every child
    # that exists now is filtered too (nimrank.server, httpcore.http11 ...).
    existing = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name.split(".")[0] in ("nimrank", "httpx", "httpcore", "aiohttp")
    ]
    for name in {*LOGGERS, *existing}:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
