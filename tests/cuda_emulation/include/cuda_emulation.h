// Runs the rccl CUDA kernels on the CPU, to check their logic and their synchronisation where there is no
// GPU. The kernel sources are compiled unchanged except for two mechanical rewrites done by emulated.py
// (`k<<<grid, block, shared, stream>>>(args)` -> `emu::launch(k, grid, block, shared, stream, args)` and
// `__shared__ T name[..];` -> a reference into the running block's own shared memory).
//
// The execution model, chosen so that a synchronisation bug becomes a sanitizer report or an error, not a
// lucky right answer:
// - every CUDA thread is a std::thread; `concurrency` blocks (default 2) run at once, taken from the grid
//   in a shuffled order (seeded: set_schedule), so two blocks really overlap and their order varies;
// - each block has its own shared memory, allocated at its start and poisoned (0xff bytes: NaN floats,
//   -1 integers), one allocation per __shared__ variable, so AddressSanitizer sees an overrun of one;
// - __syncthreads is a (blocking) barrier over the block. A thread that leaves the kernel drops out of it, so a
//   barrier that only part of the block reaches does not hang; the launch then reports it as an error;
// - warp shuffles and ballots go through a per-warp exchange with a per-warp barrier; every lane of the
//   mask must take part in the same collective (a lane that returned early is reported);
// - atomicAdd is a relaxed atomic read-modify-write (as CUDA's), __threadfence a release+acquire
//   read-modify-write of one global word: built with ThreadSanitizer, a missing barrier or fence between
//   two threads' accesses to shared or global memory is reported as a data race;
// - launch configurations beyond the device limits (threads per block, block and grid dimensions, dynamic
//   shared memory above 48 KiB without cudaFuncSetAttribute's opt-in, static shared memory above 48 KiB)
//   fail as they would on a GPU: cudaErrorInvalidConfiguration from cudaGetLastError, or an abort for the
//   static case (ptxas refuses to build such a kernel).
// Errors print "rccl-emu: error: ..." on stderr; those that a GPU would report asynchronously (a kernel
// fault, a divergent barrier) abort the process, as a device fault ends the CUDA context.
// Speed, occupancy, the GPU's memory consistency in full and bank conflicts are not modelled.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

// ---- runtime types -----------------------------------------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1, cudaErrorInvalidConfiguration = 9 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
typedef void* cudaStream_t;

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {

// device limits of sm_80 / sm_90 (H100: 227 KiB of opt-in shared memory per block)
constexpr unsigned int kMaxThreadsPerBlock = 1024, kMaxBlockXY = 1024, kMaxBlockZ = 64;
constexpr unsigned long long kMaxGridX = 2147483647ull;
constexpr unsigned int kMaxGridYZ = 65535;
constexpr size_t kDefaultSharedBytes = 48 * 1024, kMaxOptInSharedBytes = 227 * 1024;

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "rccl-emu: error: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

// A blocking barrier (mutex + condition variable). std::barrier spins and yields before it sleeps: with
// hundreds of emulated threads on a 2-core machine that kept the load in the hundreds. A thread that
// leaves drops out (arrive_and_drop), as an exited CUDA thread no longer holds back __syncthreads.
class Barrier {
 public:
  explicit Barrier(unsigned int expected) : expected_(expected) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t phase = phase_;
    if (++arrived_ == expected_) {
      next_phase();
    } else {
      wake_.wait(lock, [&] { return phase_ != phase; });
    }
  }
  void arrive_and_drop() {
    std::lock_guard<std::mutex> lock(mutex_);
    --expected_;
    if (arrived_ > 0 && arrived_ == expected_) next_phase();
  }

 private:
  void next_phase() {
    arrived_ = 0;
    ++phase_;
    wake_.notify_all();
  }
  std::mutex mutex_;
  std::condition_variable wake_;
  unsigned int expected_, arrived_ = 0;
  uint64_t phase_ = 0;
};

struct BlockState {
  dim3 idx;
  unsigned int threads;
  Barrier barrier;
  std::vector<std::unique_ptr<Barrier>> warp_barriers;
  std::vector<uint64_t> exchange;      // one 8-byte slot per thread
  std::vector<uint64_t> exchange_seq;  // which collective of its warp each thread's slot belongs to
  std::vector<uint64_t> warp_ops;      // warp collectives done, per thread
  std::vector<uint64_t> syncs;         // __syncthreads passed, per thread
  std::mutex shared_mutex;
  std::vector<std::pair<const void*, std::unique_ptr<unsigned char[]>>> shared;
  size_t static_shared_bytes = 0;
  std::unique_ptr<unsigned char[]> dynamic_shared;

  BlockState(dim3 i, unsigned int n, size_t dynamic_bytes)
      : idx(i), threads(n), barrier(n), exchange(n), exchange_seq(n), warp_ops(n), syncs(n) {
    for (unsigned int w = 0; w < (n + 31) / 32; ++w)
      warp_barriers.emplace_back(std::make_unique<Barrier>(std::min(32u, n - w * 32)));
    if (dynamic_bytes) {
      dynamic_shared.reset(new unsigned char[dynamic_bytes]);
      std::memset(dynamic_shared.get(), 0xff, dynamic_bytes);
    }
  }
};

inline thread_local BlockState* block = nullptr;
inline thread_local dim3 thread_idx;
inline thread_local unsigned int thread_rank = 0;
inline dim3 block_dim, grid_dim;  // of the launch in progress (launches run one at a time)
inline std::atomic<uint64_t> fence_word{0};
inline thread_local cudaError_t last_error = cudaSuccess;

struct Schedule {
  unsigned int concurrency = 2;  // blocks running at once
  uint64_t seed = 0;             // block order: a permutation drawn from this seed, per launch
  uint64_t launches = 0;
};
inline Schedule schedule;
inline void set_schedule(unsigned int concurrency, uint64_t seed) {
  schedule.concurrency = concurrency ? concurrency : 1;
  schedule.seed = seed;
  schedule.launches = 0;
}

struct KernelAttributes {
  const void* kernel;
  size_t max_dynamic_shared;
};
inline std::mutex attributes_mutex;
inline std::vector<KernelAttributes> attributes;
inline size_t max_dynamic_shared(const void* kernel) {
  std::lock_guard<std::mutex> lock(attributes_mutex);
  for (const auto& a : attributes)
    if (a.kernel == kernel) return a.max_dynamic_shared;
  return kDefaultSharedBytes;
}

// The running block's copy of the __shared__ variable declared at `tag` (a static unique to the
// declaration), allocated and poisoned by the first thread of the block to reach the declaration.
template <typename T>
T& shared(const void* tag) {
  BlockState* b = block;
  std::lock_guard<std::mutex> lock(b->shared_mutex);
  for (auto& [t, p] : b->shared)
    if (t == tag) return *reinterpret_cast<T*>(p.get());
  b->static_shared_bytes += sizeof(T);
  if (b->static_shared_bytes > kDefaultSharedBytes) fail("a kernel's static __shared__ memory exceeds 48 KiB (ptxas refuses it)");
  std::unique_ptr<unsigned char[]> p(new unsigned char[sizeof(T)]);
  std::memset(p.get(), 0xff, sizeof(T));
  T& ref = *reinterpret_cast<T*>(p.get());
  b->shared.emplace_back(tag, std::move(p));
  return ref;
}
template <typename T>
T* dynamic_shared() {
  return reinterpret_cast<T*>(block->dynamic_shared.get());
}

}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block->idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::last_error;
  emu::last_error = cudaSuccess;
  return e;
}
template <typename Kernel>
cudaError_t cudaFuncSetAttribute(Kernel* kernel, cudaFuncAttribute attribute, int value) {
  if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      static_cast<size_t>(value) > emu::kMaxOptInSharedBytes)
    return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lock(emu::attributes_mutex);
  for (auto& a : emu::attributes)
    if (a.kernel == reinterpret_cast<const void*>(kernel)) return a.max_dynamic_shared = value, cudaSuccess;
  emu::attributes.push_back({reinterpret_cast<const void*>(kernel), static_cast<size_t>(value)});
  return cudaSuccess;
}

inline void __syncthreads() {
  emu::BlockState* b = emu::block;
  ++b->syncs[emu::thread_rank];
  b->barrier.arrive_and_wait();
}
inline void __threadfence() { emu::fence_word.fetch_add(1, std::memory_order_acq_rel); }

namespace emu {
// One warp collective of the calling lane: publish `bits`, wait for the warp, check that every lane of
// `mask` published in this same collective, read lane `src`'s bits (or every lane's, for a ballot).
inline uint64_t warp_exchange(unsigned int mask, uint64_t bits, unsigned int src, const char* what,
                              unsigned int* ballot = nullptr) {
  BlockState* b = block;
  const unsigned int t = thread_rank, warp = t / 32, lane = t % 32;
  const unsigned int lanes = std::min(32u, b->threads - warp * 32);
  const unsigned int existing = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
  char message[256];
  if ((mask & ~existing) != 0 || !(mask >> lane & 1u)) {
    std::snprintf(message, sizeof message, "%s: mask 0x%08x names lanes that do not exist or excludes the caller (lane %u)",
                  what, mask, lane);
    fail(message);
  }
  const uint64_t seq = ++b->warp_ops[t];
  b->exchange[t] = bits;
  b->exchange_seq[t] = seq;
  b->warp_barriers[warp]->arrive_and_wait();
  for (unsigned int l = 0; l < lanes; ++l)
    if ((mask >> l & 1u) && b->exchange_seq[warp * 32 + l] != seq) {
      std::snprintf(message, sizeof message,
                    "%s in warp %u of block (%u, %u, %u): lane %u of mask 0x%08x did not take part (it left the "
                    "kernel or is at another collective)", what, warp, b->idx.x, b->idx.y, b->idx.z, l, mask);
      fail(message);
    }
  uint64_t out = 0;
  if (ballot) {
    unsigned int m = 0;
    for (unsigned int l = 0; l < lanes; ++l)
      if (mask >> l & 1u) m |= static_cast<unsigned int>(b->exchange[warp * 32 + l] != 0) << l;
    *ballot = m;
  } else {
    if (src >= 32 || !(mask >> src & 1u)) {
      std::snprintf(message, sizeof message, "%s: source lane %u is not in mask 0x%08x", what, src, mask);
      fail(message);
    }
    out = b->exchange[warp * 32 + src];
  }
  b->warp_barriers[warp]->arrive_and_wait();
  return out;
}
}  // namespace emu

template <typename T>
T __shfl_xor_sync(unsigned int mask, T value, int offset) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  const unsigned int src = (emu::thread_rank % 32) ^ static_cast<unsigned int>(offset);
  const uint64_t other = emu::warp_exchange(mask, bits, src, "__shfl_xor_sync");
  T out;
  std::memcpy(&out, &other, sizeof(T));
  return out;
}
template <typename T>
T __shfl_sync(unsigned int mask, T value, int src_lane) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  const uint64_t other = emu::warp_exchange(mask, bits, static_cast<unsigned int>(src_lane) % 32, "__shfl_sync");
  T out;
  std::memcpy(&out, &other, sizeof(T));
  return out;
}
inline unsigned int __ballot_sync(unsigned int mask, bool predicate) {
  unsigned int result = 0;
  emu::warp_exchange(mask, predicate ? 1u : 0u, 0, "__ballot_sync", &result);
  return result;
}
inline int __popc(unsigned int x) { return __builtin_popcount(x); }

inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {  // relaxed, as CUDA's atomicAdd
  return std::atomic_ref<unsigned int>(*p).fetch_add(v, std::memory_order_relaxed);
}
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v, std::memory_order_relaxed); }
// floating-point atomics (the backward's accumulation): the summation order varies with the schedule, as
// on a GPU
inline float atomicAdd(float* p, float v) { return std::atomic_ref<float>(*p).fetch_add(v, std::memory_order_relaxed); }
inline double atomicAdd(double* p, double v) {
  return std::atomic_ref<double>(*p).fetch_add(v, std::memory_order_relaxed);
}

inline unsigned int __float_as_uint(float x) { unsigned int u; std::memcpy(&u, &x, 4); return u; }
inline long long __double_as_longlong(double x) { long long u; std::memcpy(&u, &x, 8); return u; }
using std::fma;
using std::exp;
using std::log;
using std::sqrt;

// ---- half types --------------------------------------------------------------------------------------
struct __half {
  _Float16 v;
};
struct __nv_bfloat16 {
  uint16_t bits;
};
inline float __half2float(__half h) { return static_cast<float>(h.v); }
inline __half __float2half_rn(float f) { return __half{static_cast<_Float16>(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = static_cast<uint32_t>(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {  // round to nearest even (no NaN inputs here)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);
  return __nv_bfloat16{static_cast<uint16_t>(u >> 16)};
}

// ---- launches ----------------------------------------------------------------------------------------
namespace emu {

inline bool launch_config_error(const void* kernel, dim3 grid, dim3 block_shape, size_t dynamic_bytes) {
  const unsigned long long threads = 1ull * block_shape.x * block_shape.y * block_shape.z;
  char message[256] = "";
  if (threads == 0 || threads > kMaxThreadsPerBlock || block_shape.x > kMaxBlockXY || block_shape.y > kMaxBlockXY ||
      block_shape.z > kMaxBlockZ)
    std::snprintf(message, sizeof message, "launch with a block of (%u, %u, %u) threads: at most 1024 in all, "
                  "(1024, 1024, 64) per dimension", block_shape.x, block_shape.y, block_shape.z);
  else if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > kMaxGridX || grid.y > kMaxGridYZ || grid.z > kMaxGridYZ)
    std::snprintf(message, sizeof message, "launch with a grid of (%u, %u, %u) blocks: each at least 1, y and z "
                  "at most 65535", grid.x, grid.y, grid.z);
  else if (dynamic_bytes > max_dynamic_shared(kernel))
    std::snprintf(message, sizeof message, "launch with %zu bytes of dynamic shared memory: above %zu without "
                  "cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes)",
                  dynamic_bytes, max_dynamic_shared(kernel));
  if (!*message) return false;
  std::fprintf(stderr, "rccl-emu: error: %s\n", message);
  return true;
}

// Runs blocks one after another on a crew of `threads` std::threads (created once per launch: thread
// creation dominates the emulation's time under ThreadSanitizer). Every block gets a fresh BlockState:
// new barriers, new poisoned shared memory.
class BlockRunner {
 public:
  BlockRunner(const std::function<void()>& body, unsigned int threads, size_t dynamic_bytes)
      : body_(body), threads_(threads), dynamic_bytes_(dynamic_bytes), start_(threads + 1), done_(threads + 1) {
    crew_.reserve(threads);
    for (unsigned int t = 0; t < threads; ++t) crew_.emplace_back([this, t] { work(t); });
  }
  ~BlockRunner() {
    stop_ = true;
    start_.arrive_and_wait();
    for (auto& th : crew_) th.join();
  }
  void run(dim3 idx) {
    BlockState state(idx, threads_, dynamic_bytes_);
    current_ = &state;
    start_.arrive_and_wait();  // the crew runs the block
    done_.arrive_and_wait();
    for (unsigned int t = 1; t < threads_; ++t)
      if (state.syncs[t] != state.syncs[0]) {
        char message[256];
        std::snprintf(message, sizeof message, "__syncthreads() reached by only part of block (%u, %u, %u): thread "
                      "0 passed %llu barriers, thread %u passed %llu", idx.x, idx.y, idx.z,
                      static_cast<unsigned long long>(state.syncs[0]), t,
                      static_cast<unsigned long long>(state.syncs[t]));
        fail(message);
      }
  }

 private:
  void work(unsigned int t) {
    for (;;) {
      start_.arrive_and_wait();
      if (stop_) return;
      BlockState& state = *current_;
      block = &state;
      thread_rank = t;
      thread_idx = dim3(t % block_dim.x, t / block_dim.x % block_dim.y, t / (block_dim.x * block_dim.y));
      body_();
      // a thread that left the kernel no longer holds back the barriers of those still running
      state.barrier.arrive_and_drop();
      state.warp_barriers[t / 32]->arrive_and_drop();
      block = nullptr;
      done_.arrive_and_wait();
    }
  }
  const std::function<void()>& body_;
  unsigned int threads_;
  size_t dynamic_bytes_;
  Barrier start_, done_;
  BlockState* current_ = nullptr;
  bool stop_ = false;
  std::vector<std::thread> crew_;
};

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block_shape, size_t dynamic_bytes, cudaStream_t, Args&&... args) {
  if (launch_config_error(reinterpret_cast<const void*>(kernel), grid, block_shape, dynamic_bytes)) {
    last_error = cudaErrorInvalidConfiguration;
    return;
  }
  block_dim = block_shape;
  grid_dim = grid;
  const unsigned int threads = block_shape.x * block_shape.y * block_shape.z;
  std::vector<dim3> order;
  for (unsigned int bz = 0; bz < grid.z; ++bz)
    for (unsigned int by = 0; by < grid.y; ++by)
      for (unsigned int bx = 0; bx < grid.x; ++bx) order.emplace_back(bx, by, bz);
  std::mt19937_64 rng(schedule.seed * 1000003u + schedule.launches++);
  std::shuffle(order.begin(), order.end(), rng);
  // the kernel's parameters are copied once, as a launch copies them to the device
  const std::function<void()> body = [kernel, params = std::make_tuple(Params(args)...)] {
    std::apply(kernel, params);
  };
  std::atomic<size_t> next{0};
  auto runner = [&] {
    BlockRunner crew(body, threads, dynamic_bytes);
    for (size_t i; (i = next.fetch_add(1)) < order.size();) crew.run(order[i]);
  };
  const unsigned int runners = std::min<size_t>(schedule.concurrency, order.size());
  std::vector<std::thread> pool;
  for (unsigned int r = 1; r < runners; ++r) pool.emplace_back(runner);
  runner();
  for (auto& th : pool) th.join();
}

}  // namespace emu
