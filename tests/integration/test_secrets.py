"""Secrets and configs on real daemons: created with the CLI, seen as files in a task's
container, never shown by the API, never on disk in the clear, and only on the nodes
that run a task naming them."""
from __future__ import annotations

import os
import subprocess

import pytest

from swarmtest import LONG_RUNNING, running_tasks, wait_for

pytestmark = pytest.mark.integration

SECRET = "s3cr3t-pa55w0rd-do-not-print"


def _exec(cluster, container, *argv: str) -> str:
    run = cluster.docker.api.exec_create(container.id, list(argv))
    return cluster.docker.api.exec_start(run["Id"]).decode()


def _files_under(path: str) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(path) for f in files]


def _contains(path: str, needle: bytes) -> list[str]:
    hits = []
    for file in _files_under(path):
        try:
            with open(file, "rb") as f:
                if needle in f.read():
                    hits.append(file)
        except OSError:
            pass
    return hits


def test_a_secret_and_a_config_reach_the_container_as_files_and_nowhere_else(make_cluster, tmp_path):
    a = make_cluster(hostname="sec-a")
    b = make_cluster.join(a, "worker", hostname="sec-b")
    secret_id = a.ok("secret", "create", "--label", "team=db", "db_pw", "-", input=SECRET).strip()
    conf = tmp_path / "app.conf"
    conf.write_text("listen=8080\n")
    a.ok("config", "create", "app_conf", str(conf))
    assert "db_pw" in a.ok("secret", "ls") and "app_conf" in a.ok("config", "ls")

    status, shown = a.api("GET", "/secrets/db_pw")
    assert status == 200 and shown["id"] == secret_id and shown["spec"]["labels"] == {"team": "db"}
    assert "sealed" not in shown and "data" not in shown
    status, config = a.api("GET", "/configs/app_conf")
    assert status == 200 and config["data"] == "bGlzdGVuPTgwODAK"        # configs are not secret

    status, _ = a.api("POST", "/services", body={
        "name": "app", "image": a.image, "command": LONG_RUNNING, "replicas": 1, "stop_grace_period": 1,
        "constraints": ["node.hostname==sec-a"],
        "secrets": [{"source": "db_pw", "uid": "1000", "mode": 0o400}],
        "configs": [{"source": "app_conf", "target": "/etc/app.conf"}]})
    assert status == 201
    wait_for(lambda: len(running_tasks(a.tasks("app"))) == 1, timeout=60)
    (container,) = a.containers("app")
    assert _exec(a, container, "cat", "/run/secrets/db_pw") == SECRET
    assert _exec(a, container, "busybox", "stat", "-c", "%u %a", "/run/secrets/db_pw").split() == ["1000", "400"]
    assert _exec(a, container, "cat", "/etc/app.conf") == "listen=8080\n"
    sources = [m["Source"] for m in container.attrs["Mounts"] if m["Destination"] == "/run/secrets/db_pw"]
    assert sources and sources[0].startswith("/dev/shm/"), sources       # tmpfs, not disk

    # Only the node that runs the task got it.
    assert not _contains(f"/dev/shm/swarmpy/{b.node_id}", SECRET.encode())
    # Not in any API answer, not in a log, not on disk in the clear (the Raft journal included).
    for path in ("/services", "/tasks", "/secrets", "/nodes"):
        assert SECRET not in str(a.api("GET", path)[1]), path
    for node in (a, b):
        assert _contains(node.workdir, SECRET.encode()) == [], node.hostname
    assert SECRET not in subprocess.run(["docker", "inspect", container.id], capture_output=True,
                                        text=True).stdout

    result = a.cli("secret", "rm", "db_pw")
    assert result.rc != 0 and "secret 'db_pw' is in use by the following service: app" in result.err, result
    a.ok("service", "rm", "app")
    wait_for(lambda: not a.containers("app", all=True), timeout=30)
    assert a.ok("secret", "rm", "db_pw").strip() == "db_pw"
    assert not _files_under("/dev/shm/swarmpy/" + a.node_id), "the task's files were removed"


def test_a_service_naming_a_missing_secret_is_refused_whole(cluster):
    status, body = cluster.api("POST", "/services", body={
        "name": "needs-secret", "image": cluster.image, "command": LONG_RUNNING,
        "secrets": [{"source": "nope"}]})
    assert status == 404 and body["message"] == "secret not found: nope"
    assert "needs-secret" not in cluster.service_names()
    result = cluster.cli("secret", "create", "bad name", "-", input="x")
    assert result.rc != 0 and "invalid name" in result.err
    result = cluster.cli("secret", "create", "empty", "/dev/null")
    assert result.rc != 0 and "secret data must be larger than 0 and less than 500KB" in result.err
    cluster.ok("secret", "create", "twice", "-", input="x")
    result = cluster.cli("secret", "create", "twice", "-", input="y")
    assert result.rc != 0 and "secret twice already exists" in result.err
    cluster.ok("secret", "rm", "twice")


def test_secret_flags_of_service_create_and_update(cluster):
    cluster.ok("secret", "create", "flag_pw", "-", input="pw-1")
    cluster.ok("secret", "create", "flag_pw2", "-", input="pw-2")
    cluster.create("withflag", "--secret", "source=flag_pw,target=pw,mode=0400", "--stop-grace-period", "1s")
    wait_for(lambda: len(running_tasks(cluster.tasks("withflag"))) == 1, timeout=60)
    (container,) = cluster.containers("withflag")
    assert _exec(cluster, container, "cat", "/run/secrets/pw") == "pw-1"
    cluster.ok("service", "update", "--secret-rm", "flag_pw", "--secret-add", "source=flag_pw2,target=pw", "withflag")
    assert cluster.service("withflag")["spec"]["secrets"] == [
        {"source": "flag_pw2", "target": "pw", "uid": "0", "gid": "0", "mode": 0o444}]
    wait_for(lambda: [_exec(cluster, c, "cat", "/run/secrets/pw") for c in cluster.containers("withflag")]
             == ["pw-2"], timeout=60, message="the task replaced with the new secret")
    cluster.ok("service", "rm", "withflag")
    wait_for(lambda: cluster.cli("secret", "rm", "flag_pw", "flag_pw2").rc == 0, timeout=30)
