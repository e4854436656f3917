"""Reading passages from a file or stdin, for ``nimrank rank``.

Two formats: JSON Lines (a string, or an object with a text field, per line)
and plain text (one passage per line).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final, TextIO

__all__ = ["TEXT_KEYS", "InputError", "read_passages"]

#: Keys of a JSON Lines object that hold the passage, tried in this order.
TEXT_KEYS: Final = ("text", "content", "page_content")

_SUFFIX_FORMATS: Final = {".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}


class InputError(Exception):
    """The passages file cannot be read or parsed; the message says where."""


def read_passages(
    source: str, fmt: str = "auto", *, text_key: str | None = None, stdin: TextIO | None = None
) -> list[str]:
    """The passages of ``source`` (a path, or ``-`` for stdin), in order.

    Formats: ``jsonl`` (one JSON string, or object with a ``text``, ``content``
    or ``page_content`` field, or ``text_key``, per line) and ``txt`` (one
    passage per line). Blank lines are skipped in both, so a passage's index is
    its position among the passages, not its line number. ``auto`` goes by the
    file's suffix (``.jsonl``/``.ndjson``, ``.txt``) and otherwise looks at the
    first non-blank line: JSON string or object means ``jsonl``.

    Raises:
        InputError: unreadable file, a line that is not what the format says.
    """
    name = "stdin" if source == "-" else source
    try:
        if source == "-":
            content = (stdin if stdin is not None else sys.stdin).read()
        else:
            content = Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"cannot read {name}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"cannot read {name}: it is a directory") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read {name}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror or exc}") from None
    lines = [(number, line) for number, line in enumerate(content.splitlines(), 1) if line.strip()]
    if fmt == "auto":
        fmt = _SUFFIX_FORMATS.get(Path(source).suffix.lower(), "") if source != "-" else ""
        fmt = fmt or _sniff(lines)
    if fmt == "txt":
        return [line for _, line in lines]
    keys = (text_key,) if text_key else TEXT_KEYS
    return [_jsonl_passage(line, number, name, keys) for number, line in lines]


def _sniff(lines: list[tuple[int, str]]) -> str:
    if not lines:
        return "txt"
    try:
        first = json.loads(lines[0][1])
    except ValueError:
        return "txt"
    return "jsonl" if isinstance(first, (str, dict)) else "txt"


def _jsonl_passage(line: str, number: int, name: str, keys: Sequence[str]) -> str:
    where = f"{name}, line {number}"
    try:
        value = json.loads(line)
    except ValueError as exc:
        raise InputError(
            f"{where}: not valid JSON ({exc}); for plain text use a .txt file or --format txt"
        ) from None
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise InputError(
            f"{where}: expected a JSON string or an object with a "
            f"{' / '.join(repr(k) for k in keys)} field, got {type(value).__name__}"
        )
    for key in keys:
        if key in value:
            text = value[key]
            if not isinstance(text, str):
                raise InputError(f"{where}: field {key!r} must be a string")
            return text
    raise InputError(
        f"{where}: no {' / '.join(repr(k) for k in keys)} field "
        f"(fields: {', '.join(map(str, value)) or 'none'}); choose one with --text-key"
    )
