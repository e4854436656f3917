"""Wire protocols: one module per format, pure functions over values."""

from __future__ import annotations

from .base import (
    MalformedResponse,
    WireProtocol,
    decode_json,
    encode_json,
    parse_model_list,
    scores_by_position,
    server_message,
)
from .cohere import COHERE
from .nim import KNOWN_VLM_MODELS, NIM, is_known_vlm

__all__ = [
    "COHERE",
    "KNOWN_VLM_MODELS",
    "NIM",
    "PROTOCOLS",
    "MalformedResponse",
    "WireProtocol",
    "decode_json",
    "encode_json",
    "is_known_vlm",
    "parse_model_list",
    "scores_by_position",
    "server_message",
]

#: The protocols by the name users pass as ``protocol=``.
PROTOCOLS: dict[str, WireProtocol] = {"nim": NIM, "cohere": COHERE}
