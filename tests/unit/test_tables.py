"""raft/tables.py: the transaction apply function every replica runs."""
from __future__ import annotations

import copy

import pytest

from raft.tables import Event, Tables


def svc(obj_id: str, name: str | None, **extra) -> dict:
    obj = {"id": obj_id, "spec": {} if name is None else {"name": name}}
    obj.update(extra)
    return obj


def task(obj_id: str, service_id: str = "s1", node_id: str | None = None, state: int = 0, **extra) -> dict:
    obj = {"id": obj_id, "service_id": service_id, "node_id": node_id, "desired_state": 512,
           "status": {"state": state, "message": "created"}}
    obj.update(extra)
    return obj


def create(kind: str, obj: dict) -> dict:
    return {"op": "create", "kind": kind, "obj": obj}


def ok(tables: Tables, ops: list[dict]) -> tuple[dict, list[Event]]:
    result, events = tables.apply(ops)
    assert result["ok"], result
    return result, events


def failed(tables: Tables, ops: list[dict], code: str) -> dict:
    before = snapshot(tables)
    result, events = tables.apply(ops)
    assert result["ok"] is False
    assert result["code"] == code, result
    assert events == []
    assert snapshot(tables) == before, "a rejected transaction must not write anything"
    return result


def snapshot(tables: Tables) -> tuple:
    return (copy.deepcopy(tables.objects), copy.deepcopy(tables.names), tables.index,
            copy.deepcopy(tables.tasks_by_service), copy.deepcopy(tables.tasks_by_node))


def check_task_indexes(tables: Tables) -> None:
    """The secondary indexes must equal what a scan of the task table gives."""
    by_service: dict[str, set] = {}
    by_node: dict[str, set] = {}
    for t in tables.objects["tasks"].values():
        if t.get("service_id"):
            by_service.setdefault(t["service_id"], set()).add(t["id"])
        if t.get("node_id"):
            by_node.setdefault(t["node_id"], set()).add(t["id"])
    assert tables.tasks_by_service == by_service
    assert tables.tasks_by_node == by_node


# -- create ------------------------------------------------------------------------------

def test_create_sets_version_to_index_and_emits_event():
    t = Tables()
    result, events = ok(t, [create("services", svc("a", "web"))])
    assert result == {"ok": True, "index": 1, "versions": [1]}
    assert t.index == 1
    assert t.get("services", "a")["version"] == 1
    assert t.by_name("services", "web")["id"] == "a"
    assert events == [Event("create", "services", t.get("services", "a"), 1)]


def test_versions_follow_index_across_transactions():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    result, _ = ok(t, [create("services", svc("b", "db")), create("nodes", {"id": "n1"})])
    assert result["index"] == 2
    assert result["versions"] == [2, 2]
    result, _ = ok(t, [{"op": "patch", "kind": "services", "id": "a", "set": {"x": 1}}])
    assert result == {"ok": True, "index": 3, "versions": [3]}
    assert t.get("services", "a")["version"] == 3
    assert t.get("services", "b")["version"] == 2


def test_create_copies_the_object():
    t = Tables()
    obj = svc("a", "web")
    ok(t, [create("services", obj)])
    obj["spec"]["name"] = "changed"
    assert t.get("services", "a")["spec"]["name"] == "web"
    assert "version" not in obj


def test_create_existing_id_is_rejected():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    res = failed(t, [create("services", svc("a", "other"))], "exists")
    assert "already exists" in res["error"]


def test_unknown_kind_is_rejected():
    t = Tables()
    res = failed(t, [create("gadgets", {"id": "x"})], "store_error")
    assert "unknown kind" in res["error"]


def test_unknown_operation_is_rejected():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    res = failed(t, [{"op": "upsert", "kind": "services", "id": "a"}], "store_error")
    assert "unknown operation" in res["error"]


# -- name uniqueness -------------------------------------------------------------------------

def test_duplicate_name_is_rejected():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    res = failed(t, [create("services", svc("b", "web"))], "exists")
    assert "web" in res["error"]


def test_duplicate_name_within_one_transaction_is_rejected():
    t = Tables()
    failed(t, [create("services", svc("a", "web")), create("services", svc("b", "web"))], "exists")
    assert t.list("services") == []
    assert t.index == 0


def test_same_name_in_different_kinds_is_allowed():
    t = Tables()
    ok(t, [create("services", svc("a", "x")), create("networks", svc("n", "x")),
           create("secrets", svc("s", "x")), create("configs", svc("c", "x"))])
    assert t.by_name("services", "x")["id"] == "a"
    assert t.by_name("networks", "x")["id"] == "n"


def test_unnamed_kinds_do_not_index_names():
    t = Tables()
    ok(t, [create("nodes", svc("n1", "same")), create("nodes", svc("n2", "same"))])
    assert len(t.list("nodes")) == 2


def test_rename_frees_the_old_name():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    ok(t, [{"op": "patch", "kind": "services", "id": "a", "set": {"spec.name": "web2"}}])
    assert t.by_name("services", "web") is None
    assert t.by_name("services", "web2")["id"] == "a"
    ok(t, [create("services", svc("b", "web"))])
    assert t.by_name("services", "web")["id"] == "b"


def test_rename_to_a_taken_name_is_rejected():
    t = Tables()
    ok(t, [create("services", svc("a", "web")), create("services", svc("b", "db"))])
    failed(t, [{"op": "update", "kind": "services", "obj": svc("b", "web")}], "exists")
    assert t.by_name("services", "db")["id"] == "b"


def test_name_freed_and_taken_in_one_transaction():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    ok(t, [{"op": "update", "kind": "services", "obj": svc("a", "web-old")},
           create("services", svc("b", "web"))])
    assert t.by_name("services", "web")["id"] == "b"
    assert t.by_name("services", "web-old")["id"] == "a"


def test_delete_then_recreate_name_in_one_transaction():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    ok(t, [{"op": "delete", "kind": "services", "id": "a"}, create("services", svc("b", "web"))])
    assert t.get("services", "a") is None
    assert t.by_name("services", "web")["id"] == "b"


def test_delete_frees_the_name():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    ok(t, [{"op": "delete", "kind": "services", "id": "a"}])
    assert t.by_name("services", "web") is None
    assert t.names["services"] == {}


# -- update / optimistic concurrency -----------------------------------------------------

def test_update_replaces_whole_object():
    t = Tables()
    ok(t, [create("services", svc("a", "web", extra="gone"))])
    ok(t, [{"op": "update", "kind": "services", "obj": svc("a", "web", other=1)}])
    obj = t.get("services", "a")
    assert "extra" not in obj and obj["other"] == 1 and obj["version"] == 2


def test_update_with_current_version_succeeds():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    ok(t, [{"op": "update", "kind": "services", "obj": svc("a", "web", n=1), "expect": 1}])
    assert t.get("services", "a")["n"] == 1


def test_update_with_stale_version_conflicts():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    ok(t, [{"op": "patch", "kind": "services", "id": "a", "set": {"n": 1}}])
    res = failed(t, [{"op": "update", "kind": "services", "obj": svc("a", "web", n=2), "expect": 1}],
                 "conflict")
    assert "update out of sequence" in res["error"]
    assert t.get("services", "a")["n"] == 1


def test_patch_and_delete_honour_expect():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    failed(t, [{"op": "patch", "kind": "services", "id": "a", "set": {"n": 1}, "expect": 7}], "conflict")
    failed(t, [{"op": "delete", "kind": "services", "id": "a", "expect": 7}], "conflict")
    ok(t, [{"op": "delete", "kind": "services", "id": "a", "expect": 1}])
    assert t.get("services", "a") is None


def test_update_missing_is_not_found():
    t = Tables()
    res = failed(t, [{"op": "update", "kind": "services", "obj": svc("a", "web")}], "not_found")
    assert "not found" in res["error"]


def test_expect_sees_versions_staged_earlier_in_the_transaction():
    # In one transaction the object is at its pre-transaction version until written.
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    ok(t, [{"op": "patch", "kind": "services", "id": "a", "set": {"n": 1}, "expect": 1},
           {"op": "patch", "kind": "services", "id": "a", "set": {"m": 2}, "expect": 1}])
    obj = t.get("services", "a")
    assert obj["n"] == 1 and obj["m"] == 2 and obj["version"] == 2


# -- all or nothing --------------------------------------------------------------------------

def test_failing_op_rolls_back_the_whole_transaction():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    failed(t, [create("services", svc("b", "db")),
               {"op": "patch", "kind": "services", "id": "a", "set": {"n": 1}},
               create("tasks", task("t1", "b", "n1")),
               {"op": "delete", "kind": "services", "id": "missing"}], "not_found")
    assert t.get("services", "b") is None
    assert "n" not in t.get("services", "a")
    assert t.tasks_by_service == {} and t.tasks_by_node == {}


@pytest.mark.parametrize("bad_op", [
    {"kind": "services", "obj": {"id": "z"}},                      # no op
    {"op": "create", "obj": {"id": "z"}},                          # no kind
    {"op": "create", "kind": "services"},                          # no obj, no id
    {"op": "create", "kind": "services", "obj": {"spec": {}}},     # obj without id
    {"op": "patch", "kind": "services", "id": "a"},                # patch without set
    {"op": "patch", "kind": "services", "id": "a", "set": {"n": 1}, "if_lt": {"spec.name": 3}},  # str >= int
    "not a dict",
    None,
])
def test_malformed_op_rejects_whole_transaction(bad_op):
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    res = failed(t, [create("services", svc("b", "db")), bad_op], "store_error")
    assert "malformed transaction" in res["error"]
    assert t.get("services", "b") is None
    assert t.index == 1


def test_apply_never_raises_on_garbage():
    t = Tables()
    for garbage in ([1, 2], [[]], [{"op": "create", "kind": "tasks", "obj": 5}]):
        result, events = t.apply(garbage)
        assert result["ok"] is False and events == []
    assert t.index == 0


def test_unhashable_task_index_key_is_rejected_without_partial_write():
    t = Tables()
    before = snapshot(t)
    try:
        result, events = t.apply([create("tasks", task("t1", "s1")),
                                  create("tasks", task("t2", ["not", "hashable"]))])
    except Exception as exc:  # the contract is "never raises"
        pytest.fail(f"Tables.apply raised {exc!r}; state index={t.index}, tasks={list(t.objects['tasks'])}")
    assert result["ok"] is False and events == []
    assert snapshot(t) == before


def test_empty_transaction_commits_and_advances_index():
    t = Tables()
    result, events = t.apply([])
    assert result == {"ok": True, "index": 1, "versions": []}
    assert events == []


# -- patch ------------------------------------------------------------------------------------

def test_patch_sets_dotted_paths_and_keeps_other_fields():
    t = Tables()
    ok(t, [create("tasks", task("t1", state=64))])
    ok(t, [{"op": "patch", "kind": "tasks", "id": "t1",
            "set": {"status.state": 192, "status.err": "", "node_id": "n1", "a.b.c": 1}}])
    obj = t.get("tasks", "t1")
    assert obj["status"] == {"state": 192, "message": "created", "err": ""}
    assert obj["node_id"] == "n1"
    assert obj["a"] == {"b": {"c": 1}}
    assert obj["desired_state"] == 512


def test_patch_does_not_mutate_the_previous_object():
    t = Tables()
    ok(t, [create("tasks", task("t1"))])
    before = t.get("tasks", "t1")
    ok(t, [{"op": "patch", "kind": "tasks", "id": "t1", "set": {"status.state": 192}}])
    assert before["status"]["state"] == 0
    assert t.get("tasks", "t1")["status"]["state"] == 192


def test_patch_if_lt_only_moves_states_forward():
    t = Tables()
    ok(t, [create("tasks", task("t1", state=512))])    # RUNNING

    def to(state: int, msg: str) -> dict:
        return {"op": "patch", "kind": "tasks", "id": "t1",
                "set": {"status.state": state, "status.message": msg},
                "if_lt": {"status.state": state}}

    result, events = ok(t, [to(384, "ready again")])     # backwards: no-op
    assert events == [] and result["versions"] == []
    assert t.get("tasks", "t1")["status"] == {"state": 512, "message": "created"}
    _, events = ok(t, [to(512, "same")])                 # equal: no-op
    assert events == []
    _, events = ok(t, [to(704, "failed")])                # forward
    assert t.get("tasks", "t1")["status"] == {"state": 704, "message": "failed"}
    assert len(events) == 1 and events[0].action == "update"


def test_patch_if_lt_applies_when_value_absent():
    t = Tables()
    ok(t, [create("tasks", {"id": "t1", "service_id": "s1"})])
    ok(t, [{"op": "patch", "kind": "tasks", "id": "t1", "set": {"status.state": 64},
            "if_lt": {"status.state": 64}}])
    assert t.get("tasks", "t1")["status"]["state"] == 64


def test_if_lt_skip_does_not_skip_other_ops():
    t = Tables()
    ok(t, [create("tasks", task("t1", state=512)), create("tasks", task("t2", state=64))])
    ok(t, [{"op": "patch", "kind": "tasks", "id": "t1", "set": {"status.state": 192},
            "if_lt": {"status.state": 192}},
           {"op": "patch", "kind": "tasks", "id": "t2", "set": {"status.state": 192},
            "if_lt": {"status.state": 192}}])
    assert t.get("tasks", "t1")["status"]["state"] == 512
    assert t.get("tasks", "t2")["status"]["state"] == 192


def test_skip_missing_patch_and_delete():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    result, events = ok(t, [
        {"op": "patch", "kind": "tasks", "id": "gone", "set": {"x": 1}, "skip_missing": True},
        {"op": "delete", "kind": "tasks", "id": "gone", "skip_missing": True},
        {"op": "patch", "kind": "services", "id": "a", "set": {"x": 1}}])
    assert [e.action for e in events] == ["update"]
    assert t.get("services", "a")["x"] == 1
    assert t.get("tasks", "gone") is None


def test_missing_without_skip_missing_fails():
    t = Tables()
    failed(t, [{"op": "patch", "kind": "tasks", "id": "gone", "set": {"x": 1}}], "not_found")
    failed(t, [{"op": "delete", "kind": "tasks", "id": "gone"}], "not_found")


# -- delete ----------------------------------------------------------------------------------

def test_delete_emits_event_with_last_object():
    t = Tables()
    ok(t, [create("services", svc("a", "web"))])
    result, events = ok(t, [{"op": "delete", "kind": "services", "id": "a"}])
    assert t.get("services", "a") is None
    assert len(events) == 1
    assert events[0].action == "delete" and events[0].obj["id"] == "a" and events[0].index == 2
    assert result["versions"] == [1]     # the deleted object's last version


def test_create_then_patch_then_delete_in_one_transaction():
    t = Tables()
    _, events = ok(t, [create("tasks", task("t1", "s1", "n1")),
                       {"op": "patch", "kind": "tasks", "id": "t1", "set": {"node_id": "n2"}},
                       {"op": "delete", "kind": "tasks", "id": "t1"}])
    assert [e.action for e in events] == ["create", "update", "delete"]
    assert t.get("tasks", "t1") is None
    assert t.tasks_by_service == {} and t.tasks_by_node == {}


def test_create_twice_in_one_transaction_is_rejected():
    t = Tables()
    failed(t, [create("nodes", {"id": "n1"}), create("nodes", {"id": "n1"})], "exists")


# -- task indexes -------------------------------------------------------------------------

def test_task_indexes_follow_creates_updates_and_deletes():
    t = Tables()
    ok(t, [create("tasks", task("t1", "s1", None)), create("tasks", task("t2", "s1", "n1")),
           create("tasks", task("t3", "s2", "n1"))])
    check_task_indexes(t)
    assert {x["id"] for x in t.service_tasks("s1")} == {"t1", "t2"}
    assert {x["id"] for x in t.node_tasks("n1")} == {"t2", "t3"}
    assert "n1" in t.tasks_by_node and None not in t.tasks_by_node

    # the scheduler assigns t1 to n2
    ok(t, [{"op": "patch", "kind": "tasks", "id": "t1", "set": {"node_id": "n2"}}])
    check_task_indexes(t)
    assert [x["id"] for x in t.node_tasks("n2")] == ["t1"]

    # moved by a whole update, and service changed
    moved = task("t2", "s2", "n2")
    ok(t, [{"op": "update", "kind": "tasks", "obj": moved}])
    check_task_indexes(t)
    assert {x["id"] for x in t.service_tasks("s2")} == {"t2", "t3"}
    assert {x["id"] for x in t.node_tasks("n1")} == {"t3"}

    # unassigned again
    ok(t, [{"op": "patch", "kind": "tasks", "id": "t3", "set": {"node_id": None}}])
    check_task_indexes(t)
    assert "n1" not in t.tasks_by_node          # emptied keys are dropped

    ok(t, [{"op": "delete", "kind": "tasks", "id": i} for i in ("t1", "t2", "t3")])
    check_task_indexes(t)
    assert t.tasks_by_service == {} and t.tasks_by_node == {}
    assert t.service_tasks("s1") == [] and t.node_tasks("n2") == []


def test_task_index_reads_return_current_objects():
    t = Tables()
    ok(t, [create("tasks", task("t1", "s1", "n1"))])
    ok(t, [{"op": "patch", "kind": "tasks", "id": "t1", "set": {"status.state": 512}}])
    assert t.service_tasks("s1")[0]["status"]["state"] == 512
    assert t.node_tasks("n1")[0] is t.get("tasks", "t1")


def test_task_indexes_unchanged_by_rejected_transaction():
    t = Tables()
    ok(t, [create("tasks", task("t1", "s1", "n1"))])
    failed(t, [{"op": "patch", "kind": "tasks", "id": "t1", "set": {"node_id": "n9"}},
               create("tasks", task("t1", "s1", "n1"))], "exists")
    check_task_indexes(t)
    assert list(t.tasks_by_node) == ["n1"]


def test_many_tasks_index_consistency():
    t = Tables()
    ops = [create("tasks", task(f"t{i}", f"s{i % 3}", f"n{i % 4}")) for i in range(60)]
    ok(t, ops)
    check_task_indexes(t)
    ok(t, [{"op": "patch", "kind": "tasks", "id": f"t{i}", "set": {"node_id": f"n{(i + 1) % 5}"}}
           for i in range(0, 60, 2)])
    ok(t, [{"op": "delete", "kind": "tasks", "id": f"t{i}"} for i in range(0, 60, 3)])
    check_task_indexes(t)
    assert len(t.list("tasks")) == 40


def test_patch_cannot_change_an_objects_id():
    t = Tables()
    ok(t, [create("tasks", task("t1", "s1", "n1"))])
    result, _ = t.apply([{"op": "patch", "kind": "tasks", "id": "t1", "set": {"id": "t2"}}])
    assert not result["ok"] or (sorted(t.objects["tasks"]) == ["t1"] and t.get("tasks", "t1")["id"] == "t1")


def test_check_op_guards_a_transaction_on_an_objects_version():
    t = Tables()
    t.apply([{"op": "create", "kind": "services", "obj": svc("s1", "web")}])
    version = t.get("services", "s1")["version"]
    guarded = lambda v, tid: [{"op": "check", "kind": "services", "id": "s1", "expect": v},  # noqa: E731
                              {"op": "create", "kind": "tasks", "obj": task(tid)}]
    result, events = t.apply(guarded(version, "t1"))
    assert result["ok"] and [e.kind for e in events] == ["tasks"]       # check writes nothing
    t.apply([{"op": "patch", "kind": "services", "id": "s1", "set": {"spec.image": "x"}}])
    result, _ = t.apply(guarded(version, "t2"))
    assert not result["ok"] and result["code"] == "conflict"
    assert t.get("tasks", "t2") is None
    t.apply([{"op": "delete", "kind": "services", "id": "s1"}])
    result, _ = t.apply(guarded(None, "t3"))
    assert not result["ok"] and result["code"] == "not_found"
    assert t.get("tasks", "t3") is None


def test_a_patch_makes_a_new_version_and_leaves_the_old_one_as_it_was():
    """Stored objects are snapshots: a reader holding the old version never sees a patch."""
    t = Tables()
    t.apply([{"op": "create", "kind": "tasks", "obj": {"id": "t1", "service_id": "s", "spec": {"env": ["A=1"]},
                                                        "status": {"state": 0, "message": "new"}}}])
    old = t.get("tasks", "t1")
    result, _ = t.apply([{"op": "patch", "kind": "tasks", "id": "t1",
                          "set": {"status.state": 512, "status.err": "", "extra.deep.key": 1}}], owned=True)
    assert result["ok"]
    new = t.get("tasks", "t1")
    assert old["status"] == {"state": 0, "message": "new"} and "extra" not in old
    assert new["status"] == {"state": 512, "message": "new", "err": ""} and new["extra"] == {"deep": {"key": 1}}
    assert new["spec"] is old["spec"]            # the untouched part is shared, not copied


def test_patch_copy_keeps_the_value_it_replaces():
    """A service update keeps the replaced spec as previous_spec in the store; copies read
    the object as it was before the op, so a swap (rollback) needs no second op."""
    t = Tables()
    ok(t, [create("services", svc("a", "web", previous_spec=None))])
    old_spec = t.get("services", "a")["spec"]
    new_spec = {"name": "web", "image": "busybox:2"}
    ok(t, [{"op": "patch", "kind": "services", "id": "a", "expect": 1,
            "copy": {"previous_spec": "spec"}, "set": {"spec": new_spec}}])
    stored = t.get("services", "a")
    assert stored["spec"] == new_spec and stored["previous_spec"] == old_spec and stored["version"] == 2
    ok(t, [{"op": "patch", "kind": "services", "id": "a",
            "copy": {"spec": "previous_spec", "previous_spec": "spec"}, "set": {}}])
    stored = t.get("services", "a")
    assert stored["spec"] == old_spec and stored["previous_spec"] == new_spec
    # At a stale version nothing is copied or set.
    failed(t, [{"op": "patch", "kind": "services", "id": "a", "expect": 2,
                "copy": {"previous_spec": "spec"}, "set": {"spec": {"name": "web"}}}], "conflict")
