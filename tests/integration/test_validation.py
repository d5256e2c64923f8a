"""Bad input, as a user meets it: usage errors from the CLI (exit 125, docker's wording),
errors from the daemon (exit 1, `Error response from daemon: ...`), and the API's JSON
errors.  Every rejected request must leave the cluster as it was."""
from __future__ import annotations

import socket
import uuid

import pytest

from swarmtest import FAST, free_port_pair, running_tasks


@pytest.mark.parametrize("flags, message", [
    (["--replicas", "-1"], 'invalid argument "-1" for "--replicas" flag: must be a non-negative integer'),
    (["--reserve-memory", "12Q"], 'invalid argument "12Q" for "--reserve-memory" flag: invalid size: \'12Q\''),
    (["--foo"], "unknown flag: --foo"),
    (["--restart-delay", "soon"], 'invalid argument "soon" for "--restart-delay" flag: invalid duration'),
    (["--mode", "sometimes"], "invalid choice: 'sometimes'"),
])
def test_cli_usage_errors(cluster, flags, message):
    before = cluster.service_names()
    result = cluster.cli("service", "create", "--name", "badflags", *flags, cluster.image, "sleep", "1")
    assert result.rc == 125, str(result)
    assert result.out == ""
    assert result.err.splitlines()[0].startswith(message), result.err
    assert "Traceback" not in result.err
    assert cluster.service_names() == before
    assert "badflags" not in cluster.ok("service", "ls")


def test_api_malformed_json_is_400(cluster):
    before = cluster.service_names()
    status, body = cluster.api("POST", "/services", raw='{"name": "broken", "image": ')
    assert status == 400
    assert "malformed JSON" in body["message"]
    assert "line 1 column" in body["message"], body      # says where the problem is
    assert cluster.service_names() == before


@pytest.mark.parametrize("spec, field", [
    ({"name": "negreps", "image": "x", "replicas": -1}, "replicas"),
    ({"name": "strreps", "image": "x", "replicas": "3"}, "replicas"),
    ({"name": "noimage"}, "image"),
    ({"name": "badcond", "image": "x", "restart_policy": {"condition": "sometimes"}}, "restart_policy.condition"),
    ({"name": "badres", "image": "x", "reservations": {"memory_bytes": -5}}, "reservations.memory_bytes"),
    ({"name": "typo", "image": "x", "replica": 2}, "replica"),
    ({"name": "bad name!", "image": "x"}, "name"),
])
def test_api_invalid_spec_is_400_naming_the_field(cluster, spec, field):
    before = cluster.service_names()
    status, body = cluster.api("POST", "/services", spec)
    assert status == 400, body
    assert f"invalid service spec: {field}:" in body["message"], body
    assert cluster.service_names() == before


def test_unknown_service_is_a_daemon_error(cluster):
    for verb in (["inspect"], ["ps"], ["logs"], ["scale"]):
        args = ["service", *verb, "no-such-service" + ("=2" if verb == ["scale"] else "")]
        result = cluster.cli(*args)
        assert result.rc == 1, str(result)
        assert result.err.strip() == "Error response from daemon: service no-such-service not found", str(result)
    status, body = cluster.api("GET", "/services/no-such-service")
    assert status == 404 and body == {"message": "service no-such-service not found"}


def test_stale_version_update_is_409_and_changes_nothing(cluster):
    cluster.create("versioned", "--replicas", "1", *FAST)
    service = cluster.service("versioned")
    read_version = service["version"]

    spec = dict(service["spec"], replicas=2)
    status, updated = cluster.api("POST", f"/services/versioned/update?version={read_version}", spec)
    assert status == 200, updated
    # As docker answers (its warnings), with the new version for the next update.
    assert updated == {"id": service["id"], "version": updated["version"], "warnings": []}
    assert updated["version"] > read_version
    updated = cluster.service("versioned")
    assert updated["spec"]["replicas"] == 2

    # A second writer that read the same version loses.
    stale = dict(service["spec"], replicas=4, env=["STALE=1"])
    status, body = cluster.api("POST", f"/services/versioned/update?version={read_version}", stale)
    assert status == 409, body
    assert body["message"]
    after = cluster.service("versioned")
    assert after["version"] == updated["version"]
    assert after["spec"] == updated["spec"]
    assert after["spec"]["replicas"] == 2 and after["spec"]["env"] == []
    cluster.wait_for(lambda: len(running_tasks(cluster.tasks("versioned"))) == 2
                     and len(cluster.running_containers("versioned")) == 2, timeout=30,
                     message="2 running replicas")
    cluster.stays_true(lambda: len(cluster.tasks("versioned")) == 2, duration=1,
                       message="the stale update started no more tasks")

    # An update without a version is refused too.
    status, body = cluster.api("POST", "/services/versioned/update", dict(spec, replicas=3))
    assert status == 400 and "version" in body["message"]
    assert cluster.service("versioned")["spec"]["replicas"] == 2
    assert cluster.ok("service", "rm", "versioned").strip() == "versioned"


def test_init_when_already_initialised_is_refused(cluster, tmp_path):
    node_id = cluster.node_id
    # Same socket, same data dir.
    result = cluster.cli("init", "--data-dir", cluster.data_dir, "--listen-addr", "127.0.0.1:1",
                         "--hostname", "intruder")
    assert result.rc == 1, str(result)
    assert "already part of a swarm" in result.err
    # Same socket, a fresh data dir: the daemon answering is enough to refuse.
    result = cluster.cli("init", "--data-dir", str(tmp_path / "other"), "--listen-addr", "127.0.0.1:1",
                         "--hostname", "intruder")
    assert result.rc == 1, str(result)
    assert "already part of a swarm" in result.err
    assert not (tmp_path / "other" / "node.json").exists()
    # The running node is untouched.
    nodes = cluster.get("/nodes")
    assert [n["id"] for n in nodes] == [node_id]
    info = cluster.get("/info")
    assert info["node_id"] == node_id and info["node_state"] == "ready"
    assert cluster.daemon_alive()


def test_leave_without_force_is_refused_on_a_manager(cluster):
    result = cluster.cli("leave")
    assert result.rc == 1, str(result)
    assert result.err.startswith("Error response from daemon: You are attempting to leave the swarm")
    assert "Use `--force` to ignore this message." in result.err
    assert cluster.daemon_alive()
    assert cluster.get("/info")["node_state"] == "ready"


@pytest.mark.parametrize("holder, taken, refusal", [
    ("127.0.0.1", 0, "the cluster (dispatcher) port 127.0.0.1:{port} is not available"),
    ("127.0.0.1", 1, "the Raft port 127.0.0.1:{port} is not available"),
    # pysyncobj binds Raft on every interface: a port held only on another address passed
    # the daemon's check on the advertise address, then hung the daemon's start.
    ("127.0.0.2", 1, "the Raft port {port} is in use by another process"),
])
def test_init_on_a_taken_port_names_it_and_leaves_no_state(cluster, tmp_path, holder, taken, refusal):
    port = free_port_pair()
    with socket.socket() as squatter:
        squatter.bind((holder, port + taken))
        squatter.listen()
        data_dir = tmp_path / "d"
        result = cluster.cli("-H", f"unix:///tmp/swarmpy-unused-{uuid.uuid4().hex[:8]}.sock", "init",
                             "--data-dir", data_dir, "--listen-addr", f"127.0.0.1:{port}", host=False,
                             timeout=30)
    assert result.rc == 1, str(result)
    assert refusal.format(port=port + taken) in result.err and "--listen-addr" in result.err, str(result)
    assert not (data_dir / "node.json").exists() and not (data_dir / "raft").exists()


def test_init_with_a_bad_listen_address_is_a_usage_error(cluster, tmp_path):
    result = cluster.cli("-H", f"unix:///tmp/swarmpy-unused-{uuid.uuid4().hex[:8]}.sock", "init",
                         "--data-dir", tmp_path / "d", "--listen-addr", "127.0.0.1:http", host=False)
    assert result.rc == 125, str(result)
    assert result.err.startswith('invalid argument "127.0.0.1:http" for "--listen-addr" flag')
