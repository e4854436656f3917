"""`nimrank rank` and `nimrank models`, run as real subprocesses against the embedded server.

Every test starts the command the way a user would (``python -m nimrank`` or
the ``nimrank`` console script next to the interpreter), reads its stdout,
stderr and exit code, and compares the ranking with what ``RankingClient``
returns for the same input.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from nimrank import RankingClient
from nimrank.cli import EXIT_CODES
from nimrank.server import RankingServer

QUERY = "What is the GPU memory bandwidth of H100 SXM?"
PASSAGES = [
    "The Hopper GPU is paired with the Grace CPU using NVIDIA's chip-to-chip interconnect.",
    "A100 provides up to 20X higher performance over the prior generation.",
    "Accelerated servers with H100 deliver 3 terabytes per second of memory bandwidth per GPU.",
    "Chocolate cake needs flour, sugar, eggs and a hot oven.",
    "HBM3 memory gives the H100 SXM its bandwidth lead.",
]
# Variables that would let a test reach past the local server, or change defaults.
_SCRUBBED = (
    "NVIDIA_API_KEY",
    "NVIDIA_NIM_API_KEY",
    "NIMRANK_BASE_URL",
    "JINA_API_KEY",
    "COHERE_API_KEY",
    "CO_API_KEY",
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def nimrank(
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    script: bool = False,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m nimrank ARGS`` (or the console script) and capture everything."""
    launcher = [str(console_script())] if script else [sys.executable, "-m", "nimrank"]
    command = [*launcher, *args]
    return subprocess.run(
        command,
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env if env is not None else clean_env(),
        timeout=timeout,
        check=False,
    )


def rank_cli(
    query: str, source: str, base_url: str, *more: str, **options: Any
) -> subprocess.CompletedProcess[str]:
    """``nimrank rank --query QUERY --input SOURCE --base-url URL MORE...``."""
    return nimrank(
        "rank", "--query", query, "--input", source, "--base-url", base_url, *more, **options
    )


def console_script() -> Path:
    """The ``nimrank`` entry point installed next to this interpreter."""
    found = Path(sys.executable).with_name("nimrank")
    if not found.exists():
        located = shutil.which("nimrank")
        if located is None:
            pytest.skip("the nimrank console script is not installed next to this Python")
        found = Path(located)
    return found


def lines(output: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines()]


def client_ranking(
    server: RankingServer, passages: Sequence[str], top_n: int | None = None
) -> list[dict[str, Any]]:
    """What the library returns for the same input, in the CLI's shape."""
    with RankingClient(base_url=server.url) as client:
        return [
            {"index": p.index, "score": p.score, "text": p.text}
            for p in client.rank(QUERY, passages, top_n=top_n)
        ]


def assert_clean_failure(
    result: subprocess.CompletedProcess[str], code: int, *needles: str
) -> None:
    """Exit ``code``, nothing on stdout, a message naming ``needles``, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr.startswith("nimrank "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


@pytest.fixture
def server() -> Iterator[RankingServer]:
    with RankingServer() as running:
        yield running


@pytest.fixture
def jsonl_file(tmp_path: Path) -> Path:
    path = tmp_path / "passages.jsonl"
    path.write_text("".join(json.dumps({"text": p}) + "\n" for p in PASSAGES), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- rank: output


def test_rank_writes_the_clients_ranking_as_json_lines(
    server: RankingServer, jsonl_file: Path
) -> None:
    result = rank_cli(QUERY, str(jsonl_file), server.url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    assert lines(result.stdout) == client_ranking(server, PASSAGES)
    assert lines(result.stdout)[-1]["index"] == 3  # the cake recipe


def test_the_console_script_behaves_like_python_dash_m(
    server: RankingServer, tmp_path: Path
) -> None:
    text_file = tmp_path / "passages.txt"
    text_file.write_text("\n".join(PASSAGES) + "\n", encoding="utf-8")
    args = ("rank", "--query", QUERY, "--input", str(text_file), "--base-url", server.url)
    by_script = nimrank(*args, script=True)
    assert by_script.returncode == 0, by_script.stderr
    assert by_script.stdout == nimrank(*args).stdout
    assert lines(by_script.stdout) == client_ranking(server, PASSAGES)


def test_the_cohere_protocol_ranks_in_the_same_order(
    server: RankingServer, jsonl_file: Path
) -> None:
    args = ("rank", "--query", QUERY, "--input", str(jsonl_file), "--base-url", server.url)
    cohere = nimrank(*args, "--protocol", "cohere")
    assert cohere.returncode == 0, cohere.stderr
    assert {r.path for r in server.requests} == {"/v1/rerank"}
    nim = nimrank(*args)
    assert [item["index"] for item in lines(cohere.stdout)] == [
        item["index"] for item in lines(nim.stdout)
    ]


def test_top_n_keeps_the_best(server: RankingServer, jsonl_file: Path) -> None:
    result = nimrank(
        "rank",
        "--query",
        QUERY,
        "--input",
        str(jsonl_file),
        "--top-n",
        "2",
        "--base-url",
        server.url,
    )
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == client_ranking(server, PASSAGES, top_n=2)


def test_top_n_zero_writes_nothing_and_sends_nothing(
    server: RankingServer, jsonl_file: Path
) -> None:
    result = nimrank(
        "rank",
        "--query",
        QUERY,
        "--input",
        str(jsonl_file),
        "--top-n",
        "0",
        "--base-url",
        server.url,
    )
    assert (result.returncode, result.stdout) == (0, "")
    assert server.requests == []


def test_a_large_input_goes_out_in_batches_and_comes_back_whole(
    server: RankingServer, tmp_path: Path
) -> None:
    passages = [
        f"passage {i} on memory bandwidth {'H100' if i % 7 == 0 else 'A100'}" for i in range(700)
    ]
    path = tmp_path / "many.txt"
    path.write_text("\n".join(passages), encoding="utf-8")
    result = rank_cli(
        QUERY,
        str(path),
        server.url,
        "--max-batch-size",
        "100",
        "--max-concurrency",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert len(server.requests) == 7  # 700 passages, 100 a batch
    assert server.max_in_flight <= 3
    ranked = lines(result.stdout)
    assert sorted(item["index"] for item in ranked) == list(range(700))
    assert ranked == client_ranking(server, passages)


# --------------------------------------------------------------------------- rank: input formats


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param(
            '"a string"\n{"text": "with text"}\n', ["a string", "with text"], id="strings"
        ),
        pytest.param(
            '{"content": "hay"}\n{"page_content": "chain"}\n', ["hay", "chain"], id="keys"
        ),
        pytest.param("first line\n\n  \nsecond line\n", ["first line", "second line"], id="txt"),
    ],
)
def test_stdin_format_is_sniffed(server: RankingServer, content: str, expected: list[str]) -> None:
    result = nimrank(
        "rank", "--query", "line", "--input", "-", "--base-url", server.url, stdin=content
    )
    assert result.returncode == 0, result.stderr
    assert sorted(item["text"] for item in lines(result.stdout)) == sorted(expected)
    assert sorted(item["index"] for item in lines(result.stdout)) == list(range(len(expected)))


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson"])
def test_json_lines_suffixes_choose_json_lines(
    server: RankingServer, tmp_path: Path, suffix: str
) -> None:
    # The first line looks like plain text, so only the suffix can make it JSON Lines.
    path = tmp_path / f"passages{suffix}"
    path.write_text('"plain words"\n{"text": "memory words"}\n', encoding="utf-8")
    result = nimrank("rank", "--query", "words", "--input", str(path), "--base-url", server.url)
    assert result.returncode == 0, result.stderr
    assert sorted(item["text"] for item in lines(result.stdout)) == ["memory words", "plain words"]


def test_ctrl_c_ends_a_ranking_with_exit_code_130(tmp_path: Path) -> None:
    path = tmp_path / "slow.txt"
    path.write_text("\n".join(f"passage {i}" for i in range(40)), encoding="utf-8")
    with RankingServer(latency_ms=2000) as slow:
        command = ["rank", "--query", "passage", "--input", str(path), "--base-url", slow.url]
        process = subprocess.Popen(
            [sys.executable, "-m", "nimrank", *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        # Wait until a request is at the server, so the interrupt lands mid-ranking
        # (the request log only fills once a reply is sent).
        deadline = time.monotonic() + 30
        while slow.max_in_flight == 0 and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    assert stdout == ""


def test_the_library_never_loads_the_embedded_server() -> None:
    # The stand-in is for demos and tests: importing the client must not even load it.
    code = (
        "import sys, nimrank; "
        "nimrank.RankingClient(base_url='http://127.0.0.1:9/v1').close(); "
        "print('nimrank.server' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=clean_env()
    )
    assert result.stdout.strip() == "False"


def test_format_txt_takes_json_looking_lines_literally(server: RankingServer) -> None:
    stdin = '{"text": "literal"}\n'
    result = nimrank(
        "rank",
        "--query",
        "literal",
        "--input",
        "-",
        "--format",
        "txt",
        "--base-url",
        server.url,
        stdin=stdin,
    )
    assert result.returncode == 0, result.stderr
    assert [item["text"] for item in lines(result.stdout)] == ['{"text": "literal"}']


def test_text_key_picks_another_field(server: RankingServer, tmp_path: Path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_text('{"id": 1, "body": "memory bandwidth"}\n{"id": 2, "body": "cake"}\n')
    result = nimrank(
        "rank",
        "--query",
        "memory",
        "--input",
        str(path),
        "--text-key",
        "body",
        "--base-url",
        server.url,
    )
    assert result.returncode == 0, result.stderr
    assert [item["text"] for item in lines(result.stdout)] == ["memory bandwidth", "cake"]


def test_a_blank_passage_ranks_last_with_a_null_score(server: RankingServer) -> None:
    stdin = '{"text": "  "}\n{"text": "memory bandwidth"}\n'
    result = nimrank(
        "rank", "--query", "memory", "--input", "-", "--base-url", server.url, stdin=stdin
    )
    assert result.returncode == 0, result.stderr
    ranked = lines(result.stdout)  # strict JSON: no -Infinity
    assert ranked[-1] == {"index": 0, "score": None, "text": "  "}


def test_unicode_passages_come_back_unescaped(server: RankingServer) -> None:
    stdin = "café au lait\nmémoire GPU\n"
    result = nimrank(
        "rank", "--query", "mémoire", "--input", "-", "--base-url", server.url, stdin=stdin
    )
    assert result.returncode == 0, result.stderr
    assert "mémoire GPU" in result.stdout
    assert lines(result.stdout)[0]["text"] == "mémoire GPU"


def test_base_url_comes_from_the_environment(server: RankingServer, jsonl_file: Path) -> None:
    result = nimrank(
        "rank",
        "--query",
        QUERY,
        "--input",
        str(jsonl_file),
        env=clean_env(NIMRANK_BASE_URL=server.url),
    )
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == client_ranking(server, PASSAGES)


# --------------------------------------------------------------------------- rank: bad input


def test_a_missing_input_file_is_a_usage_error(server: RankingServer, tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    result = rank_cli(QUERY, str(missing), server.url)
    assert_clean_failure(result, 2, "nope.jsonl", "no such file")
    assert server.requests == []


def test_a_directory_is_not_an_input_file(server: RankingServer, tmp_path: Path) -> None:
    result = rank_cli(QUERY, str(tmp_path), server.url)
    assert_clean_failure(result, 2, "directory")


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        pytest.param('{"text": "ok"}\n{"text": oops\n', ("line 2", "not valid JSON"), id="bad"),
        pytest.param('{"text": "ok"}\n\n[1, 2]\n', ("line 3", "got an array"), id="array"),
        pytest.param('{"title": "no text"}\n', ("line 1", "no 'text'", "--text-key"), id="no text"),
        pytest.param('{"text": 42}\n', ("line 1", "'text' must be a string"), id="number"),
    ],
)
def test_a_bad_jsonl_line_is_named(
    server: RankingServer, tmp_path: Path, content: str, needles: tuple[str, ...]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    result = rank_cli(QUERY, str(path), server.url)
    assert_clean_failure(result, 2, "bad.jsonl", *needles)
    assert server.requests == []


def test_a_file_that_is_not_utf8_is_refused(server: RankingServer, tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    result = rank_cli(QUERY, str(path), server.url)
    assert_clean_failure(result, 2, "not UTF-8")


def test_an_empty_query_is_refused_before_any_request(
    server: RankingServer, jsonl_file: Path
) -> None:
    result = nimrank("rank", "--query", "  ", "--input", str(jsonl_file), "--base-url", server.url)
    assert_clean_failure(result, 2, "query is empty")
    assert server.requests == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param(("--input", "x.txt"), "--query", id="no query"),
        pytest.param(("--query", "q", "--input", "x.txt", "--top-n", "-1"), "--top-n", id="top-n"),
        pytest.param(
            ("--query", "q", "--input", "x", "--protocol", "grpc"), "--protocol", id="proto"
        ),
    ],
)
def test_bad_arguments_are_usage_errors(args: tuple[str, ...], needle: str) -> None:
    result = nimrank("rank", *args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_an_option_the_client_refuses_is_a_usage_error(
    server: RankingServer, jsonl_file: Path
) -> None:
    result = rank_cli(
        QUERY,
        str(jsonl_file),
        server.url,
        "--max-batch-size",
        "513",
    )
    assert_clean_failure(result, 2, "--max-batch-size")


# --------------------------------------------------------------------------- rank: service errors


def test_no_key_for_the_hosted_api_is_an_auth_error_without_a_request(jsonl_file: Path) -> None:
    result = nimrank("rank", "--query", QUERY, "--input", str(jsonl_file))
    assert_clean_failure(result, 3, "needs an API key", "NVIDIA_API_KEY", "hint:")


def test_a_refused_key_is_an_auth_error(jsonl_file: Path) -> None:
    # Fake keys only: the server requires one, the command sends another.
    with RankingServer(api_key="nvapi-fake-right") as guarded:
        wrong = rank_cli(
            QUERY,
            str(jsonl_file),
            guarded.url,
            env=clean_env(NVIDIA_API_KEY="nvapi-fake-wrong"),
        )
        right = rank_cli(
            QUERY,
            str(jsonl_file),
            guarded.url,
            env=clean_env(NVIDIA_API_KEY="nvapi-fake-right"),
        )
    assert_clean_failure(wrong, 3, "HTTP 401", "invalid API key")
    assert "nvapi-fake-wrong" not in wrong.stderr
    assert right.returncode == 0, right.stderr
    assert len(lines(right.stdout)) == len(PASSAGES)


def test_rate_limiting_after_the_retries_is_exit_4(server: RankingServer, jsonl_file: Path) -> None:
    server.inject_fault(429, headers={"Retry-After": "0"}, times=2)
    result = rank_cli(
        QUERY,
        str(jsonl_file),
        server.url,
        "--max-retries",
        "1",
    )
    assert_clean_failure(result, 4, "HTTP 429", "after 1 retries", "hint:")
    assert len(server.requests) == 2


def test_a_server_error_after_the_retries_is_exit_5(
    server: RankingServer, jsonl_file: Path
) -> None:
    server.inject_fault(503, headers={"Retry-After": "0"}, times=10)
    result = rank_cli(
        QUERY,
        str(jsonl_file),
        server.url,
        "--max-retries",
        "2",
    )
    assert_clean_failure(result, 5, "HTTP 503")
    assert len(server.requests) == 3


def test_a_retried_fault_is_invisible(server: RankingServer, jsonl_file: Path) -> None:
    server.inject_fault(503, headers={"Retry-After": "0"})
    result = rank_cli(QUERY, str(jsonl_file), server.url)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == client_ranking(server, PASSAGES)


def test_a_server_that_is_down_is_exit_5(jsonl_file: Path) -> None:
    with RankingServer() as gone:
        url = gone.url  # the port is free again once it stops
    result = rank_cli(
        QUERY,
        str(jsonl_file),
        url,
        "--max-retries",
        "0",
    )
    assert_clean_failure(result, 5, "ConnectError", "nimrank serve")


def test_a_dropped_connection_is_exit_5(server: RankingServer, jsonl_file: Path) -> None:
    server.inject_disconnect()
    result = rank_cli(
        QUERY,
        str(jsonl_file),
        server.url,
        "--max-retries",
        "0",
    )
    assert_clean_failure(result, 5, "RemoteProtocolError")


def test_a_timeout_is_exit_5(server: RankingServer, jsonl_file: Path) -> None:
    server.inject_delay(3.0)
    result = rank_cli(
        QUERY,
        str(jsonl_file),
        server.url,
        "--timeout",
        "0.3",
        "--max-retries",
        "0",
    )
    assert_clean_failure(result, 5, "within 0.3s")


def test_an_unusable_answer_is_exit_6(server: RankingServer, jsonl_file: Path) -> None:
    server.inject_fault(200, body={"rankings": [{"index": 99, "logit": 1.0}]})
    result = rank_cli(QUERY, str(jsonl_file), server.url)
    assert_clean_failure(result, 6, "Unusable response")


def test_a_request_the_server_refuses_is_exit_7(server: RankingServer, tmp_path: Path) -> None:
    path = tmp_path / "long.txt"
    path.write_text("memory " * 600 + "\nshort one\n", encoding="utf-8")
    result = nimrank(
        "rank",
        "--query",
        "memory",
        "--input",
        str(path),
        "--base-url",
        server.url,
        "--truncate",
        "NONE",
    )
    assert_clean_failure(result, 7, "HTTP 400", "exceeds maximum allowed token size")


def test_every_exit_code_is_listed_in_the_help() -> None:
    result = nimrank("rank", "--help")
    assert result.returncode == 0
    for code, meaning in EXIT_CODES.items():
        assert f"{code:>3}  {meaning}" in result.stdout


# --------------------------------------------------------------------------- progress, pipes


def run_with_terminal_stderr(args: Sequence[str]) -> tuple[int, str, str]:
    """Run the command with stderr on a pseudo-terminal; returns (code, stdout, stderr)."""
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "nimrank", *args],
            stdout=subprocess.PIPE,
            stderr=terminal,
            env=clean_env(),
        )
        os.close(terminal)
        terminal = -1
        seen = bytearray()
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            seen += chunk
        assert process.stdout is not None
        stdout = process.stdout.read().decode()
        code = process.wait(timeout=60)
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    return code, stdout, seen.decode(errors="replace")


def test_a_slow_ranking_draws_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    passages = [f"passage {i} about memory bandwidth" for i in range(400)]
    path = tmp_path / "slow.txt"
    path.write_text("\n".join(passages), encoding="utf-8")
    # 8 batches of 50, two at a time, 250 ms each: about a second in all.
    with RankingServer(latency_ms=250) as slow:
        args = (
            "rank",
            "--query",
            "memory",
            "--input",
            str(path),
            "--base-url",
            slow.url,
            "--max-batch-size",
            "50",
            "--max-concurrency",
            "2",
        )
        code, stdout, stderr = run_with_terminal_stderr(args)
        expected = nimrank(*args)
    assert code == 0, stderr
    assert "/400 texts scored" in stderr
    # Progress moves by whole batches of 50 as the client reports them.
    assert any(f"{done}/400 texts scored" in stderr for done in range(50, 400, 50))
    assert "] " in stderr
    assert "#" in stderr
    assert stderr.endswith("\r\x1b[K")  # the bar is erased at the end
    assert stdout == expected.stdout  # the bar changes nothing in the ranking
    assert expected.stderr == ""


def test_a_quick_ranking_draws_nothing_even_on_a_terminal(
    server: RankingServer, jsonl_file: Path
) -> None:
    code, stdout, stderr = run_with_terminal_stderr(
        ("rank", "--query", QUERY, "--input", str(jsonl_file), "--base-url", server.url)
    )
    assert code == 0
    assert stderr == ""
    assert len(lines(stdout)) == len(PASSAGES)


def test_a_closed_pipe_ends_the_command_quietly(server: RankingServer, tmp_path: Path) -> None:
    path = tmp_path / "many.txt"
    path.write_text("\n".join(f"passage {i} " + "word " * 40 for i in range(3000)))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nimrank",
            "rank",
            "--query",
            "passage",
            "--input",
            str(path),
            "--base-url",
            server.url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
    )
    assert process.stdout is not None
    assert process.stderr is not None
    first = process.stdout.readline()  # like `| head -1`
    process.stdout.close()
    stderr = process.stderr.read().decode()
    code = process.wait(timeout=60)
    assert json.loads(first)["index"] >= 0
    assert "Traceback" not in stderr
    assert code == 0


# --------------------------------------------------------------------------- models


def test_models_lists_the_servers_models(server: RankingServer) -> None:
    result = nimrank("models", "--base-url", server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "nimrank/lexical-bm25",
        "nvidia/llama-nemotron-rerank-vl-1b-v2",  # the server's ranking-vlm stand-in
    ]


def test_models_reports_auth_failures(jsonl_file: Path) -> None:
    with RankingServer(api_key="nvapi-fake-models") as guarded:
        result = nimrank("models", "--base-url", guarded.url)
    assert_clean_failure(result, 3, "HTTP 401")


def test_models_reports_a_server_that_is_down() -> None:
    with RankingServer() as gone:
        url = gone.url
    result = nimrank("models", "--base-url", url, "--max-retries", "0")
    assert_clean_failure(result, 5, "model list")


# --------------------------------------------------------------------------- issue 14: the CLI


def test_serve_on_a_port_in_use_is_a_usage_error() -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        result = nimrank("serve", "--port", port, timeout=30)
    assert_clean_failure(result, 2, "cannot listen on", port)


def test_a_json_array_file_is_read_as_passages(server: RankingServer, tmp_path: Path) -> None:
    path = tmp_path / "passages.json"
    path.write_text(json.dumps(PASSAGES), encoding="utf-8")
    result = rank_cli(QUERY, str(path), server.url)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == client_ranking(server, PASSAGES)


def test_a_json_array_on_stdin_is_read_as_passages_not_one_passage(server: RankingServer) -> None:
    stdin = json.dumps([{"text": p} for p in PASSAGES], indent=2)
    result = rank_cli(QUERY, "-", server.url, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == client_ranking(server, PASSAGES)


def test_a_json_file_that_is_not_an_array_is_refused(server: RankingServer, tmp_path: Path) -> None:
    path = tmp_path / "passages.json"
    path.write_text('{"text": "one"}', encoding="utf-8")
    assert_clean_failure(rank_cli(QUERY, str(path), server.url), 2, "expected a JSON array")


def test_score_flags_reach_the_client(server: RankingServer, jsonl_file: Path) -> None:
    result = rank_cli(
        QUERY, str(jsonl_file), server.url, "--score-transform", "sigmoid",
        "--score-threshold", "0.5",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with RankingClient(base_url=server.url, score_transform="sigmoid") as client:
        expected = [
            p.index for p in client.rank(QUERY, PASSAGES) if p.score is not None and p.score >= 0.5
        ]
    got = lines(result.stdout)
    assert [row["index"] for row in got] == expected
    assert all(0.5 <= row["score"] <= 1 for row in got)


def test_chunking_flags_reach_the_client(server: RankingServer, tmp_path: Path) -> None:
    long = "cake " * 200 + "H100 memory bandwidth"
    path = tmp_path / "long.txt"
    path.write_text(f"{long}\nchocolate cake\n", encoding="utf-8")
    plain = rank_cli("memory bandwidth", str(path), server.url, "--max-passage-chars", "100")
    chunked = rank_cli(
        "memory bandwidth", str(path), server.url, "--max-passage-chars", "100", "--chunking",
        "--chunk-overlap-chars", "20", "--max-chunks-per-doc", "20",
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    assert chunked.returncode == 0, chunked.stderr

    # Cut to 100 characters the long passage is all cake; in windows it holds the answer.
    def score_of_long(output: str) -> float:
        return float(next(row["score"] for row in lines(output) if row["index"] == 0))

    assert lines(chunked.stdout)[0]["index"] == 0
    assert score_of_long(chunked.stdout) > score_of_long(plain.stdout)


@pytest.mark.parametrize(
    ("flags", "needles"),
    [
        (("--chunking",), ("--chunking needs --max-passage-chars",)),
        (
            ("--max-passage-chars", "10", "--chunking", "--chunk-overlap-chars", "50"),
            ("--chunk-overlap-chars must be",),
        ),
    ],
)
def test_client_messages_use_flag_spelling(
    server: RankingServer, jsonl_file: Path, flags: tuple[str, ...], needles: tuple[str, ...]
) -> None:
    result = rank_cli(QUERY, str(jsonl_file), server.url, *flags)
    assert_clean_failure(result, 2, *needles)
    assert "_" not in result.stderr, result.stderr
