"""The `swarmpy` command: docker-swarm's verbs on the swarmpy daemon's API."""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable

from swarmpy import defaults
from swarmpy.cli import containerspec
from swarmpy.cli.client import Client, DaemonError
from swarmpy.tls import TLSFiles
from swarmpy.cli.parser import USAGE_EXIT, Parser, UsageError


def _command(module: str, name: str) -> Callable[[argparse.Namespace], int | None]:
    """The function behind a subcommand, imported when that subcommand runs: importing every
    command's module up front (the stack schema, the join path's crypto, the Raft client)
    cost each call of the CLI ~0.7 s before it did anything."""
    def run(args: argparse.Namespace) -> int | None:
        return getattr(importlib.import_module(f"swarmpy.cli.{module}"), name)(args)
    run.__qualname__ = f"{module}.{name}"
    return run


def _common(p: argparse.ArgumentParser, quiet: bool = False, fmt: bool = False) -> None:
    if quiet:
        p.add_argument("-q", "--quiet", action="store_true", help="only display IDs")
    if fmt:
        p.add_argument("--format", choices=["table", "json"], default="table")


def _service_create_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name")
    p.add_argument("--replicas")
    p.add_argument("--mode", choices=["replicated", "global", "replicated-job", "global-job"],
                   default="replicated")
    p.add_argument("--max-concurrent", help="replicated-job: number of job tasks to run at once (default: replicas)")
    p.add_argument("-e", "--env", action="append", default=[])
    p.add_argument("-l", "--label", action="append", default=[])
    p.add_argument("--container-label", action="append", default=[])
    p.add_argument("--constraint", action="append", default=[])
    p.add_argument("--placement-pref", action="append", default=[])
    p.add_argument("--replicas-max-per-node")
    p.add_argument("--reserve-cpu")
    p.add_argument("--reserve-memory")
    p.add_argument("--limit-cpu")
    p.add_argument("--limit-memory")
    p.add_argument("--generic-resource", action="append", default=[])
    p.add_argument("--restart-condition", choices=["none", "on-failure", "any"])
    p.add_argument("--restart-delay")
    p.add_argument("--restart-max-attempts")
    p.add_argument("--restart-window")
    p.add_argument("--stop-grace-period")
    p.add_argument("--pull", choices=["always", "missing", "never"], default=defaults.PULL_POLICY)
    p.add_argument("--update-parallelism", help="tasks updated at a time (0: all at once; default 1)")
    containerspec.add_flags(p, update=False)
    p.add_argument("-d", "--detach", action="store_true", help="accepted for docker compatibility")
    p.add_argument("--no-resolve-image", action="store_true", help="accepted for docker compatibility")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("image")
    p.add_argument("command", nargs=argparse.REMAINDER)


def build_parser() -> Parser:
    root = Parser(prog="swarmpy", description="A container orchestrator in the spirit of Docker swarm mode.")
    root.add_argument("-H", "--host", help="daemon socket to connect to (unix:///path); "
                                           "default $SWARMPY_HOST or unix://" + defaults.DEFAULT_SOCKET)
    root.add_argument("--tlscacert", help="CA certificate for tcp:// hosts (default $SWARMPY_CERT_PATH/ca.pem)")
    root.add_argument("--tlscert", help="client certificate for tcp:// hosts")
    root.add_argument("--tlskey", help="client key for tcp:// hosts")
    sub = root.add_subparsers(dest="cmd", required=True, parser_class=Parser)

    p = sub.add_parser("init", help="create a cluster with this node as its first manager")
    p.add_argument("--advertise-addr")
    p.add_argument("--listen-addr", default=f"0.0.0.0:{defaults.CLUSTER_PORT}")
    p.add_argument("--data-dir", default=defaults.DEFAULT_DATA_DIR)
    p.add_argument("--generic-resource", action="append", default=[],
                   help="declare a node resource: KIND=ID (e.g. NVIDIA-GPU=GPU-0a1b) or KIND=COUNT")
    p.add_argument("--label", action="append", default=[], help="node label KEY=VALUE")
    p.add_argument("--hostname", help="the node's name (default: the host's)")
    p.add_argument("--task-history-limit", type=int, default=defaults.TASK_HISTORY_LIMIT)
    p.add_argument("--dispatcher-heartbeat", default=f"{defaults.HEARTBEAT_PERIOD_S:g}s",
                   help="how often nodes report; a node is down after 3 missed periods")
    p.add_argument("--api-addr", help=f"also serve the API on TCP at HOST[:PORT] (default port "
                                      f"{defaults.API_TCP_PORT}); needs the three --api-tls* files")
    p.add_argument("--api-tlscacert", help="CA that signs the certificates of clients allowed in")
    p.add_argument("--api-tlscert", help="the API server's certificate")
    p.add_argument("--api-tlskey", help="the API server's key")
    p.add_argument("--default-addr-pool", action="append", default=[],
                   help="CIDR that overlay networks' subnets come from (repeatable; default 10.0.0.0/8)")
    p.add_argument("--default-addr-pool-mask-length", type=int, default=defaults.DEFAULT_ADDR_POOL_MASK,
                   help="prefix length of each network's subnet taken from the pool")
    p.set_defaults(func=_command("swarm", "init"))

    p = sub.add_parser("join", help="join a cluster as a worker or a manager (the token decides)")
    p.add_argument("--token", required=True)
    p.add_argument("--advertise-addr", help="address the other nodes reach this one at "
                                            "(default: the one that routes to the manager)")
    p.add_argument("--listen-addr", default=f"0.0.0.0:{defaults.CLUSTER_PORT}")
    p.add_argument("--data-dir", default=defaults.DEFAULT_DATA_DIR)
    p.add_argument("--generic-resource", action="append", default=[],
                   help="declare a node resource: KIND=ID (e.g. NVIDIA-GPU=GPU-0a1b) or KIND=COUNT")
    p.add_argument("--label", action="append", default=[], help="node label KEY=VALUE")
    p.add_argument("--hostname", help="the node's name (default: the host's)")
    p.add_argument("remote", help="a manager's HOST:PORT")
    p.set_defaults(func=_command("swarm", "join"))

    p = sub.add_parser("leave", help="leave the cluster and stop this node's daemon")
    p.add_argument("-f", "--force", action="store_true")
    p.set_defaults(func=_command("swarm", "leave"))

    p = sub.add_parser("join-token", help="show the join command for workers or managers")
    p.add_argument("role", choices=["worker", "manager"])
    p.add_argument("--rotate", action="store_true", help="replace the token: the old one stops admitting nodes")
    _common(p, quiet=True)
    p.set_defaults(func=_command("swarm", "join_token"))

    p = sub.add_parser("daemon", help="run this node's daemon from its data dir (after a restart)")
    p.add_argument("--data-dir", default=defaults.DEFAULT_DATA_DIR)
    p.add_argument("-d", "--detach", action="store_true", help="run in the background")
    p.set_defaults(func=_command("swarm", "daemon"))

    p = sub.add_parser("info", help="this node and its cluster")
    _common(p, fmt=True)
    p.set_defaults(func=_command("swarm", "info"))

    p = sub.add_parser("events", help="follow changes to the cluster state")
    p.add_argument("-f", "--filter", action="append", default=[], help="type=service|node|task|...")
    _common(p, fmt=True)
    p.set_defaults(func=_command("swarm", "events"))

    nodes = sub.add_parser("node", help="manage nodes").add_subparsers(dest="sub", required=True,
                                                                       parser_class=Parser)
    p = nodes.add_parser("ls", aliases=["list"])
    _common(p, quiet=True, fmt=True)
    p.set_defaults(func=_command("node", "ls"))
    p = nodes.add_parser("inspect")
    p.add_argument("nodes", nargs="+")
    p.set_defaults(func=_command("node", "inspect"))
    p = nodes.add_parser("ps", help="list the tasks on one or more nodes (default: this one)")
    p.add_argument("-f", "--filter", action="append", default=[], help="desired-state=running|shutdown")
    _common(p, quiet=True, fmt=True)
    p.add_argument("nodes", nargs="*")
    p.set_defaults(func=_command("node", "ps"))
    p = nodes.add_parser("promote", help="make workers managers (Raft members)")
    p.add_argument("nodes", nargs="+")
    p.set_defaults(func=_command("node", "promote"))
    p = nodes.add_parser("demote", help="make managers workers")
    p.add_argument("nodes", nargs="+")
    p.set_defaults(func=_command("node", "demote"))
    p = nodes.add_parser("rm", aliases=["remove"], help="remove nodes from the cluster")
    p.add_argument("-f", "--force", action="store_true", help="remove a node that is not down")
    p.add_argument("nodes", nargs="+")
    p.set_defaults(func=_command("node", "rm"))
    p = nodes.add_parser("update")
    p.add_argument("--availability", choices=["active", "pause", "drain"])
    p.add_argument("--label-add", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--label-rm", action="append", default=[], metavar="KEY")
    p.add_argument("node", help="node id, hostname or 'self'")
    p.set_defaults(func=_command("node", "update"))

    services = sub.add_parser("service", help="manage services").add_subparsers(dest="sub", required=True,
                                                                                parser_class=Parser)
    p = services.add_parser("create")
    _service_create_flags(p)
    p.set_defaults(func=_command("service", "create"))
    p = services.add_parser("ls", aliases=["list"])
    _common(p, quiet=True, fmt=True)
    p.set_defaults(func=_command("service", "ls"))
    p = services.add_parser("ps")
    _common(p, quiet=True, fmt=True)
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="desired-state=running|shutdown")
    p.add_argument("services", nargs="+")
    p.set_defaults(func=_command("service", "ps"))
    p = services.add_parser("inspect")
    p.add_argument("services", nargs="+")
    p.set_defaults(func=_command("service", "inspect"))
    p = services.add_parser("scale")
    p.add_argument("pairs", nargs="+", metavar="SERVICE=REPLICAS")
    p.set_defaults(func=_command("service", "scale"))
    p = services.add_parser("update")
    p.add_argument("--image")
    p.add_argument("--replicas")
    p.add_argument("--env-add", action="append", default=[])
    p.add_argument("--env-rm", action="append", default=[])
    p.add_argument("--update-parallelism")
    containerspec.add_flags(p, update=True)
    p.add_argument("--force", action="store_true")
    p.add_argument("--rollback", action="store_true", help="roll back to the previous specification")
    p.add_argument("service")
    p.set_defaults(func=_command("service", "update"))
    p = services.add_parser("rollback", help="revert changes to a service's configuration")
    p.add_argument("-d", "--detach", action="store_true",
                   help="exit at once instead of waiting for the service to converge")
    p.add_argument("service")
    p.set_defaults(func=_command("service", "rollback"))
    p = services.add_parser("logs")
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("-n", "--tail", default="all")
    p.add_argument("service")
    p.set_defaults(func=_command("service", "logs"))
    p = services.add_parser("rm", aliases=["remove"])
    p.add_argument("services", nargs="+")
    p.set_defaults(func=_command("service", "rm"))

    for kind in ("secret", "config"):
        objects = sub.add_parser(kind, help=f"manage {kind}s").add_subparsers(dest="sub", required=True,
                                                                           parser_class=Parser)
        p = objects.add_parser("create", help=f"create a {kind} from a file or - (stdin)")
        p.add_argument("-l", "--label", action="append", default=[])
        p.add_argument("name")
        p.add_argument("file")
        p.set_defaults(func=_command("secret", "create"), kind=kind)
        p = objects.add_parser("ls", aliases=["list"])
        _common(p, quiet=True, fmt=True)
        p.set_defaults(func=_command("secret", "ls"), kind=kind)
        p = objects.add_parser("inspect")
        p.add_argument("names", nargs="+")
        p.set_defaults(func=_command("secret", "inspect"), kind=kind)
        p = objects.add_parser("rm", aliases=["remove"])
        p.add_argument("names", nargs="+")
        p.set_defaults(func=_command("secret", "rm"), kind=kind)

    networks = sub.add_parser("network", help="manage overlay networks").add_subparsers(
        dest="sub", required=True, parser_class=Parser)
    p = networks.add_parser("create", help="create a swarm-scoped overlay network")
    p.add_argument("-d", "--driver", default="overlay", help="driver to manage the network (overlay only)")
    p.add_argument("--subnet", action="append", default=[], metavar="CIDR",
                   help="subnet in CIDR format (default: the next free one of the cluster's address pool)")
    p.add_argument("--attachable", action="store_true", help="enable manual container attachment")
    p.add_argument("--internal", action="store_true", help="restrict external access to the network")
    p.add_argument("--ingress", action="store_true", help="create the swarm routing-mesh network")
    p.add_argument("-o", "--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="driver options: multicast=true|false")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="network metadata")
    p.add_argument("--scope", help="swarm (the only scope here)")
    p.add_argument("name")
    p.set_defaults(func=_command("network", "create"))
    p = networks.add_parser("ls", aliases=["list"], help="list networks")
    p.add_argument("-q", "--quiet", action="store_true", help="only display network IDs")
    p.add_argument("-f", "--filter", action="append", default=[],
                   help="name=, id=, driver=, label=KEY[=VALUE], scope=")
    p.add_argument("--format", help="table (default), json, or a Go template such as '{{.Name}}'")
    p.set_defaults(func=_command("network", "ls"))
    p = networks.add_parser("inspect", help="display detailed information on one or more networks")
    p.add_argument("-f", "--format", help="json (default) or a Go template such as '{{.IPAM.Config}}'")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=_command("network", "inspect"))
    p = networks.add_parser("rm", aliases=["remove"], help="remove one or more networks")
    p.add_argument("names", nargs="+")
    p.set_defaults(func=_command("network", "rm"))

    stacks = sub.add_parser("stack", help="manage compose stacks").add_subparsers(dest="sub", required=True,
                                                                                 parser_class=Parser)
    p = stacks.add_parser("deploy", aliases=["up"], help="deploy a new stack or update an existing one")
    p.add_argument("-c", "--compose-file", action="append", required=True, metavar="FILE",
                   help="path to a compose file (several are merged in order)")
    p.add_argument("--prune", action="store_true", help="remove services that are no longer in the file")
    p.add_argument("-d", "--detach", nargs="?", const="true", default="true", metavar="BOOL",
                   help="exit at once (default) or, with --detach=false, wait until every service converged")
    p.add_argument("--resolve-image", choices=["always", "changed", "never"], default="never",
                   help="accepted for docker's sake: swarmpy never resolves images against a registry")
    p.add_argument("stack")
    p.set_defaults(func=_command("stack", "deploy"))
    p = stacks.add_parser("ls", aliases=["list"])
    _common(p, fmt=True)
    p.set_defaults(func=_command("stack", "ls"))
    p = stacks.add_parser("services")
    _common(p, quiet=True, fmt=True)
    p.add_argument("stack")
    p.set_defaults(func=_command("stack", "services"))
    p = stacks.add_parser("ps")
    _common(p, quiet=True, fmt=True)
    p.add_argument("-f", "--filter", action="append", default=[], help="desired-state=running|shutdown")
    p.add_argument("stack")
    p.set_defaults(func=_command("stack", "ps"))
    p = stacks.add_parser("rm", aliases=["remove", "down"])
    p.add_argument("stacks", nargs="+")
    p.set_defaults(func=_command("stack", "rm"))
    return root


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.tlscacert or args.tlscert or args.tlskey:
            Client.tls_files = TLSFiles.from_flags(args.tlscacert, args.tlscert, args.tlskey)
        return args.func(args) or 0
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return USAGE_EXIT
    except DaemonError as exc:
        prefix = "Error response from daemon: " if exc.status >= 400 else "Error: "
        print(prefix + str(exc), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
