"""Promotion checks that the node's Raft port would speak the managers' wire
(raft/wire.py): ControlAPI on a real single-node store."""
from __future__ import annotations

import asyncio

import pytest

from raft import wire
from raft.errors import ConflictError
from raft.store import ClusterStore, derive_raft_password
from swarmpy.manager.controlapi import ControlAPI

pytestmark = pytest.mark.timeout(30)


def worker_node(node_id: str, description: dict) -> dict:
    return {"id": node_id, "created_at": 0, "description": description,
            "spec": {"role": "worker", "availability": "active", "labels": {}},
            "status": {"state": "ready", "message": "", "addr": "127.0.0.1"}}


def test_only_a_node_with_the_managers_raft_wire_can_be_promoted(tmp_path, free_port):
    async def main():
        store = ClusterStore(f"127.0.0.1:{free_port}", [], str(tmp_path), derive_raft_password("promote"))
        try:
            await store.wait_ready(timeout=10)
            control = ControlAPI(store)
            await store.commit([{"op": "create", "kind": "nodes", "obj": worker_node("oldnode", {"hostname": "old"})},
                                {"op": "create", "kind": "nodes",
                                 "obj": worker_node("newnode", {"hostname": "new", "raft_wire": wire.VERSION})}])
            old = store.get("nodes", "oldnode")
            with pytest.raises(ConflictError, match="Raft wire is version 1 .* upgrade swarmpy on it"):
                await control.update_node("oldnode", old["version"], {"role": "manager"})
            assert store.get("nodes", "oldnode")["spec"]["role"] == "worker"      # nothing stored

            new = store.get("nodes", "newnode")
            promoted = await control.update_node("newnode", new["version"], {"role": "manager"})
            assert promoted["spec"]["role"] == "manager"
        finally:
            store.close()

    asyncio.run(main())
