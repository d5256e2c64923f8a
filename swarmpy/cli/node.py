"""`swarmpy node ls | inspect | ps | update | rm`."""
from __future__ import annotations

from swarmpy.cli.client import Client, DaemonError
from swarmpy.cli.output import dump_json, table
from swarmpy.cli.parser import filters
from swarmpy.cli.service import print_tasks
from swarmpy.units import format_bytes


def _gpus(node: dict) -> str:
    generic = node.get("description", {}).get("resources", {}).get("generic", {})
    gpus = generic.get("NVIDIA-GPU", [])
    return str(len(gpus) if isinstance(gpus, list) else gpus)


def _manager_status(node: dict) -> str:
    status = node.get("manager_status")
    if not status:
        return ""
    return "Leader" if status.get("leader") else status.get("reachability", "").capitalize()


def ls(args) -> int:
    client = Client(args.host)
    nodes = sorted(client.get("/nodes"), key=lambda n: n.get("description", {}).get("hostname", ""))
    if args.quiet:
        print("\n".join(n["id"] for n in nodes))
        return 0
    if args.format == "json":
        dump_json(nodes)
        return 0
    self_id = client.get("/info")["node_id"]
    rows = []
    for n in nodes:
        desc, res = n.get("description", {}), n.get("description", {}).get("resources", {})
        rows.append([n["id"] + (" *" if n["id"] == self_id else ""), desc.get("hostname", ""),
                     n.get("status", {}).get("state", "").capitalize(),
                     n.get("spec", {}).get("availability", "").capitalize(), _manager_status(n),
                     desc.get("engine", {}).get("version", ""), f"{res.get('nano_cpus', 0) / 1e9:g}",
                     format_bytes(res.get("memory_bytes", 0)), _gpus(n)])
    table(["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS", "ENGINE VERSION", "CPUS",
           "MEMORY", "GPUS"], rows)
    return 0


def inspect(args) -> int:
    client = Client(args.host)
    refs = ["self" if r == "self" else r for r in args.nodes]
    self_id = client.get("/info")["node_id"] if "self" in refs else None
    dump_json([client.get(f"/nodes/{self_id if r == 'self' else r}") for r in refs])
    return 0


def update(args) -> int:
    client = Client(args.host)
    ref = client.get("/info")["node_id"] if args.node == "self" else args.node
    node = client.get(f"/nodes/{ref}")
    body: dict = {}
    if args.availability:
        body["availability"] = args.availability
    if args.label_add or args.label_rm:
        labels = dict(node["spec"].get("labels", {}))
        for key in args.label_rm:
            if key not in labels:
                raise DaemonError(0, f"key {key} doesn't exist in node's labels")
            del labels[key]
        for item in args.label_add:
            key, _, value = item.partition("=")
            labels[key] = value
        body["labels"] = labels
    client.call("POST", f"/nodes/{node['id']}/update", body=body, query={"version": node["version"]})
    print(args.node)
    return 0


def _self_or(client: Client, ref: str) -> str:
    return client.get("/info")["node_id"] if ref == "self" else ref


def ps(args) -> int:
    client = Client(args.host)
    tasks = []
    for ref in args.nodes or ["self"]:
        tasks += client.get("/tasks", node=_self_or(client, ref),
                            **filters(args.filter, {"desired-state": ("running", "shutdown")}))
    return print_tasks(client, tasks, args)


def rm(args) -> int:
    client = Client(args.host)
    for ref in args.nodes:
        client.call("DELETE", f"/nodes/{ref}", query={"force": "true" if args.force else None})
        print(ref)
    return 0


def _set_role(args, role: str, done: str) -> int:
    client = Client(args.host)
    for ref in args.nodes:
        node = client.get(f"/nodes/{_self_or(client, ref)}")
        if node["spec"].get("role") == role:
            print(f"Node {ref} is already a {role}.")
            continue
        client.call("POST", f"/nodes/{node['id']}/update", body={"role": role},
                    query={"version": node["version"]})
        print(done.format(ref))
    return 0


def promote(args) -> int:
    return _set_role(args, "manager", "Node {} promoted to a manager in the swarm.")


def demote(args) -> int:
    return _set_role(args, "worker", "Manager {} demoted in the swarm.")
