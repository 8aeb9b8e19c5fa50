"""L-BFGS: limited-memory BFGS with an optional strong-Wolfe line search (PyTorch's torch.optim.LBFGS).

A full-batch quasi-Newton method. `step(closure)` runs up to max_iter iterations; the
closure zeroes the gradients, computes the loss, runs backward (filling every p.grad)
and returns the loss. With g the flat gradient, s_k = x_{k+1} − x_k, y_k = g_{k+1} − g_k
and ρ_k = 1/(y_kᵀs_k), the direction d = −H·g comes from the two-loop recursion over
the last `history_size` pairs (kept only when y_kᵀs_k > 1e-10), starting from
H₀ = (yᵀs)/(yᵀy)·I:

    q ← −g;  for k newest→oldest: α_k = ρ_k·s_kᵀq,  q ← q − α_k·y_k
    r ← H₀·q; for k oldest→newest: β_k = ρ_k·y_kᵀr, r ← r + (α_k − β_k)·s_k;   d = r

The step is x ← x + t·d with t = lr (the first iteration: t = min(1, 1/‖g‖₁)·lr), or t
from a strong-Wolfe line search (c1 = 1e-4, c2 = 0.9, cubic interpolation, at most
max_eval − evaluations so far trials) when line_search_fn="strong_wolfe". One step stops
early when max|g| ≤ tolerance_grad, when gᵀd > −tolerance_change (not a descent
direction), when max|t·d| ≤ tolerance_change or |Δloss| < tolerance_change, or after
max_eval closure evaluations. Every one of these is PyTorch's rule, in PyTorch's order.
Scalars (gᵀd, ρ, H₀) keep the parameters' dtype, as PyTorch's 0-d tensors do; the float64
iterates match torch.optim.LBFGS to rounding (tests/test_optim_lbfgs.py).

Unlike the other optimizers, step() syncs the host: every stopping test is a branch on
a value. All parameters must share one device and one dtype. state_dict() holds the
history (directions, steps, ρ, H₀, the last direction and step length, counters).

Reference: Nocedal & Wright, Numerical Optimization (2006), algorithms 7.4 and 3.5-3.6.
"""
from __future__ import annotations

import numbers

from .. import backend
from ..errors import CheckpointError, GpunetTypeError, GpunetValueError
from .optimizer import Optimizer, check_number

LINE_SEARCHES = (None, "strong_wolfe")


def _cubic_interpolate(x1, f1, g1, x2, f2, g2, bounds=None):
    """Minimiser of the cubic through (x1, f1, g1) and (x2, f2, g2), clipped to bounds."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square >= 0:
        d2 = d2_square ** 0.5
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(obj_func, x, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """Bracketing then zoom (Nocedal & Wright 3.5-3.6). Returns (f, g, t, evaluations)."""
    xp = backend.xp_of(d)
    d_norm = xp.abs(d).max()
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = xp.dot(g_new, d)
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket, bracket_f = [t_prev, t], [f_prev, f_new]
            bracket_g, bracket_gtd = [g_prev, g_new.copy()], [gtd_prev, gtd_new]
            break
        min_step, max_step = t + 0.01 * (t - t_prev), t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new.copy(), gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = xp.dot(g_new, d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket, bracket_f, bracket_g = [0, t], [f, f_new], [g, g_new]

    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0],
                               bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                t = max(bracket) - eps if abs(t - max(bracket)) < abs(t - min(bracket)) else min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = xp.dot(g_new, d)
        ls_iter += 1
        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos], bracket_f[high_pos] = t, f_new
            bracket_g[high_pos], bracket_gtd[high_pos] = g_new.copy(), gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
            bracket[low_pos], bracket_f[low_pos] = t, f_new
            bracket_g[low_pos], bracket_gtd[low_pos] = g_new.copy(), gtd_new
    t = bracket[low_pos]
    return bracket_f[low_pos], bracket_g[low_pos], t, ls_func_evals


def _check_int(name, value, lo):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
        raise GpunetValueError(f"LBFGS: {name} expected an int >= {lo}, got {value!r}")
    return int(value)


class LBFGS(Optimizer):
    """LBFGS(params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7, tolerance_change=1e-9,
    history_size=100, line_search_fn=None). max_eval defaults to max_iter·5//4, as in PyTorch."""

    HYPER = ("lr", "max_iter", "max_eval", "tolerance_grad", "tolerance_change", "history_size",
             "line_search_fn")
    _STATE = ("func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
              "prev_flat_grad", "prev_loss")

    def __init__(self, params, lr=1.0, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        if max_eval is None:
            max_iter = _check_int("max_iter", max_iter, 1)
            max_eval = max_iter * 5 // 4
        super().__init__(params, lr, max_iter=max_iter, max_eval=max_eval, tolerance_grad=tolerance_grad,
                         tolerance_change=tolerance_change, history_size=history_size,
                         line_search_fn=line_search_fn)
        if len(self.param_groups) != 1:
            raise GpunetValueError(f"LBFGS: params expected one parameter group (L-BFGS keeps one history over "
                                   f"all of them, as PyTorch's does), got {len(self.param_groups)} groups")
        dtypes = {str(p.data.dtype) for p in self.params}
        if len(dtypes) != 1:
            raise GpunetTypeError(f"LBFGS: params expected one dtype, got {sorted(dtypes)}")
        self.lbfgs_state = {"func_evals": 0, "n_iter": 0}

    def _check_hyper(self, h: dict) -> dict:
        out = super()._check_hyper(h)
        out["max_iter"] = _check_int("max_iter", h["max_iter"], 1)
        out["max_eval"] = _check_int("max_eval", h["max_eval"], 1)
        out["tolerance_grad"] = check_number("LBFGS", "tolerance_grad", h["tolerance_grad"], lo=0.0)
        out["tolerance_change"] = check_number("LBFGS", "tolerance_change", h["tolerance_change"], lo=0.0)
        out["history_size"] = _check_int("history_size", h["history_size"], 1)
        if h["line_search_fn"] not in LINE_SEARCHES:
            raise GpunetValueError(f"LBFGS: line_search_fn expected one of {LINE_SEARCHES}, "
                                   f"got {h['line_search_fn']!r}")
        out["line_search_fn"] = h["line_search_fn"]
        return out

    # -- flat views of the parameters
    def _flat_grad(self):
        xp = backend.xp_of(self.params[0].data)
        return xp.concatenate([p.grad.reshape(-1) for p in self.params])

    def _add_grad(self, step_size, update) -> None:
        offset = 0
        for p in self.params:
            n = p.data.size
            p.data += (step_size * update[offset:offset + n]).reshape(p.data.shape).astype(p.data.dtype, copy=False)
            offset += n

    def _set_param(self, values) -> None:
        for p, v in zip(self.params, values):
            p.data[...] = v

    def _directional_evaluate(self, closure, x, t, d):
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._flat_grad()
        self._set_param(x)
        return loss, flat_grad

    def _update(self, i, p, group):  # the per-parameter hook of the base class does not apply
        raise GpunetTypeError("LBFGS: step expected a closure (step(closure)), got none")

    def step(self, closure=None):
        """Up to max_iter L-BFGS iterations; returns the loss of the first closure call."""
        if closure is None or not callable(closure):
            raise GpunetTypeError(f"LBFGS.step: closure expected a callable that zeroes the gradients, "
                                  f"runs forward and backward and returns the loss, got {closure!r}")
        with backend.device_of(self.params[0].data):
            return self._step(closure)

    def _step(self, closure):
        xp = backend.xp_of(self.params[0].data)
        lr, max_iter, max_eval = self.lr, self.max_iter, self.max_eval
        tolerance_grad, tolerance_change = self.tolerance_grad, self.tolerance_change
        history_size = self.history_size
        state = self.lbfgs_state
        self.step_count += 1

        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._flat_grad()
        opt_cond = xp.abs(flat_grad).max() <= tolerance_grad
        if opt_cond:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        H_diag, prev_flat_grad = state.get("H_diag"), state.get("prev_flat_grad")
        prev_loss = state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro = [], [], []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = xp.dot(y, s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / xp.dot(y, y)
                num_old = len(old_dirs)
                al = [None] * num_old
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = xp.dot(old_stps[i], q) * ro[i]
                    q = q - al[i] * old_dirs[i]
                d = r = q * H_diag
                for i in range(num_old):
                    be_i = xp.dot(old_dirs[i], r) * ro[i]
                    r += (al[i] - be_i) * old_stps[i]
            prev_flat_grad = flat_grad.copy()
            prev_loss = loss
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / xp.abs(flat_grad).sum()) * lr
            else:
                t = lr
            gtd = xp.dot(flat_grad, d)
            if gtd > -tolerance_change:  # not a descent direction
                break
            ls_func_evals = 0
            if self.line_search_fn == "strong_wolfe":
                x_init = [p.data.copy() for p in self.params]

                def obj_func(x, t, d):
                    return self._directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(obj_func, x_init, t, d, loss, flat_grad, gtd,
                                                                  max_ls=max_eval - current_evals)
                self._add_grad(t, d)
                opt_cond = xp.abs(flat_grad).max() <= tolerance_grad
            else:
                self._add_grad(t, d)
                if n_iter != max_iter:
                    loss = float(closure())
                    flat_grad = self._flat_grad()
                    opt_cond = xp.abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1
            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if xp.abs(d * t).max() <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break
        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=H_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    # -- state (the history is global, not per parameter)
    def state_dict(self) -> dict:
        st = self.lbfgs_state
        copy = (lambda v: [a.copy() for a in v] if isinstance(v, list) else
                (v.copy() if hasattr(v, "copy") and not isinstance(v, (int, float)) else v))
        return {"type": "LBFGS", "hyper": self.hyper(), "step": int(self.step_count),
                "param_shapes": [list(p.shape) for p in self.params],
                "lbfgs": {k: copy(st[k]) for k in self._STATE if k in st}}

    def load_state_dict(self, d: dict) -> None:
        """Restore hyperparameters, counters and history; CheckpointError (nothing changed) on a mismatch."""
        if not isinstance(d, dict) or d.get("type") != "LBFGS" or not isinstance(d.get("lbfgs"), dict):
            raise CheckpointError(f"LBFGS.load_state_dict: expected an LBFGS state dict with an 'lbfgs' entry, "
                                  f"got {type(d).__name__} of type {d.get('type') if isinstance(d, dict) else None!r}")
        shapes = [list(p.shape) for p in self.params]
        if [list(s) for s in d.get("param_shapes", shapes)] != shapes:
            raise CheckpointError(f"LBFGS.load_state_dict: param_shapes expected {shapes}, got {d['param_shapes']}")
        unknown = sorted(set(d["lbfgs"]) - set(self._STATE))
        if unknown:
            raise CheckpointError(f"LBFGS.load_state_dict: unexpected state entries {unknown}")
        hyper = self._check_hyper(dict(d["hyper"]))
        for k, v in hyper.items():
            setattr(self, k, v)
        self.step_count = int(d["step"])
        self.lbfgs_state = {k: ([a.copy() for a in v] if isinstance(v, list) else v) for k, v in d["lbfgs"].items()}
