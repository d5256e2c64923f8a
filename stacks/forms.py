"""The "list or mapping" and "string or list" shapes of compose values, turned
into one shape each as docker's loader transforms do, plus the per-file
context that normalisation needs."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Mapping

from stacks.errors import Where
from stacks.gofmt import go_sprint


@dataclass
class FileContext:
    """What normalising one file needs: where it is (for errors), the stack's
    directory (the first file's, for every file, as docker), the variables,
    docker's normalised version (some warnings depend on it), and the warnings
    collected so far."""

    where: Where
    working_dir: str
    env: Mapping[str, str]
    version: str
    warnings: list[str] = field(default_factory=list)


def to_mapping(value: object, allow_none: bool = False, sep: str = "=") -> dict:
    """{k: v} from a mapping or a ["k=v", "k"] list; values become strings
    (Go's fmt.Sprint), a bare `k` or a null is None when allow_none (docker's
    MappingWithEquals: environment) and "" otherwise (labels, sysctls...)."""
    empty = None if allow_none else ""
    if isinstance(value, dict):
        return {k: empty if v is None else go_sprint(v) for k, v in value.items()}
    out: dict = {}
    for item in value or []:
        key, has_value, text = go_sprint(item).partition(sep)
        out[key] = text if has_value else empty
    return out


def string_list(value: object) -> list:
    """docker's StringList: a lone string is a one-item list."""
    return [value] if isinstance(value, str) else list(value or [])


def hosts_list(value: object) -> list[str]:
    """extra_hosts as docker's HostsList: ["host:ip", ...]; a mapping gives
    sorted entries; list entries may use "=" or ":"; [::1] loses its brackets."""
    if isinstance(value, dict):
        entries = sorted(f"{k}:{go_sprint(v)}" for k, v in value.items() if v is not None)
    else:
        entries = []
        for item in value or []:
            text = go_sprint(item)
            for sep in ("=", ":"):
                if sep in text:
                    host, _, ip = text.partition(sep)
                    entries.append(f"{host}:{ip}")
                    break
    return [_strip_brackets(entry) for entry in entries]


def _strip_brackets(entry: str) -> str:
    host, _, ip = entry.partition(":")
    if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
        ip = ip[1:-1]
    return f"{host}:{ip}"


def is_abs(path: str) -> bool:
    """Absolute for a Unix or a Windows daemon (docker checks both)."""
    return path.startswith("/") or path.startswith("\\\\") or bool(
        re.match(r"[a-zA-Z]:[\\/]", path))


def abs_path(working_dir: str, path: str) -> str:
    # filepath.Join cleans the result ("./a/../b" -> "b")
    return path if is_abs(path) else os.path.normpath(os.path.join(working_dir, path))


def version_at_least(version: str, minimum: str) -> bool:
    """docker's versions.GreaterThanOrEqualTo on dotted numbers."""
    def parts(text: str) -> list[int]:
        return [int(p) if p.isdigit() else 0 for p in text.split(".")]
    a, b = parts(version), parts(minimum)
    width = max(len(a), len(b))
    return a + [0] * (width - len(a)) >= b + [0] * (width - len(b))
