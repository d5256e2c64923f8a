"""env_file reading as docker's opts.ParseEnvFile: KEY=value lines taken as
written (no quotes removed, no interpolation), `#` comment lines, and a bare
KEY taken from the environment (dropped when it is not set there)."""
from __future__ import annotations

from typing import Mapping


def parse_env_file(path: str, env: Mapping[str, str]) -> list[tuple[str, str]]:
    with open(path, "rb") as fh:
        raw = fh.read()
    pairs: list[tuple[str, str]] = []
    for number, line_bytes in enumerate(raw.splitlines(), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"env file {path} contains invalid utf8 bytes at line {number}") from None
        if number == 1:
            line = line.removeprefix("\ufeff")
        line = line.lstrip()
        if line and not line.startswith("#"):
            pair = _pair(line, env)
            if pair is not None:
                pairs.append(pair)
    return pairs


def _pair(line: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    name, sep, value = line.partition("=")
    name = name.lstrip(" \t")
    if any(c in name for c in " \t"):
        raise ValueError(f"poorly formatted environment: variable '{name}' has white spaces")
    if not name:
        raise ValueError(f"poorly formatted environment: no variable name on line '{line}'")
    if sep:
        return name, value
    if line.strip() in env:
        return line.strip(), env[line.strip()]
    return None
