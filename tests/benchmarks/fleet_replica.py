"""A capacity-limited NIM replica in a process of its own, for the fleet benchmark.

Models one GPU: ``--capacity`` requests scored at once (2 by default), each
taking ``--latency-ms`` plus ``--per-passage-ms`` per passage; the rest
queue. Its capacity is therefore computable:
``capacity / (latency + per_passage x passages)`` requests a second. Scores
are the embedded server's (:mod:`nimrank.server.scoring`), so the benchmark
can check every answer.

Until ``RankingServer(capacity=N)`` lands this small asyncio server stands in
for it (one thread: the semaphore is the GPU, and queued requests cost
nothing). Besides NIM's ``POST /v1/ranking`` and ``GET /v1/health/ready`` it
answers ``GET /stats`` (requests, pairs, the most served at once, the first
start and last finish on this process's monotonic clock) and ``POST /reset``.

    python tests/benchmarks/fleet_replica.py --capacity 2 --latency-ms 20 --per-passage-ms 0.5

prints ``{"url": "http://127.0.0.1:PORT/v1"}`` once it listens, then serves
until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

from nimrank.server.scoring import score_passages


@dataclass
class Counters:
    requests: int = 0
    pairs: int = 0
    in_service: int = 0
    max_in_service: int = 0
    first_start: float | None = None
    last_finish: float | None = None


class Replica:
    """The request handling: scoring under a semaphore of ``capacity`` slots."""

    def __init__(self, capacity: int, latency_ms: float, per_passage_ms: float) -> None:
        self.slots = asyncio.Semaphore(capacity)
        self.latency = latency_ms / 1000.0
        self.per_passage = per_passage_ms / 1000.0
        self.counters = Counters()

    async def rank(self, body: bytes) -> tuple[int, Any]:
        try:
            request = json.loads(body)
            query = request["query"]["text"]
            passages = [passage["text"] for passage in request["passages"]]
        except (ValueError, KeyError, TypeError):
            return 400, {"error": "not a NIM ranking request"}
        logits = score_passages(query, passages)
        counters = self.counters
        async with self.slots:
            started = time.monotonic()
            if counters.first_start is None:
                counters.first_start = started
            counters.in_service += 1
            counters.max_in_service = max(counters.max_in_service, counters.in_service)
            await asyncio.sleep(self.latency + self.per_passage * len(passages))
            counters.in_service -= 1
            counters.requests += 1
            counters.pairs += len(passages)
            counters.last_finish = time.monotonic()
        order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))
        return 200, {"rankings": [{"index": i, "logit": logits[i]} for i in order]}

    async def route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if (method, path) == ("POST", "/v1/ranking"):
            return await self.rank(body)
        if (method, path) == ("GET", "/v1/health/ready"):
            return 200, {"status": "ready"}
        if (method, path) == ("GET", "/stats"):
            return 200, vars(self.counters)
        if (method, path) == ("POST", "/reset"):
            self.counters = Counters()
            return 200, {"ok": True}
        return 404, {"error": f"no route for {method} {path}"}

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Without TCP_NODELAY a reply waits on a delayed ACK, ~40 ms on loopback.
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request_line, *lines = head.split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = {}
                for line in lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length") or 0))
                status, payload = await self.route(method, path, body)
                data = json.dumps(payload).encode()
                writer.write(
                    b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s"
                    % (status, b"OK" if status == 200 else b"Error", len(data), data)
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the client went away
        finally:
            writer.close()


async def main_async(args: argparse.Namespace) -> None:
    replica = Replica(args.capacity, args.latency_ms, args.per_passage_ms)
    server = await asyncio.start_server(replica.serve_connection, "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"url": f"http://127.0.0.1:{port}/v1"}), flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--capacity", type=int, default=2)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--per-passage-ms", type=float, default=0.5)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
