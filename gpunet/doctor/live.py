"""LiveDoctor: checks during `fit` that cost nothing between the trainer's logging points.

It reads only the values the trainer already synced ("loss"/"accuracy" in the
on_batch_end logs at logging points, and the epoch logs). Gradient norms come
from one sampled step after each logging point: on that step only,
`on_before_optimizer_step` computes ‖g‖² per parameter *on the device* (no sync);
the host reads those numbers at the next logging point, together with the loss. Everything else is arithmetic on a few floats.

Watches for (codes in findings.py):
  GN201 NaN/Inf in the loss (the Trainer raises) or in a sampled gradient: stop.
  GN202 divergence: a finite loss > explode_factor × max(initial, ln C) or > 1e6
        (ReLU nets at lr 1e4 reach 1e13 without a NaN): stop.
  GN203 the loss stays at the priors' value H(π) (or Σ_c H(π_c) for C-way BCE).
  GN204 the loss is well below the priors' value while accuracy is at chance.
  GN205/GN206 a layer's gradient norm exploding (1000× its first sample) or
        vanishing (1e-5× the largest layer's, twice in a row).
  GN110 data parallel reduce="sum" with no lr correction.
  GN207 precision="fp16" without loss scaling and a NaN/Inf gradient or loss: reported
        before GN201 stops the run (the fix is loss scaling, not only a lower lr).
  GN208 the fp16 loss scale at its floor while steps keep being skipped: the gradients are
        not finite at any scale (the model overflows in its forward pass, or diverged).
  A step the loss scaler skips (non-finite scaled gradients, expected now and then) is
  never sampled for gradient norms: the next step is.

Place it before ModelCheckpoint in the callbacks (the Trainer wiring does): it then
stops a diverged run before a checkpoint of diverged weights is written, and the
last good checkpoint stays intact.
"""
from __future__ import annotations

import math
import sys

import numpy as np

from .. import backend
from ..callbacks import Callback, ModelCheckpoint
from ..checkpoint import read_checkpoint
from ..errors import CheckpointError, NonFiniteError
from .findings import Finding, code, print_live
from .optimizer import check_data_parallel
from .probe import host, output_classes
from .theory import init_loss, priors_losses

STOPPING = ("GN201-non-finite", "GN202-divergence")


class DivergenceError(NonFiniteError):
    """Training diverged (non-finite, or finite but exploding); carries the Finding."""

    def __init__(self, finding):
        super().__init__(str(finding))
        self.finding = finding


class LiveDoctor(Callback):
    """Live diagnostics at logging points; findings print to stderr and collect in `.findings`.

    ignore: codes (full, number or name) to silence; an ignored GN202 no longer stops.
    priors: class frequencies π (C,); `preflight` sets them from the data (default uniform).
    """

    def __init__(self, ignore=(), priors=None, explode_factor=100.0, explode_abs=1e6,
                 plateau_tol=0.02, plateau_points=8, console=None, verbose=True):
        self.ignore = {code(c) for c in ignore}
        self.priors = None if priors is None else np.asarray(priors, dtype=np.float64)
        self.explode_factor, self.explode_abs = float(explode_factor), float(explode_abs)
        self.plateau_tol, self.plateau_points = float(plateau_tol), int(plateau_points)
        self.console, self.verbose = console, verbose
        self.findings = []
        self._points, self._first_norms, self._last_norms, self._vanish_streak = None, None, None, {}

    # ------------------------------------------------------------ reporting
    def _emit(self, finding, stop=False):
        if finding.code in self.ignore or any(f.code == finding.code for f in self.findings):
            return
        self.findings.append(finding)
        if self.verbose:
            print_live(finding, self.console)
        if stop and finding.code in STOPPING:
            self.trainer.stop_training = True
            raise DivergenceError(finding)

    # ------------------------------------------------------------ lifecycle
    def on_train_begin(self, logs=None):
        t = self.trainer
        self._names = {id(p): n for n, p in t.model.named_parameters()}
        self._params = list(t.optimizer.params)
        self._ckpt = next((cb for cb in t.callbacks.callbacks if isinstance(cb, ModelCheckpoint)), None)
        if self._points is None:  # first fit; a later fit() on the same trainer continues the record
            self._points, self._weight0 = [], self._weight_norms()  # sync: once, before the first step
        self._pending, self._sample = None, True
        self._last_good_step = t.global_step
        for f in check_data_parallel(t, t.optimizer):
            self._emit(Finding(f.severity, f.code, f.message, f.evidence, f.fix, step=t.global_step))

    def on_batch_end(self, step, logs=None):
        if logs and "loss" in logs:
            self._check_point(step + 1, logs["loss"], logs.get("accuracy"))
        elif self._ckpt is not None and self._ckpt.every_n_steps and (step + 1) % self._ckpt.every_n_steps == 0:
            self._guard_checkpoint(step + 1)

    def _weight_norms(self) -> dict:
        return {n: float(backend.xp_of(p.data).linalg.norm(p.data.ravel()))  # sync
                for n, p in self.trainer.model.named_parameters()}

    def _guard_checkpoint(self, step):
        """Before a step checkpoint (a sync point anyway): refuse to let diverged weights overwrite it.

        Stops when a weight is NaN/Inf or its norm grew 1000× since the start; this runs
        before ModelCheckpoint's save only when LiveDoctor precedes it in the callbacks.
        """
        norms = self._weight_norms()
        bad = [n for n, v in norms.items() if not math.isfinite(v)]
        if bad:
            self._emit(self._non_finite(step, "weights became NaN/Inf", bad), stop=True)
        grown = {n: v / self._weight0[n] for n, v in norms.items() if self._weight0.get(n, 0) > 0}
        if grown and max(grown.values()) > 1e3:
            worst = max(grown, key=grown.get)
            self._emit(Finding(
                "error", "GN202-divergence",
                f"training diverged: the norm of {worst} grew {grown[worst]:.3g}× by step {step}; "
                f"stopped before the checkpoint was overwritten.{self._checkpoint_note()}",
                {"param": worst, "weight_growth": grown[worst], "last_good_step": self._last_good_step},
                f"lower the learning rate (lr={float(self.trainer.optimizer.lr):g})", step=step), stop=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs and logs.get("loss") is not None:
            self._check_point(self.trainer.global_step, logs["loss"], logs.get("accuracy"))

    def on_train_end(self, logs=None):
        exc = sys.exc_info()[1]
        if isinstance(exc, NonFiniteError) and not isinstance(exc, DivergenceError):
            self._check_fp16_overflow(self.trainer.global_step, "the loss is NaN/Inf")
            f = self._non_finite(self.trainer.global_step, "the loss is NaN/Inf")
            self._emit(f)
            if hasattr(exc, "add_note"):
                exc.add_note(f"gpunet doctor: {f}")

    # ------------------------------------------------------------ gradient sampling
    def on_before_optimizer_step(self, step, logs=None):
        """On a sampled step, queue ‖g‖² and ‖w‖² per parameter on the device (no sync)."""
        if self._sample and not getattr(getattr(self.trainer, "loss_scaler", None), "found_inf", False):
            xp = backend.xp_of(self._params[0].grad)
            self._pending = xp.stack([xp.stack([xp.vdot(p.grad.ravel(), p.grad.ravel()),
                                                xp.vdot(p.data.ravel(), p.data.ravel())])
                                      for p in self._params])
            self._sample = False

    def _read_norms(self):
        """Host copy of the queued gradient norms (a sync, at a logging point only)."""
        if self._pending is None:
            return None
        sq = host(self._pending).astype(np.float64)  # sync: (params, 2) of ‖g‖², ‖w‖²
        self._pending, self._sample = None, True
        root = lambda v: math.sqrt(v) if v >= 0 else float("nan")  # noqa: E731  (NaN stays NaN)
        names = [self._names.get(id(p), f"param{i}") for i, p in enumerate(self._params)]
        self._wnorms = {n: root(w) for n, (_, w) in zip(names, sq)}
        return {n: root(g) for n, (g, _) in zip(names, sq)}

    # ------------------------------------------------------------ the checks
    def _check_point(self, step, loss, accuracy):
        norms = self._read_norms()
        if not math.isfinite(loss):
            self._check_fp16_overflow(step, f"the loss is {loss}")
            self._emit(self._non_finite(step, f"the loss is {loss}"), stop=True)
        if norms and not all(math.isfinite(v) for v in norms.values()):
            bad = [n for n, v in norms.items() if not math.isfinite(v)]
            self._check_fp16_overflow(step, f"the gradient of {bad[0]} is NaN/Inf")
            self._emit(self._non_finite(step, f"the gradient of {bad[0]} is NaN/Inf", bad), stop=True)
        self._check_loss_scale(step)
        self._points.append((step, loss, accuracy))
        self._check_divergence(step, loss)
        if norms:
            self._check_gradients(step, norms)
        self._check_plateau(step)
        self._check_chance(step, loss, accuracy)
        self._last_good_step = step

    def _reference_loss(self):
        """max(first logged loss, loss with uniform predictions): what 'exploding' is relative to."""
        expected = init_loss(self.trainer.loss_fn, output_classes(self.trainer.model) or 2) or 0.0
        return max(self._points[0][1], expected)

    def _check_divergence(self, step, loss):
        ref = self._reference_loss()
        if loss <= self.explode_abs and loss <= self.explode_factor * ref:
            return
        lr = float(self.trainer.optimizer.lr)
        expected = init_loss(self.trainer.loss_fn, output_classes(self.trainer.model) or 2)
        start = f"; about {expected:.4g} is expected at the start" if expected else ""
        how = f"{loss / ref:.3g}× its first value ({ref:.4g})" if loss > self.explode_factor * ref \
            else f"above {self.explode_abs:g}{start}"
        self._emit(Finding(
            "error", "GN202-divergence",
            f"training diverged: loss {loss:.4g} at step {step} is {how}. It is still finite, but the "
            f"run cannot recover; stopped.{self._checkpoint_note()}",
            {"loss": loss, "threshold": min(self.explode_abs, self.explode_factor * ref), "lr": lr,
             "last_good_step": self._last_good_step},
            f"lower the learning rate (lr={lr:g}; try {lr / 10:g} or less) or add warmup/clipping",
            step=step), stop=True)

    def _check_gradients(self, step, norms):
        weights = {n: v for n, v in norms.items() if not n.endswith("bias")}
        if self._first_norms is None:
            self._first_norms = dict(weights)
        self._last_norms = weights
        for name, v in weights.items():
            first = self._first_norms.get(name, 0.0)
            if first > 0 and v > 1e3 * first and v > 1.0:
                self._emit(Finding(
                    "warning", "GN205-exploding-gradient",
                    f"the gradient norm of {name} grew {v / first:.3g}× since the start of training.",
                    {"param": name, "grad_norm": v, "first_grad_norm": first},
                    "lower the lr, add gradient clipping (optim.clip_grad_norm) or normalization", step=step))
        self._check_vanishing(step, weights)

    def _check_vanishing(self, step, weights):
        """Relative gradient r = ‖g‖/‖w‖ (the fraction of a layer an SGD step moves, over lr):
        a layer whose r is 1e-5× the largest layer's, twice in a row, has stopped learning."""
        rel = {n: g / self._wnorms[n] for n, g in weights.items() if self._wnorms.get(n, 0) > 0}
        top = max(rel.values(), default=0.0)
        if len(rel) < 2 or top <= 0:
            return
        for name, r in rel.items():
            low = r < 1e-5 * top
            self._vanish_streak[name] = self._vanish_streak.get(name, 0) + 1 if low else 0
            if self._vanish_streak[name] >= 2:
                self._emit(Finding(
                    "warning", "GN206-vanishing-gradient",
                    f"the relative gradient ‖g‖/‖w‖ of {name} is {r / top:.2g}× the largest layer's: "
                    "it has stopped learning.",
                    {"param": name, "grad_norm": weights[name], "weight_norm": self._wnorms[name],
                     "relative_to_largest": r / top},
                    "check for dead ReLUs or saturated sigmoids; use he_normal init, BatchNorm or skip connections",
                    step=step))

    def _priors(self):
        if self.priors is not None:
            return self.priors
        c = output_classes(self.trainer.model) or 2
        return np.full(c, 1.0 / c)

    def _check_plateau(self, step):
        k = self.plateau_points
        if len(self._points) < k:
            return
        recent = [p[1] for p in self._points[-k:]]
        for reading, value in priors_losses(self.trainer.loss_fn, self._priors()).items():
            if value > 0 and all(abs(v - value) <= self.plateau_tol * value for v in recent):
                self._emit(Finding(
                    "warning", "GN203-priors-plateau",
                    f"the loss has stayed at {recent[-1]:.4g} for {k} checks: the value of predicting the "
                    f"class priors ({reading} = {value:.4g}). The model outputs the label frequencies and "
                    "ignores the input.",
                    {"loss": recent[-1], "priors_loss": value, "checks": k, "classes": len(self._priors())},
                    "break symmetry (random init of hidden layers), check the last activation and the loss "
                    "(softmax + cross-entropy for one label per sample)", step=step))
                return

    def _check_chance(self, step, loss, accuracy):
        if accuracy is None or len(self._points) < 3:
            return
        priors = self._priors()
        values = priors_losses(self.trainer.loss_fn, priors)
        chance = float(priors.max())
        below = values and all(loss < 0.7 * v for v in values.values()) and loss < 0.7 * self._points[0][1]
        if below and accuracy <= chance + 0.02:
            self._emit(Finding(
                "warning", "GN204-accuracy-at-chance",
                f"the loss fell to {loss:.4g}, well below the priors' value, but accuracy is {accuracy:.3f} "
                f"(chance {chance:.3f}): the loss and the accuracy disagree about the labels.",
                {"loss": loss, "first_loss": self._points[0][1], "accuracy": accuracy, "chance": chance},
                "check that the loss and the metric see the same labels (a label shift or a wrong target "
                "transform), and that predictions are the argmax of the logits", step=step))

    # ------------------------------------------------------------ mixed precision
    def _check_fp16_overflow(self, step, what):
        """GN207: fp16 compute without loss scaling went non-finite (fp16 ends at ±65504)."""
        t = self.trainer
        if getattr(t, "precision", "fp32") != "fp16" or getattr(t, "loss_scaler", None) is not None:
            return
        self._emit(Finding(
            "error", "GN207-fp16-overflow",
            f"precision='fp16' without loss scaling and {what} at step {step}: fp16 holds magnitudes up to "
            "65504 only, and an fp16 product beyond that is Inf; nothing skips such a step, so the weights "
            "take it.", {"step": step, "precision": "fp16", "loss_scale": "none"},
            "use dynamic loss scaling (loss_scale='auto', the default for fp16), or precision='bf16' "
            "(float32's range)", step=step))

    def _check_loss_scale(self, step):
        """GN208: the loss scale at its floor and the recent steps all skipped."""
        sc = getattr(self.trainer, "loss_scaler", None)
        if sc is None or not sc.at_floor or sc.skipped_in_a_row < 2:
            return
        self._emit(Finding(
            "error", "GN208-loss-scale-floor",
            f"the loss scale is at its floor ({sc.scale:g}) and the last {sc.skipped_in_a_row} steps were all "
            f"skipped ({sc.skipped} of {sc.steps} in all): the gradients are not finite even at the smallest "
            "scale, so the weights no longer change.",
            {"scale": sc.scale, "min_scale": sc.min_scale, "skipped_in_a_row": sc.skipped_in_a_row,
             "skipped": sc.skipped, "steps": sc.steps},
            "the overflow is not the loss scale's to fix: look for activations beyond fp16's 65504 in the forward "
            "pass (unnormalized inputs, a diverged run: lower the lr), or use precision='bf16'", step=step))

    # ------------------------------------------------------------ attribution
    def _non_finite(self, step, what, bad=None):
        """GN201 with the layer(s) holding NaN/Inf and the last good checkpoint (a sync, once)."""
        if bad is None:
            bad = [n for n, p in self.trainer.model.named_parameters()
                   if not np.isfinite(host(p.data)).all()]  # sync: failure path only
        evidence = {"step": step, "last_good_step": self._last_good_step,
                    "non_finite_params": len(bad), "first_non_finite": bad[0] if bad else "-"}
        growth = self._fastest_growing()
        if growth:
            evidence["fastest_growing_grad"], evidence["grad_growth"] = growth
        return Finding("error", "GN201-non-finite",
                       f"training diverged at step {step}: {what}"
                       f"{'; parameters holding NaN/Inf now: ' + ', '.join(bad[:4]) if bad else ''}.{self._checkpoint_note()}",
                       evidence, f"lower the learning rate (lr={float(self.trainer.optimizer.lr):g}) "
                       "or clip gradients; resume from the last good checkpoint", step=step)

    def _fastest_growing(self):
        """(param, last/first sampled gradient norm) of the fastest-growing weight, or None."""
        if not self._first_norms or not self._last_norms:
            return None
        growth = {n: self._last_norms[n] / f for n, f in self._first_norms.items()
                  if f > 0 and math.isfinite(self._last_norms.get(n, math.nan))}
        return max(growth.items(), key=lambda kv: kv[1]) if growth else None

    def _checkpoint_note(self) -> str:
        if self._ckpt is None:
            return ""
        path = self._ckpt.last_path
        try:
            header, _ = read_checkpoint(path)
        except CheckpointError:
            return " No checkpoint was written before this point."
        at = header.get("meta", {}).get("global_step")
        return f" Last good checkpoint: {path} (step {at})."
