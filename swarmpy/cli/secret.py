"""`swarmpy secret ...` and `swarmpy config ...`: create, ls, inspect, rm (docker's verbs)."""
from __future__ import annotations

import base64
import sys

from swarmpy.cli.client import Client, DaemonError, remove_each
from swarmpy.cli.parser import key_values
from swarmpy.cli.output import ago, dump_json, short, table


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DaemonError(0, f"error reading content from {path!r}: {exc.strerror}") from None


def create(args) -> int:
    body = {"name": args.name, "labels": key_values("--label", args.label),
            "data": base64.b64encode(_read(args.file)).decode()}
    obj = Client(args.host).call("POST", f"/{args.kind}s", body=body)
    print(obj["id"])
    return 0


def ls(args) -> int:
    objects = sorted(Client(args.host).get(f"/{args.kind}s"), key=lambda o: o["spec"]["name"])
    if args.quiet:
        print("\n".join(o["id"] for o in objects))
    elif args.format == "json":
        dump_json(objects)
    else:
        table(["ID", "NAME", "CREATED", "UPDATED"],
              [[short(o["id"]), o["spec"]["name"], ago(o["created_at"]), ago(o["updated_at"])] for o in objects])
    return 0


def inspect(args) -> int:
    client = Client(args.host)
    dump_json([client.get(f"/{args.kind}s/{ref}") for ref in args.names])
    return 0


def rm(args) -> int:
    return remove_each(Client(args.host), f"{args.kind}s", args.names)
