"""The agent's DNS resolver (worker/network/dns.py): the wire codec, the name logic on a
hand-written netview, and the server over real sockets on 127.x addresses (the resolver's
event loop runs in a thread, the tests query it with blocking sockets)."""
from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time

import pytest

from worker.network import dns

# -- a netview on 127.x subnets, so that a test can send from any task address -------------
FRONT, BACK, OTHER = "127.51.1.", "127.51.2.", "127.51.3."
GATEWAY = FRONT + "1"
T1_FRONT, RR_TASK = FRONT + "10", FRONT + "20"


def _task(tid: str, svc: str, slot: int, addr: str) -> dict:
    return {"id": tid, "name": f"{svc}.{slot}.{tid}", "addr": addr, "node_id": "n1"}


def _svc(name, aliases, mode, vip, tasks) -> dict:
    return {"id": "s-" + name, "name": name, "aliases": aliases, "endpoint_mode": mode,
            "vip": vip, "ports": [], "tasks": tasks}


def _view(nid: str, prefix: str, services: list) -> dict:
    return {"id": nid, "name": nid, "subnet": prefix + "0/24", "vni": 4097, "internal": False,
            "multicast": True, "ingress": False, "addr": prefix + "1", "peers": [], "services": services}


VIEWS = [
    _view("front", FRONT, [
        _svc("stack_web", ["web"], "vip", FRONT + "2",
             [_task("t1", "stack_web", 1, T1_FRONT), _task("t2", "stack_web", 2, FRONT + "11")]),
        _svc("stack_rr", ["rr"], "dnsrr", "",
             [_task(f"r{i}", "stack_rr", i, FRONT + str(20 + i)) for i in range(3)]),
        _svc("stack_idle", [], "dnsrr", "", []),
        _svc("stack_big", [], "dnsrr", "", [_task(f"b{i}", "stack_big", i, FRONT + str(100 + i))
                                             for i in range(40)]),
    ]),
    _view("back", BACK, [
        _svc("stack_web", ["web"], "vip", BACK + "2",
             [_task("t1", "stack_web", 1, BACK + "10"), _task("t2", "stack_web", 2, BACK + "11")]),
        _svc("stack_db", ["db"], "vip", BACK + "5", [_task("t5", "stack_db", 1, BACK + "30")]),
    ]),
    _view("other", OTHER, [
        _svc("stack_secret", [], "vip", OTHER + "5", [_task("t9", "stack_secret", 1, OTHER + "9")]),
    ]),
]
RR_ADDRS = {FRONT + "20", FRONT + "21", FRONT + "22"}


# -- pure name logic ----------------------------------------------------------------------
def test_service_name_and_alias_give_the_vip_of_each_network_own_first():
    assert dns.lookup(VIEWS, T1_FRONT, "stack_web") == [FRONT + "2", BACK + "2"]
    assert dns.lookup(VIEWS, BACK + "10", "web") == [BACK + "2", FRONT + "2"]
    assert dns.lookup(VIEWS, RR_TASK, "web") == [FRONT + "2"]          # rr tasks are on front only


def test_a_source_without_vip_rules_gets_the_service_tasks_instead_of_the_vip():
    index = dns.NameIndex(VIEWS)
    assert sorted(index.lookup(RR_TASK, "web", vips=False)) == sorted([T1_FRONT, FRONT + "11"])
    assert index.lookup(RR_TASK, "web", vips=True) == [FRONT + "2"]
    assert sorted(index.lookup(RR_TASK, "rr", vips=False)) == sorted(RR_ADDRS)     # dnsrr as always


def test_names_are_case_insensitive_and_a_trailing_dot_is_ignored():
    assert dns.lookup(VIEWS, RR_TASK, "Stack_WEB.") == [FRONT + "2"]
    assert dns.lookup(VIEWS, RR_TASK, "TASKS.Web") is not None


def test_tasks_name_and_dnsrr_give_all_task_addresses_shuffled():
    assert set(dns.lookup(VIEWS, RR_TASK, "tasks.stack_rr")) == RR_ADDRS
    assert set(dns.lookup(VIEWS, RR_TASK, "rr")) == RR_ADDRS
    assert set(dns.lookup(VIEWS, T1_FRONT, "tasks.db")) == {BACK + "30"}
    orders = {tuple(dns.lookup(VIEWS, RR_TASK, "rr")) for _ in range(60)}
    assert len(orders) > 1


def test_task_name_gives_its_address_on_each_shared_network():
    assert dns.lookup(VIEWS, RR_TASK, "stack_web.1.t1") == [T1_FRONT]
    assert dns.lookup(VIEWS, BACK + "30", "stack_web.1.t1") == [BACK + "10"]
    assert dns.lookup(VIEWS, T1_FRONT, "stack_web.1.t1") == [T1_FRONT, BACK + "10"]


def test_names_of_networks_the_task_is_not_on_are_not_ours():
    assert dns.lookup(VIEWS, RR_TASK, "stack_db") is None
    assert dns.lookup(VIEWS, T1_FRONT, "stack_secret") is None
    assert dns.lookup(VIEWS, T1_FRONT, "example.com") is None
    assert dns.lookup(VIEWS, "10.9.9.9", "web") is None                  # not on any network


def test_known_name_without_addresses_is_empty_not_unknown():
    assert dns.lookup(VIEWS, RR_TASK, "stack_idle") == []
    assert dns.lookup(VIEWS, RR_TASK, "tasks.stack_idle") == []


def test_unknown_source_in_a_subnet_sees_that_network():
    assert dns.lookup(VIEWS, FRONT + "99", "web") == [FRONT + "2"]
    assert dns.lookup(VIEWS, FRONT + "99", "db") is None


def test_local_containers_not_in_the_rotation_see_all_their_networks():
    index = dns.NameIndex(VIEWS, local={FRONT + "99": ["front", "back"]})
    assert index.lookup(FRONT + "99", "db") == [BACK + "5"]


# -- codec --------------------------------------------------------------------------------
def query_bytes(name: str, qtype: int = dns.T_A, qid: int = 0x1234, flags: int = dns.RD) -> bytes:
    labels = [p.encode() for p in name.split(".") if p]
    return struct.pack("!6H", qid, flags, 1, 0, 0, 0) + dns.encode_name(labels) + struct.pack("!2H", qtype, 1)


def parse_reply(data: bytes) -> dict:
    qid, flags, qd, an, _, _ = struct.unpack_from("!6H", data)
    labels, off = dns.read_name(data, 12)
    off += 4 * qd
    addrs = []
    for _ in range(an):
        _, off = dns.read_name(data, off)
        rtype, _, ttl, size = struct.unpack_from("!HHIH", data, off)
        off += 10
        assert (rtype, ttl, size) == (dns.T_A, 600, 4)
        addrs.append(socket.inet_ntoa(data[off:off + 4]))
        off += 4
    return {"id": qid, "rcode": flags & 0xF, "tc": bool(flags & dns.TC), "qr": bool(flags & dns.QR),
            "rd": bool(flags & dns.RD), "ra": bool(flags & dns.RA), "aa": bool(flags & dns.AA),
            "name": b".".join(labels).decode(), "addrs": addrs}


def test_parse_follows_compression_pointers_and_rejects_loops():
    head = struct.pack("!6H", 7, 0, 1, 0, 0, 0)
    data = head + b"\x03WWW\xc0\x16" + struct.pack("!2H", 1, 1) + b"\x03foo\x00"
    q = dns.parse_query(data)
    assert (q.id, q.qname, q.qtype, q.qclass) == (7, "WWW.foo", 1, 1)
    with pytest.raises(dns.FormatError):
        dns.parse_query(head + b"\xc0\x0c" + struct.pack("!2H", 1, 1))
    with pytest.raises(dns.FormatError):
        dns.parse_query(head + b"\x05ab")


def test_reply_flags_and_truncation():
    q = dns.parse_query(query_bytes("big"))
    reply = parse_reply(dns.build_reply(q, dns.NOERROR, [f"10.0.0.{i}" for i in range(40)], 512))
    assert reply["qr"] and reply["rd"] and reply["ra"] and not reply["aa"] and reply["tc"]
    assert len(reply["addrs"]) == (512 - 12 - len(b"\x03big\x00") - 4) // 16
    assert dns.error_reply(b"\x00\x01\x01\x00" + b"\x00" * 8, dns.FORMERR)[3] & 0xF == dns.FORMERR
    assert dns.error_reply(b"\x00", dns.FORMERR) is None


# -- the server over sockets --------------------------------------------------------------
class FakeUpstream:
    """A UDP DNS server on 127.51.9.x that answers every A query with 192.0.2.1 (or nothing)."""

    def __init__(self, addr: str, answer: bool = True, truncate: bool = False) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((addr, 0))
        self.sock.settimeout(0.05)
        self.server = f"{addr}:{self.sock.getsockname()[1]}"
        self.answer, self.truncate, self.seen, self.stop = answer, truncate, [], threading.Event()
        self.tcp = None
        if truncate:               # UDP answers say TC; the whole answer comes over TCP
            self.tcp = socket.create_server((addr, self.sock.getsockname()[1]))
            self.tcp.settimeout(0.05)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _serve_tcp(self) -> None:
        try:
            conn, _ = self.tcp.accept()
        except socket.timeout:
            return
        with conn:
            conn.settimeout(2)
            (size,) = struct.unpack("!H", _recv_exact(conn, 2))
            q = dns.parse_query(_recv_exact(conn, size))
            reply = dns.build_reply(q, dns.NOERROR, [f"192.0.2.{i}" for i in range(1, 61)])
            conn.sendall(struct.pack("!H", len(reply)) + reply)

    def _run(self) -> None:
        while not self.stop.is_set():
            if self.tcp is not None:
                self._serve_tcp()
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            self.seen.append(data)
            if self.answer:
                q = dns.parse_query(data)
                reply = bytearray(dns.build_reply(q, dns.NOERROR, [] if self.truncate else ["192.0.2.1"]))
                reply[2] |= (dns.TC >> 8) if self.truncate else 0
                self.sock.sendto(bytes(reply), peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()
        if self.tcp is not None:
            self.tcp.close()


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def on(loop, coro):
    return asyncio.run_coroutine_threadsafe(coro, loop).result(5)


def free_udp_port(addr: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


@pytest.fixture
def upstreams():
    made: list[FakeUpstream] = []
    yield lambda *a, **kw: made.append(FakeUpstream(*a, **kw)) or made[-1]
    for u in made:
        u.close()


@pytest.fixture
def server(loop, upstreams):
    """(resolver, (addr, port), upstream servers list the resolver forwards to)."""
    forward_to: list[str] = []
    asked: list[str] = []
    resolver = dns.Resolver(lambda src: asked.append(src) or list(forward_to), timeout=0.3)
    resolver.set_views(VIEWS)
    port = free_udp_port(GATEWAY)
    on(loop, resolver.listen(GATEWAY, port))
    resolver.asked = asked
    yield resolver, (GATEWAY, port), forward_to
    on(loop, resolver.close())


def ask_udp(server_addr, name, src=T1_FRONT, qtype=dns.T_A, qid=0x1234, raw: bytes | None = None):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((src, 0))
        s.settimeout(2)
        s.sendto(raw if raw is not None else query_bytes(name, qtype, qid), server_addr)
        return parse_reply(s.recv(65535))


def ask_tcp(server_addr, names, src=T1_FRONT):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((src, 0))
        s.settimeout(2)
        s.connect(server_addr)
        for i, name in enumerate(names):                                # pipelined on one connection
            msg = query_bytes(name, qid=100 + i)
            s.sendall(struct.pack("!H", len(msg)) + msg)
        out = []
        for _ in names:
            (size,) = struct.unpack("!H", _recv_exact(s, 2))
            out.append(parse_reply(_recv_exact(s, size)))
        return out


def _recv_exact(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        assert chunk, "connection closed"
        data += chunk
    return data


def test_udp_answers_each_name_form_from_the_querying_task(server):
    resolver, addr, _ = server
    r = ask_udp(addr, "web", qid=0xBEEF)
    assert (r["id"], r["rcode"], r["addrs"], r["tc"]) == (0xBEEF, dns.NOERROR, [FRONT + "2", BACK + "2"], False)
    assert r["qr"] and r["ra"] and r["rd"] and not r["aa"]
    assert ask_udp(addr, "STACK_DB")["addrs"] == [BACK + "5"]
    assert ask_udp(addr, "STACK_DB")["name"] == "STACK_DB"                 # question echoed as asked
    assert set(ask_udp(addr, "tasks.rr", src=RR_TASK)["addrs"]) == RR_ADDRS
    assert set(ask_udp(addr, "stack_rr", src=RR_TASK)["addrs"]) == RR_ADDRS
    assert ask_udp(addr, "stack_web.2.t2", src=RR_TASK)["addrs"] == [FRONT + "11"]
    assert resolver.answered == 6 and resolver.forwarded == 0


def test_known_name_aaaa_and_empty_service_are_noerror_without_records(server):
    _, addr, _ = server
    r = ask_udp(addr, "web", qtype=dns.T_AAAA)
    assert (r["rcode"], r["addrs"]) == (dns.NOERROR, [])
    r = ask_udp(addr, "tasks.stack_idle")
    assert (r["rcode"], r["addrs"]) == (dns.NOERROR, [])


def test_other_names_are_forwarded_and_the_reply_relayed_with_the_client_id(server, upstreams):
    resolver, addr, forward_to = server
    up = upstreams("127.51.9.1")
    forward_to.append(up.server)
    r = ask_udp(addr, "example.com", qid=0x4242)
    assert (r["id"], r["rcode"], r["addrs"], r["name"]) == (0x4242, dns.NOERROR, ["192.0.2.1"], "example.com")
    r = ask_udp(addr, "stack_db", src=RR_TASK, qid=0x4343)           # a network RR_TASK is not on
    assert (r["id"], r["addrs"]) == (0x4343, ["192.0.2.1"])
    assert [dns.parse_query(d).qname for d in up.seen] == ["example.com", "stack_db"]
    assert struct.unpack("!H", up.seen[0][:2])[0] != 0x4242 or struct.unpack("!H", up.seen[1][:2])[0] != 0x4343
    assert resolver.asked == [T1_FRONT, RR_TASK] and resolver.forwarded == 2


def test_silent_upstream_falls_back_to_the_next_then_servfail(server, upstreams):
    resolver, addr, forward_to = server
    silent, good = upstreams("127.51.9.2", answer=False), upstreams("127.51.9.3")
    forward_to[:] = [silent.server, good.server]
    started = time.monotonic()
    assert ask_udp(addr, "example.org")["addrs"] == ["192.0.2.1"]
    assert 0.25 < time.monotonic() - started < 1.5 and len(silent.seen) == 1
    forward_to[:] = [silent.server]
    r = ask_udp(addr, "example.org", qid=0x99)
    assert (r["id"], r["rcode"], r["addrs"]) == (0x99, dns.SERVFAIL, [])
    forward_to[:] = []
    assert ask_udp(addr, "example.org")["rcode"] == dns.SERVFAIL
    assert resolver.failed == 2


def test_refused_upstream_is_skipped_at_once(server, upstreams):
    _, addr, forward_to = server
    good = upstreams("127.51.9.4")
    forward_to[:] = [f"127.51.9.5:{free_udp_port('127.51.9.5')}", good.server]
    started = time.monotonic()
    assert ask_udp(addr, "example.net")["addrs"] == ["192.0.2.1"]
    assert time.monotonic() - started < 0.25


def test_truncated_upstream_answer_is_asked_again_over_tcp_for_a_tcp_client(server, upstreams):
    _, addr, forward_to = server
    up = upstreams("127.51.9.6", truncate=True)
    forward_to.append(up.server)
    assert ask_udp(addr, "large.example")["tc"]                        # UDP client: relayed as is
    (r,) = ask_tcp(addr, ["large.example"])
    assert (r["id"], len(r["addrs"]), r["tc"]) == (100, 60, False)


def test_failing_upstream_callback_or_forwarding_to_itself_is_servfail(loop):
    async def scenario() -> list[int]:
        port = free_udp_port("127.51.8.2")
        broken = dns.Resolver(lambda src: 1 / 0, timeout=0.2)
        looping = dns.Resolver(lambda src: [f"127.51.8.2:{port}"], timeout=0.2)
        await looping.listen("127.51.8.2", port)
        try:
            replies = [await r.handle(query_bytes("x.example"), T1_FRONT) for r in (broken, looping)]
        finally:
            await looping.close()
        return [reply[3] & 0xF for reply in replies]
    assert on(loop, scenario()) == [dns.SERVFAIL, dns.SERVFAIL]


def test_tcp_queries_pipelined_on_one_connection(server):
    _, addr, _ = server
    web, big = ask_tcp(addr, ["web", "stack_big"])
    assert (web["id"], web["addrs"]) == (100, [FRONT + "2", BACK + "2"])
    assert (big["id"], len(big["addrs"]), big["tc"]) == (101, 40, False)


def test_udp_answer_over_512_bytes_is_truncated_with_tc(server):
    _, addr, _ = server
    r = ask_udp(addr, "stack_big")
    assert r["tc"] and r["rcode"] == dns.NOERROR
    assert len(r["addrs"]) == (512 - 12 - len(b"\x09stack_big\x00") - 4) // 16


def test_garbage_does_not_kill_the_server(server):
    resolver, addr, _ = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((T1_FRONT, 0))
        s.settimeout(2)
        for junk in (b"", b"\x00", b"\xff" * 11, query_bytes("web", flags=dns.QR)):   # dropped
            s.sendto(junk, addr)
        s.sendto(bytes(range(256)) * 3, addr)                               # id 1, 1029 questions
        s.sendto(struct.pack("!6H", 5, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01", addr)  # pointer loop
        replies = [s.recv(512) for _ in range(2)]
    assert [struct.unpack("!H", r[:2])[0] for r in replies] == [1, 5]
    assert all(r[3] & 0xF == dns.FORMERR and r[2] & 0x80 and len(r) == 12 for r in replies)
    assert ask_udp(addr, "web")["addrs"] == [FRONT + "2", BACK + "2"]
    assert resolver.malformed >= 3


def test_set_views_replaces_the_names(server):
    resolver, addr, _ = server
    resolver.set_views([_view("front", FRONT, [_svc("fresh", [], "vip", FRONT + "77",
                                                    [_task("t1", "fresh", 1, T1_FRONT)])])])
    assert ask_udp(addr, "fresh")["addrs"] == [FRONT + "77"]


def test_two_resolvers_share_an_address_and_unlisten_frees_it(loop):
    addr = "127.51.8.1"
    port = free_udp_port(addr)
    a, b = dns.Resolver(lambda src: []), dns.Resolver(lambda src: [])
    on(loop, a.listen(addr, port))
    on(loop, b.listen(addr, port))
    on(loop, a.unlisten(addr))
    on(loop, b.close())
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):               # bindable without SO_REUSEPORT
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((addr, port))
