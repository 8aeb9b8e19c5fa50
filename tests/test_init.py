"""Initializers: empirical moments and limits against their formulas (with bounds that a
wrong fan or a wrong constant breaks), PyTorch fans, seeding, lookup errors, callables."""
import math

import numpy as np
import pytest

import gpunet as gn
from gpunet import backend
from gpunet.nn import init

LINEAR = (300, 200)          # (out, in): fan_in 200, fan_out 300; 60,000 samples
CONV = (40, 30, 5, 5)        # fan_in 30·25 = 750, fan_out 40·25 = 1000; 30,000 samples
TRUNC_STD = 0.87962566103423978  # std of N(0, 1) truncated to [−2, 2]

# name -> (distribution, scale from (fan_in, fan_out)): std for normals, limit for uniforms
FORMULAS = {
    "glorot_uniform": ("uniform", lambda fi, fo: math.sqrt(6 / (fi + fo))),
    "glorot_normal": ("normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    "he_uniform": ("uniform", lambda fi, fo: math.sqrt(6 / fi)),
    "he_normal": ("normal", lambda fi, fo: math.sqrt(2 / fi)),
    "lecun_normal": ("normal", lambda fi, fo: math.sqrt(1 / fi)),
    "uniform": ("uniform", lambda fi, fo: 0.05),
    "normal": ("normal", lambda fi, fo: 0.05),
    "truncated_normal": ("truncated", lambda fi, fo: 0.05),
}


def test_fans_follow_pytorch():
    assert init.compute_fans(LINEAR) == (200, 300)
    assert init.compute_fans(CONV) == (750, 1000)
    assert init.compute_fans((7,)) == (7, 7)


@pytest.mark.parametrize("shape", [LINEAR, CONV], ids=["linear", "conv"])
@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_empirical_moments_match_formula(name, shape):
    kind, scale_of = FORMULAS[name]
    scale = scale_of(*init.compute_fans(shape))
    w = init.initialize(name, shape, dtype="float64")
    n = w.size
    assert w.shape == shape and w.dtype == np.float64
    if kind == "uniform":
        std = scale / math.sqrt(3)
        assert np.abs(w).max() <= scale and np.abs(w).max() > 0.999 * scale  # fills up to the limit
    elif kind == "truncated":
        std = scale * TRUNC_STD
        assert np.abs(w).max() <= 2 * scale
    else:
        std = scale
        assert np.abs(w).max() > 3.5 * std  # untruncated tails reach past 3.5σ in 30,000 draws
    # 5 standard errors: of the mean (σ/√n) and of the std (≈ σ/√(2n) for these light tails).
    assert abs(w.mean()) < 5 * std / math.sqrt(n)
    assert abs(w.std() / std - 1) < 5 / math.sqrt(2 * n)


def test_constants():
    assert (init.initialize("zeros", (3, 2)) == 0).all()
    assert (init.initialize("ones", (3, 2)) == 1).all()
    assert (init.initialize(init.constant(0.1), (4,)) == np.float32(0.1)).all()
    assert (init.initialize(init.get("constant", value=-2.0), (4,)) == -2).all()
    assert (init.initialize("constant", (2,)) == 0).all()  # by name: value 0


def test_factories_take_options_and_uncalled_factory_uses_defaults():
    w = init.initialize(init.uniform(2.0, 3.0), (1000,), dtype="float64")
    assert w.min() >= 2.0 and w.max() < 3.0
    w = init.initialize(init.normal(5.0, 0.1), (10000,), dtype="float64")
    assert abs(w.mean() - 5.0) < 5 * 0.1 / 100
    w = init.initialize(init.uniform, (1000,))  # the factory itself, uncalled
    assert np.abs(w).max() <= 0.05
    with pytest.raises(gn.GpunetValueError, match=r"uniform: expected low < high, got low=1.0, high=0.0"):
        init.uniform(1.0, 0.0)
    with pytest.raises(gn.GpunetValueError, match=r"normal: std expected a number > 0, got -1"):
        init.normal(0.0, -1)


def test_default_dtype_is_float32_and_layers_cast_on_to():
    layer = gn.nn.Linear(4, 3)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    assert (backend.to_numpy(layer.bias.data) == 0).all()  # bias_init="zeros"
    assert gn.nn.Linear(4, 3, bias_init="ones").bias.data.sum() == 3
    layer.to(dtype="float64")
    assert layer.weight.dtype == np.float64 and layer.weight.grad.dtype == np.float64


def test_layer_defaults_use_documented_initializers():
    gn.manual_seed(5)
    w = gn.nn.Linear(200, 300).weight.data
    assert np.abs(w).max() <= math.sqrt(6 / 500) and np.abs(w).max() > 0.99 * math.sqrt(6 / 500)
    gn.manual_seed(5)
    e = gn.nn.Embedding(100, 300).weight.data.astype(np.float64)
    assert abs(e.std() - 1.0) < 5 / math.sqrt(2 * e.size)  # N(0, 1) like PyTorch


def test_manual_seed_determinism(dev):
    gn.manual_seed(123)
    a = gn.nn.Conv2d(3, 4, 3, init="he_normal")
    gn.manual_seed(123)
    b = gn.nn.Conv2d(3, 4, 3, init="he_normal").to(dev)
    np.testing.assert_array_equal(a.weight.data, backend.to_numpy(b.weight.data))  # same on CPU and GPU
    c = gn.nn.Conv2d(3, 4, 3, init="he_normal")
    assert not np.array_equal(a.weight.data, c.weight.data)  # the stream moves on


def test_unknown_name_lists_valid_names():
    with pytest.raises(gn.GpunetValueError) as e:
        init.get("xavier_uniform")
    msg = str(e.value)
    assert "'xavier_uniform'" in msg
    for name in init.NAMES:
        assert repr(name) in msg
    with pytest.raises(gn.GpunetTypeError, match="expected an initializer name"):
        init.get(3.5)
    with pytest.raises(gn.GpunetValueError, match="'zeros' takes no options"):
        init.get("zeros", value=1)


def test_custom_callable_gets_numpy_and_host_rng():
    seen = {}

    def custom(shape, xp, rng):
        seen.update(shape=shape, xp=xp, rng=rng)
        return xp.full(shape, 0.25)

    layer = gn.nn.Linear(3, 2, init=custom)
    assert seen["shape"] == (2, 3) and seen["xp"] is np and seen["rng"] is backend.host_rng()
    assert (layer.weight.data == 0.25).all() and layer.weight.dtype == np.float32


def test_custom_callable_errors():
    with pytest.raises(gn.GpunetValueError, match=r"init: initializer 'bad' returned shape \(3, 2\), "
                                                  r"expected \(2, 3\)"):
        def bad(shape, xp, rng):
            return xp.zeros(shape[::-1])
        gn.nn.Linear(3, 2, init=bad)
    with pytest.raises(gn.GpunetValueError, match="non-finite"):
        gn.nn.Linear(3, 2, init=lambda shape, xp, rng: xp.full(shape, np.nan))
    with pytest.raises(gn.GpunetValueError, match="failed for shape"):
        gn.nn.Linear(3, 2, init=lambda shape, xp, rng: 1 / 0)


def test_callable_result_is_copied():
    buf = np.ones((2, 3), dtype=np.float32)
    layer = gn.nn.Linear(3, 2, init=lambda shape, xp, rng: buf)
    buf[:] = 7
    assert (layer.weight.data == 1).all()
