"""The benchmark (``make bench``): nimrank against raw HTTP code sending the same batches.

Against a fake NIM in its own process (``fakenim.py``: a fixed cost per
request plus a cost per passage, asleep, NIM's 512-passage cap), one run prints:

1. **throughput**: raw httpx async, raw httpx sync, raw aiohttp, raw httpx on
   an aiohttp transport, and each nimrank client (sync, async, async on each
   transport), the same batches (``--batch`` a request, ``--in-flight`` at
   once), at N = 10 .. 10,000 (``--big`` adds 100,000): wall time, client CPU
   per 1,000 passages (``time.process_time``: this process only, the server is
   another), ratios to the fastest raw client, to the raw client of the same
   transport and to the floor ``ceil(batches / in_flight) x per-request time``.
2. **small**: N = 5, 20, 50 against a 0 ms server: the time each nimrank
   client adds per call over raw code of the same transport (medians of
   single calls, clients taking turns call by call).
3. **imports**: ``import nimrank``'s own cost on top of httpx, each adapter's
   on top of nimrank and its framework (fresh interpreters).
4. **batch**: batch sizes 20 .. 512 at 1,000 and 10,000 passages, against a
   GPU with spare capacity (every request served at once) and a saturated
   one (``--slots`` requests at a time).
5. **peers** (``--peers``): NVIDIA's and LiteLLM's clients (``peers_bench.py``).

Times are medians of ``--runs`` runs after a warm-up, clients interleaved run
by run so that noise on a shared machine hits them alike. Nothing is written
to disk; ``--chart PATH`` (with ``--peers``) writes the peers chart.

    .venv/bin/python tests/benchmarks/run.py                   # parts 1-4
    .venv/bin/python tests/benchmarks/run.py --parts small,imports
    .venv/bin/python tests/benchmarks/run.py --big --runs 3    # adds N = 100,000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import contenders as c
from fakenim import FakeNim, logit

QUERY: Final = "What is the HBM cache latency and memory bandwidth?"
PARTS: Final = ("throughput", "small", "imports", "batch")

_VOCABULARY: Final = """
    accelerator address allocation architecture array asynchronous atomic batch
    benchmark block buffer bus cache capacity channel chip clock cluster compiler
    compute concurrency controller copy core counter cycle data decoder device die
    driver efficiency encoder engine execution fabric fetch firmware float format
    frequency graph grid hardware host index inference kernel lane latency layer
    link load matrix memory model module network node operand pipeline port power
    precision processor queue rack register request runtime scheduler server shader
    silicon socket stack storage stream switch system tensor thread tile token
    trace training transfer unit vector voltage warp weight workload bandwidth HBM
    the of and to in a for with on is by from as at that this it
"""
_WORDS: Final = _VOCABULARY.split()


def make_texts(count: int, seed: int = 15) -> list[str]:
    """``count`` distinct passages of 50-70 words (the same every run)."""
    rng = random.Random(seed)
    texts: list[str] = []
    seen: set[str] = set()
    while len(texts) < count:
        text = " ".join(rng.choices(_WORDS, k=rng.randint(50, 70))) + "."
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def expected_order(texts: Sequence[str]) -> list[int]:
    """Input indices best first, by the fake model's logits."""
    scores = [logit(text) for text in texts]
    return sorted(range(len(texts)), key=lambda index: (-scores[index], index))


# --------------------------------------------------------------------------- measuring


@dataclass
class Result:
    """One contender at one input size."""

    contender: c.Contender
    passages: int
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    requests: int = 0
    in_flight: int = 0
    right: bool = True
    error: str = ""

    @property
    def name(self) -> str:
        return self.contender.name

    @property
    def wall(self) -> float:
        return statistics.median(self.walls) if self.walls else math.nan

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus) if self.cpus else math.nan


def measure(
    server: FakeNim,
    contenders: Sequence[c.Contender],
    texts: Sequence[str],
    runs: int,
    calls: int = 1,
) -> list[Result]:
    """A warm-up call each, then ``runs`` interleaved rounds of ``calls`` calls each.

    With ``calls > 1`` a round's times are divided by ``calls`` (per-call cost).
    """
    expected = expected_order(texts)
    results = [Result(contender, len(texts)) for contender in contenders]
    for result in results:
        try:
            result.right = result.contender.session.rank(QUERY, texts) == expected
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {str(exc)[:120]}"
    for _ in range(runs):
        for result in results:
            if result.error:
                continue
            rank = result.contender.session.rank
            gc.collect()
            server.reset()
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                order = rank(QUERY, texts)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            stats = server.stats()
            result.walls.append(wall / calls)
            result.cpus.append(cpu / calls)
            result.requests = stats["requests"] // calls
            result.in_flight = max(result.in_flight, stats["max_in_flight"])
            result.right = result.right and order == expected
    return results


def measure_calls(
    contenders: Sequence[c.Contender], texts: Sequence[str], calls: int, batch: int
) -> list[Result]:
    """Each call timed on its own, contenders taking turns call by call.

    For small calls: the median of single calls is robust to the scheduler
    noise of a shared machine, and turn-taking gives every contender the same
    conditions.
    """
    expected = expected_order(texts)
    results = [Result(contender, len(texts)) for contender in contenders]
    for result in results:
        try:
            result.right = result.contender.session.rank(QUERY, texts) == expected
        except Exception as exc:
            result.error = f"{type(exc).__name__}: {str(exc)[:120]}"
        result.requests = math.ceil(len(texts) / batch)
    active = [result for result in results if not result.error]
    gc.collect()
    for _ in range(calls):
        for result in active:
            wall, cpu = time.perf_counter(), time.process_time()
            result.contender.session.rank(QUERY, texts)
            result.cpus.append(time.process_time() - cpu)
            result.walls.append(time.perf_counter() - wall)
    return results


def floor_seconds(passages: int, batch: int, in_flight: int, latency: float, each: float) -> float:
    """``ceil(batches / in_flight)`` rounds, each as long as its largest request."""
    sizes = [min(batch, passages - start) for start in range(0, passages, batch)]
    rounds = [sizes[start : start + in_flight] for start in range(0, len(sizes), in_flight)]
    return sum(latency + each * max(round_) for round_ in rounds)


# --------------------------------------------------------------------------- printing


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table."""
    return "\n".join([_row(header), _row(["---"] * len(header)), *(_row(r) for r in rows)])


def _ms(seconds: float, digits: int = 0) -> str:
    return f"{seconds * 1000:,.{digits}f}"


def _same_transport_raw(results: Sequence[Result], ours: Result) -> Result | None:
    return next(
        (
            r
            for r in results
            if not r.contender.ours
            and r.contender.transport == ours.contender.transport
            and not r.error
        ),
        None,
    )


def report_throughput(
    results: Sequence[Result], batch: int, in_flight: int, latency: float, each: float
) -> None:
    """Part 1's table, one block of rows per N."""
    rows: list[list[object]] = []
    for size in sorted({r.passages for r in results}):
        group = [r for r in results if r.passages == size]
        raw = [r for r in group if not r.contender.ours and not r.error]
        fastest = min(r.wall for r in raw)
        floor = floor_seconds(size, batch, in_flight, latency, each)
        for r in group:
            if r.error:
                rows.append([f"{size:,}", r.name, r.error, "", "", "", "", "", ""])
                continue
            same = _same_transport_raw(group, r) if r.contender.ours else None
            rows.append(
                [
                    f"{size:,}",
                    f"**{r.name}**" if r.contender.ours else r.name,
                    _ms(r.wall, 1),
                    f"{r.wall / fastest:.2f}x",
                    f"{r.wall / floor:.2f}x",
                    _ms(r.cpu / size * 1000, 1),
                    f"{r.wall / same.wall:.2f}x / {r.cpu / same.cpu:.2f}x" if same else "",
                    r.requests,
                    "yes" if r.right else "NO",
                ]
            )
    header = [
        "N",
        "client",
        "wall ms",
        "/ fastest raw",
        "/ floor",
        "CPU ms per 1k passages",
        "wall / CPU vs raw, same transport",
        "requests",
        "order right",
    ]
    print(table(header, rows))


def _p10(values: Sequence[float]) -> float:
    return statistics.quantiles(values, n=10)[0]


def report_small(results: Sequence[Result], calls: int) -> None:
    """Part 2: per-call time and what each nimrank client adds over raw code.

    Wall time is shown as the median and the 10th percentile of single calls:
    on a shared machine the median carries the server process's scheduling
    delays, the 10th percentile much less. CPU is this process's only.
    """
    rows: list[list[object]] = []
    for size in sorted({r.passages for r in results}):
        group = [r for r in results if r.passages == size]
        for r in group:
            if r.error:
                rows.append([size, r.name, r.error, "", "", "", "", ""])
                continue
            same = _same_transport_raw(group, r) if r.contender.ours else None
            cells = [_ms(r.wall, 3), _ms(_p10(r.walls), 3), _ms(r.cpu, 3)]
            if same:
                cells += [
                    f"{(r.wall - same.wall) * 1000:+.3f}",
                    f"{(_p10(r.walls) - _p10(same.walls)) * 1000:+.3f}",
                    f"{(r.cpu - same.cpu) * 1000:+.3f}",
                ]
            else:
                cells += ["", "", ""]
            rows.append([size, f"**{r.name}**" if r.contender.ours else r.name, *cells])
    header = [
        "N",
        "client",
        "wall ms (median)",
        "wall ms (p10)",
        "CPU ms",
        "added wall (median)",
        "added wall (p10)",
        "added CPU",
    ]
    print(table(header, rows))
    print(
        f"\nSingle calls, {calls} per client, clients taking turns call by call; "
        "targets: async <= 0.3 ms, sync <= 0.2 ms added."
    )


# --------------------------------------------------------------------------- imports

# What each adapter imports from its framework: the adapter's own cost is
# what importing it adds once those are loaded.
_ADAPTERS: Final = (
    (
        "LlamaIndex",
        "import llama_index.core.bridge.pydantic, llama_index.core.callbacks, "
        "llama_index.core.instrumentation.events.rerank, llama_index.core.postprocessor.types, "
        "llama_index.core.schema",
        "llama_index.postprocessor.nimrank",
    ),
    (
        "Haystack",
        "import haystack, haystack.utils",
        "haystack_integrations.components.rankers.nimrank",
    ),
    (
        "LangChain",
        "from langchain_core.documents import BaseDocumentCompressor, Document; "
        "import langchain_core.callbacks, pydantic",
        "langchain_nimrank",
    ),
)


def _import_seconds(before: str, statement: str) -> float | None:
    code = (
        f"import time; {before}\n"
        f"t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
    )
    # With bytecode, as an installed package is imported: a session that set
    # PYTHONDONTWRITEBYTECODE would time the compiler instead.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return float(done.stdout) if done.returncode == 0 else None


_WORKING_HTTPX = "import httpx; httpx.Client(); httpx.AsyncClient()"


def report_imports(runs: int) -> None:
    """Part 3: each import's own cost, in fresh interpreters (median of ``runs``).

    The first run of each writes the bytecode and is not counted.
    """
    client = "from nimrank import AsyncRankingClient, RankingClient"
    cases = [
        ("nimrank", "import httpx", "import nimrank", 10.0),
        # A sync program never loads asyncio; an asyncio one has it already.
        ("the clients", _WORKING_HTTPX, "from nimrank import RankingClient", 10.0),
        (
            "the clients",
            f"import asyncio; {_WORKING_HTTPX}",
            "from nimrank import AsyncRankingClient",
            10.0,
        ),
    ] + [
        (f"{name} adapter", f"{client}; {framework}", f"import {module}", 15.0)
        for name, framework, module in _ADAPTERS
    ]
    rows: list[list[object]] = []
    for label, before, statement, target in cases:
        times = [_import_seconds(before, statement) for _ in range(runs + 1)][1:]
        if any(t is None for t in times):
            rows.append([label, f"`{before}`", "not importable here", ""])
            continue
        median = statistics.median(t for t in times if t is not None)
        rows.append(
            [
                f"`{statement}`" if label == "the clients" else label,
                f"`{before}`",
                f"{median * 1000:.1f}",
                "" if target is None else f"<= {target:g}",
            ]
        )
    print(table(["import", "already imported", "own ms (median)", "target ms"], rows))


# --------------------------------------------------------------------------- main


def _sizes(text: str) -> list[int]:
    return sorted({int(part.replace("_", "")) for part in text.split(",")})


def _parts(text: str) -> list[str]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or set(parts) - set(PARTS):
        raise argparse.ArgumentTypeError(f"parts are {', '.join(PARTS)}")
    return parts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the parts asked for and print their tables."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--parts", type=_parts, default=list(PARTS))
    parser.add_argument("--runs", type=int, default=5, help="timed runs per point (default 5)")
    parser.add_argument("--sizes", type=_sizes, default=[10, 100, 1000, 10000])
    parser.add_argument("--big", action="store_true", help="add N = 100,000 to part 1")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="server cost per request")
    parser.add_argument("--per-passage-ms", type=float, default=0.05)
    parser.add_argument("--small-calls", type=int, default=300, help="calls per client, small N")
    parser.add_argument("--batch-sizes", type=_sizes, default=[20, 32, 64, 128, 256, 512])
    parser.add_argument("--batch-n", type=_sizes, default=[1000, 10000])
    parser.add_argument("--batch-latency-ms", type=float, default=20.0)
    parser.add_argument("--batch-per-passage-ms", type=float, default=0.1)
    parser.add_argument("--slots", type=int, default=2, help="saturated GPU: requests at once")
    parser.add_argument("--only", default="", help="client names, separated by ; (parts 1, 2)")
    parser.add_argument(
        "--peers", action="store_true", help="also run peers_bench.py (all four peers required)"
    )
    parser.add_argument("--chart", default=None, help="with --peers: write the chart there")
    args = parser.parse_args(argv)
    sizes = sorted({*args.sizes, *([100_000] if args.big else [])})
    only = [name.strip() for name in args.only.split(";") if name.strip()] or None

    started = time.perf_counter()
    load = os.getloadavg()[0]
    print("# nimrank benchmark\n")
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs (shared), load average "
        f"{load:.2f} at start; server (fakenim.py) in its own process; medians of "
        f"{args.runs} runs after a warm-up.\n"
    )
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    texts = make_texts(max([*sizes, *args.batch_n]))
    gc.collect()
    gc.freeze()  # the corpus is out of the collector's sight: gc.collect() stays cheap

    if "throughput" in args.parts:
        print(
            f"## 1. Throughput: {args.batch} passages a request, {args.in_flight} in flight; "
            f"server {args.latency_ms:g} ms + {args.per_passage_ms:g} ms/passage, every "
            "request served at once\n"
        )
        with FakeNim(latency_ms=args.latency_ms, per_passage_ms=args.per_passage_ms) as server:
            contenders = c.build(server.url, loop, args.batch, args.in_flight, only)
            results: list[Result] = []
            for size in sizes:
                runs = args.runs if size < 100_000 else max(3, args.runs // 2)
                # A round of several calls at small N: one 1,000-passage call
                # is ~10 ms of CPU, where one collection or preemption shows.
                calls = max(1, min(10, 5_000 // size))
                results += measure(server, contenders, texts[:size], runs, calls)
                print(
                    f"[throughput N={size:,}: {time.perf_counter() - started:.0f} s]",
                    file=sys.stderr,
                )
            for contender in contenders:
                contender.session.close()
        report_throughput(
            results, args.batch, args.in_flight, args.latency_ms / 1000, args.per_passage_ms / 1000
        )

    if "small" in args.parts:
        print(f"\n## 2. Small calls: 0 ms server, {args.batch} passages a request\n")
        with FakeNim(latency_ms=0, per_passage_ms=0) as server:
            contenders = c.build(server.url, loop, args.batch, args.in_flight, only)
            results = []
            for size in (5, 20, 50):
                results += measure_calls(contenders, texts[:size], args.small_calls, args.batch)
            for contender in contenders:
                contender.session.close()
        report_small(results, args.small_calls)

    if "imports" in args.parts:
        print("\n## 3. Import time, each import's own cost (fresh interpreter)\n")
        report_imports(max(args.runs, 5))

    if "batch" in args.parts:
        report_batch(args, loop, texts)

    loop.close()
    status = 0
    if args.peers:
        import peers_bench  # imports the peers: only when asked

        print()
        peer_args = ["--peers", "--parts", "peers", "--runs", str(args.runs)]
        status = peers_bench.main(peer_args + (["--chart", args.chart] if args.chart else []))
    print(
        f"\nLoad average {os.getloadavg()[0]:.2f} at the end; "
        f"total {time.perf_counter() - started:.0f} s."
    )
    return status


def report_batch(
    args: argparse.Namespace, loop: asyncio.AbstractEventLoop, texts: list[str]
) -> None:
    """Part 4: nimrank async and sync at each batch size, both server models."""
    latency, each = args.batch_latency_ms, args.batch_per_passage_ms
    print(
        f"\n## 4. Batch size: server {latency:g} ms + {each:g} ms/passage, "
        f"{args.in_flight} in flight\n"
    )
    rows: list[list[object]] = []
    for slots, model in ((0, "spare capacity"), (args.slots, f"saturated ({args.slots} slots)")):
        with FakeNim(latency_ms=latency, per_passage_ms=each, slots=slots) as server:
            for size in args.batch_n:
                for batch in args.batch_sizes:
                    contenders = c.build(
                        server.url, loop, batch, args.in_flight, [c.OURS_ASYNC_AIOHTTP, c.OURS_SYNC]
                    )
                    runs = args.runs if size * each < 2000 else max(3, args.runs // 2)
                    for r in measure(server, contenders, texts[:size], runs):
                        rows.append(
                            [
                                model,
                                f"{size:,}",
                                batch,
                                r.name,
                                _ms(r.wall),
                                _ms(r.cpu / size * 1000, 1),
                                r.requests,
                                "yes" if r.right else "NO",
                            ]
                        )
                    for contender in contenders:
                        contender.session.close()
                print(f"[batch {model}, N={size:,}]", file=sys.stderr)
    header = ["server", "N", "batch", "client", "wall ms", "CPU ms per 1k", "requests", "right"]
    print(table(header, rows))


if __name__ == "__main__":
    sys.exit(main())
