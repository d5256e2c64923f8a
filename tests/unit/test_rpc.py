"""swarmpy/rpc.py: Channel over real asyncio TCP on 127.0.0.1."""
from __future__ import annotations

import asyncio
import struct

import msgpack
import pytest

from swarmpy import rpc
from swarmpy.rpc import MAX_FRAME, Channel, ChannelClosed

pytestmark = pytest.mark.timeout(20)


async def pair():
    """(client Channel, server Channel, server) connected over TCP on 127.0.0.1."""
    accepted: asyncio.Queue = asyncio.Queue()

    async def on_conn(reader, writer):
        await accepted.put(Channel(reader, writer))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = await Channel.connect("127.0.0.1", port, timeout=5)
    srv = await asyncio.wait_for(accepted.get(), 5)
    return client, srv, server


async def raw_pair():
    """(raw StreamWriter of the client, server Channel, server): to send hand-made bytes."""
    accepted: asyncio.Queue = asyncio.Queue()

    async def on_conn(reader, writer):
        await accepted.put(Channel(reader, writer))

    server = await asyncio.start_server(on_conn, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    srv = await asyncio.wait_for(accepted.get(), 5)
    return writer, srv, server


async def close_all(server, *channels):
    for ch in channels:
        await ch.close()
    server.close()
    await server.wait_closed()


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def test_frames_round_trip_both_ways():
    messages = [
        {"type": "hello", "node_id": "n1", "token": "SWMTKN-1-x"},
        {"type": "tasks", "req": 7, "tasks": [{"id": "t1", "desired_state": 512, "spec": {"env": ["A=1"]},
                                               "assigned_generic": {"NVIDIA-GPU": ["GPU-fake-0"]}}]},
        {"type": "status", "blob": b"\x00\x01\xff", "exit": None, "f": 1.5, "ok": True, "big": 2 ** 62},
        {"type": "unicode", "text": "héllo ✓"},
    ]

    async def main():
        client, srv, server = await pair()
        try:
            for m in messages:
                await client.send(m)
            got = [await asyncio.wait_for(srv.recv(), 5) for _ in messages]
            assert got == messages
            await srv.send({"type": "ack", "req": 7})
            assert await asyncio.wait_for(client.recv(), 5) == {"type": "ack", "req": 7}
            assert srv.peer[0] == "127.0.0.1" and client.peer[1] == server.sockets[0].getsockname()[1]
        finally:
            await close_all(server, client, srv)
    asyncio.run(main())


def test_large_frame_round_trips():
    big = {"type": "logs", "data": b"x" * (4 * 1024 * 1024)}

    async def main():
        client, srv, server = await pair()
        try:
            sender = asyncio.create_task(client.send(big))
            assert await asyncio.wait_for(srv.recv(), 10) == big
            await sender
        finally:
            await close_all(server, client, srv)
    asyncio.run(main())


def test_concurrent_sends_do_not_interleave():
    async def main():
        client, srv, server = await pair()
        try:
            msgs = [{"type": "m", "i": i, "pad": "p" * (i * 997 % 50000)} for i in range(60)]
            await asyncio.gather(*(client.send(m) for m in msgs))
            got = [await asyncio.wait_for(srv.recv(), 5) for _ in msgs]
            assert sorted(g["i"] for g in got) == list(range(60))
            assert all(g["pad"] == "p" * (g["i"] * 997 % 50000) for g in got)
        finally:
            await close_all(server, client, srv)
    asyncio.run(main())


def test_oversize_frame_is_rejected_without_reading_it():
    async def main():
        writer, srv, server = await raw_pair()
        try:
            writer.write(struct.pack(">I", MAX_FRAME + 1))     # header only: the body never comes
            await writer.drain()
            with pytest.raises(ChannelClosed, match="over the .* limit"):
                await asyncio.wait_for(srv.recv(), 5)
        finally:
            writer.close()
            await close_all(server, srv)
    asyncio.run(main())


def test_oversize_limit_applies_to_a_small_limit(monkeypatch):
    # the limit is the module constant: a frame one byte over it is refused, one at it passes
    monkeypatch.setattr(rpc, "MAX_FRAME", 64)

    async def main():
        client, srv, server = await pair()
        try:
            ok = next(m for m in ({"type": "x", "p": "a" * n} for n in range(64))
                      if len(msgpack.packb(m, use_bin_type=True)) == 64)
            await client.send(ok)
            assert await asyncio.wait_for(srv.recv(), 5) == ok
            big = {"type": "x", "p": "a" * 100}
            with pytest.raises(ValueError):          # the sender refuses it...
                await client.send(big)
            payload = msgpack.packb(big, use_bin_type=True)
            client._writer.write(len(payload).to_bytes(4, "big") + payload)
            with pytest.raises(ChannelClosed):       # ...and so does a receiver sent one anyway
                await asyncio.wait_for(srv.recv(), 5)
        finally:
            await close_all(server, client, srv)
    asyncio.run(main())


@pytest.mark.parametrize("payload", [
    msgpack.packb([1, 2, 3]),                    # not a map
    msgpack.packb({"kind": "hello"}),            # a map without "type"
    msgpack.packb("type"),
    msgpack.packb(None),
])
def test_well_formed_msgpack_that_is_not_a_message_closes(payload):
    async def main():
        writer, srv, server = await raw_pair()
        try:
            writer.write(frame(payload))
            await writer.drain()
            with pytest.raises(ChannelClosed, match="malformed frame"):
                await asyncio.wait_for(srv.recv(), 5)
        finally:
            writer.close()
            await close_all(server, srv)
    asyncio.run(main())


@pytest.mark.parametrize("payload", [
    b"\xc1",                                     # a byte msgpack never uses
    b"\x92\x01",                                 # truncated array
    msgpack.packb({"type": "x"}) + b"\x01",      # trailing bytes in the frame
    b"\x81\xa4type\xa2\xff\xfe",                 # invalid UTF-8 in a str
    b"",                                         # empty frame
    b"\x81\x91\x01\x01",                             # a map with a list as key
    b"\x91" * 3000 + b"\x01",                       # nested too deep
])
def test_malformed_msgpack_closes_the_channel(payload):
    async def main():
        writer, srv, server = await raw_pair()
        try:
            writer.write(frame(payload))
            await writer.drain()
            with pytest.raises(ChannelClosed):
                await asyncio.wait_for(srv.recv(), 5)
        finally:
            writer.close()
            await close_all(server, srv)
    asyncio.run(main())


def test_peer_closing_mid_frame_is_channel_closed():
    async def main():
        writer, srv, server = await raw_pair()
        try:
            writer.write(struct.pack(">I", 100) + b"\x81")   # promises 100 bytes, sends 1
            await writer.drain()
            writer.close()
            with pytest.raises(ChannelClosed):
                await asyncio.wait_for(srv.recv(), 5)
        finally:
            await close_all(server, srv)
    asyncio.run(main())


def test_peer_closing_between_frames_is_channel_closed():
    async def main():
        client, srv, server = await pair()
        try:
            await client.send({"type": "last"})
            await client.close()
            assert (await asyncio.wait_for(srv.recv(), 5))["type"] == "last"
            with pytest.raises(ChannelClosed):
                await asyncio.wait_for(srv.recv(), 5)
        finally:
            await close_all(server, srv)
    asyncio.run(main())


def test_send_after_close_is_channel_closed():
    async def main():
        client, srv, server = await pair()
        try:
            await srv.close()
            with pytest.raises(ChannelClosed):
                for _ in range(200):          # the reset reaches the sender after a write or two
                    await client.send({"type": "ping", "pad": "x" * 65536})
                    await asyncio.sleep(0.005)
        finally:
            await close_all(server, client)
    asyncio.run(main())


def test_connect_refused_raises_os_error(free_port):
    async def main():
        with pytest.raises(OSError):
            await Channel.connect("127.0.0.1", free_port, timeout=2)
    asyncio.run(main())
