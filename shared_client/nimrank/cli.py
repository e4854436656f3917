"""The ``nimrank`` command line.

One argparse subcommand per task; each registers its arguments and a
handler returning the exit code::

    nimrank serve --port 8000 --latency-ms 20 --per-passage-ms 0.5
    nimrank rank --query "H100 memory bandwidth" --input passages.jsonl --top-n 5 \\
        --base-url http://127.0.0.1:8000/v1
    nimrank models --base-url http://127.0.0.1:8000/v1

``rank`` writes one JSON object per line to stdout, best first:
``{"index": 3, "score": 5.1, "text": "..."}``. Errors go to stderr as one
line, without a traceback, and the exit code says what kind they were
(:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TextIO

from nimrank import errors
from nimrank.server import DEFAULT_MODEL_ID, serve

__all__ = ["EXIT_CODES", "build_parser", "main"]

_Handler = Callable[[argparse.Namespace], int]


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, got {value}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _run_serve(args: argparse.Namespace) -> int:
    try:
        serve(
            args.host,
            args.port,
            model=args.model,
            latency_ms=args.latency_ms,
            per_passage_ms=args.per_passage_ms,
            max_passages=args.max_passages,
            max_passage_tokens=args.max_passage_tokens,
            log_requests=args.log_requests,
        )
    except OSError as exc:
        print(f"nimrank serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_serve(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="run a local NIM-compatible ranking server (lexical BM25 stand-in)",
        description=(
            "Serve POST /v1/ranking (NVIDIA NIM), POST /v1/rerank and /rerank "
            "(Cohere/Jina style), GET /v1/models and /v1/health/{ready,live}. "
            "Scores come from a lexical BM25 scorer, not a neural reranker."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="port to bind, 0 for any free (default: %(default)s)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL_ID,
        help="model id listed by /v1/models (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-ms",
        type=_non_negative,
        default=0.0,
        help="simulated GPU time per scoring request (default: %(default)s)",
    )
    parser.add_argument(
        "--per-passage-ms",
        type=_non_negative,
        default=0.0,
        help="simulated GPU time per scored passage (default: %(default)s)",
    )
    parser.add_argument(
        "--max-passages",
        type=_positive_int,
        default=512,
        help="most passages per /v1/ranking request, as NIM (default: %(default)s)",
    )
    parser.add_argument(
        "--max-passage-tokens",
        type=_positive_int,
        default=512,
        help="passage length limit in words; longer ones are cut, or refused "
        'with truncate="NONE" (default: %(default)s)',
    )
    parser.add_argument(
        "--log-requests", action="store_true", help="print one line per request to stderr"
    )
    parser.set_defaults(handler=_run_serve)


def build_parser() -> argparse.ArgumentParser:
    """The ``nimrank`` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="nimrank", description="Rerank passages through NIM or Cohere/Jina-style services."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve(commands)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nimrank")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``nimrank`` command line; returns the exit code.

    Example:
        >>> main(["serve", "--port", "0"])  # doctest: +SKIP
    """
    args = build_parser().parse_args(argv)
    handler: _Handler = args.handler
    return handler(args)
