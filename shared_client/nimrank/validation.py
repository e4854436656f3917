"""Argument checks shared by the clients and the adapters: fail before any request."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["check_int", "check_number", "check_passages", "check_query", "check_top_n"]


def check_int(name: str, value: Any, *, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int within bounds, or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def check_number(name: str, value: Any, *, positive: bool = False) -> float:
    """``value`` as a float (not NaN), or a TypeError/ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if math.isnan(value) or (positive and not value > 0):
        raise ValueError(f"{name} must be {'> 0' if positive else 'a number'}, got {value}")
    return float(value)


def check_top_n(top_n: Any, name: str = "top_n") -> int | None:
    """``None`` (everything) or a non-negative int."""
    if top_n is None:
        return None
    if isinstance(top_n, bool) or not isinstance(top_n, int):
        raise ValueError(f"{name} must be None or an int >= 0, got {top_n!r}")
    if top_n < 0:
        raise ValueError(f"{name} must be None or an int >= 0, got {top_n}")
    return top_n


def check_query(query: Any) -> str:
    """A query that names something to rank against."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise ValueError("query is empty: there is nothing to rank the passages against")
    return query


def check_passages(passages: Any) -> list[str]:
    """A list of strings (a single string is refused: it is almost always a slip)."""
    if isinstance(passages, (str, bytes)) or not isinstance(passages, Sequence):
        raise TypeError(f"passages must be a list of strings, got {type(passages).__name__}")
    for position, passage in enumerate(passages):
        if not isinstance(passage, str):
            raise TypeError(f"passages[{position}] must be a str, got {type(passage).__name__}")
    return list(passages)
