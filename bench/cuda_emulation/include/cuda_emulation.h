// Runs the rccl CUDA kernels on the CPU, to check their logic where there is no GPU: each thread block
// runs alone, its threads as std::threads; __syncthreads is a std::barrier over the block, warp shuffles go
// through a per-warp exchange buffer with a per-warp barrier; __shared__ variables are function statics
// (blocks never overlap, so one copy serves every block). Memory is host memory. It checks indexing,
// barrier placement (a missing barrier shows as a wrong value, not reliably), reductions and the math;
// it says nothing about speed, and races are compute-sanitizer's job on a real GPU.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

// ---- runtime types -----------------------------------------------------------------------------------
enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
typedef void* cudaStream_t;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
  dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {
inline thread_local dim3 thread_idx, block_idx;
inline dim3 block_dim, grid_dim;
inline std::barrier<>* block_barrier = nullptr;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
inline std::vector<uint64_t> exchange;  // one 8-byte slot per thread
}  // namespace emu

#define threadIdx (emu::thread_idx)
#define blockIdx (emu::block_idx)
#define blockDim (emu::block_dim)
#define gridDim (emu::grid_dim)

inline void __syncthreads() { emu::block_barrier->arrive_and_wait(); }
inline void __threadfence() {}

template <typename T>
T __shfl_xor_sync(unsigned int, T value, int offset) {
  static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
  const unsigned int t = threadIdx.x, warp = t / 32, lane = t % 32;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  emu::exchange[t] = bits;
  emu::warp_barriers[warp]->arrive_and_wait();
  const uint64_t other = emu::exchange[warp * 32 + (lane ^ static_cast<unsigned int>(offset))];
  emu::warp_barriers[warp]->arrive_and_wait();
  T out;
  std::memcpy(&out, &other, sizeof(T));
  return out;
}

inline unsigned int __ballot_sync(unsigned int, bool predicate) {
  const unsigned int t = threadIdx.x, warp = t / 32;
  emu::exchange[t] = predicate ? 1u : 0u;
  emu::warp_barriers[warp]->arrive_and_wait();
  unsigned int mask = 0;
  for (unsigned int lane = 0; lane < 32; ++lane) mask |= static_cast<unsigned int>(emu::exchange[warp * 32 + lane]) << lane;
  emu::warp_barriers[warp]->arrive_and_wait();
  return mask;
}
inline int __popc(unsigned int x) { return __builtin_popcount(x); }

inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {  // blocks run one at a time
  const unsigned int old = *p;
  *p += v;
  return old;
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
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t, cudaStream_t, Args&&... args) {
  const unsigned int threads = block.x * block.y * block.z;
  block_dim = block;
  grid_dim = grid;
  exchange.assign(threads, 0);
  for (unsigned int bz = 0; bz < grid.z; ++bz)
    for (unsigned int by = 0; by < grid.y; ++by)
      for (unsigned int bx = 0; bx < grid.x; ++bx) {
        std::barrier<> barrier(threads);
        block_barrier = &barrier;
        warp_barriers.clear();  // fresh barriers: the last block's threads dropped out of the old ones
        for (unsigned int w = 0; w < (threads + 31) / 32; ++w)
          warp_barriers.emplace_back(std::make_unique<std::barrier<>>(32));
        std::vector<std::thread> pool;
        pool.reserve(threads);
        for (unsigned int t = 0; t < threads; ++t)
          pool.emplace_back([&, t] {
            thread_idx = dim3(t);
            block_idx = dim3(bx, by, bz);
            kernel(args...);
            // an exited thread no longer holds back the barriers of the threads still running
            block_barrier->arrive_and_drop();
            warp_barriers[t / 32]->arrive_and_drop();
          });
        for (auto& th : pool) th.join();
      }
}
}  // namespace emu
