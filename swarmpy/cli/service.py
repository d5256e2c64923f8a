"""`swarmpy service ...`: create, ls, ps, inspect, scale, update, logs, rm."""
from __future__ import annotations

import sys

from swarmpy.cli import containerspec
from swarmpy.cli.client import Client, DaemonError
from swarmpy.cli.output import ago, dump_json, short, state_label, table
from swarmpy.cli.parser import filters, invalid, key_values
from swarmpy.cli.progress import wait_converged
from swarmpy.units import parse_cpus, parse_duration, parse_memory


def _convert(flag: str, value, parse):
    try:
        return parse(value)
    except ValueError as exc:
        raise invalid(flag, value, str(exc)) from None


def _uint(value: str) -> int:
    if not value.isdigit():
        raise ValueError("must be a non-negative integer")
    return int(value)


def _resources(cpu, memory, generic: list[str], prefix: str) -> dict:
    out: dict = {}
    if cpu is not None:
        out["nano_cpus"] = _convert(f"--{prefix}-cpu", cpu, parse_cpus)
    if memory is not None:
        out["memory_bytes"] = _convert(f"--{prefix}-memory", memory, parse_memory)
    if generic:
        out["generic"] = {}
        for item in generic:
            kind, sep, count = item.partition("=")
            if not sep or not kind or not count.isdigit():
                raise invalid("--generic-resource", item, "use KIND=COUNT, e.g. NVIDIA-GPU=1")
            out["generic"][kind] = int(count)
    return out


def spec_from_args(args) -> dict:
    spec: dict = {"name": args.name or args.image.split("/")[-1].split(":")[0], "image": args.image,
                  "command": args.command, "env": args.env, "mode": args.mode,
                  "labels": key_values("--label", args.label),
                  "container_labels": key_values("--container-label", args.container_label),
                  "constraints": args.constraint, "preferences": args.placement_pref,
                  "pull": args.pull}
    if args.replicas is not None:
        spec["replicas"] = _convert("--replicas", args.replicas, _uint)
    elif args.mode.startswith("global"):
        spec.pop("replicas", None)
    if args.max_concurrent is not None:
        spec["max_concurrent"] = _convert("--max-concurrent", args.max_concurrent, _uint)
    if args.replicas_max_per_node is not None:
        spec["max_replicas_per_node"] = _convert("--replicas-max-per-node", args.replicas_max_per_node, _uint)
    spec["reservations"] = _resources(args.reserve_cpu, args.reserve_memory, args.generic_resource, "reserve")
    spec["limits"] = _resources(args.limit_cpu, args.limit_memory, [], "limit")
    policy = {"condition": args.restart_condition} if args.restart_condition else {}
    if args.restart_delay is not None:
        policy["delay"] = _convert("--restart-delay", args.restart_delay, parse_duration)
    if args.restart_max_attempts is not None:
        policy["max_attempts"] = _convert("--restart-max-attempts", args.restart_max_attempts, _uint)
    if args.restart_window is not None:
        policy["window"] = _convert("--restart-window", args.restart_window, parse_duration)
    spec["restart_policy"] = policy
    spec.update(containerspec.create_fields(args))
    if args.stop_grace_period is not None:
        spec["stop_grace_period"] = _convert("--stop-grace-period", args.stop_grace_period, parse_duration)
    return spec


def create(args) -> int:
    service = Client(args.host).call("POST", "/services", body=spec_from_args(args))
    print(service["id"])
    return 0


def ls(args) -> int:
    services = sorted(Client(args.host).get("/services"), key=lambda s: s["spec"]["name"])
    if args.quiet:
        print("\n".join(s["id"] for s in services))
    elif args.format == "json":
        dump_json(services)
    else:
        table(["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"],
              [[short(s["id"]), s["spec"]["name"], s["spec"]["mode"].replace("-job", " job"),
                replicas_column(s["replicas_status"]), s["spec"]["image"], ""] for s in services])
    return 0


def replicas_column(status: dict) -> str:
    """docker's REPLICAS: "2/3", or for jobs "1/2 (3/4 completed)"."""
    text = f"{status['running']}/{status['desired']}"
    if "completed" in status:
        text += f" ({status['completed']}/{status['total']} completed)"
    return text


def ps(args) -> int:
    client = Client(args.host)
    tasks = []
    for ref in args.services:
        tasks += client.get("/tasks", service=ref,
                            **filters(args.filter, {"desired-state": ("running", "shutdown")}))
    return print_tasks(client, tasks, args)


def print_tasks(client: Client, tasks: list[dict], args) -> int:
    """`service ps` and `node ps` print tasks alike: history under its slot with \\_."""
    if args.quiet:
        print("\n".join(t["id"] for t in tasks))
        return 0
    if args.format == "json":
        dump_json(tasks)
        return 0
    nodes = {n["id"]: n.get("description", {}).get("hostname", n["id"]) for n in client.get("/nodes")}
    rows, seen = [], set()
    for t in tasks:
        key = (t["service_id"], t.get("slot") if t.get("slot") is not None else t.get("node_id"))
        name = f"{t['service_name']}.{key[1] if t.get('slot') is not None else t.get('node_id')}"
        prefix = "" if key not in seen else " \\_ "
        seen.add(key)
        status = t["status"]
        err = status.get("err") or ""
        rows.append([short(t["id"]), prefix + name, t["spec"]["image"], nodes.get(t.get("node_id"), ""),
                     state_label(t["desired_state"]), f"{state_label(status['state'])} {ago(status['timestamp'])}",
                     f'"{err}"' if err else "", ""])
    table(["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"], rows)
    return 0


def inspect(args) -> int:
    client = Client(args.host)
    dump_json([client.get(f"/services/{ref}") for ref in args.services])
    return 0


def _update(client: Client, ref: str, change) -> dict:
    service = client.get(f"/services/{ref}")
    spec = dict(service["spec"])
    change(spec)
    return client.call("POST", f"/services/{service['id']}/update", body=spec,
                       query={"version": service["version"]})


def scale(args) -> int:
    client = Client(args.host)
    pairs = []
    for item in args.pairs:
        name, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise invalid("scale", item, "use SERVICE=REPLICAS with a non-negative number")
        pairs.append((name, int(count)))
    status = 0
    for name, count in pairs:
        service = client.get(f"/services/{name}")
        if service["spec"]["mode"] != "replicated":
            print(f"{name}: scale can only be used with replicated mode", file=sys.stderr)
            status = 1
            continue
        _update(client, name, lambda spec: spec.update(replicas=count))
        print(f"{name} scaled to {count}")
    return status


def update(args) -> int:
    client = Client(args.host)

    def change(spec: dict) -> None:
        if args.image:
            spec["image"] = args.image
        if args.replicas is not None:
            spec["replicas"] = _convert("--replicas", args.replicas, _uint)
        if "update_parallelism" in spec:              # stored before update_config existed
            spec.setdefault("update_config", {}).setdefault("parallelism", spec.pop("update_parallelism"))
        containerspec.apply_update(args, spec)
        containerspec.update_networks(args, spec, lambda ref: client.get(f"/networks/{ref}")["id"])
        # docker: --env-add replaces a variable already set; --env-rm removes by name
        dropped = set(args.env_rm) | {e.split("=", 1)[0] for e in args.env_add}
        spec["env"] = [e for e in spec.get("env", []) if e.split("=", 1)[0] not in dropped] + args.env_add
        if args.force:
            spec.setdefault("labels", {})["com.swarmpy.force-update"] = str(
                int(spec.get("labels", {}).get("com.swarmpy.force-update", "0")) + 1)

    if args.rollback:
        args.detach = True        # `service update` returns at once here; `service rollback` waits
        return rollback(args)
    _update(client, args.service, change)
    print(args.service)
    return 0


def rollback(args) -> int:
    """`service rollback` (and `service update --rollback`): back to the previous spec."""
    client = Client(args.host)
    service = client.call("POST", f"/services/{args.service}/rollback")
    print(args.service)
    if not args.detach:
        print(f"rollback: {service['update_status']['message']}")
        wait_converged(client, [service["spec"]["name"]])
    return 0


def logs(args) -> int:
    query = {"follow": "true" if args.follow else None, "tail": args.tail}
    out = sys.stdout.buffer
    try:
        for chunk in Client(args.host).stream(f"/services/{args.service}/logs", query=query):
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        pass
    return 0


def rm(args) -> int:
    client = Client(args.host)
    status = 0
    for ref in args.services:
        try:
            client.call("DELETE", f"/services/{ref}")
            print(ref)
        except DaemonError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            status = 1
    return status
