"""The node's own configuration, kept in `DATA_DIR/node.json` (mode 0600: it holds the
cluster secret).  `swarmpy init` writes it; the daemon reads it on every start."""
from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import asdict, dataclass, field

from swarmpy import defaults

CONFIG_FILE = "node.json"


@dataclass
class NodeConfig:
    node_id: str
    cluster_id: str
    cluster_secret: str
    role: str
    data_dir: str
    socket: str
    listen_host: str = "0.0.0.0"
    port: int = defaults.CLUSTER_PORT
    advertise_addr: str = "127.0.0.1"
    hostname: str = ""
    generic_resources: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    task_history_limit: int = defaults.TASK_HISTORY_LIMIT
    heartbeat_period: float = defaults.HEARTBEAT_PERIOD_S
    api_addr: str = ""               # HOST:PORT for the API on TCP (mutual TLS only); "" = unix socket only
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    default_addr_pool: list[str] = field(default_factory=list)   # init only: overlay subnets come from here
    default_addr_pool_mask: int = defaults.DEFAULT_ADDR_POOL_MASK
    raft_peers: list[str] = field(default_factory=list)   # other managers' Raft addresses (managers)
    managers: list[str] = field(default_factory=list)     # managers' cluster addresses HOST:PORT (agent)

    @property
    def raft_addr(self) -> str:
        return f"{self.advertise_addr}:{self.port + 1}"

    @property
    def cluster_addr(self) -> str:
        return f"{self.advertise_addr}:{self.port}"

    def manager_addrs(self) -> list[tuple[str, int]]:
        """Where the agent looks for a dispatcher: this node first when it is a manager."""
        addrs = ([self.cluster_addr] if self.role == "manager" else []) + self.managers
        return [split_addr(a) for a in dict.fromkeys(addrs)]

    @property
    def api_tcp(self) -> tuple[str, int] | None:
        """(host, port) of the API on TCP, or None when it is served on the unix socket only."""
        if not self.api_addr:
            return None
        host, _, port = self.api_addr.rpartition(":")
        return host or "0.0.0.0", int(port)

    @property
    def certs_dir(self) -> str:
        return os.path.join(self.data_dir, "certificates")

    def node_tls(self):
        from swarmpy.tls import TLSFiles
        d = self.certs_dir
        return TLSFiles(os.path.join(d, "ca.pem"), os.path.join(d, "node.pem"), os.path.join(d, "node-key.pem"))

    def ensure_certificates(self) -> None:
        """The cluster's root CA and this node's certificate, made once at init (a manager
        keeps the CA key: it will sign joining nodes' certificates)."""
        from swarmpy import ca
        files = self.node_tls()
        if all(os.path.exists(p) for p in (files.ca, files.cert, files.key)):
            return
        os.makedirs(self.certs_dir, mode=0o700, exist_ok=True)
        root = ca.new_root(self.cluster_id)
        ca.write(root, files.ca, os.path.join(self.certs_dir, "ca-key.pem"))
        ca.write(ca.issue(root, self.node_id, self.role), files.cert, files.key)

    def store_certificates(self, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> None:
        """What a joining node receives: the cluster's root certificate and its own."""
        from swarmpy import ca
        os.makedirs(self.certs_dir, mode=0o700, exist_ok=True)
        files = self.node_tls()
        with open(files.ca, "wb") as f:
            f.write(ca_pem)
        ca.write(ca.KeyPair(cert_pem, key_pem), files.cert, files.key)

    @property
    def path(self) -> str:
        return os.path.join(self.data_dir, CONFIG_FILE)

    def save(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=2)

    @classmethod
    def load(cls, data_dir: str) -> "NodeConfig":
        with open(os.path.join(data_dir, CONFIG_FILE)) as f:
            return cls(**json.load(f))

    @staticmethod
    def exists(data_dir: str) -> bool:
        return os.path.exists(os.path.join(data_dir, CONFIG_FILE))


def split_addr(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host, int(port)


def raft_to_cluster_addr(raft_addr: str) -> str:
    """Raft listens on the cluster port + 1, so a Raft leader's address names its dispatcher."""
    host, port = split_addr(raft_addr)
    return f"{host}:{port - 1}"


def new_secret() -> str:
    return secrets.token_hex(32)


def erase_state(data_dir: str) -> None:
    """Forget the node: its config and its copy of the cluster state (leave, failed init)."""
    for name in (CONFIG_FILE, "raft", "swarmpy.pid", "certificates"):
        target = os.path.join(data_dir, name)
        if os.path.isdir(target):
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.exists(target):
            os.unlink(target)
