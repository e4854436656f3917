"""The client's own per-passage work, step by step, against a raw loop doing the same.

No server and no sockets: each step is what one ``rank`` call does in Python
around the HTTP requests (plan the batches, build and encode each request body,
name each batch's passages for error messages, decode and read each response,
merge, select). Server answers are made up front, shuffled, as JSON bytes.

Run::

    .venv/bin/python tests/benchmarks/planning_cost.py [--sizes 10000,100000] \
        [--batches 32,512] [--repeat 5]

Prints the median of ``--repeat`` runs per step (ms, and us per passage), the
raw loop's figure in the same run, and the peak memory of plan + merge at the
largest size (tracemalloc), with what is left allocated after the call.

The raw loop dedupes with a dict, builds each body as a dict and encodes it
with the standard library (as httpx's ``json=`` does), reads each answer with
``json.loads`` and places scores by index without checks, and merges into
tuples sorted on a tuple key. To time an older nimrank the same way, put its
package first on the path: ``PYTHONPATH=/path/to/old/shared_client``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

from nimrank import planning, protocols, validation
from nimrank.protocols import NIM

_WORDS = [
    *("accelerator", "memory", "bandwidth", "cache", "latency", "kernel", "tensor", "warp"),
    *("thread", "block", "grid", "device", "host", "stream", "queue", "scheduler"),
    *("register", "shader", "silicon", "socket", "fabric", "link"),
]


def make_texts(count: int, seed: int = 7) -> list[str]:
    """``count`` distinct texts of about 60 words, and 2% repeats and 1% blanks."""
    rng = random.Random(seed)
    texts = [f"passage {i}: " + " ".join(rng.choices(_WORDS, k=60)) for i in range(count)]
    for i in range(0, count, 50):
        texts[i] = texts[i // 2]
    for i in range(7, count, 100):
        texts[i] = "  "
    return texts


def answers(batch_sizes: Sequence[int], seed: int = 11) -> list[bytes]:
    """A NIM response body per batch, sorted by score as servers send them."""
    rng = random.Random(seed)
    out = []
    for size in batch_sizes:
        entries = [{"index": i, "logit": rng.uniform(-10, 10)} for i in range(size)]
        entries.sort(key=lambda entry: -entry["logit"])
        out.append(json.dumps({"rankings": entries}).encode())
    return out


def stdlib_encode(body: Any) -> bytes:
    # What httpx's ``json=`` does with a body.
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# nimrank's own encoder and strict decoder where it has them (before: httpx's).
encode: Callable[[Any], bytes] = getattr(protocols, "encode_json", stdlib_encode)
decode: Callable[[bytes], Any] = getattr(protocols, "decode_json", json.loads)


def nimrank_steps(texts: list[str], batch: int, replies: list[bytes]) -> dict[str, float]:
    """One rank call's Python work through nimrank's own functions (seconds per step)."""
    times: dict[str, float] = {}
    clock = time.perf_counter

    start = clock()
    checked = validation.check_passages(texts)
    times["check_passages"] = clock() - start

    start = clock()
    plan = planning.plan_batches(checked, batch)
    times["plan_batches"] = clock() - start

    start = clock()
    for index in range(len(plan.batches)):
        encode(
            NIM.build_request(model="m", query="q", passages=plan.batch_texts(index), truncate=None)
        )
    times["build+encode bodies"] = clock() - start

    # The same bodies through the standard library's json (httpx's json=).
    start = clock()
    for index in range(len(plan.batches)):
        stdlib_encode(
            NIM.build_request(model="m", query="q", passages=plan.batch_texts(index), truncate=None)
        )
    times["  (same, stdlib json)"] = clock() - start

    # What the client does per batch today for its error messages.
    start = clock()
    for index in range(len(plan.batches)):
        planning.describe_passages(plan.passages_in_batch(index))
    times["error text, every batch"] = clock() - start

    start = clock()
    scores: list[float] = []
    for index, reply in enumerate(replies):
        scores.extend(NIM.parse_response(decode(reply), len(plan.batches[index])))
    times["decode+parse replies"] = clock() - start

    start = clock()
    planning.merge_rankings(plan, scores)
    times["merge_rankings (all)"] = clock() - start

    # What the client's _finish does for top_n=10.
    start = clock()
    final = getattr(planning, "final_ranking", None)
    if final is None:
        planning.select(planning.merge_rankings(plan, scores), top_n=10)
    else:
        final(plan, scores, top_n=10)
    times["merge+select top 10"] = clock() - start
    return times


def raw_steps(texts: list[str], batch: int, replies: list[bytes]) -> dict[str, float]:
    """The same work as plain code: no checks, no error text, no result objects' care."""
    times: dict[str, float] = {}
    clock = time.perf_counter

    times["check_passages"] = 0.0
    start = clock()
    ids: dict[str, int] = {}
    owner = [ids.setdefault(t, len(ids)) if t.strip() else -1 for t in texts]
    unique = list(ids)
    del ids
    times["plan_batches"] = clock() - start

    start = clock()
    for first in range(0, len(unique), batch):
        body = {
            "model": "m",
            "query": {"text": "q"},
            "passages": [{"text": t} for t in unique[first : first + batch]],
        }
        stdlib_encode(body)
    times["build+encode bodies"] = clock() - start
    times["  (same, stdlib json)"] = times["build+encode bodies"]
    times["error text, every batch"] = 0.0

    start = clock()
    scores: list[float] = []
    for reply in replies:
        entries = json.loads(reply)["rankings"]
        placed = [0.0] * len(entries)
        for entry in entries:
            placed[entry["index"]] = entry["logit"]
        scores.extend(placed)
    times["decode+parse replies"] = clock() - start

    start = clock()
    merged = [(i, scores[s] if s >= 0 else None, texts[i]) for i, s in enumerate(owner)]
    merged.sort(key=lambda item: (item[1] is None, -(item[1] or 0.0), item[0]))
    times["merge_rankings (all)"] = clock() - start
    start = clock()
    merged = [(i, scores[s] if s >= 0 else None, texts[i]) for i, s in enumerate(owner)]
    merged.sort(key=lambda item: (item[1] is None, -(item[1] or 0.0), item[0]))
    merged[:10]
    times["merge+select top 10"] = clock() - start
    return times


# Alternatives to a step the total already counts.
_NOT_IN_TOTAL = ("merge_rankings (all)", "  (same, stdlib json)")


def median_steps(
    steps: Callable[[list[str], int, list[bytes]], dict[str, float]],
    texts: list[str],
    batch: int,
    replies: list[bytes],
    repeat: int,
) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        gc.collect()
        runs.append(steps(texts, batch, replies))
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


def peak_memory(texts: list[str], batch: int) -> tuple[int, int, int]:
    """(input texts' size, peak of plan + merge beyond the input, left after the call)."""
    text_bytes = sum(len(t.encode()) + 49 for t in texts)  # a str object's own header too
    plan0 = planning.plan_batches(texts, batch)
    scores = [float(i % 97) for i in range(len(plan0.segments))]
    del plan0
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    plan = planning.plan_batches(texts, batch)
    ranking = planning.merge_rankings(plan, scores)
    peak = tracemalloc.get_traced_memory()[1] - base
    result_size = tracemalloc.get_traced_memory()[0] - base
    del plan
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - base
    del ranking
    gc.collect()
    left = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    print(
        f"    (result alone: {result_size / 2**20:.1f} MiB before the plan is dropped,"
        f" {kept / 2**20:.1f} MiB with only the ranking kept)"
    )
    return text_bytes, peak, left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--batches", default="32,512")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    print("median of", args.repeat, "runs; ms, then us per passage; a shared 2-core machine")
    for count in sizes:
        texts = make_texts(count)
        for batch in batches:
            plan = planning.plan_batches(texts, batch)
            replies = answers([len(b) for b in plan.batches])
            del plan
            ours = median_steps(nimrank_steps, texts, batch, replies, args.repeat)
            raw = median_steps(raw_steps, texts, batch, replies, args.repeat)
            print(f"\nN={count:,} batch={batch}")
            print(f"  {'step':<24} {'nimrank ms':>11} {'us/p':>6} {'raw ms':>8} {'us/p':>6}")
            for name in ours:
                print(
                    f"  {name:<24} {ours[name] * 1e3:>11.1f} {ours[name] / count * 1e6:>6.2f}"
                    f" {raw[name] * 1e3:>8.1f} {raw[name] / count * 1e6:>6.2f}"
                )
            # A call does one of the two merges: the total counts the client's.
            total = sum(v for k, v in ours.items() if k not in _NOT_IN_TOTAL)
            raw_total = sum(v for k, v in raw.items() if k not in _NOT_IN_TOTAL)
            print(
                f"  {'total':<24} {total * 1e3:>11.1f} {total / count * 1e6:>6.2f}"
                f" {raw_total * 1e3:>8.1f} {raw_total / count * 1e6:>6.2f}"
                f"   ratio {total / raw_total:.2f}x"
            )
            print(
                "  (total: without the rows in parentheses or '(all)';"
                f" encoder: {encode.__module__})"
            )
    count = max(sizes)
    texts = make_texts(count)
    text_bytes, peak, left = peak_memory(texts, 32)
    print(
        f"\npeak of plan + merge at N={count:,}: {peak / 2**20:.1f} MiB for"
        f" {text_bytes / 2**20:.1f} MiB of input texts ({peak / text_bytes:.2f}x);"
        f" left after the call: {left / 2**10:.1f} KiB"
    )


if __name__ == "__main__":
    main()
