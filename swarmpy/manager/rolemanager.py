"""The role manager (SwarmKit's name): makes Raft membership follow the nodes' roles.

`node promote` and `node demote` only change a node's `spec.role`.  On the leader this
component then adds the promoted node's Raft address as a member, or removes the
demoted one's, and records the result in the node's `manager_status`; one change at a
time, as Raft requires.  The node itself switches roles when its agent sees the new
role: it gets a certificate for it and restarts its daemon as that role.

A leader never removes itself: it hands leadership over, and the next leader's role
manager finishes the demotion.
"""
from __future__ import annotations

import asyncio

from raft.store import ClusterStore
from swarmpy.config import split_addr
from swarmpy.manager.component import Component


RECHECK_S = 1.0        # a membership change Raft refused (another in flight) is retried this soon


class RoleManager(Component):
    name = "rolemanager"

    def __init__(self, store: ClusterStore, self_raft_addr: str) -> None:
        super().__init__(store)
        self.self_raft_addr = self_raft_addr

    def note(self, events) -> bool:
        return any(e.kind == "nodes" for e in events)

    async def reconcile(self, full: bool) -> None:
        members = self.store.members()
        for node in self.store.list("nodes"):
            role, status = node["spec"].get("role"), node.get("manager_status")
            if role == "manager" and not status and node.get("status", {}).get("cluster_addr"):
                await self._record_promotion(node)
                return          # one membership change per pass; the patch's event brings the next
            if role == "manager" and status and status["raft_addr"] not in members:
                # Added after the manager_status is committed: with two members, committing
                # anything needs the new one running, and it starts only once it sees that status.
                await self.store.add_member(status["raft_addr"], wait=False)
                self.log.info("raft_member_added", node=node["id"], raft_addr=status["raft_addr"])
                asyncio.get_running_loop().call_later(RECHECK_S, self.wake)
                return
            if role == "worker" and status:
                await self._demote(node, status["raft_addr"])
                return

    async def _record_promotion(self, node: dict) -> None:
        host, port = split_addr(node["status"]["cluster_addr"])
        await self.store.commit([{"op": "patch", "kind": "nodes", "id": node["id"], "skip_missing": True,
                                  "set": {"manager_status": {"raft_addr": f"{host}:{port + 1}",
                                                             "reachability": "unknown",
                                                             "addr": f"{host}:{port}"}}}])
        self.log.info("promoted", node=node["id"])

    async def _demote(self, node: dict, raft_addr: str) -> None:
        if raft_addr == self.self_raft_addr:
            await self.store.transfer_leadership()
            self.log.info("leadership_handed_over", reason="this manager is being demoted")
            return
        if raft_addr in self.store.members():
            await self.store.remove_member(raft_addr)
        await self.store.commit([{"op": "patch", "kind": "nodes", "id": node["id"], "skip_missing": True,
                                  "set": {"manager_status": None}}])
        self.log.info("demoted", node=node["id"], raft_addr=raft_addr)
