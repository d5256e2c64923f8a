"""What a node offers: CPUs, memory, NVIDIA GPUs found through NVML, and generic
resources declared by hand (`--generic-resource`), as swarm's node-generic-resources.

GPUs found by NVML and GPUs declared by hand end up in the same place, the
`NVIDIA-GPU` generic resource as a list of UUIDs, so that scheduling has one path.
Only NVML-discovered GPUs also get a Docker device request at run time.
"""
from __future__ import annotations

import os
import platform
import socket
from dataclasses import dataclass, field

GPU_KIND = "NVIDIA-GPU"


@dataclass
class GPU:
    uuid: str
    name: str
    memory_mib: int
    index: int


@dataclass
class NodeResources:
    nano_cpus: int
    memory_bytes: int
    generic: dict[str, list[str] | int] = field(default_factory=dict)
    gpus: list[GPU] = field(default_factory=list)
    nvml: str = ""                       # what NVML said: driver version, or why it is absent

    def description(self, hostname: str, engine: dict) -> dict:
        return {"hostname": hostname,
                "platform": {"os": platform.system().lower(), "arch": platform.machine()},
                "resources": {"nano_cpus": self.nano_cpus, "memory_bytes": self.memory_bytes,
                              "generic": self.generic},
                "gpus": [vars(g) for g in self.gpus], "nvml": self.nvml, "engine": engine}


def parse_generic_resources(items: list[str]) -> dict[str, list[str] | int]:
    """`KIND=ID` declares one named resource (repeat for more); `KIND=N` declares N discrete ones."""
    out: dict[str, list[str] | int] = {}
    for item in items:
        kind, sep, value = item.partition("=")
        if not sep or not kind or not value:
            raise ValueError(f"invalid generic resource {item!r}; use KIND=ID (e.g. NVIDIA-GPU=GPU-0a1b) "
                             "or KIND=COUNT (e.g. SSD=2)")
        if value.isdigit():
            if isinstance(out.get(kind), list):
                raise ValueError(f"generic resource {kind} mixes named ids and a count; use one form")
            if kind in out:
                raise ValueError(f"generic resource {kind} is declared twice; declare its count once")
            out[kind] = int(value)
        else:
            if isinstance(out.get(kind), int):
                raise ValueError(f"generic resource {kind} mixes named ids and a count; use one form")
            if value in out.get(kind, []):
                raise ValueError(f"generic resource {kind}={value} is declared twice")
            out.setdefault(kind, []).append(value)
    return out


def discover_gpus() -> tuple[list[GPU], str]:
    """GPUs from NVML; no NVML (no driver, no library) is normal and reported, not raised."""
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pynvml
        pynvml.nvmlInit()
    except Exception as exc:   # ImportError, NVMLError_LibraryNotFound, NVMLError_DriverNotLoaded...
        return [], f"no NVML: {exc}"
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            gpus.append(GPU(uuid=_text(pynvml.nvmlDeviceGetUUID(handle)),
                            name=_text(pynvml.nvmlDeviceGetName(handle)),
                            memory_mib=pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024),
                            index=i))
        return gpus, f"NVML driver {_text(driver)}"
    finally:
        pynvml.nvmlShutdown()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def discover(declared: list[str] | None = None, gpus: tuple[list[GPU], str] | None = None) -> NodeResources:
    """This host's resources.  `gpus` replaces NVML discovery (tests on machines without GPUs)."""
    generic = parse_generic_resources(declared or [])
    found, nvml = gpus if gpus is not None else discover_gpus()
    if found:
        ids = generic.setdefault(GPU_KIND, [])
        if isinstance(ids, int):
            raise ValueError(f"{GPU_KIND} is declared as a count but NVML found GPUs; declare ids or none")
        ids.extend(g.uuid for g in found if g.uuid not in ids)
    return NodeResources(nano_cpus=(os.cpu_count() or 1) * 10 ** 9, memory_bytes=_memory_bytes(),
                         generic=generic, gpus=found, nvml=nvml)


def hostname() -> str:
    return socket.gethostname()
