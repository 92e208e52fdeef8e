// Backward of rccl::real_centric_loss on CUDA (rccl::_real_centric_loss_backward): three launches, no host
// synchronisation, memory O(N·D).
//
// With w_i = grad_loss / (anchors with a positive) for an anchor with a positive (else 0),
// p(i, a) = exp(logit(i, a) - lse_i) and y(i, a) = [a in P(i)]:
//   G(i, a)   = w_i (p(i, a) - y(i, a) / |P(i)|)      for a in A(i), else 0
//   dL/dz_i   = (1/T) sum_a G(i, a) c_a               (i as the anchor: anchor_rows pass)
//             + (1/T) sum_k G(k, i) z_k               (i as a contrast member of the other anchors: member_rows pass)
// Both passes recompute the similarities tile by tile (as flash-attention's backward does) instead of
// storing G; the first writes a float accumulator, the second adds to it and writes grad_z. No atomics:
// the result is deterministic. |P(i)| = n_{y_i} - 1 + e_{y_i} depends only on the class of i, so one
// single-block launch (coefficients_kernel) computes the per-class scale and 1 / |P| from the labels.
#include "common.cuh"

namespace rccl_cuda {
namespace {

constexpr int kTD = 8;  // output features per thread: a block covers 16 * kTD = 128 features of its rows

template <typename scalar_t, typename A>
struct BackwardArgs {
  const A* grad_loss;
  const scalar_t* z;
  const int64_t* labels;
  const A* extra;
  const int64_t* extra_labels;
  const A* lse;
  int64_t n, d, e;
  A inv_t, margin;
  scalar_t* grad_z;
  // workspace
  A* coefficients;   // [w for class 0, w for class 1, 1/|P| for class 0, 1/|P| for class 1]
  A* accumulator;    // (n, d): the anchor pass; aliases grad_z when scalar_t is the accumulation dtype
};

template <typename scalar_t, typename A>
Carver carve(BackwardArgs<scalar_t, A>* a, const BackwardProblem& p, char* base) {
  Carver c{base};
  A* coefficients = c.take<A>(4);
  constexpr bool same = sizeof(scalar_t) == sizeof(A);
  A* accumulator = same ? nullptr : c.take<A>(p.n * p.d);
  if (a) {
    a->coefficients = coefficients;
    a->accumulator = same ? reinterpret_cast<A*>(a->grad_z) : accumulator;
  }
  return c;
}

template <typename scalar_t, typename A>
__global__ void __launch_bounds__(kThreads) coefficients_kernel(BackwardArgs<scalar_t, A> a) {
  __shared__ int scratch[kThreads / 32];
  int fakes = 0, extra_natural = 0, extra_fake = 0;
  for (int64_t j = threadIdx.x; j < a.n; j += kThreads) fakes += a.labels[j] == 1;
  for (int64_t j = threadIdx.x; j < a.e; j += kThreads) {
    extra_natural += a.extra_labels[j] == 0;
    extra_fake += a.extra_labels[j] == 1;
  }
  fakes = block_sum(fakes, scratch);
  extra_natural = block_sum(extra_natural, scratch);
  extra_fake = block_sum(extra_fake, scratch);
  if (threadIdx.x != 0) return;
  const int64_t members[2] = {a.n - fakes, fakes};
  const int64_t positives[2] = {members[0] - 1 + extra_natural, members[1] - 1 + extra_fake};
  int64_t anchors = 0;
  for (int c = 0; c < 2; ++c)
    if (members[c] > 0 && positives[c] > 0) anchors += members[c];
  const A w = anchors > 0 ? *a.grad_loss / A(anchors) : A(0);
  for (int c = 0; c < 2; ++c) {
    const bool has = members[c] > 0 && positives[c] > 0;
    a.coefficients[c] = has ? w : A(0);
    a.coefficients[2 + c] = has ? A(1) / A(positives[c]) : A(0);
  }
}

// kAnchorRows: the block's rows are anchors i, its columns the contrast set a in [0, n + e), and it
// computes sum_a G(i, a) c_a. Otherwise its rows are batch members j, its columns the anchors k in
// [0, n), and it computes sum_k G(k, j) z_k.
template <class Cfg, bool kAnchorRows, typename scalar_t, typename A>
__global__ void __launch_bounds__(kThreads) gradient_kernel(BackwardArgs<scalar_t, A> a) {
  constexpr int DC = Cfg::TX * kTD, CK = 16;
  __shared__ A As[Cfg::BK][Cfg::BM + 1];
  __shared__ A Bs[Cfg::BK][Cfg::BN + 1];
  __shared__ A Gs[Cfg::BM][Cfg::BN + 1];
  __shared__ A Cs[CK][DC];
  __shared__ int column_label[Cfg::BN];  // -1: not a column of this pass
  __shared__ A column_lse[Cfg::BN];      // member pass: the column anchor's lse, w and 1/|P|
  __shared__ A column_w[Cfg::BN];
  __shared__ A column_inv_p[Cfg::BN];
  const int tid = threadIdx.x, tx = tid % Cfg::TX, ty = tid / Cfg::TX;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * Cfg::BM;
  const int64_t d0 = static_cast<int64_t>(blockIdx.y) * DC;
  const int64_t columns = kAnchorRows ? a.n + a.e : a.n;
  const A w_class[2] = {a.coefficients[0], a.coefficients[1]};
  const A inv_p_class[2] = {a.coefficients[2], a.coefficients[3]};

  int64_t row_label[Cfg::TM];
  A row_lse[Cfg::TM], row_w[Cfg::TM], row_inv_p[Cfg::TM];
#pragma unroll
  for (int r = 0; r < Cfg::TM; ++r) {
    const int64_t i = row0 + ty + r * Cfg::TY;
    row_label[r] = i < a.n ? a.labels[i] : -1;
    const bool is_class = row_label[r] == 0 || row_label[r] == 1;
    row_lse[r] = i < a.n ? a.lse[i] : A(0);
    row_w[r] = is_class ? w_class[row_label[r]] : A(0);
    row_inv_p[r] = is_class ? inv_p_class[row_label[r]] : A(0);
  }
  A acc[Cfg::TM][kTD];
#pragma unroll
  for (int r = 0; r < Cfg::TM; ++r)
#pragma unroll
    for (int j = 0; j < kTD; ++j) acc[r][j] = A(0);

  auto load_row = [&](int64_t i, int64_t k) -> A { return to_acc(a.z[i * a.d + k]); };
  auto load_col = [&](int64_t j, int64_t k) -> A {
    return j < a.n ? to_acc(a.z[j * a.d + k]) : a.extra[(j - a.n) * a.d + k];
  };

  for (int64_t col0 = 0; col0 < columns; col0 += Cfg::BN) {
    __syncthreads();  // the previous tile's readers of the column arrays and Gs are done
    if (tid < Cfg::BN) {
      const int64_t j = col0 + tid;
      int label = -1;
      if (j < a.n) label = static_cast<int>(a.labels[j]);
      else if (j < columns) label = static_cast<int>(a.extra_labels[j - a.n]);
      column_label[tid] = label;
      if (!kAnchorRows) {
        const bool is_class = label == 0 || label == 1;
        column_lse[tid] = j < a.n ? a.lse[j] : A(0);
        column_w[tid] = is_class ? w_class[label] : A(0);
        column_inv_p[tid] = is_class ? inv_p_class[label] : A(0);
      }
    }
    A s[Cfg::TM][Cfg::TN];
    tile_dot<Cfg>(s, As, Bs, row0, a.n, col0, columns, a.d, load_row, load_col);
#pragma unroll
    for (int r = 0; r < Cfg::TM; ++r) {
      const int64_t i = row0 + ty + r * Cfg::TY;
#pragma unroll
      for (int c = 0; c < Cfg::TN; ++c) {
        const int cc = tx + c * Cfg::TX;
        const int64_t j = col0 + cc;
        const int label = column_label[cc];
        // (anchor, member) = (i, j) in the anchor pass, (j, i) in the member pass
        const A w = kAnchorRows ? row_w[r] : column_w[cc];
        const bool in_a = i < a.n && label >= 0 && j != i && w != A(0);
        A g = A(0);
        if (in_a) {
          const bool positive = label == row_label[r];
          const A lse = kAnchorRows ? row_lse[r] : column_lse[cc];
          const A inv_p = kAnchorRows ? row_inv_p[r] : column_inv_p[cc];
          const A logit = (s[r][c] - (positive ? a.margin : A(0))) * a.inv_t;
          g = w * (acc_exp(logit - lse) - (positive ? inv_p : A(0)));
        }
        Gs[ty + r * Cfg::TY][cc] = g;
      }
    }
    // acc[rows][d0 .. d0 + DC) += Gs (BM x BN) @ columns (BN x DC), CK columns at a time
    for (int k0 = 0; k0 < Cfg::BN; k0 += CK) {
      __syncthreads();  // Gs written; the previous Cs consumed
      for (int e = tid; e < CK * DC; e += kThreads) {
        const int kk = e / DC, dd = e % DC;
        const int64_t j = col0 + k0 + kk, k = d0 + dd;
        Cs[kk][dd] = (j < columns && k < a.d) ? load_col(j, k) : A(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < CK; ++kk) {
#pragma unroll
        for (int r = 0; r < Cfg::TM; ++r) {
          const A g = Gs[ty + r * Cfg::TY][k0 + kk];
#pragma unroll
          for (int jd = 0; jd < kTD; ++jd) acc[r][jd] = fma(g, Cs[kk][tx + jd * Cfg::TX], acc[r][jd]);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < Cfg::TM; ++r) {
    const int64_t i = row0 + ty + r * Cfg::TY;
    if (i >= a.n) continue;
#pragma unroll
    for (int jd = 0; jd < kTD; ++jd) {
      const int64_t k = d0 + tx + jd * Cfg::TX;
      if (k >= a.d) continue;
      const A value = acc[r][jd] * a.inv_t;
      if (kAnchorRows) {
        a.accumulator[i * a.d + k] = value;
      } else {  // same thread read and write: safe when accumulator aliases grad_z
        a.grad_z[i * a.d + k] = from_acc<scalar_t>(a.accumulator[i * a.d + k] + value);
      }
    }
  }
}

template <class Cfg, typename scalar_t>
cudaError_t backward_tiled(const BackwardProblem& p, cudaStream_t stream) {
  using A = typename AccOf<scalar_t>::type;
  BackwardArgs<scalar_t, A> a{};
  a.grad_loss = static_cast<const A*>(p.grad_loss);
  a.z = static_cast<const scalar_t*>(p.z);
  a.labels = p.labels;
  a.extra = static_cast<const A*>(p.extra);
  a.extra_labels = p.extra_labels;
  a.lse = static_cast<const A*>(p.lse);
  a.n = p.n, a.d = p.d, a.e = p.e;
  a.inv_t = static_cast<A>(1.0 / p.temperature), a.margin = static_cast<A>(p.margin);
  a.grad_z = static_cast<scalar_t*>(p.grad_z);
  carve<scalar_t, A>(&a, p, static_cast<char*>(p.workspace));

  coefficients_kernel<scalar_t, A><<<1, kThreads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const dim3 grid(blocks_for(p.n, Cfg::BM), blocks_for(p.d, Cfg::TX * kTD));
  gradient_kernel<Cfg, true, scalar_t, A><<<grid, kThreads, 0, stream>>>(a);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  gradient_kernel<Cfg, false, scalar_t, A><<<grid, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t backward_typed(const BackwardProblem& p, cudaStream_t stream) {
  if constexpr (sizeof(typename AccOf<scalar_t>::type) == 8) {
    return backward_tiled<SmallTile, scalar_t>(p, stream);
  } else {
    return p.small_tiles ? backward_tiled<SmallTile, scalar_t>(p, stream) : backward_tiled<LargeTile, scalar_t>(p, stream);
  }
}

}  // namespace

size_t backward_workspace_bytes(const BackwardProblem& p) {
  size_t bytes = 0;
  dispatch_dtype(p.dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    bytes = carve<scalar_t, typename AccOf<scalar_t>::type>(nullptr, p, nullptr).used;
    return cudaSuccess;
  });
  return bytes;
}

cudaError_t launch_backward(const BackwardProblem& p, cudaStream_t stream) {
  if (p.n <= 0 || p.d <= 0) return cudaErrorInvalidValue;
  return dispatch_dtype(p.dtype, [&](auto zero) { return backward_typed<decltype(zero)>(p, stream); });
}

}  // namespace rccl_cuda
