"""A small local rendezvous: the ranks of one job meet over TCP on localhost.

Rank 0 listens on MASTER_ADDR:MASTER_PORT; the other ranks connect to it (retrying
while rank 0 starts) and say who they are. The only operation is an all-gather of
byte strings, star-shaped through rank 0, which is all that setting up NCCL needs
(rank 0's unique id reaches everyone), and what the socket communicator builds its
CPU collectives and the host barrier on. Every rank calls the same operations in
the same order (a collective), so messages need no tags.
"""
from __future__ import annotations

import socket
import struct
import time

_LENGTH = struct.Struct("!Q")      # every message: 8-byte length, then the payload


def _send(connection: socket.socket, payload: bytes) -> None:
    connection.sendall(_LENGTH.pack(len(payload)) + payload)


def _receive_exactly(connection: socket.socket, count: int) -> bytes:
    chunks, left = [], count
    while left:
        chunk = connection.recv(min(left, 1 << 22))
        if not chunk:
            raise ConnectionError("rendezvous: a peer closed the connection (did another rank fail?)")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(connection: socket.socket) -> bytes:
    (length,) = _LENGTH.unpack(_receive_exactly(connection, _LENGTH.size))
    return _receive_exactly(connection, length)


def _pack_list(parts: list[bytes]) -> bytes:
    return b"".join(_LENGTH.pack(len(part)) + part for part in parts)


def _unpack_list(blob: bytes) -> list[bytes]:
    parts, offset = [], 0
    while offset < len(blob):
        (length,) = _LENGTH.unpack_from(blob, offset)
        offset += _LENGTH.size
        parts.append(blob[offset:offset + length])
        offset += length
    return parts


class Rendezvous:
    """The ranks of one job, connected through rank 0. `timeout` bounds the wait for
    every rank to arrive; after that, operations wait as long as their peers take."""

    def __init__(self, rank: int, world_size: int, host: str = "127.0.0.1", port: int = 29500,
                 timeout: float = 300.0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rendezvous: rank {rank} outside world size {world_size}")
        self.rank = rank
        self.world_size = world_size
        self._peers: dict[int, socket.socket] = {}     # rank 0: every other rank's connection
        self._server: socket.socket | None = None
        self._connection: socket.socket | None = None  # other ranks: the line to rank 0
        if world_size == 1:
            return
        if rank == 0:
            self._accept_all(host, port, timeout)
        else:
            self._connect(host, port, timeout)

    def _accept_all(self, host: str, port: int, timeout: float) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind((host, port))
        except OSError as error:
            server.close()
            raise RuntimeError(f"rendezvous: rank 0 cannot listen on {host}:{port} ({error}); set "
                               "MASTER_PORT to a free port") from None
        server.listen(self.world_size)
        server.settimeout(timeout)
        self._server = server
        while len(self._peers) < self.world_size - 1:
            try:
                connection, _ = server.accept()
            except socket.timeout:
                missing = sorted(set(range(1, self.world_size)) - set(self._peers))
                raise TimeoutError(f"rendezvous: ranks {missing} did not arrive at {host}:{port} "
                                   f"within {timeout:.0f} s") from None
            connection.settimeout(None)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            (peer_rank,) = _LENGTH.unpack(_receive_exactly(connection, _LENGTH.size))
            if not 0 < peer_rank < self.world_size or peer_rank in self._peers:
                connection.close()
                raise RuntimeError(f"rendezvous: unexpected rank {peer_rank} at {host}:{port} "
                                   "(two jobs on one port?)")
            self._peers[peer_rank] = connection

    def _connect(self, host: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection = socket.create_connection((host, port), timeout=5.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rendezvous: rank {self.rank} could not reach rank 0 at "
                                       f"{host}:{port} within {timeout:.0f} s") from None
                time.sleep(0.05)
        connection.settimeout(None)
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.sendall(_LENGTH.pack(self.rank))
        self._connection = connection

    def all_gather(self, payload: bytes) -> list[bytes]:
        """Every rank's payload, in rank order, on every rank."""
        if self.world_size == 1:
            return [bytes(payload)]
        if self.rank == 0:
            parts = [bytes(payload)] + [_receive(self._peers[r]) for r in range(1, self.world_size)]
            blob = _pack_list(parts)
            for peer in range(1, self.world_size):
                _send(self._peers[peer], blob)
            return parts
        assert self._connection is not None
        _send(self._connection, payload)
        return _unpack_list(_receive(self._connection))

    def broadcast(self, payload: bytes | None, root: int = 0) -> bytes:
        """root's payload on every rank (the others pass None)."""
        return self.all_gather(payload if self.rank == root and payload is not None else b"")[root]

    def barrier(self) -> None:
        self.all_gather(b"")

    def close(self) -> None:
        for connection in list(self._peers.values()) + [self._connection, self._server]:
            if connection is not None:
                connection.close()
        self._peers.clear()
        self._connection = self._server = None
