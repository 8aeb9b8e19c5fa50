"""The parent of one rank under `gpunet launch` (standard library only: run as a script).

    python .../gpunet/parallel/_rankwrap.py JOB_DIR COMMAND...

mpiexec starts this instead of the rank's command; it runs the command as its child,
passes on the signals mpiexec forwards, and when the child ends writes its exact exit
status and time to JOB_DIR/rank<R>.exit before exiting the same way. When one rank dies,
MPI kills the others at once, so their statuses look alike; this file is how the
launcher tells the rank that died first from those MPI stopped after it. The child gets
SIGKILL if this parent is killed (a parent-death signal), so no rank outlives it.
"""
import ctypes
import json
import os
import signal
import subprocess
import sys
import time

RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "RANK")
FORWARD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _die_with_parent():
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def main(argv):
    job, cmd = argv[0], argv[1:]
    rank = next((os.environ[v] for v in RANK_VARS if v in os.environ), "?")
    # close_fds=False: the MPI process manager hands the rank inherited descriptors (PMI_FD).
    child = subprocess.Popen(cmd, close_fds=False, preexec_fn=_die_with_parent)
    for sig in FORWARD:
        signal.signal(sig, lambda s, f: child.send_signal(s))
    code = child.wait()
    record = {"rank": rank, "pid": child.pid, "time": time.time(), "returncode": code}
    try:
        tmp = os.path.join(job, f".rank{rank}.exit.tmp")
        with open(tmp, "w") as f:
            json.dump(record, f)
        os.replace(tmp, os.path.join(job, f"rank{rank}.exit"))
    except OSError:
        pass
    if code < 0:  # died by a signal: die by the same one, so MPI sees what happened
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
