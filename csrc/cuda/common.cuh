// Device helpers shared by the rccl kernels: dtype conversion, the register-tiled dot-product block
// (a small SGEMM: a BM x BN tile of row . column products, float32 accumulation), block reductions and
// the workspace layout. Kernels only: no ATen/torch headers here (see docs/cuda.md).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cassert>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels.h"

// An asynchronous input check: a failing thread stops the kernel with this message on stderr and the
// next CUDA call of the process reports "device-side assert triggered" (as ATen's index checks do). It
// costs no host synchronisation and works under CUDA-graph capture. Independent of NDEBUG.
#define RCCL_DEVICE_ASSERT(cond, message)                                                   \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      __assert_fail(message, __FILE__, static_cast<unsigned int>(__LINE__), __func__);      \
    }                                                                                       \
  } while (0)

namespace rccl_cuda {

constexpr double kNormalizeEps = 1e-12;  // as torch.nn.functional.normalize
constexpr int kThreads = 256;            // every kernel's block size

// ---- dtypes -----------------------------------------------------------------------------------------
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }

template <typename T> __device__ __forceinline__ T from_acc(float x);
template <> __device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <typename T> __device__ __forceinline__ T from_acc(double x);
template <> __device__ __forceinline__ double from_acc<double>(double x) { return x; }

__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }
__device__ __forceinline__ float acc_log(float x) { return logf(x); }
__device__ __forceinline__ double acc_log(double x) { return log(x); }
__device__ __forceinline__ float acc_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double acc_sqrt(double x) { return sqrt(x); }
template <typename A> __device__ __forceinline__ A neg_inf() { return -static_cast<A>(INFINITY); }

// bit test rather than isfinite(): immune to fast-math assumptions
__device__ __forceinline__ bool is_finite_value(float x) { return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u; }
__device__ __forceinline__ bool is_finite_value(double x) {
  return (static_cast<unsigned long long>(__double_as_longlong(x)) & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}

// The order of the rankings (fakes by centre similarity, bank candidates by hardness): torch.sort's, in
// which NaN is above every number and equal to NaN. A similarity is NaN for a NaN centre or bank row, or
// when finite inputs overflow (inf - inf); with a plain `>` a NaN would be neither ahead of nor behind
// anything, two candidates could claim one rank and leave another rank's index unwritten (then read as a
// row pointer). With this strict total order (ties broken by index) every rank is claimed exactly once.
__device__ __forceinline__ bool is_nan_value(float x) { return (__float_as_uint(x) & 0x7fffffffu) > 0x7f800000u; }
__device__ __forceinline__ bool is_nan_value(double x) {
  return (static_cast<unsigned long long>(__double_as_longlong(x)) & 0x7fffffffffffffffull) > 0x7ff0000000000000ull;
}
template <typename A>
__device__ __forceinline__ bool sort_greater(A a, A b) {
  return is_nan_value(a) ? !is_nan_value(b) : (!is_nan_value(b) && a > b);
}
template <typename A>
__device__ __forceinline__ bool sort_equal(A a, A b) {
  return is_nan_value(a) ? is_nan_value(b) : a == b;
}

// ---- parallel selection of a ranking's first `take` candidates ----------------------------------------
// A candidate's rank key: a larger key ranks earlier. hi = the score's bits mapped to an unsigned integer in
// sort_greater's order (NaN above every number, all NaN equal, -0 equal to +0), complemented for an
// ascending ranking; lo = the complemented index (ties go to the lower index). Keys of distinct
// candidates are distinct, so the order is strict and total: every rank is taken by exactly one candidate.
struct RankKey {
  unsigned long long hi;
  unsigned int lo;
};
__device__ __forceinline__ bool key_greater(const RankKey& a, const RankKey& b) {
  return a.hi > b.hi || (a.hi == b.hi && a.lo > b.lo);
}
__device__ __forceinline__ unsigned long long order_bits(float x) {
  if (is_nan_value(x)) return 0xffffffffull;
  const unsigned int u = x == 0.0f ? 0u : __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ unsigned long long order_bits(double x) {
  if (is_nan_value(x)) return ~0ull;
  const unsigned long long u = x == 0.0 ? 0ull : static_cast<unsigned long long>(__double_as_longlong(x));
  return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}
template <typename A>
__device__ __forceinline__ RankKey rank_key(A score, int64_t idx, bool descending) {
  constexpr unsigned long long all = sizeof(A) == 8 ? ~0ull : 0xffffffffull;
  const unsigned long long bits = order_bits(score);
  return RankKey{descending ? bits : (all & ~bits), 0xffffffffu - static_cast<unsigned int>(idx)};
}

// The whole block (every thread calls it, with the same arguments) writes into out[r], r < take, the
// candidate of rank r among the candidates c in [0, count) with is_candidate(c), ranked by key(c)
// (RankKey: larger first); take <= the number of candidates. `selected` is global scratch for `take`
// indices. A radix select (8-bit digits, most significant first, a 256-bin histogram in shared memory per
// pass) finds the take-th largest key; it stops as soon as the digit's bucket is taken whole (two passes
// for a handful out of thousands); then the selected candidates are ranked among themselves. No
// candidate scans more than the block's share of [0, count) per pass; count < 2^31 (the index is 32-bit).
template <typename A, class Key, class IsCandidate>
__device__ void block_select_ranked(int64_t count, int64_t take, Key key, IsCandidate is_candidate, int64_t* selected,
                                    int64_t* out) {
  constexpr int kHiBytes = sizeof(A), kBytes = kHiBytes + 4;
  __shared__ int histogram[256];
  __shared__ unsigned long long prefix_hi;  // (one declaration per line: the emulation rewrites each)
  __shared__ unsigned long long mask_hi;
  __shared__ unsigned int prefix_lo;
  __shared__ unsigned int mask_lo;
  __shared__ long long remaining;
  __shared__ bool settled;
  __shared__ int selected_count;
  const int tid = threadIdx.x;
  if (take <= 0) return;
  if (tid == 0) prefix_hi = 0, mask_hi = 0, prefix_lo = 0, mask_lo = 0, remaining = take, settled = false, selected_count = 0;
  auto digit = [](const RankKey& k, int pass) -> int {
    return pass < kHiBytes ? static_cast<int>(k.hi >> (8 * (kHiBytes - 1 - pass)) & 0xffu)
                           : static_cast<int>(k.lo >> (8 * (kBytes - 1 - pass)) & 0xffu);
  };
  for (int pass = 0; pass < kBytes; ++pass) {
    __syncthreads();  // the previous pass's scan of the histogram is done; tid 0's prefix is visible
    if (settled) break;  // uniform: read after the barrier by every thread
    for (int b = tid; b < 256; b += kThreads) histogram[b] = 0;
    __syncthreads();  // the histogram is zeroed before any thread counts into it
    const unsigned long long ph = prefix_hi, mh = mask_hi;
    const unsigned int pl = prefix_lo, ml = mask_lo;
    for (int64_t c = tid; c < count; c += kThreads) {
      if (!is_candidate(c)) continue;
      const RankKey k = key(c);
      if ((k.hi & mh) == ph && (k.lo & ml) == pl) atomicAdd(&histogram[digit(k, pass)], 1);
    }
    __syncthreads();
    if (tid == 0) {
      long long above = 0;
      int d = 255;
      for (; d > 0 && above + histogram[d] < remaining; --d) above += histogram[d];
      remaining -= above;
      settled = histogram[d] == remaining;  // the whole bucket is taken: the prefix is the threshold
      if (pass < kHiBytes) {
        const int shift = 8 * (kHiBytes - 1 - pass);
        prefix_hi |= static_cast<unsigned long long>(d) << shift, mask_hi |= 0xffull << shift;
      } else {
        const int shift = 8 * (kBytes - 1 - pass);
        prefix_lo |= static_cast<unsigned int>(d) << shift, mask_lo |= 0xffu << shift;
      }
    }
  }
  __syncthreads();
  // the threshold: the prefix found, lower digits zero; exactly `take` candidates have a key >= it
  const RankKey threshold{prefix_hi, prefix_lo};
  for (int64_t c = tid; c < count; c += kThreads) {
    if (!is_candidate(c)) continue;
    const RankKey k = key(c);
    if (key_greater(threshold, k)) continue;
    const int slot = atomicAdd(&selected_count, 1);
    if (slot < take) selected[slot] = c;  // always (exactly `take` keys reach the threshold); never past the scratch
  }
  __syncthreads();  // every selected index written (global memory, visible within the block after the barrier)
  for (int64_t s = tid; s < take; s += kThreads) {
    const int64_t c = selected[s];
    const RankKey k = key(c);
    int64_t rank = 0;
    for (int64_t o = 0; o < take; ++o) rank += key_greater(key(selected[o]), k);
    out[rank] = c;
  }
}

// Calls f.template operator()<scalar_t>() for z's dtype.
template <class F>
cudaError_t dispatch_dtype(Dtype dtype, F&& f) {
  switch (dtype) {
    case Dtype::Float16: return f(__half{});
    case Dtype::BFloat16: return f(__nv_bfloat16{});
    case Dtype::Float32: return f(float{});
    case Dtype::Float64: return f(double{});
  }
  return cudaErrorInvalidValue;
}

// ---- workspace --------------------------------------------------------------------------------------
// One allocation carved into 256-byte-aligned pieces; the same code computes the size (base == nullptr)
// and the pointers, so the two cannot disagree.
struct Carver {
  char* base;
  size_t used = 0;
  template <typename T>
  T* take(int64_t count) {
    size_t offset = used;
    used += (static_cast<size_t>(count > 0 ? count : 0) * sizeof(T) + 255) / 256 * 256;
    return base ? reinterpret_cast<T*>(base + offset) : nullptr;
  }
};

// ---- the tiled dot-product block ------------------------------------------------------------------
// A block of THREADS = (BM/TM) * (BN/TN) threads computes a BM x BN tile of dot products; thread
// (ty, tx) owns rows ty + r*TY and columns tx + c*TX (interleaved: conflict-free shared reads).
template <int BM_, int BN_, int TM_, int TN_, int BK_>
struct TileConfig {
  static constexpr int BM = BM_, BN = BN_, TM = TM_, TN = TN_, BK = BK_;
  static constexpr int TY = BM / TM, TX = BN / TN, THREADS = TY * TX;
  static_assert(TX == 16, "row reductions assume 16 lanes per row (half a warp)");
  static_assert(THREADS == kThreads, "every kernel runs kThreads threads");
};
using LargeTile = TileConfig<64, 64, 4, 4, 16>;  // float accumulation
using SmallTile = TileConfig<32, 32, 2, 2, 16>;  // double accumulation (shared memory), small problems

// s[r][c] = row(row0 + ty + r*TY) . col(col0 + tx + c*TX), zero outside [0, rows) x [0, cols).
// load_row(i, k) / load_col(j, k) return element k of row i / column j in the accumulation dtype.
// Starts and ends with a __syncthreads(): the caller may write shared memory just before the call and
// read it just after.
template <class Cfg, typename A, class LoadRow, class LoadCol>
__device__ __forceinline__ void tile_dot(A (&s)[Cfg::TM][Cfg::TN], A (*As)[Cfg::BM + 1], A (*Bs)[Cfg::BN + 1],
                                         int64_t row0, int64_t rows, int64_t col0, int64_t cols, int64_t d,
                                         LoadRow load_row, LoadCol load_col) {
  const int tid = threadIdx.x, tx = tid % Cfg::TX, ty = tid / Cfg::TX;
#pragma unroll
  for (int r = 0; r < Cfg::TM; ++r)
#pragma unroll
    for (int c = 0; c < Cfg::TN; ++c) s[r][c] = A(0);
  for (int64_t k0 = 0; k0 < d; k0 += Cfg::BK) {
    __syncthreads();
    for (int e = tid; e < Cfg::BM * Cfg::BK; e += Cfg::THREADS) {
      const int r = e / Cfg::BK, k = e % Cfg::BK;
      const int64_t i = row0 + r, kk = k0 + k;
      As[k][r] = (i < rows && kk < d) ? load_row(i, kk) : A(0);
    }
    for (int e = tid; e < Cfg::BN * Cfg::BK; e += Cfg::THREADS) {
      const int c = e / Cfg::BK, k = e % Cfg::BK;
      const int64_t j = col0 + c, kk = k0 + k;
      Bs[k][c] = (j < cols && kk < d) ? load_col(j, kk) : A(0);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < Cfg::BK; ++k) {
      A a[Cfg::TM], b[Cfg::TN];
#pragma unroll
      for (int r = 0; r < Cfg::TM; ++r) a[r] = As[k][ty + r * Cfg::TY];
#pragma unroll
      for (int c = 0; c < Cfg::TN; ++c) b[c] = Bs[k][tx + c * Cfg::TX];
#pragma unroll
      for (int r = 0; r < Cfg::TM; ++r)
#pragma unroll
        for (int c = 0; c < Cfg::TN; ++c) s[r][c] = fma(a[r], b[c], s[r][c]);
    }
  }
  __syncthreads();
}

// ---- the tensor-core tile product (float16 / bfloat16 z) ------------------------------------------
// For half-precision z the batch x batch similarity tiles run on tensor cores: nvcuda::wmma 16 x 16 x 16
// fragments of z's dtype, float accumulation (each product of two rounded inputs is exact in float, the
// sums are float, as on the CUDA cores). float32 stays on CUDA cores (exact IEEE FMA), float64 on FP64.
// bf16 fragments need sm_80, the oldest target of the build; below it (and only there) the CUDA-core
// path is compiled instead. The host pass (no __CUDA_ARCH__) and the CPU emulation take the tensor cores.
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#define RCCL_TENSOR_CORES 0
#else
#define RCCL_TENSOR_CORES 1
#endif
template <typename T> struct TensorCores { static constexpr bool value = false; };
template <> struct TensorCores<__half> { static constexpr bool value = RCCL_TENSOR_CORES != 0; };
template <> struct TensorCores<__nv_bfloat16> { static constexpr bool value = RCCL_TENSOR_CORES != 0; };

// The tile's fragments over the block's 8 warps: 64 x 64 has 16, two per warp (one row of A, two
// columns of B); 32 x 32 has 4, one per warp for warps 0..3 (warps 4..7 skip the collectives, whole
// warps, as wmma requires). Features go through shared memory in chunks of KC (two 16-deep mma steps).
template <class Cfg>
struct MmaTile {
  static constexpr int KC = 32;
  static constexpr int LD = KC + 8;        // ldm of the z tiles: a multiple of 8 elements, rows 80 bytes apart
  static constexpr int SLD = Cfg::BN + 4;  // ldm of the float result tile: a multiple of 4 floats
  static constexpr int FM = Cfg::BM / 16, FN = Cfg::BN / 16, WARPS = kThreads / 32;
  static constexpr int PER_WARP = FM * FN >= WARPS ? FM * FN / WARPS : 1;
  static constexpr int ACTIVE = FM * FN / PER_WARP;  // warps holding fragments
  static_assert(Cfg::BM % 16 == 0 && Cfg::BN % 16 == 0 && FN % PER_WARP == 0 && ACTIVE <= WARPS, "fragment grid");
};

// s[r][c] = z_(row0 + ty + r*TY) . z_(col0 + tx + c*TX), thread (ty, tx) as tile_dot, zero outside
// [0, rows) x [0, cols) (both batch rows of z) and past d. The caller's shared memory, each declared
// __align__(32) (wmma's pointers must be 32-byte aligned): Zr, Zc (BM x LD, BN x LD of z's dtype) take
// the rows and the columns of the tile KC features at a time (matrix_a row-major, matrix_b column-major);
// Ss (BM x SLD floats) takes the accumulators, and each thread reads its s from it. Starts and ends with a
// __syncthreads(): the caller may write these (and any shared memory) just before the call and after it.
template <class Cfg, typename scalar_t>
__device__ void tile_dot_tc(float (&s)[Cfg::TM][Cfg::TN], scalar_t (*Zr)[MmaTile<Cfg>::LD],
                            scalar_t (*Zc)[MmaTile<Cfg>::LD], float (*Ss)[MmaTile<Cfg>::SLD], const scalar_t* z,
                            int64_t row0, int64_t rows, int64_t col0, int64_t cols, int64_t d) {
  namespace wmma = nvcuda::wmma;
  using M = MmaTile<Cfg>;
  const int tid = threadIdx.x, warp = tid / 32, tx = tid % Cfg::TX, ty = tid / Cfg::TX;
  const int fm = warp * M::PER_WARP / M::FN, fn0 = warp * M::PER_WARP % M::FN;
  const bool active = warp < M::ACTIVE;  // warp-uniform
  const scalar_t zero = from_acc<scalar_t>(0.0f);
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[M::PER_WARP];
  if (active)
#pragma unroll
    for (int p = 0; p < M::PER_WARP; ++p) wmma::fill_fragment(acc[p], 0.0f);
  for (int64_t k0 = 0; k0 < d; k0 += M::KC) {
    __syncthreads();  // the previous chunk's fragments are loaded; the caller's writes are done
    for (int e = tid; e < Cfg::BM * M::KC; e += kThreads) {
      const int r = e / M::KC, k = e % M::KC;
      const int64_t i = row0 + r, kk = k0 + k;
      Zr[r][k] = (i < rows && kk < d) ? z[i * d + kk] : zero;
    }
    for (int e = tid; e < Cfg::BN * M::KC; e += kThreads) {
      const int c = e / M::KC, k = e % M::KC;
      const int64_t j = col0 + c, kk = k0 + k;
      Zc[c][k] = (j < cols && kk < d) ? z[j * d + kk] : zero;
    }
    __syncthreads();
    if (active) {
#pragma unroll
      for (int ks = 0; ks < M::KC; ks += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, scalar_t, wmma::row_major> fa;
        wmma::load_matrix_sync(fa, &Zr[fm * 16][ks], M::LD);
#pragma unroll
        for (int p = 0; p < M::PER_WARP; ++p) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, scalar_t, wmma::col_major> fb;
          wmma::load_matrix_sync(fb, &Zc[(fn0 + p) * 16][ks], M::LD);
          wmma::mma_sync(acc[p], fa, fb, acc[p]);
        }
      }
    }
  }
  if (active)
#pragma unroll
    for (int p = 0; p < M::PER_WARP; ++p)
      wmma::store_matrix_sync(&Ss[fm * 16][(fn0 + p) * 16], acc[p], M::SLD, wmma::mem_row_major);
  __syncthreads();  // the whole tile stored
#pragma unroll
  for (int r = 0; r < Cfg::TM; ++r)
#pragma unroll
    for (int c = 0; c < Cfg::TN; ++c) s[r][c] = Ss[ty + r * Cfg::TY][tx + c * Cfg::TX];
  __syncthreads();  // every thread has its s: Ss may be overwritten
}

// ---- reductions -------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
  // butterfly: every lane ends with the bit-identical sum (a + b == b + a exactly)
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block, returned to every thread. `scratch` holds kThreads / 32 values.
template <typename T>
__device__ T block_sum(T v, T* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = T(0);
  for (int w = 0; w < kThreads / 32; ++w) total += scratch[w];  // fixed order: deterministic
  return total;
}

// A candidate of a top-k selection: higher score wins, ties go to the lower index; idx < 0 = none.
template <typename A>
struct Best {
  A score;
  int64_t idx;
};
template <typename A>
__device__ __forceinline__ bool beats(const Best<A>& a, const Best<A>& b) {
  return a.idx >= 0 && (b.idx < 0 || a.score > b.score || (a.score == b.score && a.idx < b.idx));
}
template <typename A>
__device__ __forceinline__ Best<A> warp_best(Best<A> v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    Best<A> o{__shfl_xor_sync(0xffffffffu, v.score, offset), __shfl_xor_sync(0xffffffffu, v.idx, offset)};
    if (beats(o, v)) v = o;
  }
  return v;
}
// The block's best, returned to every thread. `scratch` holds kThreads / 32 entries.
template <typename A>
__device__ Best<A> block_best(Best<A> v, Best<A>* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_best(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  Best<A> best{A(0), -1};
  for (int w = 0; w < kThreads / 32; ++w)
    if (beats(scratch[w], best)) best = scratch[w];
  return best;
}

inline unsigned int blocks_for(int64_t work, int64_t per_block) {
  return static_cast<unsigned int>((work + per_block - 1) / per_block);
}

}  // namespace rccl_cuda
