// CPU kernels of rccl::real_centric_loss and rccl::_real_centric_loss_backward (math: docs/method.md).
//
// The batch is sorted by class once (naturals, then fakes), so that every class is a contiguous range of
// rows and columns. The mining takes two small GEMMs (banks and centre against the batch, then the chosen
// fakes against the naturals). The N x (N + E) logit matrix is never held whole in the forward: row
// blocks sized for the cache are computed with a GEMM into a reused buffer, masked, reduced (logsumexp),
// in parallel over blocks. The positive-logit sums need no
// pass over it at all: with the columns sorted by class, sum_{p in P(i)} z_i . c_p is z_i . (the sum of
// the class's columns) - z_i . z_i. The backward recomputes the logits block by block into one buffer,
// turns them into dL/dlogit in place, folds the transpose term of the chain rule into it (the
// batch-to-batch logits are symmetric) and finishes with a single GEMM: three large GEMMs per step (one
// forward, two backward), as autograd through the reference needs. No ATen op runs on the hot path
// besides the GEMMs (views of raw buffers) and the outputs' allocation.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstring>
#include <limits>

#include "common.h"
#include "row_math.h"

namespace rccl {
namespace cpu {
namespace {

template <typename scalar_t>
void normalize_into(const scalar_t* x, int64_t d, scalar_t* out) {
  scalar_t sq = 0;
  for (int64_t c = 0; c < d; ++c) sq += x[c] * x[c];
  const scalar_t norm = std::max(static_cast<scalar_t>(std::sqrt(sq)), static_cast<scalar_t>(kNormalizeEps));
  for (int64_t c = 0; c < d; ++c) out[c] = x[c] / norm;
}

// The synthesized rows (extra, extra_labels) of the forward, from the class-sorted anchors. Every score the
// mining needs comes from two GEMMs: [bank_real; bank_fake; center] . anchors^T (each bank only against its
// own class's rows), then the chosen fakes . natural anchors^T for the nearest naturals.
template <typename scalar_t>
void synthesize(const ContrastLayout<scalar_t>& layout, const scalar_t* bank_real, int64_t k_real,
                const scalar_t* bank_fake, int64_t k_fake, const scalar_t* center, const scalar_t* lam, int64_t m,
                int64_t neighbors, scalar_t* extra, int64_t* extra_labels) {
  const int64_t n = layout.n, d = layout.d, naturals = layout.naturals, fakes = layout.fakes;
  const scalar_t* anchors = layout.anchors;
  const int64_t used = naturals > 0 ? std::min(m, fakes) : 0;  // mixed negatives present
  // rows of the mining GEMM: the banks whose class is in the batch, then the centre if there are negatives
  const int64_t real_rows = naturals > 0 ? k_real : 0, fake_rows = fakes > 0 ? k_fake : 0;
  const int64_t mining_rows = real_rows + fake_rows + (used > 0 ? 1 : 0);
  if (mining_rows == 0) return;
  at::Tensor storage;
  scalar_t* queries = scratch<scalar_t>(kMining, mining_rows * d + mining_rows * n + std::max<int64_t>(d, 1) * 2, storage);
  scalar_t* scores = queries + mining_rows * d;
  scalar_t* sum = scores + mining_rows * n;
  std::copy(bank_real, bank_real + real_rows * d, queries);
  std::copy(bank_fake, bank_fake + fake_rows * d, queries + real_rows * d);
  if (used > 0) std::copy(center, center + d, queries + (real_rows + fake_rows) * d);
  gemm(Transpose::b, queries, mining_rows, anchors, n, d, scalar_t(1), scores);

  // Hard positives: p = normalize(h + the sum of its `neighbors` most similar batch rows of the class),
  // the neighbours summed in the order chosen (as the reference's bank + selection @ z).
  auto all = [](int64_t) { return true; };
  auto hard_positives = [&](const scalar_t* bank, int64_t rows, int64_t first_score_row, int64_t class_begin,
                            int64_t class_count, int64_t cls, int64_t offset) {
    const int64_t count = std::min(neighbors, class_count);
    for (int64_t b = 0; b < rows; ++b) {
      const scalar_t* s = scores + (first_score_row + b) * n + class_begin;
      auto chosen = top_indices(s, class_count, all, count);
      std::fill(sum, sum + d, scalar_t(0));
      for (int64_t j : chosen) {
        const scalar_t* row = anchors + (class_begin + j) * d;
        for (int64_t c = 0; c < d; ++c) sum[c] += row[c];
      }
      for (int64_t c = 0; c < d; ++c) sum[c] = bank[b * d + c] + sum[c];
      normalize_into(sum, d, extra + (offset + b) * d);
      extra_labels[offset + b] = cls;
    }
  };
  hard_positives(bank_real, real_rows, 0, 0, naturals, kNatural, 0);
  hard_positives(bank_fake, fake_rows, real_rows, naturals, fakes, kFake, k_real);
  if (used == 0) return;

  // Mixed negatives: the `used` fakes most similar to the centre, in that order; each mixed with its
  // nearest natural (the first of equal maxima: the lowest index).
  const scalar_t* center_scores = scores + (real_rows + fake_rows) * n + naturals;
  auto chosen = top_indices(center_scores, fakes, all, used);
  at::Tensor mix_storage;
  scalar_t* chosen_fakes = scratch<scalar_t>(kMixing, used * d + used * naturals, mix_storage);
  scalar_t* similarity = chosen_fakes + used * d;
  for (int64_t t = 0; t < used; ++t) {
    const scalar_t* row = anchors + (naturals + chosen[t]) * d;
    std::copy(row, row + d, chosen_fakes + t * d);
  }
  gemm(Transpose::b, chosen_fakes, used, anchors, naturals, d, scalar_t(1), similarity);
  const int64_t offset = k_real + k_fake;
  for (int64_t t = 0; t < used; ++t) {
    const scalar_t* s = similarity + t * naturals;
    int64_t nearest = 0;
    for (int64_t j = 1; j < naturals; ++j)
      if (s[j] > s[nearest]) nearest = j;
    const scalar_t w = lam[t], rest = static_cast<scalar_t>(1) - lam[t];
    const scalar_t* f = chosen_fakes + t * d;
    const scalar_t* r = anchors + nearest * d;
    for (int64_t c = 0; c < d; ++c) sum[c] = w * f[c] + rest * r[c];
    normalize_into(sum, d, extra + (offset + t) * d);
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

// The logsumexp over A(i) of every anchor (class-sorted rows): the N x columns logit matrix in row blocks
// sized for the cache, each one GEMM (alpha = 1/T) into a per-thread buffer, reduced in place and reused.
template <typename scalar_t>
void row_logsumexps(const ContrastLayout<scalar_t>& layout, scalar_t inv_t, scalar_t margin_over_t, scalar_t* lse) {
  const int64_t n = layout.n, d = layout.d, columns = layout.columns();
  if (columns == 1) {  // N = 1 and nothing synthesized: A(i) is empty
    lse[0] = -std::numeric_limits<scalar_t>::infinity();
    return;
  }
  const int64_t block = rows_per_block(n, columns, useful_threads(n, columns, d));
  const int64_t blocks = (n + block - 1) / block;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    at::Tensor storage;
    scalar_t* logits = scratch<scalar_t>(kLogits, std::min(block, n) * columns, storage);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * block, rows = std::min(block, n - r0);
      gemm(Transpose::b, layout.anchors + r0 * d, rows, layout.contrast, columns, d, inv_t, logits);
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t r = r0 + i;
        lse[r] = row_logsumexp(logits + i * columns, columns, layout.positives_begin(r), layout.positives_end(r),
                               layout.self_column(r), margin_over_t);
      }
    }
  });
}

// The loss from the logsumexps: sum over P(i) of z_i . c_p = z_i . (sum of the class's columns) - z_i . z_i,
// so the positive logits need no pass over the logit matrix.
template <typename scalar_t>
double mean_anchor_loss(const ContrastLayout<scalar_t>& layout, const scalar_t* lse, scalar_t inv_t,
                        scalar_t margin_over_t) {
  const int64_t n = layout.n, d = layout.d;
  const scalar_t* contrast = layout.contrast;
  std::vector<scalar_t> natural_sum(d, 0), fake_sum(d, 0);
  auto class_sum = [&](std::vector<scalar_t>& sum, int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j)
      for (int64_t c = 0; c < d; ++c) sum[c] += contrast[j * d + c];
  };
  class_sum(natural_sum, 0, layout.naturals + layout.natural_extras);
  class_sum(fake_sum, layout.fake_batch_column(), layout.n + layout.natural_extras + layout.fake_extras);
  double total = 0;
  int64_t anchors_with_positives = 0;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t positives = layout.positives(r);
    if (positives <= 0) continue;
    const scalar_t* zr = layout.anchors + r * d;
    const scalar_t* cs = (layout.is_natural_row(r) ? natural_sum : fake_sum).data();
    const scalar_t dot_class = dot(zr, cs, d), dot_self = dot(zr, zr, d);
    const double positive_logits = (dot_class - dot_self) * inv_t - positives * margin_over_t;
    total += lse[r] - positive_logits / positives;
    ++anchors_with_positives;
  }
  return anchors_with_positives > 0 ? total / anchors_with_positives : 0.0;
}

// z in the accumulation dtype, contiguous; its values checked (finite) in the same pass as the copy.
template <typename scalar_t>
at::Tensor accumulation_copy(const at::Tensor& z) {
  at::Tensor z_acc = z.scalar_type() == c10::CppTypeToScalarType<scalar_t>::value
                         ? z
                         : z.to(c10::CppTypeToScalarType<scalar_t>::value);
  checks::finite_values(z_acc.data_ptr<scalar_t>(), z_acc.numel(), "z");
  return z_acc;
}

// dL/dz in class-sorted row order into grad (N, D). With compute_lse (the forward with the gradient), the
// logsumexps are computed from the same logit rows and written to lse_sorted; otherwise they are read
// from it (the backward, from the forward's output).
template <typename scalar_t>
void contrastive_backward(const ContrastLayout<scalar_t>& layout, scalar_t* lse_sorted, bool compute_lse,
                          double grad_loss, double temperature, double margin, scalar_t* grad) {
  const int64_t n = layout.n, d = layout.d, columns = layout.columns();
  const scalar_t inv_t = static_cast<scalar_t>(1.0 / temperature);
  const scalar_t margin_over_t = static_cast<scalar_t>(margin / temperature);
  int64_t anchors_with_positives = 0;
  for (int64_t r = 0; r < n; ++r) anchors_with_positives += layout.positives(r) > 0;
  if (anchors_with_positives == 0) {
    if (compute_lse) row_logsumexps(layout, inv_t, margin_over_t, lse_sorted);
    std::fill(grad, grad + n * d, scalar_t(0));
    return;
  }
  const scalar_t weight = static_cast<scalar_t>(grad_loss / anchors_with_positives);

  // G(i, a) = dL/dlogit(i, a), the whole N x columns matrix (the backward's one big buffer: 68 MB at
  // N = 4096 in float32), block by block in parallel: the logits recomputed (one GEMM per block) and
  // turned into dL/dlogit in place.
  at::Tensor g_storage;
  scalar_t* gp = scratch<scalar_t>(kLogits, n * columns, g_storage);
  const int64_t block = rows_per_block(n, columns, useful_threads(n, columns, d));
  const int64_t blocks = (n + block - 1) / block;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t r0 = b * block, rows = std::min(block, n - r0);
      gemm(Transpose::b, layout.anchors + r0 * d, rows, layout.contrast, columns, d, inv_t, gp + r0 * columns);
      for (int64_t r = r0; r < r0 + rows; ++r) {
        const int64_t positives = layout.positives(r);
        const int64_t pb = layout.positives_begin(r), pe = layout.positives_end(r), self = layout.self_column(r);
        scalar_t* row = gp + r * columns;
        if (compute_lse)  // leaves the row with the margin taken off and -inf at the anchor's own column
          lse_sorted[r] = row_logsumexp(row, columns, pb, pe, self, margin_over_t);
        if (positives <= 0) {  // not in the loss
          std::fill(row, row + columns, scalar_t(0));
          continue;
        }
        if (compute_lse) {
          row_scaled_exp(row, columns, lse_sorted[r], weight);
          row_add(row + pb, pe - pb, -weight / positives);
          row[self] = 0;
        } else {
          row_logit_gradient(row, columns, pb, pe, self, margin_over_t, lse_sorted[r], scalar_t(1) / positives,
                             weight);
        }
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
  gemm(Transpose::none, gp, n, layout.contrast, d, columns, inv_t, grad);
}

// The forward's four outputs and, with_grad, dloss/dz (for an incoming gradient of 1, in z's dtype; else
// undefined): then the logits of each row are turned into dL/dlogit right after their logsumexp, and the
// backward never recomputes them.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> forward(
    const at::Tensor& z_in, const at::Tensor& labels_in, const at::Tensor& center_in, const at::Tensor& bank_real_in,
    const at::Tensor& bank_fake_in, const at::Tensor& lam_in, int64_t neighbors, double temperature, double margin,
    bool with_grad) {
  const auto in = checks::loss_inputs(z_in, labels_in, center_in, bank_real_in, bank_fake_in, lam_in, neighbors,
                                      temperature, margin, c10::DeviceType::CPU);
  const int64_t n = in.z.size(0), d = in.z.size(1);
  const int64_t k_real = in.bank_real.size(0), k_fake = in.bank_fake.size(0), m = in.lam.size(0);
  const int64_t rows = k_real + k_fake + m;
  const auto acc = accumulation_type(in.z.scalar_type());
  const auto options = in.z.options().dtype(acc);
  auto loss = at::empty({}, options);
  auto extra = at::empty({rows, d}, options);
  auto extra_labels = at::empty({rows}, options.dtype(at::kLong));
  auto lse = at::empty({n}, options);
  at::Tensor grad;
  if (with_grad) grad = at::empty({n, d}, options);
  const int64_t* y = in.labels.data_ptr<int64_t>();
  checks::label_values(y, n);
  int64_t* elp = extra_labels.data_ptr<int64_t>();
  std::fill(elp, elp + rows, kAbsent);

  AT_DISPATCH_FLOATING_TYPES(acc, "rccl::real_centric_loss (CPU)", [&] {
    scalar_t* ep = extra.data_ptr<scalar_t>();
    std::fill(ep, ep + rows * d, scalar_t(0));  // absent rows are zero
    if (n == 0) {  // no anchors, no class present: nothing to mine (lam unused), loss 0
      *loss.data_ptr<scalar_t>() = 0;
      return;
    }
    const scalar_t* lam = in.lam.data_ptr<scalar_t>();
    checks::mixing_values(lam, m);
    const at::Tensor z_acc = accumulation_copy<scalar_t>(in.z);
    ContrastLayout<scalar_t> layout;
    layout.sort_batch(z_acc.data_ptr<scalar_t>(), y, n, d);
    synthesize(layout, in.bank_real.data_ptr<scalar_t>(), k_real, in.bank_fake.data_ptr<scalar_t>(), k_fake,
               in.center.data_ptr<scalar_t>(), lam, m, neighbors, ep, elp);
    layout.add_contrast(ep, elp, rows);
    const scalar_t inv_t = static_cast<scalar_t>(1.0 / temperature);
    const scalar_t margin_over_t = static_cast<scalar_t>(margin / temperature);
    std::vector<scalar_t> lse_sorted(n);
    if (with_grad) {
      at::Tensor sorted_storage;
      scalar_t* grad_sorted = scratch<scalar_t>(kSortedGrad, n * d, sorted_storage);
      contrastive_backward(layout, lse_sorted.data(), true, 1.0, temperature, margin, grad_sorted);
      scalar_t* out = grad.data_ptr<scalar_t>();
      for (int64_t r = 0; r < n; ++r)
        std::copy(grad_sorted + r * d, grad_sorted + (r + 1) * d, out + layout.perm[r] * d);
    } else {
      row_logsumexps(layout, inv_t, margin_over_t, lse_sorted.data());
    }
    scalar_t* lse_out = lse.data_ptr<scalar_t>();
    for (int64_t r = 0; r < n; ++r) lse_out[layout.perm[r]] = lse_sorted[r];
    *loss.data_ptr<scalar_t>() = static_cast<scalar_t>(mean_anchor_loss(layout, lse_sorted.data(), inv_t, margin_over_t));
  });
  if (with_grad && grad.scalar_type() != in.z.scalar_type()) grad = grad.to(in.z.scalar_type());
  return {loss, extra, extra_labels, lse, grad};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> real_centric_loss_cpu(
    const at::Tensor& z, const at::Tensor& labels, const at::Tensor& center, const at::Tensor& bank_real,
    const at::Tensor& bank_fake, const at::Tensor& lam, int64_t neighbors, double temperature, double margin) {
  auto [loss, extra, extra_labels, lse, grad] =
      forward(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin, false);
  return {loss, extra, extra_labels, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> real_centric_loss_with_grad_cpu(
    const at::Tensor& z, const at::Tensor& labels, const at::Tensor& center, const at::Tensor& bank_real,
    const at::Tensor& bank_fake, const at::Tensor& lam, int64_t neighbors, double temperature, double margin) {
  return forward(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin, true);
}

at::Tensor real_centric_loss_backward_cpu(const at::Tensor& grad_loss_in, const at::Tensor& z_in,
                                          const at::Tensor& labels_in, const at::Tensor& extra_in,
                                          const at::Tensor& extra_labels_in, const at::Tensor& lse_in,
                                          double temperature, double margin) {
  const auto in = checks::backward_inputs(grad_loss_in, z_in, labels_in, extra_in, extra_labels_in, lse_in,
                                          temperature, margin, c10::DeviceType::CPU);
  const int64_t n = in.z.size(0), d = in.z.size(1), e = in.extra.size(0);
  const auto acc = accumulation_type(in.z.scalar_type());
  const int64_t* y = in.labels.data_ptr<int64_t>();
  const int64_t* ey = in.extra_labels.data_ptr<int64_t>();
  checks::label_values(y, n);
  checks::extra_label_values(ey, e);
  at::Tensor grad = at::empty({n, d}, in.z.options().dtype(acc));
  if (n == 0) return grad.to(in.z.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(acc, "rccl::_real_centric_loss_backward (CPU)", [&] {
    const at::Tensor z_acc = accumulation_copy<scalar_t>(in.z);
    ContrastLayout<scalar_t> layout;
    layout.sort_batch(z_acc.data_ptr<scalar_t>(), y, n, d);
    layout.add_contrast(in.extra.data_ptr<scalar_t>(), ey, e);
    const scalar_t* lse = in.lse.data_ptr<scalar_t>();
    std::vector<scalar_t> lse_sorted(n);
    for (int64_t r = 0; r < n; ++r) lse_sorted[r] = lse[layout.perm[r]];
    at::Tensor sorted_storage;
    scalar_t* grad_sorted = scratch<scalar_t>(kSortedGrad, n * d, sorted_storage);
    contrastive_backward(layout, lse_sorted.data(), false, static_cast<double>(*in.grad_loss.data_ptr<scalar_t>()),
                         temperature, margin, grad_sorted);
    scalar_t* out = grad.data_ptr<scalar_t>();
    for (int64_t r = 0; r < n; ++r)
      std::copy(grad_sorted + r * d, grad_sorted + (r + 1) * d, out + layout.perm[r] * d);
  });
  return grad.scalar_type() == in.z.scalar_type() ? grad : grad.to(in.z.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(rccl, CPU, m) {
  m.impl("real_centric_loss", &real_centric_loss_cpu);
  m.impl("_real_centric_loss_backward", &real_centric_loss_backward_cpu);
  m.impl("_real_centric_loss_with_grad", &real_centric_loss_with_grad_cpu);
}

}  // namespace cpu
}  // namespace rccl
