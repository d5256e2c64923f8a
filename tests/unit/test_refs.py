"""swarmpy/manager/refs.py: docker's lookup order for a user's reference to an object."""
from __future__ import annotations

import pytest

from raft.errors import NotFoundError
from raft.tables import Tables
from swarmpy.manager.refs import AmbiguousError, resolve_stored


@pytest.fixture
def store() -> Tables:
    tables = Tables()
    for obj_id, name in (("abc111", "web"), ("abd222", "abc111"), ("fff333", "db")):
        result, _ = tables.apply([{"op": "create", "kind": "services",
                                   "obj": {"id": obj_id, "spec": {"name": name}}}])
        assert result["ok"], result
    return tables


@pytest.mark.parametrize("ref, expected", [
    ("abc111", "abc111"),     # a full id comes before a name that is the same text
    ("web", "abc111"),
    ("db", "fff333"),
    ("abd", "abd222"),        # a unique prefix
    ("f", "fff333"),
])
def test_a_reference_finds_its_object_in_docker_order(store, ref, expected):
    assert resolve_stored(store, "services", ref, "service")["id"] == expected


def test_an_ambiguous_prefix_and_an_unknown_reference_are_refused_by_name(store):
    with pytest.raises(AmbiguousError, match="service ab is ambiguous"):
        resolve_stored(store, "services", "ab", "service")
    with pytest.raises(NotFoundError, match="service nope not found"):
        resolve_stored(store, "services", "nope", "service")
    with pytest.raises(NotFoundError, match="service  not found"):
        resolve_stored(store, "services", "", "service")
