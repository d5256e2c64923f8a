"""A Docker engine and a local image for the demo and the tests, without pulling anything.

`ensure_engine()` starts `dockerd` when none answers (root only) and says how to stop
it again; `ensure_busybox_image()` builds `swarmpy-test/busybox` from the host's
static busybox by importing a tar made in memory, as ARCHITECTURE.md's recipe does.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
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


def busybox_tar(busybox: str, applets=APPLETS, programs: dict[str, str] | None = None) -> bytes:
    """A root filesystem: bin/busybox, a link per applet, static `programs` ({name: path})
    as bin/NAME, and a tmp/ for anyone to write."""
    def root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755
        return info

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for d, mode in (("bin", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox", filter=root_owned)
        for applet in applets:
            if applet not in (programs or {}):
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
                tar.addfile(link)
        for prog, path in sorted((programs or {}).items()):
            tar.add(path, arcname=f"bin/{prog}", filter=root_owned)
    return data.getvalue()


def build_busybox_image(client, name: str = IMAGE, busybox: str = "/bin/busybox") -> None:
    """Import a one-binary image: busybox plus applet symlinks (no pull, no Dockerfile)."""
    repository, _, tag = name.rpartition(":")
    client.api.import_image_from_data(busybox_tar(busybox), repository=repository, tag=tag)


def find_busybox() -> str | None:
    return next((p for p in BUSYBOX_PATHS if os.path.exists(p)), None)


def ensure_busybox_image(name: str = IMAGE) -> str:
    client = docker.from_env()
    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    busybox = find_busybox()
    if busybox is None:
        raise RuntimeError("no busybox binary found; install busybox-static")
    build_busybox_image(client, name, busybox)
    return name
