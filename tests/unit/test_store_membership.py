"""Raft membership through ClusterStore: real stores on loopback, added and removed one at
a time, writes forwarded from followers, and a clear error when quorum is gone."""
from __future__ import annotations

import asyncio
import time

import pytest

from raft.errors import UnavailableError
from raft.store import NO_LEADER, ClusterStore
from swarmtest import free_port_pair

PASSWORD = "test-password"


def addr() -> str:
    return f"127.0.0.1:{free_port_pair()}"


def service(obj_id: str) -> dict:
    return {"op": "create", "kind": "services", "obj": {"id": obj_id, "spec": {"name": obj_id}}}


async def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {predicate}"
        await asyncio.sleep(0.02)


def test_members_join_one_at_a_time_and_followers_forward_writes(tmp_path):
    async def main():
        a_addr, b_addr, c_addr = addr(), addr(), addr()
        a = ClusterStore(a_addr, [], str(tmp_path / "a"), PASSWORD)
        await a.wait_ready()
        await a.commit([service("before-join")])
        stores = [a]
        try:
            for new, path in ((b_addr, "b"), (c_addr, "c")):
                await a.add_member(new, wait=False)
                peers = a.members()
                joined = ClusterStore(new, [p for p in peers if p != new], str(tmp_path / path), PASSWORD)
                stores.append(joined)
                await joined.wait_ready()
                await wait_until(lambda: joined.get("services", "before-join") is not None)
            assert all(s.members() == sorted([a_addr, b_addr, c_addr]) for s in stores)
            follower = next(s for s in stores if not s.is_leader())
            # A follower's write goes through the leader and is readable on the follower at once.
            await follower.commit([service("from-follower")])
            assert follower.get("services", "from-follower") is not None
            leader = next(s for s in stores if s.is_leader())
            await wait_until(lambda: leader.get("services", "from-follower") is not None)

            # Remove a follower: the other two go on writing.
            gone = next(s for s in stores if not s.is_leader())
            await leader.remove_member(str(gone._raft.selfNode))
            gone.close()
            stores.remove(gone)
            await leader.commit([service("after-remove")])
            assert len(leader.members()) == 2
        finally:
            for s in stores:
                s.close()

    asyncio.run(main())


def test_writes_fail_clearly_without_quorum(tmp_path):
    async def main():
        a_addr, b_addr = addr(), addr()
        a = ClusterStore(a_addr, [], str(tmp_path / "a"), PASSWORD)
        await a.wait_ready()
        await a.add_member(b_addr, wait=False)
        b = ClusterStore(b_addr, [a_addr], str(tmp_path / "b"), PASSWORD)
        try:
            await b.wait_ready()
            await a.commit([service("s1")])
            b.close()          # one of two members gone: no majority
            started = time.monotonic()
            with pytest.raises(UnavailableError) as err:
                await a.commit([service("s2")])
            assert str(err.value).startswith(NO_LEADER)
            assert time.monotonic() - started < 8
            assert a.get("services", "s2") is None
        finally:
            a.close()

    asyncio.run(main())


def test_followers_learn_commits_without_an_extra_message_per_write(tmp_path):
    """The leader does not send each follower a second AppendEntries per write just to
    carry the commit index; followers still apply every write, the last one by the next
    heartbeat although no write follows it."""
    async def main():
        addrs = [addr() for _ in range(3)]
        # Heartbeats every 0.5 s (elections after 2-3 s of silence), so that the count
        # below is the writes' own messages however slow the machine.
        slow_heartbeat = dict(appendEntriesPeriod=0.5, raftMinTimeout=2.0, raftMaxTimeout=3.0,
                              leaderFallbackTimeout=3.0, connectionTimeout=3.0)
        stores = [ClusterStore(a, [p for p in addrs if p != a], str(tmp_path / str(i)), PASSWORD, **slow_heartbeat)
                  for i, a in enumerate(addrs)]
        try:
            await stores[0].wait_ready(timeout=20)
            await wait_until(lambda: sum(s.is_leader() for s in stores) == 1)
            leader = next(s for s in stores if s.is_leader())
            transport = leader._raft._SyncObj__transport
            sent, real_send = [], transport.send

            def counting_send(node, message):
                if message.get("type") == "append_entries":
                    sent.append(node)
                return real_send(node, message)
            transport.send = counting_send
            writes = 50
            for i in range(writes):
                await leader.commit([service(f"s{i}")])
            transport.send = real_send
            # Two followers: two messages per write with the commit sent apart, one without.
            assert len(sent) < 1.5 * 2 * writes, f"{len(sent)} AppendEntries for {writes} writes"
            await wait_until(lambda: all(s.get("services", f"s{writes - 1}") for s in stores), timeout=2.5)
        finally:
            for s in stores:
                s.close()

    asyncio.run(main())


def test_a_follower_cut_off_mid_write_reports_no_leader(tmp_path):
    """A write forwarded just before the follower loses the others fails when its election
    timer fires (pysyncobj's LEADER_CHANGED); with no leader to come, the user reads that
    the swarm has no leader, not that they should retry."""
    async def main():
        addrs = [addr() for _ in range(3)]
        stores = [ClusterStore(a, [p for p in addrs if p != a], str(tmp_path / str(i)), PASSWORD)
                  for i, a in enumerate(addrs)]
        try:
            await stores[0].wait_ready(timeout=20)
            await wait_until(lambda: sum(s.is_leader() for s in stores) == 1)
            follower = next(s for s in stores if not s.is_leader())
            await wait_until(lambda: follower.leader() is not None)
            for s in [s for s in stores if s is not follower]:
                s.close()
                stores.remove(s)
            started = time.monotonic()
            with pytest.raises(UnavailableError) as err:
                await follower.commit([service("cut")])
            assert str(err.value).startswith(NO_LEADER), err.value
            assert time.monotonic() - started < 8
            assert follower.get("services", "cut") is None
        finally:
            for s in stores:
                s.close()

    asyncio.run(main())
