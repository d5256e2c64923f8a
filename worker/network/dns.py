"""The DNS resolver a swarmpy agent serves to the containers of its overlay networks.

Why it exists: every container on a user-defined Docker network asks Docker's embedded DNS
server (127.0.0.11 inside the container).  In real swarm mode that server knows the swarm's
service names itself, learnt through libnetwork's gossip; swarmpy's containers are plain
containers, so the embedded server knows only local container names and forwards every other
name to the container's configured `dns` servers.  The agent configures its own gateway
address on each overlay network as that server, and answers here, from the node's netview
(docs/networks.md), the names SwarmKit/libnetwork would have answered:

* `NAME` -- a service's name or one of its network aliases: the service's VIP on that network
  (endpoint_mode vip), or the addresses of all its tasks in random order (dnsrr);
* `tasks.NAME` -- the addresses of all the service's tasks, in random order;
* a task's name (`stack_web.1.<taskid>`, the container's name) -- that task's address.

Scope: a query comes from the container's address on the network it arrived on, so the
source address names the task, and the task sees the names of every network it is attached
to, and of no other.  Everything that is not ours (and every name a container asks of a
network it is not on) is forwarded to the upstream servers the agent names for that source.

Semantics chosen where Docker's is not ours to copy exactly:

* a name known on several of the task's networks is answered from all of them: the network
  the query came from first, then the task's other networks in netview order; each network's
  part is shuffled when the form is round-robin (dnsrr, tasks.NAME); duplicates are dropped.
  (Docker answers from the first network that has the name.)
* a name that is ours but has no address now (dnsrr or tasks.NAME with no task in the
  rotation, a VIP not allocated yet) is answered NOERROR with no records, not NXDOMAIN: the
  name exists, and a negative answer would be cached by resolvers for longer than the gap.
* other query types (AAAA, MX, ...) for a name of ours: NOERROR with no records (no IPv6).
* answers carry TTL 600, as Docker's embedded DNS gives service names.
* UDP answers are kept to 512 bytes (EDNS sizes are not honoured for our own answers): past
  that the TC bit is set and as many whole A records as fit are kept; TCP answers are whole.
* forwarded queries keep the client's bytes (EDNS included) under a fresh random id, over UDP;
  a truncated upstream answer to a TCP client is asked again over TCP.
"""
from __future__ import annotations

import asyncio
import functools
import ipaddress
import random
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from swarmpy import log

_log = log.get("dns")

TTL = 600
UDP_MAX = 512
FORWARD_TIMEOUT_S = 2.0
TCP_IDLE_S = 10.0
MAX_INFLIGHT = 512            # forwarded UDP queries in flight; more are dropped (the client retries)
MAX_POINTERS = 64             # compression pointers followed in one name before it is an error

# wire constants (RFC 1035)
T_A, T_AAAA, T_ANY = 1, 28, 255
C_IN, C_ANY = 1, 255
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 1, 2, 3, 4
QR, OPCODE_MASK, AA, TC, RD, RA = 0x8000, 0x7800, 0x0400, 0x0200, 0x0100, 0x0080

_HEADER = struct.Struct("!6H")
_QTAIL = struct.Struct("!2H")
_ANSWER_A = struct.Struct("!HHHIH")      # name pointer, type, class, ttl, rdlength (+ 4 bytes)
_RECORD_SIZE = _ANSWER_A.size + 4


# -- wire codec ---------------------------------------------------------------------------
class FormatError(ValueError):
    """The message is not a query we can read."""


@dataclass(frozen=True)
class Query:
    id: int
    flags: int
    labels: tuple[bytes, ...]
    qtype: int
    qclass: int

    @property
    def qname(self) -> str:
        return ".".join(label.decode("latin-1") for label in self.labels)

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11

    def name_key(self) -> str | None:
        """The name to look up, or None when no name of ours can be it (root, dots in labels)."""
        if not self.labels or any(b"." in label for label in self.labels):
            return None
        return self.qname


def read_name(data: bytes, offset: int) -> tuple[tuple[bytes, ...], int]:
    """Labels of the name at offset (compression followed) and the offset just past it."""
    labels: list[bytes] = []
    end, jumps, size = -1, 0, 0
    while True:
        if offset >= len(data):
            raise FormatError("name runs past the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data) or jumps >= MAX_POINTERS:
                raise FormatError("bad compression pointer")
            end = offset + 2 if end < 0 else end
            offset, jumps = ((length & 0x3F) << 8) | data[offset + 1], jumps + 1
            continue
        if length & 0xC0:
            raise FormatError("unknown label type")
        if length == 0:
            return tuple(labels), (offset + 1 if end < 0 else end)
        size += length + 1
        if size > 254 or offset + 1 + length > len(data):
            raise FormatError("name too long")
        labels.append(data[offset + 1: offset + 1 + length])
        offset += 1 + length


def parse_query(data: bytes) -> Query:
    """The header and the one question of a query; FormatError when there is no such thing."""
    if len(data) < _HEADER.size:
        raise FormatError("short header")
    qid, flags, qdcount, _, _, _ = _HEADER.unpack_from(data)
    if flags & QR:
        raise FormatError("a response, not a query")
    if qdcount != 1:
        raise FormatError(f"{qdcount} questions")
    labels, offset = read_name(data, _HEADER.size)
    if offset + _QTAIL.size > len(data):
        raise FormatError("question runs past the message")
    qtype, qclass = _QTAIL.unpack_from(data, offset)
    return Query(qid, flags, labels, qtype, qclass)


def encode_name(labels: Iterable[bytes]) -> bytes:
    return b"".join(bytes([len(label)]) + label for label in labels) + b"\0"


def _reply_flags(request_flags: int, rcode: int, truncated: bool = False) -> int:
    return QR | (request_flags & (OPCODE_MASK | RD)) | RA | (TC if truncated else 0) | rcode


def build_reply(query: Query, rcode: int = NOERROR, addrs: Iterable[str] = (),
                max_size: int | None = None) -> bytes:
    """A reply echoing the question, with one A record per address (TTL 600); past max_size,
    the TC bit and only the whole records that fit."""
    question = encode_name(query.labels) + _QTAIL.pack(query.qtype, query.qclass)
    records = [_ANSWER_A.pack(0xC000 | _HEADER.size, T_A, C_IN, TTL, 4) + socket.inet_aton(a)
               for a in addrs]
    truncated = False
    if max_size is not None and _HEADER.size + len(question) + _RECORD_SIZE * len(records) > max_size:
        records = records[:max(0, (max_size - _HEADER.size - len(question)) // _RECORD_SIZE)]
        truncated = True
    header = _HEADER.pack(query.id, _reply_flags(query.flags, rcode, truncated), 1, len(records), 0, 0)
    return header + question + b"".join(records)


def error_reply(data: bytes, rcode: int) -> bytes | None:
    """A header-only reply to a message we could not read (None when it has no header to echo)."""
    if len(data) < _HEADER.size or data[2] & (QR >> 8):
        return None
    qid, flags = struct.unpack_from("!2H", data)
    return _HEADER.pack(qid, _reply_flags(flags, rcode), 0, 0, 0, 0)


# -- names ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Record:
    addrs: tuple[str, ...]
    shuffle: bool
    # A VIP's tasks: the answer for a source whose VIP rules are not in place (a container
    # in its first moments, or one the agent did not start), which the VIP would not reach.
    direct: tuple[str, ...] | None = None


def _lower(name: object) -> str:
    return str(name or "").lower().removesuffix(".")


class NameIndex:
    """The names of a netview, indexed once: which networks each source sees, and per network
    the records of each (lower-case) name."""

    def __init__(self, views: list[dict], local: dict[str, list[str]] | None = None) -> None:
        self._names: list[dict[str, list[_Record]]] = []
        self._subnets: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int]] = []
        homes: dict[str, list[tuple[str, int]]] = {}     # task addr -> [(task id, view)]
        task_views: dict[str, list[int]] = {}
        ids = {str(v.get("id", "")): i for i, v in enumerate(views)}
        for i, view in enumerate(views):
            self._names.append(self._index_view(view, i, homes, task_views))
            self._add_subnet(view, i)
        self._scope = {addr: _unique([v for _, v in pairs] + [w for t, _ in pairs for w in task_views[t]])
                       for addr, pairs in homes.items()}
        self._local = {addr: _unique([ids[n] for n in nets if n in ids])
                       for addr, nets in (local or {}).items()}

    def _index_view(self, view: dict, i: int, homes: dict, task_views: dict) -> dict[str, list[_Record]]:
        names: dict[str, list[_Record]] = {}
        for svc in view.get("services") or []:
            tasks = [t for t in svc.get("tasks") or [] if t.get("addr")]
            addrs = tuple(t["addr"] for t in tasks)
            if svc.get("endpoint_mode") == "dnsrr":
                own = _Record(addrs, True)
            else:
                own = _Record((svc["vip"],) if svc.get("vip") else (), False, direct=addrs)
            for name in {_lower(n) for n in [svc.get("name"), *(svc.get("aliases") or [])]} - {""}:
                names.setdefault(name, []).append(own)
                names.setdefault("tasks." + name, []).append(_Record(addrs, True))
            for task in tasks:
                if task.get("name"):
                    names.setdefault(_lower(task["name"]), []).append(_Record((task["addr"],), False))
                tid = str(task.get("id") or task["addr"])
                homes.setdefault(task["addr"], []).append((tid, i))
                task_views.setdefault(tid, [])
                if i not in task_views[tid]:
                    task_views[tid].append(i)
        return names

    def _add_subnet(self, view: dict, i: int) -> None:
        try:
            self._subnets.append((ipaddress.ip_network(view.get("subnet") or "", strict=False), i))
        except ValueError:
            _log.warning("dns_bad_subnet", network=view.get("name"), subnet=view.get("subnet"))

    def scope(self, src_ip: str) -> list[int]:
        """Indices of the views whose names src_ip may resolve, its own network first."""
        found = self._scope.get(src_ip) or self._local.get(src_ip)
        if found:
            return found
        try:
            ip = ipaddress.ip_address(src_ip)
        except ValueError:
            return []
        return [i for net, i in self._subnets if ip.version == net.version and ip in net]

    def lookup(self, src_ip: str, qname: str, vips: bool = True) -> list[str] | None:
        """Addresses of qname as src_ip sees it; [] for a name of ours with none now; None
        when the name is not ours (forward it).  vips=False: a service's tasks, not its VIP."""
        key, found, out = _lower(qname), False, []
        for i in self.scope(src_ip):
            for record in self._names[i].get(key, ()):
                found = True
                direct = not vips and record.direct is not None
                addrs = list(record.direct if direct else record.addrs)
                if record.shuffle or direct:
                    random.shuffle(addrs)
                out.extend(addrs)
        return _unique(out) if found else None


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))


def lookup(views: list[dict], src_ip: str, qname: str) -> list[str] | None:
    """Pure form of NameIndex.lookup (builds the index each call: for tests and one-offs)."""
    return NameIndex(views).lookup(src_ip, qname)


# -- the server ----------------------------------------------------------------------------
def split_server(server: str) -> tuple[str, int]:
    """"ip", "ip:port", "[v6]:port" or a bare v6 address -> (ip, port)."""
    if server.startswith("["):
        host, _, port = server[1:].partition("]")
        return host, int(port.lstrip(":") or 53)
    if server.count(":") == 1:
        host, port = server.split(":")
        return host, int(port)
    return server, 53


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _bound_socket(addr: str, port: int, kind: int) -> socket.socket:
    """A socket on addr:port that other agents on the host may bind too (SO_REUSEPORT), and that
    binds before the bridge has the gateway address (IP_FREEBIND, Linux)."""
    sock = socket.socket(_family(addr), kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if sys.platform.startswith("linux") and _family(addr) == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_FREEBIND", 15), 1)
        sock.bind((addr, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class _UDPServer(asyncio.DatagramProtocol):
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if self.transport is not None:
            self.resolver._on_datagram(self.transport, data, addr)

    def error_received(self, exc: Exception) -> None:
        _log.debug("dns_udp_error", error=str(exc))


@dataclass
class _Listener:
    port: int
    transport: asyncio.DatagramTransport
    server: asyncio.AbstractServer | None = None
    conns: set[asyncio.StreamWriter] = field(default_factory=set)


class Resolver:
    """Answers the names of the current netview and forwards the rest upstream."""

    def __init__(self, upstream: Callable[[str], list[str]], timeout: float = FORWARD_TIMEOUT_S,
                 vip_ready: Callable[[str], bool] | None = None) -> None:
        self.upstream = upstream
        self.vip_ready = vip_ready      # src_ip -> its VIP rules are in place (None: always)
        self.timeout = timeout
        self.answered = 0        # queries answered from the netview
        self.forwarded = 0       # queries answered by an upstream server
        self.failed = 0          # queries no upstream answered (SERVFAIL)
        self.malformed = 0       # messages we could not read (dropped or FORMERR)
        self.dropped = 0         # UDP queries dropped because too many were in flight
        self._index = NameIndex([])
        self._listeners: dict[str, _Listener] = {}
        self._tasks: set[asyncio.Task] = set()
        self._warned_at = 0.0

    def set_views(self, views: list[dict], local: dict[str, list[str]] | None = None) -> None:
        """Answer from these views from now on.  local (optional): address -> network ids of
        the node's own containers, so that one not in the rotation yet (starting, unhealthy)
        still sees the names of all its networks, not only of the subnet its query came from."""
        self._index = NameIndex(views, local)

    # -- answering (transport-free) --
    def answer_local(self, data: bytes, src_ip: str, max_size: int | None) -> bytes | Query | None:
        """The reply when we can give it without the network; the Query when it must be
        forwarded; None when the message is to be dropped."""
        try:
            query = parse_query(data)
        except FormatError as exc:
            self.malformed += 1
            self._warn("dns_malformed", src=src_ip, error=str(exc), size=len(data))
            return error_reply(data, FORMERR)
        if query.opcode != 0:
            return build_reply(query, NOTIMP)
        key = query.name_key() if query.qclass in (C_IN, C_ANY) else None
        vips = self.vip_ready is None or self.vip_ready(src_ip)
        addrs = self._index.lookup(src_ip, key, vips) if key else None
        if addrs is None:
            return query
        self.answered += 1
        return build_reply(query, NOERROR, addrs if query.qtype in (T_A, T_ANY) else (), max_size)

    async def handle(self, data: bytes, src_ip: str, tcp: bool = False) -> bytes | None:
        """The reply to one message from src_ip (None: send nothing)."""
        result = self.answer_local(data, src_ip, None if tcp else UDP_MAX)
        if isinstance(result, Query):
            return await self._forward(result, data, src_ip, tcp)
        return result

    # -- forwarding --
    def _upstreams(self, src_ip: str) -> list[tuple[str, int]]:
        try:
            servers = [split_server(s) for s in self.upstream(src_ip)]
        except Exception as exc:   # the agent's callback: never let it kill the server
            _log.warning("dns_upstream_error", src=src_ip, error=repr(exc))
            return []
        mine = {(addr, lis.port) for addr, lis in self._listeners.items()}
        return [s for s in servers if s not in mine]

    async def _forward(self, query: Query, data: bytes, src_ip: str, tcp: bool) -> bytes:
        for host, port in self._upstreams(src_ip):
            try:
                reply = await self._ask_udp(host, port, data)
                if tcp and reply[2] & (TC >> 8):
                    reply = await self._ask_tcp(host, port, data)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                _log.debug("dns_upstream_failed", server=f"{host}:{port}", error=repr(exc))
                continue
            self.forwarded += 1
            return struct.pack("!H", query.id) + reply[2:]
        self.failed += 1
        return build_reply(query, SERVFAIL)

    async def _ask_udp(self, host: str, port: int, data: bytes) -> bytes:
        """Send the query under a fresh id from a fresh port; the first reply with that id."""
        loop = asyncio.get_running_loop()
        msg = struct.pack("!H", random.getrandbits(16)) + data[2:]
        with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (host, port))
            await loop.sock_sendall(sock, msg)
            async with asyncio.timeout(self.timeout):
                while True:
                    reply = await loop.sock_recv(sock, 65535)
                    if len(reply) >= _HEADER.size and reply[:2] == msg[:2] and reply[2] & (QR >> 8):
                        return reply

    async def _ask_tcp(self, host: str, port: int, data: bytes) -> bytes:
        async with asyncio.timeout(self.timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(struct.pack("!H", len(data)) + data)
                await writer.drain()
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                reply = await reader.readexactly(size)
            finally:
                writer.close()
        if len(reply) < _HEADER.size:
            raise ValueError("short reply")
        return reply

    # -- transports --
    def _on_datagram(self, transport: asyncio.DatagramTransport, data: bytes, addr: tuple) -> None:
        try:
            result = self.answer_local(data, addr[0], UDP_MAX)
        except Exception as exc:   # a bug must cost one query, not the server
            _log.warning("dns_error", src=addr[0], error=repr(exc))
            return
        if isinstance(result, bytes):
            transport.sendto(result, addr)
        elif isinstance(result, Query):
            if len(self._tasks) >= MAX_INFLIGHT:
                self.dropped += 1
                return
            self._spawn(self._forward_udp(transport, result, data, addr))

    async def _forward_udp(self, transport: asyncio.DatagramTransport, query: Query,
                           data: bytes, addr: tuple) -> None:
        reply = await self._forward(query, data, addr[0], tcp=False)
        if not transport.is_closing():
            transport.sendto(reply, addr)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.warning("dns_error", error=repr(task.exception()))

    async def _serve_tcp(self, listener: _Listener, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        listener.conns.add(writer)
        src = (writer.get_extra_info("peername") or ("",))[0]
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_S):
                    (size,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(size)
                reply = await self.handle(data, src, tcp=True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:
            _log.warning("dns_error", src=src, error=repr(exc))
        finally:
            listener.conns.discard(writer)
            writer.close()

    async def listen(self, addr: str, port: int = 53) -> None:
        """Serve UDP and TCP on addr:port (again on a new port; nothing when already so)."""
        if addr in self._listeners:
            if self._listeners[addr].port == port:
                return
            await self.unlisten(addr)
        loop = asyncio.get_running_loop()
        udp = _bound_socket(addr, port, socket.SOCK_DGRAM)
        try:
            tcp = _bound_socket(addr, port, socket.SOCK_STREAM)
        except BaseException:
            udp.close()
            raise
        transport, _ = await loop.create_datagram_endpoint(lambda: _UDPServer(self), sock=udp)
        listener = _Listener(port, transport)  # type: ignore[arg-type]
        listener.server = await asyncio.start_server(functools.partial(self._serve_tcp, listener), sock=tcp)
        self._listeners[addr] = listener
        _log.info("dns_listening", addr=addr, port=port)

    async def unlisten(self, addr: str) -> None:
        listener = self._listeners.pop(addr, None)
        if listener is None:
            return
        listener.transport.close()
        for writer in list(listener.conns):
            writer.close()
        if listener.server is not None:
            listener.server.close()
            await listener.server.wait_closed()

    async def close(self) -> None:
        for addr in list(self._listeners):
            await self.unlisten(addr)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _warn(self, event: str, **kw: object) -> None:
        """Warnings about what clients send, at most one a second (garbage can come in floods)."""
        now = time.monotonic()
        if now - self._warned_at >= 1.0:
            self._warned_at = now
            _log.warning(event, total=self.malformed, **kw)

