"""The node-to-node message channel: msgpack maps in length-prefixed frames over asyncio streams.

A frame is a 4-byte big-endian length followed by one msgpack-encoded map with
a "type" key.  Both ends of an agent session use `Channel`; request/response
pairs carry a "req" id so several can be in flight on one connection.
"""
from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack

MAX_FRAME = 64 * 1024 * 1024
_HEADER = struct.Struct(">I")


class ChannelClosed(ConnectionError):
    pass


class Channel:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._send_lock = asyncio.Lock()

    @classmethod
    async def connect(cls, host: str, port: int, timeout: float = 5.0, ssl=None) -> "Channel":
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ssl), timeout)
        return cls(reader, writer)

    @property
    def peer(self) -> Any:
        return self._writer.get_extra_info("peername")

    async def send(self, message: dict) -> None:
        payload = msgpack.packb(message, use_bin_type=True)
        if len(payload) > MAX_FRAME:
            raise ValueError(f"message of {len(payload)} bytes is over the {MAX_FRAME} frame limit")
        async with self._send_lock:
            try:
                self._writer.write(_HEADER.pack(len(payload)) + payload)
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as exc:
                raise ChannelClosed(str(exc)) from exc

    async def recv(self) -> dict:
        try:
            header = await self._reader.readexactly(_HEADER.size)
            (length,) = _HEADER.unpack(header)
            if length > MAX_FRAME:
                raise ChannelClosed(f"frame of {length} bytes is over the {MAX_FRAME} limit")
            payload = await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            raise ChannelClosed(str(exc)) from exc
        try:
            message = msgpack.unpackb(payload, raw=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:   # bad msgpack or UTF-8, extra bytes
            raise ChannelClosed(f"malformed frame: {exc!r}") from exc
        if not isinstance(message, dict) or "type" not in message:
            raise ChannelClosed("malformed frame: not a map with a type")
        return message

    async def close(self) -> None:
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass
