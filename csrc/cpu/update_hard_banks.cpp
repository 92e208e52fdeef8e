// CPU kernel of rccl::update_hard_banks: keep the k candidates (old bank + batch rows of the class) least
// (real bank) or most (fake bank) similar to the centre, hardest first, ties to the lowest candidate
// index (the old bank's rows come before the batch's). Output rows: min(k, K + n_class).
#include <ATen/Dispatch.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/index_select.h>
#include <ATen/ops/mv.h>
#include <torch/library.h>

#include "common.h"

namespace rccl {
namespace cpu {
namespace {

template <typename scalar_t>
at::Tensor keep_hardest(const at::Tensor& bank, const at::Tensor& z, const int64_t* y, int64_t cls,
                        const at::Tensor& center, int64_t k, bool lowest) {
  std::vector<int64_t> rows;
  for (int64_t i = 0; i < z.size(0); ++i)
    if (y[i] == cls) rows.push_back(i);
  auto index = at::empty({static_cast<int64_t>(rows.size())}, at::TensorOptions().dtype(at::kLong));
  std::copy(rows.begin(), rows.end(), index.data_ptr<int64_t>());
  auto candidates = at::cat({bank, at::index_select(z, 0, index)}).contiguous();
  auto similarity = at::mv(candidates, center).contiguous();
  const scalar_t* s = similarity.data_ptr<scalar_t>();
  const int64_t count = candidates.size(0);
  // hardest first = largest of (sign * similarity); sign = -1 for the lowest
  std::vector<scalar_t> key(count);
  for (int64_t i = 0; i < count; ++i) key[i] = lowest ? -s[i] : s[i];
  auto kept = top_indices(key.data(), count, [](int64_t) { return true; }, k);
  auto kept_index = at::empty({static_cast<int64_t>(kept.size())}, at::TensorOptions().dtype(at::kLong));
  std::copy(kept.begin(), kept.end(), kept_index.data_ptr<int64_t>());
  return at::index_select(candidates, 0, kept_index);
}

std::tuple<at::Tensor, at::Tensor> update_hard_banks_cpu(const at::Tensor& z_in, const at::Tensor& labels_in,
                                                         const at::Tensor& center_in, const at::Tensor& bank_real_in,
                                                         const at::Tensor& bank_fake_in, int64_t k) {
  const auto in = checks::bank_inputs(z_in, labels_in, center_in, bank_real_in, bank_fake_in, k, c10::DeviceType::CPU);
  const int64_t n = in.z.size(0);
  const auto acc = accumulation_type(in.z.scalar_type());
  const int64_t* yp = in.labels.data_ptr<int64_t>();
  checks::label_values(yp, n);
  auto z_acc = in.z.to(acc).contiguous();
  at::Tensor real, fake;
  AT_DISPATCH_FLOATING_TYPES(acc, "rccl::update_hard_banks (CPU)", [&] {
    checks::finite_values(z_acc.data_ptr<scalar_t>(), z_acc.numel(), "z");
    real = keep_hardest<scalar_t>(in.bank_real, z_acc, yp, kNatural, in.center, k, true);
    fake = keep_hardest<scalar_t>(in.bank_fake, z_acc, yp, kFake, in.center, k, false);
  });
  return {real, fake};
}

}  // namespace

TORCH_LIBRARY_IMPL(rccl, CPU, m) { m.impl("update_hard_banks", &update_hard_banks_cpu); }

}  // namespace cpu
}  // namespace rccl
