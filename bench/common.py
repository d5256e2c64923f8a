"""Shared helpers for the benchmarks in bench/: machine facts, free ports, result files.

Each benchmark is run by hand as `python bench/NAME.py [--json FILE]`; this module
is imported from the same folder."""
from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _meminfo_kib(key: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine(docker: bool = False) -> dict:
    """What the figures were measured on."""
    cpu_model = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "nproc": os.cpu_count(), "cpu_model": cpu_model,
            "mem_total_gib": round(_meminfo_kib("MemTotal") / 1024 ** 2, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "git_commit": _run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]),
            "git_dirty": bool(_run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"])),
            "loadavg_start": loadavg()}
    if docker:
        info["docker_server"] = _run(["docker", "version", "--format", "{{.Server.Version}}"])
    return info


def free_port_pair() -> int:
    """A port P such that P and P+1 are both free on 127.0.0.1 (swarmpy uses both)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65534:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free pair of ports on 127.0.0.1")


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str | None, data: dict) -> None:
    if not path:
        return
    data.setdefault("machine", {})["loadavg_end"] = loadavg()
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    print(f"results written to {path}")
