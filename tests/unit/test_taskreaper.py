"""swarmpy/manager/taskreaper.py: reap()."""
from __future__ import annotations

import itertools

import pytest

from raft.tables import Tables
from swarmpy.manager.taskreaper import reap
from swarmpy.models import TaskState

S = TaskState
_clock = itertools.count(1)


def task(slot=1, state=S.SHUTDOWN, desired=S.SHUTDOWN, node="n1", tid=None, service="s1") -> dict:
    n = next(_clock)
    return {"id": tid or f"t{n}", "service_id": service, "slot": slot, "node_id": node,
            "desired_state": int(desired), "status": {"state": int(state)}, "created_at": float(n)}


def history(slot: int, n: int, **kw) -> list[dict]:
    return [task(slot, S.FAILED, S.SHUTDOWN, **kw) for _ in range(n)]


def test_history_limit_five_per_slot_oldest_first():
    old = history(1, 6)
    current = task(1, S.RUNNING, S.RUNNING)
    doomed = reap(old + [current], 5)
    # 7 tasks in the slot, limit 5: the two oldest go
    assert doomed == [old[0]["id"], old[1]["id"]]


def test_under_the_limit_nothing_goes():
    tasks = history(1, 4) + [task(1, S.RUNNING, S.RUNNING)]
    assert reap(tasks, 5) == []


def test_limit_is_per_slot():
    s1 = history(1, 6)
    s2 = history(2, 3)
    s3 = history(3, 5) + [task(3, S.RUNNING, S.RUNNING)]
    doomed = set(reap(s1 + s2 + s3, 5))
    assert doomed == {s1[0]["id"], s3[0]["id"]}


def test_global_tasks_are_grouped_by_node():
    a = history(None, 7, node="a")
    b = history(None, 2, node="b")
    doomed = reap(a + b, 5)
    assert sorted(doomed) == sorted(t["id"] for t in a[:2])


def test_never_deletes_a_runnable_task():
    # a slot full of runnable tasks (e.g. held replacements): over the limit, yet none may go
    runnable = [task(1, st, d) for st, d in [(S.RUNNING, S.RUNNING), (S.NEW, S.READY), (S.PENDING, S.RUNNING),
                                             (S.FAILED, S.RUNNING), (S.COMPLETE, S.RUNNING)]]
    stopped = history(1, 3)
    doomed = reap(runnable + stopped, 5)
    assert not set(doomed) & {t["id"] for t in runnable}
    assert doomed == [t["id"] for t in stopped]
    assert reap(runnable, 0) == []


def test_never_deletes_a_task_still_running_while_being_stopped():
    stopping = task(1, S.RUNNING, S.SHUTDOWN)      # oldest, desired shutdown, container still up
    stopping["created_at"] = 0.0
    rest = history(1, 6)
    doomed = reap([stopping] + rest, 5)
    assert stopping["id"] not in doomed
    assert doomed == [rest[0]["id"], rest[1]["id"]]


def test_removed_tasks_go_once_stopped():
    stopped = task(4, S.SHUTDOWN, S.REMOVE)
    still_running = task(5, S.RUNNING, S.REMOVE)
    never_placed = task(6, S.PENDING, S.REMOVE, node=None)
    not_yet_assigned = task(7, S.NEW, S.REMOVE)
    doomed = reap([stopped, still_running, never_placed, not_yet_assigned], 5)
    assert sorted(doomed) == sorted([stopped["id"], never_placed["id"], not_yet_assigned["id"]])


@pytest.mark.parametrize("state", [S.ASSIGNED, S.ACCEPTED, S.PREPARING, S.READY, S.STARTING, S.RUNNING])
def test_removed_task_on_a_node_waits_until_it_stops(state):
    assert reap([task(9, state, S.REMOVE)], 5) == []


def test_removed_tasks_do_not_count_against_history():
    removed = [task(1, S.SHUTDOWN, S.REMOVE) for _ in range(3)]
    hist = history(1, 4)
    assert sorted(reap(removed + hist, 5)) == sorted(t["id"] for t in removed)


def test_history_limit_zero_deletes_all_stopped_history():
    hist = history(1, 3)
    current = task(1, S.RUNNING, S.RUNNING)
    assert sorted(reap(hist + [current], 0)) == sorted(t["id"] for t in hist)


def test_reap_ids_delete_cleanly_from_tables():
    t = Tables()
    tasks = history(1, 8) + [task(1, S.RUNNING, S.RUNNING), task(2, S.SHUTDOWN, S.REMOVE)]
    t.apply([{"op": "create", "kind": "tasks", "obj": x} for x in tasks])
    doomed = reap(t.service_tasks("s1"), 5)
    assert len(doomed) == 4 + 1
    result, _ = t.apply([{"op": "delete", "kind": "tasks", "id": i, "skip_missing": True} for i in doomed])
    assert result["ok"]
    left = t.service_tasks("s1")
    assert len(left) == 5
    assert any(x["desired_state"] == S.RUNNING for x in left)
    assert reap(left, 5) == []
