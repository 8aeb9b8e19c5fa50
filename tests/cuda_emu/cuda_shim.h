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
