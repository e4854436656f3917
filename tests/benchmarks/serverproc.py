"""The benchmark's ranking server, in a process of its own.

The client under test must not share a CPU (or the GIL) with the server, so
the embedded :class:`nimrank.server.RankingServer` runs here, in a child
process of the benchmark. It is the same server ``nimrank serve`` runs; this
wrapper adds what the command line does not offer: a control channel on
stdin/stdout through which the benchmark reads the server's own request log
and in-flight peak between runs (``nimrank serve`` keeps no log).

Protocol, one JSON line per answer:

* on start: ``{"url": "http://127.0.0.1:PORT/v1"}``
* ``reset``: forget the request log and the in-flight peak -> ``{"ok": true}``
* ``stats``: -> ``{"requests": N, "max_in_flight": N, "statuses": [per
  request], "passages": [per request], "seconds": [handling time per request]}``
* ``quit`` or end of input: stop serving and exit.

Run by ``peers_bench.py`` (the peers part); by hand:
``python tests/benchmarks/serverproc.py --latency-ms 50``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from nimrank.server import RankingServer, RecordedRequest


def _passages(record: RecordedRequest) -> int:
    body = record.body
    if not isinstance(body, dict):
        return 0
    items = body.get("passages", body.get("documents"))
    return len(items) if isinstance(items, list) else 0


def _stats(server: RankingServer) -> dict[str, Any]:
    records = server.requests
    return {
        "requests": len(records),
        "max_in_flight": server.max_in_flight,
        "statuses": [record.status for record in records],
        "passages": [_passages(record) for record in records],
        "seconds": [record.finished - record.started for record in records],
    }


def main() -> int:
    """Serve until ``quit`` or end of input on stdin."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--per-passage-ms", type=float, default=0.0)
    parser.add_argument("--max-passages", type=int, default=512)
    args = parser.parse_args()
    server = RankingServer(
        latency_ms=args.latency_ms,
        per_passage_ms=args.per_passage_ms,
        max_passages=args.max_passages,
        # Many requests of 1,000 passages in a run: keep them all, reset between runs.
        log_size=100_000,
    )
    with server:
        print(json.dumps({"url": server.url}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "reset":
                server.reset()
                answer: dict[str, Any] = {"ok": True}
            elif command == "stats":
                answer = _stats(server)
            elif command == "quit":
                break
            else:
                answer = {"error": f"unknown command {command!r}"}
            print(json.dumps(answer), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
