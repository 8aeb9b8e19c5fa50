"""Communicators: how replicas agree on a gradient.

One small interface, whatever carries the bytes:

    comm.all_reduce(buffers, op="sum")   # in place, over every replica's flat buffer
    comm.broadcast(buffers, root=0)      # copy the root replica's buffer to all
    comm.barrier(); comm.rank; comm.world_size   (processes, not replicas)

`buffers` lists the flat buffers of the replicas that live in *this* process: N of
them for `local` and `nccl`, one for the multi-process communicators.

- LocalCommunicator: replicas in one process (["cpu"]*N, ["cuda:0"]*N, or GPUs
  without NCCL). Sums in replica order, so results are deterministic.
- NcclCommunicator: one process, several distinct GPUs; NCCL all-reduce of each
  flat buffer inside groupStart/groupEnd.
- TcpCommunicator: one process per rank on CPUs (or GPUs without NCCL), over TCP
  to rank 0, which sums in rank order and sends the result back. Sockets time out,
  so a dead peer raises instead of hanging.
- DistCommunicator: one process per GPU through `cupyx.distributed` (NCCL backend,
  TCP store). `make_process_communicator` picks it, or TCP when there is no NCCL.
"""
from __future__ import annotations

import os
import socket
import struct
import time

import numpy as np

from .. import backend
from ..errors import GpunetValueError

OPS = ("sum",)


def _check_op(op):
    if op not in OPS:
        raise GpunetValueError(f"all_reduce: op expected one of {OPS}, got {op!r}")


class Communicator:
    name = "base"
    rank = 0
    world_size = 1

    def all_reduce(self, buffers, op="sum"):
        raise NotImplementedError

    def broadcast(self, buffers, root=0):
        raise NotImplementedError

    def barrier(self):
        pass

    def close(self):
        pass

    def __repr__(self):
        return f"{type(self).__name__}(rank={self.rank}, world_size={self.world_size})"


class LocalCommunicator(Communicator):
    """Replicas in one process: a deterministic sum in replica order, copied back to each."""
    name = "local"

    def all_reduce(self, buffers, op="sum"):
        _check_op(op)
        if len(buffers) < 2:
            return
        home = backend.device_of(buffers[0])
        total = buffers[0].copy()
        for b in buffers[1:]:
            total += home.asarray(b)
        for b in buffers:
            b[...] = backend.device_of(b).asarray(total)

    def broadcast(self, buffers, root=0):
        src = buffers[root]
        for i, b in enumerate(buffers):
            if i != root:
                b[...] = backend.device_of(b).asarray(src)


class NcclCommunicator(Communicator):
    """One process driving several distinct GPUs through NCCL (cupy.cuda.nccl)."""
    name = "nccl"

    def __init__(self, devices):
        self.devices = [backend.device(d) for d in devices]
        if len({d.name for d in self.devices}) != len(self.devices) or not all(d.is_gpu for d in self.devices):
            raise GpunetValueError(f"NcclCommunicator: expected distinct GPUs, got {[d.name for d in self.devices]}")
        self.nccl = self.devices[0].xp.cuda.nccl
        self.comms = self.nccl.NcclCommunicator.initAll([d.index for d in self.devices])

    def _dtype(self, buf):
        codes = {np.dtype(np.float32): self.nccl.NCCL_FLOAT32, np.dtype(np.float64): self.nccl.NCCL_FLOAT64}
        return codes[np.dtype(buf.dtype)]

    def all_reduce(self, buffers, op="sum"):
        _check_op(op)
        self.nccl.groupStart()
        try:
            for comm, dev, buf in zip(self.comms, self.devices, buffers):
                with dev:
                    stream = dev.xp.cuda.get_current_stream().ptr
                    comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, self._dtype(buf),
                                   self.nccl.NCCL_SUM, stream)
        finally:
            self.nccl.groupEnd()

    def broadcast(self, buffers, root=0):
        self.nccl.groupStart()
        try:
            for comm, dev, buf in zip(self.comms, self.devices, buffers):
                with dev:
                    stream = dev.xp.cuda.get_current_stream().ptr
                    comm.broadcast(buf.data.ptr, buf.data.ptr, buf.size, self._dtype(buf), root, stream)
        finally:
            self.nccl.groupEnd()


# ---------------------------------------------------------------- multi-process over TCP

def _send(sock, payload: bytes):
    sock.sendall(struct.pack("!Q", len(payload)) + payload)


def _recv_exact(sock, n: int, peer: str) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError(f"{peer} disconnected (did that rank die?)")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(sock, peer: str) -> bytes:
    (n,) = struct.unpack("!Q", _recv_exact(sock, 8, peer))
    return _recv_exact(sock, n, peer)


class TcpCommunicator(Communicator):
    """Ranks in separate processes, joined over TCP through rank 0 (a star).

    Rank 0 listens on (host, port); the others connect and send their rank. An
    all-reduce sends each buffer to rank 0, which sums in rank order (deterministic)
    and sends the total back. Every socket operation has `timeout` seconds.
    """
    name = "tcp"

    def __init__(self, rank, world_size, host="127.0.0.1", port=29500, timeout=300.0):
        if not 0 <= rank < world_size:
            raise GpunetValueError(f"TcpCommunicator: rank expected in [0, {world_size}), got {rank}")
        self.rank, self.world_size, self.timeout = int(rank), int(world_size), float(timeout)
        self.peers = {}
        if world_size == 1:
            return
        if self.rank == 0:
            self._serve(host, port)
        else:
            self._connect(host, port)

    def _serve(self, host, port):
        server = socket.create_server((host, port), reuse_port=False)
        server.settimeout(self.timeout)
        try:
            while len(self.peers) < self.world_size - 1:
                conn, _ = server.accept()
                conn.settimeout(self.timeout)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small messages: no Nagle delay
                (peer_rank,) = struct.unpack("!I", _recv_exact(conn, 4, "a connecting rank"))
                self.peers[peer_rank] = conn
        except socket.timeout:
            missing = sorted(set(range(1, self.world_size)) - set(self.peers))
            raise ConnectionError(f"rank 0: ranks {missing} did not connect within {self.timeout:g}s") from None
        finally:
            server.close()

    def _connect(self, host, port):
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=self.timeout)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"rank {self.rank}: could not reach rank 0 at {host}:{port} "
                                          f"within {self.timeout:g}s") from None
                time.sleep(0.05)
        sock.settimeout(self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(struct.pack("!I", self.rank))
        self.peers[0] = sock

    def all_reduce(self, buffers, op="sum"):
        _check_op(op)
        for buf in buffers:
            self._all_reduce_one(buf)

    def _all_reduce_one(self, buf):
        if self.world_size == 1:
            return
        host = backend.to_numpy(buf)  # sync: bytes must reach the host to cross processes
        if self.rank == 0:
            total = host.copy()
            for r in range(1, self.world_size):
                total += np.frombuffer(_recv(self.peers[r], f"rank {r}"), dtype=host.dtype).reshape(host.shape)
            for r in range(1, self.world_size):
                _send(self.peers[r], total.tobytes())
        else:
            _send(self.peers[0], host.tobytes())
            total = np.frombuffer(_recv(self.peers[0], "rank 0"), dtype=host.dtype).reshape(host.shape)
        buf[...] = backend.device_of(buf).asarray(total)

    def broadcast(self, buffers, root=0):
        if root != 0:
            raise GpunetValueError(f"TcpCommunicator.broadcast: root expected 0, got {root}")
        for buf in buffers:
            if self.world_size == 1:
                continue
            if self.rank == 0:
                payload = backend.to_numpy(buf).tobytes()
                for r in range(1, self.world_size):
                    _send(self.peers[r], payload)
            else:
                data = np.frombuffer(_recv(self.peers[0], "rank 0"), dtype=buf.dtype).reshape(buf.shape)
                buf[...] = backend.device_of(buf).asarray(data)

    def barrier(self):
        one = np.zeros(1)
        self._all_reduce_one(one)

    def close(self):
        for sock in self.peers.values():
            sock.close()
        self.peers = {}


class DistCommunicator(Communicator):
    """One process per GPU through cupyx.distributed (NCCL, TCP store)."""
    name = "dist"

    def __init__(self, rank, world_size, host="127.0.0.1", port=29500):
        self.rank, self.world_size = int(rank), int(world_size)
        dist = backend.cupyx_distributed()
        self.comm = dist.init_process_group(self.world_size, self.rank, backend="nccl", host=host, port=port)

    def all_reduce(self, buffers, op="sum"):
        _check_op(op)
        for buf in buffers:
            self.comm.all_reduce(buf, buf, op="sum")

    def broadcast(self, buffers, root=0):
        for buf in buffers:
            self.comm.broadcast(buf, root)

    def barrier(self):
        self.comm.barrier()


def env_rank() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the launcher's environment (defaults 0, 1, 0)."""
    get = lambda k, d: int(os.environ.get(k, d))  # noqa: E731
    return get("RANK", 0), get("WORLD_SIZE", 1), get("LOCAL_RANK", 0)


def make_process_communicator(device, timeout=300.0):
    """The communicator for this process under `gpunet launch`; returns (comm, why)."""
    rank, world, _ = env_rank()
    host = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ.get("MASTER_PORT", 29500))
    dev = backend.device(device)
    if dev.is_gpu and backend.nccl_available():
        return DistCommunicator(rank, world, host, port), "dist: cupyx.distributed with NCCL"
    why = "tcp: no NCCL on this device" if dev.is_gpu else "tcp: CPU processes (NCCL needs GPUs)"
    if world == 1:
        why += "; world size 1, so no sockets are opened"
    return TcpCommunicator(rank, world, host, port, timeout=timeout), why
