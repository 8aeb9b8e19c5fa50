"""Where a training step's time goes: each top-level layer's forward and backward, both sides.

    gpunet bench train --workloads tf-cifar10-cnn --threads 1,2 --layers

Both sides are built afresh from the same weights (as for the timing) and run `--layer-steps`
steps after two untimed ones; every figure is the median over those steps, in ms.

gpunet: each top-level layer of the Sequential gets its `forward`, `backward` and
`backward_fused` wrapped on the instance, so the model's own code path runs unchanged and
each call is timed between two device syncs (no-ops on the CPU). A layer whose backward is
fused with the layer before it (pooling after a ReLU) gets the pair's time, and the earlier
layer is marked `"backward_in": <index>`.

PyTorch: forward between a forward pre-hook and a forward hook of each module. Backward from
full-backward pre-hooks, which fire when the gradient of a module's output is ready: module
i's backward is the time from its pre-hook to the pre-hook of module i-1 (its weight
gradients are accumulated inside that interval: the autograd engine runs AccumulateGrad
first), and the first module's runs to the end of the backward pass (a callback queued on
the autograd engine). Full-backward *post*
hooks are not used: on the first module, whose input needs no gradient, PyTorch fires them
before the weight gradient is computed. The hooks add small autograd nodes of their own.

On both sides, `step_ms` is the whole step (loss and optimizer included), `layers_ms` the
layers' sum and `rest_ms` what the layers do not account for (loss, optimizer, zeroing, the
profiling's own overhead): each a median over steps of that step's figure.
"""
from __future__ import annotations

import statistics
import time
import warnings

PROFILE_WARMUP = 2
LAYER_STEPS = 10  # profiled steps per side unless --layer-steps says otherwise


def _name(layer) -> str:
    text = repr(layer).splitlines()[0]
    return text if len(text) <= 72 else type(layer).__name__


def _summary(per_step: list, names: list, totals: list, method: str, backward_in=None) -> dict:
    """Medians over steps of {index: {"forward": s, "backward": s}} dicts, in ms."""
    rows = []
    for i, name in enumerate(names):
        fwd = statistics.median(s[i]["forward"] for s in per_step) * 1e3
        bwd = statistics.median(s[i]["backward"] for s in per_step) * 1e3
        row = {"index": i, "layer": name, "forward_ms": round(fwd, 4), "backward_ms": round(bwd, 4)}
        if backward_in and i in backward_in:
            row["backward_in"] = backward_in[i]
        rows.append(row)
    sums = [sum(a["forward"] + a["backward"] for a in s) for s in per_step]  # per step, not medians
    ms = {"step_ms": totals, "layers_ms": sums, "rest_ms": [t - u for t, u in zip(totals, sums)]}
    return {"method": method, "steps": len(totals),
            **{k: round(statistics.median(v) * 1e3, 4) for k, v in ms.items()}, "layers": rows}


def profile_gpunet(model, step, pool, sync, steps: int, clock=time.perf_counter) -> dict:
    """Per-layer forward/backward ms of gpunet's `step` on `model` (a Sequential)."""
    layers = list(model)
    acc = [{"forward": 0.0, "backward": 0.0} for _ in layers]
    backward_in = {}
    timer = clock

    depth = [0]  # a wrapped call inside another (a fused backward calling backward) counts once

    def timed(i, phase, fn, fused=False):
        def call(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            try:
                sync()
                t0 = timer()
                out = fn(*args, **kwargs)
                sync()
                acc[i][phase] += timer() - t0
            finally:
                depth[0] -= 1
            if fused:
                backward_in[i - 1] = i
            return out
        return call

    patched = []
    for i, layer in enumerate(layers):
        if layer in layers[:i]:
            continue  # the same module twice: its calls are counted at its first position
        patches = {"forward": timed(i, "forward", layer.forward),
                   "backward": timed(i, "backward", layer.backward),
                   "backward_fused": timed(i, "backward", layer.backward_fused, fused=True)}
        for attr, fn in patches.items():
            object.__setattr__(layer, attr, fn)
        patched.append(layer)
    per_step, totals = [], []
    try:
        for k in range(PROFILE_WARMUP + steps):
            for a in acc:
                a["forward"] = a["backward"] = 0.0
            sync()
            t0 = timer()
            step(*pool[k % len(pool)])
            sync()
            if k >= PROFILE_WARMUP:
                totals.append(timer() - t0)
                per_step.append([dict(a) for a in acc])
    finally:
        for layer in patched:
            for attr in ("forward", "backward", "backward_fused"):
                layer.__dict__.pop(attr, None)
    return _summary(per_step, [_name(m) for m in layers], totals,
                    "each top-level layer's forward/backward/backward_fused timed between device syncs",
                    backward_in)


def profile_torch(tmodel, step, pool, sync, steps: int, clock=time.perf_counter) -> dict:
    """Per-module forward/backward ms of PyTorch's `step` on `tmodel` (a torch Sequential)."""
    import torch
    modules = list(tmodel)
    n = len(modules)
    fwd_start, fwd = [0.0] * n, [0.0] * n
    pre = [None] * n
    timer = clock
    handles = []

    def on_forward_pre(i):
        def hook(module, inputs):
            sync()
            fwd_start[i] = timer()
        return hook

    def on_forward(i):
        def hook(module, inputs, output):
            sync()
            fwd[i] += timer() - fwd_start[i]
        return hook

    ends = []

    def stamp_end():
        sync()
        ends.append(timer())

    def on_backward_pre(i):
        def hook(module, grad_output):
            sync()
            pre[i] = timer()
            if not ends_queued:  # the engine calls it once this backward pass has finished
                ends_queued.append(True)
                torch.autograd.Variable._execution_engine.queue_callback(stamp_end)
        return hook

    ends_queued = []

    for i, m in enumerate(modules):
        handles += [m.register_forward_pre_hook(on_forward_pre(i)), m.register_forward_hook(on_forward(i)),
                    m.register_full_backward_pre_hook(on_backward_pre(i))]
    per_step, totals = [], []
    with warnings.catch_warnings():  # the hooks fire as documented; PyTorch warns on the first module
        warnings.filterwarnings("ignore", message="Full backward hook is firing", category=UserWarning)
        try:
            for k in range(PROFILE_WARMUP + steps):
                fwd[:] = [0.0] * n
                pre[:] = [None] * n
                ends.clear()
                ends_queued.clear()
                sync()
                t0 = timer()
                step(*pool[k % len(pool)])
                sync()
                if k < PROFILE_WARMUP:
                    continue
                totals.append(timer() - t0)
                bwd = [0.0] * n
                for i in range(n):  # module i's backward: from its pre-hook to the next one to fire
                    if pre[i] is None:
                        continue  # no gradient flowed through it
                    later = [pre[j] for j in range(i) if pre[j] is not None]
                    bwd[i] = (later[-1] if later else ends[-1]) - pre[i]
                per_step.append([{"forward": fwd[i], "backward": bwd[i]} for i in range(n)])
        finally:
            for h in handles:
                h.remove()
    return _summary(per_step, [_name(m) for m in modules], totals,
                    "forward: forward pre-hook to forward hook; backward: full-backward pre-hook of "
                    "module i to that of module i-1 (the first module: to the end of the backward pass)")


def profile(w, dev, args, with_torch: bool, build_sides, batches) -> dict:
    """{"gpunet": profile, "torch": profile}: fresh models from the same weights, same batches."""
    from .train_sides import synchronizer
    models = {}
    sides = build_sides(w, dev, args.seed, with_torch, prec=getattr(args, "precision", "fp32"),
                        models_out=models)
    data, _ = batches(w, dev, args.pool, args.seed, with_torch)
    steps = getattr(args, "layer_steps", None) or LAYER_STEPS
    out = {"gpunet": profile_gpunet(models["gpunet"], sides["gpunet"][0], data["gpunet"],
                                    synchronizer("gpunet", dev), steps)}
    if with_torch:
        out["torch"] = profile_torch(models["torch"], sides["torch"][0], data["torch"],
                                     synchronizer("torch", dev), steps)
    return out
