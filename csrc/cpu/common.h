// Shared by the CPU kernels: the deterministic top-k, the GEMM helper, the class-sorted layout of the
// contrast set that both the forward and the backward work on. The argument checks are ../checks.h's
// (one definition for the CPU and CUDA backends).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/Exception.h>

#include "../checks.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace rccl {
namespace cpu {

constexpr int64_t kNatural = 0, kFake = 1, kMixedNegative = 2, kAbsent = -1;
// as torch.nn.functional.normalize: x / max(||x||, eps)
constexpr double kNormalizeEps = 1e-12;

using checks::accumulation_type;

// Indices of the `count` largest scores among those with eligible[i], largest first, ties to the lowest
// index (the same order as a stable descending sort).
template <typename scalar_t, typename Eligible>
std::vector<int64_t> top_indices(const scalar_t* scores, int64_t n, Eligible eligible, int64_t count) {
  std::vector<std::pair<scalar_t, int64_t>> candidates;
  candidates.reserve(n);
  for (int64_t i = 0; i < n; ++i)
    if (eligible(i)) candidates.emplace_back(scores[i], i);
  count = std::min<int64_t>(count, static_cast<int64_t>(candidates.size()));
  auto before = [](const std::pair<scalar_t, int64_t>& a, const std::pair<scalar_t, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  std::partial_sort(candidates.begin(), candidates.begin() + count, candidates.end(), before);
  std::vector<int64_t> out(count);
  for (int64_t i = 0; i < count; ++i) out[i] = candidates[i].second;
  return out;
}

// c (m, n) = alpha a op(b) for row-major contiguous a (m, k) and c (m, n), where op(b) = b^T for b (n, k)
// (Transpose::b) or b itself for b (k, n) (Transpose::none): one BLAS call through at::addmm_out on views
// of the buffers (no allocation; beta = 0, so c's old contents are ignored).
enum class Transpose { none, b };

template <typename scalar_t>
void gemm(Transpose op, const scalar_t* a, int64_t m, const scalar_t* b, int64_t n, int64_t k, scalar_t alpha,
          scalar_t* c) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    std::fill(c, c + m * n, scalar_t(0));
    return;
  }
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  at::Tensor out = at::from_blob(c, {m, n}, options);
  const auto b_view = op == Transpose::b ? at::from_blob(const_cast<scalar_t*>(b), {n, k}, options).t()
                                         : at::from_blob(const_cast<scalar_t*>(b), {k, n}, options);
  at::addmm_out(out, out, at::from_blob(const_cast<scalar_t*>(a), {m, k}, options), b_view, 0, alpha);
}

// Scratch memory, uninitialised: `count` elements in slot `slot` of this thread's workspace, reused from
// call to call (no allocation and no page faults on the hot path: at N = 256 a fresh 300 KB buffer per call
// cost more than the exp pass over it). Buffers above kKeepBytes are allocated per call instead and freed
// with `holder`, so that a large batch does not pin its O(N^2) matrix. A slot holds one live buffer at a
// time: each kernel uses distinct slots for buffers that live together (see the Slot names).
enum Slot : int { kAnchors = 0, kContrast, kMining, kMixing, kLogits, kSortedGrad, kSlots };
constexpr int64_t kKeepBytes = int64_t(4) << 20;  // N x columns up to N ~ 1000 in float32

template <typename scalar_t>
scalar_t* scratch(Slot slot, int64_t count, at::Tensor& holder) {
  thread_local at::Tensor kept[kSlots];
  const int64_t bytes = std::max<int64_t>(count, 1) * static_cast<int64_t>(sizeof(scalar_t));
  if (bytes > kKeepBytes) {
    holder = at::empty({bytes}, at::TensorOptions().dtype(at::kByte));
    return reinterpret_cast<scalar_t*>(holder.data_ptr());
  }
  at::Tensor& buffer = kept[slot];
  if (!buffer.defined() || buffer.numel() < bytes) buffer = at::empty({bytes}, at::TensorOptions().dtype(at::kByte));
  return reinterpret_cast<scalar_t*>(buffer.data_ptr());
}

// The batch and the contrast set sorted by class, so that every anchor's positives are one contiguous
// range of columns: [batch naturals | natural positives | batch fakes | fake positives | mixed negatives].
// Anchors (rows) are the batch in the same class order: naturals, then fakes, each in batch order (so the
// lowest-index tie-breaks of the spec are the lowest row within a class); perm maps a row to its batch
// index.
template <typename scalar_t>
struct ContrastLayout {
  std::vector<int64_t> perm;         // (N,)
  at::Tensor anchor_storage, contrast_storage;  // only for buffers too large to keep (see scratch)
  scalar_t* anchors = nullptr;       // (N, D) z[perm], contiguous
  scalar_t* contrast = nullptr;      // (columns, D) contiguous
  int64_t n = 0, d = 0, naturals = 0, fakes = 0, natural_extras = 0, fake_extras = 0, negatives = 0;

  int64_t columns() const { return n + natural_extras + fake_extras + negatives; }
  bool is_natural_row(int64_t r) const { return r < naturals; }
  int64_t self_column(int64_t r) const { return is_natural_row(r) ? r : r + natural_extras; }
  int64_t positives_begin(int64_t r) const { return is_natural_row(r) ? 0 : naturals + natural_extras; }
  int64_t positives_end(int64_t r) const {
    return is_natural_row(r) ? naturals + natural_extras : n + natural_extras + fake_extras;
  }
  // |P(i)|: the other batch features of the class plus that class's synthesized positives
  int64_t positives(int64_t r) const {
    return is_natural_row(r) ? naturals - 1 + natural_extras : fakes - 1 + fake_extras;
  }
  int64_t fake_batch_column() const { return naturals + natural_extras; }

  // The anchors: z (N, D) contiguous in the accumulation dtype, y (N,) labels in {0, 1}.
  void sort_batch(const scalar_t* z, const int64_t* y, int64_t rows, int64_t dim) {
    n = rows, d = dim;
    perm.clear();
    perm.reserve(n);
    for (int64_t i = 0; i < n; ++i)
      if (y[i] == kNatural) perm.push_back(i);
    naturals = static_cast<int64_t>(perm.size());
    for (int64_t i = 0; i < n; ++i)
      if (y[i] == kFake) perm.push_back(i);
    fakes = n - naturals;
    anchors = scratch<scalar_t>(kAnchors, n * d, anchor_storage);
    for (int64_t r = 0; r < n; ++r) std::copy(z + perm[r] * d, z + (perm[r] + 1) * d, anchors + r * d);
  }

  // The contrast set, from the forward's extra (E, D) and extra_labels (E,) (absent rows left out).
  void add_contrast(const scalar_t* extra, const int64_t* extra_labels, int64_t e) {
    natural_extras = fake_extras = negatives = 0;
    for (int64_t i = 0; i < e; ++i) {
      natural_extras += extra_labels[i] == kNatural;
      fake_extras += extra_labels[i] == kFake;
      negatives += extra_labels[i] == kMixedNegative;
    }
    contrast = scratch<scalar_t>(kContrast, columns() * d, contrast_storage);
    scalar_t* out = contrast;
    auto rows = [&](const scalar_t* first, int64_t count) {
      out = std::copy(first, first + count * d, out);
    };
    auto extras_of = [&](int64_t cls) {
      for (int64_t i = 0; i < e; ++i)
        if (extra_labels[i] == cls) rows(extra + i * d, 1);
    };
    rows(anchors, naturals);
    extras_of(kNatural);
    rows(anchors + naturals * d, fakes);
    extras_of(kFake);
    extras_of(kMixedNegative);
  }
};

// sum_c a[c] b[c], vectorised (the order of the additions is the vector unit's)
template <typename scalar_t>
inline scalar_t dot(const scalar_t* a, const scalar_t* b, int64_t d) {
  scalar_t sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < d; ++c) sum += a[c] * b[c];
  return sum;
}

// Rows per block of the N x columns logit matrix: as few blocks as keep every thread busy (each GEMM
// call re-packs the contrast matrix, and the backward's column-side GEMM wants a deep inner dimension:
// 31-row blocks cost twice as much as 256-row ones at N = 4096), but no bigger than a share of the
// L2/L3 cache.
// Threads worth using: below ~16M multiply-adds per GEMM (N = 256 at D = 128) a fork-join costs more
// than it saves, and much more on a busy machine.
inline int64_t useful_threads(int64_t n, int64_t columns, int64_t d) {
  return n * columns * d < (int64_t(1) << 24) ? 1 : at::get_num_threads();
}

inline int64_t rows_per_block(int64_t n, int64_t columns, int64_t threads) {
  const int64_t cache_elements = 1 << 20;
  const int64_t by_cache = std::max<int64_t>(1, cache_elements / std::max<int64_t>(columns, 1));
  const int64_t by_threads = std::max<int64_t>(1, (n + threads - 1) / threads);
  return std::min(by_cache, by_threads);
}

}  // namespace cpu
}  // namespace rccl
