// A CUDA host emulator: what gpunet's kernels use, for the host C++ compiler.
//
// Included before a kernels/*.cu file (unmodified). Every thread of a block is a fiber
// with its own stack (its locals are its registers); the scheduler runs the fibers of a
// block in thread order, each until it blocks, so
//   * __syncthreads waits until every thread of the block arrives (an exited thread, or a
//     block whose threads wait at different barriers, is reported, not hung);
//   * a warp of 32 lanes exchanges values only at __shfl_xor_sync / __ballot_sync /
//     __syncwarp: every lane named in the mask must arrive at the same kind of collective
//     with the same mask and value width, or the launch fails naming the lanes;
//   * __shared__ variables are per-instantiation statics: blocks run one after another, so
//     a read before this block wrote them sees the previous block's values (or zeros);
//   * atomics are exact (one OS thread runs all fibers; switches happen only at
//     collectives), so they cannot show contention.
// Device memory is host memory between PROT_NONE guard pages (tests/cuda_emu/device.py);
// an access beyond an allocation's end (or before its start, by placement) is a SIGSEGV
// that the launcher turns into an error naming the block and thread. Misaligned
// vector loads trap through -fsanitize=alignment (SIGILL), like the GPU's misaligned
// address error.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

// ---------------------------------------------------------------- qualifiers
#define __device__
#define __host__
#define __forceinline__ inline
#ifdef EMU_SCAN   // preprocess only: tests/cuda_emu/build.py finds the entries and their bounds
#define __global__ EMU_GLOBAL
#define __launch_bounds__(...) EMU_LB(__VA_ARGS__)
#else
#define __global__
#define __launch_bounds__(...)
#endif
#define __restrict__ __restrict
#define __shared__ static

// ---------------------------------------------------------------- vector types
struct __attribute__((aligned(16))) float4 { float x, y, z, w; };
struct __attribute__((aligned(8))) float2 { float x, y; };
struct __attribute__((aligned(16))) double2 { double x, y; };
struct __attribute__((aligned(16))) int4 { int x, y, z, w; };
struct uint3 { unsigned int x, y, z; };
struct dim3 { unsigned int x, y, z; };

namespace emu {

enum Wait { RUNNING = 0, AT_SYNCTHREADS, AT_WARP, DONE };
enum Coll { C_NONE = 0, C_SHFL_XOR, C_SHFL, C_BALLOT, C_SYNCWARP, C_ANY, C_ALL };

struct Fiber {
    void* sp;          // saved stack pointer while switched out
    char* stack;       // base of this fiber's stack
    uint3 tidx;        // threadIdx
    int linear;        // linear thread index in the block
    int wait;          // Wait
};

struct WarpState {
    unsigned arrived;       // lanes waiting at the pending collective
    unsigned exited;        // lanes that have returned
    unsigned exists;        // lanes that exist (partial last warp)
    int kind;               // Coll of the pending collective
    unsigned mask;          // its mask
    int width;              // value size in bytes
    uint64_t in[32];        // lane payloads
    int arg[32];            // lane parameter (xor offset, source lane)
    uint64_t out[32];       // results, written by the lane that completes the collective
};

extern Fiber* cur;          // the running fiber
extern uint3 g_block;
extern dim3 g_grid, g_bdim;

[[noreturn]] void fail(const char* fmt, ...);
void block_wait(int what);   // mark current fiber waiting and switch to the scheduler
WarpState& warp_of(int linear);
const char* coll_name(int kind);

template <typename T> inline uint64_t bits_of(T v) { uint64_t b = 0; memcpy(&b, &v, sizeof(T)); return b; }
template <typename T> inline T from_bits(uint64_t b) { T v; memcpy(&v, &b, sizeof(T)); return v; }

// Arrive at a warp collective; returns this lane's result once every lane of `mask` has arrived.
uint64_t warp_collective(int kind, unsigned mask, uint64_t payload, int width, int arg);

void syncthreads();

}  // namespace emu

#define threadIdx (emu::cur->tidx)
#define blockIdx (emu::g_block)
#define blockDim (emu::g_bdim)
#define gridDim (emu::g_grid)
#define warpSize 32

// ---------------------------------------------------------------- half and bfloat16
// What kernels use of cuda_fp16.h / cuda_bf16.h (tests/cuda_emu/cuda_fp16.h and cuda_bf16.h
// forward here, so `#include <cuda_fp16.h>` works in a kernel under the emulator too).
// Storage is the 16-bit pattern. Conversions round as the GPU's cvt instructions do:
//   float -> half / bf16: round to nearest even (_rn, and the constructors and assignments
//     from float), or toward zero (_rz); overflow goes to inf (rn) or the largest finite (rz);
//     half keeps its subnormals; a NaN becomes the canonical NaN 0x7fff (CUDA's, where NumPy
//     and ml_dtypes keep the sign and payload: compare NaNs by isnan);
//   half / bf16 -> float: exact (NaN payloads kept, as F16C and NumPy do).
//   double -> half / bf16: rounded once (through a float rounded to odd).
// Integers (from their exact double; long long beyond 2^53 rounds twice) likewise.
// Arithmetic operators and __hadd & co. compute in float and round once to the type: what
// "convert, compute in float, convert back" gives; a product of two halves or bf16s is exact
// in float, so __hmul is exact-then-rounded as on the GPU (a sum or quotient may round twice).
struct __half_raw { unsigned short x; };
struct __nv_bfloat16_raw { unsigned short x; };

namespace emu {
inline unsigned short f2h_rn(float f) {
    const uint32_t u = bits_of(f) & 0xffffffffu, sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7fff;                    // NaN
    if (a >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);   // >= 65520 (and inf): inf
    if (a >= 0x38800000u) {                                // >= 2^-14: a normal half
        const uint32_t mant = a & 0x7fffffu, rem = mant & 0x1fffu;
        uint32_t h = ((((a >> 23) - 112u)) << 10) | (mant >> 13);
        if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;   // a carry moves into the exponent
        return (unsigned short)(sign | h);
    }
    if (a <= 0x33000000u) return (unsigned short)sign;     // <= 2^-25: ties to even, 0
    const uint32_t mant = (a & 0x7fffffu) | 0x800000u;     // a subnormal half: units of 2^-24
    const int shift = 126 - (int)(a >> 23);                // 14 .. 24
    uint32_t h = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (h & 1u))) ++h;
    return (unsigned short)(sign | h);
}
inline unsigned short f2h_rz(float f) {
    const uint32_t u = bits_of(f) & 0xffffffffu, sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7fff;
    if (a == 0x7f800000u) return (unsigned short)(sign | 0x7c00u);
    if (a >= 0x47800000u) return (unsigned short)(sign | 0x7bffu);   // >= 65536: the largest finite
    if (a >= 0x38800000u) return (unsigned short)(sign | ((((a >> 23) - 112u)) << 10) | ((a & 0x7fffffu) >> 13));
    if (a < 0x33800000u) return (unsigned short)sign;      // < 2^-24
    return (unsigned short)(sign | (((a & 0x7fffffu) | 0x800000u) >> (126 - (int)(a >> 23))));
}
inline float h2f(unsigned short h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return from_bits<float>(sign | 0x7f800000u | (m << 13));   // inf, NaN (payload kept)
    if (e) return from_bits<float>(sign | ((e + 112u) << 23) | (m << 13));
    const float v = (float)m * 5.9604644775390625e-8f;    // subnormal: m * 2^-24, exact
    return sign ? -v : v;
}
inline unsigned short f2bf_rn(float f) {
    const uint32_t u = (uint32_t)bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);   // overflow carries into inf
}
inline unsigned short f2bf_rz(float f) {
    const uint32_t u = (uint32_t)bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    return (unsigned short)(u >> 16);
}
inline float bf2f(unsigned short b) { return from_bits<float>((uint32_t)b << 16); }
// double -> float rounded to odd (truncate, then set the last bit if inexact): rounding that
// float to half or bf16 then equals rounding the double once, as CUDA's __double2half does.
inline float d2f_odd(double d) {
    float f = (float)d;
    if (d != d || (double)f == d) return f;
    if (fabs((double)f) > fabs(d)) f = nextafterf(f, 0.0f);
    return from_bits<float>((uint32_t)bits_of(f) | 1u);
}
}  // namespace emu

struct __half {
    unsigned short __x;
    __half() = default;
    __half(const __half_raw& r) : __x(r.x) {}
    __half(float f) : __x(emu::f2h_rn(f)) {}
    __half(double f) : __x(emu::f2h_rn(emu::d2f_odd(f))) {}
    __half(int v) : __x(emu::f2h_rn(emu::d2f_odd((double)v))) {}
    __half(unsigned int v) : __x(emu::f2h_rn(emu::d2f_odd((double)v))) {}
    __half(long long v) : __x(emu::f2h_rn(emu::d2f_odd((double)v))) {}
    __half(unsigned long long v) : __x(emu::f2h_rn(emu::d2f_odd((double)v))) {}
    __half(short v) : __x(emu::f2h_rn(emu::d2f_odd((double)v))) {}
    __half(unsigned short v) : __x(emu::f2h_rn(emu::d2f_odd((double)v))) {}
    __half& operator=(const __half_raw& r) { __x = r.x; return *this; }
    __half& operator=(float f) { __x = emu::f2h_rn(f); return *this; }
    __half& operator=(double f) { __x = emu::f2h_rn(emu::d2f_odd(f)); return *this; }
    operator __half_raw() const { __half_raw r; r.x = __x; return r; }
    operator float() const { return emu::h2f(__x); }
};
struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(const __nv_bfloat16_raw& r) : __x(r.x) {}
    __nv_bfloat16(float f) : __x(emu::f2bf_rn(f)) {}
    __nv_bfloat16(double f) : __x(emu::f2bf_rn(emu::d2f_odd(f))) {}
    __nv_bfloat16(int v) : __x(emu::f2bf_rn(emu::d2f_odd((double)v))) {}
    __nv_bfloat16(unsigned int v) : __x(emu::f2bf_rn(emu::d2f_odd((double)v))) {}
    __nv_bfloat16(long long v) : __x(emu::f2bf_rn(emu::d2f_odd((double)v))) {}
    __nv_bfloat16(unsigned long long v) : __x(emu::f2bf_rn(emu::d2f_odd((double)v))) {}
    __nv_bfloat16(short v) : __x(emu::f2bf_rn(emu::d2f_odd((double)v))) {}
    __nv_bfloat16(unsigned short v) : __x(emu::f2bf_rn(emu::d2f_odd((double)v))) {}
    __nv_bfloat16& operator=(const __nv_bfloat16_raw& r) { __x = r.x; return *this; }
    __nv_bfloat16& operator=(float f) { __x = emu::f2bf_rn(f); return *this; }
    __nv_bfloat16& operator=(double f) { __x = emu::f2bf_rn(emu::d2f_odd(f)); return *this; }
    operator __nv_bfloat16_raw() const { __nv_bfloat16_raw r; r.x = __x; return r; }
    operator float() const { return emu::bf2f(__x); }
};
typedef __half half;
typedef __nv_bfloat16 nv_bfloat16;
struct __attribute__((aligned(4))) __half2 { __half x, y; };
struct __attribute__((aligned(4))) __nv_bfloat162 { __nv_bfloat16 x, y; };
typedef __half2 half2;
typedef __nv_bfloat162 nv_bfloat162;
static_assert(sizeof(__half) == 2 && sizeof(__nv_bfloat16) == 2 && sizeof(__half2) == 4 &&
              sizeof(__nv_bfloat162) == 4, "16-bit float layout");

// Conversions (cuda_fp16.h / cuda_bf16.h names).
inline float __half2float(__half h) { return emu::h2f(h.__x); }
inline __half __ushort_as_half(unsigned short v) { __half h; h.__x = v; return h; }
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
inline __half __short_as_half(short v) { return __ushort_as_half((unsigned short)v); }
inline short __half_as_short(__half h) { return (short)h.__x; }
inline __half __float2half(float f) { return __ushort_as_half(emu::f2h_rn(f)); }
inline __half __float2half_rn(float f) { return __ushort_as_half(emu::f2h_rn(f)); }
inline __half __float2half_rz(float f) { return __ushort_as_half(emu::f2h_rz(f)); }
inline __half __double2half(double f) { return __ushort_as_half(emu::f2h_rn(emu::d2f_odd(f))); }
inline float __low2float(__half2 v) { return __half2float(v.x); }
inline float __high2float(__half2 v) { return __half2float(v.y); }
inline __half __low2half(__half2 v) { return v.x; }
inline __half __high2half(__half2 v) { return v.y; }
inline __half2 __halves2half2(__half a, __half b) { __half2 r; r.x = a; r.y = b; return r; }
inline __half2 __half2half2(__half a) { return __halves2half2(a, a); }
inline __half2 __floats2half2_rn(float a, float b) { return __halves2half2(__float2half_rn(a), __float2half_rn(b)); }
inline __half2 __float22half2_rn(float2 v) { return __floats2half2_rn(v.x, v.y); }
inline float2 __half22float2(__half2 v) { float2 r; r.x = __low2float(v); r.y = __high2float(v); return r; }

inline float __bfloat162float(__nv_bfloat16 h) { return emu::bf2f(h.__x); }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short v) { __nv_bfloat16 h; h.__x = v; return h; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.__x; }
inline __nv_bfloat16 __short_as_bfloat16(short v) { return __ushort_as_bfloat16((unsigned short)v); }
inline short __bfloat16_as_short(__nv_bfloat16 h) { return (short)h.__x; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __ushort_as_bfloat16(emu::f2bf_rn(f)); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __ushort_as_bfloat16(emu::f2bf_rn(f)); }
inline __nv_bfloat16 __float2bfloat16_rz(float f) { return __ushort_as_bfloat16(emu::f2bf_rz(f)); }
inline __nv_bfloat16 __double2bfloat16(double f) { return __ushort_as_bfloat16(emu::f2bf_rn(emu::d2f_odd(f))); }
inline float __low2float(__nv_bfloat162 v) { return __bfloat162float(v.x); }
inline float __high2float(__nv_bfloat162 v) { return __bfloat162float(v.y); }
inline __nv_bfloat16 __low2bfloat16(__nv_bfloat162 v) { return v.x; }
inline __nv_bfloat16 __high2bfloat16(__nv_bfloat162 v) { return v.y; }
inline __nv_bfloat162 __halves2bfloat162(__nv_bfloat16 a, __nv_bfloat16 b) { __nv_bfloat162 r; r.x = a; r.y = b; return r; }
inline __nv_bfloat162 __bfloat162bfloat162(__nv_bfloat16 a) { return __halves2bfloat162(a, a); }
inline __nv_bfloat162 __floats2bfloat162_rn(float a, float b) {
    return __halves2bfloat162(__float2bfloat16_rn(a), __float2bfloat16_rn(b));
}
inline __nv_bfloat162 __float22bfloat162_rn(float2 v) { return __floats2bfloat162_rn(v.x, v.y); }
inline float2 __bfloat1622float2(__nv_bfloat162 v) { float2 r; r.x = __low2float(v); r.y = __high2float(v); return r; }

// Classification and arithmetic (in float, rounded once to the type).
#define EMU_HALF_OPS(H, TOF, FROMF)                                                                 \
    inline bool __hisnan(H a) { float f = TOF(a); return f != f; }                                  \
    inline int __hisinf(H a) { float f = TOF(a); return f == INFINITY ? 1 : f == -INFINITY ? -1 : 0; } \
    inline H __habs(H a) { H r = a; r.__x &= 0x7fffu; return r; }                                   \
    inline H __hneg(H a) { H r = a; r.__x ^= 0x8000u; return r; }                                   \
    inline H __hadd(H a, H b) { return FROMF(TOF(a) + TOF(b)); }                                    \
    inline H __hsub(H a, H b) { return FROMF(TOF(a) - TOF(b)); }                                    \
    inline H __hmul(H a, H b) { return FROMF(TOF(a) * TOF(b)); }                                    \
    inline H __hdiv(H a, H b) { return FROMF(TOF(a) / TOF(b)); }                                    \
    inline H __hmax(H a, H b) { float x = TOF(a), y = TOF(b); return x != x ? b : y != y ? a : x > y ? a : b; } \
    inline H __hmin(H a, H b) { float x = TOF(a), y = TOF(b); return x != x ? b : y != y ? a : x < y ? a : b; } \
    inline bool __heq(H a, H b) { return TOF(a) == TOF(b); }                                        \
    inline bool __hne(H a, H b) { return TOF(a) != TOF(b); }                                        \
    inline bool __hlt(H a, H b) { return TOF(a) < TOF(b); }                                         \
    inline bool __hle(H a, H b) { return TOF(a) <= TOF(b); }                                        \
    inline bool __hgt(H a, H b) { return TOF(a) > TOF(b); }                                         \
    inline bool __hge(H a, H b) { return TOF(a) >= TOF(b); }                                        \
    inline H operator+(H a, H b) { return __hadd(a, b); }                                           \
    inline H operator-(H a, H b) { return __hsub(a, b); }                                           \
    inline H operator*(H a, H b) { return __hmul(a, b); }                                           \
    inline H operator/(H a, H b) { return __hdiv(a, b); }                                           \
    inline H operator-(H a) { return __hneg(a); }                                                   \
    inline H operator+(H a) { return a; }                                                           \
    inline H& operator+=(H& a, H b) { return a = __hadd(a, b); }                                    \
    inline H& operator-=(H& a, H b) { return a = __hsub(a, b); }                                    \
    inline H& operator*=(H& a, H b) { return a = __hmul(a, b); }                                    \
    inline H& operator/=(H& a, H b) { return a = __hdiv(a, b); }                                    \
    inline bool operator==(H a, H b) { return __heq(a, b); }                                        \
    inline bool operator!=(H a, H b) { return __hne(a, b); }                                        \
    inline bool operator<(H a, H b) { return __hlt(a, b); }                                         \
    inline bool operator<=(H a, H b) { return __hle(a, b); }                                        \
    inline bool operator>(H a, H b) { return __hgt(a, b); }                                         \
    inline bool operator>=(H a, H b) { return __hge(a, b); }
EMU_HALF_OPS(__half, __half2float, __float2half_rn)
EMU_HALF_OPS(__nv_bfloat16, __bfloat162float, __float2bfloat16_rn)
#undef EMU_HALF_OPS

// ---------------------------------------------------------------- intrinsics
inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::warp_collective(emu::C_SYNCWARP, mask, 0, 0, 0); }
inline void __threadfence() {}
inline void __threadfence_block() {}

template <typename T> inline T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = 32) {
    static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
    if (width != 32) emu::fail("__shfl_xor_sync: width %d is not emulated (only 32)", width);
    return emu::from_bits<T>(emu::warp_collective(emu::C_SHFL_XOR, mask, emu::bits_of(v), (int)sizeof(T), laneMask));
}
template <typename T> inline T __shfl_sync(unsigned mask, T v, int srcLane, int width = 32) {
    if (width != 32) emu::fail("__shfl_sync: width %d is not emulated (only 32)", width);
    return emu::from_bits<T>(emu::warp_collective(emu::C_SHFL, mask, emu::bits_of(v), (int)sizeof(T), srcLane));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)emu::warp_collective(emu::C_BALLOT, mask, pred ? 1 : 0, 4, 0);
}
inline int __any_sync(unsigned mask, int pred) { return (int)emu::warp_collective(emu::C_ANY, mask, pred ? 1 : 0, 4, 0); }
inline int __all_sync(unsigned mask, int pred) { return (int)emu::warp_collective(emu::C_ALL, mask, pred ? 1 : 0, 4, 0); }

inline float __int_as_float(int v) { return emu::from_bits<float>((uint32_t)v); }
inline int __float_as_int(float v) { return (int)(uint32_t)emu::bits_of(v); }
inline float __uint_as_float(unsigned v) { return emu::from_bits<float>(v); }
inline unsigned __float_as_uint(float v) { return (uint32_t)emu::bits_of(v); }
inline double __longlong_as_double(long long v) { return emu::from_bits<double>((uint64_t)v); }
inline long long __double_as_longlong(double v) { return (long long)emu::bits_of(v); }
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __clz(int v) { return v ? __builtin_clz((unsigned)v) : 32; }

// Atomics: one OS thread runs every fiber and switches only at collectives, so a plain
// read-modify-write is atomic here.
#define EMU_ATOMIC(T)                                                                         \
    inline T atomicAdd(T* a, T v) { T o = *a; *a = o + v; return o; }                         \
    inline T atomicExch(T* a, T v) { T o = *a; *a = v; return o; }                            \
    inline T atomicCAS(T* a, T c, T v) { T o = *a; if (o == c) *a = v; return o; }
EMU_ATOMIC(int)
EMU_ATOMIC(unsigned int)
EMU_ATOMIC(unsigned long long)
EMU_ATOMIC(float)
EMU_ATOMIC(double)
#define EMU_ATOMIC_MINMAX(T)                                                                  \
    inline T atomicMin(T* a, T v) { T o = *a; if (v < o) *a = v; return o; }                  \
    inline T atomicMax(T* a, T v) { T o = *a; if (v > o) *a = v; return o; }
EMU_ATOMIC_MINMAX(int)
EMU_ATOMIC_MINMAX(unsigned int)
EMU_ATOMIC_MINMAX(unsigned long long)
EMU_ATOMIC_MINMAX(long long)
