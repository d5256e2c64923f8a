"""swarmpy/manager/scheduler/nodeinfo.py and placement.py: the pure placement pass."""
from __future__ import annotations

from collections import Counter

import pytest

from swarmpy.manager.scheduler.nodeinfo import NodeInfo
from swarmpy.manager.scheduler.placement import Decision, place
from swarmpy.models import Resources, ServiceSpec, TaskState, new_service, new_task, to_dict

GPU = "NVIDIA-GPU"
CPU = 10 ** 9
GiB = 1 << 30


def node(node_id: str, cpus: int = 4, memory: int = 8 * GiB, generic: dict | None = None, labels=None,
         state: str = "ready", availability: str = "active", role: str = "worker") -> dict:
    return {"id": node_id, "status": {"state": state},
            "spec": {"role": role, "availability": availability, "labels": labels or {}},
            "description": {"hostname": f"host-{node_id}", "platform": {"os": "linux", "arch": "x86_64"},
                            "engine": {"labels": {}},
                            "resources": {"nano_cpus": cpus * CPU, "memory_bytes": memory,
                                          "generic": generic or {}}}}


def gpu_node(node_id: str, count: int = 4, **kw) -> dict:
    return node(node_id, generic={GPU: [f"GPU-fake-{i}" for i in range(count)]}, **kw)


def service(name: str = "web", version: int = 1, **spec_fields) -> dict:
    spec = ServiceSpec(name=name, image="busybox")
    for key, value in spec_fields.items():
        setattr(spec, key, value)
    svc = new_service(spec)
    svc["version"] = version
    return svc


def pending(svc: dict, n: int, node_id: str | None = None) -> list[dict]:
    tasks = []
    for slot in range(1, n + 1):
        t = new_task(svc, slot if node_id is None else None, node_id)
        t["status"]["state"] = int(TaskState.PENDING)
        tasks.append(t)
    return tasks


def placed(svc: dict, node_id: str, assigned: dict | None = None, state: TaskState = TaskState.RUNNING,
           desired: TaskState = TaskState.RUNNING) -> dict:
    t = new_task(svc, 1, node_id, desired_state=desired)
    t["status"]["state"] = int(state)
    t["assigned_generic"] = assigned or {}
    return t


def infos_for(nodes: list[dict], tasks: list[dict] = ()) -> dict[str, NodeInfo]:
    return {n["id"]: NodeInfo.build(n, [t for t in tasks if t["node_id"] == n["id"]]) for n in nodes}


def per_node(decisions: list[Decision]) -> Counter:
    return Counter(d.node_id for d in decisions if d.node_id is not None)


def all_assigned_ids(decisions: list[Decision], kind: str = GPU) -> list[str]:
    return [i for d in decisions for i in d.assigned_generic.get(kind, [])]


# -- NodeInfo ---------------------------------------------------------------------------------

def test_nodeinfo_build_counts_only_placed_live_tasks():
    svc = service(reservations=Resources(nano_cpus=CPU, memory_bytes=GiB))
    spec = svc["spec"]
    n = node("n1", cpus=8, memory=16 * GiB)
    holding = [placed(svc, "n1", state=s) for s in (TaskState.ASSIGNED, TaskState.PREPARING, TaskState.RUNNING)]
    not_holding = [placed(svc, "n1", state=s) for s in (TaskState.NEW, TaskState.PENDING, TaskState.COMPLETE,
                                                        TaskState.FAILED, TaskState.SHUTDOWN)]
    info = NodeInfo.build(n, holding + not_holding)
    assert info.free_cpus == 5 * CPU
    assert info.free_memory == 13 * GiB
    assert info.service_tasks[svc["id"]] == 3 and info.total_tasks == 3
    assert spec["reservations"]["nano_cpus"] == CPU


def test_nodeinfo_held_restart_task_at_ready_still_counts():
    svc = service(reservations=Resources(nano_cpus=CPU))
    t = placed(svc, "n1", state=TaskState.READY, desired=TaskState.READY)
    assert NodeInfo.build(node("n1", cpus=2), [t]).free_cpus == CPU


def test_nodeinfo_named_and_discrete_generic():
    svc = service()
    n = node("n1", generic={GPU: ["GPU-fake-0", "GPU-fake-1", "GPU-fake-2"], "SSD": 3})
    t1 = placed(svc, "n1", {GPU: ["GPU-fake-1"], "SSD": 2})
    info = NodeInfo.build(n, [t1])
    assert info.free_generic == {GPU: ["GPU-fake-0", "GPU-fake-2"], "SSD": 1}
    assert info.fits({"generic": {GPU: 2, "SSD": 1}})
    assert not info.fits({"generic": {GPU: 3}})
    assert not info.fits({"generic": {"SSD": 2}})
    assert not info.fits({"generic": {"FPGA": 1}})
    assert info.fits({"generic": {"FPGA": 0}})
    assert info.claim_generic({"generic": {GPU: 2, "SSD": 1}}) == {GPU: ["GPU-fake-0", "GPU-fake-2"], "SSD": 1}
    # claiming does not take them: add_task does
    assert info.free_generic[GPU] == ["GPU-fake-0", "GPU-fake-2"]
    # the node's own description is never modified
    assert n["description"]["resources"]["generic"][GPU] == ["GPU-fake-0", "GPU-fake-1", "GPU-fake-2"]


def test_nodeinfo_is_ready():
    assert NodeInfo.build(node("n")).is_ready()
    assert not NodeInfo.build(node("n", state="down")).is_ready()
    assert not NodeInfo.build(node("n", state="unknown")).is_ready()
    assert not NodeInfo.build(node("n", availability="drain")).is_ready()


def test_nodeinfo_task_being_stopped_still_holds_its_resources():
    # SwarmKit: a task holds its resources until it has stopped (state > RUNNING), whatever its
    # desired state; only tasks meant to run count towards spreading and max replicas.
    svc = service(reservations=Resources(nano_cpus=CPU, generic={GPU: 1}))
    old = placed(svc, "n1", {GPU: ["GPU-fake-0"]}, state=TaskState.RUNNING, desired=TaskState.SHUTDOWN)
    info = NodeInfo.build(gpu_node("n1", count=2, cpus=1), [old])
    assert info.free_generic[GPU] == ["GPU-fake-1"]
    assert info.free_cpus == 0
    assert info.service_tasks[svc["id"]] == 0 and info.total_tasks == 0
    stopped = dict(old, status=dict(old["status"], state=int(TaskState.SHUTDOWN)))
    assert NodeInfo.build(gpu_node("n1", count=2, cpus=1), [stopped]).free_generic[GPU] == [
        "GPU-fake-0", "GPU-fake-1"]


def test_replacement_never_shares_a_gpu_with_a_task_being_stopped():
    old_svc = service("train", version=1, reservations=Resources(generic={GPU: 1}))
    old = placed(old_svc, "n1", {GPU: ["GPU-fake-0"]}, desired=TaskState.SHUTDOWN)
    new_svc = dict(old_svc, version=2)
    decisions = place(pending(new_svc, 2), infos_for([gpu_node("n1", count=2)], [old]))
    assert decisions[0].assigned_generic == {GPU: ["GPU-fake-1"]}
    # the second replacement waits until the old container has stopped
    assert decisions[1].node_id is None
    assert decisions[1].explanation == "no suitable node (insufficient resources on 1 node)"


def test_task_being_stopped_does_not_count_for_max_replicas():
    svc = service(max_replicas_per_node=1)
    old = placed(svc, "a", desired=TaskState.SHUTDOWN)
    decisions = place(pending(svc, 1), infos_for([node("a")], [old]))
    assert decisions[0].node_id == "a"


# -- spreading --------------------------------------------------------------------------------

def test_ten_tasks_over_five_equal_nodes_get_two_each():
    nodes = [node(f"n{i}") for i in range(5)]
    decisions = place(pending(service(), 10), infos_for(nodes))
    assert len(decisions) == 10
    assert all(d.node_id and d.explanation == "" for d in decisions)
    assert per_node(decisions) == {f"n{i}": 2 for i in range(5)}


def test_infos_are_updated_with_what_was_placed():
    nodes = [node("a"), node("b")]
    infos = infos_for(nodes)
    svc = service()
    place(pending(svc, 3), infos)
    assert infos["a"].service_tasks[svc["id"]] + infos["b"].service_tasks[svc["id"]] == 3
    assert infos["a"].total_tasks + infos["b"].total_tasks == 3


def test_spread_accounts_for_tasks_already_placed():
    svc = service()
    nodes = [node("a"), node("b"), node("c")]
    existing = [placed(svc, "a") for _ in range(3)]
    decisions = place(pending(svc, 3), infos_for(nodes, existing))
    counts = per_node(decisions)
    assert counts["a"] == 0
    assert counts["b"] + counts["c"] == 3 and abs(counts["b"] - counts["c"]) <= 1


def test_spread_prefers_nodes_with_fewer_tasks_in_all():
    other = service("other")
    nodes = [node("a"), node("b")]
    existing = [placed(other, "a") for _ in range(4)]
    decisions = place(pending(service(), 2), infos_for(nodes, existing))
    # same number of this service's tasks (0 each): the emptier node first, then balance by service
    assert decisions[0].node_id == "b"
    assert per_node(decisions) == {"a": 1, "b": 1}


def test_spread_preference_balances_zones():
    nodes = [node("a1", labels={"zone": "a"}),
             node("b1", labels={"zone": "b"}), node("b2", labels={"zone": "b"}), node("b3", labels={"zone": "b"})]
    svc = service(preferences=["spread=node.labels.zone"])
    decisions = place(pending(svc, 6), infos_for(nodes))
    zone = {n["id"]: n["spec"]["labels"]["zone"] for n in nodes}
    by_zone = Counter(zone[d.node_id] for d in decisions)
    assert by_zone == {"a": 3, "b": 3}
    counts = per_node(decisions)
    assert counts["a1"] == 3 and counts["b1"] == counts["b2"] == counts["b3"] == 1


def test_spread_preference_counts_existing_tasks_per_zone():
    svc = service(preferences=["spread=node.labels.zone"])
    nodes = [node("a1", labels={"zone": "a"}), node("a2", labels={"zone": "a"}), node("b1", labels={"zone": "b"})]
    existing = [placed(svc, "a1"), placed(svc, "a2")]
    decisions = place(pending(svc, 2), infos_for(nodes, existing))
    assert per_node(decisions) == {"b1": 2}


def test_spread_preference_nodes_without_label_form_their_own_group():
    svc = service(preferences=["spread=node.labels.zone"])
    nodes = [node("a1", labels={"zone": "a"}), node("x1"), node("x2")]
    decisions = place(pending(svc, 4), infos_for(nodes))
    counts = per_node(decisions)
    assert counts["a1"] == 2 and counts["x1"] + counts["x2"] == 2


def test_two_level_spread():
    svc = service(preferences=["spread=node.labels.dc", "spread=node.labels.rack"])
    nodes = [node("d1r1", labels={"dc": "1", "rack": "1"}), node("d1r2", labels={"dc": "1", "rack": "2"}),
             node("d2r1", labels={"dc": "2", "rack": "1"})]
    decisions = place(pending(svc, 4), infos_for(nodes))
    counts = per_node(decisions)
    assert counts["d1r1"] + counts["d1r2"] == 2 and counts["d2r1"] == 2


# -- filters in placement -------------------------------------------------------------------

def test_constraints_limit_nodes():
    svc = service(constraints=["node.role==manager"])
    nodes = [node("m", role="manager"), node("w1"), node("w2")]
    decisions = place(pending(svc, 3), infos_for(nodes))
    assert per_node(decisions) == {"m": 3}


def test_no_node_matches_constraints():
    svc = service(constraints=["node.labels.gpu==true"])
    decisions = place(pending(svc, 2), infos_for([node("a"), node("b")]))
    assert [d.node_id for d in decisions] == [None, None]
    assert {d.explanation for d in decisions} == {
        "no suitable node (scheduling constraints not satisfied on 2 nodes)"}
    assert all(d.assigned_generic == {} for d in decisions)


def test_no_nodes_at_all():
    decisions = place(pending(service(), 1), {})
    assert decisions[0].node_id is None and decisions[0].explanation == "no suitable node"


def test_down_and_drained_nodes_get_nothing():
    nodes = [node("up"), node("down", state="down"), node("drained", availability="drain")]
    decisions = place(pending(service(), 4), infos_for(nodes))
    assert per_node(decisions) == {"up": 4}
    only_down = place(pending(service(), 1), infos_for(nodes[1:]))
    assert only_down[0].explanation == "no suitable node (2 nodes not available for new tasks)"


def test_max_replicas_per_node():
    svc = service(max_replicas_per_node=2)
    nodes = [node("a"), node("b")]
    decisions = place(pending(svc, 5), infos_for(nodes))
    assert per_node(decisions) == {"a": 2, "b": 2}
    assert decisions[-1].node_id is None
    assert decisions[-1].explanation == "no suitable node (max replicas per node limit exceed on 2 nodes)"


def test_max_replicas_per_node_counts_existing_tasks():
    svc = service(max_replicas_per_node=1)
    nodes = [node("a"), node("b")]
    decisions = place(pending(svc, 2), infos_for(nodes, [placed(svc, "a")]))
    assert [d.node_id for d in decisions] == ["b", None]
    assert decisions[1].explanation == "no suitable node (max replicas per node limit exceed on 2 nodes)"


def test_cpu_reservations_exhaust_a_node():
    svc = service(reservations=Resources(nano_cpus=CPU))
    decisions = place(pending(svc, 3), infos_for([node("a", cpus=2)]))
    assert [d.node_id for d in decisions] == ["a", "a", None]
    assert decisions[2].explanation == "no suitable node (insufficient resources on 1 node)"


def test_memory_reservations_exhaust_nodes():
    svc = service(reservations=Resources(memory_bytes=3 * GiB))
    nodes = [node("a", memory=4 * GiB), node("b", memory=7 * GiB)]
    decisions = place(pending(svc, 4), infos_for(nodes))
    assert per_node(decisions) == {"a": 1, "b": 2}
    assert decisions[-1].explanation == "no suitable node (insufficient resources on 2 nodes)"


def test_reservations_count_existing_tasks_of_other_services():
    big = service("big", reservations=Resources(nano_cpus=3 * CPU))
    svc = service(reservations=Resources(nano_cpus=2 * CPU))
    nodes = [node("a", cpus=4), node("b", cpus=4)]
    decisions = place(pending(svc, 3), infos_for(nodes, [placed(big, "a")]))
    assert per_node(decisions) == {"b": 2}
    assert decisions[-1].node_id is None


def test_mixed_reasons():
    svc = service(constraints=["node.labels.zone==a"], reservations=Resources(nano_cpus=4 * CPU))
    nodes = [node("down", state="down", labels={"zone": "a"}), node("wrongzone", labels={"zone": "b"}),
             node("small", cpus=2, labels={"zone": "a"}), node("fits", cpus=4, labels={"zone": "a"})]
    decisions = place(pending(svc, 2), infos_for(nodes))
    assert decisions[0].node_id == "fits"
    assert decisions[1].node_id is None
    # 'fits' is full after the first task: charged to resources too.  SwarmKit's order:
    # most rejected nodes first, ties in pipeline order.
    assert decisions[1].explanation == ("no suitable node (insufficient resources on 2 nodes; "
                                        "1 node not available for new tasks; "
                                        "scheduling constraints not satisfied on 1 node)")


def test_different_services_are_placed_as_separate_groups():
    a, b = service("a"), service("b")
    tasks = pending(a, 2) + pending(b, 2)
    decisions = place(tasks, infos_for([node("x"), node("y")]))
    assert [d.task["id"] for d in decisions] == [t["id"] for t in tasks]
    assert per_node(decisions) == {"x": 2, "y": 2}
    assert {d.node_id for d in decisions[:2]} == {"x", "y"}
    assert {d.node_id for d in decisions[2:]} == {"x", "y"}


def test_preassigned_global_task_only_checked_against_its_node():
    svc = service(mode="global", reservations=Resources(nano_cpus=2 * CPU))
    nodes = [node("a", cpus=1), node("b", cpus=4)]
    infos = infos_for(nodes)
    decisions = place(pending(svc, 1, node_id="a") + pending(svc, 1, node_id="b"), infos)
    assert decisions[0].node_id is None
    assert decisions[0].explanation == "no suitable node (insufficient resources on 1 node)"
    assert decisions[1].node_id == "b"
    assert place(pending(svc, 1, node_id="gone"), infos)[0].explanation == "no suitable node"


# -- GPUs: named generic resources ---------------------------------------------------------------

def test_gpu_tasks_get_distinct_uuids():
    svc = service(reservations=Resources(generic={GPU: 1}))
    decisions = place(pending(svc, 5), infos_for([gpu_node("g", 4)]))
    ids = all_assigned_ids(decisions)
    assert sorted(ids) == [f"GPU-fake-{i}" for i in range(4)]
    assert all(len(d.assigned_generic[GPU]) == 1 for d in decisions[:4])
    assert decisions[4].node_id is None and decisions[4].assigned_generic == {}
    assert decisions[4].explanation == "no suitable node (insufficient resources on 1 node)"


def test_gpu_tasks_reserving_two():
    svc = service(reservations=Resources(generic={GPU: 2}))
    decisions = place(pending(svc, 3), infos_for([gpu_node("g", 4)]))
    assert [len(d.assigned_generic.get(GPU, [])) for d in decisions] == [2, 2, 0]
    ids = all_assigned_ids(decisions)
    assert len(ids) == len(set(ids)) == 4
    assert all(len(set(d.assigned_generic[GPU])) == 2 for d in decisions[:2])
    assert decisions[2].explanation == "no suitable node (insufficient resources on 1 node)"


def test_gpu_tasks_avoid_uuids_held_by_placed_tasks():
    other = service("other", reservations=Resources(generic={GPU: 1}))
    existing = [placed(other, "g", {GPU: ["GPU-fake-0"]}, state=TaskState.ASSIGNED),
                placed(other, "g", {GPU: ["GPU-fake-2"]}, state=TaskState.RUNNING)]
    svc = service(reservations=Resources(generic={GPU: 2}))
    decisions = place(pending(svc, 2), infos_for([gpu_node("g", 4)], existing))
    assert decisions[0].node_id == "g"
    assert sorted(decisions[0].assigned_generic[GPU]) == ["GPU-fake-1", "GPU-fake-3"]
    assert decisions[1].node_id is None
    assert decisions[1].explanation == "no suitable node (insufficient resources on 1 node)"


def test_gpu_uuids_of_finished_tasks_are_free_again():
    other = service("other", reservations=Resources(generic={GPU: 1}))
    existing = [placed(other, "g", {GPU: ["GPU-fake-0"]}, state=TaskState.FAILED),
                placed(other, "g", {GPU: ["GPU-fake-1"]}, state=TaskState.COMPLETE)]
    svc = service(reservations=Resources(generic={GPU: 2}))
    decisions = place(pending(svc, 1), infos_for([gpu_node("g", 2)], existing))
    assert sorted(decisions[0].assigned_generic[GPU]) == ["GPU-fake-0", "GPU-fake-1"]


def test_gpu_tasks_spread_over_gpu_nodes_and_skip_nodes_without_gpus():
    svc = service(reservations=Resources(generic={GPU: 1}))
    nodes = [gpu_node("g1", 2), gpu_node("g2", 2), node("cpu-only")]
    decisions = place(pending(svc, 5), infos_for(nodes))
    assert per_node(decisions) == {"g1": 2, "g2": 2}
    for nid in ("g1", "g2"):
        ids = [i for d in decisions if d.node_id == nid for i in d.assigned_generic[GPU]]
        assert sorted(ids) == ["GPU-fake-0", "GPU-fake-1"]
    assert decisions[-1].explanation == "no suitable node (insufficient resources on 3 nodes)"


def test_gpu_placement_over_several_passes_never_shares():
    """Each pass rebuilds NodeInfo from the tasks placed before, as the scheduler does."""
    svc = service(reservations=Resources(generic={GPU: 1}))
    nodes = [gpu_node("g", 4)]
    placed_tasks: list[dict] = []
    for _ in range(5):
        (d,) = place(pending(svc, 1), infos_for(nodes, placed_tasks))
        if d.node_id is None:
            assert d.explanation == "no suitable node (insufficient resources on 1 node)"
            break
        t = d.task
        t["node_id"], t["assigned_generic"] = d.node_id, d.assigned_generic
        t["status"]["state"] = int(TaskState.ASSIGNED)
        placed_tasks.append(t)
    ids = [i for t in placed_tasks for i in t["assigned_generic"][GPU]]
    assert sorted(ids) == [f"GPU-fake-{i}" for i in range(4)]


def test_gpu_and_cpu_together():
    svc = service(reservations=Resources(nano_cpus=2 * CPU, generic={GPU: 1}))
    decisions = place(pending(svc, 3), infos_for([gpu_node("g", 4, cpus=4)]))
    assert [d.node_id for d in decisions] == ["g", "g", None]
    assert decisions[2].explanation == "no suitable node (insufficient resources on 1 node)"


# -- discrete generic resources ---------------------------------------------------------------

def test_discrete_generic_resources():
    svc = service(reservations=Resources(generic={"SSD": 2}))
    decisions = place(pending(svc, 3), infos_for([node("a", generic={"SSD": 5})]))
    assert [d.node_id for d in decisions] == ["a", "a", None]
    assert decisions[0].assigned_generic == {"SSD": 2}
    assert decisions[2].explanation == "no suitable node (insufficient resources on 1 node)"


def test_discrete_generic_resources_held_by_placed_tasks():
    other = service("other")
    existing = [placed(other, "a", {"SSD": 3})]
    svc = service(reservations=Resources(generic={"SSD": 2}))
    decisions = place(pending(svc, 2), infos_for([node("a", generic={"SSD": 5})], existing))
    assert [d.node_id for d in decisions] == ["a", None]


def test_task_spec_round_trip_keeps_reservations():
    svc = service(reservations=Resources(generic={GPU: 1}))
    assert to_dict(Resources(generic={GPU: 1})) == svc["spec"]["reservations"]
