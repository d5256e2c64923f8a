"""iptables rules for service VIPs and the ingress routing mesh (see docs/networks.md, "netview").

The kernel we run on has no IPVS, so load balancing is done the way kube-proxy's iptables mode
does it: a list of DNAT rules per destination, each guarded by `-m statistic --mode random
--probability 1/(n-i)` (i = 0 .. n-2) and the last one unconditional, which gives every backend
the same 1/n share of new connections.  Only the first packet of a connection traverses the nat
table; conntrack then keeps the connection on the backend it was given.

The module has two halves:

* pure functions that render `iptables-restore` input from a netview (`vip_rules`,
  `ingress_rules`, `removal_rules`): deterministic (services, ports and backends sorted), easy to
  test, and the whole desired state of our chains in one text;
* thin functions that apply it (`apply_in_netns`, `hook`, `unhook`, `sync_vips`,
  `sync_ingress`, `remove_vips`, `remove_ingress`), every subprocess with a timeout, failures
  raised as `RuleError` carrying iptables' stderr.

Why each piece exists
---------------------

Our own chains, never anybody else's.  Every rule we write lives in a chain named SWARMPY-*;
the built-in chains only get one jump into it ("hook"), inserted once and idempotently
(`iptables -C`, then `-I`).  Docker's chains (DOCKER, DOCKER-USER's other rules, and in a
container's namespace DOCKER_OUTPUT / DOCKER_POSTROUTING, which implement the embedded DNS
server at 127.0.0.11) are never flushed or edited.

Atomic rewrites.  `iptables-restore --noflush` leaves every chain alone except those the input
declares: a `:SWARMPY-VIP - [0:0]` line creates the chain when missing and flushes it when
present, and the rules that follow are committed in the same transaction.  So a re-render is
applied in one step, with no moment where a VIP has no rules; and the input always declares
all of our chains of that table (also the ones left empty), so the hooks always have a target.

(a) VIPs, inside a container's network namespace (where docker runs its IPVS too).
    nat `SWARMPY-VIP`, hooked from nat OUTPUT: per VIP and per protocol (tcp, udp, sctp) the
    random-probability DNAT rules to the tasks' addresses.  No port rewriting: a VIP's port is
    the task's port.  The namespace is entered with `nsenter -t PID -n` (PID: any process of the
    container, e.g. its init); nothing else of the container is touched.
    filter `SWARMPY-VIP-EMPTY`, hooked from filter OUTPUT: a VIP without a backend cannot be
    rejected in the nat table (REJECT is a filter-table target), and without a rule its packets
    would go out to an address nobody answers, so a client would hang until its timeout.  The
    REJECT (tcp-reset for tcp, icmp-port-unreachable for the rest) makes it fail fast with
    "connection refused".

(b) The routing mesh, in the node's own network namespace (where the agent runs).
    nat `SWARMPY-INGRESS`, hooked from PREROUTING (traffic from outside) and OUTPUT (traffic
    from the node itself), both with `-m addrtype --dst-type LOCAL`: a connection to ANY address
    of the node on a published port is DNATed to TASKADDR:TARGET on the ingress network, spread
    over the tasks with the probabilities above.
    nat `SWARMPY-INGRESS-POST`, hooked from POSTROUTING: SNAT to the node's own address on the
    ingress network (`view["addr"]`) for exactly the connections our DNAT made (`-o BRIDGE -m
    conntrack --ctstate DNAT` plus the protocol and the original destination port).  Without
    it the task would answer the client directly with its own address as source, which the
    client drops (and a client outside the task's network has no route back at all); with it
    the reply comes back through this node, where conntrack undoes both translations.
    filter `SWARMPY-FORWARD`, hooked at the top of DOCKER-USER (docker creates DOCKER-USER and
    jumps to it first from FORWARD; its own FORWARD rules and its DROP policy would otherwise
    drop new connections into a bridge it does not know): accept what our DNAT sends into the
    bridge and the replies coming out of it.  Where there is no DOCKER-USER (no docker on the
    host) the hook goes to the top of FORWARD instead.
    Node forwarding (`ingress_rules(..., forward_to=...)`): a task on another node whose node
    this one reaches over the hosts' own link (routes.py puts a /32 route to that node's
    ingress address via its underlay address) is not DNATed to the task's overlay address,
    which would cross VXLAN twice, but to its node's ingress address on the published port,
    SNATed to this node's underlay address (`! -o BRIDGE` in SWARMPY-INGRESS-POST, accepted by
    a per-port rule in SWARMPY-FORWARD).  That node takes the connection as addressed to its
    own ingress address and spreads it over its own tasks only (a rule before the general
    spread), so a connection crosses at most one node besides its task's and no VXLAN.  It
    does not SNAT it (a RETURN before the SNAT): the task then sees the forwarding node's
    address and answers by its default route, one of this node's bridges, where conntrack
    undoes the DNAT.  SNATing it too would give the task the same source address for
    connections forwarded by every node and for this node's own, each port reused within the
    task's TIME_WAIT with another TCP timestamp clock (the client's per destination), which
    the task drops as old (PAWS): one-second stalls, seen in bench/overlay.py.  The
    spread stays one rule per task, so every task keeps its 1/n share.  Traffic from the node
    itself (`--src-type LOCAL`, e.g. 127.0.0.1) jumps to `SWARMPY-INGRESS-SELF` first: the
    overlay spread as without forwarding, since a loopback source may not leave by the link.
    filter `SWARMPY-INGRESS-EMPTY`, hooked from INPUT (from outside) and from OUTPUT with
    `--dst-type LOCAL` (from the node itself): a published port whose service has no task in
    the rotation is rejected (tcp-reset / icmp-port-unreachable), so a client fails fast
    instead of hanging or reaching whatever else might listen on that port.

Locally generated and loopback traffic (from the node itself, to a published port):
    * to one of the node's non-loopback addresses (e.g. NODE_IP:PUBLISHED): DNAT in nat OUTPUT,
      SNAT in SWARMPY-INGRESS-POST; works with no further setting.
    * to 127.0.0.1:PUBLISHED (any 127/8 address): the packet keeps its 127.0.0.1 source after
      the DNAT, and the kernel refuses to route a loopback source out of a non-loopback device,
      and to accept a reply for a loopback destination arriving on one, unless route_localnet
      is set.  `sync_ingress` therefore sets `net.ipv4.conf.BRIDGE.route_localnet=1` on the
      ingress bridge only (narrower than `all`; the kernel ORs the two), which is what docker
      does for docker_gwbridge; the SNAT then rewrites the source to the node's ingress address.
      Pass `localnet=False` to leave the sysctl alone (then only non-loopback addresses work
      from the node itself).  `remove_ingress(bridge=...)` sets it back to 0.

Not handled here: ip_forward (docker turns it on; the mesh needs it for traffic from outside),
overlay isolation and multicast (other modules).
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

VIP_CHAIN = "SWARMPY-VIP"                       # nat, container netns
VIP_EMPTY_CHAIN = "SWARMPY-VIP-EMPTY"           # filter, container netns
INGRESS_CHAIN = "SWARMPY-INGRESS"               # nat, node netns
INGRESS_POST_CHAIN = "SWARMPY-INGRESS-POST"     # nat, node netns
INGRESS_SELF_CHAIN = "SWARMPY-INGRESS-SELF"     # nat, node netns: from the node itself
INGRESS_EMPTY_CHAIN = "SWARMPY-INGRESS-EMPTY"   # filter, node netns
FORWARD_CHAIN = "SWARMPY-FORWARD"               # filter, node netns
DOCKER_USER = "DOCKER-USER"

VIP_PROTOCOLS = ("tcp", "udp", "sctp")          # what a VIP balances (docker's IPVS: the same)
PORT_PROTOCOLS = ("tcp", "udp", "sctp")         # what a published port may be
TIMEOUT_S = 30.0                                # for any one iptables / nsenter call

_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")    # IFNAMSIZ - 1, no '/' or whitespace
_COMMENT_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_.:/-]")


class RuleError(RuntimeError):
    """An iptables (or nsenter) call failed; the message carries its stderr."""


# -- rendering (pure) --------------------------------------------------------------------------
def probabilities(n: int) -> list[str | None]:
    """The `--probability` of each of n backends in turn: 1/n, 1/(n-1), ..., 1/2, then None for
    the last one (unconditional), so that each gets 1/n of the new connections."""
    return [f"{1.0 / (n - i):.10f}" if i < n - 1 else None for i in range(n)]


def _ipv4(value, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what}: not an IPv4 address: {value!r}")
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"{what}: not an IPv4 address: {value!r}") from None


def _port(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what}: not a port: {value!r}")
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{what}: not a port: {value!r}") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{what}: not a port: {value!r}")
    return port


def _ifname(value, what: str = "bridge") -> str:
    if not isinstance(value, str) or not _IFNAME_RE.match(value):
        raise ValueError(f"{what}: not an interface name: {value!r}")
    return value


def _comment(service: Mapping) -> list[str]:
    name = _COMMENT_UNSAFE_RE.sub("_", str(service.get("name") or service.get("id") or ""))[:200]
    return ["-m", "comment", "--comment", name] if name else []


def _backends(service: Mapping) -> list[str]:
    """The service's task addresses: unique, sorted numerically; tasks without one skipped."""
    addrs = {_ipv4(t["addr"], f"task {t.get('id', '?')} addr")
             for t in service.get("tasks") or () if t.get("addr")}
    return sorted(addrs, key=lambda a: int(ipaddress.IPv4Address(a)))


def _balance(prefix: list[str], backends: Sequence[str], port: int | None) -> list[str]:
    """One DNAT rule per backend, `prefix` (the match) first, the kube-proxy probabilities."""
    return _spread(prefix, [f"{addr}:{port}" if port else addr for addr in backends])


def _spread(prefix: list[str], destinations: Sequence[str]) -> list[str]:
    """One DNAT rule per destination (ADDR or ADDR:PORT), each taking 1/n of new connections."""
    lines = []
    for dest, p in zip(destinations, probabilities(len(destinations))):
        stat = ["-m", "statistic", "--mode", "random", "--probability", p] if p else []
        lines.append(" ".join(prefix + stat + ["-j", "DNAT", "--to-destination", dest]))
    return lines


def _table(name: str, chains: Iterable[str], rules: Iterable[str]) -> str:
    out = [f"*{name}"] + [f":{c} - [0:0]" for c in chains] + list(rules) + ["COMMIT"]
    return "\n".join(out) + "\n"


def _reject(match: list[str], proto: str | None) -> str:
    how = "tcp-reset" if proto == "tcp" else "icmp-port-unreachable"
    return " ".join(match + ["-j", "REJECT", "--reject-with", how])


def vip_rules(services: list[dict]) -> str:
    """iptables-restore input (nat, then filter) for the VIPs of `services` (netview service
    dicts), to apply with --noflush inside a container's network namespace.

    Only services with endpoint_mode "vip" and a non-empty vip count (dnsrr services have no
    VIP and are skipped).  A VIP with backends gets per protocol the random DNAT rules in
    SWARMPY-VIP; a VIP without any gets REJECT rules in SWARMPY-VIP-EMPTY.  Raises ValueError on
    a malformed address or on two services sharing one VIP."""
    chosen: dict[str, Mapping] = {}
    for svc in services:
        if svc.get("endpoint_mode", "vip") != "vip" or not svc.get("vip"):
            continue
        vip = _ipv4(svc["vip"], f"service {svc.get('name') or svc.get('id')} vip")
        if vip in chosen:
            raise ValueError(f"VIP {vip} is used by two services: "
                             f"{chosen[vip].get('name')!r} and {svc.get('name')!r}")
        chosen[vip] = svc
    nat, empty = [], []
    for vip in sorted(chosen, key=lambda a: int(ipaddress.IPv4Address(a))):
        svc = chosen[vip]
        backends = _backends(svc)
        match = ["-A", VIP_CHAIN, "-d", f"{vip}/32"]
        if backends:
            for proto in VIP_PROTOCOLS:
                nat += _balance(match + ["-p", proto] + _comment(svc), backends, None)
        else:
            ematch = ["-A", VIP_EMPTY_CHAIN, "-d", f"{vip}/32"]
            empty.append(_reject(ematch + ["-p", "tcp"] + _comment(svc), "tcp"))
            empty.append(_reject(ematch + _comment(svc), None))
    return _table("nat", [VIP_CHAIN], nat) + _table("filter", [VIP_EMPTY_CHAIN], empty)


@dataclass(frozen=True)
class _Port:
    protocol: str
    published: int
    target: int
    backends: tuple[str, ...]
    service: Mapping
    nodes: tuple[str, ...]          # the underlay address of each backend's node ("" unknown)


def ingress_ports(view: Mapping) -> list[_Port]:
    """The ingress-mode published ports of the view's services, sorted by (protocol, published).
    Host-mode ports and ports not given a published number yet are skipped; a (protocol,
    published) pair claimed twice raises ValueError."""
    seen: dict[tuple[str, int], _Port] = {}
    for svc in view.get("services") or ():
        backends = None
        for p in svc.get("ports") or ():
            if (p.get("mode") or "ingress") != "ingress" or not p.get("published"):
                continue
            proto = str(p.get("protocol") or "tcp").lower()
            if proto not in PORT_PROTOCOLS:
                raise ValueError(f"service {svc.get('name')!r}: protocol {proto!r} is not one of "
                                 f"{', '.join(PORT_PROTOCOLS)}")
            published = _port(p["published"], f"service {svc.get('name')!r} published port")
            target = _port(p.get("target"), f"service {svc.get('name')!r} target port")
            if backends is None:
                backends = tuple(_backends(svc))
                underlay = {t.get("addr"): str(t.get("underlay") or "") for t in svc.get("tasks") or ()}
                nodes = tuple(underlay.get(a, "") for a in backends)
            key = (proto, published)
            if key in seen:
                raise ValueError(f"{proto} port {published} is published by two services: "
                                 f"{seen[key].service.get('name')!r} and {svc.get('name')!r}")
            seen[key] = _Port(proto, published, target, backends, svc, nodes)
    return [seen[k] for k in sorted(seen)]


def ingress_rules(view: dict, bridge: str, forward_to: Mapping[str, str] | None = None,
                  underlay: str = "") -> tuple[str, str]:
    """(nat text, filter text): iptables-restore input for the routing mesh of the ingress
    network `view` (its `addr`: this node's address on it), in the node's network namespace;
    `bridge`: the ingress network's bridge on this node.  `underlay`: this node's address
    towards the others when node forwarding is on ("" for nodes sharing one engine); then
    other nodes may send connections here, and `forward_to` (another node's underlay address
    -> its ingress address, for the nodes routes.py reaches over the link) says where this
    node sends them (module doc).  Without either, every task is reached at its overlay address."""
    bridge = _ifname(bridge)
    node_addr = _ipv4(view.get("addr"), "ingress view addr")
    forward_to = {k: _ipv4(v, f"ingress address of node {k}") for k, v in (forward_to or {}).items()}
    if forward_to or underlay:
        underlay = _ipv4(underlay, "this node's underlay address")
    dnat, snat, forward, empty = [], [], [], []
    own = [f"-A {INGRESS_CHAIN} -m addrtype --src-type LOCAL -j {INGRESS_SELF_CHAIN}"] if forward_to else []
    for port in ingress_ports(view):
        proto_match = ["-p", port.protocol, "-m", port.protocol, "--dport", str(port.published)]
        comment = _comment(port.service)
        if not port.backends:
            empty.append(_reject(["-A", INGRESS_EMPTY_CHAIN] + proto_match + comment, port.protocol))
            continue
        dnated = ["-p", port.protocol, "-m", "conntrack", "--ctstate", "DNAT"]
        to_port = ["--ctorigdstport", str(port.published)] + comment
        post = dnated + to_port
        local = [a for a, n in zip(port.backends, port.nodes) if underlay and n == underlay]
        if local:
            # Sent here by another node (to this node's ingress address): this node's own tasks
            # only, and not SNATed, so that the task sees that node's address, one per node
            # that forwards (module doc); its reply goes out by its default route, which is
            # one of this node's bridges.
            dnat += _balance(["-A", INGRESS_CHAIN, "-d", f"{node_addr}/32"] + proto_match + comment,
                             local, port.target)
            snat.append(" ".join(["-A", INGRESS_POST_CHAIN, "-o", bridge] + dnated
                                 + ["--ctorigdst", f"{node_addr}/32", "!", "--ctorigsrc", _subnet(view)]
                                 + to_port + ["-j", "RETURN"]))
        snat.append(" ".join(["-A", INGRESS_POST_CHAIN, "-o", bridge] + post
                             + ["-j", "SNAT", "--to-source", node_addr]))
        dests = [f"{forward_to[n]}:{port.published}" if n in forward_to else f"{a}:{port.target}"
                 for a, n in zip(port.backends, port.nodes)]
        dnat += _spread(["-A", INGRESS_CHAIN] + proto_match + comment, dests)
        if forward_to:
            own += _balance(["-A", INGRESS_SELF_CHAIN] + proto_match + comment, port.backends, port.target)
        if any(n in forward_to for n in port.nodes):
            snat.append(" ".join(["-A", INGRESS_POST_CHAIN, "!", "-o", bridge] + post
                                 + ["-j", "SNAT", "--to-source", underlay]))
            forward.append(" ".join(["-A", FORWARD_CHAIN] + post + ["-j", "ACCEPT"]))
    forward = [
        f"-A {FORWARD_CHAIN} -o {bridge} -m conntrack --ctstate DNAT -j ACCEPT",
        f"-A {FORWARD_CHAIN} -i {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ] + forward
    nat = _table("nat", [INGRESS_CHAIN, INGRESS_POST_CHAIN, INGRESS_SELF_CHAIN], own + dnat + snat)
    filt = _table("filter", [FORWARD_CHAIN, INGRESS_EMPTY_CHAIN], forward + empty)
    return nat, filt


def _subnet(view: Mapping) -> str:
    try:
        return str(ipaddress.IPv4Network(str(view.get("subnet")), strict=False))
    except ValueError:
        raise ValueError(f"ingress view subnet: {view.get('subnet')!r} is not an IPv4 network") from None


def removal_rules(chains: Mapping[str, Sequence[str]]) -> str:
    """iptables-restore --noflush input that deletes `chains` ({table: [chain, ...]}): each is
    declared first (created if missing, flushed if present), then deleted, so this works whether
    or not the chain exists.  The hooks into them must be gone first."""
    out = []
    for table, names in chains.items():
        out.append(_table(table, names, [f"-X {c}" for c in names]))
    return "".join(out)


# -- hooks: the jumps from built-in (or docker's) chains into ours -----------------------------
@dataclass(frozen=True)
class Hook:
    table: str
    chain: str            # the chain the jump sits in
    rule: tuple[str, ...]  # the rule spec, ending in `-j OUR-CHAIN`


_LOCAL = ("-m", "addrtype", "--dst-type", "LOCAL")
VIP_HOOKS = (
    Hook("nat", "OUTPUT", ("-j", VIP_CHAIN)),
    Hook("filter", "OUTPUT", ("-j", VIP_EMPTY_CHAIN)),
)
INGRESS_HOOKS = (
    Hook("nat", "PREROUTING", _LOCAL + ("-j", INGRESS_CHAIN)),
    Hook("nat", "OUTPUT", _LOCAL + ("-j", INGRESS_CHAIN)),
    Hook("nat", "POSTROUTING", ("-j", INGRESS_POST_CHAIN)),
    Hook("filter", "INPUT", ("-j", INGRESS_EMPTY_CHAIN)),
    Hook("filter", "OUTPUT", _LOCAL + ("-j", INGRESS_EMPTY_CHAIN)),
)
# SWARMPY-FORWARD goes into DOCKER-USER when docker made one, else into FORWARD (see module doc).
FORWARD_HOOKS = (
    Hook("filter", DOCKER_USER, ("-j", FORWARD_CHAIN)),
    Hook("filter", "FORWARD", ("-j", FORWARD_CHAIN)),
)


# -- applying ----------------------------------------------------------------------------------
def _env() -> dict[str, str]:
    """PATH with the sbin dirs, where iptables lives, in case the agent's PATH lacks them."""
    env = dict(os.environ)
    parts = env.get("PATH", "/usr/bin:/bin").split(":")
    env["PATH"] = ":".join(parts + [p for p in _SBIN if p not in parts])
    return env


def _argv(pid: int | None, argv: Sequence[str]) -> list[str]:
    if pid is None:
        return list(argv)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ValueError(f"not a pid: {pid!r}")
    return ["nsenter", f"--target={pid}", "--net", "--"] + list(argv)


def _run(pid: int | None, argv: Sequence[str], input: str | None = None,
         timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    full = _argv(pid, argv)
    env = _env()
    if shutil.which(full[0], path=env["PATH"]) is None:
        raise RuleError(f"{full[0]}: not installed")
    try:
        return subprocess.run(full, input=input, capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RuleError(f"{' '.join(full)}: no answer in {timeout:.0f}s") from None
    except OSError as exc:
        raise RuleError(f"{' '.join(full)}: {exc}") from None


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout or "").strip()
        raise RuleError(f"{what} failed (exit {proc.returncode}): {err}")


def apply_in_netns(pid: int | None, text: str, timeout: float = TIMEOUT_S) -> None:
    """`iptables-restore -w --noflush` of `text` in the network namespace of process `pid`
    (via nsenter), or in our own when pid is None.  RuleError with iptables' stderr on failure."""
    proc = _run(pid, ["iptables-restore", "-w", "--noflush"], input=text, timeout=timeout)
    where = f" in the netns of pid {pid}" if pid is not None else ""
    _check(proc, f"iptables-restore{where}")


def _iptables(pid: int | None, table: str, *args: str) -> subprocess.CompletedProcess:
    return _run(pid, ["iptables", "-w", "-t", table, *args])


def chain_exists(table: str, chain: str, pid: int | None = None) -> bool:
    return _iptables(pid, table, "-n", "-L", chain).returncode == 0


def has_rule(table: str, chain: str, rule: Sequence[str], pid: int | None = None) -> bool:
    """`iptables -C`: whether `rule` is in `chain` (False also when the chain is missing)."""
    return _iptables(pid, table, "-C", chain, *rule).returncode == 0


def hook(table: str, chain: str, rule: Sequence[str], pid: int | None = None,
         position: int = 1) -> bool:
    """Insert `rule` (e.g. ("-j", "SWARMPY-VIP")) at `position` of `chain` unless an identical
    rule is already there (`iptables -C`).  True when it inserted one.  RuleError on failure
    (e.g. `chain` or the jump target missing)."""
    if has_rule(table, chain, rule, pid):
        return False
    proc = _iptables(pid, table, "-I", chain, str(position), *rule)
    _check(proc, f"iptables -t {table} -I {chain} {' '.join(rule)}")
    return True


def unhook(table: str, chain: str, rule: Sequence[str], pid: int | None = None) -> int:
    """Delete every copy of `rule` from `chain`; missing rule, chain or target: nothing to do.
    Returns how many it deleted."""
    deleted = 0
    while deleted < 100 and has_rule(table, chain, rule, pid):
        _check(_iptables(pid, table, "-D", chain, *rule),
               f"iptables -t {table} -D {chain} {' '.join(rule)}")
        deleted += 1
    return deleted


def _hook_all(hooks: Iterable[Hook], pid: int | None) -> None:
    for h in hooks:
        hook(h.table, h.chain, h.rule, pid)


def set_conf(ifname: str, key: str, value: str, pid: int | None = None) -> None:
    """net.ipv4.conf.IFNAME.KEY in the netns of `pid` (or ours).  /proc/sys/net shows the
    namespace of the process that opens it, so entering only the netns is enough."""
    path = f"/proc/sys/net/ipv4/conf/{_ifname(ifname, 'interface')}/{key}"
    if pid is None:
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as exc:
            raise RuleError(f"writing {path}: {exc}") from None
        return
    proc = _run(pid, ["sh", "-c", 'printf %s "$1" > "$2"', "sh", value, path])
    _check(proc, f"writing {path} in the netns of pid {pid}")


def set_route_localnet(bridge: str, on: bool, pid: int | None = None) -> None:
    """net.ipv4.conf.BRIDGE.route_localnet in the netns of `pid` (or ours)."""
    set_conf(bridge, "route_localnet", "1" if on else "0", pid)


def sync_vips(pid: int | None, services: list[dict]) -> None:
    """Make the VIP rules in the netns of `pid` (a container's process) match `services`:
    one atomic iptables-restore, then the hooks (idempotent)."""
    apply_in_netns(pid, vip_rules(services))
    _hook_all(VIP_HOOKS, pid)


def remove_vips(pid: int | None) -> None:
    """Take our hooks and chains out of the netns of `pid` again."""
    for h in VIP_HOOKS:
        unhook(h.table, h.chain, h.rule, pid)
    apply_in_netns(pid, removal_rules({"nat": [VIP_CHAIN], "filter": [VIP_EMPTY_CHAIN]}))


def sync_ingress(view: dict, bridge: str, pid: int | None = None, localnet: bool = True,
                 forward_to: Mapping[str, str] | None = None, underlay: str = "") -> None:
    """Make the routing mesh in the node's netns (ours when pid is None: the agent runs in it)
    match the ingress `view`: one atomic iptables-restore of both tables, the hooks
    (idempotent), and route_localnet on `bridge` for 127.0.0.1:PUBLISHED unless localnet=False.
    `forward_to` and `underlay`: node forwarding, as in `ingress_rules`."""
    nat, filt = ingress_rules(view, bridge, forward_to, underlay)
    apply_in_netns(pid, nat + filt)
    _hook_all(INGRESS_HOOKS, pid)
    if chain_exists("filter", DOCKER_USER, pid):
        unhook("filter", "FORWARD", ("-j", FORWARD_CHAIN), pid)   # docker came after us
        hook("filter", DOCKER_USER, ("-j", FORWARD_CHAIN), pid)
    else:
        hook("filter", "FORWARD", ("-j", FORWARD_CHAIN), pid)
    if localnet:
        set_route_localnet(bridge, True, pid)


def ingress_hooked(pid: int | None = None) -> bool:
    """Whether the mesh's first hook (nat PREROUTING -> SWARMPY-INGRESS) is in place: a
    firewall reload or `iptables -t nat -F` takes it away with the rest."""
    h = INGRESS_HOOKS[0]
    return has_rule(h.table, h.chain, h.rule, pid)


def remove_ingress(pid: int | None = None, bridge: str | None = None) -> None:
    """Delete our mesh hooks and chains (nat and filter) from the node's netns, leaving its
    rules as they were before `sync_ingress`; with `bridge`, also set its route_localnet back
    to 0 (skipped when the bridge is gone)."""
    for h in INGRESS_HOOKS + FORWARD_HOOKS:
        unhook(h.table, h.chain, h.rule, pid)
    apply_in_netns(pid, removal_rules({"nat": [INGRESS_CHAIN, INGRESS_POST_CHAIN, INGRESS_SELF_CHAIN],
                                       "filter": [FORWARD_CHAIN, INGRESS_EMPTY_CHAIN]}))
    if bridge is not None:
        try:
            set_route_localnet(bridge, False, pid)
        except RuleError:
            pass            # best effort: the bridge (and so its sysctl) may be gone already
