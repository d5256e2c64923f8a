"""`swarmpy stack ...`: deploy, ls, services, ps, rm.

As in docker, the CLI reads the compose files and the environment and converts them
(stacks/); unlike docker, it sends the whole stack to the manager, which applies it in
one transaction (swarmpy/manager/stacks.py).
"""
from __future__ import annotations

import sys

from stacks.convert import NAMESPACE_LABEL, convert
from stacks.errors import StackFileError
from stacks.loader import load
from swarmpy.cli.client import Client, DaemonError
from swarmpy.cli.dockeropts import parse_bool
from swarmpy.cli.output import dump_json, short, table
from swarmpy.cli.parser import filters, invalid
from swarmpy.cli.progress import wait_converged
from swarmpy.cli.service import print_tasks, replicas_column


def deploy(args) -> int:
    try:
        detach = parse_bool(args.detach)
    except ValueError as exc:
        raise invalid("--detach", args.detach, str(exc)) from None
    try:
        plan = convert(load(args.compose_file), args.stack)
    except StackFileError as exc:
        raise DaemonError(0, str(exc)) from None
    for warning in plan.warnings:
        print(warning, file=sys.stderr)
    client = Client(args.host)
    result = client.call("POST", "/stacks", body={
        "name": args.stack, "services": plan.services, "prune": args.prune,
        "secrets": plan.secrets, "configs": plan.configs, "networks": plan.networks})
    for verb, key in (("Creating", "created"), ("Updating", "updated"), ("Removing", "removed")):
        for what in result[key]:
            print(f"{verb} {what}")
    if not detach:
        wait_converged(client, [s["name"] for s in plan.services])
    return 0


def _stacks(client: Client) -> dict[str, list[dict]]:
    stacks: dict[str, list[dict]] = {}
    for service in client.get("/services"):
        namespace = service["spec"]["labels"].get(NAMESPACE_LABEL)
        if namespace:
            stacks.setdefault(namespace, []).append(service)
    return stacks


def _services_of(client: Client, stack: str) -> list[dict]:
    services = _stacks(client).get(stack)
    if not services:
        raise DaemonError(0, f"Nothing found in stack: {stack}")
    return sorted(services, key=lambda s: s["spec"]["name"])


def ls(args) -> int:
    stacks = _stacks(Client(args.host))
    if args.format == "json":
        dump_json([{"name": n, "services": len(s)} for n, s in sorted(stacks.items())])
        return 0
    table(["NAME", "SERVICES"], [[n, str(len(s))] for n, s in sorted(stacks.items())])
    return 0


def services(args) -> int:
    found = _services_of(Client(args.host), args.stack)
    if args.quiet:
        print("\n".join(s["id"] for s in found))
    elif args.format == "json":
        dump_json(found)
    else:
        table(["ID", "NAME", "MODE", "REPLICAS", "IMAGE"],
              [[short(s["id"]), s["spec"]["name"], s["spec"]["mode"].replace("-job", " job"),
                replicas_column(s["replicas_status"]), s["spec"]["image"]] for s in found])
    return 0


def ps(args) -> int:
    client = Client(args.host)
    tasks = []
    query = filters(args.filter, {"desired-state": ("running", "shutdown")})
    for service in _services_of(client, args.stack):
        tasks += client.get("/tasks", service=service["id"], **query)
    return print_tasks(client, tasks, args)


def rm(args) -> int:
    client = Client(args.host)
    for stack in args.stacks:
        result = client.call("DELETE", f"/stacks/{stack}")
        for what in result["removed"]:
            print(f"Removing {what}")
    return 0
