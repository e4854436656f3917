"""Start ``nimrank serve`` (the installed console script) on a free loopback port.

Shared by the smoke scripts, which ``make dists`` runs with the Python of a
virtualenv holding one freshly built wheel and nothing of this checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

QUERY = "What is the GPU memory bandwidth of H100 SXM?"
PASSAGES = [
    "The Hopper GPU is paired with the Grace CPU using NVIDIA's ultra-fast chip-to-chip "
    "interconnect, delivering 900GB/s of bandwidth, 7X faster than PCIe Gen5.",
    "A100 provides up to 20X higher performance over the prior generation and can be "
    "partitioned into seven GPU instances to dynamically adjust to shifting demands.",
    "Accelerated servers with H100 deliver the compute power—along with 3 terabytes per "
    "second (TB/s) of memory bandwidth per GPU and scalability with NVLink and NVSwitch™.",
]
# The lexical stand-in puts the H100 passage first: it shares the most query terms.
BEST = 2


@contextmanager
def nimrank_serve() -> Iterator[str]:
    """Run ``nimrank serve --port 0`` and yield its base URL; stop it afterwards."""
    # The console script next to this interpreter, so the wheel's entry point is used.
    script = Path(sys.executable).with_name("nimrank")
    command = str(script) if script.exists() else shutil.which("nimrank")
    if command is None:
        raise SystemExit("smoke: the nimrank console script is not installed")
    env = {**os.environ, "NVIDIA_API_KEY": ""}
    proc = subprocess.Popen(
        [command, "serve", "--host", "127.0.0.1", "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"listening on (\S+)", line)
        if found is None:
            raise SystemExit(f"smoke: nimrank serve did not start: {line!r}")
        yield found.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def check_ranking(label: str, ranked_texts: list[str]) -> None:
    """Fail unless the H100 passage ranks first; print one line on success."""
    if not ranked_texts or ranked_texts[0] != PASSAGES[BEST]:
        raise SystemExit(f"smoke {label}: wrong ranking: {ranked_texts!r}")
    print(f"smoke {label}: ok ({len(ranked_texts)} passages, best first)")
