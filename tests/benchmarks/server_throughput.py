"""How many requests per second `nimrank serve` answers (issue 15: "the server keeps up").

The server runs as ``nimrank serve`` in a process of its own; the load comes
from this process, a raw asyncio client (no httpx: the generator must cost
less than the server) keeping ``--connections`` keep-alive connections busy,
each sending one NIM ``/v1/ranking`` request of ``--passages`` passages and
waiting for the reply before the next. Every reply is checked (status 200 and
``"rankings"`` in the body), so a fast wrong answer does not count.

Usage (the machine is shared: take the median of a few runs)::

    .venv/bin/python tests/benchmarks/server_throughput.py --seconds 5 --runs 3
    .venv/bin/python tests/benchmarks/server_throughput.py --latency-ms 20

Prints one line per run and the median, in requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

_WORDS = ("gpu", "memory", "bandwidth", "hopper", "grace", "cpu", "tensor", "core", "nvlink")


def _request(passages: int, host: str) -> bytes:
    texts = [
        {"text": f"passage {i}: " + " ".join(_WORDS[(i + j) % len(_WORDS)] for j in range(60))}
        for i in range(passages)
    ]
    body = json.dumps(
        {"model": "m", "query": {"text": "GPU memory bandwidth of H100"}, "passages": texts}
    ).encode()
    head = (
        f"POST /v1/ranking HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


async def _connection(
    host: str, port: int, request: bytes, deadline: float, counts: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            if status != 200 or b'"rankings"' not in body:
                raise RuntimeError(f"bad reply {status}: {body[:200]!r}")
            counts[0] += 1
    finally:
        writer.close()


async def _load(host: str, port: int, request: bytes, connections: int, seconds: float) -> float:
    counts = [0]
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(
        *(_connection(host, port, request, deadline, counts) for _ in range(connections))
    )
    return counts[0] / (time.monotonic() - started)


def _start_server(latency_ms: float, capacity: int | None) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable,
        "-m",
        "nimrank",
        "serve",
        "--port",
        "0",
        "--latency-ms",
        str(latency_ms),
    ]
    if capacity is not None:
        command += ["--capacity", str(capacity)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    assert process.stderr is not None
    line = process.stderr.readline()  # "nimrank serve: listening on http://127.0.0.1:P/v1 ..."
    if "listening on" not in line:
        process.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    url = line.split("listening on ", 1)[1].split()[0]
    return process, url


def main() -> int:
    """Run the benchmark; prints requests/s per run and the median."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--passages", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--capacity", type=int, default=None)
    args = parser.parse_args()
    process, url = _start_server(args.latency_ms, args.capacity)
    try:
        hostport = url.split("//", 1)[1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        request = _request(args.passages, hostport)
        asyncio.run(_load(host, int(port), request, args.connections, 1.0))  # warm up
        figures = []
        for run in range(args.runs):
            rate = asyncio.run(_load(host, int(port), request, args.connections, args.seconds))
            figures.append(rate)
            print(f"run {run + 1}: {rate:,.0f} requests/s", flush=True)
        print(
            f"median: {statistics.median(figures):,.0f} requests/s of {args.passages} passages "
            f"at {args.connections} connections, latency {args.latency_ms} ms"
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
