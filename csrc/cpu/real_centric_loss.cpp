// CPU kernels of rccl::real_centric_loss and rccl::_real_centric_loss_backward (math: docs/method.md).
//
// The N x (N + E) logit matrix is never held whole: row blocks sized for the cache are computed with a
// GEMM, masked, reduced (logsumexp) and dropped, in parallel over blocks. The positive-logit sums need no
// pass over it at all: with the columns sorted by class, sum_{p in P(i)} z_i . c_p is z_i . (the sum of
// the class's columns) - z_i . z_i. The backward recomputes the logits block by block into one buffer,
// turns them into dL/dlogit in place, folds the transpose term of the chain rule into it (the
// batch-to-batch logits are symmetric) and finishes with a single GEMM.
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <ATen/ops/full.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mv.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <limits>

#include "common.h"
#include "row_math.h"

namespace rccl {
namespace cpu {
namespace {

template <typename scalar_t>
void normalize_into(const std::vector<scalar_t>& x, scalar_t* out) {
  scalar_t sq = 0;
  for (scalar_t v : x) sq += v * v;
  const scalar_t norm = std::max(static_cast<scalar_t>(std::sqrt(sq)), static_cast<scalar_t>(kNormalizeEps));
  for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] / norm;
}

// Hard positives of one bank (class `cls`) into rows [offset, offset + K) of extra.
template <typename scalar_t>
void hard_positives(const at::Tensor& z, const int64_t* y, int64_t class_count, const at::Tensor& bank,
                    int64_t cls, int64_t neighbors, int64_t offset, at::Tensor& extra, int64_t* extra_labels) {
  const int64_t k = bank.size(0), n = z.size(0), d = z.size(1);
  if (k == 0 || class_count == 0) return;  // rows stay zero and ABSENT
  auto scores = at::mm(bank, z.t()).contiguous();
  const scalar_t* s = scores.data_ptr<scalar_t>();
  const scalar_t* zp = z.data_ptr<scalar_t>();
  const scalar_t* hp = bank.data_ptr<scalar_t>();
  scalar_t* out = extra.data_ptr<scalar_t>();
  const int64_t count = std::min(neighbors, class_count);
  // a chunk scans at least ~64K scores, so small banks stay on one thread
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(n, 1));
  at::parallel_for(0, k, grain, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> neighbor_sum(d), sum(d);
    for (int64_t b = begin; b < end; ++b) {
      auto chosen = top_indices(s + b * n, n, [&](int64_t j) { return y[j] == cls; }, count);
      // h + (the chosen rows' sum), summed in that order as the reference's bank + selection @ z
      std::fill(neighbor_sum.begin(), neighbor_sum.end(), scalar_t(0));
      for (int64_t j : chosen)
        for (int64_t c = 0; c < d; ++c) neighbor_sum[c] += zp[j * d + c];
      for (int64_t c = 0; c < d; ++c) sum[c] = hp[b * d + c] + neighbor_sum[c];
      normalize_into<scalar_t>(sum, out + (offset + b) * d);
      extra_labels[offset + b] = cls;
    }
  });
}

// Mixed negatives into rows [offset, offset + M) of extra, in slot order.
template <typename scalar_t>
void mixed_negatives(const at::Tensor& z, const int64_t* y, int64_t naturals, int64_t fakes,
                     const at::Tensor& center, const at::Tensor& lam, int64_t offset, at::Tensor& extra,
                     int64_t* extra_labels) {
  const int64_t m = lam.size(0), n = z.size(0), d = z.size(1);
  const int64_t used = naturals > 0 ? std::min(m, fakes) : 0;
  if (used == 0) return;
  const scalar_t* zp = z.data_ptr<scalar_t>();
  const scalar_t* cp = center.data_ptr<scalar_t>();
  std::vector<scalar_t> center_similarity(n);
  for (int64_t j = 0; j < n; ++j) center_similarity[j] = dot(zp + j * d, cp, d);
  auto chosen = top_indices(center_similarity.data(), n, [&](int64_t j) { return y[j] == kFake; }, used);
  auto index = at::empty({used}, at::TensorOptions().dtype(at::kLong));
  std::copy(chosen.begin(), chosen.end(), index.data_ptr<int64_t>());
  auto chosen_fakes = at::index_select(z, 0, index).contiguous();
  auto similarity = at::mm(chosen_fakes, z.t()).contiguous();
  const scalar_t* s = similarity.data_ptr<scalar_t>();
  const scalar_t* fp = chosen_fakes.data_ptr<scalar_t>();
  const scalar_t* lp = lam.data_ptr<scalar_t>();
  scalar_t* out = extra.data_ptr<scalar_t>();
  std::vector<scalar_t> mix(d);
  for (int64_t t = 0; t < used; ++t) {
    int64_t nearest = -1;  // the first of equal maxima: the lowest index
    for (int64_t j = 0; j < n; ++j)
      if (y[j] == kNatural && (nearest < 0 || s[t * n + j] > s[t * n + nearest])) nearest = j;
    const scalar_t w = lp[t], rest = static_cast<scalar_t>(1) - lp[t];
    for (int64_t c = 0; c < d; ++c) mix[c] = w * fp[t * d + c] + rest * zp[nearest * d + c];
    normalize_into<scalar_t>(mix, out + (offset + t) * d);
    extra_labels[offset + t] = kMixedNegative;
  }
}

// One anchor's row of the logit matrix, in place: on entry z_i . c_j / T; on exit the margin is taken
// off the positives [pb, pe) and the anchor's own column is -inf (it is not in A(i)). Returns
// logsumexp over A(i).
template <typename scalar_t>
scalar_t row_logsumexp(scalar_t* row, int64_t columns, int64_t pb, int64_t pe, int64_t self, scalar_t margin_over_t) {
  row_add(row + pb, pe - pb, -margin_over_t);
  row[self] = -std::numeric_limits<scalar_t>::infinity();
  const scalar_t m = row_max(row, columns);
  const scalar_t sum = row_sum_exp(row, self, m) + row_sum_exp(row + self + 1, columns - self - 1, m);
  return m + std::log(sum);
}

// One anchor's row, in place: on entry z_i . c_j / T; on exit dL/dlogit(i, j) =
// weight (softmax_j - [j in P(i)] / |P(i)|), and 0 at the anchor's own column.
template <typename scalar_t>
void row_logit_gradient(scalar_t* row, int64_t columns, int64_t pb, int64_t pe, int64_t self, scalar_t margin_over_t,
                        scalar_t lse, scalar_t share, scalar_t weight) {
  row_add(row + pb, pe - pb, -margin_over_t);
  row_scaled_exp(row, columns, lse, weight);
  row_add(row + pb, pe - pb, -weight * share);
  row[self] = 0;
}

// z_i . c_j / T for anchor rows [r0, r0 + rows) and every contrast column.
inline at::Tensor block_logits(const ContrastLayout& layout, const at::Tensor& scaled_anchors, int64_t r0, int64_t rows) {
  return at::mm(scaled_anchors.narrow(0, r0, rows), layout.contrast.t()).contiguous();
}

void check_scalars(double temperature, double margin) {
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0, "rccl: temperature: expected a finite number > 0, got ",
              temperature);
  TORCH_CHECK(std::isfinite(margin), "rccl: margin: expected a finite number, got ", margin);
}

template <typename scalar_t>
void contrastive_forward(const ContrastLayout& layout, double temperature, double margin, at::Tensor& loss,
                         at::Tensor& lse) {
  const int64_t n = layout.n, d = layout.contrast.size(1), columns = layout.columns();
  const scalar_t inv_t = static_cast<scalar_t>(1.0 / temperature);
  const scalar_t margin_over_t = static_cast<scalar_t>(margin / temperature);
  auto scaled = layout.anchors.mul(inv_t).contiguous();
  std::vector<scalar_t> lse_perm(n);

  const int64_t block = rows_per_block(n, columns, useful_threads(n, columns, d));
  const int64_t blocks = (n + block - 1) / block;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * block, rows = std::min(block, n - r0);
      if (columns == 1) {  // N = 1 and nothing synthesized: A(i) is empty
        lse_perm[r0] = -std::numeric_limits<scalar_t>::infinity();
        continue;
      }
      at::Tensor logits = block_logits(layout, scaled, r0, rows);
      scalar_t* lp = logits.data_ptr<scalar_t>();
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t r = r0 + i;
        lse_perm[r] = row_logsumexp(lp + i * columns, columns, layout.positives_begin(r), layout.positives_end(r),
                                    layout.self_column(r), margin_over_t);
      }
    }
  });

  // sum over P(i) of z_i . c_p = z_i . (sum of the class's columns) - z_i . z_i
  const scalar_t* contrast = layout.contrast.data_ptr<scalar_t>();
  auto class_sum = [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> sum(d, 0);
    for (int64_t j = begin; j < end; ++j)
      for (int64_t c = 0; c < d; ++c) sum[c] += contrast[j * d + c];
    return sum;
  };
  const auto natural_sum = class_sum(0, layout.naturals + layout.natural_extras);
  const auto fake_sum = class_sum(layout.fake_batch_column(), layout.n + layout.natural_extras + layout.fake_extras);
  const scalar_t* ap = layout.anchors.data_ptr<scalar_t>();
  const int64_t* perm = layout.perm.data_ptr<int64_t>();
  scalar_t* lse_out = lse.data_ptr<scalar_t>();
  double total = 0;
  int64_t anchors_with_positives = 0;
  for (int64_t r = 0; r < n; ++r) {
    lse_out[perm[r]] = lse_perm[r];
    const int64_t positives = layout.positives(r);
    if (positives <= 0) continue;
    const scalar_t* zr = ap + r * d;
    const scalar_t* cs = (layout.is_natural_row(r) ? natural_sum : fake_sum).data();
    const scalar_t dot_class = dot(zr, cs, d), dot_self = dot(zr, zr, d);
    const double positive_logits = (dot_class - dot_self) * inv_t - positives * margin_over_t;
    total += lse_perm[r] - positive_logits / positives;
    ++anchors_with_positives;
  }
  loss.fill_(anchors_with_positives > 0 ? total / anchors_with_positives : 0.0);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> real_centric_loss_cpu(
    const at::Tensor& z, const at::Tensor& labels, const at::Tensor& center, const at::Tensor& bank_real,
    const at::Tensor& bank_fake, const at::Tensor& lam, int64_t neighbors, double temperature, double margin) {
  check_features(z);
  const int64_t n = z.size(0), d = z.size(1);
  const auto acc = accumulation_type(z.scalar_type());
  check_labels(labels, n);
  check_float(center, "center", 1, d, acc);
  check_float(bank_real, "bank_real", 2, d, acc);
  check_float(bank_fake, "bank_fake", 2, d, acc);
  check_float(lam, "lam", 1, -1, acc);
  TORCH_CHECK(neighbors >= 0, "rccl: neighbors: expected an int >= 0, got ", neighbors);
  check_scalars(temperature, margin);

  const int64_t k_real = bank_real.size(0), k_fake = bank_fake.size(0), rows = k_real + k_fake + lam.size(0);
  auto options = z.options().dtype(acc);
  auto loss = at::zeros({}, options);
  auto extra = at::zeros({rows, d}, options);
  auto extra_labels = at::full({rows}, kAbsent, options.dtype(at::kLong));
  auto lse = at::empty({n}, options);
  if (n == 0) return {loss, extra, extra_labels, lse};

  auto z_acc = z.to(acc).contiguous();
  auto y = labels.contiguous();
  const int64_t* yp = y.data_ptr<int64_t>();
  int64_t fakes = 0;
  for (int64_t i = 0; i < n; ++i) fakes += yp[i] == kFake;
  const int64_t naturals = n - fakes;
  int64_t* elp = extra_labels.data_ptr<int64_t>();

  AT_DISPATCH_FLOATING_TYPES(acc, "rccl::real_centric_loss (CPU)", [&] {
    check_finite<scalar_t>(z_acc, "z");
    auto lam_c = lam.contiguous();
    for (int64_t t = 0; t < lam_c.numel(); ++t) {
      const scalar_t v = lam_c.data_ptr<scalar_t>()[t];
      TORCH_CHECK(v >= 0 && v <= 1, "rccl: lam: mixing coefficients must lie in [0, 1], found ", v, " at index ", t);
    }
    hard_positives<scalar_t>(z_acc, yp, naturals, bank_real.contiguous(), kNatural, neighbors, 0, extra, elp);
    hard_positives<scalar_t>(z_acc, yp, fakes, bank_fake.contiguous(), kFake, neighbors, k_real, extra, elp);
    mixed_negatives<scalar_t>(z_acc, yp, naturals, fakes, center.contiguous(), lam.contiguous(), k_real + k_fake,
                              extra, elp);
    auto layout = make_layout(z_acc, y, extra, extra_labels);
    contrastive_forward<scalar_t>(layout, temperature, margin, loss, lse);
  });
  return {loss, extra, extra_labels, lse};
}

template <typename scalar_t>
at::Tensor contrastive_backward(const ContrastLayout& layout, const at::Tensor& lse, double grad_loss,
                                double temperature, double margin) {
  const int64_t n = layout.n, d = layout.contrast.size(1), columns = layout.columns();
  auto options = layout.anchors.options();
  int64_t anchors_with_positives = 0;
  for (int64_t r = 0; r < n; ++r) anchors_with_positives += layout.positives(r) > 0;
  if (anchors_with_positives == 0) return at::zeros({n, d}, options);

  const scalar_t inv_t = static_cast<scalar_t>(1.0 / temperature);
  const scalar_t margin_over_t = static_cast<scalar_t>(margin / temperature);
  const scalar_t weight = static_cast<scalar_t>(grad_loss / anchors_with_positives);
  auto scaled = layout.anchors.mul(inv_t).contiguous();
  auto lse_perm = at::index_select(lse, 0, layout.perm).contiguous();
  const scalar_t* lp = lse_perm.data_ptr<scalar_t>();

  // G(i, a) = dL/dlogit(i, a), the whole N x columns matrix (the backward's one big buffer: 68 MB at
  // N = 4096 in float32), block by block in parallel.
  auto g = at::empty({n, columns}, options);
  scalar_t* gp = g.data_ptr<scalar_t>();
  const int64_t block = rows_per_block(n, columns, useful_threads(n, columns, d));
  const int64_t blocks = (n + block - 1) / block;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * block, rows = std::min(block, n - r0);
      auto out = g.narrow(0, r0, rows);
      at::mm_out(out, scaled.narrow(0, r0, rows), layout.contrast.t());
      for (int64_t r = r0; r < r0 + rows; ++r) {
        const int64_t positives = layout.positives(r);
        scalar_t* row = gp + r * columns;
        if (positives <= 0) {  // not in the loss
          std::fill(row, row + columns, scalar_t(0));
          continue;
        }
        row_logit_gradient(row, columns, layout.positives_begin(r), layout.positives_end(r), layout.self_column(r),
                           margin_over_t, lp[r], scalar_t(1) / positives, weight);
      }
    }
  });

  // dL/dz_r = (1/T) [ sum_a G(r, a) c_a + sum_s G(s, r) z_s ]: r as an anchor, and r as a column of the
  // other anchors. Folding the second term into the batch columns, G(r, s) <- G(r, s) + G(s, r), makes
  // it one GEMM, G @ contrast, instead of two. Each pair is updated once, by the thread that owns the
  // tile of the larger index; tiles keep the transposed reads in cache, and tile I is paired with tile
  // tiles - 1 - I so that both threads get as many pairs.
  auto column = [&](int64_t s) { return layout.self_column(s); };
  const int64_t tile = 64, tiles = (n + tile - 1) / tile;
  const int64_t tile_grain = useful_threads(n, columns, d) > 1 ? 1 : tiles;
  at::parallel_for(0, tiles, tile_grain, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t ti = k % 2 == 0 ? k / 2 : tiles - 1 - k / 2;
      const int64_t r_end = std::min(n, (ti + 1) * tile);
      for (int64_t tj = 0; tj <= ti; ++tj) {
        const int64_t s_end = std::min(n, (tj + 1) * tile);
        for (int64_t r = ti * tile; r < r_end; ++r) {
          scalar_t* row_r = gp + r * columns;
          const int64_t column_r = column(r), s_stop = tj == ti ? r : s_end;
          for (int64_t s = tj * tile; s < s_stop; ++s) {
            scalar_t& g_rs = row_r[column(s)];
            scalar_t& g_sr = gp[s * columns + column_r];
            const scalar_t both = g_rs + g_sr;
            g_rs = both;
            g_sr = both;
          }
        }
      }
    }
  });
  auto grad_perm = at::mm(g, layout.contrast).mul_(inv_t);
  auto grad = at::empty({n, d}, options);
  grad.index_copy_(0, layout.perm, grad_perm);
  return grad;
}

at::Tensor real_centric_loss_backward_cpu(const at::Tensor& grad_loss, const at::Tensor& z, const at::Tensor& labels,
                                          const at::Tensor& extra, const at::Tensor& extra_labels,
                                          const at::Tensor& lse, double temperature, double margin) {
  check_features(z);
  const int64_t n = z.size(0), d = z.size(1);
  const auto acc = accumulation_type(z.scalar_type());
  check_labels(labels, n);
  check_cpu(grad_loss, "grad_loss");
  TORCH_CHECK(grad_loss.numel() == 1 && grad_loss.is_floating_point(),
              "rccl: grad_loss: expected a floating-point scalar, got shape ", grad_loss.sizes());
  check_float(extra, "extra", 2, d, acc);
  check_cpu(extra_labels, "extra_labels");
  TORCH_CHECK(extra_labels.scalar_type() == at::kLong && extra_labels.dim() == 1 &&
                  extra_labels.size(0) == extra.size(0),
              "rccl: extra_labels: expected int64 of shape (", extra.size(0), ",), got ", extra_labels.scalar_type(),
              " ", extra_labels.sizes());
  auto el = extra_labels.contiguous();
  for (int64_t e = 0; e < el.size(0); ++e) {
    const int64_t v = el.data_ptr<int64_t>()[e];
    TORCH_CHECK(v >= kAbsent && v <= kMixedNegative, "rccl: extra_labels: values must be -1, 0, 1 or 2, found ", v);
  }
  check_float(lse, "lse", 1, -1, acc);
  TORCH_CHECK(lse.size(0) == n, "rccl: lse: expected shape (", n, ",), got ", lse.sizes());
  check_scalars(temperature, margin);
  if (n == 0) return at::zeros_like(z);

  auto z_acc = z.to(acc).contiguous();
  auto layout = make_layout(z_acc, labels.contiguous(), extra.contiguous(), el);
  const double g = grad_loss.item<double>();
  at::Tensor grad;
  AT_DISPATCH_FLOATING_TYPES(acc, "rccl::_real_centric_loss_backward (CPU)", [&] {
    check_finite<scalar_t>(z_acc, "z");
    grad = contrastive_backward<scalar_t>(layout, lse.contiguous(), g, temperature, margin);
  });
  return grad.to(z.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(rccl, CPU, m) {
  m.impl("real_centric_loss", &real_centric_loss_cpu);
  m.impl("_real_centric_loss_backward", &real_centric_loss_backward_cpu);
}

}  // namespace cpu
}  // namespace rccl
