"""How a user names an object: docker's lookup order, shared by every kind."""
from __future__ import annotations

from raft.errors import NotFoundError


class AmbiguousError(NotFoundError):
    status = 400
    code = "ambiguous"


def resolve(objects: list[dict], ref: str, kind: str, by_name) -> dict:
    """Docker's lookup order: full id, then name, then a unique id prefix."""
    for obj in objects:
        if obj["id"] == ref:
            return obj
    named = by_name(ref) if by_name else None
    if named is not None:
        return named
    matches = [o for o in objects if o["id"].startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise AmbiguousError(f"{kind} {ref} is ambiguous ({len(matches)} matches found)")
    raise NotFoundError(f"{kind} {ref} not found")


def resolve_stored(store, key: str, ref: str, kind: str) -> dict:
    """`resolve` for the objects of one kind in the cluster store: a full id and a name
    are looked up in its indexes; only a prefix is searched for, over every object."""
    found = store.get(key, ref)
    if found is not None:
        return found
    return resolve(store.list(key), ref, kind, lambda name: store.by_name(key, name))
