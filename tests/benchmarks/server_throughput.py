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

Prints one line per run and the median: requests/s, and the server's own CPU
time per request (from ``/proc/<pid>/stat``, Linux). On a shared machine the
CPU figure is the steadier one: ``1000 / cpu_ms`` is what one free core serves.
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


def _request(passages: int, host: str, tag: int = 0) -> bytes:
    """One NIM request of ``passages`` 60-word passages; ``tag`` makes their texts unique."""
    texts = [
        {
            "text": f"passage {i} of {tag}: "
            + " ".join(_WORDS[(i + j) % len(_WORDS)] for j in range(60))
        }
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
    host: str, port: int, requests: list[bytes], deadline: float, counts: list[int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.monotonic() < deadline:
            writer.write(requests[counts[0] % len(requests)])
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


async def _load(
    host: str, port: int, requests: list[bytes], connections: int, seconds: float
) -> float:
    counts = [0]
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(
        *(_connection(host, port, requests, deadline, counts) for _ in range(connections))
    )
    return counts[0] / (time.monotonic() - started)


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    parser.add_argument(
        "--distinct",
        action="store_true",
        help="2,000 requests of unique passages in rotation, so no passage is scored twice "
        "while the server's cache of passage word counts (1,024 passages) remembers it",
    )
    args = parser.parse_args()
    process, url = _start_server(args.latency_ms, args.capacity)
    try:
        hostport = url.split("//", 1)[1].split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        tags = range(2000) if args.distinct else range(1)
        requests = [_request(args.passages, hostport, tag) for tag in tags]
        asyncio.run(_load(host, int(port), requests, args.connections, 1.0))  # warm up
        figures = []
        cpu_per_request = []
        for run in range(args.runs):
            cpu_before = _cpu_seconds(process.pid)
            started = time.monotonic()
            rate = asyncio.run(_load(host, int(port), requests, args.connections, args.seconds))
            served = rate * (time.monotonic() - started)
            cpu_ms = (_cpu_seconds(process.pid) - cpu_before) * 1000.0 / max(served, 1.0)
            figures.append(rate)
            cpu_per_request.append(cpu_ms)
            print(
                f"run {run + 1}: {rate:,.0f} requests/s, server CPU {cpu_ms:.3f} ms/request",
                flush=True,
            )
        cpu_ms = statistics.median(cpu_per_request)
        print(
            f"median: {statistics.median(figures):,.0f} requests/s of {args.passages} passages"
            f"{' (all distinct)' if args.distinct else ''} at {args.connections} connections, "
            f"latency {args.latency_ms} ms; server CPU "
            f"{cpu_ms:.3f} ms/request (one free core: {1000.0 / cpu_ms:,.0f} requests/s)"
        )
    finally:
        process.terminate()
        process.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
