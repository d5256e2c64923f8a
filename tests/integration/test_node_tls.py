"""Node traffic (the dispatcher's port) is mutual TLS: no certificate of the cluster's CA,
no session; and a certificate alone is not enough without the join token."""
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


def test_dispatcher_requires_a_cluster_certificate_and_a_token(make_cluster, tmp_path):
    node = make_cluster()
    certs = f"{node.data_dir}/certificates"
    with open(f"{certs}/ca.pem", "rb") as f, open(f"{certs}/ca-key.pem", "rb") as k:
        cluster_root = ca.KeyPair(f.read(), k.read())

    # Plain TCP: the TLS server never answers a frame.
    with pytest.raises((ChannelClosed, asyncio.TimeoutError, ConnectionError)):
        asyncio.run(_register(node.port, None))
    # A certificate from another CA: the handshake fails.
    stranger = tls.client_context(_files(tmp_path, ca.new_root("other"), "stranger"))
    with pytest.raises((ssl.SSLError, ChannelClosed, ConnectionError)):
        asyncio.run(_register(node.port, stranger))
    # The cluster's certificate but a wrong token: refused by name.
    member = tls.client_context(_files(tmp_path, cluster_root, "member"))
    assert asyncio.run(_register(node.port, member)) == {"type": "error", "error": "invalid join token"}
    assert [n["id"] for n in node.get("/nodes")] == [node.node_id]
