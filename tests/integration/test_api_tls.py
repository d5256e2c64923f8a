"""The API on TCP: served only with mutual TLS, and only to certificates of the cluster's CA."""
from __future__ import annotations

import json
import uuid

from swarmtest import free_port_pair

from swarmpy import ca


def _pki(tmp_path):
    root = ca.new_root("test-cluster")
    (tmp_path / "ca.pem").write_bytes(root.cert_pem)
    ca.write(ca.issue(root, "server", "manager"), tmp_path / "server.pem", tmp_path / "server-key.pem")
    ca.write(ca.issue(root, "client", "client"), tmp_path / "cert.pem", tmp_path / "key.pem")
    stranger = ca.new_root("another-cluster")
    ca.write(ca.issue(stranger, "intruder", "client"), tmp_path / "bad.pem", tmp_path / "bad-key.pem")
    return tmp_path


def test_api_on_tcp_needs_a_certificate_from_the_cluster_ca(make_cluster, tmp_path):
    pki = _pki(tmp_path)
    port = free_port_pair()
    node = make_cluster("--api-addr", f"127.0.0.1:{port}", "--api-tlscacert", pki / "ca.pem",
                        "--api-tlscert", pki / "server.pem", "--api-tlskey", pki / "server-key.pem")
    tcp = ["-H", f"tcp://127.0.0.1:{port}"]

    good = node.cli(*tcp, "--tlscacert", pki / "ca.pem", "--tlscert", pki / "cert.pem",
                    "--tlskey", pki / "key.pem", "node", "ls", "--format", "json", host=False)
    assert good.rc == 0, str(good)
    assert [n["id"] for n in json.loads(good.out)] == [node.node_id]

    stranger = node.cli(*tcp, "--tlscacert", pki / "ca.pem", "--tlscert", pki / "bad.pem",
                        "--tlskey", pki / "bad-key.pem", "node", "ls", host=False)
    assert stranger.rc == 1
    assert "closed the connection" in stranger.err

    no_cert = node.cli(*tcp, "node", "ls", host=False)
    assert no_cert.rc == 1
    assert "--tlscacert is required" in no_cert.err


def test_init_refuses_tcp_without_tls(make_cluster, tmp_path):
    node = make_cluster()          # a node, to borrow its CLI environment
    unused = f"unix:///tmp/swarmpy-unused-{uuid.uuid4().hex[:8]}.sock"
    other = node.cli("-H", unused, "init", "--data-dir", tmp_path / "d", "--api-addr", "127.0.0.1:1",
                     "--api-tlscert", tmp_path / "cert.pem", host=False)
    assert other.rc == 1
    assert "--api-tlscacert is required" in other.err
    assert not (tmp_path / "d" / "node.json").exists()


def test_api_on_tcp_with_the_cluster_pki_refuses_worker_certificates(make_cluster):
    port = free_port_pair()
    manager = make_cluster("--api-addr", f"127.0.0.1:{port}")
    worker = make_cluster.join(manager, "worker")
    tcp = ["-H", f"tcp://127.0.0.1:{port}"]

    def as_node(node, *args):
        certs = f"{node.data_dir}/certificates"
        return manager.cli(*tcp, "--tlscacert", f"{certs}/ca.pem", "--tlscert", f"{certs}/node.pem",
                           "--tlskey", f"{certs}/node-key.pem", *args, host=False)

    mine = as_node(manager, "node", "ls", "-q")
    assert mine.rc == 0 and worker.node_id in mine.out, str(mine)
    theirs = as_node(worker, "node", "ls")
    assert theirs.rc == 1 and "a worker node's certificate cannot call the manager API" in theirs.err
    assert as_node(worker, "service", "create", "--name", "x", manager.image, "true").rc == 1
    assert "x" not in manager.service_names()
