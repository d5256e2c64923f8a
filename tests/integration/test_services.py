"""Services on a one-node cluster, as a user sees them: CLI output and exit codes, API JSON,
and the real containers on the Docker engine.  One cluster is shared by the module; every
test uses its own service names."""
from __future__ import annotations

import re
import subprocess
import sys

from swarmtest import COMPLETE, FAILED, FAST, LABEL_SLOT, LABEL_TASK, PENDING, REJECTED, RUNNING, running_tasks


def _table_rows(output: str) -> list[str]:
    lines = output.rstrip("\n").splitlines()
    return lines[1:]


def _ls_row(cluster, name: str) -> list[str]:
    rows = [line.split() for line in _table_rows(cluster.ok("service", "ls"))]
    matches = [r for r in rows if r[1] == name]
    assert len(matches) == 1, f"service ls shows {name} {len(matches)} times: {rows}"
    return matches[0]


def _wait_running(cluster, name: str, n: int, timeout: float = 30) -> list[dict]:
    """Until the service has exactly n tasks running and n running containers."""
    def settled():
        tasks = running_tasks(cluster.tasks(name))
        containers = cluster.running_containers(name)
        if len(tasks) == n and len(containers) == n:
            return tasks
        return None
    return cluster.wait_for(settled, timeout=timeout, message=f"{n} running tasks and containers of {name}")


def _rm_and_wait(cluster, name: str) -> None:
    assert cluster.ok("service", "rm", name).strip() == name
    cluster.wait_for(lambda: not cluster.containers(name, all=True), timeout=30,
                     message=f"the containers of {name} to be removed")


def test_create_three_replicas(cluster):
    service_id = cluster.create("web3", "--replicas", "3", *FAST)
    assert re.fullmatch(r"[a-z0-9]{25}", service_id), service_id

    tasks = _wait_running(cluster, "web3", 3)
    assert sorted(t["slot"] for t in tasks) == [1, 2, 3]
    assert all(t["node_id"] == cluster.node_id for t in tasks)

    # The containers are the tasks' containers, one per slot, labelled as swarm labels them.
    containers = cluster.running_containers("web3")
    by_task = {c.labels[LABEL_TASK]: c for c in containers}
    assert set(by_task) == {t["id"] for t in tasks}
    for t in tasks:
        container = by_task[t["id"]]
        assert container.id == t["status"]["container_id"]
        assert container.labels[LABEL_SLOT] == str(t["slot"])
        assert container.name == f"web3.{t['slot']}.{t['id']}"

    row = _ls_row(cluster, "web3")
    assert row[0] == service_id[:12]
    assert row[2:5] == ["replicated", "3/3", cluster.image]

    ps_rows = _table_rows(cluster.ok("service", "ps", "web3"))
    assert len(ps_rows) == 3
    for slot, line in enumerate(ps_rows, start=1):
        cells = line.split()
        assert cells[1] == f"web3.{slot}"
        assert cells[3] == cluster.hostname
        assert cells[4:6] == ["Running", "Running"], line

    # The API shows the same service.
    service = cluster.service("web3")
    assert service["id"] == service_id
    assert service["spec"]["replicas"] == 3
    assert service["spec"]["restart_policy"]["delay"] == 0.2
    assert service["spec"]["stop_grace_period"] == 1.0
    _rm_and_wait(cluster, "web3")


def test_scale_up_and_down(cluster):
    cluster.create("scaler", "--replicas", "3", *FAST)
    _wait_running(cluster, "scaler", 3)

    assert cluster.ok("service", "scale", "scaler=5").strip() == "scaler scaled to 5"
    tasks = _wait_running(cluster, "scaler", 5)
    assert sorted(t["slot"] for t in tasks) == [1, 2, 3, 4, 5]
    assert _ls_row(cluster, "scaler")[3] == "5/5"

    assert cluster.ok("service", "scale", "scaler=2").strip() == "scaler scaled to 2"
    # The containers of the removed slots go away, not just stop.
    cluster.wait_for(lambda: len(cluster.containers("scaler", all=True)) == 2, timeout=30,
                     message="scaler's containers to go down to 2")
    tasks = _wait_running(cluster, "scaler", 2)
    remaining = {c.labels[LABEL_TASK] for c in cluster.running_containers("scaler")}
    assert remaining == {t["id"] for t in tasks}
    assert _ls_row(cluster, "scaler")[3] == "2/2"
    assert cluster.service("scaler")["spec"]["replicas"] == 2
    _rm_and_wait(cluster, "scaler")


def test_rm_removes_every_container(cluster):
    cluster.create("doomed", "--replicas", "2", *FAST)
    _wait_running(cluster, "doomed", 2)

    assert cluster.ok("service", "rm", "doomed").strip() == "doomed"
    cluster.wait_for(lambda: not cluster.containers("doomed", all=True), timeout=30,
                     message="doomed's containers to be removed")
    assert "doomed" not in cluster.ok("service", "ls")
    status, body = cluster.api("GET", "/services/doomed")
    assert status == 404 and "not found" in body["message"]
    # Removing it again is an error the user sees.
    again = cluster.cli("service", "rm", "doomed")
    assert again.rc == 1 and "not found" in again.err


def test_killed_container_is_replaced(cluster, docker_client):
    cluster.create("victim", "--replicas", "2", *FAST)
    tasks = _wait_running(cluster, "victim", 2)
    killed_task = next(t for t in tasks if t["slot"] == 1)
    docker_client.containers.get(killed_task["status"]["container_id"]).kill()

    def replaced():
        current = cluster.tasks("victim")
        old = next(t for t in current if t["id"] == killed_task["id"])
        new = [t for t in running_tasks(current) if t["slot"] == 1 and t["id"] != killed_task["id"]]
        return (old, new[0]) if old["status"]["state"] == FAILED and new else None

    old, new = cluster.wait_for(replaced, timeout=30, message="slot 1's replacement to run")
    assert old["status"]["exit_code"] == 137
    assert old["status"]["err"] == "task: non-zero exit (137)"
    assert old["desired_state"] > RUNNING
    assert new["status"]["container_id"] != killed_task["status"]["container_id"]
    assert docker_client.containers.get(new["status"]["container_id"]).status == "running"
    _wait_running(cluster, "victim", 2)

    lines = _table_rows(cluster.ok("service", "ps", "victim"))
    failed = [line for line in lines if line.startswith(old["id"][:12])]
    assert len(failed) == 1, lines
    assert "\\_ victim.1" in failed[0]
    assert "Failed" in failed[0] and '"task: non-zero exit (137)"' in failed[0]
    current = [line for line in lines if line.startswith(new["id"][:12])]
    assert len(current) == 1 and "victim.1" in current[0] and "\\_" not in current[0]
    _rm_and_wait(cluster, "victim")


def test_global_service_one_task_on_the_node(cluster):
    cluster.create("everywhere", "--mode", "global", *FAST)
    tasks = _wait_running(cluster, "everywhere", 1)
    assert tasks[0]["node_id"] == cluster.node_id
    assert tasks[0]["slot"] is None
    # ... and it stays exactly one.
    cluster.stays_true(lambda: len(cluster.tasks("everywhere")) == 1
                       and len(cluster.containers("everywhere", all=True)) == 1, duration=1.5,
                       message="exactly one task and one container")
    row = _ls_row(cluster, "everywhere")
    assert row[2:4] == ["global", "1/1"]
    ps_rows = _table_rows(cluster.ok("service", "ps", "everywhere"))
    assert len(ps_rows) == 1 and ps_rows[0].split()[1] == f"everywhere.{cluster.node_id}"
    _rm_and_wait(cluster, "everywhere")


def test_restart_condition_none_leaves_crashed_task_down(cluster):
    cluster.create("once", "--restart-condition", "none", "--restart-delay", "0.1s",
                   command=["sh", "-c", "exit 1"])

    def failed():
        tasks = cluster.tasks("once")
        return tasks if tasks and tasks[0]["status"]["state"] == FAILED else None

    tasks = cluster.wait_for(failed, timeout=30, message="the task to fail")
    assert len(tasks) == 1
    assert tasks[0]["status"]["err"] == "task: non-zero exit (1)"
    # Many restart delays later: still the one task, nothing running.
    cluster.stays_true(lambda: len(cluster.tasks("once")) == 1 and not cluster.running_containers("once"),
                       duration=3, message="no replacement task")
    assert _ls_row(cluster, "once")[3] == "0/1"
    line = _table_rows(cluster.ok("service", "ps", "once"))
    assert len(line) == 1 and "Failed" in line[0] and '"task: non-zero exit (1)"' in line[0]
    _rm_and_wait(cluster, "once")


def test_on_failure_stops_after_max_attempts(cluster):
    cluster.create("flaky", "--restart-condition", "on-failure", "--restart-max-attempts", "2",
                   "--restart-delay", "0.2s", command=["sh", "-c", "exit 3"])

    def three_failed():
        tasks = cluster.tasks("flaky")
        return tasks if len(tasks) >= 3 and all(t["status"]["state"] == FAILED for t in tasks) else None

    cluster.wait_for(three_failed, timeout=40, message="three failed tasks")
    # The first run and two restarts; then no more.
    cluster.stays_true(lambda: len(cluster.tasks("flaky")) == 3, duration=3, message="exactly 3 tasks")
    tasks = cluster.tasks("flaky")
    assert all(t["status"]["state"] == FAILED and t["status"]["exit_code"] == 3 for t in tasks)
    assert all(t["slot"] == 1 for t in tasks)
    assert not cluster.running_containers("flaky")
    lines = _table_rows(cluster.ok("service", "ps", "flaky"))
    assert len(lines) == 3 and all('"task: non-zero exit (3)"' in line for line in lines)
    _rm_and_wait(cluster, "flaky")


def test_on_failure_does_not_restart_a_clean_exit(cluster):
    cluster.create("finisher", "--restart-condition", "on-failure", "--restart-delay", "0.1s",
                   command=["true"])
    cluster.wait_for(lambda: [t["status"]["state"] for t in cluster.tasks("finisher")] == [COMPLETE],
                     timeout=30, message="the task to complete")
    cluster.stays_true(lambda: len(cluster.tasks("finisher")) == 1, duration=2, message="no restart")
    _rm_and_wait(cluster, "finisher")


def _wait_pending(cluster, name: str, err: str) -> dict:
    def pending():
        tasks = cluster.tasks(name)
        return tasks[0] if tasks and tasks[0]["status"]["state"] == PENDING and tasks[0]["status"]["err"] else None

    task = cluster.wait_for(pending, timeout=30, message=f"{name}'s task to be pending with a reason")
    assert task["status"]["err"] == err
    assert task["node_id"] in (None, "")
    lines = _table_rows(cluster.ok("service", "ps", name))
    assert len(lines) == 1 and "Pending" in lines[0] and f'"{err}"' in lines[0], lines
    assert not cluster.containers(name, all=True)
    return task


def test_impossible_constraint_stays_pending(cluster):
    cluster.create("nowhere", "--constraint", "node.hostname==no-such-host", *FAST)
    task = _wait_pending(cluster, "nowhere", "no suitable node (scheduling constraints not satisfied on 1 node)")
    cluster.stays_true(lambda: [t["id"] for t in cluster.tasks("nowhere")] == [task["id"]]
                       and cluster.tasks("nowhere")[0]["status"]["state"] == PENDING, duration=1,
                       message="the one task stays pending")
    assert _ls_row(cluster, "nowhere")[3] == "0/1"
    _rm_and_wait(cluster, "nowhere")


def test_impossible_reservation_stays_pending(cluster):
    cluster.create("glutton", "--reserve-memory", "900G", *FAST)
    _wait_pending(cluster, "glutton", "no suitable node (insufficient resources on 1 node)")
    assert cluster.service("glutton")["spec"]["reservations"]["memory_bytes"] == 900 * 1024 ** 3
    _rm_and_wait(cluster, "glutton")


def test_pull_never_with_missing_image_is_rejected(cluster, docker_client):
    import docker.errors
    image = "swarmpy-test/no-such-image:never"
    try:
        docker_client.images.get(image)
        raise AssertionError(f"{image} unexpectedly exists")
    except docker.errors.ImageNotFound:
        pass
    cluster.create("ghost", "--pull", "never", "--restart-condition", "none", image=image,
                   command=["sleep", "1"])

    def rejected():
        tasks = cluster.tasks("ghost")
        return tasks[0] if tasks and tasks[0]["status"]["state"] == REJECTED else None

    task = cluster.wait_for(rejected, timeout=30, message="the task to be rejected")
    assert "No such image" in task["status"]["err"] and image in task["status"]["err"]
    lines = _table_rows(cluster.ok("service", "ps", "ghost"))
    assert "Rejected" in lines[0] and "No such image" in lines[0]
    assert not cluster.containers("ghost", all=True)
    # Never pulled.
    try:
        docker_client.images.get(image)
        raise AssertionError(f"{image} was pulled")
    except docker.errors.ImageNotFound:
        pass
    _rm_and_wait(cluster, "ghost")


def test_name_in_use_is_refused(cluster):
    first = cluster.create("dup", *FAST)
    again = cluster.cli("service", "create", "--name", "dup", cluster.image, "sleep", "1")
    assert again.rc == 1, str(again)
    assert again.err.startswith("Error response from daemon: ")
    assert "already exists" in again.err
    assert again.out == ""
    status, body = cluster.api("POST", "/services", {"name": "dup", "image": cluster.image})
    assert status == 409 and "already exists" in body["message"]
    matching = [s for s in cluster.get("/services") if s["spec"]["name"] == "dup"]
    assert [s["id"] for s in matching] == [first]
    _wait_running(cluster, "dup", 1)
    _rm_and_wait(cluster, "dup")


def test_logs_are_prefixed_with_task_and_host(cluster):
    cluster.create("talker", "--restart-condition", "none",
                   command=["sh", "-c", "echo first line; echo second line"])
    task = cluster.wait_for(lambda: next((t for t in cluster.tasks("talker")
                                          if t["status"]["state"] == COMPLETE), None),
                            timeout=30, message="the task to complete")
    prefix = f"talker.1.{task['id'][:12]}@{cluster.hostname}    | "
    out = cluster.ok("service", "logs", "talker", timeout=30)
    assert out.splitlines() == [prefix + "first line", prefix + "second line"]
    tail = cluster.ok("service", "logs", "--tail", "1", "talker", timeout=30)
    assert tail.splitlines() == [prefix + "second line"]
    _rm_and_wait(cluster, "talker")


def test_env_reaches_the_container(cluster):
    cluster.create("envy", "--env", "FOO=hello from env", "-e", "BAR=2", "--restart-condition", "none",
                   command=["sh", "-c", "echo \"FOO=$FOO BAR=$BAR\""])
    task = cluster.wait_for(lambda: next((t for t in cluster.tasks("envy")
                                          if t["status"]["state"] == COMPLETE), None),
                            timeout=30, message="the task to complete")
    out = cluster.ok("service", "logs", "envy", timeout=30)
    assert out.splitlines() == [f"envy.1.{task['id'][:12]}@{cluster.hostname}    | FOO=hello from env BAR=2"]
    (container,) = cluster.containers("envy", all=True)
    env = container.attrs["Config"]["Env"] or []
    assert "FOO=hello from env" in env and "BAR=2" in env
    _rm_and_wait(cluster, "envy")


def test_restart_delay_is_waited_out(cluster, docker_client):
    cluster.create("patient", "--restart-condition", "on-failure", "--restart-max-attempts", "1",
                   "--restart-delay", "2s", command=["sh", "-c", "exit 5"])

    def two_failed():
        tasks = cluster.tasks("patient")
        return tasks if len(tasks) == 2 and all(t["status"]["state"] == FAILED for t in tasks) else None

    tasks = cluster.wait_for(two_failed, timeout=40, message="the task and its one restart to fail")
    first, second = sorted(tasks, key=lambda t: t["created_at"])
    finished = _docker_time(docker_client.containers.get(first["status"]["container_id"]).attrs["State"]["FinishedAt"])
    started = _docker_time(docker_client.containers.get(second["status"]["container_id"]).attrs["State"]["StartedAt"])
    assert started - finished >= 1.9, f"restarted {started - finished:.2f}s after the failure, not after 2s"
    _rm_and_wait(cluster, "patient")


def _docker_time(text: str) -> float:
    """Docker's RFC 3339 timestamps with nanoseconds -> epoch seconds."""
    from datetime import datetime
    whole, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float("0." + (frac or "0"))


def test_logs_follow_streams_new_lines_and_stops_when_the_client_goes(cluster):
    # Ten ticks, then silence: a quiet stream is the case where only noticing the client's
    # departure (not a failed write) can stop the agent's reader.
    cluster.create("ticker", *FAST, command=["sh", "-c", "trap 'exit 0' TERM; for i in 1 2 3 4 5 6 7 8 9 10; "
                                                         "do echo tick $i; sleep 0.3; done; sleep 100000 & wait"])
    cluster.wait_for(lambda: running_tasks(cluster.tasks("ticker")), timeout=30, message="ticker to run")
    follower = subprocess.Popen([sys.executable, "-m", "swarmpy", "-H", cluster.host, "service", "logs",
                                 "-f", "--tail", "1", "ticker"], stdout=subprocess.PIPE, text=True,
                                env=cluster.env)
    try:
        first = int(follower.stdout.readline().rsplit("tick ", 1)[1])
        later = int(follower.stdout.readline().rsplit("tick ", 1)[1])
        later = int(follower.stdout.readline().rsplit("tick ", 1)[1])
        assert later >= first + 2, "follow keeps delivering lines written after it started"
        while "tick 10" not in follower.stdout.readline():
            pass
        assert cluster.get("/info")["log_readers"] == 1
    finally:
        follower.kill()
        follower.wait()
    cluster.wait_for(lambda: cluster.get("/info")["log_readers"] == 0, timeout=10,
                     message="the agent's log reader to stop")
    _rm_and_wait(cluster, "ticker")


def test_update_replaces_tasks_one_at_a_time(cluster, docker_client):
    v2 = "swarmpy-test/busybox:v2"
    docker_client.images.get(cluster.image).tag("swarmpy-test/busybox", "v2")
    try:
        cluster.create("rolling", "--replicas", "3", *FAST)
        cluster.wait_for(lambda: len(running_tasks(cluster.tasks("rolling"))) == 3, timeout=30,
                         message="3 running tasks")
        assert cluster.ok("service", "update", "--image", v2, "rolling").strip() == "rolling"
        worst = 0

        def done() -> bool:
            nonlocal worst
            live = running_tasks(cluster.tasks("rolling"))
            worst = max(worst, 3 - len(live))
            return len(live) == 3 and all(t["spec"]["image"] == v2 for t in live)

        cluster.wait_for(done, timeout=60, interval=0.05, message="all 3 tasks updated to v2")
        assert worst == 1, "with the default parallelism of 1, one slot at a time is down"
        assert {c.attrs["Config"]["Image"] for c in cluster.running_containers("rolling")} == {v2}
        _rm_and_wait(cluster, "rolling")
    finally:
        docker_client.images.remove(v2, noprune=True)
