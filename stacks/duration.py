"""Go's time.ParseDuration, which docker uses for every compose duration
(stop_grace_period, healthcheck intervals, update delay, ...). The loader only
checks the syntax and leaves durations as the strings written; the converter
calls parse_duration to get seconds."""
from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
          "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")
HINT = "a Go duration such as 1h2m3.5s, 300ms or 10us"


def parse_duration(text: str) -> float:
    """Seconds; ValueError with Go's message for anything Go would refuse."""
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    total, pos = 0.0, 0
    while pos < len(body):
        match = _PART.match(body, pos)
        number, unit = match.group(1), match.group(2)
        if number in ("", "."):
            raise ValueError(f'time: invalid duration "{text}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{text}"')
        if unit not in _UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{text}"')
        total += float(number) * _UNITS[unit]
        pos = match.end()
    return -total if text.startswith("-") else total


def is_duration(text: object) -> bool:
    if not isinstance(text, str):
        return False
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True
