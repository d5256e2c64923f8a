"""`swarmpy network ...`: create, ls, inspect, rm (docker's verbs, for swarm-scoped overlay
networks; see docs/networks.md)."""
from __future__ import annotations

import datetime
import json
import re
import sys

from swarmpy.cli.client import Client, DaemonError, remove_each
from swarmpy.cli.output import dump_json, short, table
from swarmpy.cli.parser import UsageError, invalid, key_values

DRIVER = "overlay"            # the one driver a swarm network has here (swarmpy/manager/networks.py)
LS_FILTERS = ("driver", "id", "label", "name", "scope")
# docker's `network ls` columns, by the field a --format template names
LS_HEADERS = {"ID": "NETWORK ID", "Name": "NAME", "Driver": "DRIVER", "Scope": "SCOPE", "IPv6": "IPV6",
              "Internal": "INTERNAL", "Labels": "LABELS", "CreatedAt": "CREATED AT"}


# -- create ---------------------------------------------------------------------------------
def create_body(args) -> dict:
    """The POST /networks body from `network create`'s flags."""
    driver = args.driver or DRIVER
    if driver != DRIVER:
        # docker would make a node-local network; a swarm's networks span the nodes
        raise DaemonError(0, f'network driver "{driver}" is not supported in a swarm: swarmpy creates '
                             f"swarm-scoped overlay networks only; use --driver {DRIVER} (the default)")
    if args.scope not in (None, "swarm"):
        raise invalid("--scope", args.scope, "swarmpy's networks are swarm-scoped; use swarm")
    if len(args.subnet) > 1:
        raise invalid("--subnet", ",".join(args.subnet), "swarmpy's networks take one subnet")
    body = {"name": args.name, "driver": driver, "attachable": args.attachable, "internal": args.internal,
            "labels": key_values("--label", args.label),
            "options": key_values("--opt", args.opt, need_value=True)}
    if args.subnet:
        body["subnet"] = args.subnet[0]
    if args.ingress:
        body["ingress"] = True
    return body


def create(args) -> int:
    network = Client(args.host).call("POST", "/networks", body=create_body(args))
    print(network["id"])
    return 0


# -- ls -------------------------------------------------------------------------------------------
def ls_filters(items: list[str]) -> dict[str, list[str]]:
    """docker's `-f KEY=VALUE`: values of one key are alternatives, keys must all match."""
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in LS_FILTERS:
            raise DaemonError(0, f"invalid filter '{key if sep else item}': use "
                                 + ", ".join(f"{k}=VALUE" for k in LS_FILTERS))
        out.setdefault(key, []).append(value)
    return out


def _label_matches(labels: dict, want: str) -> bool:
    key, sep, value = want.partition("=")
    return key in labels and (not sep or labels[key] == value)


def matches(network: dict, filters: dict[str, list[str]]) -> bool:
    spec = network["spec"]
    tests = {"name": lambda v: v in spec["name"],                 # docker: all or part of the name
             "id": lambda v: network["id"].startswith(v),
             "driver": lambda v: spec.get("driver", DRIVER) == v,
             "scope": lambda v: v == network.get("scope", "swarm"),
             "label": lambda v: _label_matches(spec.get("labels") or {}, v)}
    return all(any(tests[key](v) for v in values) for key, values in filters.items())


def ls_row(network: dict) -> dict:
    spec = network["spec"]
    labels = ",".join(f"{k}={v}" for k, v in sorted((spec.get("labels") or {}).items()))
    return {"ID": short(network["id"]), "Name": spec["name"], "Driver": spec.get("driver", DRIVER),
            "Scope": network.get("scope", "swarm"), "IPv6": False, "Internal": bool(spec.get("internal")),
            "Labels": labels, "CreatedAt": _rfc3339(network.get("created_at"))}


def ls(args) -> int:
    wanted = ls_filters(args.filter)
    found = sorted((n for n in Client(args.host).get("/networks") if matches(n, wanted)),
                   key=lambda n: n["spec"]["name"])
    if args.quiet:
        if found:
            print("\n".join(n["id"] for n in found))
    elif args.format == "json":
        dump_json(found)
    elif args.format and args.format != "table":
        print_template(args.format, [ls_row(n) for n in found], LS_HEADERS)
    else:
        table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
              [[r["ID"], r["Name"], r["Driver"], r["Scope"]] for r in map(ls_row, found)])
    return 0


# -- inspect ----------------------------------------------------------------------------------------
def _rfc3339(ts: float | None) -> str:
    if not ts:
        return ""
    stamp = datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


def docker_view(network: dict) -> dict:
    """The network as `docker network inspect` shows a swarm network (its keys and shape);
    the VNI is docker's vxlanid_list option."""
    spec = network["spec"]
    ipam = (network.get("ipam") or {}).get("config") or [{"subnet": network.get("subnet", "")}]
    config = [{"Subnet": c["subnet"], **({"Gateway": c["gateway"]} if c.get("gateway") else {})} for c in ipam]
    options = dict(spec.get("options") or {})
    if network.get("vni") is not None:
        options["com.docker.network.driver.overlay.vxlanid_list"] = str(network["vni"])
    return {"Name": spec["name"], "Id": network["id"], "Created": _rfc3339(network.get("created_at")),
            "Scope": network.get("scope", "swarm"), "Driver": spec.get("driver", DRIVER), "EnableIPv6": False,
            "IPAM": {"Driver": "default", "Options": None, "Config": config},
            "Internal": bool(spec.get("internal")), "Attachable": bool(spec.get("attachable")),
            "Ingress": bool(spec.get("ingress")), "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
            "Containers": None, "Options": options, "Labels": dict(spec.get("labels") or {})}


def inspect(args) -> int:
    """docker's way: every network found is printed, then an error per one that is not."""
    client = Client(args.host)
    found, errors = [], []
    for ref in args.names:
        try:
            found.append(docker_view(client.get(f"/networks/{ref}")))
        except DaemonError as exc:
            if exc.status != 404:
                raise
            errors.append(f"Error: No such network: {ref}")
    if args.format and args.format != "json":
        for view in found:
            print(render(args.format, view))
    else:
        dump_json(found)
    for error in errors:
        print(error, file=sys.stderr)
    return 1 if errors else 0


# -- rm ---------------------------------------------------------------------------------------------
def rm(args) -> int:
    return remove_each(Client(args.host), "networks", args.names)


# -- Go-template formats (the common subset: {{.Field.Sub}} and {{json .Field}}) -------------------
_ACTION = re.compile(r"\{\{(.*?)\}\}")
_FIELD = re.compile(r"^\s*(json\s+)?\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)?\s*$")


def _go_text(value) -> str:
    """A value as Go's text/template prints it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_text(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go_text(v) for v in value) + "]"
    return str(value)


def render(template: str, data: dict) -> str:
    template = template.replace("\\t", "\t").replace("\\n", "\n")

    def one(match: re.Match) -> str:
        action = _FIELD.match(match.group(1))
        if action is None:
            raise UsageError(f"template: {match.group(0)}: swarmpy's --format knows {{{{.Field}}}}, "
                             "{{.Field.Sub}} and {{json .Field}}")
        value = data
        for part in action.group(2).split(".") if action.group(2) else []:
            if not isinstance(value, dict) or part not in value:
                raise UsageError(f"template: {match.group(0)}: can't evaluate field {part}")
            value = value[part]
        return json.dumps(value) if action.group(1) else _go_text(value)

    return _ACTION.sub(one, template)


def print_template(template: str, rows: list[dict], headers: dict[str, str]) -> None:
    """`--format TEMPLATE`, or `--format "table TEMPLATE"`: a header row and aligned columns."""
    if not template.startswith("table"):
        for row in rows:
            print(render(template, row))
        return
    template = template[len("table"):].strip()

    def title(match: re.Match) -> str:
        action = _FIELD.match(match.group(1))
        name = action.group(2) if action and action.group(2) else match.group(1).strip()
        return headers.get(name, name.upper())

    header = _ACTION.sub(title, template)
    lines = [render(template, row).split("\t") for row in rows]
    heads = header.replace("\\t", "\t").split("\t")
    width = max([len(heads)] + [len(line) for line in lines])
    table(heads + [""] * (width - len(heads)), [line + [""] * (width - len(line)) for line in lines])
