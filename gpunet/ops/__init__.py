"""gn.ops: the math that layers and losses call, each with a CUDA kernel and a NumPy twin.

    relu_backward(dy, y, out=None)                        kernels/relu.cu
    leaky_relu_backward(dy, x, negative_slope, out=None)
    relu_pack_mask(y), relu_backward_mask(dy, mask, out=None)
    softmax_cross_entropy(logits, target, ...)            kernels/softmax_cross_entropy.cu
    softmax_cross_entropy_eval(logits, target, ...)
    raise_deferred_errors(device), kernels_available(device)
    REDUCTIONS                                            the reductions every loss offers

On CuPy arrays (and a device whose kernels are available) an op launches its kernel;
otherwise it runs its `*_xp` twin, written once with `xp`, which is also the kernel's
test reference.
"""
from ._kernels import kernels_available  # noqa: F401
from .relu import leaky_relu_backward, relu_backward, relu_backward_mask, relu_pack_mask  # noqa: F401
from .softmax_cross_entropy import (raise_deferred_errors, softmax_cross_entropy,  # noqa: F401
                                    softmax_cross_entropy_eval)
from .softmax_cross_entropy_xp import REDUCTIONS  # noqa: F401
