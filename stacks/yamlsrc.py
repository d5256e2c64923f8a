"""Read one compose file's YAML into plain dicts and lists, keeping the line of
every key and list item (so later errors can say file:line), with anchors,
aliases and `<<` merge keys resolved as YAML 1.1 (docker's yaml.v2) does."""
from __future__ import annotations

import yaml
from yaml.nodes import MappingNode, SequenceNode

from stacks.errors import Path, StackFileError, Where, format_path
from stacks.gofmt import go_sprint


class _Loader(yaml.SafeLoader):
    """Safe loading; timestamps stay the text written, as yaml.v2 gives docker
    strings (a label `date: 2024-01-02` must not become a date object)."""


_Loader.add_constructor("tag:yaml.org,2002:timestamp",
                        lambda loader, node: loader.construct_scalar(node))


def parse_yaml(text: str, file: str) -> tuple[dict, Where]:
    """The document as a dict, and a Where holding each path's line."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        where = Where(file)
        if not isinstance(node, MappingNode):
            line = node.start_mark.line + 1 if node is not None else None
            raise StackFileError("top-level object must be a mapping", file, line)
        return _build(loader, node, (), where, set()), where
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, file) from None
    finally:
        loader.dispose()


def _yaml_error(exc: yaml.YAMLError, file: str) -> StackFileError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    text = f"invalid YAML: {context}, {problem}" if context else f"invalid YAML: {problem}"
    return StackFileError(text, file, mark.line + 1 if mark else None)


def _build(loader: _Loader, node, path: Path, where: Where, active: set) -> object:
    if isinstance(node, (MappingNode, SequenceNode)):
        if id(node) in active:  # `&a [*a]`: an alias inside its own anchor
            raise where.error(path, "recursive YAML alias")
        where.lines.setdefault(path, node.start_mark.line + 1)
        active.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return _build_mapping(loader, node, path, where, active)
            return [_build_item(loader, i, item, path, where, active)
                    for i, item in enumerate(node.value)]
        finally:
            active.discard(id(node))
    return loader.construct_object(node, deep=True)


def _build_item(loader, index, item, path, where, active) -> object:
    where.lines[path + (index,)] = item.start_mark.line + 1
    return _build(loader, item, path + (index,), where, active)


def _build_mapping(loader: _Loader, node: MappingNode, path: Path, where: Where,
                   active: set) -> dict:
    loader.flatten_mapping(node)  # folds `<<: *anchor` in; own keys come last and win
    out: dict = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            # docker: "non-string key at top level: 123" / "... in services: 123"
            place = f"in {format_path(path)}" if path else "at top level"
            raise StackFileError(f"non-string key {place}: {go_sprint(key)}",
                                 where.file, key_node.start_mark.line + 1, path)
        where.lines[path + (key,)] = key_node.start_mark.line + 1
        out[key] = _build(loader, value_node, path + (key,), where, active)
    return out
