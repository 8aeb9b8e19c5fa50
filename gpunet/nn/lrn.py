"""Local response normalisation across channels (Krizhevsky et al. 2012), PyTorch's form.

    x (N, C, *):  s[c] = k + (alpha / size)·Σ_{c' = c − size//2}^{c + (size − 1)//2} x[c']²
                  y[c] = x[c] · s[c]^−beta                 (channels outside 0..C−1 count as 0)
    backward:     dx[c] = dy[c]·s[c]^−beta − (2·alpha·beta/size)·x[c]·Σ_{c': c ∈ window(c')} t[c']
                  t = dy·y/s;  c ∈ window(c') ⇔ c − (size−1)//2 ≤ c' ≤ c + size//2

Both channel sums are `size` slice adds over a channel-padded copy (no cumulative sums,
so no cancellation). CPU passes run over batch chunks on gpunet's threads.
TensorFlow's tf.nn.lrn(depth_radius=r, bias, alpha, beta) is
LocalResponseNorm(2r + 1, alpha=alpha·(2r + 1), beta, k=bias): TensorFlow does not divide
alpha by the window size. Kept for backward: x, s and s^−beta.
"""
from __future__ import annotations

from .. import backend
from ._chunks import over_batch
from ._layer import Layer, positive_int, real


def _window_sum(xp, a, before, after, size, out=None):
    """Σ_{o=0}^{size−1} a_padded[:, o:o + C] with a zero-padded by (before, after) channels,
    into `out` when given. Adds in place into one array: faster on the CPU than fewer adds
    that each make a new array (doubling), whose page faults cost more than they save."""
    N, C = a.shape[:2]
    pad = xp.zeros((N, C + before + after) + a.shape[2:], dtype=a.dtype)
    pad[:, before:before + C] = a
    if out is None:
        out = pad[:, 0:C].copy()
    else:
        out[...] = pad[:, 0:C]
    for o in range(1, size):
        out += pad[:, o:o + C]
    return out


class LocalResponseNorm(Layer):
    """Normalises each value by the squares of its neighbours across `size` channels. (N, C, *) inputs."""

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size = positive_int("LocalResponseNorm", "size", size)
        self.alpha = real("LocalResponseNorm", "alpha", alpha, 0.0)
        self.beta = real("LocalResponseNorm", "beta", beta, 0.0)
        self.k = real("LocalResponseNorm", "k", k, 0.0, low_open=True)
        self._cache = None

    def forward(self, x):
        self._check_array(x)
        if x.ndim < 3:
            raise self._shape_error("(N, C, *) with at least 3 dimensions", x)
        self._check_float(x)
        xp = backend.xp_of(x)
        before, after = self.size // 2, (self.size - 1) // 2
        s, scale, y = (xp.empty(x.shape, dtype=x.dtype) for _ in range(3))

        def chunk(lo, hi):  # over batch chunks on the CPU threads (one call on the GPU)
            xs = x[lo:hi]
            ws = _window_sum(xp, xs * xs, before, after, self.size, out=s[lo:hi])
            ws *= self.alpha / self.size
            ws += self.k
            xp.power(ws, -self.beta, out=scale[lo:hi])
            xp.multiply(xs, scale[lo:hi], out=y[lo:hi])

        over_batch(x, chunk)
        self._cache = (x, s, scale)
        return y

    def backward(self, dy, need_input_grad=True):
        x, s, scale = self._saved()
        self._check_dy(dy, x.shape)
        xp = backend.xp_of(dy)
        before, after = (self.size - 1) // 2, self.size // 2
        dx = xp.empty(dy.shape, dtype=dy.dtype)

        def chunk(lo, hi):
            d, xs, sc = dy[lo:hi], x[lo:hi], scale[lo:hi]
            t = d * xs
            t *= sc
            t /= s[lo:hi]                                       # dy · y / s
            T = _window_sum(xp, t, before, after, self.size)
            T *= xs
            T *= 2.0 * self.alpha * self.beta / self.size
            out = xp.multiply(d, sc, out=dx[lo:hi])
            out -= T

        over_batch(dy, chunk)
        return dx

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
