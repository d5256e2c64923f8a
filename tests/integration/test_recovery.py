"""The daemon's own life: killed with -9 and started again (its containers are adopted,
not duplicated), and `leave --force` (every container goes, the daemon exits)."""
from __future__ import annotations

import os

import pytest

from swarmtest import FAILED, FAST, LABEL_TASK, RUNNING, running_tasks


def _snapshot(cluster, name: str) -> dict[str, str]:
    """task id -> container id, for the service's running tasks."""
    return {t["id"]: t["status"]["container_id"] for t in running_tasks(cluster.tasks(name))}


def test_kill9_and_restart_adopts_running_containers(make_cluster, docker_client):
    cluster = make_cluster()
    cluster.create("survivor", "--replicas", "3", *FAST)
    cluster.create("loner", "--mode", "global", *FAST)
    cluster.wait_for(lambda: len(_snapshot(cluster, "survivor")) == 3 and len(_snapshot(cluster, "loner")) == 1
                     and len(cluster.running_containers()) == 4, timeout=30,
                     message="3 + 1 running tasks and containers")
    services_before = {s["id"]: s["spec"] for s in cluster.get("/services")}
    tasks_before = {**_snapshot(cluster, "survivor"), **_snapshot(cluster, "loner")}
    containers_before = {c.id for c in cluster.running_containers()}
    assert containers_before == set(tasks_before.values())
    old_pid = cluster.pid

    cluster.kill_daemon()
    # The containers do not depend on the daemon.
    assert {c.id for c in cluster.running_containers()} == containers_before
    failed = cluster.cli("service", "ls")
    assert failed.rc == 1 and "Cannot connect to the swarmpy daemon" in failed.err

    out = cluster.restart_daemon()
    assert out.out.strip() == cluster.node_id
    assert cluster.pid != old_pid and cluster.daemon_alive()

    # Same services, same tasks, same containers, once the agent has reported back.
    def adopted():
        now = {**_snapshot(cluster, "survivor"), **_snapshot(cluster, "loner")}
        return now == tasks_before
    cluster.wait_for(adopted, timeout=30, message="the same tasks running in the same containers")
    assert {s["id"]: s["spec"] for s in cluster.get("/services")} == services_before

    # ... and it stays that way: no replacement tasks, no second containers.
    def unchanged():
        all_tasks = cluster.tasks("survivor") + cluster.tasks("loner")
        containers = cluster.containers(all=True)
        return ({t["id"] for t in all_tasks} == set(tasks_before)
                and all(t["status"]["state"] == RUNNING for t in all_tasks)
                and {c.id for c in containers} == containers_before
                and all(c.status == "running" for c in containers))
    cluster.stays_true(unchanged, duration=3, message="the adopted tasks and containers, nothing else")
    for container in cluster.containers(all=True):
        assert tasks_before[container.labels[LABEL_TASK]] == container.id

    # The agent really manages the adopted containers: scaling down stops and removes one,
    # and one that is killed is seen to fail and is replaced.
    assert cluster.ok("service", "scale", "survivor=2").strip() == "survivor scaled to 2"
    cluster.wait_for(lambda: len(_snapshot(cluster, "survivor")) == 2
                     and len(cluster.containers("survivor", all=True)) == 2, timeout=30,
                     message="an adopted replica stopped and removed by scaling down")
    assert {c.id for c in cluster.containers("survivor", all=True)} < containers_before
    (loner_task,) = _snapshot(cluster, "loner")
    docker_client.containers.get(tasks_before[loner_task]).kill()

    def loner_replaced():
        tasks = {t["id"]: t for t in cluster.tasks("loner")}
        return (tasks[loner_task]["status"]["state"] == FAILED and len(_snapshot(cluster, "loner")) == 1
                and loner_task not in _snapshot(cluster, "loner"))
    cluster.wait_for(loner_replaced, timeout=30, message="the killed adopted container's task replaced")
    assert {t["id"]: t for t in cluster.tasks("loner")}[loner_task]["status"]["exit_code"] == 137


def test_leave_force_removes_containers_and_stops_the_daemon(make_cluster):
    cluster = make_cluster()
    cluster.create("leaver", "--replicas", "2", *FAST)
    cluster.create("sleeper", command=["sleep", "100000"])       # ignores SIGTERM: leave must not wait for it
    cluster.wait_for(lambda: len(cluster.running_containers()) == 3, timeout=30, message="3 running containers")
    pid = cluster.pid

    result = cluster.cli("leave", "--force", timeout=30)
    assert result.rc == 0, str(result)
    assert result.out.strip() == "Node left the swarm."
    assert cluster.containers(all=True) == []
    # By the time leave returns, the node has forgotten the cluster: config, Raft state, keys.
    for name in ("node.json", "raft", "certificates"):
        assert not os.path.exists(os.path.join(cluster.data_dir, name)), name
    cluster.wait_for(lambda: not cluster.daemon_alive(), timeout=15, message=f"daemon pid {pid} to exit")
    assert not os.path.exists(cluster.socket)
    assert not os.path.exists(os.path.join(cluster.data_dir, "node.json"))
    gone = cluster.cli("service", "ls")
    assert gone.rc == 1 and "Cannot connect to the swarmpy daemon" in gone.err
    # Nothing comes back afterwards either.
    cluster.stays_true(lambda: cluster.containers(all=True) == [], duration=1, message="no containers")



def test_container_that_died_while_the_daemon_was_down_is_replaced(make_cluster, docker_client):
    cluster = make_cluster()
    cluster.create("phoenix", "--replicas", "2", *FAST)
    cluster.wait_for(lambda: len(_snapshot(cluster, "phoenix")) == 2
                     and len(cluster.running_containers("phoenix")) == 2, timeout=30,
                     message="2 running tasks and containers")
    before = _snapshot(cluster, "phoenix")
    tasks = {t["id"]: t for t in cluster.tasks("phoenix")}
    dead_task = next(tid for tid in before if tasks[tid]["slot"] == 1)
    survivor_task = next(tid for tid in before if tid != dead_task)

    cluster.kill_daemon()
    docker_client.containers.get(before[dead_task]).kill()
    cluster.restart_daemon()

    # The survivor is adopted; the task whose container died is reported failed and replaced.
    def recovered():
        current = {t["id"]: t for t in cluster.tasks("phoenix")}
        running = _snapshot(cluster, "phoenix")
        new = [tid for tid, t in current.items() if t["slot"] == 1 and tid in running]
        if (current[dead_task]["status"]["state"] == FAILED and running.get(survivor_task) == before[survivor_task]
                and len(new) == 1 and len(cluster.running_containers("phoenix")) == 2):
            return current[dead_task], current[new[0]]
        return None

    dead, replacement = cluster.wait_for(recovered, timeout=30, message="the dead task replaced, the other adopted")
    assert dead["status"]["err"] == "task: non-zero exit (137)"
    assert replacement["status"]["container_id"] not in before.values()
    running_ids = {c.id for c in cluster.running_containers("phoenix")}
    assert running_ids == {before[survivor_task], replacement["status"]["container_id"]}


def test_starting_a_second_daemon_for_a_running_node_is_refused(make_cluster):
    cluster = make_cluster()
    pid = cluster.pid
    result = cluster.cli("daemon", "-d", "--data-dir", cluster.data_dir, host=False, timeout=90)
    assert result.rc != 0, f"a second daemon was started for a running node:\n{result}"
    assert result.err.strip(), "the refusal says why"
    # The running daemon is untouched and still the one the pid file names.
    cluster.stays_true(lambda: cluster.pid == pid and cluster.daemon_pids() == {pid}, duration=2,
                       message="one daemon, named by the pid file")
    assert cluster.get("/info")["pid"] == pid
