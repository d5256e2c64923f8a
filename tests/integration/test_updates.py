"""Rolling updates and rollbacks on a real one-node cluster, as `service update`,
`service rollback` and `service inspect` show them (update_config, update_status)."""
from __future__ import annotations

import threading

import pytest

from swarmtest import running_tasks, wait_for

pytestmark = pytest.mark.integration

QUICK = ("--stop-grace-period", "1s", "--restart-delay", "0s")


def _state(cluster, name: str) -> dict:
    return cluster.service(name).get("update_status") or {}


def _envs(cluster, name: str) -> set[str]:
    return {",".join(t["spec"]["env"]) for t in running_tasks(cluster.tasks(name))}


def test_start_first_update_never_drops_below_the_replica_count_and_completes(cluster):
    cluster.create("sf", "--replicas", "3", "--update-order", "start-first", "--update-monitor", "1s",
                   "--env", "V=1", *QUICK)
    wait_for(lambda: len(running_tasks(cluster.tasks("sf"))) == 3, timeout=60)
    lowest, stop = [3], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            lowest[0] = min(lowest[0], len(cluster.running_containers("sf")))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cluster.ok("service", "update", "--env-add", "V=2", "sf")
    assert _state(cluster, "sf")["state"] == "updating"
    wait_for(lambda: _state(cluster, "sf").get("state") == "completed", timeout=60, message="update completed")
    stop.set()
    sampler.join()
    assert _envs(cluster, "sf") == {"V=2"} and len(running_tasks(cluster.tasks("sf"))) == 3
    assert lowest[0] >= 3, f"start-first went down to {lowest[0]} running containers"
    assert _state(cluster, "sf")["message"] == "update completed"
    cluster.ok("service", "rm", "sf")


def test_a_failing_update_rolls_back_by_itself_with_failure_action_rollback(cluster):
    cluster.create("rb", "--replicas", "2", "--update-failure-action", "rollback", "--update-monitor", "2s",
                   "--rollback-monitor", "1s", "--env", "V=good", *QUICK)
    wait_for(lambda: len(running_tasks(cluster.tasks("rb"))) == 2, timeout=60)
    # the new spec's tasks exit at once: a failure within the monitor period
    cluster.ok("service", "update", "--env-add", "V=bad", "--entrypoint", "false", "rb")
    wait_for(lambda: _state(cluster, "rb").get("state") == "rollback_completed", timeout=60,
             message="the update rolled back")
    service = cluster.service("rb")
    assert service["spec"]["env"] == ["V=good"] and service["previous_spec"]["env"] == ["V=bad"]
    wait_for(lambda: _envs(cluster, "rb") == {"V=good"} and len(running_tasks(cluster.tasks("rb"))) == 2,
             timeout=30)
    cluster.ok("service", "rm", "rb")


def test_a_failing_update_pauses_by_default_and_service_rollback_restores_it(cluster):
    cluster.create("pz", "--replicas", "3", "--update-monitor", "2s", "--env", "V=good", *QUICK)
    wait_for(lambda: len(running_tasks(cluster.tasks("pz"))) == 3, timeout=60)
    cluster.ok("service", "update", "--env-add", "V=bad", "--entrypoint", "false", "pz")
    wait_for(lambda: _state(cluster, "pz").get("state") == "paused", timeout=60, message="the update paused")
    assert _state(cluster, "pz")["message"].startswith("update paused due to failure or early termination of task ")
    # paused before every slot was replaced (the next slot starts once a replacement runs,
    # as in SwarmKit: a failure within the monitor period is seen after that)
    assert [t for t in running_tasks(cluster.tasks("pz")) if t["spec"]["env"] == ["V=good"]]

    out = cluster.ok("service", "rollback", "pz", timeout=90)
    assert out.splitlines()[:2] == ["pz", "rollback: manually requested rollback"], out
    assert "verify: Service pz converged" in out, out
    assert _envs(cluster, "pz") == {"V=good"} and len(running_tasks(cluster.tasks("pz"))) == 3
    wait_for(lambda: _state(cluster, "pz").get("state") == "rollback_completed", timeout=30)
    result = cluster.cli("service", "rollback", "pz", "-d")
    assert result.rc == 0                          # back again to the bad spec: docker allows it too
    cluster.ok("service", "rm", "pz")
