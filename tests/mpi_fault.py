"""`gpunet train` with one fault injected on one rank: the rank command of tests/test_mpi.py.

    python tests/mpi_fault.py KIND RANK STEP train --quiet ...

KIND is raise (RuntimeError), kill (SIGKILL itself), stop (SIGSTOP itself: a frozen
rank) or exit (os._exit(3), no error message). The fault fires on rank RANK after
optimizer step STEP (0-based). Everything else is the real CLI.
"""
import os
import signal
import sys

import gpunet.train as train_module
from gpunet.callbacks import Callback
from gpunet.cli import main
from gpunet.parallel.mpi import env_rank

KIND, RANK, STEP = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


class Fault(Callback):
    def on_batch_end(self, step, logs=None):
        if env_rank()[0] != RANK or step != STEP:
            return
        if KIND == "raise":
            raise RuntimeError(f"injected fault at step {step}")
        if KIND == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if KIND == "stop":
            os.kill(os.getpid(), signal.SIGSTOP)
        if KIND == "exit":
            os._exit(3)


_init = train_module.Trainer.__init__


def _with_fault(self, *args, callbacks=(), **kwargs):
    _init(self, *args, callbacks=[*callbacks, Fault()], **kwargs)


train_module.Trainer.__init__ = _with_fault
sys.exit(main(sys.argv[4:]))
