"""The multi-host harness's host layer (tests/netns.py): hosts that are separate engines on one
network, reachable from each other, cut off and healed on demand, and gone without a trace
after teardown -- also when the run's owner was killed."""
from __future__ import annotations

import glob
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import netns
from swarmpy.localengine import IMAGE, find_busybox

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "tests"

SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5000))      # only possible where that address lives: in host 2
s.listen()
print("listening", flush=True)
conn, peer = s.accept()
print(peer[0], conn.recv(100).decode(), flush=True)
"""
CLIENT = """
import socket, sys
socket.create_connection((sys.argv[1], 5000), timeout=5).sendall(b"hello")
"""
# Made in a child process that the test then kills -9, as a killed pytest would leave it.
ORPHAN = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import netns
hs = netns.Hosts(1)
hs[0].popen(["sleep", "300"])
print(json.dumps({"tag": hs.tag, "state": str(hs.state_file), "dirs": [hs.workdir, hs.run_dir],
                  "pids": [[p.pid, p.start] for p in hs.pids()]}), flush=True)
time.sleep(300)
"""


@pytest.fixture(scope="module")
def hosts():
    reason = netns.netns_available()
    if reason:
        pytest.skip(reason)
    with netns.Hosts(3) as hs:
        yield hs


def pings(host: netns.Host, addr: str) -> bool:
    return host.run([find_busybox(), "ping", "-c1", "-W1", addr], capture_output=True).returncode == 0


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def assert_gone(tag: str, dirs: list[str], procs: list[netns.Proc], state_file: Path) -> None:
    """Nothing of run `tag` is left: namespaces, links, rules, processes, mounts, cgroups, dirs."""
    name = f"{netns.PREFIX}{tag}"
    assert name not in sh("ip", "netns", "list")
    assert name not in sh("ip", "-o", "link")
    assert f"{netns.PREFIX}b{tag}" not in sh("iptables", "-w", "-S", "FORWARD")
    assert [p for p in procs if p.alive()] == []
    assert netns.mounts_under(dirs) == []
    assert glob.glob(f"/sys/fs/cgroup/*/{name}h*") + glob.glob(f"/sys/fs/cgroup/{name}h*") == []
    assert [d for d in dirs if os.path.exists(d)] == []
    assert not state_file.exists()


def test_each_host_has_an_engine_of_its_own_with_the_test_image(hosts):
    infos = [h.docker().info() for h in hosts]
    assert len({info["ID"] for info in infos}) == 3
    for host, info in zip(hosts, infos):
        assert info["DockerRootDir"].startswith(host.root)
        assert IMAGE in host.docker().images.get(IMAGE).tags
    on_h1 = hosts[0].docker().containers.create(IMAGE, ["true"])
    try:
        assert on_h1.id not in [c.id for c in hosts[1].docker().containers.list(all=True)]
    finally:
        on_h1.remove(force=True)


def test_host_network_container_sits_in_its_host_and_reaches_another(hosts):
    h1, h2 = hosts[0], hosts[1]
    out = h1.docker().containers.run(
        IMAGE, ["sh", "-c", f"busybox ip -o -4 addr show eth0 && busybox ping -c1 -W2 {h2.addr}"],
        network_mode="host", remove=True).decode()
    assert f"inet {h1.addr}/24" in out
    assert "1 packets received" in out


def test_tcp_server_on_one_host_is_reachable_from_another(hosts):
    h1, h2 = hosts[0], hosts[1]
    server = h2.popen([sys.executable, "-c", SERVER, h2.addr], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "listening"
        h1.run([sys.executable, "-c", CLIENT, h2.addr], check=True, timeout=15)
        out, _ = server.communicate(timeout=10)
    finally:
        server.kill()
        server.wait()
    assert out.split() == [h1.addr, "hello"]


def test_partition_cuts_a_host_off_and_heal_restores_it(hosts):
    h1, h2, h3 = hosts
    assert pings(h1, h3.addr)
    h3.partition()
    try:
        assert not pings(h1, h3.addr)
        assert not pings(h3, h1.addr)
        assert pings(h1, h2.addr)              # the others still talk
        assert pings(h3, "127.0.0.1")          # and the cut-off host still talks to itself
    finally:
        h3.heal()
    assert pings(h1, h3.addr) and pings(h3, h2.addr)
    assert "DROP" not in h3.run(["iptables", "-w", "-t", "mangle", "-S"], capture_output=True, text=True).stdout


def test_close_leaves_nothing_behind_even_with_things_running(hosts):
    hs = netns.Hosts(2)
    try:
        h1, h2 = hs
        h1.popen(["sleep", "300"])
        bridged = h1.docker().containers.run(IMAGE, ["sleep", "300"], detach=True)
        host_net = h2.docker().containers.run(IMAGE, ["sleep", "300"], detach=True, network_mode="host")
        h2.partition()
        procs = hs.pids() + [netns.Proc.of(c.attrs["State"]["Pid"]) for c in (bridged.reload() or bridged,
                                                                                host_net.reload() or host_net)]
        assert all(p.alive() for p in procs)
        assert netns.mounts_under([hs.workdir, hs.run_dir])          # so there is something to undo
    finally:
        hs.close()
    hs.close()                                                       # a second close is harmless
    assert hs.problems == []
    assert_gone(hs.tag, [hs.workdir, hs.run_dir], procs, hs.state_file)
    assert pings(hosts[0], hosts[1].addr)                            # another run's hosts untouched


def test_cleanup_stale_tears_down_a_run_whose_owner_was_killed(hosts):
    owner = subprocess.Popen([sys.executable, "-c", ORPHAN, str(TESTS)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([owner.stdout], [], [], 60)
        assert ready, "the child did not bring its host up"
        run = json.loads(owner.stdout.readline())
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    procs = [netns.Proc(pid, start) for pid, start in run["pids"]]
    assert all(p.alive() for p in procs) and Path(run["state"]).exists()   # left behind, for now

    foreign = netns.STATE_DIR / "zz-foreign.json"        # another harness's file, owner long dead
    foreign.write_text(json.dumps({"owner": 1 << 22, "tag": "zz", "hosts": []}))
    try:
        assert run["tag"] in netns.cleanup_stale()
        assert foreign.exists()                            # not ours: left alone
    finally:
        foreign.unlink()

    assert_gone(run["tag"], run["dirs"], procs, Path(run["state"]))
    assert hosts.state_file.exists() and hosts[0].docker().ping()          # a live run is left alone
