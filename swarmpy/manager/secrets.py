"""Secrets and configs: named blobs that services' containers see as files.

Stored objects: {"id", "spec": {"name", "labels"}, "created_at", "updated_at", ...} plus
- a secret's data sealed (Fernet, a key derived from the cluster secret that only
  managers hold, never from the store): the Raft log and snapshots on disk hold
  ciphertext only, and no API answer or log line carries the data;
- a config's data in base64, which `config inspect` shows (as docker does).

The dispatcher opens the data only for the tasks it sends to a node
(`task_files`), so a node gets the secrets of the tasks it runs, and no others.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re

from cryptography.fernet import Fernet

from raft.errors import ConflictError, NotFoundError
from raft.store import ClusterStore
from swarmpy.models import new_id, now
from swarmpy.spec import SpecError

KINDS = {"secret": "secrets", "config": "configs"}
MAX_BYTES = {"secret": 500 * 1024, "config": 1000 * 1024}      # docker's limits
_NAME = re.compile(r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$")


class Sealer:
    def __init__(self, cluster_secret: str) -> None:
        digest = hashlib.sha256(b"swarmpy-secrets:" + cluster_secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, data: bytes) -> str:
        return self._fernet.encrypt(data).decode()

    def open(self, token: str) -> bytes:
        return self._fernet.decrypt(token.encode())


def new_object(kind: str, body, sealer: Sealer) -> dict:
    """Validate a create request {name, labels, data: base64} and build the stored object."""
    if not isinstance(body, dict):
        raise SpecError(kind, "the body must be a JSON object with name, labels and data (base64)")
    unknown = set(body) - {"name", "labels", "data"}
    if unknown:
        raise SpecError(sorted(unknown)[0], "unknown field; use name, labels, data")
    name = body.get("name")
    if not isinstance(name, str) or len(name) > 64 or not _NAME.fullmatch(name):
        raise SpecError("name", f"invalid name {name!r}: use up to 64 letters, digits, '-', '_' or '.', "
                                "starting and ending with a letter or digit")
    labels = body.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise SpecError("labels", "must be a map of strings to strings")
    data = _decode(body.get("data"))
    if not 0 < len(data) < MAX_BYTES[kind]:
        raise SpecError("data", f"{kind} data must be larger than 0 and less than "
                                f"{MAX_BYTES[kind] // 1024}KB")
    ts = now()
    obj = {"id": new_id(), "spec": {"name": name, "labels": labels}, "created_at": ts, "updated_at": ts}
    if kind == "secret":
        obj["sealed"] = sealer.seal(data)
    else:
        obj["data"] = base64.b64encode(data).decode()
    return obj


def _decode(data) -> bytes:
    if not isinstance(data, str):
        raise SpecError("data", "must be the content, base64-encoded")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SpecError("data", "is not valid base64") from None


def public(obj: dict) -> dict:
    """What the API shows: never a secret's data, sealed or not."""
    return {k: v for k, v in obj.items() if k != "sealed"}


def users(store: ClusterStore, kind: str, name: str) -> list[str]:
    return sorted(s["spec"]["name"] for s in store.list("services")
                  if any(ref["source"] == name for ref in s["spec"].get(KINDS[kind], [])))


def removal_op(store: ClusterStore, kind: str, obj: dict, ignoring: set[str] = frozenset()) -> dict:
    """Delete a secret or config, refused while a service (other than those `ignoring`,
    removed in the same transaction) names it."""
    using = [name for name in users(store, kind, obj["spec"]["name"]) if name not in ignoring]
    if using:
        plural = "s" if len(using) > 1 else ""
        raise ConflictError(f"rpc error: code = InvalidArgument desc = {kind} '{obj['spec']['name']}' is in use "
                            f"by the following service{plural}: {', '.join(using)}")
    return {"op": "delete", "kind": KINDS[kind], "id": obj["id"], "expect": obj["version"]}


def reference_checks(store: ClusterStore, spec: dict, created: set[tuple[str, str]] = frozenset()) -> list[dict]:
    """Check ops that make a service write fail unless every secret and config it names
    exists when it commits; `created` are (kind, name) made in the same transaction."""
    ops = []
    for kind, key in KINDS.items():
        for ref in spec.get(key, []):
            if (kind, ref["source"]) in created:
                continue
            obj = store.by_name(key, ref["source"])
            if obj is None:
                raise NotFoundError(f"{kind} not found: {ref['source']}")
            ops.append({"op": "check", "kind": key, "id": obj["id"]})
    return ops


def task_files(store: ClusterStore, sealer: Sealer, task: dict) -> dict[str, list[dict]]:
    """The files a task's container gets: {"secrets": [...], "configs": [...]}, each
    {target, uid, gid, mode, data: base64}; a missing object is left out (the agent
    then fails the task, naming it)."""
    files: dict[str, list[dict]] = {}
    for kind, key in KINDS.items():
        for ref in task["spec"].get(key, []):
            obj = store.by_name(key, ref["source"])
            if obj is None:
                continue
            data = sealer.open(obj["sealed"]) if kind == "secret" else base64.b64decode(obj["data"])
            files.setdefault(key, []).append(dict(ref, data=base64.b64encode(data).decode()))
    return files
