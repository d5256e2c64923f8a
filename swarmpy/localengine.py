"""A Docker engine and a local image for the demo and the tests, without pulling anything.

`ensure_engine()` starts `dockerd` when none answers (root only) and says how to stop
it again; `ensure_busybox_image()` builds `swarmpy-test/busybox` from the host's
static busybox with `docker import`, as ARCHITECTURE.md's recipe does.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import docker

IMAGE = "swarmpy-test/busybox:latest"
APPLETS = ("sh", "sleep", "echo", "cat", "true", "false", "env", "kill", "ls", "ps", "date", "seq",
           "wc", "yes", "hostname", "nc", "wget", "top", "printf")
BUSYBOX_PATHS = ("/bin/busybox", "/usr/bin/busybox")


def engine_answers() -> bool:
    try:
        client = docker.from_env(timeout=5)
        client.ping()
        client.close()
        return True
    except Exception:
        return False


def ensure_engine(log_path: str = "/var/log/swarmpy-dockerd.log", timeout: float = 60.0) -> int | None:
    """Start dockerd if no engine answers; returns its pid if we started it, else None."""
    if engine_answers():
        return None
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        raise RuntimeError("no Docker engine answers and dockerd cannot be started here "
                           "(install docker.io and run as root)")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine_answers():
            return proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"dockerd did not come up; see {log_path}")


def ensure_busybox_image(name: str = IMAGE) -> str:
    client = docker.from_env()
    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    busybox = next((p for p in BUSYBOX_PATHS if os.path.exists(p)), None)
    if busybox is None:
        raise RuntimeError("no busybox binary found; install busybox-static")
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "bin"))
        shutil.copy(busybox, os.path.join(root, "bin", "busybox"))
        for applet in APPLETS:
            os.symlink("busybox", os.path.join(root, "bin", applet))
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(["docker", "import", "-", name], stdin=tar.stdout, check=True,
                       stdout=subprocess.DEVNULL)
        tar.wait()
    return name
