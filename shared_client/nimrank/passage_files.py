"""Reading passages from a file or stdin, for ``nimrank rank``.

Three formats: JSON Lines (a string, or an object with a text field, per
line), a JSON array of the same, and plain text (one passage per line). Input
is read as UTF-8 bytes whatever the locale or ``PYTHONIOENCODING`` says (a
latin-1 console would otherwise turn ``café`` into mojibake that still prints
right); a leading byte-order mark is dropped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Final

__all__ = ["FORMATS", "TEXT_KEYS", "InputError", "read_passages"]

#: Keys of a JSON Lines object that hold the passage, tried in this order.
TEXT_KEYS: Final = ("text", "content", "page_content")

_SUFFIX_FORMATS: Final = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".txt": "txt"}
#: The formats ``--format`` accepts.
FORMATS: Final = ("auto", "jsonl", "json", "txt")


class InputError(Exception):
    """The passages file cannot be read or parsed; the message says where."""


def read_passages(
    source: str, fmt: str = "auto", *, text_key: str | None = None, stdin: BinaryIO | None = None
) -> list[str]:
    """The passages of ``source`` (a path, or ``-`` for stdin), in order.

    Formats: ``jsonl`` (one JSON string, or object with a ``text``, ``content``
    or ``page_content`` field, or ``text_key``, per line) and ``txt`` (one
    passage per line), or ``json``: one JSON array of such strings or objects.
    Blank lines are skipped, so a passage's index is its position among the
    passages, not its line number. ``auto`` goes by the file's suffix
    (``.jsonl``/``.ndjson``, ``.json``, ``.txt``) and otherwise looks at the
    content: a JSON array means ``json``, a first line that is a JSON string or
    object means ``jsonl``. A JSON array is never taken as one passage.

    Raises:
        InputError: unreadable file, a line that is not what the format says.
    """
    name = "stdin" if source == "-" else source
    try:
        if source == "-":
            data = (stdin if stdin is not None else sys.stdin.buffer).read()
        else:
            data = Path(source).read_bytes()
        content = data.decode("utf-8-sig")
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
        fmt = fmt or _sniff(content, lines)
    keys = (text_key,) if text_key else TEXT_KEYS
    if fmt == "json":
        items = _loads(content, f"{name}: not a JSON array")
        if not isinstance(items, list):
            raise InputError(f"{name}: expected a JSON array of passages, got {_kind(items)}")
        return [_passage(item, f"{name}, item {i}", keys) for i, item in enumerate(items)]
    if fmt == "txt":
        return [line for _, line in lines]
    passages = []
    for number, line in lines:
        where = f"{name}, line {number}"
        hint = "for plain text use a .txt file or --format txt"
        passages.append(_passage(_loads(line, f"{where}: not valid JSON; {hint}"), where, keys))
    return passages


def _sniff(content: str, lines: list[tuple[int, str]]) -> str:
    if not lines:
        return "txt"
    if content.lstrip().startswith("["):
        try:
            if isinstance(json.loads(content), list):
                return "json"
        except (ValueError, RecursionError):
            pass
    try:
        first = json.loads(lines[0][1])
    except (ValueError, RecursionError):
        return "txt"
    return "jsonl" if isinstance(first, (str, dict)) else "txt"


def _loads(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(f"{what} ({exc})") from None
    except RecursionError:
        # Python's json recurses once per nesting level: [[[[...]]]] a few
        # thousand deep is an attack or an accident, not passages.
        raise InputError(f"{what} (nested too deeply)") from None


def _kind(value: object) -> str:
    kinds = {"list": "an array", "dict": "an object", "str": "a string", "NoneType": "null"}
    return kinds.get(type(value).__name__, "a number or boolean")


def _passage(value: object, where: str, keys: Sequence[str]) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, dict):
        raise InputError(
            f"{where}: expected a JSON string or an object with a "
            f"{' / '.join(repr(k) for k in keys)} field, got {_kind(value)}"
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
