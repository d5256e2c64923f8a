"""swarmpy/cli/main.py: every subcommand reaches its module's function, and a call of the
CLI imports only the module of the command it runs (each call of the CLI used to import the
stack schema, the join path's crypto and the Raft client first: ~0.7 s before it did anything)."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from swarmpy.cli.main import build_parser, main

HEAVY = ("stacks.loader", "jsonschema", "yaml", "cryptography", "pysyncobj", "raft.store", "swarmpy.joining")


def imported_after(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", f"import sys, json\n{code}\n"
                          f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return json.loads(out.splitlines()[-1])


def test_building_the_parser_imports_no_command_module():
    assert imported_after("from swarmpy.cli.main import build_parser; build_parser()") == []


def test_a_command_imports_only_what_it_needs():
    # `service ls` against no daemon: it fails, but only after its own module ran.
    code = ("from swarmpy.cli.main import main\n"
            "main(['-H', 'unix:///nonexistent/swarmpy.sock', 'service', 'ls'])")
    assert imported_after(code) == []
    code = ("from swarmpy.cli.main import main\n"
            "main(['stack', 'deploy', '-c', '/nonexistent/stack.yml', 'x'])")
    assert "stacks.loader" in imported_after(code)


@pytest.mark.parametrize("argv, module, name", [
    (["node", "ls"], "node", "ls"),
    (["service", "scale", "web=2"], "service", "scale"),
    (["stack", "rm", "s"], "stack", "rm"),
    (["network", "ls"], "network", "ls"),
    (["secret", "ls"], "secret", "ls"),
    (["info"], "swarm", "info"),
])
def test_each_subcommand_runs_its_module_function(monkeypatch, argv, module, name):
    seen = []
    monkeypatch.setattr(importlib.import_module(f"swarmpy.cli.{module}"), name,
                        lambda args: seen.append(args) or 7)
    assert main(argv) == 7
    assert len(seen) == 1 and seen[0] is not None
    assert build_parser().parse_args(argv).func.__qualname__ == f"{module}.{name}"
