"""`python -m swarmpy.demo`: a one-node cluster running a demo stack, for a first look.

Starts dockerd if none runs, builds the local busybox image (nothing is pulled),
initialises a node if none answers on the default socket, deploys the stack in
`stacks/examples/demo.yml` (a replicated service, a web server with a healthcheck
serving a config, a global agent) and waits until it converged, then shows `node ls`,
`stack services`, `stack ps` and a service's logs. Leave it with `swarmpy leave --force`.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import stacks
from swarmpy import localengine
from swarmpy.cli.client import Client, DaemonError, NoDaemon
from swarmpy.cli.main import main as cli
from worker.engine import NO_PULL_ENV

STACK = "demo"
STACK_FILE = Path(stacks.__file__).parent / "examples" / "demo.yml"
ANSWER = b"web says: <"         # the page, not "(no answer yet)"


def _show(*argv: str) -> int:
    print(f"\n$ swarmpy {' '.join(argv)}", flush=True)
    status = cli(list(argv))
    sys.stdout.flush()
    return status


def _wait_for_an_answer(timeout: float = 20.0) -> None:
    """Converged is not yet answered: hello's tasks start with web's, and ask again every
    2 s. Show the logs once one of them has web's page (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            logs = b"".join(Client().stream(f"/services/{STACK}_hello/logs", {"tail": "1"}))
        except (DaemonError, OSError):
            logs = b""
        if ANSWER in logs:
            return
        time.sleep(0.5)


def main() -> int:
    os.environ.setdefault(NO_PULL_ENV, "1")      # the demo never pulls
    localengine.ensure_engine()
    os.environ["DEMO_IMAGE"] = localengine.ensure_busybox_image()
    try:
        Client().get("/info")
    except NoDaemon:
        if _show("init"):
            return 1
    if _show("stack", "deploy", "-c", str(STACK_FILE), "--detach=false", STACK):
        return 1
    _wait_for_an_answer()
    for argv in (("node", "ls"), ("stack", "services", STACK), ("stack", "ps", STACK),
                 ("service", "logs", "--tail", "3", f"{STACK}_hello")):
        _show(*argv)
    print("\nThe cluster keeps running; remove it with: swarmpy leave --force")
    return 0


if __name__ == "__main__":
    sys.exit(main())
