"""Issue 11, items 1-16, client side: one test (or a few) per item, numbered as the issue.

Each test attacks the public API (``RankingClient``, ``AsyncRankingClient``,
``nimrank`` as a subprocess) from outside. The module-level helpers
(``transport``, ``redaction``, ``keys``) have their own tests next to this file
and in tests/unit; here is what a user sees.

Every test fails on the code before its fix (each was written and seen failing
first). Slow cases carry the ``hostile`` marker (``pytest -m hostile tests/hostile``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from hostile.hostileserver import (
    Connection,
    HostileServer,
    bomb,
    echo_headers,
    huge_body,
    nested_json,
    ok_body,
    redirect,
    respond,
    response_bytes,
    slow,
    trickle,
)
from nimrank import AsyncRankingClient, RankingClient, RankingError, RetryPolicy, errors
from nimrank.cli import EXIT_CODES
from nimrank.options import HttpTransport
from nimrank.redaction import Secrets, protect_logs
from nimrank.server import RankingServer

KEY = "nvapi-Hostile/Key-0123456789"
#: The model every ranking client names, so that no call asks /v1/models first.
MODEL = "nvidia/llama-3.2-nv-rerankqa-1b-v2"
QUERY = "gpu memory"
FAST = RetryPolicy(initial_delay=0, max_delay=0, max_retry_after=0)


def within(seconds: float, work: Callable[[], object]) -> tuple[bool, object]:
    """Run ``work`` on a thread; (finished in time, its result or exception)."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["out"] = work()
        except BaseException as exc:  # the test judges it
            box["out"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    return not thread.is_alive(), box.get("out")


def shows_key(text: str) -> bool:
    # The digits are never escaped by the spellings tested; "Hostile" alone is
    # also the scripted server's reason phrase.
    return "0123456789" in text or "Hostile/Key" in text


def exception_chain_text(exc: BaseException) -> str:
    """Everything an exception and its chain (cause and context) would print."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        parts += [repr(seen), str(seen), repr(getattr(seen, "doc", ""))]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


@pytest.fixture
def server() -> Iterator[RankingServer]:
    with RankingServer() as running:
        yield running


def cli(
    *args: str, stdin: bytes = b"", env: dict[str, str] | None = None, stdout: Any = None
) -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    base.pop("NIMRANK_BASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "nimrank", *args],
        input=stdin,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**base, **(env or {})},
        timeout=60,
        check=False,
    )


# -- 1. fork after use ------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.hostile
def test_01_a_forked_child_gets_its_own_pool_and_its_own_scores(server: RankingServer) -> None:
    passages = [f"gpu memory passage {i}" for i in range(12)] + ["cake"] * 4
    client = RankingClient(model=MODEL, base_url=server.url, max_batch_size=2)
    expected = [(p.index, p.score) for p in client.rank(QUERY, passages)]
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: rank, report, leave without running pytest's exit
        code = 1
        try:
            got = [(p.index, p.score) for p in client.rank(QUERY, passages)]
            os.write(write_end, json.dumps(got).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    parent = [(p.index, p.score) for p in client.rank(QUERY, passages)]
    deadline = time.monotonic() + 10
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    child = json.loads(os.read(read_end, 1 << 20) or b"null")
    os.close(read_end)
    client.close()
    assert parent == expected
    assert child is not None, f"the child hung or failed (status {status})"
    assert [tuple(pair) for pair in child] == expected


# -- 2. CLI stdio -----------------------------------------------------------------------------


def test_02_cli_reads_and_writes_utf8_whatever_pythonioencoding(server: RankingServer) -> None:
    passages = "café gpu\nplain gpu words\nemoji 🚀 gpu\n"
    with RankingClient(model=MODEL, base_url=server.url) as client:
        expected = {p.text: p.score for p in client.rank("café gpu", passages.splitlines())}
    for encoding in ("latin-1", "ascii", "utf-8"):
        result = cli(
            "rank", "--query", "café gpu", "--input", "-", "--base-url", server.url,
            stdin=passages.encode("utf-8"),
            env={"PYTHONIOENCODING": encoding, "LC_ALL": "C"},
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        got = {row["text"]: row["score"] for row in map(json.loads, result.stdout.splitlines())}
        assert got == expected, encoding


def test_02_a_file_input_with_emoji_is_written_whole(server: RankingServer, tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_text("rocket 🚀 gpu\nsnake 🐍 gpu\n", encoding="utf-8")
    result = cli(
        "rank", "--query", "gpu", "--input", str(path), "--base-url", server.url,
        env={"PYTHONIOENCODING": "latin-1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    texts = {json.loads(line)["text"] for line in result.stdout.decode("utf-8").splitlines()}
    assert texts == {"rocket 🚀 gpu", "snake 🐍 gpu"}


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_02_a_write_failure_is_not_a_usage_error(server: RankingServer) -> None:
    with open("/dev/full", "wb") as full:
        result = cli(
            "rank", "--query", "gpu", "--input", "-", "--base-url", server.url,
            stdin=b"gpu one\ngpu two\n", stdout=full,
        )  # fmt: skip
    assert result.returncode == 8, result.stderr
    assert b"cannot write the output" in result.stderr
    assert b"Traceback" not in result.stderr


# -- 3. keys in logs --------------------------------------------------------------------------


def test_03_the_log_filter_masks_httpx_info_lines(
    server: RankingServer, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = Secrets.of_client(api_key=None, base_url=f"{server.url}?api-key={KEY}")
    protect_logs(secrets)
    with caplog.at_level(logging.DEBUG), httpx.Client() as http:
        http.get(f"{server.url}/models?api-key={KEY}")
    assert "HTTP Request: GET" in caplog.text
    assert not shows_key(caplog.text), caplog.text


def test_03_no_key_in_any_log_line_of_a_call(
    server: RankingServer, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.DEBUG),
        RankingClient(model=MODEL, base_url=f"{server.url}?api-key={KEY}") as c,
    ):
        c.rank(QUERY, ["gpu memory", "cake"])
    assert "HTTP Request" in caplog.text
    assert not shows_key(caplog.text), caplog.text


@pytest.mark.parametrize("stack", ["aiohttp", "httpx"])
def test_03_no_key_in_any_log_line_or_error_of_an_async_call(
    server: RankingServer, caplog: pytest.LogCaptureFixture, stack: HttpTransport
) -> None:
    async def calls() -> RankingError:
        async with AsyncRankingClient(
            model=MODEL, base_url=f"{server.url}?api-key={KEY}", http_transport=stack
        ) as c:
            await c.rank(QUERY, ["gpu memory", "cake"])
        async with AsyncRankingClient(
            model=MODEL,
            base_url=f"http://user:{quote(KEY, safe='')}@127.0.0.1:9/v1?api-key={KEY}",
            api_key=KEY,
            http_transport=stack,
            retry_policy=RetryPolicy(max_retries=1, initial_delay=0),
        ) as c:
            with pytest.raises(RankingError) as caught:
                await c.rank(QUERY, ["gpu memory"])
        return caught.value

    with caplog.at_level(logging.DEBUG):
        error = asyncio.run(calls())
    assert not shows_key(caplog.text), caplog.text
    assert not shows_key(exception_chain_text(error))
    assert not shows_key(repr(error))


# -- 4. a key HTTP cannot carry ---------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY + "\u00a0", KEY.replace("-", "\u2011")])
def test_04_a_non_ascii_key_is_refused_at_construction_without_showing_it(key: str) -> None:
    with pytest.raises(ValueError, match="the API key") as caught:
        RankingClient(model=MODEL, base_url="http://127.0.0.1:9/v1", api_key=key)
    assert not shows_key(exception_chain_text(caught.value))


@pytest.mark.parametrize("value", [b"bytes-token", 42, "tok\u00a0en"])
def test_04_an_extra_header_of_any_type_is_checked(value: Any) -> None:
    with pytest.raises((ValueError, TypeError), match="X-Token"):
        RankingClient(
            model=MODEL, base_url="http://127.0.0.1:9/v1", extra_headers={"X-Token": value}
        )


# -- 5. redaction gaps ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        KEY,
        KEY.replace("/", "\\/"),
        KEY.replace("-", "\\u002d"),
        KEY.replace("-", "\\u002D").replace("/", "\\/"),
        "".join(f"\\u{ord(c):04x}" for c in KEY),
        KEY.replace("/", "%2F"),
        repr(KEY.encode()).replace("-", "\\x2d"),
    ],
)
def test_05_every_spelling_of_the_key_is_masked(spelling: str) -> None:
    secrets = Secrets.of_client(api_key=KEY, base_url=None)
    assert not shows_key(secrets.mask(f'{{"detail": "bad key {spelling}"}}'))


def test_05_userinfo_query_keys_and_extra_headers_are_secrets() -> None:
    secrets = Secrets.of_client(
        api_key=None,
        base_url="http://user:pass-Hostile-1@gw:8000/v1?api-key=q-Hostile-2&T0ken-Hostile-3",
        extra_headers={"X-Gateway": "gw-Hostile-4"},
    )
    text = "pass-Hostile-1 q-Hostile-2 T0ken-Hostile-3 gw-Hostile-4"
    assert secrets.mask(text) == "*** *** *** ***"


@pytest.mark.parametrize(
    "escape",
    [lambda v: v.replace("/", "\\/"), lambda v: v.replace("-", "\\u002d")],
    ids=["slash", "u002d"],
)
def test_05_an_echoed_key_is_masked_after_json_decoding(escape: Callable[[str], str]) -> None:
    with HostileServer(echo_headers(400, escape=escape)) as hostile:
        client = RankingClient(model=MODEL, base_url=hostile.url, api_key=KEY, max_retries=0)
        with pytest.raises(RankingError) as caught:
            client.rank(QUERY, ["a"])
    assert not shows_key(exception_chain_text(caught.value))


@pytest.mark.parametrize(
    "location",
    [
        pytest.param(
            f"http://127.0.0.1:9/{KEY}/v1",
        ),
        f"http://u:{KEY}@127.0.0.1:9/v1",
        f"http://127.0.0.1:9/?{KEY}",
    ],
)
def test_05_a_redirect_location_is_masked(location: str) -> None:
    with HostileServer(redirect(location)) as hostile:
        client = RankingClient(model=MODEL, base_url=hostile.url, api_key=KEY, max_retries=0)
        with pytest.raises(RankingError) as caught:
            client.rank(QUERY, ["a"])
    assert not shows_key(exception_chain_text(caught.value))


def test_05_userinfo_and_a_bare_query_key_are_not_in_the_repr() -> None:
    key = KEY.replace("/", "%2F")  # a userinfo password has its slash percent-encoded
    client = RankingClient(model=MODEL, base_url=f"http://user:{key}@127.0.0.1:9/v1?{key}")
    assert not shows_key(repr(client))


def test_05_the_raw_body_is_not_on_the_exception_chain() -> None:
    body = b'{"rankings": [{"index": "' + KEY.encode() + b'"}]'  # malformed: unterminated
    with HostileServer(respond(200, body)) as hostile:
        client = RankingClient(model=MODEL, base_url=hostile.url, api_key=KEY, max_retries=0)
        with pytest.raises(errors.ResponseFormatError) as caught:
            client.rank(QUERY, ["a"])
    assert not shows_key(exception_chain_text(caught.value))


# -- 6. timeout bounds the whole attempt ------------------------------------------------------


def test_06_a_trickling_server_fails_a_call_within_its_timeout() -> None:
    with HostileServer(trickle(ok_body(1), interval=0.9)) as hostile:
        client = RankingClient(model=MODEL, base_url=hostile.url, timeout=1, max_retries=0)
        finished, outcome = within(2.2, lambda: client.rank(QUERY, ["a"]))
    assert finished, "still running after 2.2 s with timeout=1"
    assert isinstance(outcome, errors.RankingTimeoutError), outcome


def test_06_a_trickling_server_fails_an_async_call_within_its_timeout() -> None:
    async def call(url: str) -> object:
        async with AsyncRankingClient(
            model=MODEL, base_url=url, timeout=1, max_retries=0
        ) as client:
            return await client.rank(QUERY, ["a"])

    with HostileServer(trickle(ok_body(1), interval=0.9)) as hostile:
        finished, outcome = within(2.2, lambda: asyncio.run(call(hostile.url)))
    assert finished, "still running after 2.2 s with timeout=1"
    assert isinstance(outcome, errors.RankingTimeoutError), outcome


# -- 7. response size is capped ---------------------------------------------------------------


@pytest.mark.parametrize(
    "script",
    [huge_body(64 << 20), bomb("gzip"), bomb("zstd")],
    ids=["64MiB", "gzip-bomb", "zstd-bomb"],
)
def test_07_an_oversized_answer_is_a_typed_error_naming_the_batch(script: Any) -> None:
    with HostileServer(script) as hostile:
        client = RankingClient(model=MODEL, base_url=hostile.url, max_retries=0)
        finished, outcome = within(5, lambda: client.rank(QUERY, ["a", "b"]))
    assert finished
    assert isinstance(outcome, RankingError), outcome
    assert "batch 1 of 1" in str(outcome)
    # zstd is never asked for, so never decoded: refused by its name.
    assert "larger than" in str(outcome) or "'zstd'" in str(outcome)


# -- 8. Ctrl-C and close() return promptly ----------------------------------------------------


def test_08_close_ends_a_call_with_50_batches_in_flight_promptly() -> None:
    with HostileServer(slow(30, respond(200, ok_body(1)))) as hostile:
        client = RankingClient(
            model=MODEL, base_url=hostile.url, max_batch_size=1, max_concurrency=50, max_retries=0
        )
        box: dict[str, float] = {}

        def call() -> object:
            try:
                return client.rank(QUERY, [f"p{i}" for i in range(50)])
            finally:
                box["ended"] = time.monotonic()

        thread = threading.Thread(target=lambda: within(60, call), daemon=True)
        thread.start()
        while len(hostile.requests) < 50 and thread.is_alive():
            time.sleep(0.05)
        closed_at = time.monotonic()
        finished, _ = within(1.0, client.close)
        thread.join(1.0)
    assert finished, "close() took more than a second"
    assert box.get("ended", 1e9) - closed_at < 1.0


def test_08_ctrl_c_ends_nimrank_rank_within_a_second(tmp_path: Path) -> None:
    path = tmp_path / "fifty.txt"
    path.write_text("".join(f"passage {i}\n" for i in range(50)), encoding="utf-8")
    with HostileServer(slow(30, respond(200, ok_body(1)))) as hostile:
        process = subprocess.Popen(
            [sys.executable, "-m", "nimrank", "rank", "--query", "q", "--input", str(path),
             "--base-url", hostile.url, "--max-batch-size", "1", "--max-concurrency", "50"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while len(hostile.requests) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        _, stderr = process.communicate(timeout=30)
        elapsed = time.monotonic() - interrupted
    assert process.returncode == 130, stderr
    assert elapsed < 1.0, elapsed
    assert b"Traceback" not in stderr


# -- 9. close() racing rank() -----------------------------------------------------------------


@pytest.mark.hostile
def test_09_close_racing_rank_never_gives_a_bare_error_or_hangs(server: RankingServer) -> None:
    client = RankingClient(model=MODEL, base_url=server.url, max_batch_size=2, timeout=5)
    stop = time.monotonic() + 4
    bare: list[BaseException] = []

    def hammer() -> None:
        while time.monotonic() < stop:
            try:
                client.rank(QUERY, ["a", "b", "c", "d", "e"])
            except RankingError:
                pass
            except BaseException as exc:
                bare.append(exc)

    threads = [threading.Thread(target=hammer, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    while time.monotonic() < stop:
        client.close()
        time.sleep(0.002)
    for thread in threads:
        thread.join(6)
    assert not any(thread.is_alive() for thread in threads), "a call hung"
    assert not bare, bare[:3]


# -- 10. deeply nested JSON -------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 400])
def test_10_deep_json_from_the_server_is_a_typed_error(status: int) -> None:
    with HostileServer(respond(status, nested_json())) as hostile:
        client = RankingClient(model=MODEL, base_url=hostile.url, max_retries=0)
        with pytest.raises(RankingError):
            client.rank(QUERY, ["a"])


def test_10_a_deep_model_list_is_a_typed_error() -> None:
    with HostileServer(respond(200, nested_json())) as hostile:
        client = RankingClient(model=MODEL, base_url=hostile.url, max_retries=0)
        with pytest.raises(errors.ResponseFormatError):
            client.list_models()


def test_10_deep_json_lines_input_is_a_usage_error() -> None:
    result = cli("rank", "--query", "q", "--input", "-", stdin=b'"ok"\n' + nested_json() + b"\n")
    assert result.returncode == 2, result.stderr
    assert b"nested too deeply" in result.stderr
    assert b"Traceback" not in result.stderr


# -- 11. an absurd Retry-After ----------------------------------------------------------------


def test_11_an_absurd_retry_after_date_is_a_backoff_not_an_overflow() -> None:
    absurd = {"Retry-After": "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"}
    with HostileServer(respond(503, b"{}", absurd), respond(200, ok_body(1))) as hostile:
        client = RankingClient(model=MODEL, base_url=hostile.url, retry_policy=FAST)
        assert [p.index for p in client.rank(QUERY, ["a"])] == [0]


# -- 12. absurd timeouts ----------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [float("inf"), 1e10, 1e300])
def test_12_an_absurd_timeout_is_refused_or_works(server: RankingServer, timeout: float) -> None:
    try:
        client = RankingClient(model=MODEL, base_url=server.url, timeout=timeout)
    except ValueError:
        return
    assert client.rank(QUERY, ["gpu memory"])[0].index == 0


def test_12_cli_refuses_an_absurd_timeout_without_a_traceback() -> None:
    result = cli("rank", "--query", "q", "--input", "-", "--timeout", "1e10")
    assert result.returncode == 2
    assert b"--timeout" in result.stderr
    assert b"Traceback" not in result.stderr


# -- 13. invalid URLs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:80:80/v1", "http://127.0.0.1:99999/v1", "http://[::1/v1"]
)
def test_13_an_invalid_url_is_a_value_error_at_construction(base_url: str) -> None:
    with pytest.raises(ValueError, match="not a valid URL"):
        RankingClient(model=MODEL, base_url=base_url)


# -- 14. a lone surrogate ---------------------------------------------------------------------


def test_14_a_lone_surrogate_is_refused_before_any_request_naming_the_passage() -> None:
    with HostileServer(respond(200, ok_body(1))) as hostile:
        client = RankingClient(model=MODEL, base_url=hostile.url, max_batch_size=1)
        with pytest.raises(ValueError, match=r"passages\[2\]"):
            client.rank(QUERY, ["fine", "also fine", "bad \ud800"])
        assert hostile.requests == []


# -- 15. shapes that are not the protocol's ---------------------------------------------------


@pytest.mark.parametrize("body", [b'"string"', b'{"data": "abc"}'])
def test_15_a_model_list_that_is_not_a_list_is_a_format_error(body: bytes) -> None:
    with HostileServer(respond(200, body)) as hostile:
        client = RankingClient(model=MODEL, base_url=hostile.url, max_retries=0)
        with pytest.raises(errors.ResponseFormatError):
            client.list_models()


def test_15_duplicate_keys_in_a_ranking_are_a_format_error() -> None:
    body = b'{"rankings": [{"index": 0, "logit": 1.0, "logit": 9.0}, {"index": 1, "logit": 0.5}]}'
    with HostileServer(respond(200, body)) as hostile:
        client = RankingClient(model=MODEL, base_url=hostile.url, max_retries=0)
        with pytest.raises(errors.ResponseFormatError):
            client.rank(QUERY, ["a", "b"])


# -- 16. the CLI never prints a traceback -----------------------------------------------------


def _answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Any:
    def script(conn: Connection) -> None:
        conn.send(response_bytes(status, body, headers))

    return script


CLI_ATTACKS = [
    pytest.param(_answer(200, nested_json()), (), {0, 6}, id="deep-json-answer"),
    pytest.param(
        _answer(200, b'"string"'),
        ("models",),
        {6},
        id="models-not-a-list",
    ),
    pytest.param(_answer(200, b"{not json"), (), {6}, id="not-json"),
    pytest.param(_answer(302, b"", {"Location": f"http://x/?{KEY}"}), (), {7}, id="redirect"),
    pytest.param(echo_headers(401), (), {3}, id="echoed-key"),
    pytest.param(
        _answer(503, b"{}", {"Retry-After": "Mon, 01 Jan 99999999999999999999 00:00:00 GMT"}),
        ("--max-retries", "0"),
        {5},
        id="absurd-retry-after",
    ),
    pytest.param(_answer(200, ok_body(1)), ("--timeout", "inf"), {2}, id="timeout-inf"),
]


@pytest.mark.parametrize(("script", "more", "codes"), CLI_ATTACKS)
def test_16_the_cli_never_prints_a_traceback_or_a_key(
    script: Any, more: tuple[str, ...], codes: set[int]
) -> None:
    with HostileServer(script) as hostile:
        if more[:1] == ("models",):
            args: tuple[str, ...] = ("models", "--base-url", hostile.url)
        else:
            args = ("rank", "--query", "q", "--input", "-", "--base-url", hostile.url, *more)
        result = cli(*args, stdin=b"a\n", env={"NVIDIA_API_KEY": KEY})
    assert result.returncode in codes, result.stderr
    assert result.returncode in EXIT_CODES
    assert b"Traceback" not in result.stderr
    assert not shows_key(result.stderr.decode("utf-8", "replace"))


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        (("--base-url", "http://127.0.0.1:80:80/v1"), {}, 2),
        (("--base-url", "http://127.0.0.1:9/v1"), {"NVIDIA_API_KEY": KEY + "\u00a0"}, None),
        (("--max-retries", "0", "--base-url", "http://127.0.0.1:9/v1?api-key=" + KEY), {}, 5),
    ],
    ids=["invalid-url", "non-ascii-key", "query-key-refused-connection"],
)
def test_16_bad_settings_give_an_exit_code_not_a_traceback(
    args: tuple[str, ...], env: dict[str, str], code: int | None
) -> None:
    result = cli("rank", "--query", "q", "--input", "-", *args, stdin=b"a\n", env=env)
    assert result.returncode in EXIT_CODES
    if code is not None:
        assert result.returncode == code, result.stderr
    assert b"Traceback" not in result.stderr
    assert not shows_key(result.stderr.decode("utf-8", "replace"))
