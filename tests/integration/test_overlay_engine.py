"""worker/network/overlay.py against this machine's engine: a network the cluster has just
replaced (a stack removed and deployed again: same name, same subnet, new id) while the old
one still lingers on the engine is cleared, not waited on."""
from __future__ import annotations

import asyncio
import ipaddress
import secrets

import pytest

from swarmtest import TEST_IMAGE
from worker.engine import Engine
from worker.network.overlay import LABEL_NETWORK, Overlays

pytestmark = pytest.mark.integration


def view(network_id: str, name: str, subnet: str, addr: str) -> dict:
    return {"id": network_id, "name": name, "subnet": subnet, "vni": 4999, "internal": False,
            "multicast": True, "ingress": False, "attachable": False, "addr": addr, "peers": [],
            "peer_gateways": {}, "services": []}


@pytest.fixture
def engine():
    e = Engine()
    made: list[str] = []
    yield e, made
    for name in made:
        for net in e.api.networks(names=[name]):
            try:
                e.api.remove_network(net["Id"])
            except Exception:
                pass
    e.close()


def test_a_lingering_network_of_an_earlier_use_is_replaced(engine):
    e, made = engine
    name = f"spt-{secrets.token_hex(3)}"
    made.append(name)
    subnet = f"10.96.{secrets.randbelow(200)}.0/24"
    gateway = subnet.replace(".0/24", ".9")
    old_id, new_id = "old" + secrets.token_hex(11), "new" + secrets.token_hex(11)
    e.api.create_network(name, driver="bridge", labels={LABEL_NETWORK: old_id},
                         ipam={"Driver": "default", "Config": [{"Subnet": subnet, "Gateway": gateway}]})

    async def build():
        overlays = Overlays(e, "127.0.0.1", lambda ip: [])
        try:
            await overlays.apply([view(new_id, name, subnet, gateway)])
            return overlays.built.get(new_id)
        finally:
            await overlays.remove_all()

    built = asyncio.run(build())
    assert built == gateway
    # Built as the new network (then removed by remove_all): the old one is gone too.
    assert not [n for n in e.api.networks(filters={"label": f"{LABEL_NETWORK}={old_id}"})]


def test_a_network_of_someone_else_with_that_name_is_left_alone(engine):
    e, made = engine
    name = f"spt-{secrets.token_hex(3)}"
    made.append(name)
    e.api.create_network(name, driver="bridge")

    async def build():
        overlays = Overlays(e, "127.0.0.1", lambda ip: [])
        try:
            await overlays.apply([view("x" + secrets.token_hex(12), name, "10.95.1.0/24", "10.95.1.9")])
            return dict(overlays.built)
        finally:
            await overlays.remove_all()

    assert asyncio.run(build()) == {}
    assert [n["Name"] for n in e.api.networks(names=[name])] == [name]


def test_an_attachable_network_leaves_its_upper_half_to_the_engine(engine):
    e, made = engine
    name = f"spt-{secrets.token_hex(3)}"
    made.append(name)
    subnet = f"10.94.{secrets.randbelow(200)}.0/24"
    attachable = dict(view("a" + secrets.token_hex(12), name, subnet, subnet.replace(".0/24", ".3")),
                      engine_range=subnet.replace(".0/24", ".128/25"))

    async def build():
        overlays = Overlays(e, "127.0.0.1", lambda ip: [])
        try:
            await overlays.apply([attachable])
            [net] = e.api.networks(names=[name])
            standalone = e.client.containers.run(TEST_IMAGE, ["sleep", "30"], detach=True, network=name,
                                          labels={"swarmpy.test": name})
            try:
                standalone.reload()
                return standalone.attrs["NetworkSettings"]["Networks"][name]["IPAddress"]
            finally:
                standalone.remove(force=True)
        finally:
            await overlays.remove_all()

    # A container docker attaches by hand gets its address from the upper half only.
    assert ipaddress.ip_address(asyncio.run(build())) in ipaddress.ip_network(attachable["engine_range"])
