"""`swarmpy init`, `join`, `leave`, `join-token`, `daemon`, `info`: the node's membership."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from swarmpy import defaults, joining
from swarmpy.cli.client import Client, DaemonError, NoDaemon, socket_path
from swarmpy.cli.output import dump_json
from swarmpy.cli.parser import filters, invalid, key_values
from swarmpy.config import NodeConfig, erase_state, new_secret
from swarmpy.manager.networks import parse_pool
from swarmpy.spec import SpecError
from swarmpy.models import new_id
from swarmpy.tls import TLSFiles
from swarmpy.units import parse_duration
from worker.resources import hostname as default_hostname
from worker.resources import parse_generic_resources

ALREADY_IN_SWARM = ('This node is already part of a swarm. Use "swarmpy leave" to leave this swarm '
                    'and join another one.')
START_TIMEOUT_S = 60.0


def _daemon_answers(client: Client) -> bool:
    try:
        client.get("/info")
        return True
    except NoDaemon:
        return False


def _split_addr(text: str, flag: str, default_port: int = defaults.CLUSTER_PORT) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default_port))
    if not port.isdigit() or not 0 < int(port) < 65535:
        raise invalid(flag, text, "use HOST or HOST:PORT")
    return host or "0.0.0.0", int(port)


def init(args) -> int:
    client = Client(args.host)
    data_dir = os.path.abspath(args.data_dir)
    if _daemon_answers(client) or NodeConfig.exists(data_dir):
        raise DaemonError(409, ALREADY_IN_SWARM + (f" (state in {data_dir}: start it with "
                                                   f"'swarmpy daemon --data-dir {data_dir}')"
                                                   if NodeConfig.exists(data_dir) else ""))
    listen_host, port = _split_addr(args.listen_addr, "--listen-addr")
    try:
        parse_generic_resources(args.generic_resource)
    except ValueError as exc:
        raise invalid("--generic-resource", " ".join(args.generic_resource), str(exc)) from None
    api_addr, tls_files = _api_tcp(args)
    try:
        pools, mask = parse_pool(args.default_addr_pool, args.default_addr_pool_mask_length)
    except SpecError as exc:
        raise invalid(f"--{exc.field}", " ".join(args.default_addr_pool) or str(args.default_addr_pool_mask_length),
                      str(exc).split(": ", 2)[-1]) from None
    config = NodeConfig(node_id=new_id(), cluster_id=new_id(), cluster_secret=new_secret(),
                        role="manager", data_dir=data_dir, socket=socket_path(args.host),
                        listen_host=listen_host, port=port,
                        advertise_addr=args.advertise_addr or (listen_host if listen_host != "0.0.0.0"
                                                               else "127.0.0.1"),
                        hostname=args.hostname or "", generic_resources=args.generic_resource,
                        labels=key_values("--label", args.label), heartbeat_period=_duration(args.dispatcher_heartbeat),
                        task_history_limit=args.task_history_limit, api_addr=api_addr,
                        tls_ca=tls_files.ca, tls_cert=tls_files.cert, tls_key=tls_files.key,
                        default_addr_pool=pools, default_addr_pool_mask=mask)
    config.save()
    try:
        start_daemon(config)
    except DaemonError:
        erase_state(data_dir)
        raise
    tokens = client.get("/join-tokens")
    print(f"Swarm initialized: current node ({config.node_id}) is now a manager.\n")
    print("To add a worker to this swarm, run the following command:\n")
    print(f"    swarmpy join --token {tokens['worker']} {config.advertise_addr}:{config.port}\n")
    print("To add a manager to this swarm, run 'swarmpy join-token manager' and follow the instructions.")
    return 0


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise invalid("--dispatcher-heartbeat", text, str(exc)) from None
    if seconds <= 0:
        raise invalid("--dispatcher-heartbeat", text, "must be more than 0s")
    return seconds


def _api_tcp(args) -> tuple[str, TLSFiles]:
    if not args.api_addr:
        return "", TLSFiles("", "", "")
    host, port = _split_addr(args.api_addr, "--api-addr", defaults.API_TCP_PORT)
    given = (args.api_tlscacert, args.api_tlscert, args.api_tlskey)
    if not any(given):
        # The cluster's own PKI: the node's certificate serves, and any certificate of the
        # cluster's CA may call, except a worker node's.
        return f"{host}:{port}", TLSFiles("", "", "")
    files = TLSFiles(*(os.path.abspath(p) if p else "" for p in given))
    try:
        files.check()
    except ValueError as exc:
        raise DaemonError(0, str(exc).replace("--tls", "--api-tls")) from None
    return f"{host}:{port}", files


def start_daemon(config: NodeConfig) -> None:
    """Start the daemon in the background and wait until its node is ready."""
    log_path = os.path.join(config.data_dir, "swarmpy.log")
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "swarmpy", "daemon", "--data-dir", config.data_dir],
                                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    client = Client(f"unix://{config.socket}")
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log_path, errors="replace") as f:
                tail = "".join(f.readlines()[-15:])
            raise DaemonError(0, f"the swarmpy daemon exited with status {proc.returncode}; "
                                 f"its log ({log_path}) ends with:\n{tail}")
        try:
            info = client.get("/info")
        except (DaemonError, OSError):
            # Not listening yet, or exiting (a reset connection): the next turn tells which,
            # and an exit is reported with its log, not as a reset.
            time.sleep(0.05)
            continue
        if info["pid"] != proc.pid:
            raise DaemonError(409, f"another swarmpy daemon (pid {info['pid']}) already serves "
                                   f"{config.socket}")
        if info["node_state"] == "ready":
            return
        time.sleep(0.05)
    raise DaemonError(0, f"the swarmpy daemon did not become ready in {START_TIMEOUT_S:.0f}s; see {log_path}")


def daemon(args) -> int:
    data_dir = os.path.abspath(args.data_dir)
    if not NodeConfig.exists(data_dir):
        raise DaemonError(0, f"{data_dir} holds no swarmpy node; create one with 'swarmpy init'")
    config = NodeConfig.load(data_dir)
    if _daemon_answers(Client(f"unix://{config.socket}")):
        raise DaemonError(409, f"the daemon of {data_dir} is already running "
                               f"(it answers on {config.socket})")
    if args.detach:
        start_daemon(config)
        print(NodeConfig.load(data_dir).node_id)
        return 0
    from swarmpy.daemon import main
    main(data_dir)
    return 0


def join(args) -> int:
    """Join as the token's role: get a certificate from the cluster's CA, then start the daemon."""
    client = Client(args.host)
    data_dir = os.path.abspath(args.data_dir)
    if _daemon_answers(client) or NodeConfig.exists(data_dir):
        raise DaemonError(409, ALREADY_IN_SWARM)
    remote_host, remote_port = _split_addr(args.remote, "remote")
    remote = f"{remote_host}:{remote_port}"
    listen_host, port = _split_addr(args.listen_addr, "--listen-addr")
    advertise = args.advertise_addr or (listen_host if listen_host != "0.0.0.0"
                                        else joining.local_addr_towards(remote))
    labels = key_values("--label", args.label)
    hostname = args.hostname or ""
    try:
        parse_generic_resources(args.generic_resource)
        joined = asyncio.run(joining.join(remote, args.token, advertise, port, hostname or default_hostname(),
                                          labels))
    except ValueError as exc:
        raise invalid("--generic-resource", " ".join(args.generic_resource), str(exc)) from None
    except joining.JoinError as exc:
        raise DaemonError(0, str(exc)) from None
    reply = joined.reply
    config = NodeConfig(node_id=reply["node_id"], cluster_id=reply["cluster_id"],
                        cluster_secret=reply.get("cluster_secret", ""), role=reply["role"], data_dir=data_dir,
                        socket=socket_path(args.host), listen_host=listen_host, port=port,
                        advertise_addr=advertise, hostname=hostname, generic_resources=args.generic_resource,
                        labels=labels, heartbeat_period=reply["heartbeat_period"],
                        raft_peers=reply.get("raft_peers", []), managers=[remote] + reply["managers"])
    config.save()
    config.store_certificates(joined.ca_pem, reply["cert"].encode(), joined.key_pem)
    try:
        start_daemon(config)
    except DaemonError:
        erase_state(data_dir)
        raise
    print(f"This node joined a swarm as a {config.role}.")
    return 0


def leave(args) -> int:
    client = Client(args.host)
    client.call("POST", "/leave", query={"force": "true" if args.force else None})
    # Return once the daemon is gone and has forgotten the cluster, as docker's leave does.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            client.get("/info")
        except (DaemonError, OSError):     # refused, reset or gone: it has stopped serving
            break
        time.sleep(0.05)
    print("Node left the swarm.")
    return 0


def join_token(args) -> int:
    client = Client(args.host)
    if args.rotate:
        client.call("POST", "/join-tokens/rotate", body={"role": args.role})
        if not args.quiet:
            print(f"Successfully rotated {args.role} join token.\n")
    tokens = client.get("/join-tokens")
    if args.role not in tokens:
        raise DaemonError(0, f"unknown role {args.role}; use worker or manager")
    if args.quiet:
        print(tokens[args.role])
        return 0
    info = Client(args.host).get("/info")
    print(f"To add a {args.role} to this swarm, run the following command:\n")
    print(f"    swarmpy join --token {tokens[args.role]} {info['addr']}\n")
    return 0


def info(args) -> int:
    data = Client(args.host).get("/info")
    if args.format == "json":
        dump_json(data)
    else:
        for key in ("node_id", "hostname", "role", "is_leader", "node_state", "addr", "data_dir", "version"):
            print(f"{key}: {data[key]}")
    return 0


EVENT_TYPES = ("node", "service", "task", "network", "secret", "config")


def events(args) -> int:
    """Print cluster changes as they are committed, as `docker events` does."""
    wanted = filters(args.filter, {"type": EVENT_TYPES}).get("type")
    query = {"kind": wanted + "s"} if wanted else None
    buffer = b""
    try:
        for chunk in Client(args.host).stream("/events", query=query):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                ev = json.loads(line)
                if args.format == "json":
                    print(line.decode(), flush=True)
                    continue
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(ev["time"]))
                name = f" (name={ev['name']})" if ev.get("name") else ""
                print(f"{stamp} {ev['kind'][:-1]} {ev['action']} {ev['id']}{name}", flush=True)
    except KeyboardInterrupt:
        pass
    return 0
