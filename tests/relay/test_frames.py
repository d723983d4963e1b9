"""relay/frames.py: a leg's frames read below aiohttp. A whole, final, uncompressed data frame goes on as the bytes
it came in while its lane is ready and aiohttp holds nothing unread of that leg; everything else is handed to
aiohttp, counted until read_leg has dealt with it, and nothing overtakes anything.

First the watch alone, fed bytes in every way they can arrive; then through a real app server, with raw sockets
on both sides so that the very bytes on the wire are compared."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from appserver.app import AppServer
from appserver.relay import frames
from appserver.relay.frames import Watch
from tests.peers import Suite, UpstreamServer, connect_client, receive_data, redirect_headers

TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0
MASK = b"\x11\x22\x33\x44"


def ws_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = MASK, rsv: int = 0,
             length_bytes: int = 0) -> bytes:  # fmt: skip
    """One frame on the wire; ``length_bytes`` 2 or 8 forces that length encoding (minimal when 0)."""
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if mask else 0
    n = len(payload)
    if length_bytes == 2 or (not length_bytes and 126 <= n < 65536):
        head += bytes([bit | 126]) + n.to_bytes(2)
    elif length_bytes == 8 or (not length_bytes and n >= 65536):
        head += bytes([bit | 127]) + n.to_bytes(8)
    else:
        head += bytes([bit | n])
    if mask:
        head += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def parse(data: bytes) -> tuple[list[tuple[int, bool, bytes, bytes]], bytes]:
    """Whole frames in data (opcode, fin, unmasked payload, raw bytes), and what is left of a partial one."""
    out, pos = [], 0
    while len(data) - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        n, head = b1 & 127, pos + 2
        if n >= 126:
            size = 2 if n == 126 else 8
            if len(data) - head < size:
                break
            n, head = int.from_bytes(data[head:head + size]), head + size
        mask = b""
        if b1 & 128:
            mask, head = data[head:head + 4], head + 4
        if head + n > len(data) or (mask and len(mask) < 4):
            break
        payload = data[head:head + n]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        out.append((b0 & 15, bool(b0 & 0x80), payload, data[pos:head + n]))
        pos = head + n
    return out, data[pos:]


def messages_in(frames_: list[tuple[int, bool, bytes, bytes]]) -> int:
    """What aiohttp delivers for these frames: one per control frame (but close), one per data message."""
    return sum(1 for opcode, _, _, _ in frames_ if opcode in (PING, PONG, TEXT, BINARY))


class FakeLane:
    """Forwards what the watch offers while ``ready`` (recording the bytes and the frame), as Lane.forward does."""

    def __init__(self, events: list[tuple[str, bytes]]) -> None:
        self.ready = True
        self.events = events
        self.frames: list[bytes] = []
        self.check: Any = None

    def forward(self, buf: bytes, start: int, payload: int, end: int, text: bool, masked: int) -> bool:
        if not self.ready:
            return False
        if self.check is not None:
            self.check()
        data = bytes(b ^ buf[payload - 4 + i % 4] for i, b in enumerate(buf[payload:end])) if masked else \
            buf[payload:end]  # fmt: skip
        if text:
            try:
                data.decode()
            except UnicodeDecodeError:  # aiohttp's to answer, as Lane.forward says
                return False
        self.frames.append(data)
        self.events.append(("fwd", buf[start:end]))
        return True


def watched(masked: bool = True) -> tuple[Watch, FakeLane, list[tuple[str, bytes]]]:
    events: list[tuple[str, bytes]] = []
    watch = Watch(lambda data: events.append(("hand", bytes(data))), masked=masked)
    lane = FakeLane(events)
    watch.lane = lane  # type: ignore[assignment]
    return watch, lane, events


def handed(events: list[tuple[str, bytes]]) -> bytes:
    return b"".join(data for kind, data in events if kind == "hand")


def forwarded(events: list[tuple[str, bytes]]) -> list[bytes]:
    return [data for kind, data in events if kind == "fwd"]


A, B, C = ws_frame(TEXT, b'{"action":15}'), ws_frame(BINARY, os.urandom(300)), ws_frame(TEXT, "é".encode() * 40)


def test_data_frames_go_on_whole_however_their_bytes_are_split() -> None:
    stream = A + B + C
    for cut in range(len(stream) + 1):
        watch, lane, events = watched()
        watch.feed(stream[:cut])
        watch.feed(stream[cut:])
        assert forwarded(events) == [A, B, C], cut
        assert handed(events) == b"" and watch.pending == 0
    watch, lane, events = watched()
    for i in range(len(stream)):
        watch.feed(stream[i:i + 1])
    assert forwarded(events) == [A, B, C] and not handed(events)
    assert lane.frames[0] == b'{"action":15}' and lane.frames[2] == "é".encode() * 40


def test_a_ping_is_aiohttps_and_nothing_after_it_goes_on_until_it_was_read() -> None:
    watch, lane, events = watched()
    ping = ws_frame(PING, b"p")
    watch.feed(A + ping + B + C)
    assert forwarded(events) == [A]
    assert handed(events) == ping + B + C
    assert watch.pending == 3  # the ping and two messages, each read by read_leg in turn
    for _ in range(3):
        watch.read()
    watch.feed(A)
    assert forwarded(events) == [A, A]


def test_a_fragmented_message_and_what_comes_inside_it_are_aiohttps() -> None:
    watch, lane, events = watched()
    first, ping, last = ws_frame(TEXT, b"hel", fin=False), ws_frame(PING, b""), ws_frame(CONT, b"lo")
    watch.feed(first + ping)
    watch.read()  # the ping read while the message is still open: its next frame is still aiohttp's
    watch.feed(last)
    assert watch.pending == 1 and not forwarded(events)
    watch.read()
    watch.feed(B)
    assert handed(events) == first + ping + last and forwarded(events) == [B]


@pytest.mark.parametrize("frame", [
    ws_frame(TEXT, b"unmasked", mask=None),  # a client's frame must be masked: aiohttp's to judge
    ws_frame(TEXT, b"compressed", rsv=0x40),  # permessage-deflate: aiohttp inflates it
    ws_frame(BINARY, b"reserved", rsv=0x20),
    ws_frame(PONG, b"pong"),
], ids=["unmasked", "rsv1", "rsv2", "pong"])  # fmt: skip
def test_frames_it_does_not_forward_are_handed_on_and_counted(frame: bytes) -> None:
    watch, lane, events = watched()
    watch.feed(frame + A)
    assert handed(events) == frame + A and watch.pending == 2 and not forwarded(events)


def test_a_server_s_frames_go_on_unmasked_and_a_masked_one_is_aiohttps() -> None:
    watch, lane, events = watched(masked=False)
    plain, masked = ws_frame(TEXT, b"from the server", mask=None), ws_frame(TEXT, b"masked")
    watch.feed(plain + masked)
    assert forwarded(events) == [plain] and handed(events) == masked


def test_a_frame_larger_than_the_bound_is_aiohttps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frames, "LARGEST", 200)
    watch, lane, events = watched()
    watch.feed(B[:100])  # the header says 300 bytes: handed on as it comes, not kept
    assert handed(events) == B[:100]
    watch.feed(B[100:] + A)
    assert handed(events) == B + A and watch.pending == 2


def test_after_a_close_everything_is_aiohttps() -> None:
    watch, lane, events = watched()
    close = ws_frame(CLOSE, (1000).to_bytes(2))
    watch.feed(A + close + B)
    assert forwarded(events) == [A] and handed(events) == close + B and watch.off
    watch.read()
    watch.feed(C)
    assert handed(events) == close + B + C


def test_while_the_lane_is_not_ready_frames_are_handed_on_and_it_waits_for_them_to_be_read() -> None:
    watch, lane, events = watched()
    lane.ready = False
    watch.feed(A)
    lane.ready = True
    watch.feed(B)  # ready, but aiohttp has A unread: B must not overtake it
    assert handed(events) == A + B and watch.pending == 2
    watch.read()
    watch.read()
    watch.feed(C)
    assert forwarded(events) == [C]


def test_what_is_kept_is_handed_on_before_eof_and_nothing_twice() -> None:
    watch, lane, events = watched()
    watch.feed(B[:50])  # a whole frame is waited for
    assert events == []
    watch.release()
    assert handed(events) == B[:50]
    watch, lane, events = watched()
    lane.ready = False
    watch.feed(A + B[:1])  # A handed; B's header begun, handed at once (aiohttp has A, B follows it)
    watch.feed(B[1:5])
    watch.release()
    watch.feed(B[5:])
    assert handed(events) == A + B and not forwarded(events)


def test_a_read_it_did_not_count_turns_it_off() -> None:
    watch, lane, events = watched()
    watch.read()
    watch.feed(A)
    assert watch.off and handed(events) == A


def test_random_streams_keep_every_byte_once_in_order_and_forward_only_at_a_boundary() -> None:
    rng = random.Random(24)
    for _ in range(300):
        parts: list[bytes] = []
        for _ in range(rng.randint(1, 12)):
            kind = rng.random()
            payload = rng.randbytes(rng.choice((0, 1, 50, 125, 126, 300, 70000)))
            if kind < 0.5:
                parts.append(ws_frame(BINARY, payload, mask=rng.randbytes(4)))
            elif kind < 0.65:
                text = payload.hex().encode()[:len(payload)]
                parts.append(ws_frame(TEXT, text, length_bytes=rng.choice((0, 8) if len(text) >= 65536 else (0, 2, 8))))
            elif kind < 0.75:
                parts.append(ws_frame(PING, payload[:20]))
            elif kind < 0.85:
                parts += [ws_frame(TEXT, b"ab", fin=False), ws_frame(PONG, b""), ws_frame(CONT, b"cd")]
            elif kind < 0.92:
                parts.append(ws_frame(TEXT, b"\xff\xfe", mask=MASK))  # not UTF-8: aiohttp's
            else:
                parts.append(ws_frame(BINARY, payload[:10], mask=None))
        stream = b"".join(parts)
        watch, lane, events = watched()
        reads = 0

        def at_a_boundary() -> None:
            whole, partial = parse(handed(events))
            assert partial == b"" and messages_in(whole) == reads, "forwarded while aiohttp holds unread bytes"

        lane.check = at_a_boundary
        pos = 0
        while pos < len(stream):
            step = rng.choice((1, 2, 7, 100, 4096, 65536))
            lane.ready = rng.random() < 0.8
            watch.feed(stream[pos:pos + step])
            pos += step
            whole, _ = parse(handed(events))
            while reads < messages_in(whole) and rng.random() < 0.7:  # read_leg catches up, or not yet
                watch.read()
                reads += 1
        watch.release()
        assert b"".join(data for _, data in events) == stream  # every byte once, in the order it came
        whole, partial = parse(handed(events))
        assert partial == b""
        assert watch.pending == messages_in(whole) - reads


# Through a real app server, raw sockets on both sides.

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class RawUpstream:
    """A WebSocket server that answers the handshake by hand and then gives the test the raw socket."""

    def __init__(self, greeting: bytes = b"") -> None:
        self.accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self._writers: list[asyncio.StreamWriter] = []
        self.greeting = greeting  # written with the 101, in the same send

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))  # fmt: skip
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode() + self.greeting)  # fmt: skip
        self._writers.append(writer)
        await self.accepted.put((reader, writer))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        try:
            yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        finally:
            for writer in self._writers:
                writer.close()
            server.close()
            await server.wait_closed()


@contextlib.asynccontextmanager
async def raw_client(proxy_port: int, host: str, path: str = "/?format=json", early: bytes = b"") -> AsyncIterator[
        tuple[asyncio.StreamReader, asyncio.StreamWriter]]:  # fmt: skip
    """A client that writes its handshake by hand (and ``early`` with it, not waiting for the 101)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        stamps = "".join(f"{k}: {v}\r\n" for k, v in redirect_headers(host).items())
        writer.write((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{stamps}\r\n").encode() + early)  # fmt: skip
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_frames(reader: asyncio.StreamReader, count: int, timeout: float = 10) -> list[tuple[int, bool, bytes, bytes]]:
    data = b""
    async with asyncio.timeout(timeout):
        while True:
            whole, _ = parse(data)
            if len(whole) >= count:
                assert len(whole) == count, whole
                return whole
            chunk = await reader.read(65536)
            assert chunk, f"connection closed after {whole}"
            data += chunk


async def test_a_frame_that_passes_goes_on_as_the_bytes_it_came_in(app_server: AppServer, no_leaks: None) -> None:
    """A client's frame keeps its own mask upstream (aiohttp would have drawn a new one), a server's frame keeps
    even a length written longer than it needs (aiohttp would have written it anew): the proxy adds nothing."""
    upstream = RawUpstream()
    async with upstream.running() as host, raw_client(app_server.proxy_port, host) as (client_r, client_w):
        server_r, server_w = await asyncio.wait_for(upstream.accepted.get(), 10)
        for size in (13, 300, 70000):
            sent = ws_frame(BINARY, os.urandom(size), mask=MASK)
            client_w.write(sent)
            [(_, _, _, raw)] = await read_frames(server_r, 1)
            assert raw == sent
            back = ws_frame(TEXT, b"x" * size, mask=None, length_bytes=8)
            server_w.write(back)
            [(_, _, _, raw)] = await read_frames(client_r, 1)
            assert raw == back


async def test_a_frame_the_upstream_sends_with_its_101_comes_first_then_frames_go_on_as_they_came(
    app_server: AppServer, no_leaks: None
) -> None:
    """What came with the 101 reached aiohttp before the relay began: the upstream's watch counted it (it is
    aiohttp's to deliver, written anew), and the next frame goes on as it came."""
    greeting = ws_frame(TEXT, b'{"action":4}', mask=None, length_bytes=8)
    upstream = RawUpstream(greeting)
    async with upstream.running() as host, raw_client(app_server.proxy_port, host) as (client_r, client_w):
        _, server_w = await asyncio.wait_for(upstream.accepted.get(), 10)
        [(opcode, _, payload, raw)] = await read_frames(client_r, 1)
        assert (opcode, payload) == (TEXT, b'{"action":4}') and raw != greeting  # aiohttp's minimal length
        await asyncio.sleep(0.05)
        after = ws_frame(TEXT, b'{"action":0}', mask=None, length_bytes=8)
        server_w.write(after)
        [(_, _, _, raw)] = await read_frames(client_r, 1)
        assert raw == after


async def test_a_client_that_sends_before_the_101_is_relayed_by_aiohttp_alone(app_server: AppServer,
                                                                                no_leaks: None) -> None:  # fmt: skip
    """Its first frame came with the upgrade request, before a watch could be put in front: that leg has none,
    and its frames are read and written anew by aiohttp (a fresh mask), whole and in order."""
    upstream = RawUpstream()
    first = ws_frame(TEXT, b'{"action":10}')
    async with upstream.running() as host, raw_client(app_server.proxy_port, host, early=first) as (_, client_w):
        server_r, _ = await asyncio.wait_for(upstream.accepted.get(), 10)
        later = ws_frame(TEXT, b'{"action":0}')
        client_w.write(later)
        arrived = await read_frames(server_r, 2)
        assert [payload for _, _, payload, _ in arrived] == [b'{"action":10}', b'{"action":0}']
        assert arrived[1][3] != later  # masked anew by aiohttp


async def test_frames_behind_a_busy_pump_keep_their_order_and_then_go_on_as_they_came(
    suite: Suite, app_server: AppServer, no_leaks: None
) -> None:
    """A rule delays the first message; the frames that arrive meanwhile are aiohttp's (the pump is busy), and
    reach the upstream after it, in order; once all were dealt with, frames go on as they came again."""
    response = await suite.request("addRules", {"rules": [
        {"match": {"action": "MESSAGE"}, "action": {"type": "delay", "ms": 300}},
        {"match": {}, "action": {"type": "pass"}}]})  # the rules decide everything: the suite is not asked
    assert "result" in response, response
    upstream = RawUpstream()
    async with upstream.running() as host, raw_client(app_server.proxy_port, host) as (client_r, client_w):
        server_r, _ = await asyncio.wait_for(upstream.accepted.get(), 10)
        burst = [ws_frame(TEXT, json.dumps({"action": 15, "channel": "a"}).encode())]
        burst += [ws_frame(TEXT, json.dumps({"action": 0, "n": i}).encode(), mask=os.urandom(4)) for i in range(20)]
        client_w.write(b"".join(burst))
        arrived = await read_frames(server_r, len(burst))
        assert [payload for _, _, payload, _ in arrived] == [parse(f)[0][0][2] for f in burst]
        await asyncio.sleep(0.05)  # the reader has dealt with all of them
        after = ws_frame(TEXT, b'{"action":0,"n":"after"}')
        client_w.write(after)
        [(_, _, _, raw)] = await read_frames(server_r, 1)
        assert raw == after


async def test_a_fragmented_message_and_a_ping_byte_by_byte_then_frames_as_they_came(
    app_server: AppServer, no_leaks: None
) -> None:
    upstream = RawUpstream()
    async with upstream.running() as host, raw_client(app_server.proxy_port, host) as (client_r, client_w):
        server_r, _ = await asyncio.wait_for(upstream.accepted.get(), 10)
        stream = ws_frame(TEXT, b"hel", fin=False) + ws_frame(PING, b"p") + ws_frame(CONT, b"lo")
        for i in range(len(stream)):
            client_w.write(stream[i:i + 1])
            await client_w.drain()
            await asyncio.sleep(0.002)
        arrived = await read_frames(server_r, 2)
        assert [(opcode, payload) for opcode, _, payload, _ in arrived] == [(PING, b"p"), (TEXT, b"hello")]
        await asyncio.sleep(0.05)
        after = ws_frame(BINARY, b"after")
        client_w.write(after)
        [(_, _, _, raw)] = await read_frames(server_r, 1)
        assert raw == after


async def test_text_that_is_not_utf8_is_aiohttps_to_judge(app_server: AppServer, no_leaks: None) -> None:
    """The watch does not forward it: aiohttp reads it and fails the leg, as it did before there was a watch (the
    client's connection and the upstream's are dropped, nothing relayed)."""
    upstream = RawUpstream()
    async with upstream.running() as host, raw_client(app_server.proxy_port, host) as (client_r, client_w):
        server_r, _ = await asyncio.wait_for(upstream.accepted.get(), 10)
        client_w.write(ws_frame(TEXT, b"\xff\xfe"))
        async with asyncio.timeout(10):
            assert await client_r.read() == b""
            assert await server_r.read() == b""


@pytest.mark.parametrize("compress", [15, 0], ids=["deflate", "plain"])
async def test_aiohttp_peers_get_every_message_whole_and_in_order(app_server: AppServer, no_leaks: None,
                                                                   compress: int) -> None:  # fmt: skip
    """aiohttp's own client and server on both ends: with permessage-deflate every message is compressed and
    goes through aiohttp; without, they go on as they came; either way each arrives whole and in order."""
    server = UpstreamServer()
    await server.start()
    try:
        async with aiohttp.ClientSession() as http:
            client = await connect_client(http, app_server.proxy_port, server.host, compress=compress)
            _, ws = await server.next()
            sent: list[str | bytes] = [f"message {i} " * (i % 7 + 1) for i in range(200)]
            sent += [os.urandom(i * 997) for i in range(20)]
            for data in sent:
                await (client.send_str(data) if isinstance(data, str) else client.send_bytes(data))
            assert await receive_data(ws, len(sent)) == sent
            for data in sent:
                await (ws.send_str(data) if isinstance(data, str) else ws.send_bytes(data))
            assert await receive_data(client, len(sent)) == sent
            await client.close()
            await ws.close()
    finally:
        await server.stop()
