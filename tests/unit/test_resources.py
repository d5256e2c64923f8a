"""worker/resources.py and the pure helpers of worker/controller.py.

GPU discovery has a fake behind the same interface: `discover(gpus=([GPU(...)], msg))`
replaces NVML, so GPU scheduling is testable on machines without NVIDIA GPUs.
"""
from __future__ import annotations

import os

import pytest

from swarmpy.manager.scheduler.nodeinfo import NodeInfo
from swarmpy.manager.scheduler.placement import place
from swarmpy.models import Resources, ServiceSpec, TaskState, new_service, new_task
from worker.controller import container_name, resource_env
from worker.resources import GPU, GPU_KIND, NodeResources, discover, discover_gpus, parse_generic_resources


def fake_gpus(n: int, prefix: str = "GPU-nvml") -> list[GPU]:
    return [GPU(uuid=f"{prefix}-{i}", name="Fake H100", memory_mib=81559, index=i) for i in range(n)]


# -- parse_generic_resources ---------------------------------------------------------------

def test_parse_named_resources():
    assert parse_generic_resources(["NVIDIA-GPU=GPU-fake-0", "NVIDIA-GPU=GPU-fake-1"]) == {
        "NVIDIA-GPU": ["GPU-fake-0", "GPU-fake-1"]}


def test_parse_discrete_resources():
    assert parse_generic_resources(["SSD=2", "FPGA=10"]) == {"SSD": 2, "FPGA": 10}


def test_parse_mixed_kinds():
    assert parse_generic_resources(["SSD=2", "NVIDIA-GPU=GPU-a", "NVIDIA-GPU=GPU-b"]) == {
        "SSD": 2, "NVIDIA-GPU": ["GPU-a", "GPU-b"]}


def test_parse_value_may_contain_equals():
    assert parse_generic_resources(["K=a=b"]) == {"K": ["a=b"]}


def test_parse_nothing():
    assert parse_generic_resources([]) == {}


@pytest.mark.parametrize("item", ["NVIDIA-GPU", "=GPU-a", "SSD=", "", "="])
def test_parse_rejects_malformed(item):
    with pytest.raises(ValueError, match="invalid generic resource"):
        parse_generic_resources([item])


@pytest.mark.parametrize("items", [["GPU=a", "GPU=2"], ["GPU=2", "GPU=a"]])
def test_parse_rejects_mixing_ids_and_count(items):
    with pytest.raises(ValueError, match="mixes named ids and a count"):
        parse_generic_resources(items)


def test_parse_rejects_repeated_count():
    with pytest.raises(ValueError):
        parse_generic_resources(["SSD=2", "SSD=3"])


def test_parse_rejects_or_dedupes_repeated_id():
    try:
        parsed = parse_generic_resources(["NVIDIA-GPU=GPU-a", "NVIDIA-GPU=GPU-a"])
    except ValueError:
        return
    assert parsed == {"NVIDIA-GPU": ["GPU-a"]}


# -- discover ------------------------------------------------------------------------------

def test_discover_with_fake_nvml_gpus():
    res = discover(gpus=(fake_gpus(2), "NVML driver 999.1"))
    assert isinstance(res, NodeResources)
    assert res.generic == {GPU_KIND: ["GPU-nvml-0", "GPU-nvml-1"]}
    assert [g.uuid for g in res.gpus] == ["GPU-nvml-0", "GPU-nvml-1"]
    assert res.nvml == "NVML driver 999.1"
    assert res.nano_cpus == (os.cpu_count() or 1) * 10 ** 9
    assert res.memory_bytes > 0


def test_discover_merges_declared_and_nvml_gpus_without_duplicates():
    res = discover(["NVIDIA-GPU=GPU-fake-0", "NVIDIA-GPU=GPU-nvml-1", "SSD=3"],
                   gpus=(fake_gpus(2), "NVML driver x"))
    assert res.generic == {GPU_KIND: ["GPU-fake-0", "GPU-nvml-1", "GPU-nvml-0"], "SSD": 3}
    assert [g.uuid for g in res.gpus] == ["GPU-nvml-0", "GPU-nvml-1"]


def test_discover_without_gpus_keeps_declared_only():
    res = discover(["NVIDIA-GPU=GPU-fake-0", "NVIDIA-GPU=GPU-fake-1"], gpus=([], "no NVML: fake"))
    assert res.generic == {GPU_KIND: ["GPU-fake-0", "GPU-fake-1"]}
    assert res.gpus == [] and res.nvml == "no NVML: fake"
    assert discover(gpus=([], "no NVML: fake")).generic == {}


def test_discover_rejects_gpu_count_with_nvml_gpus():
    with pytest.raises(ValueError, match="declared as a count"):
        discover(["NVIDIA-GPU=2"], gpus=(fake_gpus(1), "NVML driver x"))


def test_discover_propagates_parse_errors():
    with pytest.raises(ValueError, match="invalid generic resource"):
        discover(["bad"], gpus=([], "no NVML"))


def test_description_advertises_gpus_as_generic_resource():
    res = discover(gpus=(fake_gpus(1), "NVML driver x"))
    desc = res.description("host-1", {"labels": {"a": "b"}})
    assert desc["hostname"] == "host-1"
    assert desc["resources"]["generic"] == {GPU_KIND: ["GPU-nvml-0"]}
    assert desc["resources"]["nano_cpus"] == res.nano_cpus
    assert desc["gpus"] == [{"uuid": "GPU-nvml-0", "name": "Fake H100", "memory_mib": 81559, "index": 0}]
    assert desc["nvml"] == "NVML driver x"
    assert desc["engine"] == {"labels": {"a": "b"}}
    assert desc["platform"]["os"] == "linux"


def test_discover_gpus_on_this_machine_does_not_raise():
    gpus, message = discover_gpus()
    if not gpus:
        assert message.startswith("no NVML"), message
    else:        # a machine with NVIDIA GPUs and a driver
        assert message.startswith("NVML driver ")
        assert all(g.uuid.startswith(("GPU-", "MIG-")) for g in gpus)
        assert [g.index for g in gpus] == list(range(len(gpus)))
        assert all(g.memory_mib > 0 and g.name for g in gpus)


def test_discover_gpus_reported_when_no_nvml_is_found():
    if os.path.exists("/dev/nvidiactl"):
        pytest.skip("this machine has an NVIDIA driver")
    gpus, message = discover_gpus()
    assert gpus == [] and message.startswith("no NVML: ")


def test_discovered_gpus_are_scheduled_one_task_each():
    """End to end through the same interface as NVML: the advertised UUIDs are what tasks get."""
    res = discover(gpus=(fake_gpus(3), "NVML driver x"))
    node = {"id": "gpu-node", "status": {"state": "ready"}, "spec": {"availability": "active"},
            "description": res.description("gpu-node", {})}
    spec = ServiceSpec(name="train", image="cuda", reservations=Resources(generic={GPU_KIND: 1}))
    svc = dict(new_service(spec), version=1)
    tasks = []
    for slot in (1, 2, 3, 4):
        t = new_task(svc, slot)
        t["status"]["state"] = int(TaskState.PENDING)
        tasks.append(t)
    decisions = place(tasks, {"gpu-node": NodeInfo.build(node)})
    envs = [resource_env(d.assigned_generic) for d in decisions]
    assert envs[:3] == [[f"DOCKER_RESOURCE_NVIDIA_GPU=GPU-nvml-{i}"] for i in range(3)]
    assert envs[3] == []
    assert decisions[3].explanation == "no suitable node (insufficient resources on 1 node)"


# -- controller helpers --------------------------------------------------------------------

def test_resource_env():
    assert resource_env({}) == []
    assert resource_env({"NVIDIA-GPU": ["GPU-a", "GPU-b"]}) == ["DOCKER_RESOURCE_NVIDIA_GPU=GPU-a,GPU-b"]
    assert resource_env({"SSD": 2}) == ["DOCKER_RESOURCE_SSD=2"]
    # ordered by kind as declared (stable container env), upper-cased, '-' -> '_'
    assert resource_env({"ssd": 1, "NVIDIA-GPU": ["GPU-a"], "fpga-x": ["f0"]}) == [
        "DOCKER_RESOURCE_NVIDIA_GPU=GPU-a", "DOCKER_RESOURCE_FPGA_X=f0", "DOCKER_RESOURCE_SSD=1"]


def test_container_name_replicated_and_global():
    svc = dict(new_service(ServiceSpec(name="web", image="x")), version=1)
    replicated = new_task(svc, 3)
    assert container_name(replicated) == f"web.3.{replicated['id']}"
    glob = new_task(svc, None, "node123")
    assert container_name(glob) == f"web.node123.{glob['id']}"
    slot_zero = new_task(svc, 0)
    assert container_name(slot_zero) == f"web.0.{slot_zero['id']}"
