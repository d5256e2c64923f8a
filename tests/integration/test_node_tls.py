"""Node traffic (the cluster port) is mutual TLS: no certificate of the cluster's CA, no
session; a certificate of the cluster's CA for a node the cluster does not know (removed,
or never joined) is refused too."""
from __future__ import annotations

import asyncio
import ssl

import pytest

from swarmpy import ca, tls
from swarmpy.rpc import Channel, ChannelClosed


def _files(tmp_path, root: ca.KeyPair, name: str) -> tls.TLSFiles:
    (tmp_path / f"{name}-ca.pem").write_bytes(root.cert_pem)
    ca.write(ca.issue(root, name, "worker"), tmp_path / f"{name}.pem", tmp_path / f"{name}-key.pem")
    return tls.TLSFiles(str(tmp_path / f"{name}-ca.pem"), str(tmp_path / f"{name}.pem"),
                        str(tmp_path / f"{name}-key.pem"))


async def _register(port: int, context, token: str = "SWMTKN-1-wrong") -> dict:
    channel = await Channel.connect("127.0.0.1", port, ssl=context)
    try:
        await channel.send({"type": "register", "node_id": "intruder", "token": token, "role": "worker",
                            "hostname": "x", "labels": {}, "description": {}})
        return await asyncio.wait_for(channel.recv(), 10)
    finally:
        await channel.close()


def test_dispatcher_requires_a_certificate_of_a_member_node(make_cluster, tmp_path):
    node = make_cluster()
    certs = f"{node.data_dir}/certificates"
    with open(f"{certs}/ca.pem", "rb") as f, open(f"{certs}/ca-key.pem", "rb") as k:
        cluster_root = ca.KeyPair(f.read(), k.read())

    # Plain TCP: the TLS server never answers a frame.
    with pytest.raises((ChannelClosed, asyncio.TimeoutError, ConnectionError)):
        asyncio.run(_register(node.port, None))
    # TLS without a client certificate: only the CA server answers, and it refuses sessions.
    anonymous = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anonymous.check_hostname, anonymous.verify_mode = False, ssl.CERT_NONE
    reply = asyncio.run(_register(node.port, anonymous))
    assert reply["type"] == "error" and "certificate of this cluster is required" in reply["error"]
    # A certificate from another CA: the handshake fails.
    stranger = tls.client_context(_files(tmp_path, ca.new_root("other"), "stranger"))
    with pytest.raises((ssl.SSLError, ChannelClosed, ConnectionError)):
        asyncio.run(_register(node.port, stranger))
    # The cluster's CA signed it, but no such node is a member (as after `node rm`): refused.
    member = tls.client_context(_files(tmp_path, cluster_root, "member"))
    reply = asyncio.run(_register(node.port, member))
    assert reply["type"] == "error" and "node member is not a member of this swarm" in reply["error"]
    assert [n["id"] for n in node.get("/nodes")] == [node.node_id]
