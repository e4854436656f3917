"""``NIMRerank``'s parameters: nimrank's options under ``NVIDIARerank``'s names.

Each field's default and description are read from nimrank (``DEFAULT_OPTIONS``,
``describe_option``), never restated; ``nvidia_spellings`` folds
``NVIDIARerank``'s alternative names into ours with its precedence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pydantic import Field, SecretStr

from nimrank import DEFAULT_OPTIONS, RankingOptions, describe_option

__all__ = ["OPTION_NAMES", "Model", "core_value", "mask_values", "nvidia_spellings", "option"]

# What a dump shows instead of a header value: they may hold a proxy's token.
_MASK = "**********"


def option(name: str) -> Any:
    """A field for nimrank option ``name``: its default and description are the core's."""
    default = getattr(DEFAULT_OPTIONS, name)
    if isinstance(default, Mapping):  # extra_headers: a fresh dict per compressor
        return Field(default_factory=dict, description=describe_option(name), repr=False)
    return Field(default=default, description=describe_option(name))


@dataclasses.dataclass(frozen=True)
class Model:
    """A ranking model the service lists: ``NVIDIARerank.available_models``' items by ``id``."""

    id: str


#: The compressor's fields that are nimrank options -> the options' names.
OPTION_NAMES = {field.name: field.name for field in dataclasses.fields(RankingOptions)}
# NVIDIARerank's name for the headers.
OPTION_NAMES["default_headers"] = OPTION_NAMES.pop("extra_headers")


def core_value(value: Any) -> Any:
    """A field's value as ``RankingOptions`` takes it (the key unwrapped)."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def nvidia_spellings(data: dict[str, Any]) -> dict[str, Any]:
    """``NVIDIARerank``'s alternative names folded into ours, with its precedence."""
    # NVIDIARerank 1.5.0's switch for its usage telemetry: nimrank sends none.
    data = {name: value for name, value in data.items() if name != "usage_telemetry_enabled"}
    for name, alternative in (("api_key", "nvidia_api_key"), ("base_url", "nvidia_base_url")):
        if alternative in data:
            value = data.pop(alternative)
            if value:  # as NVIDIARerank: "nvidia_api_key or api_key"
                data[name] = value
    if "extra_headers" in data:
        headers = data.pop("extra_headers")
        if not data.get("default_headers"):
            data["default_headers"] = headers
    return data


def mask_values(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` with every value masked, for dumps (the names stay readable)."""
    return dict.fromkeys(headers, _MASK)
