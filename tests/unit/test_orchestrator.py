"""swarmpy/manager/orchestrator/{restart,replicated,global_,slots}.py.

Services and tasks are built with swarmpy.models and live in a real `Tables`; every
plan's ops are applied to it, so the tests see what the orchestrator's transactions do.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from raft.tables import Tables
from swarmpy.manager.controlapi import respec_op
from swarmpy.manager.orchestrator import global_, jobs, replicated, restart
from swarmpy.manager.orchestrator.slots import SlotPlan, desired, runnable, spec_changed
from swarmpy.models import (RestartPolicy, ServiceSpec, TaskState, UpdateConfig, new_service, new_task,
                            to_dict)

RUNNING, READY, SHUTDOWN, REMOVE = (int(TaskState.RUNNING), int(TaskState.READY), int(TaskState.SHUTDOWN),
                                    int(TaskState.REMOVE))


# -- helpers ---------------------------------------------------------------------------------

def commit(tables: Tables, ops: list[dict]) -> dict:
    result, _ = tables.apply(ops)
    assert result["ok"], result
    return result


def make_service(tables: Tables, name: str = "web", **spec_fields) -> dict:
    spec = ServiceSpec(name=name, image="busybox")
    for key, value in spec_fields.items():
        setattr(spec, key, value)
    svc = new_service(spec)
    commit(tables, [{"op": "create", "kind": "services", "obj": svc}])
    return tables.get("services", svc["id"])


def update_service(tables: Tables, svc: dict, **spec_changes) -> dict:
    new = {k: v for k, v in svc.items() if k != "version"}
    new["spec"] = dict(svc["spec"], **spec_changes)
    commit(tables, [{"op": "update", "kind": "services", "obj": new, "expect": svc["version"]}])
    return tables.get("services", svc["id"])


def policy(condition="any", delay=0.0, max_attempts=0, window=0.0) -> RestartPolicy:
    return RestartPolicy(condition=condition, delay=delay, max_attempts=max_attempts, window=window)


def set_status(tables: Tables, task_id: str, state: TaskState, node_id: str | None = None) -> dict:
    values = {"status.state": int(state)}
    if node_id is not None:
        values["node_id"] = node_id
    commit(tables, [{"op": "patch", "kind": "tasks", "id": task_id, "set": values}])
    return tables.get("tasks", task_id)


def reconcile(tables: Tables, svc_id: str, down: set[str] = frozenset()) -> SlotPlan:
    svc = tables.get("services", svc_id)
    plan = replicated.reconcile(svc, tables.service_tasks(svc_id), set(down))
    commit(tables, plan.ops)
    return plan


def live(tables: Tables, svc_id: str) -> dict[int, dict]:
    """slot -> the one runnable task in it (fails if a slot has two)."""
    out: dict[int, dict] = {}
    for t in tables.service_tasks(svc_id):
        if runnable(t):
            assert t["slot"] not in out, f"two runnable tasks in slot {t['slot']}"
            out[t["slot"]] = t
    return out


def run_all(tables: Tables, svc_id: str, node_id: str = "n1") -> None:
    for t in live(tables, svc_id).values():
        if t["status"]["state"] < RUNNING:
            set_status(tables, t["id"], TaskState.RUNNING, node_id)


def ops_of(plan: SlotPlan, op: str) -> list[dict]:
    return [o for o in plan.ops if o["op"] == op]


# -- slots helpers -------------------------------------------------------------------------

def test_desired_op_is_forward_only_and_skips_missing():
    t = Tables()
    commit(t, [{"op": "create", "kind": "tasks", "obj": {"id": "t1", "service_id": "s", "desired_state": REMOVE}}])
    commit(t, [desired("t1", SHUTDOWN), desired("gone", SHUTDOWN)])
    assert t.get("tasks", "t1")["desired_state"] == REMOVE


def test_spec_changed_ignores_replicas():
    t = Tables()
    svc = make_service(t, replicas=2)
    task = new_task(svc, 1)
    assert not spec_changed(svc, task)
    scaled = update_service(t, svc, replicas=5)
    assert scaled["version"] > svc["version"]
    assert not spec_changed(scaled, task)
    assert spec_changed(update_service(t, scaled, env=["A=1"]), task)
    assert spec_changed(update_service(t, t.get("services", svc["id"]), env=[]), new_task(scaled, 1)) is False


# -- restart supervisor ---------------------------------------------------------------------

def failed_task(state=TaskState.FAILED, restarts=None) -> dict:
    return {"status": {"state": int(state)}, "desired_state": RUNNING, "restarts": restarts or []}


@pytest.mark.parametrize("condition, state, expected", [
    ("any", TaskState.FAILED, True), ("any", TaskState.COMPLETE, True), ("any", TaskState.REJECTED, True),
    ("on-failure", TaskState.FAILED, True), ("on-failure", TaskState.REJECTED, True),
    ("on-failure", TaskState.COMPLETE, False),
    ("none", TaskState.FAILED, False), ("none", TaskState.COMPLETE, False),
])
def test_should_restart_condition(condition, state, expected):
    assert restart.should_restart(to_dict(policy(condition)), failed_task(state)) is expected


def test_should_restart_max_attempts_and_window():
    at = 1000.0
    pol = to_dict(policy(max_attempts=2, window=60))
    assert restart.should_restart(pol, failed_task(restarts=[]), at)
    assert restart.should_restart(pol, failed_task(restarts=[990.0]), at)
    assert not restart.should_restart(pol, failed_task(restarts=[980.0, 990.0]), at)
    # restarts older than the window do not count
    assert restart.should_restart(pol, failed_task(restarts=[900.0, 990.0]), at)
    assert restart.should_restart(pol, failed_task(restarts=[900.0, 930.0]), at)
    # no window: every restart counts
    no_window = to_dict(policy(max_attempts=2))
    assert not restart.should_restart(no_window, failed_task(restarts=[1.0, 2.0]), at)
    # 0 attempts: unlimited
    assert restart.should_restart(to_dict(policy(max_attempts=0)), failed_task(restarts=[1.0] * 50), at)


def test_replacement_with_delay_is_held_at_ready():
    t = Tables()
    svc = make_service(t, restart_policy=policy(delay=5, window=60))
    old = new_task(svc, 3)
    old["restarts"] = [10.0, 980.0]
    new = restart.replacement(svc, old, at=1000.0)
    assert new["slot"] == 3 and new["node_id"] is None
    assert new["desired_state"] == READY and new["start_at"] == 1005.0
    assert new["restarts"] == [980.0, 1000.0]      # trimmed to the window, plus this restart
    assert new["service_version"] == svc["version"] and new["id"] != old["id"]
    assert new["status"]["state"] == int(TaskState.NEW)


def test_replacement_without_delay_runs_at_once_and_global_keeps_node():
    t = Tables()
    svc = make_service(t, mode="global", restart_policy=policy(delay=0))
    old = new_task(svc, None, "node-7")
    new = restart.replacement(svc, old, at=50.0)
    assert new["desired_state"] == RUNNING and "start_at" not in new
    assert new["slot"] is None and new["node_id"] == "node-7"
    assert new["restarts"] == [50.0]


@pytest.mark.parametrize("state, desired_state, node_down, dead", [
    (TaskState.RUNNING, RUNNING, False, False),
    (TaskState.FAILED, RUNNING, False, True),
    (TaskState.COMPLETE, RUNNING, False, True),
    (TaskState.FAILED, SHUTDOWN, False, False),       # meant to stop: not dead
    (TaskState.RUNNING, RUNNING, True, True),          # its node is gone
    (TaskState.ASSIGNED, RUNNING, True, True),
    (TaskState.PENDING, RUNNING, True, False),         # never got there
    (TaskState.FAILED, READY, False, True),            # a held replacement can die too
])
def test_is_dead(state, desired_state, node_down, dead):
    task = {"status": {"state": int(state)}, "desired_state": desired_state}
    assert restart.is_dead(task, node_down) is dead


# -- replicated ------------------------------------------------------------------------------

def test_replicated_creates_slots_one_to_n_and_is_idempotent():
    t = Tables()
    svc = make_service(t, replicas=3)
    plan = reconcile(t, svc["id"])
    assert [o["op"] for o in plan.ops] == ["create"] * 3
    slots = live(t, svc["id"])
    assert sorted(slots) == [1, 2, 3]
    for task in slots.values():
        assert task["desired_state"] == RUNNING and task["node_id"] is None
        assert task["service_version"] == svc["version"] and task["service_name"] == "web"
        assert task["status"]["state"] == int(TaskState.NEW)
    assert reconcile(t, svc["id"]).ops == []
    run_all(t, svc["id"])
    assert reconcile(t, svc["id"]).ops == []


def test_zero_replicas_creates_nothing():
    t = Tables()
    svc = make_service(t, replicas=0)
    assert reconcile(t, svc["id"]).ops == []


def test_scale_down_removes_highest_slots():
    t = Tables()
    svc = make_service(t, replicas=5)
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    update_service(t, svc, replicas=2)
    plan = reconcile(t, svc["id"])
    assert ops_of(plan, "create") == []
    removed = {o["id"] for o in plan.ops}
    tasks = {x["id"]: x for x in t.service_tasks(svc["id"])}
    assert sorted(tasks[i]["slot"] for i in removed) == [3, 4, 5]
    assert all(tasks[i]["desired_state"] == REMOVE for i in removed)
    assert sorted(live(t, svc["id"])) == [1, 2]
    assert reconcile(t, svc["id"]).ops == []


def test_scale_up_fills_lowest_free_slots():
    t = Tables()
    svc = make_service(t, replicas=4)
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    svc = update_service(t, svc, replicas=2)
    reconcile(t, svc["id"])
    update_service(t, svc, replicas=3)
    plan = reconcile(t, svc["id"])
    assert [o["obj"]["slot"] for o in ops_of(plan, "create")] == [3]
    assert sorted(live(t, svc["id"])) == [1, 2, 3]


def test_scale_up_around_existing_gap():
    t = Tables()
    svc = make_service(t, replicas=3)
    for slot in (1, 3):
        commit(t, [{"op": "create", "kind": "tasks", "obj": new_task(svc, slot)}])
    plan = reconcile(t, svc["id"])
    assert [o["obj"]["slot"] for o in ops_of(plan, "create")] == [2]


def test_failed_task_condition_any_gets_replacement_held_at_ready():
    t = Tables()
    svc = make_service(t, replicas=2, restart_policy=policy("any", delay=5))
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    victim = live(t, svc["id"])[2]
    set_status(t, victim["id"], TaskState.FAILED)
    before = time.time()
    plan = reconcile(t, svc["id"])
    after = time.time()

    old = t.get("tasks", victim["id"])
    assert old["desired_state"] == SHUTDOWN
    (created,) = ops_of(plan, "create")
    new = t.get("tasks", created["obj"]["id"])
    assert new["slot"] == 2 and new["node_id"] is None
    assert new["desired_state"] == READY
    assert before + 5 <= new["start_at"] <= after + 5
    assert plan.timers == [new["start_at"]]
    assert len(new["restarts"]) == 1
    assert sorted(live(t, svc["id"])) == [1, 2]
    assert live(t, svc["id"])[1]["status"]["state"] == RUNNING     # the other slot is left alone

    # before the delay is over: no ops, just a timer for it
    plan = reconcile(t, svc["id"])
    assert plan.ops == [] and plan.timers == [new["start_at"]]

    # once start_at has passed, the next pass promotes it to RUNNING
    commit(t, [{"op": "patch", "kind": "tasks", "id": new["id"], "set": {"start_at": time.time() - 1}}])
    plan = reconcile(t, svc["id"])
    assert [(o["op"], o["id"], o["set"]) for o in plan.ops] == [("patch", new["id"], {"desired_state": RUNNING})]
    assert t.get("tasks", new["id"])["desired_state"] == RUNNING
    assert reconcile(t, svc["id"]).ops == []


def test_stale_promotion_cannot_resurrect_a_removed_task():
    """The orchestrator commits after an await: a service rm (desired REMOVE) can land between its
    read and its commit.  Its READY -> RUNNING promotion must not move desired_state backwards."""
    t = Tables()
    svc = make_service(t, replicas=1, restart_policy=policy("any", delay=5))
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    set_status(t, live(t, svc["id"])[1]["id"], TaskState.FAILED)
    reconcile(t, svc["id"])
    held = live(t, svc["id"])[1]
    commit(t, [{"op": "patch", "kind": "tasks", "id": held["id"], "set": {"start_at": time.time() - 1}}])
    stale = replicated.reconcile(t.get("services", svc["id"]), t.service_tasks(svc["id"]), set())
    assert stale.ops, "expected the promotion op"
    # meanwhile: `service rm`
    commit(t, [{"op": "patch", "kind": "tasks", "id": x["id"], "skip_missing": True,
                "set": {"desired_state": REMOVE}} for x in t.service_tasks(svc["id"])])
    commit(t, stale.ops)
    assert t.get("tasks", held["id"])["desired_state"] == REMOVE


def test_failed_task_without_delay_is_replaced_running():
    t = Tables()
    svc = make_service(t, replicas=1, restart_policy=policy("any", delay=0))
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    set_status(t, live(t, svc["id"])[1]["id"], TaskState.FAILED)
    plan = reconcile(t, svc["id"])
    (created,) = ops_of(plan, "create")
    assert created["obj"]["desired_state"] == RUNNING and "start_at" not in created["obj"]
    assert plan.timers == []


def test_condition_none_declines_until_service_version_changes():
    t = Tables()
    svc = make_service(t, replicas=2, restart_policy=policy("none"))
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    victim = live(t, svc["id"])[1]
    set_status(t, victim["id"], TaskState.FAILED)
    plan = reconcile(t, svc["id"])
    assert ops_of(plan, "create") == []
    old = t.get("tasks", victim["id"])
    assert old["desired_state"] == SHUTDOWN and old["restart_declined"] == svc["version"]
    assert sorted(live(t, svc["id"])) == [2]

    # the slot stays empty, pass after pass
    for _ in range(3):
        assert reconcile(t, svc["id"]).ops == []
    assert sorted(live(t, svc["id"])) == [2]

    # a service update (new version) refills it
    update_service(t, t.get("services", svc["id"]))
    plan = reconcile(t, svc["id"])
    assert [o["obj"]["slot"] for o in ops_of(plan, "create")] == [1]
    assert sorted(live(t, svc["id"])) == [1, 2]


def test_condition_none_completed_task_not_refilled():
    t = Tables()
    svc = make_service(t, replicas=1, restart_policy=policy("none"))
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    set_status(t, live(t, svc["id"])[1]["id"], TaskState.COMPLETE)
    reconcile(t, svc["id"])
    assert live(t, svc["id"]) == {}
    assert reconcile(t, svc["id"]).ops == []


def test_on_failure_does_not_restart_complete_task():
    t = Tables()
    svc = make_service(t, replicas=2, restart_policy=policy("on-failure"))
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    slots = live(t, svc["id"])
    set_status(t, slots[1]["id"], TaskState.COMPLETE)
    set_status(t, slots[2]["id"], TaskState.FAILED)
    plan = reconcile(t, svc["id"])
    assert [o["obj"]["slot"] for o in ops_of(plan, "create")] == [2]
    assert t.get("tasks", slots[1]["id"])["restart_declined"] == svc["version"]
    assert sorted(live(t, svc["id"])) == [2]
    assert reconcile(t, svc["id"]).ops == []


def test_max_attempts_within_window():
    t = Tables()
    svc = make_service(t, replicas=1, restart_policy=policy("any", delay=0, max_attempts=2, window=3600))
    reconcile(t, svc["id"])
    restarts = 0
    for _ in range(5):
        slots = live(t, svc["id"])
        if not slots:
            break
        run_all(t, svc["id"])
        set_status(t, slots[1]["id"], TaskState.FAILED)
        plan = reconcile(t, svc["id"])
        restarts += len(ops_of(plan, "create"))
    assert restarts == 2
    assert live(t, svc["id"]) == {}
    assert len(t.service_tasks(svc["id"])) == 3
    assert reconcile(t, svc["id"]).ops == []


def test_max_attempts_restarts_outside_window_are_forgotten():
    t = Tables()
    svc = make_service(t, replicas=1, restart_policy=policy("any", delay=0, max_attempts=1, window=60))
    task = new_task(svc, 1)
    task["restarts"] = [time.time() - 3600]          # long ago
    task["status"]["state"] = int(TaskState.FAILED)
    commit(t, [{"op": "create", "kind": "tasks", "obj": task}])
    plan = reconcile(t, svc["id"])
    (created,) = ops_of(plan, "create")
    assert len(created["obj"]["restarts"]) == 1 and created["obj"]["restarts"][0] > time.time() - 60


def test_task_on_down_node_is_replaced():
    t = Tables()
    svc = make_service(t, replicas=2)
    reconcile(t, svc["id"])
    slots = live(t, svc["id"])
    set_status(t, slots[1]["id"], TaskState.RUNNING, "n1")
    set_status(t, slots[2]["id"], TaskState.RUNNING, "n2")
    plan = reconcile(t, svc["id"], down={"n1"})
    assert t.get("tasks", slots[1]["id"])["desired_state"] == SHUTDOWN
    assert [o["obj"]["slot"] for o in ops_of(plan, "create")] == [1]
    assert live(t, svc["id"])[2]["id"] == slots[2]["id"]


def test_task_on_down_node_is_replaced_without_the_restart_delay():
    """The delay is for crash loops; a node loss is not the task's doing, while a task that
    failed on a live node still waits it out."""
    t = Tables()
    svc = make_service(t, replicas=2, restart_policy=policy("any", delay=5))
    reconcile(t, svc["id"])
    slots = live(t, svc["id"])
    set_status(t, slots[1]["id"], TaskState.RUNNING, "n1")
    set_status(t, slots[2]["id"], TaskState.FAILED, "n2")
    plan = reconcile(t, svc["id"], down={"n1"})
    created = {o["obj"]["slot"]: o["obj"] for o in ops_of(plan, "create")}
    assert created[1]["desired_state"] == RUNNING and "start_at" not in created[1]
    assert created[2]["desired_state"] == READY and created[2]["start_at"] > time.time() + 4
    assert plan.timers == [created[2]["start_at"]]


def test_spec_change_replaces_every_task_with_parallelism_zero():
    t = Tables()
    svc = make_service(t, replicas=2, update_config=UpdateConfig(parallelism=0))
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    old = live(t, svc["id"])
    svc = update_service(t, svc, image="busybox:2")
    plan = reconcile(t, svc["id"])
    assert len(ops_of(plan, "create")) == 2
    for slot, task in old.items():
        assert t.get("tasks", task["id"])["desired_state"] == SHUTDOWN
        new = live(t, svc["id"])[slot]
        assert new["id"] != task["id"]
        assert new["spec"]["image"] == "busybox:2" and new["service_version"] == svc["version"]
    assert reconcile(t, svc["id"]).ops == []


def test_update_replaces_one_slot_at_a_time_by_default():
    t = Tables()
    svc = make_service(t, replicas=3)
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    svc = update_service(t, svc, image="busybox:2")

    def images() -> dict[int, str]:
        return {slot: task["spec"]["image"] for slot, task in live(t, svc["id"]).items()}

    reconcile(t, svc["id"])
    assert images() == {1: "busybox:2", 2: "busybox", 3: "busybox"}
    reconcile(t, svc["id"])             # the replacement is not running yet: nothing more
    assert images() == {1: "busybox:2", 2: "busybox", 3: "busybox"}
    run_all(t, svc["id"])
    reconcile(t, svc["id"])
    assert images() == {1: "busybox:2", 2: "busybox:2", 3: "busybox"}
    run_all(t, svc["id"])
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    assert images() == {1: "busybox:2", 2: "busybox:2", 3: "busybox:2"}
    assert reconcile(t, svc["id"]).ops == []


def test_update_with_parallelism_two_and_a_change_of_parallelism_alone():
    t = Tables()
    svc = make_service(t, replicas=3, update_config=UpdateConfig(parallelism=2))
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    ids = {slot: task["id"] for slot, task in live(t, svc["id"]).items()}
    svc = update_service(t, svc, update_config=to_dict(UpdateConfig(parallelism=1)))   # not a task field
    assert reconcile(t, svc["id"]).ops == []
    assert {slot: task["id"] for slot, task in live(t, svc["id"]).items()} == ids
    svc = update_service(t, svc, update_config=to_dict(UpdateConfig(parallelism=2)), env=["A=1"])
    plan = reconcile(t, svc["id"])
    assert len(ops_of(plan, "create")) == 2


def test_scale_only_update_does_not_replace_tasks():
    t = Tables()
    svc = make_service(t, replicas=2)
    reconcile(t, svc["id"])
    ids = {s: x["id"] for s, x in live(t, svc["id"]).items()}
    update_service(t, svc, replicas=3)
    plan = reconcile(t, svc["id"])
    assert [o["obj"]["slot"] for o in ops_of(plan, "create")] == [3]
    assert {s: x["id"] for s, x in live(t, svc["id"]).items() if s in ids} == ids


def test_scale_down_also_removes_a_fresh_replacement():
    t = Tables()
    svc = make_service(t, replicas=2, restart_policy=policy(delay=0))
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    set_status(t, live(t, svc["id"])[2]["id"], TaskState.FAILED)
    update_service(t, svc, replicas=1)
    reconcile(t, svc["id"])
    assert sorted(live(t, svc["id"])) == [1]


# -- global ------------------------------------------------------------------------------------

def gnode(node_id: str, state: str = "ready", availability: str = "active", labels=None, role="worker") -> dict:
    return {"id": node_id, "status": {"state": state},
            "spec": {"role": role, "availability": availability, "labels": labels or {}},
            "description": {"hostname": f"host-{node_id}"}}


def greconcile(t: Tables, svc_id: str, nodes: list[dict]) -> SlotPlan:
    svc = t.get("services", svc_id)
    down = {n["id"] for n in nodes if n["status"]["state"] != "ready"}
    plan = global_.reconcile(svc, t.service_tasks(svc_id), nodes, down)
    commit(t, plan.ops)
    return plan


def glive(t: Tables, svc_id: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for task in t.service_tasks(svc_id):
        if runnable(task):
            assert task["node_id"] not in out, f"two runnable tasks on {task['node_id']}"
            out[task["node_id"]] = task
    return out


def test_eligible_nodes():
    t = Tables()
    svc = make_service(t, mode="global", constraints=["node.labels.zone==a"])
    nodes = [gnode("ok", labels={"zone": "a"}), gnode("down", state="down", labels={"zone": "a"}),
             gnode("drained", availability="drain", labels={"zone": "a"}), gnode("other", labels={"zone": "b"}),
             gnode("nolabel")]
    assert global_.eligible_nodes(svc, nodes) == {"ok"}


def test_global_one_task_per_eligible_node():
    t = Tables()
    svc = make_service(t, mode="global", constraints=["node.role==worker"])
    nodes = [gnode("w1"), gnode("w2"), gnode("m1", role="manager"), gnode("down", state="down")]
    plan = greconcile(t, svc["id"], nodes)
    assert len(ops_of(plan, "create")) == 2
    tasks = glive(t, svc["id"])
    assert sorted(tasks) == ["w1", "w2"]
    assert all(x["slot"] is None and x["desired_state"] == RUNNING for x in tasks.values())
    assert greconcile(t, svc["id"], nodes).ops == []


def test_global_new_node_gets_a_task():
    t = Tables()
    svc = make_service(t, mode="global")
    nodes = [gnode("a")]
    greconcile(t, svc["id"], nodes)
    plan = greconcile(t, svc["id"], nodes + [gnode("b")])
    assert [o["obj"]["node_id"] for o in ops_of(plan, "create")] == ["b"]
    assert sorted(glive(t, svc["id"])) == ["a", "b"]


def test_global_shuts_down_tasks_on_nodes_that_no_longer_match():
    t = Tables()
    svc = make_service(t, mode="global", constraints=["node.labels.gpu==true"])
    nodes = [gnode("a", labels={"gpu": "true"}), gnode("b", labels={"gpu": "true"})]
    greconcile(t, svc["id"], nodes)
    ids = {n: x["id"] for n, x in glive(t, svc["id"]).items()}
    nodes[1]["spec"]["labels"]["gpu"] = "false"
    plan = greconcile(t, svc["id"], nodes)
    assert ops_of(plan, "create") == []
    assert t.get("tasks", ids["b"])["desired_state"] == SHUTDOWN
    assert sorted(glive(t, svc["id"])) == ["a"]
    assert greconcile(t, svc["id"], nodes).ops == []


def test_global_drained_or_down_node_task_is_shut_down_not_replaced():
    t = Tables()
    svc = make_service(t, mode="global")
    nodes = [gnode("a"), gnode("b")]
    greconcile(t, svc["id"], nodes)
    nodes[0]["spec"]["availability"] = "drain"
    nodes[1]["status"]["state"] = "down"
    plan = greconcile(t, svc["id"], nodes)
    assert ops_of(plan, "create") == []
    assert glive(t, svc["id"]) == {}


def test_global_failed_task_restarts_on_its_node():
    t = Tables()
    svc = make_service(t, mode="global", restart_policy=policy(delay=2))
    nodes = [gnode("a"), gnode("b")]
    greconcile(t, svc["id"], nodes)
    victim = glive(t, svc["id"])["a"]
    set_status(t, victim["id"], TaskState.FAILED)
    plan = greconcile(t, svc["id"], nodes)
    (created,) = ops_of(plan, "create")
    assert created["obj"]["node_id"] == "a" and created["obj"]["desired_state"] == READY
    assert plan.timers == [created["obj"]["start_at"]]
    assert t.get("tasks", victim["id"])["desired_state"] == SHUTDOWN
    assert sorted(glive(t, svc["id"])) == ["a", "b"]


def test_global_condition_none_declines_until_update():
    t = Tables()
    svc = make_service(t, mode="global", restart_policy=policy("none"))
    nodes = [gnode("a")]
    greconcile(t, svc["id"], nodes)
    set_status(t, glive(t, svc["id"])["a"]["id"], TaskState.FAILED)
    greconcile(t, svc["id"], nodes)
    assert glive(t, svc["id"]) == {}
    assert greconcile(t, svc["id"], nodes).ops == []
    update_service(t, t.get("services", svc["id"]))
    plan = greconcile(t, svc["id"], nodes)
    assert [o["obj"]["node_id"] for o in ops_of(plan, "create")] == ["a"]


def test_global_spec_change_replaces_on_same_node():
    t = Tables()
    svc = make_service(t, mode="global")
    nodes = [gnode("a")]
    greconcile(t, svc["id"], nodes)
    old = glive(t, svc["id"])["a"]
    svc = update_service(t, svc, env=["X=1"])
    greconcile(t, svc["id"], nodes)
    new = glive(t, svc["id"])["a"]
    assert new["id"] != old["id"] and new["spec"]["env"] == ["X=1"]
    assert t.get("tasks", old["id"])["desired_state"] == SHUTDOWN


# -- the updater: update_config, update_status, failure_action, rollback -------------------------

def start_update(tables: Tables, svc: dict, **spec_changes) -> dict:
    """A spec change as the control API writes it: with the update_status it starts."""
    commit(tables, [respec_op(SimpleNamespace(tables=tables), svc, dict(svc["spec"], **spec_changes))])
    return tables.get("services", svc["id"])


def running_service(tables: Tables, replicas: int, **update_config) -> dict:
    svc = make_service(tables, replicas=replicas, update_config=UpdateConfig(**update_config))
    reconcile(tables, svc["id"])
    run_all(tables, svc["id"])
    return tables.get("services", svc["id"])


def runnable_by_slot(tables: Tables, svc_id: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for task in sorted(tables.service_tasks(svc_id), key=lambda x: x["created_at"]):
        if runnable(task):
            out.setdefault(task["slot"], []).append(task["spec"]["image"])
    return out


def status_of(tables: Tables, svc_id: str) -> dict:
    return tables.get("services", svc_id).get("update_status") or {}


def test_a_spec_change_starts_an_update_and_a_scale_does_not():
    t = Tables()
    svc = running_service(t, 2)
    store = SimpleNamespace(tables=t)
    assert "update_status" not in respec_op(store, svc, dict(svc["spec"], replicas=5))["set"]
    idle = make_service(t, name="idle", replicas=0)
    assert "update_status" not in respec_op(store, idle, dict(idle["spec"], image="busybox:2"))["set"]
    svc = start_update(t, svc, image="busybox:2")
    assert status_of(t, svc["id"])["state"] == "updating"
    assert status_of(t, svc["id"])["message"] == "update in progress"


def test_start_first_keeps_the_old_task_until_its_replacement_runs():
    t = Tables()
    svc = start_update(t, running_service(t, 2, order="start-first", monitor=0), image="busybox:2")
    reconcile(t, svc["id"])
    assert runnable_by_slot(t, svc["id"]) == {1: ["busybox", "busybox:2"], 2: ["busybox"]}
    reconcile(t, svc["id"])                               # the new one is not running: wait
    assert runnable_by_slot(t, svc["id"]) == {1: ["busybox", "busybox:2"], 2: ["busybox"]}
    new = next(x for x in t.service_tasks(svc["id"]) if x["spec"]["image"] == "busybox:2")
    set_status(t, new["id"], TaskState.RUNNING, "n1")
    reconcile(t, svc["id"])                               # old of slot 1 goes, slot 2 starts
    assert runnable_by_slot(t, svc["id"]) == {1: ["busybox:2"], 2: ["busybox", "busybox:2"]}


def test_delay_waits_between_batches_and_monitor_before_completion():
    t = Tables()
    svc = start_update(t, running_service(t, 2, delay=10, monitor=5), image="busybox:2")
    # the clock: the update began 30 s ago; tasks are backdated below to let time pass
    commit(t, [{"op": "patch", "kind": "services", "id": svc["id"],
                "set": {"update_status.started_at": time.time() - 30}}])
    reconcile(t, svc["id"])
    run_all(t, svc["id"])
    plan = reconcile(t, svc["id"])
    assert ops_of(plan, "create") == [] and len(plan.timers) == 1       # slot 2 waits out the delay
    assert time.time() + 9 < plan.timers[0] <= time.time() + 10
    done = next(x for x in live(t, svc["id"]).values() if x["spec"]["image"] == "busybox:2")
    commit(t, [{"op": "patch", "kind": "tasks", "id": done["id"], "set": {"status.timestamp": time.time() - 11}}])
    reconcile(t, svc["id"])
    assert runnable_by_slot(t, svc["id"]) == {1: ["busybox:2"], 2: ["busybox:2"]}
    run_all(t, svc["id"])
    plan = reconcile(t, svc["id"])                                      # monitor: not completed yet
    assert status_of(t, svc["id"])["state"] == "updating" and plan.timers
    for x in live(t, svc["id"]).values():
        commit(t, [{"op": "patch", "kind": "tasks", "id": x["id"], "set": {"status.timestamp": time.time() - 6}}])
    reconcile(t, svc["id"])
    assert status_of(t, svc["id"])["state"] == "completed"
    assert status_of(t, svc["id"])["message"] == "update completed"


def test_a_failing_new_task_pauses_the_update_by_default():
    t = Tables()
    svc = start_update(t, running_service(t, 3, monitor=0), image="busybox:bad")
    reconcile(t, svc["id"])
    bad = live(t, svc["id"])[1]
    set_status(t, bad["id"], TaskState.FAILED, "n1")
    reconcile(t, svc["id"])
    status = status_of(t, svc["id"])
    assert status["state"] == "paused"
    assert status["message"] == f"update paused due to failure or early termination of task {bad['id']}"
    for _ in range(2):
        reconcile(t, svc["id"])                # paused: slots 2 and 3 keep the old spec
    assert [runnable_by_slot(t, svc["id"])[s] for s in (2, 3)] == [["busybox"], ["busybox"]]


def test_failure_action_rollback_restores_the_previous_spec_under_rollback_config():
    t = Tables()
    svc = running_service(t, 2, failure_action="rollback", monitor=0)
    # the restored spec's rollback_config applies (as in SwarmKit); not a task field: no update
    svc = start_update(t, svc, rollback_config=to_dict(UpdateConfig(parallelism=0, monitor=0)))
    assert status_of(t, svc["id"]) == {}
    svc = start_update(t, svc, image="busybox:bad")
    reconcile(t, svc["id"])
    set_status(t, live(t, svc["id"])[1]["id"], TaskState.FAILED, "n1")
    reconcile(t, svc["id"])
    svc = t.get("services", svc["id"])
    assert svc["spec"]["image"] == "busybox" and svc["previous_spec"]["image"] == "busybox:bad"
    assert svc["update_status"]["state"] == "rollback_started"
    reconcile(t, svc["id"])                # parallelism 0: every bad task replaced at once
    assert runnable_by_slot(t, svc["id"]) == {1: ["busybox"], 2: ["busybox"]}
    run_all(t, svc["id"])
    reconcile(t, svc["id"])
    assert status_of(t, svc["id"])["state"] == "rollback_completed"


def test_failure_action_continue_and_a_tolerated_failure_ratio_go_on():
    for config in ({"failure_action": "continue"}, {"max_failure_ratio": 0.5}):
        t = Tables()
        svc = start_update(t, running_service(t, 2, monitor=0, **config), image="busybox:2")
        reconcile(t, svc["id"])
        set_status(t, live(t, svc["id"])[1]["id"], TaskState.FAILED, "n1")
        reconcile(t, svc["id"])
        assert status_of(t, svc["id"])["state"] == "updating", config


def test_a_task_stored_before_a_field_existed_is_not_outdated_by_its_default():
    t = Tables()
    svc = running_service(t, 1)
    task = live(t, svc["id"])[1]
    old_spec = {k: v for k, v in task["spec"].items() if k not in ("secrets", "configs", "mounts")}
    commit(t, [{"op": "patch", "kind": "tasks", "id": task["id"], "set": {"spec": old_spec}}])
    assert not spec_changed(svc, t.get("tasks", task["id"]))
    assert spec_changed(start_update(t, svc, secrets=[{"source": "pw"}]), t.get("tasks", task["id"]))


# -- jobs ---------------------------------------------------------------------------------------

def job_reconcile(tables: Tables, svc_id: str, nodes=(), down=frozenset()) -> SlotPlan:
    plan = jobs.reconcile(tables.get("services", svc_id), tables.service_tasks(svc_id), list(nodes), set(down))
    commit(tables, plan.ops)
    return plan


def job_tasks(tables: Tables, svc_id: str) -> list[dict]:
    return [x for x in tables.service_tasks(svc_id) if runnable(x)]


def test_a_replicated_job_runs_its_completions_max_concurrent_at_a_time():
    t = Tables()
    svc = make_service(t, mode="replicated-job", replicas=5, max_concurrent=2,
                       restart_policy=policy("any", delay=0))
    job_reconcile(t, svc["id"])
    assert sorted(x["slot"] for x in job_tasks(t, svc["id"])) == [1, 2]
    first = job_tasks(t, svc["id"])[0]
    set_status(t, first["id"], TaskState.COMPLETE, "n1")        # a success: done, not restarted
    job_reconcile(t, svc["id"])
    assert sorted(x["slot"] for x in job_tasks(t, svc["id"])) == [1, 2, 3]
    assert t.get("tasks", first["id"])["desired_state"] == RUNNING
    failing = next(x for x in job_tasks(t, svc["id"]) if x["slot"] == 2)
    set_status(t, failing["id"], TaskState.FAILED, "n1")          # a failure: restarted in its slot
    job_reconcile(t, svc["id"])
    assert t.get("tasks", failing["id"])["desired_state"] == SHUTDOWN
    assert sorted(x["slot"] for x in job_tasks(t, svc["id"])) == [1, 2, 3]
    for _ in range(4):
        for x in job_tasks(t, svc["id"]):
            if x["status"]["state"] < RUNNING:
                set_status(t, x["id"], TaskState.COMPLETE, "n1")
        job_reconcile(t, svc["id"])
    done = [x for x in job_tasks(t, svc["id"]) if x["status"]["state"] == int(TaskState.COMPLETE)]
    assert sorted(x["slot"] for x in done) == [1, 2, 3, 4, 5]
    assert job_reconcile(t, svc["id"]).ops == []                  # complete: nothing more


def test_a_changed_job_runs_again_and_a_global_job_once_per_node():
    t = Tables()
    svc = make_service(t, mode="replicated-job", replicas=1)
    job_reconcile(t, svc["id"])
    (task,) = job_tasks(t, svc["id"])
    set_status(t, task["id"], TaskState.COMPLETE, "n1")
    svc = update_service(t, t.get("services", svc["id"]), env=["RUN=2"])
    job_reconcile(t, svc["id"])
    assert t.get("tasks", task["id"])["desired_state"] == SHUTDOWN
    assert [x["spec"]["env"] for x in job_tasks(t, svc["id"])] == [["RUN=2"]]

    nodes = [{"id": n, "status": {"state": "ready"}, "spec": {"availability": "active", "role": "worker"}}
             for n in ("n1", "n2")]
    g = make_service(t, name="gj", mode="global-job")
    job_reconcile(t, g["id"], nodes)
    assert sorted(x["node_id"] for x in job_tasks(t, g["id"])) == ["n1", "n2"]
    for x in job_tasks(t, g["id"]):
        set_status(t, x["id"], TaskState.COMPLETE)
    assert job_reconcile(t, g["id"], nodes).ops == []


def test_stop_first_starts_the_replacement_only_once_the_old_task_stopped():
    t = Tables()
    svc = start_update(t, running_service(t, 2), image="busybox:2")
    reconcile(t, svc["id"])
    old = next(x for x in t.service_tasks(svc["id"]) if x["spec"]["image"] == "busybox" and x["slot"] == 1)
    new = next(x for x in t.service_tasks(svc["id"]) if x["spec"]["image"] == "busybox:2")
    assert old["desired_state"] == SHUTDOWN and new["desired_state"] == READY
    reconcile(t, svc["id"])                                 # the old container is still stopping
    assert t.get("tasks", new["id"])["desired_state"] == READY
    set_status(t, old["id"], TaskState.SHUTDOWN)
    reconcile(t, svc["id"])
    assert t.get("tasks", new["id"])["desired_state"] == RUNNING
    assert {slot: x["spec"]["image"] for slot, x in live(t, svc["id"]).items()} == {1: "busybox:2", 2: "busybox"}


def test_a_replacement_waiting_on_a_task_of_a_down_node_starts():
    t = Tables()
    svc = start_update(t, running_service(t, 1), image="busybox:2")
    reconcile(t, svc["id"])
    new = next(x for x in t.service_tasks(svc["id"]) if x["spec"]["image"] == "busybox:2")
    reconcile(t, svc["id"], down={"n1"})                   # the old one's node is gone: don't wait
    assert t.get("tasks", new["id"])["desired_state"] == RUNNING
