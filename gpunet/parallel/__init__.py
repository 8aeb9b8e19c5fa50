"""gn.parallel: data-parallel replicas, communicators and the multi-process launcher."""
from .comm import (Communicator, DistCommunicator, LocalCommunicator, NcclCommunicator,  # noqa: F401
                   TcpCommunicator, env_rank, make_process_communicator)
from .engine import REDUCES, DataParallel, flatten_grads  # noqa: F401
