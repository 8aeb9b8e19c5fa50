"""Crash safety: SIGKILL `gpunet train` at random moments, then `--resume` must finish the run
with final weights bit-identical to an uninterrupted run.

One reference run (digits, a small MLP with dropout, a checkpoint every few steps) gives
the expected final state and the timing that the kills are spread over. Ten trials from a
seeded RNG then each start the same command and kill it:
  - "timed" trials at delays stratified over the reference run's duration (a few land
    before the first checkpoint exists, most during training and its checkpoint writes);
  - "after-write" trials right after checkpoint-last.npz changes for the k-th time, when
    the next write is close (the run writes ~10 checkpoints per epoch).
After each kill the run folder holds a complete, loadable checkpoint-last.npz (never a
torn one) or none at all; `--resume` finishes the run; the final checkpoint's weights,
optimizer buffers and counters equal the reference byte for byte.
"""
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from gpunet.checkpoint import read_checkpoint

FLAGS = ["--quiet", "--device", "cpu", "--dataset", "digits", "--hidden", "64", "--epochs", "2",
         "--batch-size", "32", "--checkpoint-every", "3", "--dropout", "0.2", "--seed", "3"]
TRIALS = 10
SEED = 20240611
ENV = dict(os.environ, GPUNET_FORCE_CPU="1", COLUMNS="160", PYTHONWARNINGS="ignore")


def start(tmp_path, name, *extra):
    return subprocess.Popen([sys.executable, "-m", "gpunet", "train", *FLAGS, "--out", str(tmp_path / "runs"),
                             "--name", name, *extra], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def mtime(path):
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def watch(proc, folder, stop=None):
    """Poll until the process exits or `stop(t)` says kill. `t` holds the elapsed time, when the
    run folder's config.json appeared, checkpoint-last.npz writes seen so far and whether a
    checkpoint temp file (a write in progress) is on disk. Returns (killed, t)."""
    t = {"now": 0.0, "config": None, "first": None, "writes": 0, "writing": False}
    t0, last = time.perf_counter(), None
    while proc.poll() is None:
        t["now"] = time.perf_counter() - t0
        if t["config"] is None and (folder / "config.json").exists():
            t["config"] = t["now"]
        m = mtime(folder / "checkpoint-last.npz")
        if m is not None and m != last:
            t["first"] = t["now"] if t["first"] is None else t["first"]
            last, t["writes"] = m, t["writes"] + 1
        t["writing"] = t["writes"] > 0 and any(n.endswith(".tmp") for n in os.listdir(folder))
        if stop is not None and stop(t):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True, t
        time.sleep(0.0005)  # polling cadence only; nothing asserts on time
    t["now"] = time.perf_counter() - t0
    return False, t


def make_plan(rng, ref):
    """Ten (kind, parameter, stop) trials spread over the reference run."""
    train_s = ref["now"] - ref["config"]  # from the run folder's config.json to the end
    plan = [("before-folder", round(ref["config"] / 2, 3), lambda t, d=ref["config"] / 2: t["now"] >= d)]
    for i in range(4):  # stratified over the training phase, measured from config.json
        d = (i + rng.random()) / 4 * 0.7 * train_s
        plan.append(("timed", round(d, 3), lambda t, d=d: t["config"] is not None and t["now"] - t["config"] >= d))
    for _ in range(3):  # while a checkpoint write is in progress (its temp file exists)
        k = rng.randint(1, int(ref["writes"] * 0.8))
        plan.append(("mid-write", k, lambda t, k=k: t["writes"] >= k and t["writing"]))
    for _ in range(2):  # right after the k-th write, with the next one close
        k = rng.randint(1, int(ref["writes"] * 0.8))
        plan.append(("after-write", k, lambda t, k=k: t["writes"] >= k))
    return plan


def final_state(ckpt):
    header, arrays = read_checkpoint(ckpt)
    meta = header["meta"]
    return arrays, (meta["epoch"], meta["global_step"], meta["batch_in_epoch"], header["optimizer"]["step"])


def assert_identical(got, want, trial):
    (ga, gc), (wa, wc) = got, want
    assert gc == wc, f"trial {trial}: counters (epoch, step, batch, optimizer step) {gc} != {wc}"
    assert ga.keys() == wa.keys(), f"trial {trial}: keys differ {sorted(set(ga) ^ set(wa))}"
    diff = [k for k in wa if ga[k].dtype != wa[k].dtype or ga[k].tobytes() != wa[k].tobytes()]
    worst = {k: float(np.max(np.abs(ga[k].astype(np.float64) - wa[k]))) for k in diff}
    assert not diff, f"trial {trial}: not bit-identical to the uninterrupted run: max |diff| {worst}"


def check_after_kill(folder, ref_keys, trial):
    """The folder holds complete checkpoints only; returns whether checkpoint-last exists."""
    for name in ("checkpoint-last.npz", "checkpoint-best.npz"):
        path = folder / name
        if path.exists():
            _, arrays = read_checkpoint(path)  # raises CheckpointError on a torn or corrupt file
            assert set(arrays) == ref_keys, f"trial {trial}: {name} holds {sorted(arrays)}"
    return (folder / "checkpoint-last.npz").exists()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_bit_identical(tmp_path):
    procs = []
    try:
        runs = tmp_path / "runs"
        ref_proc = start(tmp_path, "ref")
        procs.append(ref_proc)
        _, ref = watch(ref_proc, runs / "ref")
        assert ref_proc.returncode == 0, ref_proc.stdout.read()
        want = final_state(runs / "ref" / "checkpoint-last.npz")
        assert ref["config"] is not None and ref["writes"] >= 10, ref

        results = []
        for trial, (kind, arg, stop) in enumerate(make_plan(random.Random(SEED), ref)):
            name = f"trial{trial}"
            folder = runs / name
            proc = start(tmp_path, name)
            procs.append(proc)
            killed, t = watch(proc, folder, stop)
            had_ckpt = check_after_kill(folder, set(want[0]), trial)
            temp_files = len(list(folder.glob(".checkpoint-*.tmp")))
            started = folder.is_dir()  # killed before the run folder existed: start afresh
            done = (folder / "history.json").is_file()  # killed after the run's last write
            # --restart: a run killed before its first checkpoint starts over in its folder.
            again = start(tmp_path, name, *(["--resume", "--restart"] if started else []))
            procs.append(again)
            out, _ = again.communicate(timeout=120)
            assert again.returncode == 0, f"trial {trial} ({kind} {arg}): resume failed:\n{out}"
            finished = done and "the run is finished" in out
            assert ("resumed from" in out or finished) == had_ckpt, out
            assert had_ckpt or not started or "starting the run over" in out, out
            assert_identical(final_state(folder / "checkpoint-last.npz"), want, trial)
            assert not list(folder.glob(".checkpoint-*.tmp")), "a killed write's temp file survived the resume"
            results.append((trial, kind, arg, killed, round(t["now"], 3), t["writes"], started, had_ckpt, temp_files))
        print("\ntrial kind arg killed at_s writes_seen had_folder had_checkpoint temp_files_left")
        for r in results:
            print(*r)
        killed = sum(r[3] for r in results)
        assert killed >= TRIALS - 2, f"only {killed} of {TRIALS} trials were killed mid-run: {results}"
        assert any(r[7] for r in results if r[3]), "no kill landed after the first checkpoint"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
