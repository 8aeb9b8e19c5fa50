// The emulator's launcher: one kernels/*.cu (EMU_CU, included unmodified after the shim),
// its entry table (EMU_KLIST, written by build.py), a fiber scheduler and a C API for ctypes.
//
//   emu_count() / emu_name(i) / emu_sig(i) / emu_bounds(i)   the entries and their parameters
//   emu_launch(i, grid[3], block[3], args, schedule, msg, msglen, fault)
//       runs the grid block by block; args[k] points at parameter k's bytes (CUDA's
//       kernelParams). Returns 0, or 1 (a semantic error: divergent collective, barrier
//       not reached, deadlock) or 2 (a fault: out-of-bounds access, misaligned vector,
//       fiber stack overflow) with a message; *fault gets the faulting address.
#include "cuda_shim.h"
#include EMU_CU

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// ---------------------------------------------------------------- context switch
#if defined(__x86_64__)
extern "C" void emu_ctx_switch(void** save_sp, void* to_sp);
asm(R"(
.text
.globl emu_ctx_switch
.hidden emu_ctx_switch
.type emu_ctx_switch,@function
emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_ctx_switch, .-emu_ctx_switch
)");
#else
#error "the CUDA emulator's fibers need x86-64 (add a context switch for this architecture)"
#endif

namespace emu {

Fiber* cur;
uint3 g_block;
dim3 g_grid, g_bdim;

static const size_t STACK = 256 * 1024;   // per fiber, plus one guard page below
static const size_t PAGE = 4096;
static std::vector<Fiber> fibers;
static char* stacks = nullptr;
static size_t stacks_len = 0;
static WarpState warps[32];
static void* sched_sp;
static int nthreads, n_done, sync_arrived;
static bool failed;
static char msg[4096];
static void (*entry)(void**);
static void** entry_args;

const char* coll_name(int kind) {
    switch (kind) {
        case C_SHFL_XOR: return "__shfl_xor_sync";
        case C_SHFL: return "__shfl_sync";
        case C_BALLOT: return "__ballot_sync";
        case C_SYNCWARP: return "__syncwarp";
        case C_ANY: return "__any_sync";
        case C_ALL: return "__all_sync";
    }
    return "?";
}

static void switch_to_scheduler() { emu_ctx_switch(&cur->sp, sched_sp); }

void fail(const char* fmt, ...) {
    int n = snprintf(msg, sizeof msg, "block (%u, %u, %u) thread (%u, %u, %u): ", g_block.x, g_block.y, g_block.z,
                     cur->tidx.x, cur->tidx.y, cur->tidx.z);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - n, fmt, ap);
    va_end(ap);
    failed = true;
    switch_to_scheduler();   // never resumed
    __builtin_unreachable();
}

WarpState& warp_of(int linear) { return warps[linear >> 5]; }

uint64_t warp_collective(int kind, unsigned mask, uint64_t payload, int width, int arg) {
    const int lane = cur->linear & 31;
    WarpState& w = warp_of(cur->linear);
    const char* name = coll_name(kind);
    if (!((mask >> lane) & 1u)) fail("%s: mask 0x%08x does not name the calling lane %d", name, mask, lane);
    if (mask & ~w.exists)
        fail("%s: mask 0x%08x names lanes 0x%08x that do not exist (blockDim = (%u, %u, %u))", name, mask,
             mask & ~w.exists, g_bdim.x, g_bdim.y, g_bdim.z);
    if (mask & w.exited)
        fail("%s: mask 0x%08x names lanes 0x%08x that have already exited: a warp collective not reached "
             "by every lane", name, mask, mask & w.exited);
    if (w.arrived) {
        if (w.kind != kind || w.mask != mask || w.width != width)
            fail("divergent warp collectives: lane %d at %s(mask 0x%08x, %d-byte value) while lanes 0x%08x "
                 "wait at %s(mask 0x%08x, %d-byte value)", lane, name, mask, width, w.arrived,
                 coll_name(w.kind), w.mask, w.width);
    } else {
        w.kind = kind; w.mask = mask; w.width = width;
    }
    w.in[lane] = payload;
    w.arg[lane] = arg;
    w.arrived |= 1u << lane;
    if ((w.arrived & mask) != mask) {
        cur->wait = AT_WARP;
        switch_to_scheduler();
        return w.out[lane];
    }
    // The last lane completes the collective for every lane of the mask.
    uint64_t ballot = 0;
    for (int l = 0; l < 32; ++l)
        if ((mask >> l) & 1u) ballot |= (w.in[l] & 1u) << l;
    for (int l = 0; l < 32; ++l) {
        if (!((mask >> l) & 1u)) continue;
        int src = l;
        switch (kind) {
            case C_SHFL_XOR: src = l ^ w.arg[l]; break;
            case C_SHFL: src = w.arg[l] & 31; break;
        }
        if (kind == C_SHFL_XOR || kind == C_SHFL) {
            if (src < 0 || src > 31) src = l;   // outside the warp: the lane's own value
            if (!((mask >> src) & 1u))
                fail("%s: lane %d reads lane %d, which is not in mask 0x%08x", name, l, src, mask);
            w.out[l] = w.in[src];
        } else if (kind == C_BALLOT) {
            w.out[l] = ballot;
        } else if (kind == C_ANY) {
            w.out[l] = ballot != 0;
        } else if (kind == C_ALL) {
            w.out[l] = ballot == (uint64_t)mask;
        } else {
            w.out[l] = 0;
        }
    }
    w.arrived = 0;
    w.kind = C_NONE;
    const int base = cur->linear & ~31;
    for (int l = 0; l < 32; ++l)
        if (((mask >> l) & 1u) && base + l != cur->linear) fibers[base + l].wait = RUNNING;
    return w.out[lane];
}

void syncthreads() {
    if (n_done)
        fail("__syncthreads reached while %d thread(s) of the block have exited: a barrier not reached "
             "by every thread", n_done);
    if (++sync_arrived == nthreads) {
        sync_arrived = 0;
        for (auto& f : fibers)
            if (f.wait == AT_SYNCTHREADS) f.wait = RUNNING;
        return;
    }
    cur->wait = AT_SYNCTHREADS;
    switch_to_scheduler();
}

static void on_exit() {
    WarpState& w = warp_of(cur->linear);
    const int lane = cur->linear & 31;
    w.exited |= 1u << lane;
    ++n_done;
    if (w.arrived && ((w.mask >> lane) & 1u))
        fail("exited while lanes 0x%08x wait at %s(mask 0x%08x): a warp collective not reached by every lane",
             w.arrived, coll_name(w.kind), w.mask);
    if (sync_arrived)
        fail("exited while %d thread(s) wait at __syncthreads: a barrier not reached by every thread",
             sync_arrived);
}

static void fiber_main() {
    entry(entry_args);
    on_exit();
    cur->wait = DONE;
    switch_to_scheduler();
    __builtin_unreachable();
}

static void init_fiber(Fiber& f) {
    // Stack top (16-aligned), then what emu_ctx_switch pops: fp control words, 6 registers, return address.
    uintptr_t top = (uintptr_t)(f.stack + STACK) & ~(uintptr_t)15;
    uint64_t* sp = (uint64_t*)top;
    *--sp = 0;                                // padding: fiber_main's entry sees rsp % 16 == 8
    *--sp = (uint64_t)(uintptr_t)&fiber_main; // return address (16-aligned slot)
    for (int i = 0; i < 6; ++i) *--sp = 0;    // rbp rbx r12 r13 r14 r15
    uint32_t cw[2];
    __asm__ volatile("stmxcsr %0" : "=m"(cw[0]));
    __asm__ volatile("fnstcw %0" : "=m"(cw[1]));
    *--sp = (uint64_t)cw[0] | ((uint64_t)(cw[1] & 0xffff) << 32);
    f.sp = sp;
    f.wait = RUNNING;
}

static std::string deadlock_report() {
    std::string s = "deadlock: no thread can run. ";
    int at_sync = 0;
    for (auto& f : fibers) at_sync += f.wait == AT_SYNCTHREADS;
    char buf[256];
    snprintf(buf, sizeof buf, "%d thread(s) wait at __syncthreads, %d exited", at_sync, n_done);
    s += buf;
    for (int wi = 0; wi * 32 < nthreads; ++wi) {
        const WarpState& w = warps[wi];
        if (!w.arrived) continue;
        snprintf(buf, sizeof buf, "; warp %d: lanes 0x%08x wait at %s(mask 0x%08x)", wi, w.arrived,
                 coll_name(w.kind), w.mask);
        s += buf;
    }
    return s;
}

static int run_block(int schedule) {
    n_done = 0;
    sync_arrived = 0;
    for (int wi = 0; wi * 32 < nthreads; ++wi) {
        WarpState& w = warps[wi];
        w.arrived = 0; w.exited = 0; w.kind = C_NONE;
        const int n = nthreads - wi * 32 < 32 ? nthreads - wi * 32 : 32;
        w.exists = n == 32 ? 0xffffffffu : ((1u << n) - 1u);
    }
    for (auto& f : fibers) init_fiber(f);
    while (n_done < nthreads) {
        bool progressed = false;
        for (int k = 0; k < nthreads; ++k) {
            Fiber& f = fibers[schedule ? nthreads - 1 - k : k];
            if (f.wait != RUNNING) continue;
            cur = &f;
            emu_ctx_switch(&sched_sp, f.sp);
            progressed = true;
            if (failed) return 1;
        }
        if (!progressed && n_done < nthreads) {
            std::string r = deadlock_report();
            snprintf(msg, sizeof msg, "block (%u, %u, %u): %s", g_block.x, g_block.y, g_block.z, r.c_str());
            return 1;
        }
    }
    return 0;
}

// ---------------------------------------------------------------- faults
static sigjmp_buf fault_jmp;
static volatile uintptr_t fault_addr;
static volatile int fault_sig, fault_write;
static char altstack[256 * 1024];

static void on_fault(int sig, siginfo_t* si, void* uc) {
    fault_sig = sig;
    fault_addr = (uintptr_t)si->si_addr;
    fault_write = 0;
#if defined(__x86_64__) && defined(REG_ERR)
    if (sig == SIGSEGV) fault_write = (((ucontext_t*)uc)->uc_mcontext.gregs[REG_ERR] & 2) != 0;
#endif
    siglongjmp(fault_jmp, 1);
}

// ---------------------------------------------------------------- entry table
template <typename T> struct TName;
#define EMU_TNAME(T) template <> struct TName<T> { static std::string s() { return #T; } };
EMU_TNAME(float) EMU_TNAME(double) EMU_TNAME(int) EMU_TNAME(unsigned int) EMU_TNAME(long long)
EMU_TNAME(unsigned long long) EMU_TNAME(bool) EMU_TNAME(char) EMU_TNAME(unsigned char) EMU_TNAME(short)
EMU_TNAME(long) EMU_TNAME(unsigned long) EMU_TNAME(unsigned short) EMU_TNAME(__half) EMU_TNAME(__nv_bfloat16)
EMU_TNAME(__half2) EMU_TNAME(__nv_bfloat162)
template <typename T> struct TName<const T> { static std::string s() { return "const " + TName<T>::s(); } };
template <typename T> struct TName<T*> { static std::string s() { return TName<T>::s() + "*"; } };

template <typename F> struct Sig;
template <typename... A> struct Sig<void (*)(A...)> {
    template <auto F, size_t... I> static void call(void** a, std::index_sequence<I...>) {
        F(*static_cast<std::remove_cv_t<A>*>(a[I])...);
    }
    template <auto F> static void thunk(void** a) { call<F>(a, std::index_sequence_for<A...>{}); }
    static std::string names() {
        std::string s;
        ((s += (s.empty() ? "" : ",") + TName<A>::s()), ...);
        return s;
    }
};

struct Entry {
    const char* name;
    std::string sig;
    void (*thunk)(void**);
    int bounds;
};
#define EMU_KERNEL(NAME, BOUNDS) {#NAME, Sig<decltype(&NAME)>::names(), &Sig<decltype(&NAME)>::thunk<&NAME>, BOUNDS},
static std::vector<Entry> table = {
#include EMU_KLIST
};

}  // namespace emu

using namespace emu;

extern "C" {

int emu_count() { return (int)table.size(); }
const char* emu_name(int i) { return table[i].name; }
const char* emu_sig(int i) { return table[i].sig.c_str(); }
int emu_bounds(int i) { return table[i].bounds; }

int emu_launch(int k, const unsigned* grid, const unsigned* block, void** args, int schedule, char* out_msg,
               int out_len, unsigned long long* out_fault) {
    failed = false;
    msg[0] = 0;
    *out_fault = 0;
    nthreads = (int)(block[0] * block[1] * block[2]);
    g_grid = {grid[0], grid[1], grid[2]};
    g_bdim = {block[0], block[1], block[2]};
    if ((size_t)nthreads * (STACK + PAGE) > stacks_len) {
        if (stacks) munmap(stacks, stacks_len);
        stacks_len = (size_t)nthreads * (STACK + PAGE);
        stacks = (char*)mmap(nullptr, stacks_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                             -1, 0);
        if (stacks == MAP_FAILED) { stacks = nullptr; stacks_len = 0; snprintf(out_msg, out_len, "mmap failed"); return 1; }
        for (int i = 0; i < nthreads; ++i) mprotect(stacks + i * (STACK + PAGE), PAGE, PROT_NONE);
    }
    fibers.assign(nthreads, Fiber{});
    for (int t = 0; t < nthreads; ++t) {
        Fiber& f = fibers[t];
        f.stack = stacks + t * (STACK + PAGE) + PAGE;
        f.linear = t;
        f.tidx = {t % block[0], (t / block[0]) % block[1], t / (block[0] * block[1])};
    }
    entry = table[k].thunk;
    entry_args = args;

    stack_t ss = {}, old_ss;
    ss.ss_sp = altstack;
    ss.ss_size = sizeof altstack;
    sigaltstack(&ss, &old_ss);
    struct sigaction sa = {}, old[4];
    const int sigs[4] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE};
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 4; ++i) sigaction(sigs[i], &sa, &old[i]);
    int rc = 0;
    if (sigsetjmp(fault_jmp, 1)) {
        const uintptr_t a = fault_addr;
        const bool in_stacks = a >= (uintptr_t)stacks && a < (uintptr_t)stacks + stacks_len;
        const char* what = fault_sig == SIGILL ? "trap: misaligned vector access or other undefined behaviour "
                                                 "(-fsanitize=alignment)"
                           : in_stacks ? "fiber stack overflow"
                           : fault_write ? "invalid write (out of bounds)" : "invalid access (out of bounds)";
        snprintf(msg, sizeof msg, "block (%u, %u, %u) thread (%u, %u, %u): %s at address 0x%llx", g_block.x,
                 g_block.y, g_block.z, cur ? cur->tidx.x : 0, cur ? cur->tidx.y : 0, cur ? cur->tidx.z : 0, what,
                 (unsigned long long)a);
        *out_fault = fault_sig == SIGILL ? 0 : (unsigned long long)a;
        rc = 2;
    } else {
        for (unsigned z = 0; z < grid[2] && !rc; ++z)
            for (unsigned y = 0; y < grid[1] && !rc; ++y)
                for (unsigned x = 0; x < grid[0] && !rc; ++x) {
                    g_block = {x, y, z};
                    rc = run_block(schedule);
                }
    }
    for (int i = 0; i < 4; ++i) sigaction(sigs[i], &old[i], nullptr);
    sigaltstack(&old_ss, nullptr);
    cur = nullptr;
    snprintf(out_msg, out_len, "%s", msg);
    return rc;
}

}  // extern "C"
