"""A task's secrets and configs as files on this node, bind-mounted read-only into its
container: secrets at /run/secrets/TARGET, configs at TARGET (made absolute).

The files live under /dev/shm, a tmpfs: a secret is never written to this node's disk
(docker puts a tmpfs at /run/secrets for the same reason). Each task has its own
directory, readable by root only, removed with the task's container. The data arrives
with the task's assignment; only the nodes that run a task get its files.
"""
from __future__ import annotations

import base64
import os
import shutil

ROOT = "/dev/shm/swarmpy"
SECRETS_DIR = "/run/secrets"


class MissingFile(Exception):
    pass


def task_dir(node_id: str, task_id: str) -> str:
    return os.path.join(ROOT, node_id, task_id)


def write(node_id: str, task: dict) -> list[dict]:
    """Write the task's files; returns the bind mounts (in the spec's Mount form)."""
    delivered = task.get("files") or {}
    mounts = []
    for key in ("secrets", "configs"):
        refs = task["spec"].get(key) or []
        if not refs:
            continue
        by_source = {f["source"]: f for f in delivered.get(key, [])}
        folder = os.path.join(task_dir(node_id, task["id"]), key)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        os.chmod(os.path.dirname(folder), 0o700)
        for i, ref in enumerate(refs):
            item = by_source.get(ref["source"])
            if item is None:
                raise MissingFile(f"{key[:-1]} {ref['source']} not found")
            path = os.path.join(folder, str(i))
            _write_file(path, base64.b64decode(item["data"]), ref)
            mounts.append({"type": "bind", "source": path, "target": _target(key, ref["target"]),
                           "read_only": True})
    return mounts


def _write_file(path: str, data: bytes, ref: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fchown(fd, int(ref.get("uid") or 0), int(ref.get("gid") or 0))
        os.fchmod(fd, ref.get("mode", 0o444))
    finally:
        os.close(fd)


def _target(key: str, target: str) -> str:
    if key == "secrets":
        return target if target.startswith(SECRETS_DIR + "/") else f"{SECRETS_DIR}/{target}"
    return target if target.startswith("/") else f"/{target}"


def remove(node_id: str, task_id: str) -> None:
    shutil.rmtree(task_dir(node_id, task_id), ignore_errors=True)


def remove_node(node_id: str) -> None:
    shutil.rmtree(os.path.join(ROOT, node_id), ignore_errors=True)
