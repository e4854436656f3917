"""The peers benchmark (``run.py --peers``): our client against NVIDIA's and LiteLLM's.

Three parts, each against a ranking server in its own process
(``serverproc.py``: the embedded ``RankingServer``, which counts requests and
the most handled at once), all measured in this one run:

1. **Batching** (1,000 passages of ~60 words, 32 per batch, 8 in flight,
   50 ms per request): wall time of ``rank`` against the floor
   ``ceil(batches / max_concurrency) x latency`` and against sending the
   same batches one after another with raw ``httpx``.
2. **Client CPU** per 1,000 passages (``time.process_time`` of this
   process only) against one raw ``httpx`` request carrying all of them.
3. **Peers** (a server with a fixed cost per request plus a cost per
   passage, requests served concurrently like a GPU with dynamic batching,
   NIM's 512-passage cap): wall time, requests sent, most in flight and
   whether the full order is right, at 100, 250, 500 and 1,000 passages;
   the chart goes to ``docs/benchmark.png`` only with ``--chart``.

Times are medians of ``--runs`` runs after one warm-up run, clients
interleaved run by run so that noise from this shared machine hits all of
them alike. Absolute times vary from machine to machine; the ratios are the
result.

    .venv-peers/bin/python tests/benchmarks/peers_bench.py --peers --parts peers
    ... --chart docs/benchmark.png   # rewrite the README's chart (a tracked file)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import httpx
from corpus import Corpus, make_corpus
from peers import MODEL, Session, load_peers

from nimrank import AsyncRankingClient, RankingClient

HERE: Final = Path(__file__).resolve().parent
ROOT: Final = HERE.parents[1]
DEFAULT_CHART: Final = ROOT / "docs" / "benchmark.png"

BATCH: Final = 32
IN_FLIGHT: Final = 8
FLOOR_TARGET: Final = 1.2  # issue 2: within 1.2x of the floor (aim: 1.1x)
SEQUENTIAL_TARGET: Final = 5.0  # issue 2: at least 5x faster than one after another


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True)
class ServerStats:
    """What the server saw since the last reset."""

    requests: int
    max_in_flight: int
    statuses: list[int]
    passages: list[int]
    seconds: list[float]


class ServerProcess:
    """``serverproc.py`` in a child process, driven over its stdin/stdout."""

    def __init__(self, *, latency_ms: float, per_passage_ms: float, max_passages: int) -> None:
        self.latency_ms = latency_ms
        self.per_passage_ms = per_passage_ms
        self.max_passages = max_passages
        self._process = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "serverproc.py"),
                f"--latency-ms={latency_ms}",
                f"--per-passage-ms={per_passage_ms}",
                f"--max-passages={max_passages}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url: str = self._read()["url"]

    def _read(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the benchmark server exited; see its output above")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def _ask(self, command: str) -> dict[str, Any]:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._read()

    def reset(self) -> None:
        """Forget the request log and the in-flight peak."""
        self._ask("reset")

    def stats(self) -> ServerStats:
        """Requests, in-flight peak, status and passages of each request since the reset."""
        answer = self._ask("stats")
        return ServerStats(
            answer["requests"],
            answer["max_in_flight"],
            answer["statuses"],
            answer["passages"],
            answer["seconds"],
        )

    def close(self) -> None:
        """Stop the server process."""
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.write("quit\n")
                self._process.stdin.close()
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- clients


@dataclass
class Contender:
    """One client in a table: a label, how it batches, and its session."""

    name: str
    batching: str
    session: Session
    ours: bool = False


class OursAsync:
    """``AsyncRankingClient.rank``; the loop outlives the runs, as in an app."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop, batch: int = BATCH) -> None:
        self._loop = loop
        self._client = AsyncRankingClient(
            base_url=url, model=MODEL, max_batch_size=batch, max_concurrency=IN_FLIGHT
        )

    def inputs(self, texts: Sequence[str]) -> Any:
        return list(texts)

    def rank(self, query: str, inputs: Any) -> list[int]:
        ranked = self._loop.run_until_complete(self._client.rank(query, inputs))
        return [passage.index for passage in ranked]

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())


class OursSync:
    """``RankingClient.rank`` (batches on a thread pool)."""

    def __init__(self, url: str) -> None:
        self._client = RankingClient(
            base_url=url, model=MODEL, max_batch_size=BATCH, max_concurrency=IN_FLIGHT
        )

    def inputs(self, texts: Sequence[str]) -> Any:
        return list(texts)

    def rank(self, query: str, inputs: Any) -> list[int]:
        return [passage.index for passage in self._client.rank(query, inputs)]

    def close(self) -> None:
        self._client.close()


def _bodies(query: str, texts: Sequence[str], size: int) -> list[tuple[int, dict[str, Any]]]:
    """NIM request bodies for consecutive slices of ``size`` texts, with their offsets."""
    return [
        (
            start,
            {
                "model": MODEL,
                "query": {"text": query},
                "passages": [{"text": text} for text in texts[start : start + size]],
            },
        )
        for start in range(0, len(texts), size)
    ]


def _order(pairs: list[tuple[int, float]]) -> list[int]:
    pairs.sort(key=lambda pair: (-pair[1], pair[0]))
    return [index for index, _ in pairs]


def _collect(pairs: list[tuple[int, float]], offset: int, response: httpx.Response) -> None:
    response.raise_for_status()
    for item in response.json()["rankings"]:
        pairs.append((offset + item["index"], item["logit"]))


class RawSync:
    """Raw ``httpx.Client``: the batches one after another (``size=BATCH``),
    or everything in one request (``size=None``)."""

    def __init__(self, url: str, size: int | None) -> None:
        self._url = f"{url}/ranking"
        self._size = size
        self._http = httpx.Client(timeout=60.0)

    def inputs(self, texts: Sequence[str]) -> Any:
        return list(texts)

    def rank(self, query: str, inputs: Any) -> list[int]:
        pairs: list[tuple[int, float]] = []
        for offset, body in _bodies(query, inputs, self._size or len(inputs)):
            _collect(pairs, offset, self._http.post(self._url, json=body))
        return _order(pairs)

    def close(self) -> None:
        self._http.close()


class RawAsync:
    """Raw ``httpx.AsyncClient``: the batches ``IN_FLIGHT`` at a time with no
    client logic around them (``size=BATCH``), or one request (``size=None``)."""

    def __init__(self, url: str, size: int | None, loop: asyncio.AbstractEventLoop) -> None:
        self._url = f"{url}/ranking"
        self._size = size
        self._loop = loop
        limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
        self._http = httpx.AsyncClient(timeout=60.0, limits=limits)

    def inputs(self, texts: Sequence[str]) -> Any:
        return list(texts)

    async def _rank(self, query: str, inputs: Sequence[str]) -> list[int]:
        pairs: list[tuple[int, float]] = []
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def send(offset: int, body: dict[str, Any]) -> None:
            async with gate:
                response = await self._http.post(self._url, json=body)
            _collect(pairs, offset, response)

        bodies = _bodies(query, inputs, self._size or len(inputs))
        await asyncio.gather(*(send(offset, body) for offset, body in bodies))
        return _order(pairs)

    def rank(self, query: str, inputs: Any) -> list[int]:
        return self._loop.run_until_complete(self._rank(query, inputs))

    def close(self) -> None:
        self._loop.run_until_complete(self._http.aclose())


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    """One client at one input size."""

    name: str
    batching: str
    passages: int
    ours: bool = False
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    server_seconds: list[float] = field(default_factory=list)  # per request, every run
    requests: int = 0
    max_in_flight: int = 0
    order_right: bool = True
    outcome: str = "ok"  # or "cannot send", "error"
    detail: str = ""  # why, when not ok

    @property
    def ok(self) -> bool:
        """Whether every run ranked without an exception."""
        return self.outcome == "ok"

    @property
    def status(self) -> str:
        """``ok``, or the outcome and why, for a table cell."""
        return self.outcome if self.ok else f"{self.outcome}: {self.detail}"

    @property
    def wall(self) -> float:
        """Median wall time in seconds."""
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        """Median client CPU time in seconds."""
        return statistics.median(self.cpus)


def _fail(result: Result, error: Exception, server: ServerProcess) -> None:
    """Record ``cannot send`` for the server's 512-passage refusal, else ``error``."""
    stats = server.stats()
    refused = [
        count
        for count, status in zip(stats.passages, stats.statuses, strict=True)
        if status == 400 and count > server.max_passages
    ]
    if refused:
        result.outcome = "cannot send"
        result.detail = f"{refused[0]:,} passages in one request > {server.max_passages} (HTTP 400)"
    else:
        result.outcome = "error"
        result.detail = f"{type(error).__name__}: {str(error)[:160]}"
    result.requests = stats.requests


def measure(
    server: ServerProcess,
    contenders: Sequence[Contender],
    corpus: Corpus,
    sizes: Sequence[int],
    runs: int,
) -> list[Result]:
    """Time every contender at every size: one warm-up, then ``runs`` interleaved runs."""
    results: list[Result] = []
    for size in sizes:
        texts = corpus.first(size)
        expected = corpus.expected_order(size)
        active: list[tuple[Contender, Any, Result]] = []
        for contender in contenders:
            result = Result(contender.name, contender.batching, size, contender.ours)
            results.append(result)
            inputs = contender.session.inputs(texts)
            server.reset()
            try:
                contender.session.rank(corpus.query, inputs)  # warm-up, not timed
            except Exception as exc:
                _fail(result, exc, server)
                continue
            active.append((contender, inputs, result))
        for _ in range(runs):
            for contender, inputs, result in active:
                if not result.ok:
                    continue
                gc.collect()  # a collection from the last client must not land in this one
                server.reset()
                wall, cpu = time.perf_counter(), time.process_time()
                try:
                    order = contender.session.rank(corpus.query, inputs)
                except Exception as exc:
                    _fail(result, exc, server)
                    continue
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                stats = server.stats()
                result.walls.append(wall)
                result.cpus.append(cpu)
                result.server_seconds.extend(stats.seconds)
                result.requests = max(result.requests, stats.requests)
                result.max_in_flight = max(result.max_in_flight, stats.max_in_flight)
                result.order_right = result.order_right and order == expected
    return results


# --------------------------------------------------------------------------- reporting


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms"


def _find(results: Sequence[Result], name: str, passages: int | None = None) -> Result:
    return next(
        result
        for result in results
        if result.name == name and (passages is None or result.passages == passages)
    )


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [_row(header), _row(["---"] * len(header)), *(_row(row) for row in rows)]
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report_batching(results: Sequence[Result], latency_ms: float, passages: int) -> bool:
    """Part 1's table and ratios; True when issue 2's targets are met."""
    batches = math.ceil(passages / BATCH)
    floor = math.ceil(batches / IN_FLIGHT) * latency_ms / 1000
    ours = _find(results, ASYNC_NAME)
    sequential = _find(results, SEQUENTIAL_NAME)
    print(
        f"\n## 1. Batching: {passages:,} passages, {BATCH} per batch ({batches} batches), "
        f"{IN_FLIGHT} in flight, {latency_ms:g} ms per request\n"
    )
    print(
        f"Floor = ceil({batches} / {IN_FLIGHT}) x {latency_ms:g} ms = {_ms(floor)}; "
        f"medians of {len(ours.walls)} runs after a warm-up.\n"
    )
    rows = []
    for result in results:
        if not result.ok:
            rows.append([result.name, result.status, "", "", result.requests, "", "", ""])
            continue
        rows.append(
            [
                result.name,
                _ms(result.wall),
                f"{result.wall / floor:.2f}x",
                f"{sequential.wall / result.wall:.1f}x",
                result.requests,
                result.max_in_flight,
                f"{statistics.median(result.server_seconds) * 1000:.1f} ms",
                "yes" if result.order_right else "NO",
            ]
        )
    header = [
        "client",
        "wall (median)",
        "vs floor",
        "faster than one-after-another",
        "requests",
        "most in flight",
        "server time per request (median)",
        "full order right",
    ]
    print(_table(header, rows))
    if not ours.ok:
        print(f"\n{ours.name}: {ours.status}")
        return False
    to_floor = ours.wall / floor
    speedup = sequential.wall / ours.wall
    print(
        f"\nasync rank / floor = {to_floor:.3f}x (target <= {FLOOR_TARGET}x, aim 1.1x): "
        f"{_verdict(to_floor <= FLOOR_TARGET)}"
    )
    print(
        f"one-after-another / async rank = {speedup:.1f}x (target >= {SEQUENTIAL_TARGET:g}x): "
        f"{_verdict(speedup >= SEQUENTIAL_TARGET)}"
    )
    reference = _find(results, RAW_CONCURRENT_NAME)
    if reference.ok and reference.wall / floor > FLOOR_TARGET:
        # Raw httpx has no client logic to blame: the machine itself was slow.
        print(
            f"Note: raw httpx with the same batches is also {reference.wall / floor:.2f}x the "
            "floor in this run, so the machine was busy; re-run for clean numbers."
        )
    return to_floor <= FLOOR_TARGET and speedup >= SEQUENTIAL_TARGET and ours.order_right


def report_cpu(results: Sequence[Result], passages: int) -> None:
    """Part 2: client CPU per call, ours against one raw request."""
    print(f"\n## 2. Client CPU time per {passages:,} passages (this process only)\n")
    print(
        f"Medians of {len(results[0].cpus)} runs against a server with no simulated latency "
        "(it takes 1,000 passages in one request here). The raw httpx rows send exactly "
        "our batches with no client logic: the gap to them is our own cost, the rest is "
        "the cost of 32 HTTP requests.\n"
    )
    groups = [
        (ASYNC_NAME, RAW_CONCURRENT_NAME, RAW_ONE_ASYNC_NAME),
        (SYNC_NAME, SEQUENTIAL_NAME, RAW_ONE_SYNC_NAME),
    ]
    rows = []
    for ours_name, same_batches_name, one_name in groups:
        ours = _find(results, ours_name)
        for name in (ours_name, same_batches_name, one_name):
            result = _find(results, name)
            ratio = "" if result is ours else f"{ours.cpu / result.cpu:.2f}x"
            rows.append([result.name, result.batching, result.requests, _ms(result.cpu), ratio])
    big = _find(results, ASYNC_BIG_NAME)
    one = _find(results, RAW_ONE_ASYNC_NAME)
    rows.append([big.name, big.batching, big.requests, _ms(big.cpu), f"{big.cpu / one.cpu:.2f}x"])
    header = ["client", "batching", "requests", "CPU (median)", "ours / this"]
    print(_table(header, rows))
    for ours_name, _, one_name in groups:
        ours, one = _find(results, ours_name), _find(results, one_name)
        print(f"\n{ours.name} / {one.name} = {ours.cpu / one.cpu:.1f}x CPU", end="")
    print()


def report_peers(
    results: Sequence[Result], sizes: Sequence[int], table_sizes: Sequence[int]
) -> None:
    """Part 3: the peers table (at ``table_sizes``) and a wall-time matrix."""
    print("\n## 3. Peers\n")
    rows = []
    for size in table_sizes:
        ours = _find(results, ASYNC_NAME, size)
        for result in (r for r in results if r.passages == size):
            if not result.ok:
                first = [result.name, result.batching, f"{size:,}", result.status, ""]
                rows.append([*first, result.requests, "", ""])
                continue
            rows.append(
                [
                    f"**{result.name}**" if result.ours else result.name,
                    result.batching,
                    f"{size:,}",
                    _ms(result.wall),
                    f"{result.wall / ours.wall:.1f}x",
                    result.requests,
                    result.max_in_flight,
                    "yes" if result.order_right else "NO",
                ]
            )
    header = [
        "client",
        "batching",
        "passages",
        "wall (median)",
        "vs ours (async)",
        "requests",
        "most in flight",
        "full order right",
    ]
    print(_table(header, rows))
    print("\nWall time (median) by passages per call:\n")
    names = list(dict.fromkeys(result.name for result in results))
    matrix = []
    for name in names:
        cells: list[object] = [name]
        for size in sizes:
            result = _find(results, name, size)
            cells.append(_ms(result.wall) if result.ok else result.outcome)
        matrix.append(cells)
    print(_table(["client", *(f"{size:,}" for size in sizes)], matrix))
    for result in results:
        if result.outcome == "error":
            print(f"\n{result.name} at {result.passages}: {result.status}")


_STYLES: Final = (  # marker, line style: two peers can share a line (one request each)
    ("o", "-"),
    ("s", "-"),
    ("^", "--"),
    ("v", "--"),
    ("D", ":"),
    ("P", "-."),
)
_TICKS_MS: Final = (20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def chart(results: Sequence[Result], sizes: Sequence[int], path: Path, subtitle: str) -> bool:
    """Wall time against passages per client, log scale; False without matplotlib."""
    try:
        # By name: matplotlib is installed with the peers, not in the project's venv.
        matplotlib = importlib.import_module("matplotlib")
        matplotlib.use("Agg")
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8.5, 5.2), dpi=120)
    names = list(dict.fromkeys(result.name for result in results))
    shown: list[float] = []
    refusals = 0
    for number, name in enumerate(names):
        series = [_find(results, name, size) for size in sizes]
        points = [(r.passages, r.wall * 1000) for r in series if r.ok]
        refused = [r.passages for r in series if not r.ok]
        shown += [y for _, y in points]
        label = name + "".join(f" (cannot send {size:,})" for size in refused)
        ours = series[0].ours
        marker, style = _STYLES[number % len(_STYLES)]
        (line,) = ax.plot(
            [x for x, _ in points],
            [y for _, y in points],
            marker=marker,
            linestyle=style,
            linewidth=2.6 if ours else 1.6,
            markersize=6 if ours else 7,
            label=label,
            zorder=3 if ours else 2,
        )
        if refused:
            # A cross along the bottom edge where the client could not send at all.
            refusals += 1
            ax.plot(
                refused,
                [0.03 + 0.05 * refusals] * len(refused),
                marker="x",
                markersize=9,
                markeredgewidth=2,
                linestyle="none",
                color=line.get_color(),
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
    if refusals:
        ax.text(
            sizes[-1],
            0.05 + 0.05 * refusals,
            "cannot send:\n> 512 passages\nin one request",
            transform=ax.get_xaxis_transform(),
            ha="right",
            va="bottom",
            fontsize=8,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(sizes), [f"{size:,}" for size in sizes])
    low, high = min(shown) / 1.6, max(shown) * 1.3
    ax.set_ylim(low, high)
    ticks = [tick for tick in _TICKS_MS if low <= tick <= high]
    ax.set_yticks(ticks, [f"{tick:,}" for tick in ticks])
    ax.minorticks_off()
    ax.set_xlabel("passages per call")
    ax.set_ylabel("wall time per call (ms, log scale)")
    ax.set_title("Reranking wall time against a NIM-like local server\n" + subtitle, fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------- main

ASYNC_NAME: Final = "nimrank AsyncRankingClient"
SYNC_NAME: Final = "nimrank RankingClient"
SEQUENTIAL_NAME: Final = "raw httpx, batches one after another"
RAW_CONCURRENT_NAME: Final = "raw httpx, batches 8 in flight"
RAW_ONE_ASYNC_NAME: Final = "one raw httpx.AsyncClient request"
RAW_ONE_SYNC_NAME: Final = "one raw httpx.Client request"
OURS_BATCHING: Final = f"{BATCH} per request, {IN_FLIGHT} in flight"
ASYNC_BIG_NAME: Final = "nimrank AsyncRankingClient, max_batch_size=512"


def _ours(url: str, loop: asyncio.AbstractEventLoop) -> list[Contender]:
    return [
        Contender(ASYNC_NAME, OURS_BATCHING, OursAsync(url, loop), ours=True),
        Contender(SYNC_NAME, OURS_BATCHING, OursSync(url), ours=True),
    ]


def _close(contenders: Sequence[Contender]) -> None:
    for contender in contenders:
        contender.session.close()


def _phase(
    name: str,
    server_options: dict[str, Any],
    build: Callable[[str], list[Contender]],
    corpus: Corpus,
    sizes: Sequence[int],
    runs: int,
) -> list[Result]:
    started = time.perf_counter()
    with ServerProcess(**server_options) as server:
        contenders = build(server.url)
        try:
            results = measure(server, contenders, corpus, sizes, runs)
        finally:
            _close(contenders)
    print(f"[{name}: {time.perf_counter() - started:.0f} s]", file=sys.stderr)
    return results


PARTS: Final = ("batching", "cpu", "peers")


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"parts are {', '.join(PARTS)}")
    return parts


def _sizes(text: str) -> list[int]:
    sizes = sorted({int(part) for part in text.split(",")})
    if not sizes or sizes[0] < 1 or sizes[-1] > 1000:
        raise argparse.ArgumentTypeError("sizes must be between 1 and 1000")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print the tables; write the chart."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", action="store_true", help="require all four peers")
    parser.add_argument("--no-peers", action="store_true", help="skip the peers")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per client (default 7)")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument(
        "--per-passage-ms", type=float, default=0.5, help="peer server's cost per passage"
    )
    parser.add_argument("--sizes", type=_sizes, default=[100, 250, 500, 1000])
    parser.add_argument(
        "--chart",
        type=Path,
        default=None,
        help=f"write the chart there (the README's is {DEFAULT_CHART.relative_to(ROOT)}); "
        "no chart without this flag, so a run never rewrites a tracked file",
    )
    parser.add_argument(
        "--parts",
        type=_parts,
        default=PARTS,
        help=f"which parts to run, comma-separated (default: {','.join(PARTS)})",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if issue 2's targets miss")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")

    started = time.perf_counter()
    found, missing = ([], []) if args.no_peers else load_peers()
    if args.peers and missing:
        print("--peers: missing " + "; ".join(missing), file=sys.stderr)
        print("install: pip install -r tests/interop/requirements-peers.txt", file=sys.stderr)
        return 2
    # Peers warn about the stand-in model name and log the 512-passage refusal
    # as an error; the tables report both.
    warnings.simplefilter("ignore")
    logging.disable(logging.ERROR)
    corpus = make_corpus(1000)
    # Everything imported so far (LiteLLM is large) is moved out of the
    # collector's sight, so the gc.collect() before each run stays cheap.
    gc.collect()
    gc.freeze()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    load = os.getloadavg()
    print("# nimrank batching benchmark\n")
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} at start; {len(corpus.passages):,} synthetic passages of "
        f"~{statistics.mean(len(p.split()) for p in corpus.passages):.0f} words; "
        f"server in its own process."
    )

    def batching(url: str) -> list[Contender]:
        return [
            *_ours(url, loop),
            Contender(RAW_CONCURRENT_NAME, OURS_BATCHING, RawAsync(url, BATCH, loop)),
            Contender(SEQUENTIAL_NAME, f"{BATCH} per request", RawSync(url, BATCH)),
        ]

    targets_met = True
    if "batching" in args.parts:
        part1 = _phase(
            "batching",
            {"latency_ms": args.latency_ms, "per_passage_ms": 0.0, "max_passages": 512},
            batching,
            corpus,
            [1000],
            args.runs,
        )
        targets_met = report_batching(part1, args.latency_ms, 1000)

    def cpu(url: str) -> list[Contender]:
        return [
            *_ours(url, loop),
            Contender(RAW_CONCURRENT_NAME, OURS_BATCHING, RawAsync(url, BATCH, loop)),
            Contender(SEQUENTIAL_NAME, f"{BATCH} per request", RawSync(url, BATCH)),
            Contender(RAW_ONE_ASYNC_NAME, "all in one request", RawAsync(url, None, loop)),
            Contender(RAW_ONE_SYNC_NAME, "all in one request", RawSync(url, None)),
            # The CPU is paid per request: NIM's largest batch needs 2 for 1,000.
            Contender(ASYNC_BIG_NAME, "512 per request", OursAsync(url, loop, 512), ours=True),
        ]

    # No simulated latency (only CPU is measured) and room for 1,000 passages
    # in the single raw request.
    if "cpu" in args.parts:
        part2 = _phase(
            "cpu",
            {"latency_ms": 0.0, "per_passage_ms": 0.0, "max_passages": 1000},
            cpu,
            corpus,
            [1000],
            max(15, 2 * args.runs),
        )
        report_cpu(part2, 1000)

    def with_peers(url: str) -> list[Contender]:
        contenders = _ours(url, loop)
        for peer in found:
            try:
                contenders.append(Contender(peer.name, peer.batching, peer.connect(url)))
            except Exception as exc:  # a peer that cannot start is reported, not fatal
                missing.append(f"{peer.name}: could not start ({type(exc).__name__}: {exc})")
        return contenders

    if "peers" in args.parts:
        part3 = _phase(
            "peers",
            {
                "latency_ms": args.latency_ms,
                "per_passage_ms": args.per_passage_ms,
                "max_passages": 512,
            },
            with_peers,
            corpus,
            args.sizes,
            args.runs,
        )
        print(
            f"\nServer: {args.latency_ms:g} ms per request + {args.per_passage_ms:g} ms per "
            "passage, requests served concurrently, at most 512 passages per request (NIM's cap)."
        )
        if missing:
            print("Peers skipped: " + "; ".join(missing) + ".")
        table_sizes = [size for size in (100, 1000) if size in args.sizes] or args.sizes
        report_peers(part3, args.sizes, table_sizes)
        subtitle = (
            f"server: {args.latency_ms:g} ms/request + {args.per_passage_ms:g} ms/passage, "
            f"concurrent, 512-passage cap; median of {args.runs} runs"
        )
        # Only on request: the README's chart is a tracked file (issue 14).
        path = args.chart
        if path is None:
            print(f"\nChart not written (--chart {DEFAULT_CHART.relative_to(ROOT)} writes it).")
        elif chart(part3, args.sizes, path, subtitle):
            print(f"\nChart: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
        else:
            print("\nChart not written: matplotlib is not installed.")
    loop.close()
    print(
        f"\nLoad average {os.getloadavg()[0]:.2f} at the end; "
        f"total {time.perf_counter() - started:.0f} s."
    )
    return 1 if args.strict and not targets_met else 0


if __name__ == "__main__":
    sys.exit(main())
