"""Single- against multi-device training, side by side: the same model, data and seed.

Each configuration is (N replicas, reduce, which batch is kept, lr scaling):
- keep="global":  the global batch stays B; each replica gets B/N.  With reduce="mean"
  this is *the same mathematics* as one device at B (gn.parallel's exactness).
- keep="replica": each replica keeps B, so the global batch grows to N·B; with "mean"
  and the same lr the run takes N× fewer, less noisy steps per epoch.
- reduce="sum":   the gradient is N× the mean's, i.e. an N× larger step under SGD.
- lr_scaling="linear": lr × N (optionally with warmup), Goyal et al. (2017).

`run_config` trains one configuration and returns its record; `compare` runs them
all, `conclusion` states what the numbers show.
"""
from __future__ import annotations

import dataclasses
import time

from . import losses, optim
from .train import Trainer


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One configuration of the grid: replicas, reduce, which batch is kept, lr scaling, warmup."""

    replicas: int = 1
    reduce: str = "mean"
    keep: str = "global"          # "global" or "replica"
    lr_scaling: str = "none"
    warmup_epochs: float = 0.0
    processes: bool = False       # True: N real processes (MPI ranks), not N replicas in one process

    @property
    def label(self) -> str:
        if self.replicas == 1:
            return "1 device"
        scaled = "" if self.lr_scaling == "none" else f", lr×{self.replicas}" + (
            f" +{self.warmup_epochs:g} ep warmup" if self.warmup_epochs else "")
        kind = f"{self.replicas} processes" if self.processes else f"{self.replicas}×"
        return f"{kind}, {self.reduce}, {self.keep} batch kept{scaled}"

    @property
    def ran_as(self) -> str:
        if self.replicas == 1:
            return "1 process"
        return f"{self.replicas} MPI processes" if self.processes else f"{self.replicas} replicas in 1 process"


def configurations(replicas=(1, 2, 4), reduces=("mean", "sum"), keeps=("global", "replica"),
                   scalings=("none",), warmup_epochs=0.0, processes=False):
    """The grid: one single-device baseline, then every combination for N > 1
    (as N real processes when `processes`)."""
    out = [RunSpec()] if 1 in replicas else []
    for n in (r for r in replicas if r > 1):
        for reduce in reduces:
            for keep in keeps:
                for scaling in scalings:
                    out.append(RunSpec(n, reduce, keep, scaling, warmup_epochs if scaling != "none" else 0.0,
                                      processes))
    return out


def run_config(cfg: RunSpec, train, test, make_model, batch_size, lr, momentum=0.9, epochs=3,
               device="cpu", devices=None, seed=0, dtype="float32", return_model=False, comm=None):
    """Train one configuration; returns its per-epoch curves and summary numbers
    (and the trained model too, as (record, model), when `return_model`). With `comm`
    (a multi-process communicator) this process is one of cfg.replicas ranks."""
    model = make_model()
    model.to(devices[0] if devices else device, dtype=dtype)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    devs = list(devices[:cfg.replicas]) if devices else [device] * cfg.replicas
    if comm is not None:
        devs = [device]
    global_batch = batch_size if cfg.keep == "global" else batch_size * cfg.replicas
    trainer = Trainer(model, losses.SoftmaxCrossEntropy(), opt, device=devs[0], seed=seed,
                      devices=devs if cfg.replicas > 1 else None, reduce=cfg.reduce,
                      lr_scaling=cfg.lr_scaling, warmup_epochs=cfg.warmup_epochs, comm=comm)
    t0 = time.perf_counter()
    history = trainer.fit(train, epochs, global_batch, val=test)
    seconds = time.perf_counter() - t0
    test_acc = history.val_accuracy
    effective_lr = trainer.base_lr * (cfg.replicas if cfg.reduce == "sum" else 1)
    record = {
        "label": cfg.label, "ran_as": cfg.ran_as, **dataclasses.asdict(cfg), "global_batch": global_batch,
        "per_replica_batch": global_batch // cfg.replicas, "lr": trainer.base_lr, "effective_lr": effective_lr,
        "steps_per_epoch": -(-len(train) // global_batch),
        "final_test_accuracy": test_acc[-1], "best_test_accuracy": max(test_acc),
        "final_loss": history.loss[-1], "seconds_per_epoch": seconds / epochs,
        "samples_per_s": sum(history.samples_per_s) / epochs,
        "curves": {"loss": history.loss, "test_accuracy": test_acc},
    }
    return (record, model) if return_model else record


def compare(configs, train, test, make_model, **kw) -> list:
    return [run_config(c, train, test, make_model, **kw) for c in configs]


def conclusion(records) -> str:
    """A paragraph from the numbers: mean/global ≈ baseline, sum ≈ bigger steps, bigger batches."""
    base = next((r for r in records if r["replicas"] == 1), None)
    if base is None:
        return "No single-device baseline was run, so nothing is compared against one device."
    parts = [f"One device reached {base['final_test_accuracy']:.4f} test accuracy."]
    for r in records:
        if r["replicas"] == 1:
            continue
        delta = r["final_test_accuracy"] - base["final_test_accuracy"]
        if r["reduce"] == "mean" and r["keep"] == "global" and r["lr_scaling"] == "none":
            why = ("the same global batch and lr, so the same gradient (equal to 1e-12 in float64); in float32 "
                   "the sums' different order changes the last bits, and training can amplify that")
        elif r["reduce"] == "sum" and r["lr_scaling"] == "none":
            why = f"summed gradients make each step {r['replicas']}× larger (effective lr {r['effective_lr']:g})"
        elif r["keep"] == "replica" and r["lr_scaling"] == "none":
            why = (f"the global batch grew to {r['global_batch']} at the same lr, so there are "
                   f"{r['steps_per_epoch']} steps per epoch instead of {base['steps_per_epoch']}")
        else:
            why = f"global batch {r['global_batch']} at lr {r['lr']:g}"
        parts.append(f"{r['label']}: {r['final_test_accuracy']:.4f} ({delta:+.4f}); {why}.")
    return " ".join(parts)
