"""Parsing of the human units the CLI and compose files use (docker's rules)."""
from __future__ import annotations

import math
import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$", re.IGNORECASE)
_MULT = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4, "p": 1024 ** 5}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)")
_DURATION_S = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_memory(text: str | int) -> int:
    """'64M', '1g', '512kb', '1048576' -> bytes (binary multiples, as docker's RAMInBytes)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"invalid size: '{text}'")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"invalid size: '{text}'")
    number, unit, _ = match.groups()
    return int(float(number) * _MULT[unit.lower()])


def parse_cpus(text: str | float | int) -> int:
    """'0.5' -> 500000000 nano CPUs."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ValueError(f"invalid CPU value: '{text}'; use a number such as 0.5") from None
    if not math.isfinite(value):
        raise ValueError(f"invalid CPU value: '{text}'; use a number such as 0.5")
    if value < 0:
        raise ValueError(f"invalid CPU value: '{text}'; it must not be negative")
    return int(round(value * 1e9))


def parse_duration(text: str | int | float) -> float:
    """Go-style durations: '5s', '1m30s', '300ms' -> seconds; a bare number is seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return _valid_seconds(float(text), text)
    text = str(text).strip()
    try:
        return _valid_seconds(float(text), text)
    except ValueError as exc:
        if "invalid duration" in str(exc):
            raise
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_S[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration: '{text}'; use a duration such as 5s or 1m30s")
    return total


_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
             "h": 3600.0}
_GO_NUMBER = re.compile(r"[0-9]*(\.[0-9]*)?")
_GO_UNIT = re.compile(r"[^0-9.]*")


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration, as docker's duration flags take them ('1m30s', '500ms',
    '-2s'; a bare number only as '0'), in seconds, with Go's error texts."""
    quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    rest, sign = text, 1.0
    if rest[:1] in ("+", "-"):
        sign, rest = (-1.0 if rest[0] == "-" else 1.0), rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0.0
    while rest:
        number = _GO_NUMBER.match(rest).group(0)
        if number.strip(".") == "":
            raise ValueError(f"time: invalid duration {quoted}")
        rest = rest[len(number):]
        unit = _GO_UNIT.match(rest).group(0)
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        if unit not in _GO_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration {quoted}')
        total += float(number) * _GO_UNITS[unit]
        rest = rest[len(unit):]
    return sign * total


def _valid_seconds(value: float, text) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"invalid duration: '{text}'; use a non-negative duration such as 5s or 1m30s")
    return value


def format_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}".replace(".0", "")
        n /= 1024
    return str(n)
