// Fused softmax cross-entropy: per-row loss, argmax and dlogits in one kernel.
//
// Shapes and layout (all C-contiguous, row-major):
//   logits      (N, C)  T = float, double, __half or __nv_bfloat16   (entries ce_*_f32_*, _f64_,
//                       _f16_, _bf16_); A = the compute type: double for double, else float
//   target      (N,)    int32 / int64 hard labels       (entries *_i32, *_i64)
//               (N, C)  T soft targets                  (entries *_soft)
//   out         (N, C)  T  dlogits; may be the logits buffer itself (in place)
//   row_loss    (N,)    A  per-row loss (0 for ignored rows, NaN for bad labels)
//   row_correct (N,)    int32, 1 where argmax(logits) == label (written if CE_WANT_CORRECT)
//   err         1 x u64 error slot, holds (row << 32 | uint32(value)) of the first bad label
//   n_valid     0-d int64 on the device, the number of non-ignored rows (divisor for mean)
//   eps, grad_scale     A
//   N < 2^31, 1 <= C < 2^31.
// Half and bf16 logits and targets are widened to float as they are read; every statistic,
// the loss and the gradient are float, and dlogits is rounded once to T (nearest even).
//
// Maths, per row with smoothing eps, a1 = 1 - eps, t' = a1*t + eps/C (hard: t = one_hot(y)):
//   m = max_j x_j, s = sum_j exp(x_j - m)  (online, Milakov & Gimelshein 2018), logs = log(s)
//   loss = sum_j t'_j (m + logs - x_j)
//        = S*logs + a1*sum_j t_j (m - x_j) + eps*(m - mean_j x_j),  S = sum_j t'_j
//   dlogits_j = scale * (S * exp(x_j - m - logs) - t'_j),   scale = grad_scale [/ n_valid]
// For hard labels S = 1. For soft targets S = a1*sum(t) + eps, so the gradient is exact
// even when a target row does not sum to 1. Probabilities are never stored.
// Sums of x and t*x are taken relative to the row's first logit, so |x| ~ 1e4 loses no
// precision to cancellation.
//
// Memory passes: the logits are read once for the statistics (max, sum-exp, argmax and
// the target sums) and once more to write dlogits. For C <= 1024 a row is a few KB and
// the second read hits L1/L2. For large C the second pass walks the row backwards so that
// it starts with the lines the first pass touched last (still in L2). Eval mode
// (no CE_WANT_GRAD) reads the logits exactly once.
//
// Launch:
//   ce_small_*: C <= 1024. blockDim 256; `tpr` (a power of two <= 32) threads per row,
//               256/tpr rows per block, grid = ceil(N / (256/tpr)). Rows reduce with
//               warp shuffles inside their lane group.
//   ce_large_*: C > 1024. One block per row (grid = N), blockDim a multiple of 32 <= 1024.
//               Warp shuffles, then each thread merges the per-warp partials from shared
//               memory (static, 32 entries).
// Vector width: 16 bytes (float4 = 4 floats, double2 = 2 doubles, 8 halves or bf16s) when
// CE_VEC is set, i.e. logits, out and soft target share the same address offset modulo 16;
// each row then has a scalar head up to the first 16-byte boundary, a vector body and a
// scalar tail.
//
// Non-finite logits (as PyTorch and the twin): a NaN or +inf logit makes the row's loss and
// dlogits row NaN; -inf logits are masked out (an all -inf row is NaN, 0/0). argmax counts
// NaN as the maximum (first NaN wins), as NumPy and PyTorch do.
//
// Labels: a label equal to ignore_index (when CE_HAS_IGNORE) gives loss 0, correct 0 and a
// zero dlogits row. A label outside [0, C) is never used as an index: the row gets a NaN
// loss and a NaN dlogits row, and atomicMin on `err` records the smallest bad row with
// its value clamped to int32. The host sets *err to 0x7fff...ffff before use.
//
// Compiled by NVRTC (no host code; cuda_fp16.h and cuda_bf16.h come with the CUDA headers
// CuPy puts on the include path): nvcc -cubin -arch=sm_80 / sm_90 also works.

#include <cuda_fp16.h>
#include <cuda_bf16.h>

typedef unsigned long long u64;

#define CE_WANT_GRAD 1
#define CE_HAS_IGNORE 2
#define CE_MEAN 4
#define CE_WANT_CORRECT 8
#define CE_VEC 16

// Storage type T: its compute type A, 16-byte vector V of VW elements, load (ld) and store (st).
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

// Compute type T = float or double.
template <typename T> struct Num;
template <> struct Num<float> {
    static __device__ __forceinline__ float inf() { return __int_as_float(0x7f800000); }
    static __device__ __forceinline__ float nan() { return __int_as_float(0x7fffffff); }
    static __device__ __forceinline__ float ex(float x) { return expf(x); }
    static __device__ __forceinline__ float lg(float x) { return logf(x); }
};
template <> struct Num<double> {
    static __device__ __forceinline__ double inf() { return __longlong_as_double(0x7ff0000000000000LL); }
    static __device__ __forceinline__ double nan() { return __longlong_as_double(0x7ff8000000000000LL); }
    static __device__ __forceinline__ double ex(double x) { return exp(x); }
    static __device__ __forceinline__ double lg(double x) { return log(x); }
};

// Running statistics of (part of) one row. Plain struct: it lives in shared memory too.
template <typename T> struct Acc {
    T m;      // running max
    T s;      // sum of exp(x - m)
    T sx;     // sum of (x - xref)
    T st;     // sum of t            (soft only)
    T stx;    // sum of t*(x - xref) (soft only)
    T tm;     // max of t            (soft only)
    int idx;  // first argmax of x over the non-NaN elements
    int nidx; // first NaN of x (argmax counts NaN as the maximum, as NumPy and PyTorch do)
    int tidx; // first argmax of t   (soft only)
};

template <typename T> __device__ __forceinline__ Acc<T> acc_empty() {
    Acc<T> a;
    a.m = -Num<T>::inf(); a.s = T(0); a.sx = T(0); a.st = T(0); a.stx = T(0);
    a.tm = -Num<T>::inf(); a.idx = 0x7fffffff; a.nidx = 0x7fffffff; a.tidx = 0x7fffffff;
    return a;
}

// Add element j (logit x, target t). Exactly one exp per element. Equal values add 1
// without an exp, so a leading run of -inf (masked) logits never computes exp(-inf + inf).
template <typename T, bool SOFT>
__device__ __forceinline__ void acc_add(Acc<T>& a, T x, T t, int j, T xref) {
    if (x > a.m) {
        a.s = a.s * Num<T>::ex(a.m - x) + T(1);
        a.m = x; a.idx = j;
    } else {
        a.s += (x == a.m) ? T(1) : Num<T>::ex(x - a.m);   // NaN x makes s NaN
        if (x == a.m && j < a.idx) a.idx = j;
        if (x != x && j < a.nidx) a.nidx = j;
    }
    const T d = x - xref;
    a.sx += d;
    if (SOFT) {
        a.st += t; a.stx += (t != T(0)) ? t * d : T(0);   // 0 * log(0): a zero target masks a -inf logit
        if (t > a.tm || (t == a.tm && j < a.tidx)) { a.tm = t; a.tidx = j; }
    }
}

// Merge b into a. Symmetric (the same result for merge(a, b) and merge(b, a)), so every
// lane of a butterfly reduction ends with bit-identical statistics.
template <typename T, bool SOFT>
__device__ __forceinline__ void acc_merge(Acc<T>& a, const Acc<T>& b) {
    const T m = (b.m > a.m) ? b.m : a.m;   // m is never NaN: only ever set from x > m
    a.s = (a.m == m ? a.s : a.s * Num<T>::ex(a.m - m)) + (b.m == m ? b.s : b.s * Num<T>::ex(b.m - m));
    if (b.m > a.m || (b.m == a.m && b.idx < a.idx)) a.idx = b.idx;
    if (b.nidx < a.nidx) a.nidx = b.nidx;
    a.m = m;
    a.sx += b.sx;
    if (SOFT) {
        a.st += b.st; a.stx += b.stx;
        if (b.tm > a.tm || (b.tm == a.tm && b.tidx < a.tidx)) { a.tm = b.tm; a.tidx = b.tidx; }
    }
}

template <typename T, bool SOFT>
__device__ __forceinline__ Acc<T> acc_shfl_xor(const Acc<T>& a, int o) {
    Acc<T> b;
    b.m = __shfl_xor_sync(0xffffffffu, a.m, o);
    b.s = __shfl_xor_sync(0xffffffffu, a.s, o);
    b.sx = __shfl_xor_sync(0xffffffffu, a.sx, o);
    b.idx = __shfl_xor_sync(0xffffffffu, a.idx, o);
    b.nidx = __shfl_xor_sync(0xffffffffu, a.nidx, o);
    if (SOFT) {
        b.st = __shfl_xor_sync(0xffffffffu, a.st, o);
        b.stx = __shfl_xor_sync(0xffffffffu, a.stx, o);
        b.tm = __shfl_xor_sync(0xffffffffu, a.tm, o);
        b.tidx = __shfl_xor_sync(0xffffffffu, a.tidx, o);
    } else {
        b.st = T(0); b.stx = T(0); b.tm = -Num<T>::inf(); b.tidx = 0x7fffffff;
    }
    return b;
}

// Number of scalar elements before xr reaches a 16-byte boundary (at most len).
template <typename T> __device__ __forceinline__ int head_len(const T* xr, int len) {
    const int h = (int)(((16u - ((unsigned)(u64)xr & 15u)) & 15u) / sizeof(T));
    return h < len ? h : len;
}

// Pass 1: statistics over elements [0, len) of one row, strided over `nth` threads.
template <typename T, bool SOFT>
__device__ __forceinline__ void row_stats(const T* xr, const T* tr, int len, bool vec, typename Io<T>::A xref,
                                          int tid, int nth, Acc<typename Io<T>::A>& a) {
    typedef Io<T> I;
    typedef typename I::A A;
    typedef typename I::V V;
    const int VW = I::VW;
    const int h = vec ? head_len(xr, len) : 0;
    const int nv = vec ? (len - h) / VW : 0;
    for (int j = tid; j < h; j += nth) acc_add<A, SOFT>(a, I::ld(xr[j]), SOFT ? I::ld(tr[j]) : A(0), j, xref);
    const V* xv = reinterpret_cast<const V*>(xr + h);
    const V* tv = reinterpret_cast<const V*>(tr + h);
#pragma unroll 4
    for (int k = tid; k < nv; k += nth) {
        const V v = xv[k];
        V w = v;
        if (SOFT) w = tv[k];
        const T* e = reinterpret_cast<const T*>(&v);
        const T* f = reinterpret_cast<const T*>(&w);
#pragma unroll
        for (int q = 0; q < VW; ++q) acc_add<A, SOFT>(a, I::ld(e[q]), SOFT ? I::ld(f[q]) : A(0), h + k * VW + q, xref);
    }
    for (int j = h + nv * VW + tid; j < len; j += nth) acc_add<A, SOFT>(a, I::ld(xr[j]), SOFT ? I::ld(tr[j]) : A(0), j, xref);
}

// What pass 2 writes: mode 0 the gradient, otherwise the constant `fill` (0 or NaN).
template <typename T> struct GradArgs {
    T m, logs, S, a1, a0, scale, fill;
    int y, mode;
};

template <typename T, bool SOFT>
__device__ __forceinline__ T grad_elem(const GradArgs<T>& g, T x, T t, int j) {
    if (g.mode) return g.fill;
    const T p = Num<T>::ex((x - g.m) - g.logs);
    const T tj = SOFT ? g.a1 * t + g.a0 : (j == g.y ? g.a1 + g.a0 : g.a0);
    return g.scale * (g.S * p - tj);
}

// Pass 2: write dlogits for elements [0, C). The vector body runs backwards (see header).
template <typename T, bool SOFT>
__device__ __forceinline__ void row_grad(const T* xr, const T* tr, T* gr, int C, bool vec,
                                         int tid, int nth, const GradArgs<typename Io<T>::A>& g) {
    typedef Io<T> I;
    typedef typename I::A A;
    typedef typename I::V V;
    const int VW = I::VW;
    const int h = vec ? head_len(xr, C) : 0;
    const int nv = vec ? (C - h) / VW : 0;
    for (int j = tid; j < h; j += nth) gr[j] = I::st(grad_elem<A, SOFT>(g, I::ld(xr[j]), SOFT ? I::ld(tr[j]) : A(0), j));
    const V* xv = reinterpret_cast<const V*>(xr + h);
    const V* tv = reinterpret_cast<const V*>(tr + h);
    V* gv = reinterpret_cast<V*>(gr + h);
    if (tid < nv) {
#pragma unroll 4
        for (int k = tid + ((nv - 1 - tid) / nth) * nth; k >= 0; k -= nth) {
            const V v = xv[k];
            V w = v;
            if (SOFT) w = tv[k];
            const T* e = reinterpret_cast<const T*>(&v);
            const T* f = reinterpret_cast<const T*>(&w);
            V o;
            T* oe = reinterpret_cast<T*>(&o);
#pragma unroll
            for (int q = 0; q < VW; ++q)
                oe[q] = I::st(grad_elem<A, SOFT>(g, I::ld(e[q]), SOFT ? I::ld(f[q]) : A(0), h + k * VW + q));
            gv[k] = o;
        }
    }
    for (int j = h + nv * VW + tid; j < C; j += nth) gr[j] = I::st(grad_elem<A, SOFT>(g, I::ld(xr[j]), SOFT ? I::ld(tr[j]) : A(0), j));
}

// Everything about one row that does not need the reduced statistics.
// (T is the compute type here.)
template <typename T, typename L, bool SOFT>
struct RowIn {
    long long y;   // hard label (unused for soft)
    bool ignored, bad;
    int len;       // elements pass 1 reads: C, or 0 for ignored / bad rows
    T xy, xref;
};

template <typename S, typename L, bool SOFT>
__device__ __forceinline__ RowIn<typename Io<S>::A, L, SOFT> row_in(const S* xr, const L* target, long long row,
                                                                    int C, long long ignore_index, int flags) {
    typedef typename Io<S>::A T;
    RowIn<T, L, SOFT> r;
    r.y = 0; r.ignored = false; r.bad = false; r.len = C; r.xy = T(0);
    if (!SOFT) {
        r.y = (long long)target[row];
        r.ignored = (flags & CE_HAS_IGNORE) && r.y == ignore_index;
        r.bad = !r.ignored && (r.y < 0 || r.y >= (long long)C);
        if (r.ignored || r.bad) r.len = 0;
        else r.xy = Io<S>::ld(xr[r.y]);
    }
    r.xref = r.len ? Io<S>::ld(xr[0]) : T(0);
    if (!(r.xref - r.xref == T(0))) r.xref = T(0);   // inf / NaN first logit: no shift
    return r;
}

// Epilogue shared by both kernels: loss, correct flag, error slot, and pass-2 arguments
// (T is the compute type).
template <typename T, typename L, bool SOFT>
__device__ __forceinline__ GradArgs<T> row_out(const Acc<T>& a, const RowIn<T, L, SOFT>& r, long long row,
                                               int C, T eps, T grad_scale, const long long* n_valid,
                                               int flags, bool leader, T* row_loss, int* row_correct,
                                               u64* err) {
    GradArgs<T> g;
    g.m = a.m; g.logs = Num<T>::lg(a.s); g.a1 = T(1) - eps; g.a0 = eps / T(C);
    g.y = (int)r.y; g.mode = 0; g.fill = T(0);
    g.scale = grad_scale;
    if (flags & CE_MEAN) g.scale = grad_scale / (T)(*n_valid);
    const T mshift = a.m - r.xref;                   // m - xref, exact when close
    T smooth = T(0);
    if (eps != T(0)) smooth = eps * (mshift - a.sx / T(C));
    const int amax = a.nidx != 0x7fffffff ? a.nidx : a.idx;
    T loss;
    int correct;
    if (r.ignored) {
        loss = T(0); correct = 0; g.mode = 1;
    } else if (r.bad) {
        loss = Num<T>::nan(); correct = 0; g.mode = 2; g.fill = Num<T>::nan();
    } else if (a.m == Num<T>::inf()) {   // a +inf logit: NaN loss and row, as PyTorch and the twin
        loss = Num<T>::nan(); correct = SOFT ? (amax == a.tidx) : (amax == r.y); g.mode = 2; g.fill = Num<T>::nan();
    } else if (SOFT) {
        g.S = g.a1 * a.st + eps;
        loss = g.S * g.logs + g.a1 * (mshift * a.st - a.stx) + smooth;
        correct = (amax == a.tidx);
    } else {
        g.S = T(1);
        loss = g.logs + g.a1 * (a.m - r.xy) + smooth;
        correct = (amax == r.y);
    }
    if (leader) {
        row_loss[row] = loss;
        if (flags & CE_WANT_CORRECT) row_correct[row] = correct;
        if (r.bad) {
            long long v = r.y;
            if (v > 2147483647LL) v = 2147483647LL;
            if (v < -2147483648LL) v = -2147483648LL;
            atomicMin(err, ((u64)row << 32) | (u64)(unsigned int)(int)v);
        }
    }
    return g;
}

// Small C: `tpr` threads per row, rows packed 256/tpr to a block. T: storage, A: compute type.
template <typename T, typename L, bool SOFT, typename A = typename Io<T>::A>
__device__ __forceinline__ void ce_small(const T* logits, const L* target, T* out, A* row_loss,
                                         int* row_correct, u64* err, const long long* n_valid,
                                         long long N, int C, int tpr, long long ignore_index,
                                         A eps, A grad_scale, int flags) {
    const int tid = threadIdx.x & (tpr - 1);
    const long long row = (long long)blockIdx.x * (blockDim.x / tpr) + threadIdx.x / tpr;
    const bool active = row < N;   // inactive lanes still join the shuffles
    const long long base = active ? row * (long long)C : 0;
    const T* xr = logits + base;
    const T* tr = SOFT ? reinterpret_cast<const T*>(target) + base : xr;
    const bool vec = (flags & CE_VEC) != 0;
    RowIn<A, L, SOFT> r;
    if (active) r = row_in<T, L, SOFT>(xr, target, row, C, ignore_index, flags);
    else { r.y = 0; r.ignored = true; r.bad = false; r.len = 0; r.xy = A(0); r.xref = A(0); }
    Acc<A> a = acc_empty<A>();
    row_stats<T, SOFT>(xr, tr, r.len, vec, r.xref, tid, tpr, a);
    for (int o = tpr >> 1; o > 0; o >>= 1) acc_merge<A, SOFT>(a, acc_shfl_xor<A, SOFT>(a, o));
    __syncwarp();   // every read of this row happens before any in-place write below
    if (!active) return;
    const GradArgs<A> g = row_out<A, L, SOFT>(a, r, row, C, eps, grad_scale, n_valid, flags, tid == 0,
                                              row_loss, row_correct, err);
    if (flags & CE_WANT_GRAD) row_grad<T, SOFT>(xr, tr, out + base, C, vec, tid, tpr, g);
}

// Large C: one block per row. T: storage, A: compute type.
template <typename T, typename L, bool SOFT, typename A = typename Io<T>::A>
__device__ __forceinline__ void ce_large(const T* logits, const L* target, T* out, A* row_loss,
                                         int* row_correct, u64* err, const long long* n_valid,
                                         long long N, int C, long long ignore_index,
                                         A eps, A grad_scale, int flags) {
    __shared__ Acc<A> part[32];
    const int tid = threadIdx.x, nth = blockDim.x, lane = tid & 31, warp = tid >> 5;
    const long long row = blockIdx.x;
    const long long base = row * (long long)C;
    const T* xr = logits + base;
    const T* tr = SOFT ? reinterpret_cast<const T*>(target) + base : xr;
    const bool vec = (flags & CE_VEC) != 0;
    const RowIn<A, L, SOFT> r = row_in<T, L, SOFT>(xr, target, row, C, ignore_index, flags);
    Acc<A> a = acc_empty<A>();
    row_stats<T, SOFT>(xr, tr, r.len, vec, r.xref, tid, nth, a);
    for (int o = 16; o > 0; o >>= 1) acc_merge<A, SOFT>(a, acc_shfl_xor<A, SOFT>(a, o));
    if (lane == 0) part[warp] = a;
    __syncthreads();   // also orders every read of the row before the in-place writes
    a = part[0];
    for (int w = 1; w < nth / 32; ++w) acc_merge<A, SOFT>(a, part[w]);
    const GradArgs<A> g = row_out<A, L, SOFT>(a, r, row, C, eps, grad_scale, n_valid, flags, tid == 0,
                                              row_loss, row_correct, err);
    if (flags & CE_WANT_GRAD) row_grad<T, SOFT>(xr, tr, out + base, C, vec, tid, nth, g);
}

#define CE_ENTRIES(NAME, T, A, L, SOFT)                                                           \
    extern "C" __global__ void __launch_bounds__(256) ce_small_##NAME(                            \
        const T* logits, const L* target, T* out, A* row_loss, int* row_correct, u64* err,        \
        const long long* n_valid, long long N, int C, int tpr, long long ignore_index, A eps,     \
        A grad_scale, int flags) {                                                                \
        ce_small<T, L, SOFT>(logits, target, out, row_loss, row_correct, err, n_valid, N, C, tpr, \
                             ignore_index, eps, grad_scale, flags);                               \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(1024) ce_large_##NAME(                           \
        const T* logits, const L* target, T* out, A* row_loss, int* row_correct, u64* err,        \
        const long long* n_valid, long long N, int C, long long ignore_index, A eps,              \
        A grad_scale, int flags) {                                                                \
        ce_large<T, L, SOFT>(logits, target, out, row_loss, row_correct, err, n_valid, N, C,      \
                             ignore_index, eps, grad_scale, flags);                               \
    }

CE_ENTRIES(f32_i32, float, float, int, false)
CE_ENTRIES(f32_i64, float, float, long long, false)
CE_ENTRIES(f32_soft, float, float, float, true)
CE_ENTRIES(f64_i32, double, double, int, false)
CE_ENTRIES(f64_i64, double, double, long long, false)
CE_ENTRIES(f64_soft, double, double, double, true)
CE_ENTRIES(f16_i32, __half, float, int, false)
CE_ENTRIES(f16_i64, __half, float, long long, false)
CE_ENTRIES(f16_soft, __half, float, __half, true)
CE_ENTRIES(bf16_i32, __nv_bfloat16, float, int, false)
CE_ENTRIES(bf16_i64, __nv_bfloat16, float, long long, false)
CE_ENTRIES(bf16_soft, __nv_bfloat16, float, __nv_bfloat16, true)
