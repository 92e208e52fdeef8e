// Backward of rccl::real_centric_loss on CUDA (rccl::_real_centric_loss_backward): two launches (three for
// half-precision z), no host synchronisation, memory O(N·D).
//
// With w_i = grad_loss / (anchors with a positive) for an anchor with a positive (else 0),
// p(i, a) = exp(logit(i, a) - lse_i) and y(i, a) = [a in P(i)]:
//   G(i, a)   = w_i (p(i, a) - y(i, a) / |P(i)|)      for a in A(i), else 0
//   dL/dz_i   = (1/T) sum_a G(i, a) c_a               (i as the anchor)
//             + (1/T) sum_k G(k, i) z_k               (i as a contrast member of the other anchors)
// The transpose fold: on the batch part S(i, j) = z_i . z_j is symmetric and so is the logit (the margin
// applies when the labels are equal), so a tile (I, J), I <= J, computes S once and
//   H = (G_IJ + G_JI^T) / T,   dZ_I += H z_J,   dZ_J += H^T z_I   (for I == J only dZ_I += H z_I)
// and the extra columns X add G_IX c_X / T to dZ_I. That is 1.5 products for the batch part instead of the
// 4 of two separate passes (anchor rows, then member rows), each recomputing S.
// 1. prepare_kernel  zeroes the float accumulator (grad_z itself for float32/float64 z); block 0 computes
//                    the per-class w and 1/|P| from the labels (|P(i)| = n_c - 1 + e_c depends only on
//                    the class c of i) and grad_loss on the device
// 2. fold_kernel     block (row tile I, strip of column tiles J >= I, then the extra tiles): keeps dZ_I in
//                    registers over its strip, adds H^T z_I to dZ_J with fp32 (fp64) atomics per tile,
//                    flushes dZ_I with atomics at the end
// 3. finalize_kernel (half-precision z only) rounds the accumulator into grad_z
// The atomics make the gradient's summation order vary from run to run (relative differences ~1e-7 in
// float32, ~1e-16 in float64); the forward stays bit-identical. A deterministic two-phase write would
// need a partial (N, D) per column strip (O(N^2 D / 64) memory) or a second pass over the tiles.
#include "common.cuh"

#include <algorithm>

namespace rccl_cuda {
namespace {

constexpr int kTD = 8;  // output features per thread: a block covers 16 * kTD = 128 features of its rows
constexpr int64_t kTargetBlocks = 4 * 132;  // strips are sized so that the fold grid has about this many blocks
constexpr unsigned int kPrepareBlocks = 256;  // grid-stride zeroing of the accumulator

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
  // the fold grid: row tiles, extra tiles, column tiles per strip (see fold_tiles)
  int64_t row_tiles, extra_tiles, strip;
  // workspace
  A* coefficients;   // [w for class 0, w for class 1, 1/|P| for class 0, 1/|P| for class 1]
  A* accumulator;    // (n, d), zeroed by prepare_kernel; aliases grad_z when scalar_t is the accumulation dtype
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
__global__ void __launch_bounds__(kThreads) prepare_kernel(BackwardArgs<scalar_t, A> a) {
  const int64_t total = a.n * a.d;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * kThreads)
    a.accumulator[k] = A(0);
  if (blockIdx.x != 0) return;
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

// The column tiles of row tile I: the batch tiles J = I .. T - 1, then the X extra tiles (index T .. T + X - 1),
// cut into strips of `strip` tiles, one block each. Block b -> (I, first tile, end tile).
struct FoldGrid {
  int64_t row_tiles, extra_tiles, strip, blocks;
};
__host__ __device__ inline int64_t strips_of_row(int64_t row_tiles, int64_t extra_tiles, int64_t strip, int64_t i) {
  return (row_tiles - i + extra_tiles + strip - 1) / strip;
}
inline FoldGrid fold_grid(int64_t n, int64_t e, int64_t bm, int64_t target_blocks) {
  const int64_t target = target_blocks > 0 ? target_blocks : kTargetBlocks;
  FoldGrid g{};
  g.row_tiles = (n + bm - 1) / bm;
  g.extra_tiles = (e + bm - 1) / bm;
  const int64_t tiles = g.row_tiles * (g.row_tiles + 1) / 2 + g.row_tiles * g.extra_tiles;
  g.strip = tiles > target ? (tiles + target - 1) / target : 1;
  for (int64_t i = 0; i < g.row_tiles; ++i) g.blocks += strips_of_row(g.row_tiles, g.extra_tiles, g.strip, i);
  return g;
}

// The fold's two H products of a batch tile on tensor cores (half-precision z): H is scaled by a power of
// two (exact) that brings max |H| <= 2 w_max / T to [0.5, 2), then rounded to z's dtype: at large N,
// H ~ w / T ~ 1 / (N T) would fall into float16's subnormals unscaled. The output goes FC features at a
// time (the DC features of the block in CHUNKS chunks), one 16 x 16 fragment per warp and chunk: warp w <
// ACTIVE takes fragment row w % FM, column w / FM of the chunk. dZ_I's fragments stay in registers over
// the strip (scaled; unscaled when flushed), dZ_J's are staged through Cs into the atomics per tile.
template <class Cfg>
struct FoldMma {
  using M = MmaTile<Cfg>;
  static constexpr int DC = Cfg::TX * kTD;  // the block's features
  static constexpr int FC = 32, CHUNKS = DC / FC;
  static constexpr int HLD = Cfg::BN + 8;  // ldm of the rounded H: a multiple of 8 elements
  static constexpr int FM = Cfg::BM / 16, ACTIVE = FM * (FC / 16);
  static_assert(Cfg::BM == Cfg::BN && DC % FC == 0 && ACTIVE <= kThreads / 32 && FC <= M::LD, "fold fragments");
};
// dZ_I's accumulators of the tensor-core path (nothing for the CUDA-core path, which keeps dZ_I in acc)
template <class Cfg, bool kTensorCores>
struct FoldFragments {};
template <class Cfg>
struct FoldFragments<Cfg, true> {
  nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> dz_i[FoldMma<Cfg>::CHUNKS];
};

// The fold's two ways of adding a share of dZ into the (n, d) accumulator (atomics: several blocks add to
// the same rows). A thread's register block: its rows first_row + r * TY, its features first_k + jd * TX.
template <class Cfg, int ROWS, typename A>
__device__ __forceinline__ void flush_block(A* accumulator, int64_t n, int64_t d, int64_t first_row, int64_t first_k,
                                            const A (&block)[ROWS][kTD]) {
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const int64_t i = first_row + r * Cfg::TY;
    if (i >= n) continue;
#pragma unroll
    for (int jd = 0; jd < kTD; ++jd) {
      const int64_t k = first_k + jd * Cfg::TX;
      if (k < d) atomicAdd(&accumulator[i * d + k], block[r][jd]);
    }
  }
}
// A staged chunk of the tensor-core path: ROWS x FC floats for rows row0.., features k0.., unscaled as added.
template <int ROWS, int FC, typename A>
__device__ __forceinline__ void flush_staged(A* accumulator, int64_t n, int64_t d, const float (*stage)[FC],
                                             int64_t row0, int64_t k0, float unscale, int tid) {
  for (int e = tid; e < ROWS * FC; e += kThreads) {
    const int64_t i = row0 + e / FC, k = k0 + e % FC;
    if (i < n && k < d) atomicAdd(&accumulator[i * d + k], stage[e / FC][e % FC] * unscale);
  }
}

template <class Cfg, typename scalar_t, typename A>
__global__ void __launch_bounds__(kThreads) fold_kernel(BackwardArgs<scalar_t, A> a) {
  static_assert(Cfg::BM == Cfg::BN, "the fold transposes square tiles");
  constexpr int DC = Cfg::TX * kTD, CK = 16;
  __shared__ A As[Cfg::BK][Cfg::BM + 1];
  __shared__ A Bs[Cfg::BK][Cfg::BN + 1];
  __shared__ __align__(32) A Hs[Cfg::BM][MmaTile<Cfg>::SLD];  // H; for half-precision z first the S tile
  __shared__ __align__(32) A Cs[CK][DC];  // z chunks (CUDA cores); the tensor cores' output staging
  // the tensor-core tile's z chunks (half-precision z; a single row otherwise)
  __shared__ __align__(32) scalar_t Zr[TensorCores<scalar_t>::value ? Cfg::BM : 1][MmaTile<Cfg>::LD];
  __shared__ __align__(32) scalar_t Zc[TensorCores<scalar_t>::value ? Cfg::BN : 1][MmaTile<Cfg>::LD];
  __shared__ int column_label[Cfg::BN];  // -1: not a column (absent extra row, past the end)
  __shared__ A column_lse[Cfg::BN];      // batch columns as anchors: lse, w and 1/|P|
  __shared__ A column_w[Cfg::BN];
  __shared__ A column_inv_p[Cfg::BN];
  const int tid = threadIdx.x, tx = tid % Cfg::TX, ty = tid / Cfg::TX;

  // this block's row tile and strip (a loop over at most row_tiles rows: cheap next to the tile work)
  int64_t I = 0, b = blockIdx.x;
  for (int64_t strips; b >= (strips = strips_of_row(a.row_tiles, a.extra_tiles, a.strip, I)); ++I) b -= strips;
  const int64_t tile_begin = I + b * a.strip;
  const int64_t tile_end = tile_begin + a.strip < a.row_tiles + a.extra_tiles ? tile_begin + a.strip : a.row_tiles + a.extra_tiles;
  const int64_t row0 = I * Cfg::BM;
  const int64_t d0 = static_cast<int64_t>(blockIdx.y) * DC;
  const int64_t columns = a.n + a.e;
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
  A acc[Cfg::TM][kTD];  // dZ_I over the strip (CUDA-core path; the tensor-core path keeps it in fragments)
#pragma unroll
  for (int r = 0; r < Cfg::TM; ++r)
#pragma unroll
    for (int j = 0; j < kTD; ++j) acc[r][j] = A(0);
  constexpr bool kTensorCores = TensorCores<scalar_t>::value;
  using FM = FoldMma<Cfg>;
  namespace wmma = nvcuda::wmma;
  [[maybe_unused]] const int warp = tid / 32;
  [[maybe_unused]] const int frag_row = warp % FM::FM, frag_col = warp / FM::FM;
  [[maybe_unused]] const bool frag_warp = warp < FM::ACTIVE;  // warp-uniform
  [[maybe_unused]] FoldFragments<Cfg, kTensorCores> frags;
  [[maybe_unused]] float h_scale = 1.0f, h_unscale = 1.0f;
  if constexpr (kTensorCores) {
    if (frag_warp)
#pragma unroll
      for (int ch = 0; ch < FM::CHUNKS; ++ch) wmma::fill_fragment(frags.dz_i[ch], 0.0f);
    const float w_abs = fabsf(w_class[0]) > fabsf(w_class[1]) ? fabsf(w_class[0]) : fabsf(w_class[1]);
    const float h_max = w_abs * fabsf(a.inv_t);
    if (h_max > 0.0f && is_finite_value(h_max)) {
      int exponent = 0;
      frexpf(h_max, &exponent);  // h_max = m 2^exponent, m in [0.5, 1)
      h_scale = ldexpf(1.0f, -exponent), h_unscale = ldexpf(1.0f, exponent);
    }
  }

  auto load_z = [&](int64_t i, int64_t k) -> A { return to_acc(a.z[i * a.d + k]); };
  auto load_col = [&](int64_t j, int64_t k) -> A {
    return j < a.n ? to_acc(a.z[j * a.d + k]) : a.extra[(j - a.n) * a.d + k];
  };

  for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
    const bool extra_tile = tile >= a.row_tiles;
    const int64_t col0 = extra_tile ? a.n + (tile - a.row_tiles) * Cfg::BN : tile * Cfg::BN;
    const int64_t col_end = extra_tile ? columns : a.n;
    const bool transpose = !extra_tile && tile != I;  // dZ_J += H^T z_I
    __syncthreads();  // the previous tile's readers of the column arrays, Hs and Cs are done
    if (tid < Cfg::BN) {
      const int64_t j = col0 + tid;
      int label = -1;
      if (j < col_end) label = static_cast<int>(j < a.n ? a.labels[j] : a.extra_labels[j - a.n]);
      column_label[tid] = label;
      const bool batch_class = j < a.n && (label == 0 || label == 1);
      column_lse[tid] = batch_class ? a.lse[j] : A(0);
      column_w[tid] = batch_class ? w_class[label] : A(0);
      column_inv_p[tid] = batch_class ? inv_p_class[label] : A(0);
    }
    A s[Cfg::TM][Cfg::TN];
    if constexpr (TensorCores<scalar_t>::value) {
      // batch tiles on tensor cores, through Hs (tile_dot_tc's last barrier frees it for H); the extra
      // tiles (float rows) on CUDA cores in float
      if (!extra_tile) {
        tile_dot_tc<Cfg>(s, Zr, Zc, Hs, a.z, row0, a.n, col0, col_end, a.d);
      } else {
        tile_dot<Cfg>(s, As, Bs, row0, a.n, col0, col_end, a.d, load_z, load_col);
      }
    } else {
      tile_dot<Cfg>(s, As, Bs, row0, a.n, col0, col_end, a.d, load_z, load_col);
    }
    // H(i, j) = (G(i, j) + G(j, i)) / T; G(j, i) only for batch columns (an extra row is never an anchor)
    A hv[Cfg::TM][Cfg::TN];
#pragma unroll
    for (int r = 0; r < Cfg::TM; ++r) {
      const int64_t i = row0 + ty + r * Cfg::TY;
#pragma unroll
      for (int c = 0; c < Cfg::TN; ++c) {
        const int cc = tx + c * Cfg::TX;
        const int64_t j = col0 + cc;
        const int label = column_label[cc];
        A h = A(0);
        if (i < a.n && label >= 0 && j != i) {
          const bool positive = label == row_label[r];
          const A logit = (s[r][c] - (positive ? a.margin : A(0))) * a.inv_t;
          if (row_w[r] != A(0)) h += row_w[r] * (acc_exp(logit - row_lse[r]) - (positive ? row_inv_p[r] : A(0)));
          const A w = column_w[cc];
          if (w != A(0)) h += w * (acc_exp(logit - column_lse[cc]) - (positive ? column_inv_p[cc] : A(0)));
        }
        hv[r][c] = h * a.inv_t;
      }
    }
    if constexpr (kTensorCores) {
      if (!extra_tile) {
        // H scaled and rounded to z's dtype, into Hs's memory (free since tile_dot_tc's last barrier)
        scalar_t (*Hh)[FM::HLD] = reinterpret_cast<scalar_t (*)[FM::HLD]>(&Hs[0][0]);
        float (*stage)[FM::FC] = reinterpret_cast<float (*)[FM::FC]>(&Cs[0][0]);
#pragma unroll
        for (int r = 0; r < Cfg::TM; ++r)
#pragma unroll
          for (int c = 0; c < Cfg::TN; ++c) Hh[ty + r * Cfg::TY][tx + c * Cfg::TX] = from_acc<scalar_t>(hv[r][c] * h_scale);
        const scalar_t zero = from_acc<scalar_t>(0.0f);
        // unrolled: dz_i[ch] must be indexed by constants to stay in registers (not the local stack)
#pragma unroll
        for (int ch = 0; ch < FM::CHUNKS; ++ch) {
          const int64_t f0 = d0 + ch * FM::FC;
          if (f0 >= a.d) break;  // block-uniform
          __syncthreads();  // Hh written; the previous chunk's Zr, Zc and staging consumed
          for (int e = tid; e < Cfg::BN * FM::FC; e += kThreads) {
            const int r = e / FM::FC, f = e % FM::FC;
            const int64_t j = col0 + r, i = row0 + r, k = f0 + f;
            Zr[r][f] = (j < a.n && k < a.d) ? a.z[j * a.d + k] : zero;                // z_J
            if (transpose) Zc[r][f] = (i < a.n && k < a.d) ? a.z[i * a.d + k] : zero;  // z_I
          }
          __syncthreads();
          if (frag_warp) {
            // dZ_I[:, chunk] += H (BM x BN) z_J[:, chunk]
#pragma unroll
            for (int ks = 0; ks < Cfg::BN; ks += 16) {
              wmma::fragment<wmma::matrix_a, 16, 16, 16, scalar_t, wmma::row_major> fh;
              wmma::fragment<wmma::matrix_b, 16, 16, 16, scalar_t, wmma::row_major> fz;
              wmma::load_matrix_sync(fh, &Hh[frag_row * 16][ks], FM::HLD);
              wmma::load_matrix_sync(fz, &Zr[ks][frag_col * 16], MmaTile<Cfg>::LD);
              wmma::mma_sync(frags.dz_i[ch], fh, fz, frags.dz_i[ch]);
            }
          }
          if (!transpose) continue;
          if (frag_warp) {
            // dZ_J[:, chunk] = H^T (BN x BM) z_I[:, chunk]: H^T is Hh read column-major
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> dz_j;
            wmma::fill_fragment(dz_j, 0.0f);
#pragma unroll
            for (int ks = 0; ks < Cfg::BM; ks += 16) {
              wmma::fragment<wmma::matrix_a, 16, 16, 16, scalar_t, wmma::col_major> fht;
              wmma::fragment<wmma::matrix_b, 16, 16, 16, scalar_t, wmma::row_major> fz;
              wmma::load_matrix_sync(fht, &Hh[ks][frag_row * 16], FM::HLD);
              wmma::load_matrix_sync(fz, &Zc[ks][frag_col * 16], MmaTile<Cfg>::LD);
              wmma::mma_sync(dz_j, fht, fz, dz_j);
            }
            wmma::store_matrix_sync(&stage[frag_row * 16][frag_col * 16], dz_j, FM::FC, wmma::mem_row_major);
          }
          __syncthreads();  // dZ_J's chunk staged
          flush_staged<Cfg::BN, FM::FC>(a.accumulator, a.n, a.d, stage, col0, f0, h_unscale, tid);
        }
        continue;
      }
    }
#pragma unroll
    for (int r = 0; r < Cfg::TM; ++r)
#pragma unroll
      for (int c = 0; c < Cfg::TN; ++c) Hs[ty + r * Cfg::TY][tx + c * Cfg::TX] = hv[r][c];
    // with half-precision z only an extra tile gets here: its share of dZ_I goes to tile_acc, flushed
    // right after it, so that no float accumulator stays live beside the dZ_I fragments (registers)
    A tile_acc[Cfg::TM][kTD];
    if constexpr (kTensorCores) {
#pragma unroll
      for (int r = 0; r < Cfg::TM; ++r)
#pragma unroll
        for (int jd = 0; jd < kTD; ++jd) tile_acc[r][jd] = A(0);
    }
    A (&dz)[Cfg::TM][kTD] = kTensorCores ? tile_acc : acc;
    // dz[rows of I][d0 .. d0 + DC) += Hs (BM x BN) @ the tile's columns (BN x DC), CK columns at a time
    for (int k0 = 0; k0 < Cfg::BN; k0 += CK) {
      __syncthreads();  // Hs written; the previous Cs consumed
      for (int e = tid; e < CK * DC; e += kThreads) {
        const int kk = e / DC, dd = e % DC;
        const int64_t j = col0 + k0 + kk, k = d0 + dd;
        Cs[kk][dd] = (j < col_end && k < a.d) ? load_col(j, k) : A(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < CK; ++kk) {
#pragma unroll
        for (int r = 0; r < Cfg::TM; ++r) {
          const A h = Hs[ty + r * Cfg::TY][k0 + kk];
#pragma unroll
          for (int jd = 0; jd < kTD; ++jd) dz[r][jd] = fma(h, Cs[kk][tx + jd * Cfg::TX], dz[r][jd]);
        }
      }
    }
    if constexpr (kTensorCores) {
      flush_block<Cfg>(a.accumulator, a.n, a.d, row0 + ty, d0 + tx, tile_acc);
      continue;  // an extra tile: no transpose product
    }
    if (!transpose) continue;
    // dZ_J[d0 .. d0 + DC) += Hs^T (BN x BM) @ z_I (BM x DC): thread rows are now the tile's columns
    A acc_t[Cfg::TN][kTD];
#pragma unroll
    for (int c = 0; c < Cfg::TN; ++c)
#pragma unroll
      for (int jd = 0; jd < kTD; ++jd) acc_t[c][jd] = A(0);
    for (int k0 = 0; k0 < Cfg::BM; k0 += CK) {
      __syncthreads();  // the previous Cs consumed
      for (int e = tid; e < CK * DC; e += kThreads) {
        const int kk = e / DC, dd = e % DC;
        const int64_t i = row0 + k0 + kk, k = d0 + dd;
        Cs[kk][dd] = (i < a.n && k < a.d) ? load_z(i, k) : A(0);
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < CK; ++kk) {
#pragma unroll
        for (int c = 0; c < Cfg::TN; ++c) {
          const A h = Hs[k0 + kk][ty + c * Cfg::TY];
#pragma unroll
          for (int jd = 0; jd < kTD; ++jd) acc_t[c][jd] = fma(h, Cs[kk][tx + jd * Cfg::TX], acc_t[c][jd]);
        }
      }
    }
    flush_block<Cfg>(a.accumulator, a.n, a.d, col0 + ty, d0 + tx, acc_t);
  }

  if constexpr (kTensorCores) {
    // flush dZ_I's fragments (the batch tiles' share), unscaled, through the staging
    float (*stage)[FM::FC] = reinterpret_cast<float (*)[FM::FC]>(&Cs[0][0]);
#pragma unroll
    for (int ch = 0; ch < FM::CHUNKS; ++ch) {
      if (d0 + ch * FM::FC >= a.d) break;  // block-uniform
      __syncthreads();  // the staging's previous readers are done
      if (frag_warp)
        wmma::store_matrix_sync(&stage[frag_row * 16][frag_col * 16], frags.dz_i[ch], FM::FC, wmma::mem_row_major);
      __syncthreads();  // dZ_I's chunk staged
      flush_staged<Cfg::BM, FM::FC>(a.accumulator, a.n, a.d, stage, row0, d0 + ch * FM::FC, h_unscale, tid);
    }
    // (the extra tiles' share went out after each of them)
  } else {
    flush_block<Cfg>(a.accumulator, a.n, a.d, row0 + ty, d0 + tx, acc);
  }
}

template <typename scalar_t, typename A>
__global__ void __launch_bounds__(kThreads) finalize_kernel(BackwardArgs<scalar_t, A> a) {
  const int64_t total = a.n * a.d;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; k < total;
       k += static_cast<int64_t>(gridDim.x) * kThreads)
    a.grad_z[k] = from_acc<scalar_t>(a.accumulator[k]);
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
  const FoldGrid g = fold_grid(p.n, p.e, Cfg::BM, p.target_blocks);
  a.row_tiles = g.row_tiles, a.extra_tiles = g.extra_tiles, a.strip = g.strip;

  const unsigned int elementwise = static_cast<unsigned int>(std::min<int64_t>(kPrepareBlocks, blocks_for(p.n * p.d, kThreads)));
  prepare_kernel<scalar_t, A><<<elementwise, kThreads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned int>(g.blocks), blocks_for(p.d, Cfg::TX * kTD));
  fold_kernel<Cfg, scalar_t, A><<<grid, kThreads, 0, stream>>>(a);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  if constexpr (sizeof(scalar_t) != sizeof(A)) {
    finalize_kernel<scalar_t, A><<<elementwise, kThreads, 0, stream>>>(a);
    err = cudaGetLastError();
  }
  return err;
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
