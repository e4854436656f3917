"""A lean fake NIM ranking server for the benchmark, in a process of its own.

The embedded ``RankingServer`` spends milliseconds of CPU per request (issue
15), so a benchmark against it measures the stand-in, not the client. This one
is a bare asyncio HTTP/1.1 server (keep-alive, ``Content-Length`` bodies) that
models a GPU instead of scoring text:

* each request takes ``latency_ms + per_passage_ms x passages`` (asleep, not
  burning CPU), NIM's 512-passage cap answers 400;
* ``--slots 0`` (spare capacity): every request is served at once;
  ``--slots K`` (saturated): at most K requests are served at a time, the rest
  queue, as on a GPU with no room for more.

A passage's logit is :func:`logit` of its text (a hash: unrelated to input
order, distinct, the same in every process), so the client side can check the
full order without a scorer. Endpoints: ``POST /v1/ranking``,
``GET /v1/models``; for the benchmark ``GET /_stats`` (requests, in-flight peak,
passages per request, statuses since the last reset) and ``POST /_reset``.

On start it prints ``{"url": "http://127.0.0.1:PORT/v1"}`` and serves until its
stdin closes (the benchmark process ended), so it never outlives the benchmark.

    python tests/benchmarks/fakenim.py --latency-ms 20 --per-passage-ms 0.05 --slots 2
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import threading
from typing import Any, Final

MODEL: Final = "nimrank/lexical-bm25"
_SCALE: Final = 20.0 / 2**64


def logit(text: str) -> float:
    """The fake model's score for ``text``: a hash mapped into [-10, 10)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * _SCALE - 10.0


class _State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.latency = args.latency_ms / 1000
        self.per_passage = args.per_passage_ms / 1000
        self.max_passages: int = args.max_passages
        self.slots = asyncio.Semaphore(args.slots) if args.slots > 0 else None
        self.reset()

    def reset(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.passages: list[int] = []
        self.statuses: list[int] = []


def _reply(status: int, body: bytes) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class _Connection(asyncio.Protocol):
    def __init__(self, state: _State) -> None:
        self._state = state
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        # Requests on one connection are answered in order (no pipelining by
        # the clients measured here, but keep it right anyway).
        self._queue: asyncio.Queue[tuple[bytes, bytes, bytes]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self._buffer) < end + 4 + length:
                return
            body = bytes(self._buffer[end + 4 : end + 4 + length])
            del self._buffer[: end + 4 + length]
            method, target = head.split(b" ", 2)[:2]
            self._queue.put_nowait((method, target, body))

    async def _serve(self) -> None:
        while True:
            method, target, body = await self._queue.get()
            answer = await self._handle(method, target, body)
            assert self._transport is not None
            self._transport.write(answer)

    async def _handle(self, method: bytes, target: bytes, body: bytes) -> bytes:
        state = self._state
        if target.endswith(b"/ranking") and method == b"POST":
            return await self._rank(body)
        if target.endswith(b"/models"):
            return _reply(200, json.dumps({"data": [{"id": MODEL}]}).encode())
        if target == b"/_stats":
            stats = {
                "requests": len(state.statuses),
                "max_in_flight": state.max_in_flight,
                "passages": state.passages,
                "statuses": state.statuses,
            }
            return _reply(200, json.dumps(stats).encode())
        if target == b"/_reset":
            state.reset()
            return _reply(200, b"{}")
        return _reply(404, b'{"detail": "not found"}')

    async def _rank(self, body: bytes) -> bytes:
        state = self._state
        texts = [passage["text"] for passage in json.loads(body)["passages"]]
        state.passages.append(len(texts))
        if len(texts) > state.max_passages:
            state.statuses.append(400)
            detail = f"at most {state.max_passages} passages per request, got {len(texts)}"
            return _reply(400, json.dumps({"detail": detail}).encode())
        state.in_flight += 1
        state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            delay = state.latency + state.per_passage * len(texts)
            if state.slots is not None:
                async with state.slots:
                    await asyncio.sleep(delay)
            elif delay > 0:
                await asyncio.sleep(delay)
        finally:
            state.in_flight -= 1
        scored = sorted(((logit(text), index) for index, text in enumerate(texts)), reverse=True)
        rankings = [{"index": index, "logit": score} for score, index in scored]
        state.statuses.append(200)
        return _reply(200, json.dumps({"rankings": rankings}).encode())


def _exit_when_stdin_closes() -> None:
    sys.stdin.read()
    os._exit(0)


async def _main(args: argparse.Namespace) -> None:
    state = _State(args)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(state), "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"url": f"http://127.0.0.1:{port}/v1"}), flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    """Serve until stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--per-passage-ms", type=float, default=0.05)
    parser.add_argument("--max-passages", type=int, default=512)
    parser.add_argument("--slots", type=int, default=0, help="0: serve every request at once")
    args = parser.parse_args(argv)
    threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    asyncio.run(_main(args))
    return 0


class FakeNim:
    """Start ``fakenim.py`` in a child process; ``url``, ``reset()``, ``stats()``."""

    def __init__(self, **options: Any) -> None:
        import subprocess

        self.options = options
        command = [sys.executable, os.path.abspath(__file__)]
        command += [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the fake NIM server did not start; see its output above")
        self.url: str = json.loads(line)["url"]
        self._port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def _ask(self, method: str, path: str) -> bytes:
        # http.client, not urllib: no proxy settings from the environment apply.
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)
        try:
            connection.request(method, path, body=b"" if method == "POST" else None)
            return connection.getresponse().read()
        finally:
            connection.close()

    def reset(self) -> None:
        """Forget the request log and the in-flight peak."""
        self._ask("POST", "/_reset")

    def stats(self) -> dict[str, Any]:
        """Requests, in-flight peak, passages and statuses since the last reset."""
        answer: dict[str, Any] = json.loads(self._ask("GET", "/_stats"))
        return answer

    def close(self) -> None:
        """Stop the server (closing its stdin ends it)."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=10)

    def __enter__(self) -> FakeNim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
