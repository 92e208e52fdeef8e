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
// - tensor-core fragments (nvcuda::wmma, 16 x 16 x 16, bf16/fp16 inputs, float accumulators) are
//   warp-collective: each lane holds only its share, under a deliberately scrambled lane mapping; every
//   lane must be in the same call with the same arguments; pointer alignment and ldm are checked;
// - launch configurations beyond the device limits (threads per block, block and grid dimensions, dynamic
//   shared memory above 48 KiB without cudaFuncSetAttribute's opt-in, static shared memory above 48 KiB)
//   fail as they would on a GPU: cudaErrorInvalidConfiguration from cudaGetLastError, or an abort for the
//   static case (ptxas refuses to build such a kernel).
// Errors print "rccl-emu: error: ..." on stderr; those that a GPU would report asynchronously (a kernel
// fault, a divergent barrier) abort the process, as a device fault ends the CUDA context.
// Speed, occupancy, the GPU's memory consistency in full and bank conflicts are not modelled.
#pragma once

#include <algorithm>
#include <array>
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
#include <new>
#include <random>
#include <thread>
#include <tuple>
#include <type_traits>
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
  std::vector<std::array<const void*, 3>> fragment_args;  // a wmma collective's fragments, per thread
  std::mutex shared_mutex;
  struct SharedVariable {
    const void* tag;
    unsigned char* object;
    std::shared_ptr<unsigned char> allocation;
  };
  std::vector<SharedVariable> shared;
  size_t static_shared_bytes = 0;
  std::unique_ptr<unsigned char[]> dynamic_shared;

  BlockState(dim3 i, unsigned int n, size_t dynamic_bytes)
      : idx(i), threads(n), barrier(n), exchange(n), exchange_seq(n), warp_ops(n), syncs(n), fragment_args(n) {
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
// `Align` is the declaration's alignment (alignof(T), or its __align__(n)). A variable is placed at
// exactly that alignment and deliberately NOT at 32 bytes when it asks for less: wmma's
// load_matrix_sync / store_matrix_sync need 32-byte-aligned pointers, which only an __align__(32)
// declaration guarantees on a GPU, so a missing __align__ fails here every time rather than by chance.
template <typename T, size_t Align = alignof(T)>
T& shared(const void* tag) {
  static_assert(Align >= alignof(T) && (Align & (Align - 1)) == 0, "__align__ must be a power of two >= alignof(T)");
  BlockState* b = block;
  std::lock_guard<std::mutex> lock(b->shared_mutex);
  for (auto& v : b->shared)
    if (v.tag == tag) return *reinterpret_cast<T*>(v.object);
  b->static_shared_bytes += sizeof(T);
  if (b->static_shared_bytes > kDefaultSharedBytes) fail("a kernel's static __shared__ memory exceeds 48 KiB (ptxas refuses it)");
  constexpr size_t align = Align < 32 ? 32 : Align, offset = Align < 32 ? 16 : 0;  // 16 mod 32 below 32
  unsigned char* base = static_cast<unsigned char*>(::operator new(sizeof(T) + offset, std::align_val_t(align)));
  std::shared_ptr<unsigned char> allocation(base, [](unsigned char* q) { ::operator delete(q, std::align_val_t(align)); });
  unsigned char* object = base + offset;  // the allocation ends where the variable ends: ASan sees an overrun
  std::memset(object, 0xff, sizeof(T));
  b->shared.push_back({tag, object, std::move(allocation)});
  return *reinterpret_cast<T*>(object);
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

// ---- tensor-core fragments (nvcuda::wmma, <mma.h>) -----------------------------------------------------
// The 16 x 16 x 16 shape with __half / __nv_bfloat16 inputs and float accumulators, as WARP-COLLECTIVE
// operations: every lane holds only its own share of a fragment (num_elements = 8 of the 256 elements),
// and fill_fragment, load_matrix_sync, mma_sync and store_matrix_sync must be called by all 32 lanes of
// the warp in the same collective with the same arguments (pointer, ldm, layout); a lane missing (it left
// the kernel or is at another collective) or passing other arguments is reported, as a shuffle's is.
//
// The lane-to-element mapping is unspecified in CUDA. The one chosen here is scrambled on purpose, so that
// code reading or writing fragment.x[i] as if it knew which element x[i] is gets wrong values: element
// (row, col) of the fragment's matrix (matrix_a: M x K, matrix_b: K x N, accumulator: M x N), e = 16 row +
// col, sits in slot s = (167 e + salt) mod 256 (a bijection: 167 is odd), lane s / 8, x[s % 8]; the salt
// differs per use and layout (matrix_a row/col major 29/53, matrix_b 71/97, accumulator 113). Elementwise
// operations applied alike to every x[i] (scaling an accumulator) are layout-free and work, as in CUDA.
//
// mma_sync computes D = A B + C in float: each product of two bf16 (fp16) inputs is exact in float, the
// sum over k runs in float, k ascending (the hardware's internal summation order differs: float rounding).
// load/store check CUDA's documented rules: the pointer 256-bit (32-byte) aligned, ldm a multiple of 8
// elements for 16-bit types and of 4 for float (16 bytes). Violations print "rccl-emu: error: ..." and
// abort, as the other misuse reports.
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, typename T, class Layout = void>
class fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulation models the 16 x 16 x 16 shape only");
  static_assert(std::is_same_v<Use, accumulator>
                    ? std::is_same_v<T, float> && std::is_same_v<Layout, void>
                    : (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) &&
                          (std::is_same_v<Layout, row_major> || std::is_same_v<Layout, col_major>),
                "fragments: matrix_a / matrix_b of __half or __nv_bfloat16 with a layout, accumulator of float");

 public:
  enum { num_elements = 8 };
  using element_type = T;
  using storage_element_type = T;
  using use = Use;
  using layout = Layout;
  T x[num_elements];
};
}  // namespace wmma
}  // namespace nvcuda

namespace emu {
template <class Frag>
constexpr unsigned int fragment_salt() {
  using Use = typename Frag::use;
  using Layout = typename Frag::layout;
  if constexpr (std::is_same_v<Use, nvcuda::wmma::matrix_a>) return std::is_same_v<Layout, nvcuda::wmma::row_major> ? 29 : 53;
  else if constexpr (std::is_same_v<Use, nvcuda::wmma::matrix_b>) return std::is_same_v<Layout, nvcuda::wmma::row_major> ? 71 : 97;
  else return 113;
}
// where element (row, col) of a fragment lives: slot = lane * 8 + i
template <class Frag>
constexpr unsigned int fragment_slot(unsigned int row, unsigned int col) {
  return (167u * (16u * row + col) + fragment_salt<Frag>()) & 255u;
}
// which element slot s holds: the inverse (167 * 23 = 3841 = 15 * 256 + 1)
template <class Frag>
constexpr unsigned int fragment_element(unsigned int slot) {
  return (23u * ((slot + 256u - fragment_salt<Frag>()) & 255u)) & 255u;
}
static_assert(fragment_slot<nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>>(
                  fragment_element<nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>>(200) / 16,
                  fragment_element<nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float>>(200) % 16) == 200,
              "the slot mapping and its inverse agree");

inline float element_value(float v) { return v; }
inline float element_value(__half v) { return __half2float(v); }
inline float element_value(__nv_bfloat16 v) { return __bfloat162float(v); }

// Enter a fragment collective: publish this lane's token (what it is doing, with which arguments) and
// fragments, wait for the warp, check that all 32 lanes are in this same collective with the same token.
// Returns the lane. The caller reads other lanes' published fragments, then calls fragment_leave().
inline unsigned int fragment_enter(const char* what, uint64_t token, const void* f0 = nullptr, const void* f1 = nullptr,
                                   const void* f2 = nullptr) {
  BlockState* b = block;
  const unsigned int t = thread_rank, warp = t / 32, lane = t % 32;
  const unsigned int lanes = std::min(32u, b->threads - warp * 32);
  char message[320];
  if (lanes != 32) {
    std::snprintf(message, sizeof message, "%s in warp %u of block (%u, %u, %u): the warp has %u threads, a wmma "
                  "collective needs all 32 lanes", what, warp, b->idx.x, b->idx.y, b->idx.z, lanes);
    fail(message);
  }
  const uint64_t seq = ++b->warp_ops[t];
  b->exchange[t] = token;
  b->exchange_seq[t] = seq;
  b->fragment_args[t] = {f0, f1, f2};
  b->warp_barriers[warp]->arrive_and_wait();
  for (unsigned int l = 0; l < 32; ++l) {
    if (b->exchange_seq[warp * 32 + l] != seq) {
      std::snprintf(message, sizeof message, "%s in warp %u of block (%u, %u, %u): lane %u did not take part (it left "
                    "the kernel or is at another collective)", what, warp, b->idx.x, b->idx.y, b->idx.z, l);
      fail(message);
    }
    // against lane 0's token, not this lane's: every lane then names the same culprit, whichever fails first
    if (b->exchange[warp * 32 + l] != b->exchange[warp * 32]) {
      std::snprintf(message, sizeof message, "%s in warp %u of block (%u, %u, %u): lane %u is at another wmma call than "
                    "lane 0 or passed other arguments (pointer, ldm and layout must be the same for the whole warp)",
                    what, warp, b->idx.x, b->idx.y, b->idx.z, l);
      fail(message);
    }
  }
  return lane;
}
// mma_sync calls since the process started (or the last reset): the tests' proof that a dtype's path
// really runs on the (emulated) tensor cores
inline std::atomic<uint64_t> mma_calls{0};
inline void fragment_leave() { block->warp_barriers[thread_rank / 32]->arrive_and_wait(); }

inline uint64_t fragment_token(unsigned int op, const void* p, unsigned int ldm, unsigned int layout) {
  return (reinterpret_cast<uintptr_t>(p) * 0x9E3779B97F4A7C15ull) ^ (static_cast<uint64_t>(ldm) << 8) ^ (layout << 4) ^ op;
}

template <typename T>
void check_matrix_pointer(const char* what, const T* p, unsigned int ldm) {
  char message[256];
  constexpr unsigned int multiple = 16 / sizeof(T);  // 8 for 16-bit types, 4 for float
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) {
    std::snprintf(message, sizeof message, "%s: pointer %p is not 256-bit (32-byte) aligned", what,
                  static_cast<const void*>(p));
    fail(message);
  }
  if (ldm == 0 || ldm % multiple != 0) {
    std::snprintf(message, sizeof message, "%s: ldm %u is not a multiple of %u elements (16 bytes)", what, ldm, multiple);
    fail(message);
  }
}
}  // namespace emu

namespace nvcuda {
namespace wmma {
template <class Use, typename T, class Layout>
void fill_fragment(fragment<Use, 16, 16, 16, T, Layout>& f, T value) {
  emu::fragment_enter("fill_fragment", emu::fragment_token(1, nullptr, 0, 0) ^ std::hash<float>{}(emu::element_value(value)));
  for (int i = 0; i < 8; ++i) f.x[i] = value;
  emu::fragment_leave();
}
// fill_fragment(acc, 0.0f) for an accumulator of float
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float>& f, float value) {
  emu::fragment_enter("fill_fragment", emu::fragment_token(1, nullptr, 0, 0) ^ std::hash<float>{}(value));
  for (int i = 0; i < 8; ++i) f.x[i] = value;
  emu::fragment_leave();
}

// matrix_a (M x K) and matrix_b (K x N): the layout is the fragment's
template <class Use, typename T, class Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned int ldm) {
  static_assert(!std::is_same_v<Use, accumulator>, "an accumulator's load takes a layout_t");
  using Frag = fragment<Use, 16, 16, 16, T, Layout>;
  constexpr bool row = std::is_same_v<Layout, row_major>;
  emu::check_matrix_pointer("load_matrix_sync", p, ldm);
  const unsigned int lane = emu::fragment_enter("load_matrix_sync", emu::fragment_token(2, p, ldm, row));
  for (unsigned int i = 0; i < 8; ++i) {
    const unsigned int e = emu::fragment_element<Frag>(lane * 8 + i), r = e / 16, c = e % 16;
    f.x[i] = row ? p[r * ldm + c] : p[c * ldm + r];
  }
  emu::fragment_leave();
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float>& f, const float* p, unsigned int ldm, layout_t layout) {
  using Frag = fragment<accumulator, 16, 16, 16, float>;
  emu::check_matrix_pointer("load_matrix_sync", p, ldm);
  const unsigned int lane = emu::fragment_enter("load_matrix_sync", emu::fragment_token(3, p, ldm, layout));
  for (unsigned int i = 0; i < 8; ++i) {
    const unsigned int e = emu::fragment_element<Frag>(lane * 8 + i), r = e / 16, c = e % 16;
    f.x[i] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
  }
  emu::fragment_leave();
}
inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned int ldm, layout_t layout) {
  using Frag = fragment<accumulator, 16, 16, 16, float>;
  emu::check_matrix_pointer("store_matrix_sync", p, ldm);
  const unsigned int lane = emu::fragment_enter("store_matrix_sync", emu::fragment_token(4, p, ldm, layout));
  for (unsigned int i = 0; i < 8; ++i) {
    const unsigned int e = emu::fragment_element<Frag>(lane * 8 + i), r = e / 16, c = e % 16;
    (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[i];
  }
  emu::fragment_leave();
}

// d = a b + c. Each lane computes its own share of d from every lane's share of a, b and c (published by
// fragment_enter; read before fragment_leave, so d may be c).
template <typename T, class LayoutA, class LayoutB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, T, LayoutA>& a,
              const fragment<matrix_b, 16, 16, 16, T, LayoutB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  using FragA = fragment<matrix_a, 16, 16, 16, T, LayoutA>;
  using FragB = fragment<matrix_b, 16, 16, 16, T, LayoutB>;
  using FragC = fragment<accumulator, 16, 16, 16, float>;
  const unsigned int lane = emu::fragment_enter("mma_sync", emu::fragment_token(5, nullptr, 0, 0), &a, &b, &c);
  if (lane == 0) emu::mma_calls.fetch_add(1, std::memory_order_relaxed);  // one per warp
  const auto& args = emu::block->fragment_args;
  const unsigned int warp0 = emu::thread_rank / 32 * 32;
  auto element = [&](auto* tag, int which, unsigned int row, unsigned int col) -> float {
    using Frag = std::remove_pointer_t<decltype(tag)>;
    const unsigned int s = emu::fragment_slot<Frag>(row, col);
    return emu::element_value(static_cast<const Frag*>(args[warp0 + s / 8][which])->x[s % 8]);
  };
  float out[8];
  for (unsigned int i = 0; i < 8; ++i) {
    const unsigned int e = emu::fragment_element<FragC>(lane * 8 + i), r = e / 16, col = e % 16;
    float sum = element(static_cast<FragC*>(nullptr), 2, r, col);
    for (unsigned int k = 0; k < 16; ++k)
      sum += element(static_cast<FragA*>(nullptr), 0, r, k) * element(static_cast<FragB*>(nullptr), 1, k, col);
    out[i] = sum;
  }
  emu::fragment_leave();  // every lane has read a, b and c
  for (unsigned int i = 0; i < 8; ++i) d.x[i] = out[i];
}
}  // namespace wmma
}  // namespace nvcuda

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
