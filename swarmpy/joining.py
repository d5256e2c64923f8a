"""The joining node's side of `swarmpy join`: trust the manager, get a certificate.

1. Ask the manager for the root CA over TLS without verification, and keep it only if
   its digest is the one the join token names (a manager of another cluster is refused).
2. Reconnect verifying the manager against that CA, and send the token with a
   certificate request; the key never leaves this node.  A follower answers with the
   leader's address, and the request goes there.
"""
from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass

from raft import wire
from swarmpy import ca
from swarmpy.config import split_addr
from swarmpy.rpc import Channel, ChannelClosed

REPLY_TIMEOUT_S = 30.0
MAX_REDIRECTS = 3


class JoinError(Exception):
    pass


@dataclass
class Joined:
    reply: dict           # node_id, role, cert, cluster_id, managers, (managers: raft_peers, cluster_secret)
    ca_pem: bytes
    key_pem: bytes


def _unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE     # only to fetch the CA, which is then pinned by digest
    return ctx


def _verified(ca_pem: bytes) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode())
    ctx.check_hostname = False          # certificates name node ids; the CA's signature is the trust
    return ctx


async def _ask(addr: tuple[str, int], request: dict, context: ssl.SSLContext) -> dict:
    try:
        channel = await Channel.connect(*addr, timeout=10, ssl=context)
    except ssl.SSLError as exc:
        raise JoinError(f"TLS with the manager at {addr[0]}:{addr[1]} failed: {exc}") from None
    except (OSError, asyncio.TimeoutError) as exc:
        raise JoinError(f"could not reach a manager at {addr[0]}:{addr[1]}: {exc or 'timed out'}") from None
    try:
        await channel.send(request)
        return await asyncio.wait_for(channel.recv(), REPLY_TIMEOUT_S)
    except (ChannelClosed, asyncio.TimeoutError) as exc:
        raise JoinError(f"the manager at {addr[0]}:{addr[1]} closed the connection: {exc}") from None
    finally:
        await channel.close()


async def fetch_trusted_ca(addr: tuple[str, int], token: str) -> bytes:
    try:
        wanted = ca.token_ca_digest(token)
    except ValueError as exc:
        raise JoinError(str(exc)) from None
    reply = await _ask(addr, {"type": "ca"}, _unverified())
    ca_pem = str(reply.get("cert", "")).encode()
    if reply.get("type") != "ca" or not ca_pem:
        raise JoinError(f"the node at {addr[0]}:{addr[1]} is not a swarmpy manager ({reply.get('error')})")
    if ca.digest(ca_pem) != wanted:
        raise JoinError(f"the manager at {addr[0]}:{addr[1]} presents a root CA whose digest does not match "
                        "the join token: it belongs to another cluster, or the token is wrong")
    return ca_pem


async def join(remote: str, token: str, advertise_addr: str, port: int, hostname: str,
               labels: dict[str, str]) -> Joined:
    addr = split_addr(remote)
    ca_pem = await fetch_trusted_ca(addr, token)
    csr, key = ca.new_key_and_csr()
    request = {"type": "join", "token": token, "csr": csr.decode(), "addr": advertise_addr, "port": port,
               "hostname": hostname, "labels": labels, "raft_wire": wire.VERSION}
    for _ in range(MAX_REDIRECTS):
        reply = await _ask(addr, request, _verified(ca_pem))
        if reply.get("type") == "joined":
            return Joined(reply, ca_pem, key)
        if reply.get("leader"):
            addr = split_addr(reply["leader"])
            continue
        raise JoinError(str(reply.get("error", reply)))
    raise JoinError("the managers keep naming other leaders; try again once the cluster has a leader")


def local_addr_towards(remote: str) -> str:
    """The address this host uses to reach `remote`: the default --advertise-addr."""
    host, port = split_addr(remote)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))      # UDP connect sends nothing; it only picks a route
        return probe.getsockname()[0]
