"""A TCP proxy on loopback that picks a backend at random per connection.

The stand-in for a Kubernetes Service in front of NIM replicas: kube-proxy
balances connections, not requests, so a client that keeps its connections
alive stays on whichever replicas they landed on. Bytes are copied both ways
untouched; a backend that refuses the connection gets the client's
connection closed (as a Service whose endpoint just died would).

    python tests/benchmarks/proxy.py --seed 0 127.0.0.1:8001 127.0.0.1:8002

prints ``{"url": "http://127.0.0.1:PORT/v1", "port": PORT}`` once it listens,
then serves until killed. ``RandomProxy`` runs it inside an event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import socket
from collections.abc import Sequence

_CHUNK = 64 * 1024


class RandomProxy:
    """Accepts on 127.0.0.1 and connects each client to a random backend.

    Args:
        backends: ``(host, port)`` pairs.
        seed: seeds the choice, so runs are repeatable.
    """

    def __init__(self, backends: Sequence[tuple[str, int]], *, seed: int | None = None) -> None:
        if not backends:
            raise ValueError("a proxy needs at least one backend")
        self.backends = list(backends)
        self.random = random.Random(seed)
        self.connections = [0] * len(self.backends)

    async def start(self, port: int = 0) -> asyncio.Server:
        """Listen on 127.0.0.1:``port`` (0: a free one)."""
        return await asyncio.start_server(self._serve, "127.0.0.1", port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chosen = self.random.randrange(len(self.backends))
        self.connections[chosen] += 1
        host, port = self.backends[chosen]
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        for stream in (writer, upstream_writer):
            sock = stream.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(
            _pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True
        )


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of stream, then close the other side too."""
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(ConnectionError, RuntimeError):
            writer.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _main(backends: list[tuple[str, int]], seed: int | None, port: int) -> None:
    server = await RandomProxy(backends, seed=seed).start(port)
    bound = server.sockets[0].getsockname()[1]
    print(json.dumps({"url": f"http://127.0.0.1:{bound}/v1", "port": bound}), flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Proxy until killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backends", nargs="+", type=_address, help="HOST:PORT of each backend")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    asyncio.run(_main(args.backends, args.seed, args.port))


if __name__ == "__main__":
    main()
