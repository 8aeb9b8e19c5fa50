// ReLU / LeakyReLU backward and the 1-bit ReLU mask.
//
// Shapes and layout: every array is a flat, contiguous run of n elements (any tensor shape,
// C order). T = float (entries *_f32), double (*_f64), __half (*_f16) or __nv_bfloat16
// (*_bf16); n < 2^63. Half and bf16 compare and multiply in float32; a selected dy passes
// through bit for bit, slope · dy is rounded once to T (round to nearest even).
//   relu_backward_*        dx[i] = y[i] > 0 ? dy[i] : 0            (dy, y, dx: T[n])
//   leaky_relu_backward_*  dx[i] = x[i] > 0 ? dy[i] : slope * dy[i] (dy, x, dx: T[n]; slope:
//                                                                     float, or double for f64)
//   relu_pack_mask_*       mask[w] bit b = (y[32w + b] > 0)          (y: T[n], mask: u32[ceil(n/32)])
//   relu_backward_mask_*   dx[i] = bit i%32 of mask[i/32] ? dy[i] : 0
// ReLU uses a select, not dy * (y > 0), so dy = NaN or Inf where y <= 0 gives 0, as
// PyTorch's threshold_backward does. dx may be dy itself (in place).
//
// Launch: 1-D grid-stride, any blockDim (the wrappers use 256) and any grid.
// Vector width: 16 bytes (float4 = 4 floats, double2 = 2 doubles, 8 halves or bf16s). When
// `vec` is set, all the T arrays of the call share the same address offset modulo 16 (the
// wrapper checks); the first threads then handle a scalar head up to the first 16-byte
// boundary, the grid strides over the 16-byte vectors, and a scalar tail finishes. With
// vec = 0 everything runs scalar (still coalesced).
// relu_pack_mask: one warp per 32-bit word (__ballot_sync), grid-stride over words; blockDim
// must be a multiple of 32.
//
// Compiled by NVRTC (no host code; cuda_fp16.h and cuda_bf16.h come with the CUDA headers
// CuPy puts on the include path): nvcc -cubin -arch=sm_80 / sm_90 also works.

#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef unsigned long long u64;

// Storage type T, compute type A (float for the 16-bit types), 16-byte vector V of VW elements.
template <typename T> struct Io;
template <> struct Io<float> {
    typedef float A; typedef float4 V; static const int VW = 4;
    static __device__ __forceinline__ float ld(float v) { return v; }
    static __device__ __forceinline__ float st(float v) { return v; }
};
template <> struct Io<double> {
    typedef double A; typedef double2 V; static const int VW = 2;
    static __device__ __forceinline__ double ld(double v) { return v; }
    static __device__ __forceinline__ double st(double v) { return v; }
};
template <> struct Io<__half> {
    typedef float A; typedef float4 V; static const int VW = 8;
    static __device__ __forceinline__ float ld(__half v) { return __half2float(v); }
    static __device__ __forceinline__ __half st(float v) { return __float2half_rn(v); }
};
template <> struct Io<__nv_bfloat16> {
    typedef float A; typedef float4 V; static const int VW = 8;
    static __device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
    static __device__ __forceinline__ __nv_bfloat16 st(float v) { return __float2bfloat16_rn(v); }
};

// The element-wise rules. `i` is the flat element index (used by the mask variant).
template <typename T> struct ReluOp {
    __device__ __forceinline__ T operator()(T dy, T yi, long long) const {
        return Io<T>::ld(yi) > 0 ? dy : Io<T>::st(0);
    }
};
template <typename T> struct LeakyOp {
    typename Io<T>::A slope;
    __device__ __forceinline__ T operator()(T dy, T xi, long long) const {
        return Io<T>::ld(xi) > 0 ? dy : Io<T>::st(slope * Io<T>::ld(dy));
    }
};
template <typename T> struct MaskOp {
    const unsigned int* mask;
    __device__ __forceinline__ T operator()(T dy, T, long long i) const {
        return ((mask[i >> 5] >> (i & 31)) & 1u) ? dy : Io<T>::st(0);
    }
};

// dx[i] = op(dy[i], aux[i], i) over [0, n): scalar head, vector body, scalar tail.
// aux is y or x; the mask variant passes aux = dy and ignores it.
template <typename T, typename Op>
__device__ __forceinline__ void elementwise(const T* dy, const T* aux, T* dx, long long n, int vec, const Op& op) {
    typedef typename Io<T>::V V;
    const int VW = Io<T>::VW;
    const long long tid = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long nth = (long long)gridDim.x * blockDim.x;
    long long head = 0, nvec = 0;
    if (vec) {
        head = (long long)(((16u - ((unsigned)(u64)dy & 15u)) & 15u) / sizeof(T));
        if (head > n) head = n;
        nvec = (n - head) / VW;
    }
    if (tid < head) dx[tid] = op(dy[tid], aux[tid], tid);
    const V* dyv = reinterpret_cast<const V*>(dy + head);
    const V* auxv = reinterpret_cast<const V*>(aux + head);
    V* dxv = reinterpret_cast<V*>(dx + head);
    for (long long k = tid; k < nvec; k += nth) {
        const V a = dyv[k];
        const V b = auxv[k];
        V r;
        const T* ae = reinterpret_cast<const T*>(&a);
        const T* be = reinterpret_cast<const T*>(&b);
        T* re = reinterpret_cast<T*>(&r);
#pragma unroll
        for (int q = 0; q < VW; ++q) re[q] = op(ae[q], be[q], head + k * VW + q);
        dxv[k] = r;
    }
    for (long long i = head + nvec * VW + tid; i < n; i += nth) dx[i] = op(dy[i], aux[i], i);
}

// One warp builds one 32-bit word per iteration; lane b supplies bit b.
template <typename T>
__device__ __forceinline__ void pack_mask(const T* y, unsigned int* mask, long long n) {
    const int lane = threadIdx.x & 31;
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const long long nwarps = ((long long)gridDim.x * blockDim.x) >> 5;
    const long long nwords = (n + 31) >> 5;
    for (long long w = warp; w < nwords; w += nwarps) {   // w is uniform across the warp
        const long long i = (w << 5) + lane;
        const bool on = i < n && Io<T>::ld(y[i]) > 0;
        const unsigned int word = __ballot_sync(0xffffffffu, on);
        if (lane == 0) mask[w] = word;
    }
}

#define RELU_ENTRIES(SUF, T)                                                                          \
    extern "C" __global__ void relu_backward_##SUF(const T* dy, const T* y, T* dx, long long n, int vec) { \
        ReluOp<T> op;                                                                                 \
        elementwise<T>(dy, y, dx, n, vec, op);                                                        \
    }                                                                                                 \
    extern "C" __global__ void leaky_relu_backward_##SUF(const T* dy, const T* x, T* dx,              \
                                                         typename Io<T>::A slope, long long n, int vec) { \
        LeakyOp<T> op; op.slope = slope;                                                              \
        elementwise<T>(dy, x, dx, n, vec, op);                                                        \
    }                                                                                                 \
    extern "C" __global__ void relu_pack_mask_##SUF(const T* y, unsigned int* mask, long long n) {    \
        pack_mask<T>(y, mask, n);                                                                     \
    }                                                                                                 \
    extern "C" __global__ void relu_backward_mask_##SUF(const T* dy, const unsigned int* mask, T* dx, \
                                                        long long n, int vec) {                       \
        MaskOp<T> op; op.mask = mask;                                                                 \
        elementwise<T>(dy, dy, dx, n, vec, op);                                                       \
    }

RELU_ENTRIES(f32, float)
RELU_ENTRIES(f64, double)
RELU_ENTRIES(f16, __half)
RELU_ENTRIES(bf16, __nv_bfloat16)
