"""Multi-process data parallel with real MPI ranks (`gpunet launch` -> mpiexec) on the CPU.

Every job here is a real `mpiexec` with 2-3 ranks of `gpunet train` on the digits set
(shipped with the package). Faults are injected by tests/mpi_fault.py, the real CLI
with one callback added. Each fault must end the job with one line naming the rank
and the cause, leave no process behind, and keep the last good checkpoint. Short
collective timeouts (5 s for the fault matrix, 10 s elsewhere) keep the module fast;
subprocess timeouts only guard against a hang.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gpunet as gn
from gpunet.parallel import launch as launch_mod

ROOT = Path(__file__).resolve().parents[1]
FAULT = Path(__file__).resolve().parent / "mpi_fault.py"
TIMEOUT = 10       # seconds per collective in these jobs (the default is 120)
FAULT_TIMEOUT = 5  # for the fault matrix, where the job's end time is what is checked

pytestmark = pytest.mark.skipif(not gn.parallel.mpi.mpi_available(),
                                reason='mpi4py is not installed (pip install "gpunet[mpi]")')


def env(**extra):
    e = dict(os.environ, GPUNET_FORCE_CPU="1", COLUMNS="250",
             PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "GPUNET_JOB_DIR", "GPUNET_TIMEOUT"):
        e.pop(k, None)
    e.update(extra)
    return e


def start(nproc, *command, cwd, timeout=TIMEOUT, extra_env=None):
    argv = [sys.executable, "-m", "gpunet", "launch", "--nproc", str(nproc), "--timeout", str(timeout), "--",
            *command]
    return subprocess.Popen(argv, cwd=cwd, env=env(**(extra_env or {})), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc, limit=90):
    out, err = proc.communicate(timeout=limit)  # a hang fails here
    return proc.returncode, out, err


def launch(nproc, *command, cwd, timeout=TIMEOUT, limit=90, extra_env=None):
    return finish(start(nproc, *command, cwd=cwd, timeout=timeout, extra_env=extra_env), limit)


def train_args(name, *more):
    return ["gpunet", "train", "--quiet", "--name", name, *more]


def leftovers(marker) -> list:
    """Processes whose command line mentions `marker` (the test's folder): none may remain."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (d / "stat").read_text().split(") ", 1)[1][:1]
        except (OSError, IndexError):
            continue
        if str(marker) in cmd and state != "Z":
            found.append((int(d.name), cmd))
    return found


def summary(err) -> str:
    """The launcher's closing line (the one line that names the rank and the cause)."""
    return [line for line in err.strip().splitlines() if line.strip()][-1]


def weights(path):
    _, arrays = gn.checkpoint.read_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith("model/")}


# ---------------------------------------------------------------- training and exactness

def test_two_ranks_train_and_only_rank0_writes(tmp_path):
    rc, out, err = launch(2, *train_args("two", "--epochs", "2", "--out", str(tmp_path / "runs")), cwd=tmp_path)
    assert rc == 0, out + err
    assert "rank 0 of 2: mpi: MPI Allreduce" in out and "rank 1 of 2" not in out  # rank 1's stdout is silenced
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["two"]
    run = tmp_path / "runs" / "two"
    assert gn.checkpoint.read_checkpoint(run / "checkpoint-last.npz")[0]["meta"]["epoch"] == 2
    test = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert test["kind"] == "test" and test["accuracy"] > 0.85
    assert not leftovers(tmp_path)


def test_processes_equal_one_process_exactly_and_two_jobs_do_not_mix(tmp_path):
    """3 ranks and 2 ranks at once on this machine, float64, 1293 training samples (not a
    multiple of 2 or 3), global batch 48 and small buckets: each equals the one-process run
    with the same global batch to 1e-12, so nothing was dropped and nothing crossed jobs."""
    common = ["--epochs", "2", "--dtype", "float64", "--batch-size", "48", "--checkpoint-every", "7",
              "--out", str(tmp_path / "runs")]
    small = {"GPUNET_BUCKET_BYTES": "4096"}  # many buckets: the overlap path, not one big all-reduce
    jobs = [start(3, *train_args("three", *common), cwd=tmp_path, extra_env=small),
            start(2, *train_args("two", *common), cwd=tmp_path, extra_env=small)]
    one = subprocess.run([sys.executable, "-m", *train_args("one", *common)], cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stdout + one.stderr
    results = [finish(j) for j in jobs]
    for rc, out, err in results:
        assert rc == 0, out + err
    ref = weights(tmp_path / "runs" / "one" / "checkpoint-last.npz")
    assert len(ref) == 6
    for name in ("three", "two"):
        got = weights(tmp_path / "runs" / name / "checkpoint-last.npz")
        assert got.keys() == ref.keys()
        gap = max(float(np.max(np.abs(got[k] - ref[k]))) for k in ref)
        assert gap < 1e-12, (name, gap)
    assert not leftovers(tmp_path)


# ---------------------------------------------------------------- faults

FAULTS = [  # kind, nproc, rank, step, what the closing line must say
    ("raise", 2, 1, 0, "gpunet: rank 1: failed at step 0: RuntimeError: injected fault at step 0"),
    ("raise", 3, 2, 50, "gpunet: rank 2: failed at step 50: RuntimeError: injected fault at step 50"),
    ("raise", 3, 0, 9, "gpunet: rank 0: failed at step 9: RuntimeError: injected fault at step 9"),
    ("kill", 3, 1, 9, "rank 1 (pid"),
    ("exit", 2, 1, 9, "rank 1 (pid"),
    ("stop", 3, 1, 9, "rank 1 did not reach the gradient all-reduce of step 10"),
    ("stop", 2, 0, 9, "rank 0 did not reach the gradient all-reduce of step 10"),
]


@pytest.mark.parametrize("kind,nproc,rank,step,line", FAULTS,
                         ids=[f"{k}-rank{r}-step{s}-of{n}" for k, n, r, s, _ in FAULTS])
def test_a_failing_rank_ends_the_job_with_one_line(tmp_path, kind, nproc, rank, step, line):
    out_dir = tmp_path / "runs"
    cmd = [sys.executable, str(FAULT), kind, str(rank), str(step), "train", "--quiet", "--name", "f",
           "--epochs", "4", "--batch-size", "60", "--checkpoint-every", "4", "--out", str(out_dir)]
    t0 = time.monotonic()
    proc = start(nproc, *cmd, cwd=tmp_path, timeout=FAULT_TIMEOUT)
    rc, out, err = finish(proc, limit=FAULT_TIMEOUT + 60)
    elapsed = time.monotonic() - t0
    assert rc != 0, out + err
    closing = summary(err)
    assert line in closing, err
    if kind in ("kill", "exit"):
        assert ("killed by signal 9 (SIGKILL)" if kind == "kill" else "exited with code 3") in closing
    mentions = [x for x in err.splitlines() if "gpunet: rank" in x or "gpunet launch: rank" in x]
    assert len(mentions) == 1, err  # one line, not one per rank
    assert not leftovers(tmp_path), leftovers(tmp_path)
    ckpt = out_dir / "f" / "checkpoint-last.npz"
    if step >= 4:  # the last good checkpoint (every 4 steps) is intact
        meta = gn.checkpoint.read_checkpoint(ckpt)[0]["meta"]
        assert meta["global_step"] == 4 * ((step + 1) // 4)
        assert all(np.isfinite(v).all() for v in weights(ckpt).values())
    print(f"{kind} rank {rank} step {step} of {nproc}: ended in {elapsed:.1f} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_to_the_launcher_stops_every_rank_after_a_checkpoint(tmp_path, sig):
    run = tmp_path / "runs" / "s"
    proc = start(2, *train_args("s", "--epochs", "200", "--batch-size", "16", "--out", str(tmp_path / "runs")),
                 cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (run / "checkpoint-last.npz").exists() and time.monotonic() < deadline:  # training is under way
        time.sleep(0.1)
    proc.send_signal(sig)
    rc, out, err = finish(proc, limit=60)
    assert rc == 128 + sig, out + err
    stopped = [x for x in err.splitlines() if x.startswith("gpunet: stopped by")]
    assert len(stopped) == 1 and "SIGTERM" in stopped[0], err  # the launcher passes any of them on as SIGTERM
    step = int(stopped[0].split(" at step ")[1].split(";")[0])
    assert gn.checkpoint.read_checkpoint(run / "checkpoint-last.npz")[0]["meta"]["global_step"] == step
    assert summary(err).startswith(f"gpunet launch: stopped by {signal.Signals(sig).name}")
    assert not leftovers(tmp_path)
    if sig == signal.SIGTERM:  # the stop checkpoint resumes: finish the epoch it stopped in
        epoch = gn.checkpoint.read_checkpoint(run / "checkpoint-last.npz")[0]["meta"]["epoch"]
        rc, out, err = launch(2, *train_args("s", "--resume", "--epochs", str(epoch + 1), "--out",
                                             str(tmp_path / "runs")), cwd=tmp_path)
        assert rc == 0 and f"resumed from {run / 'checkpoint-last.npz'}" in out.replace("\n", ""), out + err
        assert gn.checkpoint.read_checkpoint(run / "checkpoint-last.npz")[0]["meta"]["epoch"] == epoch + 1


def test_rendezvous_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        rc, out, err = launch(2, *train_args("p", "--out", str(tmp_path / "runs")), cwd=tmp_path,
                              extra_env={"MPIEXEC_PORT_RANGE": f"{port}:{port}"})
    assert rc != 0
    assert summary(err).startswith("gpunet launch: mpiexec could not start the 2 ranks") and "port" in summary(err)
    assert not (tmp_path / "runs").exists() and not leftovers(tmp_path)


def test_more_ranks_than_samples_is_refused_by_rank_0(tmp_path):
    rc, out, err = launch(3, *train_args("n", "--val-fraction", "0.999", "--batch-size", "3",
                                         "--out", str(tmp_path / "runs")), cwd=tmp_path)
    assert rc != 0
    closing = summary(err)
    assert closing.startswith("gpunet: rank 0: DistributedError: --nproc: 3 ranks") and "at least one sample" in closing
    assert not leftovers(tmp_path)


def _mismatch_wrapper(tmp_path, rank1_args, rank1_env=""):
    script = tmp_path / "rank.sh"
    script.write_text(f"""#!/bin/sh
if [ "${{PMI_RANK:-$OMPI_COMM_WORLD_RANK}}" = 1 ]; then
  {rank1_env} exec {sys.executable} -m gpunet train --quiet --name m --out {tmp_path}/runs {rank1_args}
fi
exec {sys.executable} -m gpunet train --quiet --name m --out {tmp_path}/runs
""")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize("rank1_args,what", [("--epochs 3", "config field 'epochs'"),
                                             ("--lr 0.1", "optimizer"),
                                             ("--hidden 32", "model (parameter names, shapes, dtype)")],
                         ids=["config", "optimizer", "model"])
def test_mismatched_settings_between_ranks_are_named(tmp_path, rank1_args, what):
    rc, out, err = launch(2, _mismatch_wrapper(tmp_path, rank1_args), cwd=tmp_path)
    assert rc == 1
    assert summary(err).startswith(f"gpunet: rank 0: DistributedError: rank 1 differs from rank 0 in {what}"), err
    assert not leftovers(tmp_path)


def test_mismatched_code_between_ranks_is_named(tmp_path):
    other = tmp_path / "other"
    shutil.copytree(ROOT / "gpunet", other / "gpunet", ignore=shutil.ignore_patterns("__pycache__"))
    (other / "gpunet" / "metrics.py").write_text((other / "gpunet" / "metrics.py").read_text() + "\n# changed\n")
    rc, out, err = launch(2, _mismatch_wrapper(tmp_path, "", rank1_env=f"PYTHONPATH={other}"), cwd=tmp_path)
    assert rc != 0
    assert "rank 1 differs from rank 0 in gpunet code" in summary(err), err
    assert not leftovers(tmp_path)


def test_bad_launch_arguments(tmp_path):
    for args, want in ((["--nproc", "0", "--", "gpunet", "info"], "--nproc expected an int >= 1"),
                       (["--nproc", "1"], "expected a command"),
                       (["--mpiexec", "/nonexistent/mpiexec", "--", "gpunet", "info"], "/nonexistent/mpiexec"),
                       (["--timeout", "-1", "--", "gpunet", "info"], "--timeout expected")):
        r = subprocess.run([sys.executable, "-m", "gpunet", "launch", *args], cwd=tmp_path, env=env(),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and want in r.stderr, (args, r.stderr)


def test_train_refuses_devices_in_a_multi_process_job(tmp_path):
    rc, out, err = launch(2, *train_args("d", "--devices", "cpu,cpu", "--out", str(tmp_path / "runs")),
                          cwd=tmp_path)
    assert rc == 2 and "--devices: one device per process in a 2-rank job" in summary(err), err


# ---------------------------------------------------------------- pieces, without MPI

def test_mpiexec_is_found_next_to_this_python():
    path = Path(launch_mod.find_mpiexec())
    assert path.parent == Path(sys.executable).parent or shutil.which(path.name)
    assert launch_mod.flavour(str(path)) in ("mpich", "openmpi")


@pytest.mark.parametrize("variables,want", [
    ({"OMPI_COMM_WORLD_RANK": "3", "OMPI_COMM_WORLD_SIZE": "8", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, (3, 8, 1)),
    ({"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0"}, (2, 4, 0)),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1"}, (5, 16, 1)),
    ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, (1, 2, 1)),
    ({}, (0, 1, 0)),
])
def test_rank_variables_of_common_launchers(monkeypatch, variables, want):
    for group in gn.parallel.mpi.RANK_VARS:
        for k in group:
            monkeypatch.delenv(k, raising=False)
    for k, v in variables.items():
        monkeypatch.setenv(k, v)
    assert gn.parallel.mpi.env_rank() == want


def test_bad_timeout_environment_is_refused(monkeypatch):
    monkeypatch.setenv("GPUNET_TIMEOUT", "soon")
    with pytest.raises(gn.GpunetValueError, match="GPUNET_TIMEOUT: expected seconds"):
        gn.parallel.mpi.default_timeout()
    monkeypatch.setenv("GPUNET_TIMEOUT", "7.5")
    assert gn.parallel.mpi.default_timeout() == 7.5


def test_timeout_flag_is_refused_in_a_single_process(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpunet", "train", "--quiet", "--timeout", "5", "--out",
                        str(tmp_path / "runs")], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--timeout: applies to multi-process runs" in r.stdout, r.stdout
    assert not (tmp_path / "runs").exists()


def test_a_killed_launcher_leaves_no_rank_behind(tmp_path):
    """SIGKILL to `gpunet launch` itself (no chance to clean up): mpiexec gets SIGTERM from
    the kernel (parent-death signal), passes it on, and the ranks checkpoint and exit."""
    run = tmp_path / "runs" / "k"
    proc = start(2, *train_args("k", "--epochs", "200", "--batch-size", "16", "--out", str(tmp_path / "runs")),
                 cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (run / "checkpoint-last.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not leftovers(tmp_path)
    assert gn.checkpoint.read_checkpoint(run / "checkpoint-last.npz")[0]["meta"]["global_step"] > 0
