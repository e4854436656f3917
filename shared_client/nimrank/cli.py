"""The ``nimrank`` command line.

One argparse subcommand per task; each registers its arguments and a
handler returning the exit code::

    nimrank serve --port 8000 --latency-ms 20 --per-passage-ms 0.5
    nimrank rank --query "H100 memory bandwidth" --input passages.jsonl --top-n 5 \\
        --base-url http://127.0.0.1:8000/v1
    nimrank models --base-url http://127.0.0.1:8000/v1

``rank`` writes one JSON object per line to stdout, best first:
``{"index": 3, "score": 5.1, "text": "..."}``. Input and output are UTF-8 bytes
whatever the locale or ``PYTHONIOENCODING`` says. Errors go to stderr as one
line, never with a traceback and never with a key (every secret the
environment and ``--base-url`` hold is masked), and the exit code says what
kind they were (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from nimrank import DEFAULT_MODEL, DEFAULT_OPTIONS, RankingClient, errors
from nimrank.keys import HOSTED_KEY_VARIABLES, NIM_KEY_VARIABLES
from nimrank.passage_files import FORMATS, InputError, read_passages
from nimrank.progress import progress_bar
from nimrank.redaction import Secrets, url_secrets
from nimrank.server import DEFAULT_MODEL_ID, serve
from nimrank.validation import check_query

__all__ = ["EXIT_CODES", "build_parser", "main"]

_Handler = Callable[[argparse.Namespace], int]


def _number(
    convert: Callable[[str], float], low: float, high: float = math.inf, *, open_low: bool = False
) -> Callable[[str], Any]:
    """An argparse ``type`` that reads a number and refuses it outside its bounds."""

    def parse(text: str) -> float:
        value = convert(text)
        too_low = value <= low if open_low else value < low
        if not math.isfinite(value) or too_low or value > high:
            bound = f"> {low:g}" if open_low else f">= {low:g}"
            if high != math.inf:
                bound = f"in {low:g}..{high:g}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


_port = _number(int, 0, 65535)
_non_negative = _number(float, 0)
_positive_int = _number(int, 1)
_non_negative_int = _number(int, 0)
_any_float = _number(float, -math.inf)
# A day: longer is no timeout at all, and 1e10 s overflows the socket layer.
_LONGEST_TIMEOUT: Final = 86400.0
_timeout = _number(float, 0, _LONGEST_TIMEOUT, open_low=True)


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
            capacity=args.capacity,
        )
    except OSError as exc:
        # A port in use or an address not ours: the arguments, not a bug.
        reason = exc.strerror or str(exc)
        return _fail("serve", f"cannot listen on {args.host}:{args.port}: {reason}", EXIT_USAGE)
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
        "--capacity",
        type=_positive_int,
        default=None,
        help="ranking requests served at once; the rest queue, as on a saturated "
        "GPU (default: no limit)",
    )
    parser.add_argument(
        "--log-requests", action="store_true", help="print one line per request to stderr"
    )
    parser.set_defaults(handler=_run_serve)


# ---------------------------------------------------------------------------- rank, models

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1
EXIT_USAGE: Final = 2
EXIT_AUTH: Final = 3
EXIT_RATE_LIMIT: Final = 4
EXIT_UNAVAILABLE: Final = 5
EXIT_BAD_RESPONSE: Final = 6
EXIT_REFUSED: Final = 7
EXIT_OUTPUT: Final = 8
EXIT_INTERRUPTED: Final = 130

EXIT_CODES: Final = {
    EXIT_OK: "success",
    EXIT_ERROR: "an unexpected error (a bug: please report it)",
    EXIT_USAGE: "bad arguments or a bad input file",
    EXIT_AUTH: "authentication: the API key is missing, wrong or not allowed",
    EXIT_RATE_LIMIT: "rate limited: still 429 after the retries",
    EXIT_UNAVAILABLE: "server unavailable: 5xx, connection refused or dropped, or timeout",
    EXIT_BAD_RESPONSE: "the server's answer could not be used (not the protocol's shape)",
    EXIT_REFUSED: "the server refused the request (400, 404, 413, 422: wrong model, too long)",
    EXIT_OUTPUT: "the output could not be written (disk full, a closed stream)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
"""What each exit code of ``nimrank rank`` and ``nimrank models`` means."""

#: Client options the command line passes through when given (flag --a-b -> a_b).
_PASSED_OPTIONS: Final = (
    "truncate",
    "max_batch_size",
    "max_concurrency",
    "score_threshold",
    "score_transform",
    "max_passage_chars",
    "chunking",
    "chunk_overlap_chars",
    "max_chunks_per_doc",
)
#: Every option name a client message may mention, spelt as its flag in ours.
_FLAG_NAMES: Final = (*_PASSED_OPTIONS, "model", "base_url", "protocol", "timeout", "max_retries")


def _json_score(score: float | None) -> float | None:
    # None marks a blank passage that was never scored; JSON has no infinity.
    return score if score is not None and math.isfinite(score) else None


def _client_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "model": args.model,
        "base_url": args.base_url or None,
        "protocol": args.protocol,
        "timeout": args.timeout,
        "max_retries": args.max_retries,
    }
    for name in _PASSED_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and value is not False:
            options[name] = value
    return options


def _flag_spelling(message: str) -> str:
    """A client message as the command line's user reads it: ``--max-batch-size``."""
    for name in _FLAG_NAMES:
        # One-word names are also plain words ("the model list"): only as a subject.
        after = "" if "_" in name else r"(?= must| needs|=)"
        flag = "--" + name.replace("_", "-")
        message = re.sub(rf"(?<![\w-]){name}(?![\w-]){after}(=True)?", flag, message)
    return message


def _environment_secrets() -> Secrets:
    """What a message of this process could leak: the keys in the environment, the URL's secrets."""
    names = [*NIM_KEY_VARIABLES, *(n for group in HOSTED_KEY_VARIABLES.values() for n in group)]
    keys = [os.environ.get(name, "") for name in names]
    return Secrets([*keys, *url_secrets(os.environ.get("NIMRANK_BASE_URL", ""))])


def _write(stream: Any, text: str) -> None:
    """``text`` as UTF-8 bytes on ``stream`` (its binary buffer when it has one)."""
    buffer = getattr(stream, "buffer", None)
    if buffer is None:  # a StringIO in tests, or an embedding program's own stream
        stream.write(text)
        return
    stream.flush()  # keep order with what went through the text layer
    buffer.write(text.encode("utf-8", "backslashreplace"))
    buffer.flush()


_HINTS: Final = {
    EXIT_AUTH: "set NVIDIA_API_KEY (or NVIDIA_NIM_API_KEY) in the environment, or point "
    "--base-url at a self-hosted service",
    EXIT_RATE_LIMIT: "try again later, or lower --max-concurrency",
}


#: Set by main() once the arguments are read: the --base-url given on the command line.
_SECRETS: list[Secrets] = []


def _fail(command: str, message: str, code: int, hint: str | None = None) -> int:
    for secrets in [_environment_secrets(), *_SECRETS]:
        message = secrets.mask(message)
    prefix = f"nimrank {command}" if command else "nimrank"
    text = f"{prefix}: {message}\n" + (f"hint: {hint}\n" if hint else "")
    # No stderr to complain on: the exit code still says it.
    with contextlib.suppress(OSError, ValueError):
        _write(sys.stderr, text)
    return code


class _OutputError(Exception):
    """Writing the results failed (not a broken pipe: a full disk, a closed stream)."""


def _exit_code_for(exc: errors.RankingError) -> int:
    if isinstance(exc, (errors.AuthenticationError, errors.MissingAPIKeyError)):
        return EXIT_AUTH
    if isinstance(exc, errors.RateLimitError):
        return EXIT_RATE_LIMIT
    if isinstance(
        exc, (errors.ServerError, errors.RankingConnectionError, errors.RankingTimeoutError)
    ):
        return EXIT_UNAVAILABLE
    if isinstance(exc, errors.ResponseFormatError):
        return EXIT_BAD_RESPONSE
    if isinstance(exc, errors.APIStatusError):
        return EXIT_REFUSED
    return EXIT_ERROR


def _run_client_command(command: str, work: Callable[[], int]) -> int:
    """Run ``work``, turning every error into one stderr line and an exit code."""
    try:
        return work()
    except InputError as exc:
        return _fail(command, str(exc), EXIT_USAGE)
    except _OutputError as exc:
        _silence_stdout()
        return _fail(command, f"cannot write the output: {exc}", EXIT_OUTPUT)
    except errors.RankingError as exc:
        # Before ValueError: MissingAPIKeyError is both.
        code = _exit_code_for(exc)
        hint = _HINTS.get(code)
        if isinstance(exc, errors.RankingConnectionError):
            hint = "is the server running? `nimrank serve` starts a local stand-in"
        return _fail(command, str(exc), code, hint)
    except (ValueError, TypeError) as exc:
        # The client's argument checks (an empty query, a bad option value).
        return _fail(command, _flag_spelling(str(exc)), EXIT_USAGE)
    except RecursionError:
        # Until the client reads JSON with a depth bound: JSON nested thousands deep.
        return _fail(command, "the server's answer is nested too deeply to read", EXIT_BAD_RESPONSE)


def _run_rank(args: argparse.Namespace) -> int:
    def work() -> int:
        check_query(args.query)  # before reading a large input for nothing
        passages = read_passages(args.input, args.format, text_key=args.text_key)
        # Off when stderr is a file or a pipe: CI logs stay clean.
        show_progress = sys.stderr.isatty() and len(passages) > 0
        client = RankingClient(**_client_options(args))
        try:
            with progress_bar(len(passages), show_progress) as bar:
                ranking = client.rank(
                    args.query,
                    passages,
                    top_n=args.top_n,
                    progress=bar.update if bar is not None else None,
                )
        except KeyboardInterrupt:
            # Not closed: close() waits for the batches in flight, and Ctrl-C
            # means now. main() ends the process.
            raise
        except BaseException:
            client.close()
            raise
        client.close()
        _emit(
            json.dumps(
                {"index": p.index, "score": _json_score(p.score), "text": p.text},
                ensure_ascii=False,
            )
            for p in ranking
        )
        return EXIT_OK

    return _run_client_command("rank", work)


def _run_models(args: argparse.Namespace) -> int:
    def work() -> int:
        with RankingClient(**_client_options(args)) as client:
            models = client.list_models()
        _emit(models)
        return EXIT_OK

    return _run_client_command("models", work)


def _emit(lines: Iterable[str]) -> None:
    """Write ``lines`` to stdout as UTF-8; a failed write is an ``_OutputError``."""
    try:
        _write(sys.stdout, "".join(line + "\n" for line in lines))
    except BrokenPipeError:
        raise  # the reader went away: main() ends quietly
    except (OSError, ValueError) as exc:
        raise _OutputError(getattr(exc, "strerror", None) or str(exc)) from None


def _silence_stdout() -> None:
    # What could not be written stays in stdout's buffer, and the interpreter's
    # final flush would fail again, loudly: point stdout at devnull.
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _add_service_options(parser: argparse.ArgumentParser) -> None:
    service = parser.add_argument_group(
        "service",
        "The API key comes from the environment: NVIDIA_API_KEY or NVIDIA_NIM_API_KEY "
        "(nim protocol), JINA_API_KEY or COHERE_API_KEY for those hosts. It is never "
        "taken on the command line, where it would land in shell history.",
    )
    service.add_argument(
        "--base-url",
        default=os.environ.get("NIMRANK_BASE_URL"),
        metavar="URL",
        help="the service, e.g. http://127.0.0.1:8000/v1 for `nimrank serve` or a NIM "
        "container (default: $NIMRANK_BASE_URL, else NVIDIA's hosted API, which needs a key)",
    )
    service.add_argument(
        "--protocol",
        choices=("nim", "cohere"),
        default=DEFAULT_OPTIONS.protocol,
        help="wire format: NIM /v1/ranking or Cohere/Jina-style /v1/rerank (default: %(default)s)",
    )
    service.add_argument(
        "--model", default=DEFAULT_MODEL, metavar="ID", help="ranking model (default: %(default)s)"
    )
    service.add_argument(
        "--timeout",
        type=_timeout,
        metavar="SECONDS",
        default=DEFAULT_OPTIONS.timeout,
        help="seconds to wait for each answer (default: %(default)s)",
    )
    service.add_argument(
        "--max-retries",
        type=_non_negative_int,
        metavar="N",
        default=DEFAULT_OPTIONS.effective_retry_policy.max_retries,
        help="retries of a request after 429, 5xx or a dropped connection (default: %(default)s)",
    )


def _exit_codes_epilog() -> str:
    lines = [f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES.items()]
    return "exit codes:\n" + "\n".join(lines)


def _add_rank(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "rank",
        help="rank passages against a query; JSON lines on stdout",
        description=(
            "Rank the passages of a file against a query and write the ranking to stdout "
            'as JSON lines, best first: {"index": ..., "score": ..., "text": ...}. '
            "index is the passage's position in the input (blank lines skipped); a blank "
            "passage is never sent and gets score null. A progress bar is drawn on stderr "
            "when it is a terminal and the ranking takes more than half a second."
        ),
        epilog=_exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--query", required=True, help="what the passages are ranked against")
    parser.add_argument(
        "--input",
        required=True,
        metavar="FILE",
        help="passages: a .jsonl file (JSON strings, or objects with a text, content or "
        "page_content field), a .json file (an array of the same), a .txt file (one passage "
        "per line), or - for stdin",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="input format: jsonl, json (one array), txt (default: by suffix; for stdin and "
        "other names, a JSON array means json, a first line that is a JSON string or object "
        "means jsonl)",
    )
    parser.add_argument(
        "--text-key", metavar="KEY", help="the JSON Lines field holding the passage text"
    )
    parser.add_argument(
        "--top-n",
        type=_non_negative_int,
        metavar="N",
        help="write only the N best passages (default: all)",
    )
    _add_service_options(parser)
    tuning = parser.add_argument_group("batching")
    tuning.add_argument(
        "--max-batch-size",
        type=_positive_int,
        metavar="N",
        help="passages per request (default: the client's, 32; at most 512 for nim)",
    )
    tuning.add_argument(
        "--max-concurrency",
        type=_positive_int,
        metavar="N",
        help="requests in flight at once (default: the client's, 8)",
    )
    tuning.add_argument(
        "--truncate",
        choices=("NONE", "END"),
        help="NIM's handling of over-long passages (default: the server's, END)",
    )
    scoring = parser.add_argument_group("scoring and chunking (done by the client)")
    scoring.add_argument(
        "--score-transform",
        choices=("raw", "sigmoid"),
        help="raw logits, or sigmoid to map them into 0..1 (default: raw)",
    )
    scoring.add_argument(
        "--score-threshold",
        type=_any_float,
        metavar="SCORE",
        help="drop passages scoring below SCORE (after --score-transform)",
    )
    scoring.add_argument(
        "--max-passage-chars",
        type=_positive_int,
        metavar="N",
        help="cut passages longer than N characters before sending (default: no limit)",
    )
    scoring.add_argument(
        "--chunking",
        action="store_true",
        help="score long passages as windows of --max-passage-chars; a passage scores "
        "its best window",
    )
    scoring.add_argument(
        "--chunk-overlap-chars",
        type=_non_negative_int,
        metavar="N",
        help="characters shared by consecutive windows (with --chunking)",
    )
    scoring.add_argument(
        "--max-chunks-per-doc",
        type=_positive_int,
        metavar="N",
        help="at most N windows per passage (with --chunking)",
    )
    parser.set_defaults(handler=_run_rank)


def _add_models(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "models",
        help="list the ranking models a service offers, one id per line",
        description="List the ids of the ranking models the service offers, one per line.",
        epilog=_exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_service_options(parser)
    parser.set_defaults(handler=_run_models)


def build_parser() -> argparse.ArgumentParser:
    """The ``nimrank`` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="nimrank", description="Rerank passages through NIM or Cohere/Jina-style services."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve(commands)
    _add_rank(commands)
    _add_models(commands)
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
    if getattr(args, "base_url", None):
        _SECRETS[:] = [Secrets.of_client(api_key=None, base_url=args.base_url)]
    handler: _Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        _fail("", "interrupted", EXIT_INTERRUPTED)
        if argv is None and args.command in ("rank", "models"):
            # This process is ours: end it now. A normal exit would wait for the
            # requests still in flight (worker threads are joined at exit).
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`nimrank rank ... | head`): not an error worth a
        # traceback. Point stdout at devnull so the interpreter's final flush is quiet.
        _silence_stdout()
        return EXIT_OK
    except Exception as exc:
        # Never a traceback (they can quote a key): one line naming the error.
        return _fail(
            args.command, f"unexpected error (a bug: please report it): {exc!r}", EXIT_ERROR
        )
