// rccl::update_hard_banks on CUDA: three launches, no host synchronisation (the caller decides the output
// rows; see ops.cpp for the one count it reads back while a bank is still filling up).
//   1. similarity_kernel  one warp per candidate (old bank rows, then the batch rows): its similarity to
//                         the centre and whether it is a candidate of that bank (device-side label check)
//   2. rank_kernel        one block per bank: a block-wide radix select of the bank's output rows among its
//                         candidates (real bank: lower similarity first; fake bank: higher; ties: lower
//                         candidate index); the candidate of rank r claims output row r
//   3. gather_kernel      one block per output row copies the claimed candidate
// The outputs are therefore ordered hardest first, exactly as rccl/reference.py orders them.
#include "common.cuh"

namespace rccl_cuda {
namespace {

template <typename scalar_t, typename A>
struct BankArgs {
  const scalar_t* z;
  const int64_t* labels;
  const A* center;
  const A* bank[2];  // real, fake
  int64_t n, d, k[2], rows[2];
  A* out[2];
  // workspace, candidates of the real bank then of the fake bank
  A* similarity;
  int* is_candidate;
  int64_t* claimed;  // (rows[0] + rows[1],): candidate index per output row
  int64_t* selected; // (rows[0] + rows[1],): scratch of the radix select
};

template <typename scalar_t, typename A>
Carver carve(BankArgs<scalar_t, A>* a, const HardBankProblem& p, char* base) {
  Carver c{base};
  const int64_t candidates = p.k_real + p.k_fake + 2 * p.n;
  A* similarity = c.take<A>(candidates);
  int* is_candidate = c.take<int>(candidates);
  int64_t* claimed = c.take<int64_t>(p.rows_real + p.rows_fake);
  int64_t* selected = c.take<int64_t>(p.rows_real + p.rows_fake);
  if (a) a->similarity = similarity, a->is_candidate = is_candidate, a->claimed = claimed, a->selected = selected;
  return c;
}

// candidate `global` -> (bank b, index within the bank's candidate list)
template <typename scalar_t, typename A>
__device__ __forceinline__ void locate(const BankArgs<scalar_t, A>& a, int64_t global, int& b, int64_t& c) {
  const int64_t first = a.k[0] + a.n;
  b = global < first ? 0 : 1;
  c = b == 0 ? global : global - first;
}

template <typename scalar_t, typename A>
__global__ void __launch_bounds__(kThreads) similarity_kernel(BankArgs<scalar_t, A> a) {
  const int lane = threadIdx.x % 32;
  const int64_t global = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int64_t total = a.k[0] + a.k[1] + 2 * a.n;
  if (global >= total) return;  // warp-uniform
  int b;
  int64_t c;
  locate(a, global, b, c);
  A dot = A(0);
  bool candidate = true;
  if (c < a.k[b]) {
    for (int64_t k = lane; k < a.d; k += 32) dot += a.bank[b][c * a.d + k] * a.center[k];
  } else {
    const int64_t j = c - a.k[b];
    const int64_t label = a.labels[j];
    RCCL_DEVICE_ASSERT(label == 0 || label == 1, "rccl: labels must be 0 (natural) or 1 (fake)");
    candidate = label == b;
    for (int64_t k = lane; k < a.d; k += 32) {
      const A v = to_acc(a.z[j * a.d + k]);
      RCCL_DEVICE_ASSERT(is_finite_value(v), "rccl: z contains NaN or infinite values");
      dot += v * a.center[k];
    }
  }
  dot = warp_sum(dot);
  if (lane == 0) {
    a.similarity[global] = dot;
    a.is_candidate[global] = candidate;
  }
}

template <typename scalar_t, typename A>
__global__ void __launch_bounds__(kThreads) rank_kernel(BankArgs<scalar_t, A> a) {
  // block b ranks bank b's candidates (old rows, then the batch rows of its class) by a block-wide radix
  // select: the real bank the least similar to the centre first (ascending), the fake bank the most
  // similar first (descending); sort_greater's order (NaN above every number) and ties to the lower
  // candidate index make it strict and total, so each of the bank's output rows is claimed exactly once
  const int b = static_cast<int>(blockIdx.x);
  const int64_t begin = b == 0 ? 0 : a.k[0] + a.n, count = a.k[b] + a.n;
  const A* similarity = a.similarity + begin;
  const int* is_candidate = a.is_candidate + begin;
  block_select_ranked<A>(
      count, a.rows[b], [&](int64_t c) { return rank_key(similarity[c], c, b == 1); },
      [&](int64_t c) { return is_candidate[c] != 0; }, a.selected + (b == 0 ? 0 : a.rows[0]),
      a.claimed + (b == 0 ? 0 : a.rows[0]));
}

template <typename scalar_t, typename A>
__global__ void __launch_bounds__(kThreads) gather_kernel(BankArgs<scalar_t, A> a) {
  const int64_t row = blockIdx.x;
  const int b = row < a.rows[0] ? 0 : 1;
  const int64_t r = b == 0 ? row : row - a.rows[0];
  const int64_t c = a.claimed[row];
  A* out = a.out[b] + r * a.d;
  if (c < a.k[b]) {
    for (int64_t k = threadIdx.x; k < a.d; k += kThreads) out[k] = a.bank[b][c * a.d + k];
  } else {
    const scalar_t* src = a.z + (c - a.k[b]) * a.d;
    for (int64_t k = threadIdx.x; k < a.d; k += kThreads) out[k] = to_acc(src[k]);
  }
}

template <typename scalar_t>
cudaError_t hard_banks_typed(const HardBankProblem& p, cudaStream_t stream) {
  using A = typename AccOf<scalar_t>::type;
  BankArgs<scalar_t, A> a{};
  a.z = static_cast<const scalar_t*>(p.z);
  a.labels = p.labels;
  a.center = static_cast<const A*>(p.center);
  a.bank[0] = static_cast<const A*>(p.bank_real), a.bank[1] = static_cast<const A*>(p.bank_fake);
  a.n = p.n, a.d = p.d, a.k[0] = p.k_real, a.k[1] = p.k_fake, a.rows[0] = p.rows_real, a.rows[1] = p.rows_fake;
  a.out[0] = static_cast<A*>(p.out_real), a.out[1] = static_cast<A*>(p.out_fake);
  carve<scalar_t, A>(&a, p, static_cast<char*>(p.workspace));

  const int64_t total = p.k_real + p.k_fake + 2 * p.n;
  if (total == 0) return cudaSuccess;
  similarity_kernel<scalar_t, A><<<blocks_for(total, kThreads / 32), kThreads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess || p.rows_real + p.rows_fake == 0) return err;
  rank_kernel<scalar_t, A><<<2, kThreads, 0, stream>>>(a);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  gather_kernel<scalar_t, A><<<static_cast<unsigned int>(p.rows_real + p.rows_fake), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

size_t hard_banks_workspace_bytes(const HardBankProblem& p) {
  size_t bytes = 0;
  dispatch_dtype(p.dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    bytes = carve<scalar_t, typename AccOf<scalar_t>::type>(nullptr, p, nullptr).used;
    return cudaSuccess;
  });
  return bytes;
}

cudaError_t launch_hard_banks(const HardBankProblem& p, cudaStream_t stream) {
  if (p.d <= 0) return cudaErrorInvalidValue;
  return dispatch_dtype(p.dtype, [&](auto zero) { return hard_banks_typed<decltype(zero)>(p, stream); });
}

}  // namespace rccl_cuda
