// One optimizer step over a flat parameter buffer: SGD (momentum, Nesterov, weight decay)
// and Adam / AdamW (amsgrad), with an optional low-precision copy of the updated weights
// written in the same pass (float32 master weights -> fp16 or bf16 compute weights).
//
// Shapes and layout: every array is a flat, contiguous run of n elements: the parameters of
// one parameter group inside a model's flat buffer (gpunet/nn/flat.py). T = float (entries
// *_f32) or double (*_f64); n < 2^63.
//   sgd_step_*   w: T[n] (updated), g: T[n], v: T[n] or null (no momentum), lp: short[n] or null
//   adam_step_*  w: T[n] (updated), g: T[n], m, v: T[n], vmax: T[n] or null (no amsgrad), lp
// lp receives the bits of the updated w in IEEE half (LP_FP16) or bfloat16 (LP_BF16), rounded
// to nearest even; NaN stays NaN and overflow becomes inf, as NumPy's and ml_dtypes' casts.
//
// Every element follows the per-parameter optimizers' arithmetic (gpunet/optim/sgd.py, adam.py)
// operation for operation, with the same host-computed constants, so float64 results agree
// with them to rounding (bit for bit without FMA contraction):
//   SGD:   g' = w·wd + g;  v = v·mom + (1−damp)·g'  (v = g' on the first step with V_FROM_GRAD);
//          d = v·mom + g' (Nesterov) or v;  w = w − d·lr        (no momentum: d = g')
//   Adam:  w = w·decay (AdamW: decay = 1 − lr·wd);  g' = w·wd + g (Adam's L2, wd = 0 for AdamW)
//          m = m·b1 + g'·(1−b1);  v = v·b2 + (g'·g')·(1−b2);  vmax = max(vmax, v) (amsgrad)
//          w = w − (m / (√v̂ / bc2 + eps))·step_size,  bc2 = √(1−b2ᵗ), step_size = lr/(1−b1ᵗ)
//
// Launch: 1-D grid-stride, any blockDim (the wrappers use 256) and any grid. Scalar,
// coalesced loads: the step is bandwidth-bound and needs no alignment beyond T's.
//
// Compiled by NVRTC (no includes, no host code): nvcc -cubin -arch=sm_80 / sm_90 also works.

#define SGD_MOMENTUM 1
#define SGD_NESTEROV 2
#define SGD_V_FROM_GRAD 4
#define SGD_L2 8
#define ADAM_AMSGRAD 1
#define ADAM_L2 2
#define LP_FP16 16
#define LP_BF16 32

// float -> IEEE binary16 bits, round to nearest even.
__device__ __forceinline__ unsigned int f32_to_f16_bits(float f) {
    const unsigned int x = __float_as_uint(f);
    const unsigned int sign = (x >> 16) & 0x8000u;
    const unsigned int ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return sign | 0x7e00u;               // NaN (quiet)
    if (ax >= 0x47800000u) return sign | 0x7c00u;              // >= 65536 or inf: inf
    if (ax < 0x38800000u) {                                    // below 2^-14: subnormal or zero
        if (ax < 0x33000000u) return sign;                     // below 2^-25: rounds to 0
        const unsigned int e = ax >> 23;
        const unsigned int mant = (ax & 0x7fffffu) | 0x800000u;
        const unsigned int shift = 126u - e;                   // 14..24
        unsigned int r = mant >> shift;
        const unsigned int rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return sign | r;
    }
    unsigned int h = (ax - 0x38000000u) >> 13;                 // rebias 127 -> 15
    const unsigned int rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;    // may carry into the exponent / to inf
    return sign | h;
}

// float -> bfloat16 bits, round to nearest even.
__device__ __forceinline__ unsigned int f32_to_bf16_bits(float f) {
    const unsigned int x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (x >> 16) | 0x40u;   // NaN (quiet)
    return (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
}

template <typename T>
__device__ __forceinline__ void store_lp(short* lp, long long i, T w, int flags) {
    if (flags & LP_FP16) lp[i] = (short)f32_to_f16_bits((float)w);
    else if (flags & LP_BF16) lp[i] = (short)f32_to_bf16_bits((float)w);
}

template <typename T>
__device__ __forceinline__ void sgd_step(T* w, const T* g, T* v, short* lp, long long n, T lr, T momentum,
                                         T one_minus_dampening, T weight_decay, int flags) {
    const long long nth = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += nth) {
        T wi = w[i];
        T gi = g[i];
        if (flags & SGD_L2) gi = wi * weight_decay + gi;
        T d = gi;
        if (flags & SGD_MOMENTUM) {
            T vi;
            if (flags & SGD_V_FROM_GRAD) vi = gi;
            else vi = v[i] * momentum + one_minus_dampening * gi;
            v[i] = vi;
            d = (flags & SGD_NESTEROV) ? vi * momentum + gi : vi;
        }
        wi = wi - d * lr;
        w[i] = wi;
        store_lp<T>(lp, i, wi, flags);
    }
}

template <typename T>
__device__ __forceinline__ void adam_step(T* w, const T* g, T* m, T* v, T* vmax, short* lp, long long n,
                                          T decay, T weight_decay, T beta1, T one_minus_beta1, T beta2,
                                          T one_minus_beta2, T bc2, T eps, T step_size, int flags) {
    const long long nth = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += nth) {
        T wi = w[i] * decay;
        T gi = g[i];
        if (flags & ADAM_L2) gi = wi * weight_decay + gi;
        const T mi = m[i] * beta1 + gi * one_minus_beta1;
        T vi = v[i] * beta2 + (gi * gi) * one_minus_beta2;
        m[i] = mi;
        v[i] = vi;
        if (flags & ADAM_AMSGRAD) {
            const T vm = vmax[i];
            vi = vm > vi ? vm : vi;
            vmax[i] = vi;
        }
        const T denom = sqrt(vi) / bc2 + eps;
        wi = wi - (mi / denom) * step_size;
        w[i] = wi;
        store_lp<T>(lp, i, wi, flags);
    }
}

#define FUSED_OPTIM_ENTRIES(SUF, T)                                                                   \
    extern "C" __global__ void sgd_step_##SUF(T* w, const T* g, T* v, short* lp, long long n, T lr,    \
                                              T momentum, T one_minus_dampening, T weight_decay,       \
                                              int flags) {                                             \
        sgd_step<T>(w, g, v, lp, n, lr, momentum, one_minus_dampening, weight_decay, flags);           \
    }                                                                                                 \
    extern "C" __global__ void adam_step_##SUF(T* w, const T* g, T* m, T* v, T* vmax, short* lp,       \
                                               long long n, T decay, T weight_decay, T beta1,          \
                                               T one_minus_beta1, T beta2, T one_minus_beta2, T bc2,   \
                                               T eps, T step_size, int flags) {                        \
        adam_step<T>(w, g, m, v, vmax, lp, n, decay, weight_decay, beta1, one_minus_beta1, beta2,     \
                     one_minus_beta2, bc2, eps, step_size, flags);                                     \
    }

FUSED_OPTIM_ENTRIES(f32, float)
FUSED_OPTIM_ENTRIES(f64, double)
