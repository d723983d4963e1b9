"""Benchmark helper: a bare TCP splice in front of the echo upstream (a process of its own, started by bench.py).

The ``splice`` variant's relay: every connection accepted is joined byte for
byte to a connection of its own to the upstream, with no HTTP parsed, nothing
decided and nothing recorded. It is the floor any relay process on this
machine stands on: whatever the app server costs beyond it is the app server's;
what it costs itself is the price of a third process in the path.

Usage: ``bench_splice.py UPSTREAM_PORT``; prints ``{"port": N}`` once listening
and exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys

HOST = "127.0.0.1"


class Half(asyncio.Protocol):
    """One side of a spliced pair: what it reads goes to its peer, with the peer's flow control."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Half | None = None
        self.pending: list[bytes] = []  # read before the peer was connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def join(self, peer: Half) -> None:
        self.peer = peer
        assert peer.transport is not None
        for data in self.pending:
            peer.transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.pending.append(data)
        else:
            self.peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    # the peer's writes back up: stop reading until they drain
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class Client(Half):
    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.dialling: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.dialling = asyncio.ensure_future(self.dial())

    async def dial(self) -> None:
        try:
            _, upstream = await asyncio.get_running_loop().create_connection(Half, HOST, self.upstream_port)
        except OSError:
            assert self.transport is not None
            self.transport.close()
            return
        upstream.join(self)
        self.join(upstream)


async def main(upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream_port), HOST, 0)
    print(json.dumps({"port": server.sockets[0].getsockname()[1]}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.readline():
        pass
    server.close()


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
