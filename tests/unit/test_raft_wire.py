"""raft/wire.py: Raft messages sealed with AES-GCM under the cluster's Raft password, and
real stores on loopback that only talk to members with the same password."""
from __future__ import annotations

import asyncio
import time

import pytest
from cryptography.exceptions import InvalidTag

from raft.store import ClusterStore, derive_raft_password
from raft.wire import AeadEncryptor, derive_key
from swarmtest import free_port_pair

pytestmark = pytest.mark.timeout(60)

KEY = derive_key(derive_raft_password("wire-test"))


def test_a_sealed_message_opens_with_the_same_key_only():
    sealed = AeadEncryptor(KEY).encrypt_at_time(b"append entries", 1234)
    assert b"append entries" not in sealed
    assert AeadEncryptor(KEY).extract_timestamp(sealed) == 1234
    assert AeadEncryptor(KEY).decrypt(sealed) == b"append entries"
    with pytest.raises(InvalidTag):
        AeadEncryptor(derive_key(derive_raft_password("another-cluster"))).decrypt(sealed)


@pytest.mark.parametrize("offset", [0, 7, 8, 19, 20, -1])     # timestamp, nonce, ciphertext, tag
def test_any_changed_byte_is_refused(offset):
    sealed = bytearray(AeadEncryptor(KEY).encrypt_at_time(b"x" * 64, 99))
    sealed[offset] ^= 0x01
    with pytest.raises(InvalidTag):
        AeadEncryptor(KEY).decrypt(bytes(sealed))


def test_the_same_message_never_seals_the_same_way_twice():
    enc = AeadEncryptor(KEY)
    sealed = {enc.encrypt_at_time(b"same", 5) for _ in range(1000)}
    assert len(sealed) == 1000


def test_a_member_with_another_password_gets_nothing(tmp_path):
    """Three members, one of them set up with the wrong password: the two others commit
    with each other, and the stranger neither receives the state nor holds up writes."""
    async def main():
        a_addr, b_addr, c_addr = (f"127.0.0.1:{free_port_pair()}" for _ in range(3))
        good, bad = derive_raft_password("right"), derive_raft_password("wrong")
        all_addrs = [a_addr, b_addr, c_addr]
        stores = [ClusterStore(addr, [p for p in all_addrs if p != addr], str(tmp_path / name), pw)
                  for addr, name, pw in ((a_addr, "a", good), (b_addr, "b", good), (c_addr, "c", bad))]
        a, b, stranger = stores
        try:
            await a.wait_ready(timeout=20)
            leader = a if a.is_leader() else b
            assert leader.is_leader(), "one of the two members with the right password leads"
            await leader.commit([{"op": "create", "kind": "services",
                                  "obj": {"id": "s1", "spec": {"name": "web"}}}])
            deadline = time.monotonic() + 10
            while (a.get("services", "s1") is None or b.get("services", "s1") is None) \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert a.get("services", "s1") and b.get("services", "s1")
            await asyncio.sleep(1.0)
            assert stranger.get("services", "s1") is None
            assert stranger.leader() not in (a_addr, b_addr)
        finally:
            for s in stores:
                s.close()

    asyncio.run(main())


def test_raft_payloads_pickle_with_protocol_4_and_old_journals_still_load(tmp_path, monkeypatch):
    """A data dir journalled with pysyncobj's protocol 2 (swarmpy before this change)
    reopens with every transaction; what is written from then on uses protocol 4."""
    import pysyncobj.pickle as pysyncobj_pickle

    async def write_and_close(name: str) -> None:
        store = ClusterStore(f"127.0.0.1:{free_port_pair()}", [], str(tmp_path), derive_raft_password("j"))
        try:
            await store.wait_ready(timeout=20)
            await store.commit([{"op": "create", "kind": "services", "obj": {"id": name, "spec": {"name": name}}}])
        finally:
            store.close()

    async def reopen() -> ClusterStore:
        store = ClusterStore(f"127.0.0.1:{free_port_pair()}", [], str(tmp_path), derive_raft_password("j"))
        await store.wait_ready(timeout=20)
        return store

    import raft.wire
    monkeypatch.setattr(raft.wire, "PICKLE_PROTOCOL", 2)     # as pysyncobj writes on its own
    asyncio.run(write_and_close("old"))
    assert b"\x80\x02" in (tmp_path / "raft.journal").read_bytes()
    monkeypatch.undo()
    asyncio.run(write_and_close("new"))
    assert pysyncobj_pickle.dumps(b"payload")[:2] == b"\x80\x04"

    async def check() -> None:
        store = await reopen()
        try:
            assert store.get("services", "old")["spec"]["name"] == "old"
            assert store.get("services", "new")["spec"]["name"] == "new"
        finally:
            store.close()
    asyncio.run(check())
