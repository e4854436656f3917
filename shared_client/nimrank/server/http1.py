"""A strict, small HTTP/1.1 request parser for `nimrank serve` (sans-IO).

Strict on purpose: whatever two HTTP implementations could read differently
is refused with a 400 instead of guessed at, because a guess is how the bytes
one header covers end up run as a second request (request smuggling):

* only CRLF line endings, no obsolete line folding, no control characters;
* ``Content-Length`` is decimal digits only, and several must agree;
* ``Transfer-Encoding`` must be exactly ``chunked`` and never comes with a
  ``Content-Length``;
* a chunk size is 1-16 hex digits (no sign, no ``0x``, no ``_``), each chunk
  ends with CRLF.

The I/O loop in :mod:`nimrank.server.app` reads a head up to the blank line,
hands it to :func:`parse_head`, and reads the body as the result says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_HEADERS",
    "BadRequest",
    "RequestHead",
    "parse_chunk_size",
    "parse_head",
    "printable",
]

MAX_HEADERS: Final = 100
"""Most header lines (or trailer lines) one request may carry."""

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
# The target is visible ASCII only: no spaces, no control characters.
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(1\.[01])")
# A field value: visible characters, spaces, tabs and obs-text (0x80-0xff).
_HEADER = re.compile(
    rb"(" + _TOKEN + rb"):[ \t]*((?:[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*)?)[ \t]*"
)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:[ \t]*;[\x20-\x7e\t]*)?")
_DIGITS = re.compile(r"[0-9]{1,19}")
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\\]")


class BadRequest(Exception):
    """The request cannot be read safely; answer ``status`` and close the connection."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed request line and header block.

    Attributes:
        method: the request method, as sent (methods are case-sensitive).
        path: the target's path (without the query string).
        query: the target's query string ("" when none).
        headers: lowercased name -> value; repeated fields joined by ``", "``.
        content_length: the body's length when framed by Content-Length.
        chunked: the body is framed by ``Transfer-Encoding: chunked``.
        keep_alive: the connection may serve another request afterwards.
        expect_continue: the client waits for ``100 Continue`` before the body.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    content_length: int | None
    chunked: bool
    keep_alive: bool
    expect_continue: bool


def printable(text: str) -> str:
    """``text`` with control characters (and backslashes) escaped, safe for a log line."""
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def parse_head(data: bytes) -> RequestHead:
    """Parse a request head: ``data`` is everything before the blank line ending it.

    Raises:
        BadRequest: anything ambiguous or malformed (see the module docstring).
    """
    lines = data.lstrip(b"\r\n").split(b"\r\n")
    matched = _REQUEST_LINE.fullmatch(lines[0])
    if matched is None:
        raise BadRequest("Malformed request line")
    method = matched.group(1).decode("ascii")
    target = matched.group(2).decode("ascii")
    if len(lines) - 1 > MAX_HEADERS:
        raise BadRequest(f"More than {MAX_HEADERS} header fields", 431)
    headers: dict[str, str] = {}
    lengths: list[str] = []
    for line in lines[1:]:
        field = _HEADER.fullmatch(line)
        if field is None:
            raise BadRequest("Malformed header field")
        name = field.group(1).decode("ascii").lower()
        value = field.group(2).decode("latin-1")
        if name == "content-length":
            lengths.append(value)
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    path, _, query = target.partition("?")
    if not path.startswith("/"):
        raise BadRequest("The request target must be a path (origin form)")
    transfer = headers.get("transfer-encoding")
    chunked = False
    content_length: int | None = None
    if transfer is not None:
        if lengths:
            raise BadRequest("Both Content-Length and Transfer-Encoding: refused as ambiguous")
        if transfer.strip().lower() != "chunked":
            raise BadRequest(f"Unsupported Transfer-Encoding {printable(transfer)!r}")
        chunked = True
    elif lengths:
        values = {value.strip() for part in lengths for value in part.split(",")}
        if len(values) != 1 or not _DIGITS.fullmatch(next(iter(values))):
            raise BadRequest("Invalid Content-Length header")
        content_length = int(next(iter(values)))
    connection = headers.get("connection", "").lower()
    if matched.group(3) == b"1.1":
        keep_alive = "close" not in connection
    else:
        keep_alive = "keep-alive" in connection
    return RequestHead(
        method=method,
        path=path,
        query=query,
        headers=headers,
        content_length=content_length,
        chunked=chunked,
        keep_alive=keep_alive,
        expect_continue=headers.get("expect", "").lower() == "100-continue",
    )


def parse_chunk_size(line: bytes) -> int:
    """The size of a chunk from its size line (without the CRLF); extensions ignored.

    Raises:
        BadRequest: not 1-16 hex digits (``-1``, ``0x10``, ``1_0`` are all refused).
    """
    matched = _CHUNK_SIZE.fullmatch(line)
    if matched is None:
        raise BadRequest("Malformed chunked request body")
    return int(matched.group(1), 16)
