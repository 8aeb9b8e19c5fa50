"""`gpunet launch`: real multi-process runs on the CPU, and faults that must not hang."""
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import gpunet as gn


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args, cwd, timeout=120):
    env = dict(os.environ, GPUNET_FORCE_CPU="1")
    return subprocess.run([sys.executable, "-m", "gpunet", "launch", "--port", str(free_port()), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_two_ranks_train_and_only_rank0_writes(tmp_path):
    r = launch("--nproc", "2", "--timeout", "120", "--", "gpunet", "train", "--quiet", "--epochs", "3",
               "--name", "two", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rank 0 of 2: tcp" in r.stdout and "rank 1" not in r.stdout  # rank 1's stdout is silenced
    run = tmp_path / "runs" / "two"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["two"]
    meta = gn.checkpoint.read_checkpoint(run / "checkpoint-last.npz")[0]["meta"]
    assert meta["epoch"] == 3
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert '"kind": "test"' in lines[-1] and float(lines[-1].split('"accuracy": ')[1].rstrip("}")) > 0.9


def test_a_dead_rank_stops_the_others_and_is_named(tmp_path):
    script = tmp_path / "rank.py"
    script.write_text(textwrap.dedent("""
        import os, sys, time
        if os.environ["RANK"] == "1":
            sys.exit(3)
        time.sleep(60)
    """))
    t0 = time.monotonic()
    r = launch("--nproc", "3", "--grace", "2", "--", sys.executable, str(script), cwd=tmp_path)
    assert time.monotonic() - t0 < 30
    assert r.returncode == 3 and "rank 1 exited with code 3" in r.stderr


def test_a_killed_training_rank_does_not_hang_the_run(tmp_path):
    """Rank 1 is SIGKILLed mid-training; rank 0 is blocked in the all-reduce and must be stopped."""
    script = tmp_path / "rank.sh"
    script.write_text(f"""#!/bin/sh
if [ "$RANK" = 1 ]; then
  exec timeout -s KILL 2 {sys.executable} -m gpunet train --quiet --dataset mnist --epochs 50 --name k
fi
exec {sys.executable} -m gpunet train --quiet --dataset mnist --epochs 50 --name k
""")
    script.chmod(0o755)
    t0 = time.monotonic()
    r = launch("--nproc", "2", "--grace", "2", "--timeout", "100", "--", str(script), cwd=tmp_path)
    assert time.monotonic() - t0 < 60
    assert r.returncode != 0 and "rank 1 exited with code" in r.stderr, r.stderr


def test_timeout_stops_every_rank(tmp_path):
    t0 = time.monotonic()
    r = launch("--nproc", "2", "--timeout", "1", "--grace", "1", "--", sys.executable, "-c",
               "import time; time.sleep(60)", cwd=tmp_path)
    assert r.returncode == 124 and "timed out" in r.stderr
    assert time.monotonic() - t0 < 20


def test_tcp_peer_death_raises_instead_of_hanging(tmp_path):
    """Rank 1 connects then exits: rank 0's all-reduce raises ConnectionError naming it."""
    port = free_port()
    code = textwrap.dedent(f"""
        from gpunet.parallel import TcpCommunicator
        TcpCommunicator(1, 2, port={port}, timeout=10)
    """)
    peer = None
    try:
        import threading
        result = {}

        def rank0():
            from gpunet.parallel import TcpCommunicator
            comm = TcpCommunicator(0, 2, port=port, timeout=10)
            try:
                comm.all_reduce([np.ones(4)])
            except ConnectionError as e:
                result["error"] = str(e)
        t = threading.Thread(target=rank0)
        t.start()
        peer = subprocess.run([sys.executable, "-c", code], timeout=30)
        t.join(timeout=30)
        assert not t.is_alive()
        assert "rank 1 disconnected" in result.get("error", ""), result
    finally:
        if peer is not None:
            assert peer.returncode == 0


def test_tcp_all_reduce_across_processes(tmp_path):
    port = free_port()
    code = textwrap.dedent(f"""
        import sys, numpy as np
        from gpunet.parallel import TcpCommunicator
        rank = int(sys.argv[1])
        comm = TcpCommunicator(rank, 3, port={port}, timeout=20)
        buf = np.arange(5, dtype=np.float64) * (rank + 1)
        comm.all_reduce([buf])
        print(",".join(str(v) for v in buf))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(r)], stdout=subprocess.PIPE, text=True)
             for r in range(3)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs == [",".join(str(v) for v in np.arange(5) * 6.0)] * 3


def test_bad_launch_arguments(tmp_path):
    r = launch("--nproc", "0", "--", "gpunet", "info", cwd=tmp_path)
    assert r.returncode == 2 and "nproc" in r.stderr
    r = launch("--nproc", "1", cwd=tmp_path)
    assert r.returncode == 2 and "expected a command" in r.stderr
