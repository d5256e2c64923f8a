"""Node availability and labels, as an operator changes them with `node update`."""
from __future__ import annotations


from swarmpy.config import NodeConfig

from swarmtest import FAST, PENDING, running_tasks


def _pending_reason(cluster, service: str) -> str:
    tasks = [t for t in cluster.tasks(service) if t["desired_state"] <= 512 and t["status"]["state"] == PENDING]
    return tasks[0]["status"]["err"] if tasks else ""


def test_labels_and_drain(make_cluster):
    node = make_cluster()
    node.create("zoned", "--constraint", "node.labels.zone==a", *FAST)
    node.wait_for(lambda: "scheduling constraints not satisfied on 1 node" in _pending_reason(node, "zoned"),
                  timeout=20, message="the task to wait for a zone=a node")

    node.ok("node", "update", "--label-add", "zone=a", "self")
    node.wait_for(lambda: running_tasks(node.tasks("zoned")), timeout=30, message="the task to run once labelled")
    assert node.get(f"/nodes/{node.node_id}")["spec"]["labels"] == {"zone": "a"}

    node.ok("node", "update", "--availability", "drain", "self")
    node.wait_for(lambda: not node.running_containers("zoned"), timeout=30, message="drain to stop the task")
    node.wait_for(lambda: "1 node not available for new tasks" in _pending_reason(node, "zoned"),
                  timeout=20, message="the replacement to wait for an available node")
    assert "Drain" in node.ok("node", "ls")

    node.ok("node", "update", "--availability", "active", "self")
    node.wait_for(lambda: node.running_containers("zoned"), timeout=30, message="the task to run again")


def test_bad_node_update_is_refused_and_changes_nothing(make_cluster):
    node = make_cluster()
    before = node.get(f"/nodes/{node.node_id}")
    status, body = node.api("POST", f"/nodes/{node.node_id}/update?version={before['version']}",
                            body={"availability": "sometimes"})
    assert status == 400 and "availability" in body["message"]
    status, body = node.api("POST", f"/nodes/{node.node_id}/update?version={before['version'] - 1}",
                            body={"availability": "drain"})
    assert status == 409, body
    result = node.cli("node", "update", "--label-rm", "nope", "self")
    assert result.rc == 1 and "key nope doesn't exist in node's labels" in result.err
    assert node.get(f"/nodes/{node.node_id}")["spec"] == before["spec"]


def test_init_without_an_engine_says_so_and_leaves_nothing(make_cluster):
    node = make_cluster.node()
    node.env = dict(node.env, DOCKER_HOST=f"unix://{node.workdir}/no-dockerd.sock")
    result = node.cli("init", "--data-dir", node.data_dir, "--listen-addr", f"{node.addr}:{node._pick_port()}")
    assert result.rc != 0
    assert "cannot reach the Docker engine" in result.err and "start dockerd" in result.err, result
    assert not NodeConfig.exists(node.data_dir)      # the failed init left no node behind
    node.env.pop("DOCKER_HOST")
    node.init()                             # with the engine back, init works at once
    assert node.ok("node", "ls", "-q").strip() == node.node_id
