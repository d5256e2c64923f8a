"""Generic resources declared at init (fake GPUs): each task reserving one gets its own id,
passed to the container as DOCKER_RESOURCE_NVIDIA_GPU, and a task that cannot get one
waits, pending, with swarm's reason."""
from __future__ import annotations

import pytest

from swarmtest import FAST, PENDING, running_tasks

FAKE_GPUS = ["GPU-fake-0", "GPU-fake-1"]


def _gpu_env(container) -> list[str]:
    return [e.split("=", 1)[1] for e in container.attrs["Config"]["Env"] or []
            if e.startswith("DOCKER_RESOURCE_NVIDIA_GPU=")]


def test_gpu_reservations_get_distinct_ids(make_cluster, docker_client):
    cluster = make_cluster(*[f"--generic-resource=NVIDIA-GPU={g}" for g in FAKE_GPUS])
    (node,) = cluster.get("/nodes")
    if node["description"].get("gpus"):
        pytest.skip("this host has real GPUs found by NVML; the fake-GPU scenario assumes none")
    assert node["description"]["resources"]["generic"] == {"NVIDIA-GPU": FAKE_GPUS}

    cluster.create("trainer", "--replicas", "3", "--generic-resource", "NVIDIA-GPU=1", *FAST)

    def two_running_one_pending():
        tasks = cluster.tasks("trainer")
        running = running_tasks(tasks)
        pending = [t for t in tasks if t["status"]["state"] == PENDING and t["status"]["err"]]
        if len(running) == 2 and len(pending) == 1 and len(cluster.running_containers("trainer")) == 2:
            return running, pending[0]
        return None

    running, pending = cluster.wait_for(two_running_one_pending, timeout=30,
                                        message="2 running tasks and 1 pending")
    assert pending["status"]["err"] == "no suitable node (insufficient resources on 1 node)"
    assert sorted(g for t in running for g in t["assigned_generic"]["NVIDIA-GPU"]) == FAKE_GPUS

    containers = cluster.running_containers("trainer")
    envs = sorted(tuple(_gpu_env(c)) for c in containers)
    assert envs == [("GPU-fake-0",), ("GPU-fake-1",)], envs
    # Each container's id is the one its task was assigned.
    by_container = {t["status"]["container_id"]: t for t in running}
    for container in containers:
        assert _gpu_env(container) == by_container[container.id]["assigned_generic"]["NVIDIA-GPU"]
        # No real device request for GPUs NVML did not find.
        assert not container.attrs["HostConfig"].get("DeviceRequests")

    lines = cluster.ok("service", "ps", "trainer").splitlines()[1:]
    pending_lines = [line for line in lines if "Pending" in line]
    assert len(pending_lines) == 1
    assert '"no suitable node (insufficient resources on 1 node)"' in pending_lines[0]
    # The pending task stays pending while both GPUs are taken.
    cluster.stays_true(lambda: len(running_tasks(cluster.tasks("trainer"))) == 2, duration=1,
                       message="still 2 running")

