"""pysyncobj's peer wire, made cheaper per message: the one place we change how Raft
messages are pickled, sealed and framed.

pysyncobj seals every message with Fernet (AES-CBC, then HMAC-SHA256, then base64, all
driven from Python) after compressing it with zlib level 3. On the write path each write
is several such messages per member, and these two steps were the largest part of a
follower's time and a tenth of the leader's (docs/benchmarks.md, "Cheaper Raft messages").

* `AeadEncryptor` replaces Fernet with AES-256-GCM behind the same three methods the
  connection calls (`encrypt_at_time`, `extract_timestamp`, `decrypt`): one C call each
  way. The timestamp pysyncobj checks for order travels in clear and is authenticated as
  associated data, so it cannot be altered either. The key is derived from the Raft
  password exactly as pysyncobj derives Fernet's. Nonces are a counter from a random
  96-bit start, never reused by one process, and two processes' ranges overlap only
  with negligible probability.
* Messages are framed with zlib level 0 (stored blocks): the same format, so a peer
  reads them unchanged, without the cost of compressing data that is mostly msgpack
  already. Only the level changes.
* Messages, commands and snapshots are pickled with protocol 4, not pysyncobj's
  protocol 2 (kept there for Python 2): protocol 2 writes every `bytes` object as a
  latin-1 string rebuilt through `codecs.encode` when read, about 14 us per 2.6 KB
  transaction payload each way against 0.1 us, and a third larger on the wire. Every
  Raft entry is such payloads. Files written with protocol 2 still load: a pickle
  names its own protocol.

Members with the old Fernet sealing cannot talk to members with this one: every member
of a cluster runs the same swarmpy.
"""
from __future__ import annotations

import itertools
import os
import struct
import threading
import zlib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from pysyncobj import encryptor as pysyncobj_encryptor
from pysyncobj import pickle as pysyncobj_pickle
from pysyncobj import syncobj as pysyncobj_syncobj
from pysyncobj import tcp_connection

_TS = struct.Struct(">Q")
_NONCE_BYTES = 12
_HEADER = _TS.size + _NONCE_BYTES
PICKLE_PROTOCOL = 4
# What a manager speaks on the Raft port, messages and the ops in its entries: 1 was
# pysyncobj's own (Fernet, pickle protocol 2), 2 is this module's, 3 adds patch ops with
# `copy` (raft/tables.py; a manager at 2 would apply them without the copy and its state
# would drift from the others'). Joins and promotions of a node with another version are
# refused.
VERSION = 3
UNVERSIONED = 1     # swarmpy before this module announced no version


def announced_version(announcement: dict) -> int:
    """The wire version a join request, an agent's registration or a node's description names."""
    return announcement.get("raft_wire", UNVERSIONED)


def derive_key(password: str | bytes) -> bytes:
    """pysyncobj's own derivation (PBKDF2-HMAC-SHA256, its salt, 100,000 rounds)."""
    if isinstance(password, str):
        password = password.encode()
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=pysyncobj_encryptor.SALT, iterations=100000)
    return kdf.derive(password)


class AeadEncryptor:
    """Fernet's interface for pysyncobj's connections, sealed with AES-256-GCM.

    Token: timestamp (8 bytes, big-endian) | nonce (12) | ciphertext and tag."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._nonces = itertools.count(int.from_bytes(os.urandom(_NONCE_BYTES), "big"))
        self._lock = threading.Lock()     # connections are used from the tick thread only; cheap insurance

    def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
        with self._lock:
            counter = next(self._nonces)
        nonce = (counter % (1 << 96)).to_bytes(_NONCE_BYTES, "big")
        ts = _TS.pack(current_time)
        return ts + nonce + self._aead.encrypt(nonce, data, ts)

    def extract_timestamp(self, token: bytes) -> int:
        if len(token) < _HEADER:
            raise ValueError("Raft message too short")
        return _TS.unpack_from(token)[0]

    def decrypt(self, token: bytes) -> bytes:
        """Raises cryptography's InvalidTag for anything not sealed with this key;
        pysyncobj drops the connection on any error here."""
        ts, nonce = token[:_TS.size], token[_TS.size:_HEADER]
        return self._aead.decrypt(nonce, token[_HEADER:], ts)


def _send_uncompressed(self, message) -> None:
    # TcpConnection.send with zlib level 0; the rest as pysyncobj 0.3.17 has it.
    if self.sendRandKey:
        message = (self.sendRandKey, message)
    data = zlib.compress(tcp_connection.pickle.dumps(message), 0)
    if self.encryptor:
        data = self.encryptor.encrypt_at_time(data, int(tcp_connection.monotonicTime()))
    self._TcpConnection__writeBuffer += struct.pack("i", len(data)) + data
    self._TcpConnection__trySendBuffer()


def install() -> None:
    """Seal pysyncobj's peer traffic with AES-GCM and frame it without compression, for
    every SyncObj made in this process from now on. SyncObj hands its encryptor to the
    connections it makes in its constructor, so this must run before one is made."""
    setattr(pysyncobj_pickle, "__protocol", PICKLE_PROTOCOL)   # its module global, read on every dump
    pysyncobj_syncobj.getEncryptor = lambda password: AeadEncryptor(derive_key(password))
    tcp_connection.TcpConnection.send = _send_uncompressed
