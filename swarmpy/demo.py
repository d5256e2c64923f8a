"""`python -m swarmpy.demo`: a one-node cluster running a demo service, for a first look.

Starts dockerd if none runs, builds the local busybox image (nothing is pulled),
initialises a node if none answers on the default socket, creates the `hello`
service with 3 replicas, waits until they run, and shows `node ls`, `service ls`,
`service ps` and the service's logs.  Leave it with `swarmpy leave --force`.
"""
from __future__ import annotations

import os
import sys
import time

from swarmpy import localengine
from swarmpy.cli.client import Client, DaemonError, NoDaemon
from swarmpy.cli.main import main as cli
from worker.engine import NO_PULL_ENV

SERVICE = "hello"


def _show(*argv: str) -> None:
    print(f"\n$ swarmpy {' '.join(argv)}", flush=True)
    cli(list(argv))
    sys.stdout.flush()


def main() -> int:
    os.environ.setdefault(NO_PULL_ENV, "1")      # the demo never pulls
    localengine.ensure_engine()
    image = localengine.ensure_busybox_image()
    client = Client()
    try:
        client.get("/info")
    except NoDaemon:
        _show("init")
    try:
        client.get(f"/services/{SERVICE}")
    except DaemonError:
        _show("service", "create", "--name", SERVICE, "--replicas", "3", "--stop-grace-period", "1s", image,
              "sh", "-c", "while true; do echo hello from $(hostname); sleep 5; done")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.get(f"/services/{SERVICE}")
        running = [s for s in client.get("/services") if s["id"] == status["id"]][0]["replicas_status"]
        if running["running"] == running["desired"]:
            break
        time.sleep(0.2)
    for argv in (("node", "ls"), ("service", "ls"), ("service", "ps", SERVICE), ("service", "logs", SERVICE)):
        _show(*argv)
    print("\nThe cluster keeps running; remove it with: swarmpy leave --force")
    return 0


if __name__ == "__main__":
    sys.exit(main())
