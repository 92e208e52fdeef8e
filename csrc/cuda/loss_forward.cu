// Forward of rccl::real_centric_loss on CUDA: four launches, no host synchronisation, memory O(N·D).
//   1. scores_kernel    the (K_real + K_fake + 1) x N similarities of the bank rows and the centre to the
//                       batch (a tiled GEMM); block (0, 0) also counts the classes, checks labels and lam
//                       (device-side asserts) and zeroes the completion counters.
//   2. mine_kernel      one block per bank row: the top-`neighbors` class members by rounds of block-wide
//                       argmax, then the hard positive. One more block ranks the fakes by centre
//                       similarity (block_select_ranked: a block-wide radix select of the first M) into
//                       fake_slot.
//   3. negatives_kernel (slot t, split s) blocks: the natural nearest to the t-th fake over a slice of the
//                       batch; the last split of a slot to finish merges the slices and writes the mixed
//                       negative.
//   4. loss_kernel      (row tile, column split) blocks, flash-attention style: per-row online
//                       log-sum-exp, positive-logit sum and count over the split's column tiles; the last
//                       split of a row tile merges the splits' partials, the last row tile reduces the
//                       rows to the loss, both in a fixed order (deterministic). Never an N x (N + E) matrix.
// See docs/cuda.md.
#include "common.cuh"

namespace rccl_cuda {
namespace {

constexpr int kNegativeSplitRows = 512;  // batch rows per block in the nearest-natural search

template <typename scalar_t, typename A>
struct ForwardArgs {
  const scalar_t* z;
  const int64_t* labels;
  const A* center;
  const A* bank_real;
  const A* bank_fake;
  const A* lam;
  int64_t n, d, k_real, k_fake, m, neighbors, splits;
  A inv_t, margin;
  A* loss;
  A* extra;
  int64_t* extra_labels;
  A* lse;
  // workspace
  A* scores;               // (k_real + k_fake + 1, n): bank rows then the centre
  int* counts;             // [naturals, fakes]
  unsigned int* counters;  // [row tiles done, one per negative slot, one per row tile (its splits done)]
  A* bank_sum;             // (k_real + k_fake, d): h + the chosen neighbours
  int64_t* fake_slot;      // (m,): the batch index of the t-th fake by centre similarity
  Best<A>* partial;        // (m, splits): nearest natural per slice
  A* row_loss;             // (n,)
  int* row_has_positive;   // (n,)
  // the loss pass's column splits: per split and anchor, split-major (column_splits, n)
  int64_t row_tiles, column_splits, tiles_per_split;
  A* part_max;
  A* part_sum;
  A* part_positive_logits;
  int* part_positives;
  int64_t* selected;       // (m,): scratch of the fake ranking's radix select
};

// The loss pass's grid: row tiles x column splits, each split a run of consecutive column tiles. Enough
// splits that the grid holds about kTargetBlocks blocks (two per SM of a 132-SM H100/H200) when the row
// tiles alone are fewer: at N = 4096 (64 row tiles of 64) 5 splits of 13 column tiles, 320 blocks; at
// N = 256 (8 row tiles of 32) every one of the 10 column tiles is its own split, 80 blocks (all the tiles
// there are). The splits' partial (max, sum of exp, positive logits, positive count) per anchor are merged
// by the last block of the row tile to finish (the flash-decoding merge), in split order: deterministic.
constexpr int64_t kTargetBlocks = 2 * 132;

struct LossGrid {
  int64_t row_tiles, column_tiles, splits, tiles_per_split;
};
inline LossGrid loss_grid(const ForwardProblem& p) {
  const bool small = p.dtype == Dtype::Float64 || p.small_tiles;  // as forward_typed chooses
  const int64_t bm = small ? SmallTile::BM : LargeTile::BM, bn = small ? SmallTile::BN : LargeTile::BN;
  LossGrid g{};
  g.row_tiles = (p.n + bm - 1) / bm;
  g.column_tiles = (p.n + p.k_real + p.k_fake + p.m + bn - 1) / bn;
  const int64_t target = p.target_blocks > 0 ? p.target_blocks : kTargetBlocks;
  const int64_t wanted = (target + g.row_tiles - 1) / g.row_tiles;
  g.splits = wanted < g.column_tiles ? wanted : g.column_tiles;
  g.tiles_per_split = (g.column_tiles + g.splits - 1) / g.splits;
  g.splits = (g.column_tiles + g.tiles_per_split - 1) / g.tiles_per_split;  // no empty split
  return g;
}

template <typename scalar_t, typename A>
struct Workspace {
  static Carver carve(ForwardArgs<scalar_t, A>* a, const ForwardProblem& p, char* base) {
    Carver c{base};
    const int64_t q = p.k_real + p.k_fake + 1;
    const int64_t splits = (p.n + kNegativeSplitRows - 1) / kNegativeSplitRows;
    const LossGrid g = loss_grid(p);
    A* scores = c.take<A>(q * p.n);
    int* counts = c.take<int>(2);
    unsigned int* counters = c.take<unsigned int>(1 + p.m + g.row_tiles);
    A* bank_sum = c.take<A>((p.k_real + p.k_fake) * p.d);
    int64_t* fake_slot = c.take<int64_t>(p.m);
    Best<A>* partial = c.take<Best<A>>(p.m * splits);
    A* row_loss = c.take<A>(p.n);
    int* row_has_positive = c.take<int>(p.n);
    A* part_max = c.take<A>(g.splits * p.n);
    A* part_sum = c.take<A>(g.splits * p.n);
    A* part_positive_logits = c.take<A>(g.splits * p.n);
    int* part_positives = c.take<int>(g.splits * p.n);
    int64_t* selected = c.take<int64_t>(p.m);
    if (a) {
      a->scores = scores, a->counts = counts, a->counters = counters, a->bank_sum = bank_sum;
      a->fake_slot = fake_slot, a->partial = partial, a->row_loss = row_loss;
      a->row_has_positive = row_has_positive, a->splits = splits;
      a->part_max = part_max, a->part_sum = part_sum, a->part_positive_logits = part_positive_logits;
      a->part_positives = part_positives, a->selected = selected;
      a->row_tiles = g.row_tiles, a->column_splits = g.splits, a->tiles_per_split = g.tiles_per_split;
    }
    return c;
  }
};

// ---- 1. similarities of the bank rows and the centre to the batch -----------------------------------
template <class Cfg, typename scalar_t, typename A>
__global__ void __launch_bounds__(kThreads) scores_kernel(ForwardArgs<scalar_t, A> a) {
  __shared__ A As[Cfg::BK][Cfg::BM + 1];
  __shared__ A Bs[Cfg::BK][Cfg::BN + 1];
  const int64_t q = a.k_real + a.k_fake + 1;
  const int64_t row0 = static_cast<int64_t>(blockIdx.y) * Cfg::BM;
  const int64_t col0 = static_cast<int64_t>(blockIdx.x) * Cfg::BN;
  auto load_row = [&](int64_t i, int64_t k) -> A {
    if (i < a.k_real) return a.bank_real[i * a.d + k];
    if (i < a.k_real + a.k_fake) return a.bank_fake[(i - a.k_real) * a.d + k];
    return a.center[k];
  };
  auto load_col = [&](int64_t j, int64_t k) -> A {
    const A v = to_acc(a.z[j * a.d + k]);
    RCCL_DEVICE_ASSERT(is_finite_value(v), "rccl: z contains NaN or infinite values");
    return v;
  };
  A s[Cfg::TM][Cfg::TN];
  tile_dot<Cfg>(s, As, Bs, row0, q, col0, a.n, a.d, load_row, load_col);
  const int tx = threadIdx.x % Cfg::TX, ty = threadIdx.x / Cfg::TX;
#pragma unroll
  for (int r = 0; r < Cfg::TM; ++r)
#pragma unroll
    for (int c = 0; c < Cfg::TN; ++c) {
      const int64_t i = row0 + ty + r * Cfg::TY, j = col0 + tx + c * Cfg::TX;
      if (i < q && j < a.n) a.scores[i * a.n + j] = s[r][c];
    }

  if (blockIdx.x != 0 || blockIdx.y != 0) return;
  __shared__ int count_scratch[kThreads / 32];
  int fakes = 0;
  for (int64_t j = threadIdx.x; j < a.n; j += kThreads) {
    const int64_t label = a.labels[j];
    RCCL_DEVICE_ASSERT(label == 0 || label == 1, "rccl: labels must be 0 (natural) or 1 (fake)");
    fakes += label == 1;
  }
  fakes = block_sum(fakes, count_scratch);
  for (int64_t t = threadIdx.x; t < a.m; t += kThreads) {
    const A w = a.lam[t];
    RCCL_DEVICE_ASSERT(w >= A(0) && w <= A(1), "rccl: lam: mixing coefficients must lie in [0, 1]");
  }
  for (int64_t t = threadIdx.x; t < 1 + a.m + a.row_tiles; t += kThreads) a.counters[t] = 0u;
  if (threadIdx.x == 0) {
    a.counts[0] = static_cast<int>(a.n) - fakes;
    a.counts[1] = fakes;
  }
}

// ---- 2. hard positives, and the ranking of the fakes by centre similarity ---------------------------
template <typename scalar_t, typename A>
__device__ void write_normalized(A* out, const A* v, int64_t d, A* scratch) {
  A sq = A(0);
  for (int64_t k = threadIdx.x; k < d; k += kThreads) sq += v[k] * v[k];
  const A norm = acc_sqrt(block_sum(sq, scratch));
  const A inv = A(1) / (norm > A(kNormalizeEps) ? norm : A(kNormalizeEps));
  for (int64_t k = threadIdx.x; k < d; k += kThreads) out[k] = v[k] * inv;
}

template <typename scalar_t, typename A>
__device__ void hard_positive(const ForwardArgs<scalar_t, A>& a, int64_t b) {
  __shared__ A sum_scratch[kThreads / 32];
  __shared__ Best<A> best_scratch[kThreads / 32];
  const int64_t cls = b < a.k_real ? 0 : 1;
  const A* h = cls == 0 ? a.bank_real + b * a.d : a.bank_fake + (b - a.k_real) * a.d;
  A* out = a.extra + b * a.d;
  const int64_t members = a.counts[cls];
  if (members == 0) {  // no positive from a bank whose class is absent
    for (int64_t k = threadIdx.x; k < a.d; k += kThreads) out[k] = A(0);
    if (threadIdx.x == 0) a.extra_labels[b] = -1;
    return;
  }
  // each thread owns the elements k = threadIdx.x (mod kThreads) of v: no barrier needed around v
  A* v = a.bank_sum + b * a.d;
  if (a.neighbors >= members) {  // every class member is a neighbour
    for (int64_t k = threadIdx.x; k < a.d; k += kThreads) {
      A acc = h[k];
      for (int64_t j = 0; j < a.n; ++j)
        if (a.labels[j] == cls) acc += to_acc(a.z[j * a.d + k]);
      v[k] = acc;
    }
  } else {
    for (int64_t k = threadIdx.x; k < a.d; k += kThreads) v[k] = h[k];
    const A* score = a.scores + b * a.n;
    Best<A> previous{A(0), -1};
    for (int64_t round = 0; round < a.neighbors; ++round) {
      // the best member ranked strictly after the previous pick (score descending, index ascending)
      Best<A> mine{A(0), -1};
      for (int64_t j = threadIdx.x; j < a.n; j += kThreads) {
        if (a.labels[j] != cls) continue;
        const Best<A> candidate{score[j], j};
        if (previous.idx >= 0 && !beats(previous, candidate)) continue;
        if (beats(candidate, mine)) mine = candidate;
      }
      const Best<A> pick = block_best(mine, best_scratch);
      if (pick.idx < 0) break;  // only with NaN similarities (a non-finite bank)
      for (int64_t k = threadIdx.x; k < a.d; k += kThreads) v[k] += to_acc(a.z[pick.idx * a.d + k]);
      previous = pick;
    }
  }
  write_normalized<scalar_t, A>(out, v, a.d, sum_scratch);
  if (threadIdx.x == 0) a.extra_labels[b] = cls;
}

template <typename scalar_t, typename A>
__device__ void rank_fakes(const ForwardArgs<scalar_t, A>& a) {
  // One block: fake_slot[t] = the batch index of the t-th fake by centre similarity, t < min(M, fakes),
  // in sort_greater's order (NaN first, as torch.sort) with ties to the lower index, by a block-wide radix
  // select (block_select_ranked). The order is strict and total, so every fake_slot that
  // negatives_kernel reads is written.
  const int64_t fakes = a.counts[1];
  const int64_t take = a.m < fakes ? a.m : fakes;
  const A* score = a.scores + (a.k_real + a.k_fake) * a.n;
  block_select_ranked<A>(
      a.n, take, [&](int64_t j) { return rank_key(score[j], j, true); }, [&](int64_t j) { return a.labels[j] == 1; },
      a.selected, a.fake_slot);
}

template <typename scalar_t, typename A>
__global__ void __launch_bounds__(kThreads) mine_kernel(ForwardArgs<scalar_t, A> a) {
  const int64_t banks = a.k_real + a.k_fake;
  if (blockIdx.x < banks) {
    hard_positive(a, blockIdx.x);
  } else {
    rank_fakes(a);
  }
}

// ---- 3. mixed negatives ------------------------------------------------------------------------------
template <typename scalar_t, typename A>
__global__ void __launch_bounds__(kThreads) negatives_kernel(ForwardArgs<scalar_t, A> a) {
  __shared__ Best<A> best_scratch[kThreads / 32];
  __shared__ A sum_scratch[kThreads / 32];
  __shared__ bool last_split;
  __shared__ Best<A> merged;
  const int64_t t = blockIdx.x / a.splits, split = blockIdx.x % a.splits;
  const int64_t row = a.k_real + a.k_fake + t;
  A* out = a.extra + row * a.d;
  const int64_t naturals = a.counts[0], fakes = a.counts[1];
  const int64_t used = naturals > 0 ? (a.m < fakes ? a.m : fakes) : 0;
  if (t >= used) {
    if (split == 0) {
      for (int64_t k = threadIdx.x; k < a.d; k += kThreads) out[k] = A(0);
      if (threadIdx.x == 0) a.extra_labels[row] = -1;
    }
    return;
  }
  const scalar_t* f = a.z + a.fake_slot[t] * a.d;
  // the nearest natural in this slice: one warp per candidate, lanes over the features
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int64_t lo = split * kNegativeSplitRows;
  const int64_t hi = lo + kNegativeSplitRows < a.n ? lo + kNegativeSplitRows : a.n;
  Best<A> mine{A(0), -1};
  for (int64_t r = lo + warp; r < hi; r += kThreads / 32) {
    if (a.labels[r] != 0) continue;  // warp-uniform
    A dot = A(0);
    for (int64_t k = lane; k < a.d; k += 32) dot += to_acc(f[k]) * to_acc(a.z[r * a.d + k]);
    const Best<A> candidate{warp_sum(dot), r};
    if (beats(candidate, mine)) mine = candidate;
  }
  Best<A> best = block_best(mine, best_scratch);
  if (a.splits > 1) {
    // publish this slice's answer; the last slice of the slot to finish merges them all
    if (threadIdx.x == 0) {
      a.partial[t * a.splits + split] = best;
      __threadfence();
      last_split = atomicAdd(&a.counters[1 + t], 1u) == static_cast<unsigned int>(a.splits - 1);
    }
    __syncthreads();
    if (!last_split) return;
    if (threadIdx.x == 0) {
      __threadfence();
      Best<A> m{A(0), -1};
      const volatile Best<A>* partial = a.partial + t * a.splits;
      for (int64_t s = 0; s < a.splits; ++s) {
        const Best<A> p{partial[s].score, partial[s].idx};
        if (beats(p, m)) m = p;
      }
      merged = m;
    }
    __syncthreads();
    best = merged;
  }
  if (best.idx < 0) {  // only with NaN similarities
    for (int64_t k = threadIdx.x; k < a.d; k += kThreads) out[k] = A(0);
    if (threadIdx.x == 0) a.extra_labels[row] = -1;
    return;
  }
  const A w = a.lam[t];
  const scalar_t* nearest = a.z + best.idx * a.d;
  A sq = A(0);
  for (int64_t k = threadIdx.x; k < a.d; k += kThreads) {
    const A x = w * to_acc(f[k]) + (A(1) - w) * to_acc(nearest[k]);
    sq += x * x;
  }
  const A norm = acc_sqrt(block_sum(sq, sum_scratch));
  const A inv = A(1) / (norm > A(kNormalizeEps) ? norm : A(kNormalizeEps));
  for (int64_t k = threadIdx.x; k < a.d; k += kThreads)
    out[k] = (w * to_acc(f[k]) + (A(1) - w) * to_acc(nearest[k])) * inv;
  if (threadIdx.x == 0) a.extra_labels[row] = 2;
}

// ---- 4. the loss -------------------------------------------------------------------------------------
template <typename A>
__device__ __forceinline__ void merge_lse(A& m, A& l, A m2, A l2) {
  const A mm = m > m2 ? m : m2;
  if (mm == neg_inf<A>()) return;  // both empty
  l = l * acc_exp(m - mm) + l2 * acc_exp(m2 - mm);
  m = mm;
}

template <class Cfg, typename scalar_t, typename A>
__global__ void __launch_bounds__(kThreads) loss_kernel(ForwardArgs<scalar_t, A> a) {
  // block (row tile, split): the anchors row0 .. row0 + BM against the column tiles of split blockIdx.y
  __shared__ A As[Cfg::BK][Cfg::BM + 1];
  __shared__ A Bs[Cfg::BK][Cfg::BN + 1];
  // the tensor-core tile's z chunks and float result (half-precision z; a single row otherwise)
  __shared__ __align__(32) float Ss[TensorCores<scalar_t>::value ? Cfg::BM : 1][MmaTile<Cfg>::SLD];
  __shared__ __align__(32) scalar_t Zr[TensorCores<scalar_t>::value ? Cfg::BM : 1][MmaTile<Cfg>::LD];
  __shared__ __align__(32) scalar_t Zc[TensorCores<scalar_t>::value ? Cfg::BN : 1][MmaTile<Cfg>::LD];
  __shared__ int column_label[Cfg::BN];  // -1 = not in the contrast set (absent row or past the end)
  __shared__ bool last_split;
  __shared__ bool last_row_tile;
  const int tid = threadIdx.x, tx = tid % Cfg::TX, ty = tid / Cfg::TX;
  const int64_t e = a.k_real + a.k_fake + a.m, columns = a.n + e;
  const int64_t row_tile = blockIdx.x, split = blockIdx.y;
  const int64_t row0 = row_tile * Cfg::BM;
  const int64_t col_begin = split * a.tiles_per_split * Cfg::BN;
  const int64_t col_end = col_begin + a.tiles_per_split * Cfg::BN < columns ? col_begin + a.tiles_per_split * Cfg::BN : columns;

  int64_t anchor_label[Cfg::TM];
  A run_max[Cfg::TM], run_sum[Cfg::TM], positive_logits[Cfg::TM];
  int positives[Cfg::TM];
#pragma unroll
  for (int r = 0; r < Cfg::TM; ++r) {
    const int64_t i = row0 + ty + r * Cfg::TY;
    anchor_label[r] = i < a.n ? a.labels[i] : -1;
    run_max[r] = neg_inf<A>(), run_sum[r] = A(0), positive_logits[r] = A(0), positives[r] = 0;
  }
  auto load_row = [&](int64_t i, int64_t k) -> A { return to_acc(a.z[i * a.d + k]); };
  auto load_col = [&](int64_t j, int64_t k) -> A {
    return j < a.n ? to_acc(a.z[j * a.d + k]) : a.extra[(j - a.n) * a.d + k];
  };

  for (int64_t col0 = col_begin; col0 < col_end; col0 += Cfg::BN) {
    __syncthreads();  // the previous tile's readers of column_label are done
    if (tid < Cfg::BN) {
      const int64_t j = col0 + tid;
      column_label[tid] = j < a.n ? static_cast<int>(a.labels[j]) : (j < col_end ? static_cast<int>(a.extra_labels[j - a.n]) : -1);
    }
    A s[Cfg::TM][Cfg::TN];
    const int64_t tile_end = col0 + Cfg::BN < col_end ? col0 + Cfg::BN : col_end;
    if constexpr (TensorCores<scalar_t>::value) {
      // batch columns only: tensor cores. A tile holding extra rows (float: hard positives, negatives)
      // stays on CUDA cores in float, so they are not rounded to z's dtype (at most two tiles per row tile).
      if (tile_end <= a.n) {
        tile_dot_tc<Cfg>(s, Zr, Zc, Ss, a.z, row0, a.n, col0, tile_end, a.d);
      } else {
        tile_dot<Cfg>(s, As, Bs, row0, a.n, col0, col_end, a.d, load_row, load_col);
      }
    } else {
      tile_dot<Cfg>(s, As, Bs, row0, a.n, col0, col_end, a.d, load_row, load_col);
    }
#pragma unroll
    for (int r = 0; r < Cfg::TM; ++r) {
      const int64_t i = row0 + ty + r * Cfg::TY;
      A logit[Cfg::TN];
      bool in_a[Cfg::TN];
      A tile_max = neg_inf<A>();
#pragma unroll
      for (int c = 0; c < Cfg::TN; ++c) {
        const int64_t j = col0 + tx + c * Cfg::TX;
        const int label = column_label[tx + c * Cfg::TX];
        in_a[c] = i < a.n && label >= 0 && j != i;
        const bool positive = in_a[c] && label == anchor_label[r];
        logit[c] = (s[r][c] - (positive ? a.margin : A(0))) * a.inv_t;
        if (in_a[c]) tile_max = logit[c] > tile_max ? logit[c] : tile_max;
        if (positive) positive_logits[r] += logit[c], ++positives[r];
      }
      if (tile_max != neg_inf<A>()) {
        const A new_max = run_max[r] > tile_max ? run_max[r] : tile_max;
        A sum = run_sum[r] * acc_exp(run_max[r] - new_max);
#pragma unroll
        for (int c = 0; c < Cfg::TN; ++c)
          if (in_a[c]) sum += acc_exp(logit[c] - new_max);
        run_max[r] = new_max, run_sum[r] = sum;
      }
    }
  }

  // merge the 16 lanes of each row (a half warp), publish this split's partial of the row
#pragma unroll
  for (int r = 0; r < Cfg::TM; ++r) {
#pragma unroll
    for (int offset = Cfg::TX / 2; offset > 0; offset >>= 1) {
      const A m2 = __shfl_xor_sync(0xffffffffu, run_max[r], offset);
      const A l2 = __shfl_xor_sync(0xffffffffu, run_sum[r], offset);
      positive_logits[r] += __shfl_xor_sync(0xffffffffu, positive_logits[r], offset);
      positives[r] += __shfl_xor_sync(0xffffffffu, positives[r], offset);
      merge_lse(run_max[r], run_sum[r], m2, l2);
    }
    const int64_t i = row0 + ty + r * Cfg::TY;
    if (tx == 0 && i < a.n) {
      const int64_t slot = split * a.n + i;
      a.part_max[slot] = run_max[r];
      a.part_sum[slot] = run_sum[r];
      a.part_positive_logits[slot] = positive_logits[r];
      a.part_positives[slot] = positives[r];
    }
  }

  // the last split of this row tile to finish merges the splits' partials (split order: deterministic)
  __threadfence();
  __syncthreads();
  if (tid == 0) last_split = atomicAdd(&a.counters[1 + a.m + row_tile], 1u) == static_cast<unsigned int>(a.column_splits - 1);
  __syncthreads();
  if (!last_split) return;
  __threadfence();
  if (tid < Cfg::BM && row0 + tid < a.n) {
    const int64_t i = row0 + tid;
    const volatile A* part_max = a.part_max;
    const volatile A* part_sum = a.part_sum;
    const volatile A* part_positive_logits = a.part_positive_logits;
    const volatile int* part_positives = a.part_positives;
    A m = neg_inf<A>(), l = A(0), pl = A(0);
    int pc = 0;
    for (int64_t s = 0; s < a.column_splits; ++s) {
      const int64_t slot = s * a.n + i;
      merge_lse(m, l, A(part_max[slot]), A(part_sum[slot]));
      pl += part_positive_logits[slot];
      pc += part_positives[slot];
    }
    const A lse = m == neg_inf<A>() ? neg_inf<A>() : m + acc_log(l);
    a.lse[i] = lse;
    a.row_loss[i] = pc > 0 ? lse - pl / A(pc) : A(0);
    a.row_has_positive[i] = pc > 0;
  }

  // the last row tile to finish reduces the rows (fixed order: the same bits on every run)
  __threadfence();
  __syncthreads();
  if (tid == 0) last_row_tile = atomicAdd(&a.counters[0], 1u) == static_cast<unsigned int>(a.row_tiles - 1);
  __syncthreads();
  if (!last_row_tile) return;
  __threadfence();
  __shared__ A sum_scratch[kThreads / 32];
  __shared__ int count_scratch[kThreads / 32];
  const volatile A* row_loss = a.row_loss;
  const volatile int* row_has_positive = a.row_has_positive;
  A total = A(0);
  int anchors = 0;
  for (int64_t i = tid; i < a.n; i += kThreads) total += row_loss[i], anchors += row_has_positive[i];
  total = block_sum(total, sum_scratch);
  anchors = block_sum(anchors, count_scratch);
  if (tid == 0) *a.loss = anchors > 0 ? total / A(anchors) : A(0);
}

template <class Cfg, typename scalar_t>
cudaError_t forward_tiled(const ForwardProblem& p, cudaStream_t stream) {
  using A = typename AccOf<scalar_t>::type;
  ForwardArgs<scalar_t, A> a{};
  a.z = static_cast<const scalar_t*>(p.z);
  a.labels = p.labels;
  a.center = static_cast<const A*>(p.center);
  a.bank_real = static_cast<const A*>(p.bank_real);
  a.bank_fake = static_cast<const A*>(p.bank_fake);
  a.lam = static_cast<const A*>(p.lam);
  a.n = p.n, a.d = p.d, a.k_real = p.k_real, a.k_fake = p.k_fake, a.m = p.m, a.neighbors = p.neighbors;
  a.inv_t = static_cast<A>(1.0 / p.temperature), a.margin = static_cast<A>(p.margin);
  a.loss = static_cast<A*>(p.loss);
  a.extra = static_cast<A*>(p.extra);
  a.extra_labels = p.extra_labels;
  a.lse = static_cast<A*>(p.lse);
  Workspace<scalar_t, A>::carve(&a, p, static_cast<char*>(p.workspace));

  const int64_t q = p.k_real + p.k_fake + 1;
  scores_kernel<Cfg, scalar_t, A><<<dim3(blocks_for(p.n, Cfg::BN), blocks_for(q, Cfg::BM)), kThreads, 0, stream>>>(a);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const int64_t mine_blocks = p.k_real + p.k_fake + (p.m > 0 ? 1 : 0);
  if (mine_blocks > 0) {
    mine_kernel<scalar_t, A><<<static_cast<unsigned int>(mine_blocks), kThreads, 0, stream>>>(a);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  if (p.m > 0) {
    negatives_kernel<scalar_t, A><<<static_cast<unsigned int>(p.m * a.splits), kThreads, 0, stream>>>(a);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
  }
  const dim3 loss_blocks(static_cast<unsigned int>(a.row_tiles), static_cast<unsigned int>(a.column_splits));
  loss_kernel<Cfg, scalar_t, A><<<loss_blocks, kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t forward_typed(const ForwardProblem& p, cudaStream_t stream) {
  if constexpr (sizeof(typename AccOf<scalar_t>::type) == 8) {
    return forward_tiled<SmallTile, scalar_t>(p, stream);  // float64 tiles must fit 48 KiB of shared memory
  } else {
    return p.small_tiles ? forward_tiled<SmallTile, scalar_t>(p, stream) : forward_tiled<LargeTile, scalar_t>(p, stream);
  }
}

}  // namespace

size_t forward_workspace_bytes(const ForwardProblem& p) {
  size_t bytes = 0;
  dispatch_dtype(p.dtype, [&](auto zero) {
    using scalar_t = decltype(zero);
    bytes = Workspace<scalar_t, typename AccOf<scalar_t>::type>::carve(nullptr, p, nullptr).used;
    return cudaSuccess;
  });
  return bytes;
}

cudaError_t launch_forward(const ForwardProblem& p, cudaStream_t stream) {
  if (p.n <= 0 || p.d <= 0) return cudaErrorInvalidValue;
  return dispatch_dtype(p.dtype, [&](auto zero) { return forward_typed<decltype(zero)>(p, stream); });
}

}  // namespace rccl_cuda
