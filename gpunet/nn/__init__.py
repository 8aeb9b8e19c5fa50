"""gn.nn: modules with explicit forward/backward, PyTorch names and layouts."""
from .module import Module, Parameter, Sequential  # noqa: F401
