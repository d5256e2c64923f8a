"""Several nodes joined into one cluster, on loopback: each node a real daemon with its own
ports, data dir and Raft member, all running containers on this machine's engine (each
node's containers carry its node id).  The network-namespace harness (test_cluster_*.py)
covers what needs separate hosts: partitions and hosts that vanish."""
from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest

from raft.store import NO_LEADER
from swarmpy import ca, joining
from swarmtest import FAST, free_port_pair, LABEL_NODE, LABEL_SERVICE_NAME, running_tasks, stays_true, wait_for

pytestmark = pytest.mark.integration

NOT_A_MANAGER = "This node is not a swarm manager."
INVALID_TOKEN = "A valid join token is necessary to join this cluster"


@pytest.fixture(scope="module")
def swarm(module_cluster_factory):
    """Three managers and a worker; the third manager joins through a follower (redirected)."""
    f = module_cluster_factory
    a = f(hostname="mgr-a")
    b = f.join(a, "manager", hostname="mgr-b")
    c = f.node(hostname="mgr-c")
    c.join(b, "manager")
    w = f.join(a, "worker", hostname="wrk-1")
    return SimpleNamespace(a=a, b=b, c=c, w=w, managers=[a, b, c], nodes=[a, b, c, w], factory=f)


def leader_of(managers):
    for m in managers:
        if m.get("/info")["is_leader"]:
            return m
    return None


def running_on(docker, node_id: str, service: str) -> int:
    return len(docker.api.containers(filters={"label": [f"{LABEL_NODE}={node_id}",
                                                        f"{LABEL_SERVICE_NAME}={service}"]}))


def test_every_manager_sees_the_same_cluster_and_one_leader(swarm):
    for m in swarm.managers:
        nodes = wait_for(lambda: (ns := m.get("/nodes")) and all(n["status"]["state"] == "ready" for n in ns)
                         and len(ns) == 4 and ns, message="4 ready nodes")
        roles = {n["description"]["hostname"]: n["spec"]["role"] for n in nodes}
        assert roles == {"mgr-a": "manager", "mgr-b": "manager", "mgr-c": "manager", "wrk-1": "worker"}
        out = m.ok("node", "ls")
        assert out.count("Leader") == 1 and out.count("Reachable") == 2, out
        assert m.get("/info")["raft"]["members"] == sorted(f"127.0.0.1:{x.port + 1}" for x in swarm.managers)


def test_a_worker_answers_only_for_itself(swarm):
    result = swarm.w.cli("node", "ls")
    assert result.rc != 0 and NOT_A_MANAGER in result.err
    info = swarm.w.get("/info")
    assert info["role"] == "worker" and info["node_state"] == "ready"


def test_writes_through_a_follower_are_readable_there_at_once(swarm):
    follower = next(m for m in swarm.managers if not m.get("/info")["is_leader"])
    follower.create("spread", "--replicas", "8", *FAST)
    assert follower.service("spread")["spec"]["replicas"] == 8     # read-your-write on the follower
    # Spread: every node runs two of the eight.
    for node in swarm.nodes:
        wait_for(lambda: running_on(node.docker, node.node_id, "spread") == 2, timeout=60,
                 message=f"2 tasks of spread on {node.hostname}")
    for m in swarm.managers:
        wait_for(lambda: len(running_tasks(m.tasks("spread"))) == 8, timeout=10,
                 message=f"8 running tasks as {m.hostname} reports them")
    follower.ok("service", "rm", "spread")


def test_join_refusals_name_the_problem_and_leave_nothing(swarm):
    stranger = swarm.factory.node(hostname="stranger")
    remote = f"{swarm.a.addr}:{swarm.a.port}"
    good = swarm.a.ok("join-token", "-q", "worker").strip()

    wrong_secret = good[:-25] + "0" * 25
    result = stranger.try_join(remote, wrong_secret)
    assert result.rc != 0 and INVALID_TOKEN in result.err, result

    other_cluster = ca.new_join_token(ca.new_root("another-cluster").cert_pem)
    result = stranger.try_join(remote, other_cluster)
    assert result.rc != 0 and "digest does not match" in result.err, result

    result = stranger.try_join(remote, "SWMTKN-1-garbage")
    assert result.rc != 0 and "invalid join token" in result.err, result

    result = stranger.cli("info")
    assert result.rc != 0           # no daemon was started
    assert len(swarm.a.get("/nodes")) == 4


def test_a_manager_from_another_raft_wire_is_refused_and_nothing_is_stored(swarm):
    """A manager join from a swarmpy whose Raft port speaks another wire (one from before
    raft/wire.py sends no version) is refused by name: it would be a voter that reads none
    of the others' messages."""
    leader = leader_of(swarm.managers)
    token = leader.ok("join-token", "-q", "manager").strip()
    nodes, members = len(leader.get("/nodes")), leader.get("/info")["raft"]["members"]

    async def old_join() -> dict:
        addr = (leader.addr, leader.port)
        ca_pem = await joining.fetch_trusted_ca(addr, token)
        csr, _ = ca.new_key_and_csr()
        request = {"type": "join", "token": token, "csr": csr.decode(), "addr": "127.0.0.1",
                   "port": free_port_pair(), "hostname": "old-swarmpy", "labels": {}}
        return await joining._ask(addr, request, joining._verified(ca_pem))

    reply = asyncio.run(old_join())
    assert reply["type"] == "error", reply
    assert "Raft wire version 1" in reply["error"] and "same swarmpy on every manager" in reply["error"]
    assert len(leader.get("/nodes")) == nodes
    assert leader.get("/info")["raft"]["members"] == members


def test_rotated_token_stops_new_joins_but_not_members(swarm):
    old = swarm.b.ok("join-token", "-q", "worker").strip()
    out = swarm.b.ok("join-token", "--rotate", "worker")
    assert "Successfully rotated worker join token." in out
    new = swarm.c.ok("join-token", "-q", "worker").strip()
    assert new != old and new.split("-")[2] == old.split("-")[2]    # same CA digest, new secret

    late = swarm.factory.node(hostname="late")
    result = late.try_join(f"{swarm.a.addr}:{swarm.a.port}", old)
    assert result.rc != 0 and INVALID_TOKEN in result.err
    stays_true(lambda: swarm.a.get(f"/nodes/{swarm.w.node_id}")["status"]["state"] == "ready", 1.0,
               message="the existing worker stays ready")
    result = late.try_join(f"{swarm.a.addr}:{swarm.a.port}", new)
    assert result.rc == 0, result
    late._read_node_id()
    wait_for(lambda: swarm.a.get(f"/nodes/{late.node_id}")["status"]["state"] == "ready")


def test_node_rm_refuses_managers_and_live_nodes_then_revokes(swarm):
    extra = swarm.factory.join(swarm.a, "worker", hostname="doomed")
    wait_for(lambda: swarm.a.get(f"/nodes/{extra.node_id}")["status"]["state"] == "ready")
    swarm.a.create("pinned", "--replicas", "2", "--constraint", "node.hostname==doomed", *FAST)
    wait_for(lambda: running_on(extra.docker, extra.node_id, "pinned") == 2, timeout=60)
    out = swarm.a.ok("node", "ps", "doomed")
    assert out.count("pinned.") == 2 and "Running" in out

    result = swarm.a.cli("node", "rm", "mgr-b")
    assert result.rc != 0 and "It must be demoted to worker before removal" in result.err
    result = swarm.a.cli("node", "rm", "doomed")
    assert result.rc != 0 and "is not down and can't be removed" in result.err

    swarm.a.ok("node", "rm", "--force", "doomed")
    assert "doomed" not in swarm.a.ok("node", "ls")
    # Its certificate no longer opens a session: the node stays cut off.
    wait_for(lambda: extra.get("/info")["node_state"] == "down", timeout=15, message="removed node cut off")
    stays_true(lambda: extra.get("/info")["node_state"] == "down", 3.0)
    # Its tasks are replaced, but nowhere: the constraint names the removed node.
    wait_for(lambda: all(t["status"]["state"] < 512 for t in swarm.a.tasks("pinned")
                         if t["desired_state"] == 512), timeout=30)
    swarm.a.ok("service", "rm", "pinned")


def test_leader_kill_keeps_every_acknowledged_write(make_cluster):
    a = make_cluster("--dispatcher-heartbeat", "1s", hostname="fo-a")
    b = make_cluster.join(a, "manager", hostname="fo-b")
    c = make_cluster.join(a, "manager", hostname="fo-c")
    managers = [a, b, c]
    leader = leader_of(managers)
    followers = [m for m in managers if m is not leader]
    followers[0].create("counter", "--replicas", "1", *FAST)

    acknowledged = []
    for i in range(30):
        if i == 10:
            leader.kill_daemon()
        result = followers[i % 2].cli("service", "update", "--env-add", f"N={i}", "counter")
        if result.rc == 0:
            acknowledged.append(i)
    assert len(acknowledged) >= 25, acknowledged       # only writes during the election may fail
    wait_for(lambda: leader_of(followers) is not None, timeout=10, message="a new leader")
    for m in followers:
        # Each reads its own writes at once, the other's by the next heartbeat.
        wait_for(lambda: f"N={acknowledged[-1]}" in m.service("counter")["spec"]["env"], timeout=5,
                 message=f"the last acknowledged update on {m.hostname}")

    leader.restart_daemon()             # it comes back as a follower with the same state
    wait_for(lambda: leader.service("counter")["spec"]["env"] == followers[0].service("counter")["spec"]["env"],
             timeout=20, message="the old leader caught up")
    terms = [m.get("/info")["raft"]["term"] for m in managers]
    assert len(set(terms)) == 1, terms


def test_worker_loss_moves_its_tasks_and_its_return_removes_stale_ones(make_cluster):
    a = make_cluster("--dispatcher-heartbeat", "1s", hostname="wl-a")
    w = make_cluster.join(a, "worker", hostname="wl-w")
    a.ok("node", "update", "--availability", "drain", "wl-a")
    a.create("moving", "--replicas", "3", *FAST)
    wait_for(lambda: running_on(w.docker, w.node_id, "moving") == 3, timeout=60)
    a.ok("node", "update", "--availability", "active", "wl-a")

    w.kill_daemon()         # containers keep running: the engine does not know the daemon died
    wait_for(lambda: a.get(f"/nodes/{w.node_id}")["status"]["state"] == "down", timeout=15,
             message="the worker marked down")
    wait_for(lambda: running_on(a.docker, a.node_id, "moving") == 3, timeout=60,
             message="its tasks running on the manager")

    w.restart_daemon()
    wait_for(lambda: running_on(w.docker, w.node_id, "moving") == 0, timeout=30,
             message="the returned worker removed its stale containers")
    assert running_on(a.docker, a.node_id, "moving") == 3
    assert len(running_tasks(a.tasks("moving"))) == 3


def test_promote_and_demote_change_raft_membership_without_touching_tasks(make_cluster):
    a = make_cluster(hostname="pd-a")
    b = make_cluster.join(a, "worker", hostname="pd-b")
    a.create("stay", "--replicas", "2", "--constraint", "node.hostname==pd-b", *FAST)
    wait_for(lambda: len(running_tasks(a.tasks("stay"))) == 2, timeout=60)
    task_ids = {t["id"] for t in running_tasks(a.tasks("stay"))}

    assert "Node pd-b promoted to a manager in the swarm." in a.ok("node", "promote", "pd-b")
    wait_for(lambda: b.cli("info", "--format", "json").rc == 0 and b.get("/info")["role"] == "manager"
             and len(b.get("/info")["raft"]["members"]) == 2, timeout=30, message="pd-b a Raft member")
    out = b.ok("node", "ls")       # it answers for the cluster now
    assert out.count("Reachable") == 1 and out.count("Leader") == 1, out

    result = a.cli("node", "demote", "pd-a", "pd-b")     # the second would be the last manager
    assert result.rc != 0 and "attempting to demote the last manager of the swarm" in result.err, result
    # pd-a was demoted first (the leader hands leadership over); pd-b stays the one manager.
    wait_for(lambda: a.get("/info")["role"] == "worker", timeout=30, message="pd-a restarted as a worker")
    wait_for(lambda: b.get("/info")["raft"]["members"] == [f"127.0.0.1:{b.port + 1}"], timeout=30)
    assert NOT_A_MANAGER in a.cli("node", "ls").err
    assert b.get("/info")["is_leader"]
    stays_true(lambda: {t["id"] for t in running_tasks(b.tasks("stay"))} == task_ids, 2.0,
               message="the same two tasks kept running through both role changes")


def test_a_worker_finds_managers_that_joined_after_it_once_its_own_dies(make_cluster):
    a = make_cluster("--dispatcher-heartbeat", "1s", hostname="mf-a")
    w = make_cluster.join(a, "worker", hostname="mf-w")      # when a was the only manager
    b = make_cluster.join(a, "manager", hostname="mf-b")
    c = make_cluster.join(a, "manager", hostname="mf-c")
    everyone = {f"{m.addr}:{m.port}" for m in (a, b, c)}
    wait_for(lambda: set(w.get("/info")["managers"]) == everyone, timeout=10,
             message="the worker told of the managers that joined after it")

    a.kill_daemon()
    wait_for(lambda: leader_of([b, c]) is not None, timeout=15, message="a new leader")
    b.create("on-worker", "--replicas", "1", "--constraint", "node.role==worker", *FAST)
    wait_for(lambda: running_on(w.docker, w.node_id, "on-worker") == 1
             and len(running_tasks(b.tasks("on-worker"))) == 1, timeout=30,
             message="a task placed on the worker and running: its agent reached the new leader")
    assert w.get("/info")["node_state"] == "ready"


def test_all_managers_stopped_and_started_keep_the_cluster(make_cluster):
    a = make_cluster(hostname="rs-a")
    b = make_cluster.join(a, "manager", hostname="rs-b")
    c = make_cluster.join(a, "manager", hostname="rs-c")
    managers = [a, b, c]
    b.create("durable", "--replicas", "3", *FAST)
    wait_for(lambda: len(running_tasks(a.tasks("durable"))) == 3, timeout=60)
    before = {t["id"] for t in running_tasks(a.tasks("durable"))}
    term = max(m.get("/info")["raft"]["term"] for m in managers)

    # Two of three gone, the leader among them: the surviving follower shows the quorum
    # lost and refuses writes at once (pysyncobj would have it name the dead leader).
    survivor = next(m for m in managers if not m.get("/info")["is_leader"])
    for m in managers:
        if m is not survivor:
            m.kill_daemon()

    def manager_column() -> dict[str, str]:
        rows = [line.split() for line in survivor.ok("node", "ls").splitlines()[1:]]
        return {m.hostname: next((w for w in row if w in ("Leader", "Reachable", "Unreachable")), "")
                for m in managers for row in rows if m.hostname in row}

    expected = {m.hostname: "Reachable" if m is survivor else "Unreachable" for m in managers}
    wait_for(lambda: manager_column() == expected, timeout=10,
             message=f"node ls on {survivor.hostname}: no leader, the other two unreachable")
    started = time.monotonic()
    result = survivor.cli("service", "create", "--name", "no-quorum", "--replicas", "0", a.image, "true")
    assert result.rc != 0 and NO_LEADER in result.err, result
    assert time.monotonic() - started < 15
    survivor.kill_daemon()
    # Each start waits for a Raft leader, which needs two of the three: start them together.
    threads = [threading.Thread(target=m.restart_daemon) for m in managers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    wait_for(lambda: leader_of(managers) is not None, timeout=20, message="a leader after the restart")
    infos = [m.get("/info") for m in managers]
    assert all(i["raft"]["term"] > term for i in infos), infos         # terms only move forward
    assert len({i["raft"]["leader"] for i in infos}) == 1
    for m in managers:
        assert "durable" in m.service_names() and "no-quorum" not in m.service_names()
    stays_true(lambda: {t["id"] for t in running_tasks(a.tasks("durable"))} == before, 3.0,
               message="the same tasks run: reconciled, not restarted")


def test_a_leader_that_leaves_with_force_takes_its_raft_member_along(make_cluster):
    """Docker leaves the member behind (its docs warn of lost quorum); swarmpy demotes the
    leaving manager first, so the two left are a whole cluster of two."""
    a = make_cluster(hostname="lv-a")
    b = make_cluster.join(a, "manager", hostname="lv-b")
    c = make_cluster.join(a, "manager", hostname="lv-c")
    wait_for(lambda: len(b.get("/info")["raft"]["members"]) == 3, timeout=30)
    assert a.get("/info")["is_leader"]

    assert "Node left the swarm." in a.ok("leave", "--force", timeout=60)
    assert_taken_out_of_raft(a)
    gone = f"127.0.0.1:{a.port + 1}"
    for m in (b, c):
        wait_for(lambda: gone not in m.get("/info")["raft"]["members"]
                 and len(m.get("/info")["raft"]["members"]) == 2, timeout=30,
                 message=f"{m.hostname} has two Raft members")
    leader = leader_of([b, c])
    assert leader is not None
    leader.create("after-leave", "--replicas", "0")     # a write: the two have quorum
    wait_for(lambda: "Down" in next(l for l in leader.ok("node", "ls").splitlines() if "lv-a" in l),
             timeout=30, message="lv-a shown Down")
    row = next(l for l in leader.ok("node", "ls").splitlines() if "lv-a" in l)
    assert "Leader" not in row and "Reachable" not in row and "Unreachable" not in row, row
    assert "lv-a" in leader.ok("node", "inspect", "lv-a")     # still listed, as in docker
    leader.ok("node", "rm", "lv-a")       # a worker now and down: no demote, no --force

    # A follower leaving with force is taken out the same way, and knows it (it cannot see
    # its removal in its own log: the others just drop it).
    follower = c if leader is b else b
    assert "Node left the swarm." in follower.ok("leave", "--force", timeout=60)
    assert_taken_out_of_raft(follower)
    assert leader.get("/info")["raft"]["members"] == [f"127.0.0.1:{leader.port + 1}"]
    leader.create("after-follower-left", "--replicas", "0")


def assert_taken_out_of_raft(node) -> None:
    """The leaving daemon's own log says whether its Raft member was taken out."""
    log = node.log_tail(200)
    assert "left_raft" in log and "left_without_raft_removal" not in log, log
