"""raft/store.py: a real single-node pysyncobj ClusterStore on a free port in a tmp dir."""
from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from raft.errors import ConflictError, ExistsError, NotFoundError, StoreError, UnavailableError
from raft.store import ClusterStore, RaftPortError, derive_raft_password

pytestmark = pytest.mark.timeout(30)

PASSWORD = derive_raft_password("unit-test-secret")


def open_store(data_dir, port) -> ClusterStore:
    return ClusterStore(f"127.0.0.1:{port}", [], str(data_dir), PASSWORD)


async def ready(store: ClusterStore) -> ClusterStore:
    await store.wait_ready(timeout=10)
    return store


async def next_events(queue: asyncio.Queue, timeout: float = 3.0) -> list:
    return await asyncio.wait_for(queue.get(), timeout)


def service(obj_id: str, name: str) -> dict:
    return {"id": obj_id, "spec": {"name": name, "replicas": 1}}


def test_password_is_required(tmp_path, free_port):
    with pytest.raises(ValueError, match="password"):
        ClusterStore(f"127.0.0.1:{free_port}", [], str(tmp_path), "")


def test_derived_password_is_stable_and_secret_dependent():
    assert derive_raft_password("a") == derive_raft_password("a")
    assert derive_raft_password("a") != derive_raft_password("b")
    assert len(derive_raft_password("a")) == 64


def test_commit_reads_and_status(tmp_path, free_port):
    async def main():
        store = open_store(tmp_path, free_port)
        try:
            await ready(store)
            assert store.is_ready() and store.is_leader()
            assert store.leader() == f"127.0.0.1:{free_port}"
            result = await store.commit([{"op": "create", "kind": "services", "obj": service("s1", "web")}])
            assert result["ok"] is True and result["versions"] == [result["index"]]
            assert store.get("services", "s1")["version"] == result["index"]
            assert store.by_name("services", "web")["id"] == "s1"
            assert [s["id"] for s in store.list("services")] == ["s1"]
            status = store.status()
            assert status["leader"] == status["self"] == f"127.0.0.1:{free_port}"
            assert status["commit_index"] >= 1 and status["term"] >= 1
        finally:
            store.close()
    asyncio.run(main())


def test_commit_errors_map_to_exceptions_and_write_nothing(tmp_path, free_port):
    async def main():
        store = open_store(tmp_path, free_port)
        try:
            await ready(store)
            await store.commit([{"op": "create", "kind": "services", "obj": service("s1", "web")}])
            await store.commit([{"op": "patch", "kind": "services", "id": "s1", "set": {"n": 1}}])
            index = store.tables.index

            with pytest.raises(ConflictError, match="update out of sequence") as exc:
                await store.commit([{"op": "update", "kind": "services", "obj": service("s1", "web"),
                                     "expect": 1}])
            assert exc.value.status == 409
            with pytest.raises(ExistsError):
                await store.commit([{"op": "create", "kind": "services", "obj": service("s2", "db")},
                                    {"op": "create", "kind": "services", "obj": service("s3", "web")}])
            with pytest.raises(NotFoundError):
                await store.commit([{"op": "delete", "kind": "services", "id": "nope"}])
            with pytest.raises(StoreError, match="malformed"):
                await store.commit([{"op": "create", "kind": "services"}])

            assert store.tables.index == index
            assert store.get("services", "s2") is None
            assert store.get("services", "s1")["n"] == 1
        finally:
            store.close()
    asyncio.run(main())


def test_watch_receives_each_transaction_events(tmp_path, free_port):
    async def main():
        store = open_store(tmp_path, free_port)
        try:
            await ready(store)
            queue = store.watch()
            other = store.watch()
            await store.commit([{"op": "create", "kind": "services", "obj": service("s1", "web")},
                                {"op": "create", "kind": "tasks",
                                 "obj": {"id": "t1", "service_id": "s1", "node_id": None}}])
            events = await next_events(queue)
            assert [(e.action, e.kind, e.obj["id"]) for e in events] == [
                ("create", "services", "s1"), ("create", "tasks", "t1")]
            assert len({e.index for e in events}) == 1
            assert [e.obj["id"] for e in await next_events(other)] == ["s1", "t1"]

            store.unwatch(other)
            await store.commit([{"op": "patch", "kind": "tasks", "id": "t1", "set": {"node_id": "n1"}}])
            events = await next_events(queue)
            assert [(e.action, e.obj["node_id"]) for e in events] == [("update", "n1")]

            # a rejected transaction and one whose only op is skipped publish nothing
            with pytest.raises(NotFoundError):
                await store.commit([{"op": "delete", "kind": "tasks", "id": "nope"}])
            await store.commit([{"op": "delete", "kind": "tasks", "id": "nope", "skip_missing": True}])
            await store.commit([{"op": "delete", "kind": "tasks", "id": "t1"}])
            events = await next_events(queue)
            assert [(e.action, e.obj["id"]) for e in events] == [("delete", "t1")]
            assert queue.empty()
            assert other.empty()
        finally:
            store.close()
    asyncio.run(main())


def test_writes_committed_together_reach_watchers_in_one_delivery_in_commit_order(tmp_path, free_port):
    """Writes submitted in one turn of the event loop share a Raft entry (group commit); a
    watcher gets that entry's events at once, in commit order, and a rejected write among
    them adds none."""
    async def main():
        store = open_store(tmp_path, free_port)
        try:
            await ready(store)
            await store.commit([{"op": "create", "kind": "services", "obj": service("s1", "web")}])
            queue = store.watch()
            writes = [store.commit([{"op": "patch", "kind": "services", "id": "s1", "set": {"n": i}}])
                      for i in range(3)]
            writes.insert(1, store.commit([{"op": "delete", "kind": "tasks", "id": "nope"}]))
            results = await asyncio.gather(*writes, return_exceptions=True)
            assert isinstance(results[1], NotFoundError)
            events = await next_events(queue)
            assert [(e.action, e.obj["n"]) for e in events] == [("update", 0), ("update", 1), ("update", 2)]
            assert [e.index for e in events] == [r["index"] for r in results if isinstance(r, dict)]
            assert queue.empty()
            assert store.get("services", "s1")["n"] == 2
        finally:
            store.close()
    asyncio.run(main())


def test_state_persists_across_restart(tmp_path, free_port):
    async def first():
        store = open_store(tmp_path, free_port)
        try:
            await ready(store)
            await store.commit([{"op": "create", "kind": "services", "obj": service("s1", "web")},
                                {"op": "create", "kind": "tasks",
                                 "obj": {"id": "t1", "service_id": "s1", "node_id": "n1"}}])
            for i in range(5):
                await store.commit([{"op": "patch", "kind": "services", "id": "s1", "set": {"n": i}}])
            await store.commit([{"op": "create", "kind": "services", "obj": service("s2", "old")}])
            await store.commit([{"op": "delete", "kind": "services", "id": "s2"}])
            return store.tables.index
        finally:
            store.close()

    async def second(index_before):
        store = open_store(tmp_path, free_port)
        try:
            await ready(store)
            assert store.tables.index == index_before
            s1 = store.get("services", "s1")
            assert s1["n"] == 4 and s1["version"] == index_before - 2
            assert store.by_name("services", "web")["id"] == "s1"
            assert store.get("services", "s2") is None and store.by_name("services", "old") is None
            assert store.tables.tasks_by_service == {"s1": {"t1"}}
            assert store.tables.tasks_by_node == {"n1": {"t1"}}
            # still writable, versions continue from the restored index, watchers still work
            queue = store.watch()
            result = await store.commit([{"op": "patch", "kind": "services", "id": "s1", "set": {"n": 99},
                                          "expect": s1["version"]}])
            assert result["index"] == index_before + 1
            assert [e.obj["n"] for e in await next_events(queue)] == [99]
        finally:
            store.close()

    index = asyncio.run(first())
    assert os.path.exists(tmp_path / "raft.journal")
    asyncio.run(second(index))


def test_state_persists_from_snapshot_dump(tmp_path, free_port):
    """After log compaction the state comes back from the full dump (plus later journal entries)."""
    async def first():
        store = open_store(tmp_path, free_port)
        try:
            await ready(store)
            await store.commit([{"op": "create", "kind": "services", "obj": service("s1", "web")},
                                {"op": "create", "kind": "tasks",
                                 "obj": {"id": "t1", "service_id": "s1", "node_id": "n1"}}])
            store._raft.forceLogCompaction()
            dump = tmp_path / "raft.dump"
            for _ in range(300):
                if dump.exists() and dump.stat().st_size > 0:
                    break
                await asyncio.sleep(0.01)
            assert dump.exists(), "log compaction did not write the dump"
            await asyncio.sleep(0.1)
            await store.commit([{"op": "patch", "kind": "services", "id": "s1", "set": {"after": True}}])
        finally:
            store.close()

    async def second():
        store = open_store(tmp_path, free_port)
        try:
            await ready(store)
            s1 = store.get("services", "s1")
            assert s1 is not None and s1.get("after") is True
            assert store.by_name("services", "web")["id"] == "s1"
            assert store.tables.tasks_by_node == {"n1": {"t1"}}
            queue = store.watch()
            await store.commit([{"op": "delete", "kind": "tasks", "id": "t1"}])
            assert [(e.action, e.obj["id"]) for e in await next_events(queue)] == [("delete", "t1")]
            assert store.tables.tasks_by_node == {}
        finally:
            store.close()

    asyncio.run(first())
    asyncio.run(second())


def test_many_concurrent_commits_all_apply(tmp_path, free_port):
    async def main():
        store = open_store(tmp_path, free_port)
        try:
            await ready(store)
            results = await asyncio.gather(*(
                store.commit([{"op": "create", "kind": "nodes", "obj": {"id": f"n{i}"}}]) for i in range(50)))
            assert sorted(r["index"] for r in results) == list(range(1, 51))
            assert len(store.list("nodes")) == 50
        finally:
            store.close()
    asyncio.run(main())


def test_concurrent_commits_share_raft_entries_yet_succeed_or_fail_alone(tmp_path, free_port):
    async def first():
        store = open_store(tmp_path, free_port)
        try:
            await ready(store)
            await store.commit([{"op": "create", "kind": "nodes", "obj": {"id": "taken"}}])
            raft_before = store.status()["commit_index"]
            outcomes = await asyncio.gather(*(
                store.commit([{"op": "create", "kind": "nodes", "obj": {"id": "taken" if i == 7 else f"g{i}"}}])
                for i in range(30)), return_exceptions=True)
            assert isinstance(outcomes[7], ExistsError)
            assert all(isinstance(o, dict) and o["ok"] for i, o in enumerate(outcomes) if i != 7)
            entries = store.status()["commit_index"] - raft_before
            assert entries < 29, f"{entries} Raft entries for 29 writes: no group commit"
            return sorted(n["id"] for n in store.list("nodes"))
        finally:
            store.close()

    async def second():
        store = open_store(tmp_path, free_port)      # the journal replays the grouped entries
        try:
            await ready(store)
            return sorted(n["id"] for n in store.list("nodes"))
        finally:
            store.close()

    ids = asyncio.run(first())
    assert len(ids) == 30 and "g7" not in ids
    assert asyncio.run(second()) == ids


def test_a_failing_raft_tick_is_logged_once_and_ticking_goes_on(tmp_path, free_port):
    """An exception inside a tick must not pass unseen: a leader whose tick fails sends no
    heartbeats. It is logged once per kind, and the store works again once it stops."""
    from structlog.testing import capture_logs

    async def main():
        store = await ready(open_store(tmp_path, free_port))
        real_tick, failures = store._raft.doTick, []

        def failing_tick(*args):
            if len(failures) < 40:
                failures.append(1)
                raise RuntimeError("tick broke")
            return real_tick(*args)
        try:
            with capture_logs() as logs:
                store._raft.doTick = failing_tick
                while len(failures) < 40:
                    await asyncio.sleep(0.01)
                await store.commit([{"op": "create", "kind": "services", "obj": service("s1", "web")}])
            assert store.get("services", "s1") is not None
            reported = [e for e in logs if e["event"] == "raft_tick_failed"]
            assert len(reported) == 1 and "RuntimeError: tick broke" in reported[0]["error"]
        finally:
            store.close()

    asyncio.run(main())


def test_the_pysyncobj_internals_the_store_and_wire_override_exist():
    """raft/store.py and raft/wire.py override pysyncobj 0.3.17 methods by their private
    names (setup.cfg pins it): a new pysyncobj must fail here, by name, not by a cluster
    that silently stops replicating."""
    from pysyncobj import SyncObj
    from pysyncobj.tcp_connection import TcpConnection
    import pysyncobj.pickle as pysyncobj_pickle

    hooks = {SyncObj: ("_SyncObj__sendAppendEntries", "_SyncObj__applyLogEntries",
                       "_SyncObj__getCurrentLogIndex", "_SyncObj__onLeaderChanged",
                       "_checkCommandsToApply", "_applyCommand"),
             TcpConnection: ("send", "_TcpConnection__trySendBuffer"),
             pysyncobj_pickle: ("__protocol", "dumps", "loads")}
    missing = [f"{getattr(owner, '__name__', owner)}.{name}" for owner, names in hooks.items()
               for name in names if not hasattr(owner, name)]
    assert not missing, f"pysyncobj no longer has {', '.join(missing)}: revisit raft/store.py and raft/wire.py"


def test_a_taken_raft_port_fails_at_once_naming_it(tmp_path):
    """pysyncobj alone retries the bind for ever, spinning: the daemon hung at start."""
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = holder.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(RaftPortError) as err:
            ClusterStore(f"127.0.0.1:{port}", [], str(tmp_path), PASSWORD)
        assert time.monotonic() - started < 10
        assert f"the Raft port {port} is in use" in str(err.value) and "--listen-addr" in str(err.value)
    store = open_store(tmp_path, port)      # free again: the same data dir opens
    store.close()


def test_a_write_with_no_outcome_fails_after_the_commit_timeout(tmp_path, free_port, monkeypatch):
    """A write whose entry never comes back (here: dropped before Raft sees it) is answered
    once its deadline passes, as an unknown outcome, and later writes still commit."""
    import raft.store
    monkeypatch.setattr(raft.store, "COMMIT_TIMEOUT_S", 0.3)

    async def main():
        store = open_store(tmp_path, free_port)
        try:
            await ready(store)
            propose = store._propose
            store._propose = lambda loop, batch: None
            t0 = time.monotonic()
            with pytest.raises(UnavailableError, match="outcome is unknown"):
                await store.commit([{"op": "create", "kind": "services", "obj": service("s1", "web")}])
            assert 0.3 <= time.monotonic() - t0 < 2.0
            assert store._waiting == {}
            store._propose = propose
            await store.commit([{"op": "create", "kind": "services", "obj": service("s2", "db")}])
            assert store.get("services", "s1") is None and store.get("services", "s2") is not None
        finally:
            store.close()
    asyncio.run(main())
