// Shared by the CPU kernels: argument checks with messages a user understands, the deterministic top-k,
// and the class-sorted layout of the contrast set that both the forward and the backward work on.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/index_select.h>
#include <c10/util/Exception.h>

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

inline at::ScalarType accumulation_type(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

inline void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "rccl: ", name, " is on ", t.device(),
              " but this is the CPU kernel: all inputs must be on the CPU");
}

// z: (N, D) float16/bfloat16/float32/float64, finite.
inline void check_features(const at::Tensor& z) {
  check_cpu(z, "z");
  TORCH_CHECK(z.dim() == 2, "rccl: z: expected a 2-D tensor (N, D), got ", z.dim(), "-D ", z.sizes());
  auto t = z.scalar_type();
  TORCH_CHECK(t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble,
              "rccl: z: expected float16, bfloat16, float32 or float64, got ", t);
  TORCH_CHECK(z.size(1) > 0, "rccl: z: feature size D must be at least 1");
}

// Every value finite (a raw loop over the accumulation-dtype copy: at::isfinite(z).all() costs more than
// the whole small-batch loss).
template <typename scalar_t>
void check_finite(const at::Tensor& z_acc, const char* name) {
  // on the bits (exponent all ones = inf or NaN), so that the loop vectorises
  using bits_t = std::conditional_t<sizeof(scalar_t) == 4, uint32_t, uint64_t>;
  constexpr int mantissa = std::numeric_limits<scalar_t>::digits - 1;
  constexpr bits_t exponent_mask = (~bits_t(0) >> 1) >> mantissa << mantissa;
  const bits_t* p = reinterpret_cast<const bits_t*>(z_acc.data_ptr<scalar_t>());
  const int64_t count = z_acc.numel();
  bits_t non_finite = 0;
  for (int64_t i = 0; i < count; ++i) non_finite |= (p[i] & exponent_mask) == exponent_mask;
  TORCH_CHECK(!non_finite, "rccl: ", name, ": contains NaN or infinite values");
}

// labels: (N,) int64 with values in {0, 1}.
inline void check_labels(const at::Tensor& labels, int64_t n) {
  check_cpu(labels, "labels");
  TORCH_CHECK(labels.scalar_type() == at::kLong, "rccl: labels: expected int64, got ", labels.scalar_type());
  TORCH_CHECK(labels.dim() == 1 && labels.size(0) == n, "rccl: labels: expected shape (", n,
              ",) to match z's N, got ", labels.sizes());
  auto l = labels.contiguous();
  const int64_t* p = l.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(p[i] == kNatural || p[i] == kFake, "rccl: labels: must be 0 (natural) or 1 (fake), found ",
                p[i], " at index ", i);
}

// A floating tensor of the accumulation dtype with `dims` dimensions and, when d >= 0, last size d.
inline void check_float(const at::Tensor& t, const char* name, int64_t dims, int64_t d, at::ScalarType acc) {
  check_cpu(t, name);
  TORCH_CHECK(t.dim() == dims, "rccl: ", name, ": expected a ", dims, "-D tensor, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == acc, "rccl: ", name, ": expected ", acc,
              " (the accumulation dtype of z: float32 for half-precision z, else z's dtype), got ",
              t.scalar_type());
  if (d >= 0)
    TORCH_CHECK(t.size(dims - 1) == d, "rccl: ", name, ": expected feature size D = ", d, " (z's), got shape ",
                t.sizes());
}

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

// The contrast set with its columns sorted by class, so that every anchor's positives are one contiguous
// range: [batch naturals | natural positives | batch fakes | fake positives | mixed negatives].
// Anchors (rows) are the batch in the same class order: naturals, then fakes (`perm` maps a row to its
// batch index).
struct ContrastLayout {
  at::Tensor perm;      // (N,) int64
  at::Tensor anchors;   // (N, D) z[perm], accumulation dtype, contiguous
  at::Tensor contrast;  // (columns, D) contiguous
  int64_t n = 0, naturals = 0, fakes = 0, natural_extras = 0, fake_extras = 0, negatives = 0;

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
  // batch columns of the contrast set, as (first column, first row of `anchors`, count) runs
  int64_t fake_batch_column() const { return naturals + natural_extras; }
};

// z_acc: (N, D) accumulation dtype contiguous; labels (N,) int64 contiguous; extra (E, D) and
// extra_labels (E,) as the forward's outputs.
inline ContrastLayout make_layout(const at::Tensor& z_acc, const at::Tensor& labels, const at::Tensor& extra,
                                  const at::Tensor& extra_labels) {
  ContrastLayout layout;
  layout.n = z_acc.size(0);
  const int64_t* y = labels.data_ptr<int64_t>();
  std::vector<int64_t> perm;
  perm.reserve(layout.n);
  for (int64_t i = 0; i < layout.n; ++i)
    if (y[i] == kNatural) perm.push_back(i);
  layout.naturals = static_cast<int64_t>(perm.size());
  for (int64_t i = 0; i < layout.n; ++i)
    if (y[i] == kFake) perm.push_back(i);
  layout.fakes = layout.n - layout.naturals;

  std::vector<int64_t> by_class[3];
  const int64_t* ey = extra_labels.data_ptr<int64_t>();
  for (int64_t e = 0; e < extra_labels.size(0); ++e)
    if (ey[e] != kAbsent) by_class[ey[e]].push_back(e);
  layout.natural_extras = static_cast<int64_t>(by_class[kNatural].size());
  layout.fake_extras = static_cast<int64_t>(by_class[kFake].size());
  layout.negatives = static_cast<int64_t>(by_class[kMixedNegative].size());

  auto long_tensor = [](const std::vector<int64_t>& v) {
    auto t = at::empty({static_cast<int64_t>(v.size())}, at::TensorOptions().dtype(at::kLong));
    std::copy(v.begin(), v.end(), t.data_ptr<int64_t>());
    return t;
  };
  layout.perm = long_tensor(perm);
  layout.anchors = at::index_select(z_acc, 0, layout.perm).contiguous();
  auto rows_of = [&](int c) { return at::index_select(extra, 0, long_tensor(by_class[c])); };
  layout.contrast = at::cat({layout.anchors.narrow(0, 0, layout.naturals), rows_of(kNatural),
                             layout.anchors.narrow(0, layout.naturals, layout.fakes), rows_of(kFake),
                             rows_of(kMixedNegative)})
                        .contiguous();
  return layout;
}

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
