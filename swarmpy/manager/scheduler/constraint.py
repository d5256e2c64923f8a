"""Placement constraints (`node.role==manager`, `node.labels.zone!=a`), SwarmKit's keys."""
from __future__ import annotations

import re
from dataclasses import dataclass

_EXPR = re.compile(r"^\s*([\w.\-]+)\s*(==|!=)(.*)$")
KEYS = ("node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch")
PREFIXES = ("node.labels.", "engine.labels.")


@dataclass(frozen=True)
class Constraint:
    key: str
    equal: bool
    value: str

    def matches(self, node_value: str | None) -> bool:
        # Labels compare exactly; the node's built-in attributes ignore case, as in SwarmKit.
        if node_value is None:
            return not self.equal
        if self.key.startswith(PREFIXES):
            same = node_value == self.value
        else:
            same = node_value.lower() == self.value.lower()
        return same == self.equal


def parse(text: str) -> Constraint:
    match = _EXPR.match(text)
    if not match:
        raise ValueError(f"constraint expression {text!r} is invalid; use KEY==VALUE or KEY!=VALUE")
    key, op, value = match.groups()
    value = value.strip()
    if not value:
        raise ValueError(f"constraint expression {text!r} has no value; use KEY==VALUE or KEY!=VALUE")
    prefix = next((p for p in PREFIXES if key.startswith(p)), None)
    if key not in KEYS and not (prefix and len(key) > len(prefix)):
        raise ValueError(f"constraint key {key!r} is not supported; use one of {', '.join(KEYS)}, "
                         "node.labels.KEY or engine.labels.KEY")
    return Constraint(key, op == "==", value)


def parse_all(texts: list[str]) -> list[Constraint]:
    return [parse(t) for t in texts]


def node_attribute(node: dict, key: str) -> str | None:
    """The value of a constraint key on a stored node object."""
    desc = node.get("description", {})
    spec = node.get("spec", {})
    if key == "node.id":
        return node["id"]
    if key == "node.hostname":
        return desc.get("hostname")
    if key == "node.role":
        return spec.get("role")
    if key == "node.platform.os":
        return desc.get("platform", {}).get("os")
    if key == "node.platform.arch":
        return desc.get("platform", {}).get("arch")
    if key.startswith("node.labels."):
        return spec.get("labels", {}).get(key[len("node.labels."):])
    if key.startswith("engine.labels."):
        return desc.get("engine", {}).get("labels", {}).get(key[len("engine.labels."):])
    return None


def node_matches(node: dict, constraints: list[Constraint]) -> bool:
    return all(c.matches(node_attribute(node, c.key)) for c in constraints)
