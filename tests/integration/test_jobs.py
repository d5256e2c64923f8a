"""Jobs on a real one-node cluster: tasks that run to completion (SwarmKit's job modes)."""
from __future__ import annotations

import pytest

from swarmtest import wait_for

pytestmark = pytest.mark.integration

COMPLETE = 576


def _row(cluster, name: str) -> str:
    return next(line for line in cluster.ok("service", "ls").splitlines() if f" {name} " in line)


def test_a_replicated_job_completes_its_runs_and_stays_done(cluster):
    cluster.ok("service", "create", "--name", "batch", "--mode", "replicated-job", "--replicas", "3",
               "--max-concurrent", "2", cluster.image, "sh", "-c", "sleep 1")
    wait_for(lambda: sum(t["status"]["state"] == COMPLETE for t in cluster.tasks("batch")) == 3,
             timeout=60, message="3 completions")
    row = _row(cluster, "batch")
    assert "replicated job" in row and "0/2 (3/3 completed)" in row, row
    assert len(cluster.tasks("batch")) == 3               # done: nothing restarted
    cluster.ok("service", "rm", "batch")


def test_a_global_job_runs_once_on_the_node_and_a_failing_one_is_retried_on_failure(cluster):
    cluster.ok("service", "create", "--name", "gjob", "--mode", "global-job", cluster.image, "true")
    wait_for(lambda: [t["status"]["state"] for t in cluster.tasks("gjob")] == [COMPLETE], timeout=60)
    assert "(1/1 completed)" in _row(cluster, "gjob")
    cluster.ok("service", "create", "--name", "flaky", "--mode", "replicated-job", "--restart-delay", "0s",
               "--restart-max-attempts", "2", cluster.image, "false")
    wait_for(lambda: len(cluster.tasks("flaky")) == 3 and all(t["status"]["state"] > 512 for t in
                                                             cluster.tasks("flaky")),
             timeout=60, message="the first run and its 2 retries")
    assert "(0/1 completed)" in _row(cluster, "flaky")
    cluster.ok("service", "rm", "gjob", "flaky")
