"""gn.optim.LBFGS against torch.optim.LBFGS in float64: the same iterates, step by step."""
import numpy as np
import pytest

import gpunet as gn
from gpunet.errors import GpunetTypeError, GpunetValueError

torch = pytest.importorskip("torch")

A = np.random.default_rng(0).normal(size=(6, 4))
B = np.random.default_rng(1).normal(size=(6,))


Y = (B > 0).astype(float)
C = np.array([1.0, 2.0])
K = np.array([1.0, 30.0])


def objective(xp, w, v):
    """Logistic regression in w (4 values, L2 0.1) plus an ill-conditioned quadratic in v (2 values).

    Convex, so rounding differences between the two implementations are not amplified."""
    a, y, c, k = (torch.as_tensor(m) for m in (A, Y, C, K)) if xp is torch else (A, Y, C, K)
    z = a @ w
    softplus = torch.nn.functional.softplus(z) if xp is torch else np.logaddexp(0, z)
    return (softplus - y * z).sum() + 0.1 * (w * w).sum() + (k * (v - c) ** 2).sum()


def gradient(w, v):
    p = 1 / (1 + np.exp(-(A @ w)))
    return A.T @ (p - Y) + 0.2 * w, 2 * K * (v - C)


def run_gpunet(steps, **kw):
    w = gn.nn.Parameter(np.full(4, 0.3))
    v = gn.nn.Parameter(np.array([-1.2, 1.0]))
    opt = gn.optim.LBFGS([w, v], **kw)

    def closure():
        opt.zero_grad()
        gw, gv = gradient(w.data, v.data)
        w.grad += gw
        v.grad += gv
        return objective(np, w.data, v.data)

    out = []
    for _ in range(steps):
        opt.step(closure)
        out.append(np.concatenate([w.data, v.data]))
    return np.array(out), opt


def run_torch(steps, **kw):
    w = torch.full((4,), 0.3, dtype=torch.float64, requires_grad=True)
    v = torch.tensor([-1.2, 1.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, v], **kw)

    def closure():
        opt.zero_grad()
        loss = objective(torch, w, v)
        loss.backward()
        return loss

    out = []
    for _ in range(steps):
        opt.step(closure)
        out.append(torch.cat([w, v]).detach().numpy().copy())
    return np.array(out), opt


@pytest.mark.parametrize("kw", [
    dict(lr=1, max_iter=20, history_size=100),
    dict(lr=0.5, max_iter=7, history_size=3),
    dict(lr=1, max_iter=25, history_size=5, line_search_fn="strong_wolfe"),
    dict(lr=1, max_iter=10, history_size=10, line_search_fn="strong_wolfe", tolerance_change=1e-12,
         tolerance_grad=1e-9),
])
def test_lbfgs_matches_torch_float64(kw):
    ours, opt = run_gpunet(6, **kw)
    ref, topt = run_torch(6, **kw)
    assert np.isfinite(ref).all()
    scale = np.abs(ref).max(axis=1, keepdims=True)
    rel = np.abs(ours - ref).max(axis=1, keepdims=True) / scale
    assert rel.max() < 1e-10, rel.ravel()
    tstate = topt.state[topt._params[0]]
    assert opt.lbfgs_state["func_evals"] == tstate["func_evals"]
    assert opt.lbfgs_state["n_iter"] == tstate["n_iter"]
    assert len(opt.lbfgs_state["old_dirs"]) == len(tstate["old_dirs"]) <= kw["history_size"]
    # it optimises: v moves from (-1.2, 1) most of the way to its optimum (1, 2)
    assert np.abs(ours[-1, 4:] - C).max() < 0.02 * np.abs(np.array([-1.2, 1.0]) - C).max()


def test_lbfgs_state_dict_round_trip_continues_identically():
    a, opt = run_gpunet(2, max_iter=5, history_size=4, line_search_fn="strong_wolfe")
    sd = opt.state_dict()
    w = gn.nn.Parameter(a[-1, :4].copy())
    v = gn.nn.Parameter(a[-1, 4:].copy())
    opt2 = gn.optim.LBFGS([w, v], max_iter=5, history_size=4, line_search_fn="strong_wolfe")
    opt2.load_state_dict(sd)
    assert opt2.lbfgs_state["n_iter"] == opt.lbfgs_state["n_iter"] and opt2.step_count == 2

    def closure_for(o, w, v):
        def closure():
            o.zero_grad()
            gw, gv = gradient(w.data, v.data)
            w.grad += gw
            v.grad += gv
            return objective(np, w.data, v.data)
        return closure
    opt.step(closure_for(opt, *opt.params))
    opt2.step(closure_for(opt2, w, v))
    np.testing.assert_array_equal(np.concatenate([w.data, v.data]),
                                  np.concatenate([p.data for p in opt.params]))


def test_lbfgs_bad_arguments_are_refused():
    p = [gn.nn.Parameter(np.zeros(3))]
    with pytest.raises(GpunetValueError, match="line_search_fn"):
        gn.optim.LBFGS(p, line_search_fn="armijo")
    with pytest.raises(GpunetValueError, match="history_size"):
        gn.optim.LBFGS(p, history_size=0)
    with pytest.raises(GpunetValueError, match="max_iter"):
        gn.optim.LBFGS(p, max_iter=1.5)
    with pytest.raises(GpunetTypeError, match="closure"):
        gn.optim.LBFGS(p).step()
    with pytest.raises(GpunetTypeError, match="one dtype"):
        gn.optim.LBFGS(p + [gn.nn.Parameter(np.zeros(2, dtype=np.float32))])


def test_lbfgs_on_a_device_matches_the_cpu(dev):
    """The same float64 iterates on every device (the cuda case runs where a GPU is)."""
    device = gn.device(dev)
    ref, _ = run_gpunet(4, max_iter=10, history_size=5, line_search_fn="strong_wolfe")
    w = gn.nn.Parameter(device.asarray(np.full(4, 0.3)))
    v = gn.nn.Parameter(device.asarray(np.array([-1.2, 1.0])))
    opt = gn.optim.LBFGS([w, v], max_iter=10, history_size=5, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        wh, vh = gn.backend.to_numpy(w.data), gn.backend.to_numpy(v.data)
        gw, gv = gradient(wh, vh)
        w.grad += device.asarray(gw)
        v.grad += device.asarray(gv)
        return objective(np, wh, vh)

    for i in range(4):
        opt.step(closure)
        got = np.concatenate([gn.backend.to_numpy(w.data), gn.backend.to_numpy(v.data)])
        np.testing.assert_allclose(got, ref[i], rtol=1e-12, atol=1e-14)
