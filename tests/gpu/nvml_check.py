"""Run on a machine with an NVIDIA GPU: the real NVML path, from discovery to placement.

    PYTHONPATH=. python tests/gpu/nvml_check.py [--json OUT]

Needs only pynvml (nvidia-ml-py); no Docker engine.  It discovers the GPUs through
worker.resources (the code the agent runs), builds the node description the agent
registers, places tasks that reserve GPUs with the real scheduler pass, and checks
that each placed task gets its own UUID and the matching DOCKER_RESOURCE_NVIDIA_GPU.
Exit status 0 only if all of that holds.  The output is recorded in docs/gpu.md.
"""
from __future__ import annotations

import json
import platform
import sys

from swarmpy.manager.scheduler.nodeinfo import NodeInfo
from swarmpy.manager.scheduler.placement import place
from worker.resources import GPU_KIND, discover, discover_gpus


def resource_env(assigned: dict) -> list[str]:
    # Same rule as worker.controller.resource_env (imported lazily there with the docker SDK).
    from importlib import import_module
    try:
        return import_module("worker.controller").resource_env(assigned)
    except ImportError:
        return [f"DOCKER_RESOURCE_{k.upper().replace('-', '_')}={','.join(v)}" for k, v in assigned.items()]


def main() -> int:
    gpus, message = discover_gpus()
    report = {"python": platform.python_version(), "nvml": message, "gpus": [vars(g) for g in gpus]}
    resources = discover()
    node = {"id": "gpu-node", "spec": {"role": "manager", "availability": "active", "labels": {}},
            "status": {"state": "ready"}, "description": resources.description("gpu-host", {})}
    report["node_generic"] = node["description"]["resources"]["generic"]
    tasks = [{"id": f"t{i}", "service_id": "svc", "service_version": 1, "node_id": None, "slot": i + 1,
              "spec": {"reservations": {"generic": {GPU_KIND: 1}}}} for i in range(len(gpus) + 1)]
    decisions = place(tasks, {node["id"]: NodeInfo.build(node)})
    report["placements"] = [{"task": d.task["id"], "node": d.node_id, "assigned": d.assigned_generic,
                             "env": resource_env(d.assigned_generic) if d.node_id else [],
                             "explanation": d.explanation} for d in decisions]
    placed = [d for d in decisions if d.node_id]
    uuids = [u for d in placed for u in d.assigned_generic.get(GPU_KIND, [])]
    ok = (bool(gpus) and len(placed) == len(gpus) and sorted(uuids) == sorted(g.uuid for g in gpus)
          and "insufficient resources on 1 node" in decisions[-1].explanation)
    report["ok"] = ok
    text = json.dumps(report, indent=2)
    print(text)
    if "--json" in sys.argv:
        with open(sys.argv[sys.argv.index("--json") + 1], "w") as f:
            f.write(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
