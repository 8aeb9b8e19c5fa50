"""Weight sharing in a Sequential: one module at several positions.

A module may sit at several positions of one Sequential (tied weights: the same Linear
applied twice). Its parameters are listed once, and every use's backward adds into the
same Parameter.grad, so the gradient is the sum over the uses. What each use's backward
needs (the per-call cache a layer keeps in plain attributes, and the scratch arrays that
cache may point into) is saved per position after that use's forward and put back
before that use's backward. Parameters, buffers and child modules are not part of it.
The state dict names the module at every position, as PyTorch's does (Module.state_dict).
"""
from __future__ import annotations

_NOT_PER_CALL = ("_params", "_buffers", "_children", "training", "device")


def shared_positions(layers) -> dict:
    where = {}
    for i, layer in enumerate(layers):
        for m in layer.modules():
            where.setdefault(id(m), (m, set()))[1].add(i)
    shared = {}
    for m, positions in where.values():
        if len(positions) > 1:
            for i in positions:
                shared.setdefault(i, []).append(m)
    return shared


def _per_call_state(m) -> dict:
    skip = set(m._params) | set(m._buffers) | set(m._children)
    return {k: v for k, v in m.__dict__.items() if k not in skip and k not in _NOT_PER_CALL}


def forward_shared(seq, shared, x):
    scratch = seq.__dict__.setdefault("_shared_scratch", {})  # per (position, module), kept across steps
    saved = {}
    for i, layer in enumerate(seq._children.values()):
        for m in shared.get(i, ()):
            object.__setattr__(m, "_scratch_bufs", scratch.setdefault((i, id(m)), {}))
        x = layer.forward(x)
        if i in shared:
            saved[i] = [(m, _per_call_state(m)) for m in shared[i]]
    object.__setattr__(seq, "_shared_calls", saved)
    return x


def backward_shared(seq, layers, dy):
    saved = seq.__dict__.get("_shared_calls") or {}
    for i in range(len(layers) - 1, -1, -1):
        for m, state in saved.get(i, ()):
            for k, v in state.items():
                object.__setattr__(m, k, v)
        dy = layers[i].backward(dy)
    return dy
