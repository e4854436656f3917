"""Wire protocols: one module per format, pure functions over values."""

from __future__ import annotations

from .base import MalformedResponse, WireProtocol, scores_by_position, server_message
from .cohere import COHERE
from .nim import NIM

__all__ = [
    "COHERE",
    "NIM",
    "PROTOCOLS",
    "MalformedResponse",
    "WireProtocol",
    "scores_by_position",
    "server_message",
]

#: The protocols by the name users pass as ``protocol=``.
PROTOCOLS: dict[str, WireProtocol] = {"nim": NIM, "cohere": COHERE}
