"""The CA server: what a node without a certificate may ask a manager, on the cluster port.

- `ca`: the cluster's root certificate.  Public; the joining node trusts it only if its
  digest matches the one in the join token.
- `join`: a join token and a certificate request.  The leader names the node, signs its
  certificate with the role the token grants, stores the node, and for a manager adds
  its Raft address as a member (one membership change at a time).

A manager joining also receives the cluster secret its Raft password derives from;
a worker never does.  Followers answer `join` with the leader's address.
"""
from __future__ import annotations

import asyncio
import hmac

from raft import wire
from raft.errors import StoreError
from raft.store import ClusterStore
from swarmpy import ca, log
from swarmpy.config import NodeConfig, raft_to_cluster_addr
from swarmpy.models import new_id, now
from swarmpy.rpc import Channel

INVALID_TOKEN = ("rpc error: code = InvalidArgument desc = A valid join token is necessary to join "
                 "this cluster")


class JoinRefused(Exception):
    pass


def root_ca(store: ClusterStore) -> ca.KeyPair:
    root = (store.get("cluster", "default") or {})["root_ca"]
    return ca.KeyPair(root["cert"].encode(), root["key"].encode())


def manager_addrs(store: ClusterStore) -> list[str]:
    return sorted(n["manager_status"]["addr"] for n in store.list("nodes")
                  if n["spec"].get("role") == "manager" and n.get("manager_status"))


class CAServer:
    def __init__(self, store: ClusterStore, config: NodeConfig) -> None:
        self.store = store
        self.config = config
        self.log = log.get("caserver")
        self._membership = asyncio.Lock()

    async def handle(self, channel: Channel, request: dict) -> None:
        if request["type"] == "ca":
            await channel.send({"type": "ca", "cert": root_ca(self.store).cert_pem.decode()})
            return
        if not self.store.is_leader():
            leader = self.store.leader()
            await channel.send({"type": "error", "error": "this manager is not the leader",
                                "leader": raft_to_cluster_addr(leader) if leader else None})
            return
        try:
            await self._join(channel, request)
        except (JoinRefused, StoreError) as exc:
            await channel.send({"type": "error", "error": str(exc)})

    def _role_for(self, token: str) -> str:
        tokens = (self.store.get("cluster", "default") or {}).get("join_tokens", {})
        for role, expected in tokens.items():
            if hmac.compare_digest(str(token or ""), expected):
                return role
        raise JoinRefused(INVALID_TOKEN)

    async def _join(self, channel: Channel, request: dict) -> None:
        role = self._role_for(request.get("token"))
        raft_wire = wire.announced_version(request)
        if role == "manager":
            _check_raft_wire(raft_wire)
        node_id = new_id()
        try:
            cert = ca.sign_csr(root_ca(self.store), request["csr"].encode(), node_id, role)
        except (KeyError, ValueError, AttributeError) as exc:
            raise JoinRefused(f"invalid certificate request: {exc}") from None
        addr = f"{request['addr']}:{int(request['port'])}"
        node = {"id": node_id, "created_at": now(),
                "spec": {"role": role, "availability": "active", "labels": request.get("labels") or {}},
                "description": {"hostname": request.get("hostname", ""), "raft_wire": raft_wire},
                "status": {"state": "unknown", "message": "joining", "addr": request["addr"],
                           "timestamp": now()}}
        reply = {"type": "joined", "node_id": node_id, "role": role, "cert": cert.decode(),
                 "cluster_id": self.config.cluster_id, "heartbeat_period": self.config.heartbeat_period}
        if role == "worker":
            await self.store.commit([{"op": "create", "kind": "nodes", "obj": node}])
            await channel.send(dict(reply, managers=manager_addrs(self.store)))
            self.log.info("node_joined", node=node_id, role=role, addr=addr)
            return
        async with self._membership:
            await self._join_manager(channel, node, reply, addr)

    async def _join_manager(self, channel: Channel, node: dict, reply: dict, addr: str) -> None:
        host, port = addr.rsplit(":", 1)
        raft_addr = f"{host}:{int(port) + 1}"
        if raft_addr in self.store.members():
            raise JoinRefused(f"a manager with Raft address {raft_addr} is already a member; "
                              f"remove it first (swarmpy node rm) or use another --advertise-addr")
        node["manager_status"] = {"raft_addr": raft_addr, "addr": addr, "reachability": "unknown"}
        await self.store.commit([{"op": "create", "kind": "nodes", "obj": node}])
        peers = self.store.members()
        # Raft's order for a new member: the leader adds it, then it starts with every peer.
        added = asyncio.ensure_future(self.store.add_member(raft_addr))
        await asyncio.sleep(0)
        await channel.send(dict(reply, managers=manager_addrs(self.store), raft_peers=peers,
                                cluster_secret=self.config.cluster_secret))
        self.log.info("node_joined", node=node["id"], role="manager", addr=addr)
        try:
            await added      # the next membership change waits for this one
        except StoreError as exc:
            self.log.warning("raft_member_not_confirmed", node=node["id"], error=str(exc))


def _check_raft_wire(theirs: int) -> None:
    """A manager that cannot read the others' Raft messages would still count as a voter:
    the cluster would lose a member's worth of fault tolerance without a word."""
    if theirs != wire.VERSION:
        raise JoinRefused(f"this node's swarmpy speaks Raft wire version {theirs} and the cluster's managers "
                          f"speak version {wire.VERSION}: run the same swarmpy on every manager "
                          "(upgrade this node first), or join it as a worker")
