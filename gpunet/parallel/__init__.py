"""gn.parallel: data-parallel replicas, communicators, and multi-process jobs on MPI/NCCL."""
from .comm import Communicator, LocalCommunicator, NcclCommunicator  # noqa: F401
from .engine import REDUCES, DataParallel, flatten_grads  # noqa: F401
from .mpi import (JobStopped, MpiCommunicator, env_rank, make_process_communicator,  # noqa: F401
                  rank_guard)
from .process import ProcessDataParallel, ProcessSync, make_engine  # noqa: F401
