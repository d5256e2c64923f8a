"""A service update writes only the spec fields that changed (controlapi.respec_op), and
stores exactly the spec the user sent, whatever this manager's copy was."""
from __future__ import annotations

import asyncio
import json

import pytest

from raft.store import ClusterStore, derive_raft_password
from raft.tables import Tables
from swarmpy.manager.controlapi import ControlAPI, respec_op
from swarmpy.models import ServiceSpec, new_service, to_dict
from swarmpy.spec import parse_service_spec_dict

pytestmark = pytest.mark.timeout(30)


def stored_service(tables: Tables, **fields) -> dict:
    svc = new_service(ServiceSpec(name="web", image="busybox", **fields))
    result, _ = tables.apply([{"op": "create", "kind": "services", "obj": svc}])
    assert result["ok"], result
    return tables.get("services", svc["id"])


def apply(tables: Tables, op: dict) -> dict:
    result, _ = tables.apply([op])
    assert result["ok"], result
    return tables.get("services", op["id"])


def exact(value) -> str:
    return json.dumps(value, sort_keys=True)     # types too: 10 and 10.0 differ here


def test_an_update_writes_the_changed_fields_and_stores_the_whole_new_spec():
    tables = Tables()
    svc = stored_service(tables)
    new = parse_service_spec_dict({"name": "web", "image": "busybox", "env": ["A=1"], "replicas": 3})
    op = respec_op(type("Store", (), {"tables": tables}), svc, new)
    assert set(op["set"]) == {"spec.env", "spec.replicas", "updated_at"}
    after = apply(tables, op)
    assert exact(after["spec"]) == exact(new)
    assert exact(after["previous_spec"]) == exact(svc["spec"])


def test_a_field_of_another_type_only_is_written_too():
    tables = Tables()
    svc = stored_service(tables, stop_grace_period=10)          # an int, as an older swarmpy kept it
    new = dict(svc["spec"], stop_grace_period=10.0)
    op = respec_op(type("Store", (), {"tables": tables}), svc, new)
    assert set(op["set"]) == {"spec.stop_grace_period", "updated_at"}
    assert exact(apply(tables, op)["spec"]) == exact(new)


def test_a_stored_field_the_new_spec_lacks_makes_the_update_write_the_whole_spec():
    tables = Tables()
    svc = stored_service(tables)
    result, _ = tables.apply([{"op": "patch", "kind": "services", "id": svc["id"],
                               "set": {"spec.retired_field": 1}}])
    svc = tables.get("services", svc["id"])
    new = to_dict(ServiceSpec(name="web", image="busybox", replicas=2))
    op = respec_op(type("Store", (), {"tables": tables}), svc, new)
    assert "spec" in op["set"]
    after = apply(tables, op)
    assert "retired_field" not in after["spec"] and exact(after["spec"]) == exact(new)


BODY = {"name": "web", "image": "busybox", "replicas": 0}


def with_one_manager(tmp_path, port: int, scenario) -> None:
    """Run `scenario(store, control)` on a one-member Raft store and its control API."""
    async def main():
        store = ClusterStore(f"127.0.0.1:{port}", [], str(tmp_path), derive_raft_password("unit"))
        try:
            await store.wait_ready(timeout=10)
            await scenario(store, ControlAPI(store))
        finally:
            store.close()
    asyncio.run(main())


def test_an_update_read_at_a_newer_version_than_this_managers_copy_stores_the_spec_sent(tmp_path, free_port):
    """A client that read the service from the leader may send its update to a follower still
    one write behind: a patch of the fields that differ from the follower's copy would miss
    a field changed meanwhile. That update carries the whole spec instead."""
    async def scenario(store, control):
        created = await control.create_service(BODY)
        behind = store.get("services", created["id"])                 # this manager's copy, v1
        v2 = (await control.update_service(created["id"], behind["version"], dict(BODY, env=["A=1"])))["version"]
        # The client read v2 (env A=1) and sends it back with env removed, replicas 2,
        # to a manager whose copy is still v1 (env empty, as in the new spec).
        control.service = lambda ref: behind
        await control.update_service(created["id"], v2, dict(BODY, replicas=2))
        assert store.get("services", created["id"])["spec"]["env"] == []
        assert store.get("services", created["id"])["spec"]["replicas"] == 2
    with_one_manager(tmp_path, free_port, scenario)


def test_a_rollback_swaps_the_stored_specs_and_a_second_one_swaps_them_back(tmp_path, free_port):
    async def scenario(store, control):
        created = await control.create_service(BODY)
        await control.update_service(created["id"], created["version"], dict(BODY, env=["A=1"]))
        updated = store.get("services", created["id"])
        rolled = await control.rollback_service("web")
        assert rolled["spec"] == updated["previous_spec"] and rolled["previous_spec"] == updated["spec"]
        assert rolled["spec"]["env"] == [] and rolled["version"] > updated["version"]
        assert rolled["update_status"]["state"] == "rollback_started"
        again = await control.rollback_service("web")
        assert again["spec"] == updated["spec"] and again["previous_spec"] == updated["previous_spec"]
    with_one_manager(tmp_path, free_port, scenario)
