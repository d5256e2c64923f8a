"""argparse, made to fail the way the docker CLI does: `unknown flag: --x`,
`invalid argument "v" for "--flag" flag: why`, and exit status 125."""
from __future__ import annotations

import argparse
import re
import sys

USAGE_EXIT = 125


class UsageError(Exception):
    def __init__(self, message: str, command: str = "swarmpy") -> None:
        super().__init__(f"{message}\nSee '{command} --help'.")


class Parser(argparse.ArgumentParser):
    def error(self, message: str):
        match = re.match(r"unrecognized arguments: (\S+)", message)
        if match:
            message = f"unknown flag: {match.group(1)}" if match.group(1).startswith("-") else \
                f"\"{self.prog}\" accepts no argument {match.group(1)!r}"
        elif message.startswith("argument "):
            message = re.sub(r"^argument ([^:]+): ", "", message) + f" ({message.split(':')[0][9:]})"
        raise UsageError(message, self.prog)

    def exit(self, status=0, message=None):
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def invalid(flag: str, value, why: str) -> UsageError:
    return UsageError(f'invalid argument "{value}" for "{flag}" flag: {why}')


def key_values(flag: str, items: list[str], need_value: bool = False) -> dict[str, str]:
    """docker's repeatable KEY=VALUE flags (--label, --opt): a bare KEY has the value "",
    unless the flag needs one."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not key or (need_value and not sep):
            raise invalid(flag, item, "use KEY=VALUE" if need_value else "use KEY=VALUE or KEY")
        out[key] = value
    return out


def filters(items: list[str], allowed: dict[str, tuple[str, ...]]) -> dict[str, str]:
    """docker's `-f KEY=VALUE` filters, checked against the keys and values a command knows."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in allowed:
            raise invalid("--filter", item, f"use {' or '.join(f'{k}=VALUE' for k in allowed)}")
        if value not in allowed[key]:
            raise invalid("--filter", item, f"{key} must be one of {', '.join(allowed[key])}")
        out[key] = value
    return out
