"""The README's main job, `python -m swarmpy.demo`, against a node of its own: it deploys the
demo stack and its last step shows hello's tasks answered by web, by name, over the stack's
overlay network."""
from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_the_demo_deploys_its_stack_and_hello_gets_webs_page(make_cluster):
    node = make_cluster(hostname="demo-node")
    env = dict(node.env, SWARMPY_HOST=node.host)        # the demo uses the node answering there
    proc = subprocess.run([sys.executable, "-m", "swarmpy.demo"], capture_output=True, text=True, env=env,
                          timeout=240, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "$ swarmpy init" not in out
    replicas = {s["spec"]["name"]: s["replicas_status"] for s in node.get("/services")}
    assert replicas["demo_hello"] == {"running": 3, "desired": 3}
    assert replicas["demo_web"] == {"running": 1, "desired": 1}
    logs = out[out.index("$ swarmpy service logs"):]
    assert "web says: <h1>hello from a swarmpy stack</h1>" in logs, logs
    assert "bad address" not in logs
