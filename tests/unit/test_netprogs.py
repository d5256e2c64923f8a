"""The network test programs of tests/netprogs (mcast, tcpblast) and their image.

The first tests compile the programs and run them on this host (no Docker).  The others
(marked integration: skipped when no engine answers) build `swarmpy-test/netprogs` in the local
engine and run the programs in containers on a user-defined bridge network of their own:
TCP bulk transfer between two containers, and multicast from one sender to two receivers, every
datagram arriving exactly once at each.  Everything made here is named `swarmpy-np<hex>...` and
labelled, and removed at the end; the image stays (it is cached by source hash, like the busybox
test image).

On one Linux bridge, multicast reaches the receivers with the bridge's IGMP snooping on (docker's
default): the receivers' joins send IGMP reports, so the bridge learns their ports.  Snooping is
left as docker set it.
"""
from __future__ import annotations

import importlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))     # tests/: `import netprogs`
import netprogs  # noqa: E402

netprogs_build = importlib.import_module("netprogs.build")   # the module (netprogs.build is the function)

GROUP, MCAST_PORT, TCP_PORT = "239.1.2.3", 5000, 5001


def _fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split())


@pytest.fixture(scope="module")
def programs() -> dict[str, str]:
    try:
        return netprogs.build()
    except RuntimeError as exc:
        if "apt-get install gcc" in str(exc):
            pytest.skip(str(exc))
        raise


# -- on this host, no Docker ---------------------------------------------------------------
def test_missing_gcc_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(netprogs_build.shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(RuntimeError, match=r"apt-get install gcc libc6-dev"):
        netprogs.build()


def test_build_is_cached_and_static(programs, tmp_path):
    assert set(programs) == {"mcast", "tcpblast"}
    mtimes = {p: os.stat(path).st_mtime_ns for p, path in programs.items()}
    again = netprogs.build()
    assert again == programs
    assert {p: os.stat(path).st_mtime_ns for p, path in again.items()} == mtimes   # not recompiled
    copied = netprogs.build(tmp_path)
    assert copied == {p: str(tmp_path / p) for p in programs}
    for path in copied.values():
        head = Path(path).read_bytes()
        assert head[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in head[:4096]   # no interpreter
        assert os.access(path, os.X_OK)


def test_usage_errors(programs):
    for prog in ("mcast", "tcpblast"):
        proc = subprocess.run([programs[prog]], capture_output=True, text=True, timeout=10)
        assert proc.returncode == 1 and "usage:" in proc.stderr


def test_tcpblast_on_loopback(programs, free_port):
    sink = subprocess.Popen([programs["tcpblast"], "sink", str(free_port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        proc = subprocess.run([programs["tcpblast"], "send", "127.0.0.1", str(free_port), "0.5", "2"],
                              capture_output=True, text=True, timeout=20)
        assert proc.returncode == 0, proc.stderr
        out = _fields(proc.stdout.strip())
        assert set(out) == {"bytes", "seconds", "gbit_per_s"}
        assert int(out["bytes"]) > 0 and 0.4 < float(out["seconds"]) < 5 and float(out["gbit_per_s"]) > 0
    finally:
        os.kill(sink.pid, signal.SIGKILL)
        sink.wait(timeout=10)


# -- in containers on a bridge network of our own --------------------------------------------
class _Lab:
    """A user-defined bridge network plus the containers run on it; `close()` removes all."""

    def __init__(self, client, image: str):
        self.client, self.image = client, image
        self.tag = secrets.token_hex(3)
        self.prefix = f"swarmpy-np{self.tag}"
        self.label = {"swarmpy.test.netprogs": self.tag}
        self.bridge = f"snp{self.tag}"                       # IFNAMSIZ: 9 characters
        self.network = None
        import docker.errors
        for _ in range(20):                                # 10.98.<x>.0/24 that no network holds yet
            x = secrets.randbelow(256)
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=f"10.98.{x}.0/24")])
            try:
                self.network = client.networks.create(
                    f"{self.prefix}-net", driver="bridge", ipam=ipam, labels=self.label,
                    options={"com.docker.network.bridge.name": self.bridge})
                break
            except docker.errors.APIError as exc:
                if "overlap" not in str(exc).lower():
                    raise
        if self.network is None:
            raise RuntimeError("no free 10.98.<x>.0/24 subnet for the test network")

    def snooping(self) -> str:
        try:
            return Path(f"/sys/class/net/{self.bridge}/bridge/multicast_snooping").read_text().strip()
        except OSError:
            return "?"

    def start(self, name: str, argv: list[str]):
        return self.client.containers.run(self.image, argv, name=f"{self.prefix}-{name}", detach=True,
                                          network=self.network.name, labels=self.label)

    def run(self, name: str, argv: list[str], timeout: float = 60) -> str:
        """Run to completion; returns stdout, fails the test on a non-zero exit."""
        c = self.start(name, argv)
        status = c.wait(timeout=timeout)["StatusCode"]
        out = c.logs(stdout=True, stderr=False).decode()
        assert status == 0, f"{argv} exited {status}: {c.logs().decode()}"
        return out

    def close(self) -> None:
        for c in self.client.containers.list(all=True, filters={"label": f"swarmpy.test.netprogs={self.tag}"}):
            try:
                c.remove(force=True)
            except Exception:
                pass
        if self.network is not None:
            self.network.remove()


@pytest.fixture(scope="module")
def netprogs_image(docker_client, programs) -> str:
    return netprogs.build_image(docker_client)


@pytest.fixture(scope="module")
def lab(docker_client, netprogs_image, request):
    lab = _Lab(docker_client, netprogs_image)
    request.addfinalizer(lab.close)
    return lab


@pytest.mark.integration
def test_image_is_idempotent_and_labelled(docker_client, netprogs_image):
    image = docker_client.images.get(netprogs_image)
    digest = image.labels[netprogs_build.HASH_LABEL]
    assert f"swarmpy-test/netprogs:netprogs-{digest[:12]}" in image.tags
    t0 = time.monotonic()
    assert netprogs.build_image(docker_client) == netprogs_image
    assert docker_client.images.get(netprogs_image).id == image.id and time.monotonic() - t0 < 5


@pytest.mark.integration
def test_tcpblast_between_containers(lab):
    lab.start("tcp-sink", ["tcpblast", "sink", str(TCP_PORT)])
    # by container name: the static binary resolves through docker's DNS (127.0.0.11)
    out = lab.run("tcp-send", ["tcpblast", "send", f"{lab.prefix}-tcp-sink", str(TCP_PORT), "2", "2"])
    fields = _fields(out.strip())
    assert int(fields["bytes"]) > 0, out
    assert 1.9 < float(fields["seconds"]) < 5, out
    # the busybox network applets work in the same image, against the same sink
    sink_ip = lab.client.containers.get(f"{lab.prefix}-tcp-sink").attrs["NetworkSettings"]["Networks"][
        lab.network.name]["IPAddress"]
    out = lab.run("tools", ["sh", "-c", f"ping -c 1 -W 5 {sink_ip} && nslookup {lab.prefix}-tcp-sink 127.0.0.11 "
                           "&& ls /bin/httpd /bin/wget /bin/ip /bin/mcast /bin/tcpblast"])
    assert "1 packets received" in out and f"Address: {sink_ip}" in out and "/bin/httpd" in out, out


@pytest.mark.integration
def test_multicast_reaches_each_receiver_exactly_once(lab):
    receivers = [lab.start(f"recv{i}", ["mcast", "recv", "-i", "2", GROUP, str(MCAST_PORT), "20"])
                 for i in (1, 2)]
    deadline = time.monotonic() + 15
    while not all(b"mcast: joined" in r.logs(stdout=False, stderr=True) for r in receivers):
        assert time.monotonic() < deadline, "receivers did not join"
        time.sleep(0.1)
    sent = _fields(lab.run("mc-send", ["mcast", "send", GROUP, str(MCAST_PORT), "500", "5000"]).strip())
    assert sent["sent"] == "500" and sent["errors"] == "0", sent
    for r in receivers:
        assert r.wait(timeout=30)["StatusCode"] == 0
        line = r.logs(stdout=True, stderr=False).decode().strip()
        assert _fields(line) == {"received": "500", "unique": "500", "duplicates": "0",
                                 "first": "0", "last": "499"}, \
            f"{r.name}: {line} (bridge {lab.bridge} multicast_snooping={lab.snooping()})"
