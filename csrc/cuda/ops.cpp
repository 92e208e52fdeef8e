// CUDA registration of the rccl ops: input checks, dtype handling, device guard, current stream and
// workspace allocation; the kernels themselves are in the .cu files beside this one (raw pointers only,
// see kernels.h). Compiled by g++: <torch/library.h> and c10/cuda headers only, no ATen/cuda/CUDAContext.h.
//
// The shape, dtype and device checks are csrc/checks.h's, shared with the CPU kernels (the same inputs are
// accepted and refused, with the same messages, on both); they cost nothing and raise a catchable error
// naming the argument. Checks that read tensor values (labels in {0, 1}, finite z, lam in [0, 1]) are
// device-side asserts in the kernels, so that the op never synchronises with the host. See docs/cuda.md.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <limits>
#include <tuple>

#include "../checks.h"
#include "kernels.h"

namespace {

using rccl_cuda::Dtype;

Dtype kernel_dtype(const at::Tensor& z) {
  switch (z.scalar_type()) {
    case at::kHalf: return Dtype::Float16;
    case at::kBFloat16: return Dtype::BFloat16;
    case at::kFloat: return Dtype::Float32;
    case at::kDouble: return Dtype::Float64;
    default:  // refused before by rccl::checks::features
      TORCH_INTERNAL_ASSERT(false, "rccl: kernel_dtype called with ", z.scalar_type());
  }
}

// Batches up to this many rows use 32 x 32 tiles (twice the blocks of 64 x 64: more of the GPU busy when
// N is small). Tuning and the tests of both tile paths move it with rccl::_cuda_set_small_tile_max_n
// (registered below), an argument rather than an environment switch read by the library.
constexpr int64_t kDefaultSmallTileMaxN = 1024;
std::atomic<int64_t> small_tile_max_n{kDefaultSmallTileMaxN};

bool use_small_tiles(int64_t n) { return n <= small_tile_max_n.load(std::memory_order_relaxed); }

// Sets the threshold for the following calls of this process and returns the previous one.
int64_t set_small_tile_max_n(int64_t max_n) {
  TORCH_CHECK(max_n >= 0, "rccl: _cuda_set_small_tile_max_n: max_n: expected an int >= 0, got ", max_n);
  return small_tile_max_n.exchange(max_n);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> real_centric_loss_cuda(
    const at::Tensor& z_in, const at::Tensor& labels_in, const at::Tensor& center_in, const at::Tensor& bank_real_in,
    const at::Tensor& bank_fake_in, const at::Tensor& lam_in, int64_t neighbors, double temperature, double margin) {
  const auto in = rccl::checks::loss_inputs(z_in, labels_in, center_in, bank_real_in, bank_fake_in, lam_in, neighbors,
                                            temperature, margin, c10::DeviceType::CUDA);
  const at::Tensor &z = in.z, &labels = in.labels, &center = in.center, &bank_real = in.bank_real,
                   &bank_fake = in.bank_fake, &lam = in.lam;
  const int64_t n = z.size(0), d = z.size(1);
  const auto acc = rccl::checks::accumulation_type(z.scalar_type());

  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t rows = bank_real.size(0) + bank_fake.size(0) + lam.size(0);
  const auto acc_options = z.options().dtype(acc);
  at::Tensor loss = at::empty({}, acc_options);
  at::Tensor extra = at::empty({rows, d}, acc_options);
  at::Tensor extra_labels = at::empty({rows}, z.options().dtype(at::kLong));
  at::Tensor lse = at::empty({n}, acc_options);
  if (n == 0) {  // no anchors, no class present: nothing to mine, loss 0
    loss.zero_();
    extra.zero_();
    extra_labels.fill_(-1);
    return {loss, extra, extra_labels, lse};
  }

  rccl_cuda::ForwardProblem p{};
  p.dtype = kernel_dtype(z);
  p.n = n, p.d = d, p.k_real = bank_real.size(0), p.k_fake = bank_fake.size(0), p.m = lam.size(0);
  p.neighbors = neighbors, p.temperature = temperature, p.margin = margin, p.small_tiles = use_small_tiles(n);
  p.z = z.data_ptr(), p.labels = labels.data_ptr<int64_t>(), p.center = center.data_ptr();
  p.bank_real = bank_real.data_ptr(), p.bank_fake = bank_fake.data_ptr(), p.lam = lam.data_ptr();
  p.loss = loss.data_ptr(), p.extra = extra.data_ptr(), p.extra_labels = extra_labels.data_ptr<int64_t>();
  p.lse = lse.data_ptr();
  at::Tensor workspace =
      at::empty({static_cast<int64_t>(rccl_cuda::forward_workspace_bytes(p))}, z.options().dtype(at::kByte));
  p.workspace = workspace.data_ptr();
  C10_CUDA_CHECK(rccl_cuda::launch_forward(p, c10::cuda::getCurrentCUDAStream().stream()));
  return {loss, extra, extra_labels, lse};
}

at::Tensor real_centric_loss_backward_cuda(const at::Tensor& grad_loss_in, const at::Tensor& z_in,
                                           const at::Tensor& labels_in, const at::Tensor& extra_in,
                                           const at::Tensor& extra_labels_in, const at::Tensor& lse_in,
                                           double temperature, double margin) {
  const auto in = rccl::checks::backward_inputs(grad_loss_in, z_in, labels_in, extra_in, extra_labels_in, lse_in,
                                                temperature, margin, c10::DeviceType::CUDA);
  const at::Tensor &grad_loss = in.grad_loss, &z = in.z, &labels = in.labels, &extra = in.extra,
                   &extra_labels = in.extra_labels, &lse = in.lse;
  const int64_t n = z.size(0), d = z.size(1);

  const c10::cuda::CUDAGuard guard(z.device());
  at::Tensor grad_z = at::empty({n, d}, z.options());
  if (n == 0) return grad_z;
  rccl_cuda::BackwardProblem p{};
  p.dtype = kernel_dtype(z);
  p.n = n, p.d = d, p.e = extra.size(0), p.temperature = temperature, p.margin = margin;
  p.small_tiles = use_small_tiles(n);
  p.grad_loss = grad_loss.data_ptr(), p.z = z.data_ptr(), p.labels = labels.data_ptr<int64_t>();
  p.extra = extra.data_ptr(), p.extra_labels = extra_labels.data_ptr<int64_t>(), p.lse = lse.data_ptr();
  p.grad_z = grad_z.data_ptr();
  at::Tensor workspace =
      at::empty({static_cast<int64_t>(rccl_cuda::backward_workspace_bytes(p))}, z.options().dtype(at::kByte));
  p.workspace = workspace.data_ptr();
  C10_CUDA_CHECK(rccl_cuda::launch_backward(p, c10::cuda::getCurrentCUDAStream().stream()));
  return grad_z;
}

// min(k, K + n_c). Once the bank holds k rows this is k without looking at the batch; while it is
// filling up it needs n_c, the one place where the CUDA ops read a value back to the host.
int64_t bank_rows(int64_t bank_rows_now, int64_t k, const at::Tensor& labels, int64_t cls) {
  if (bank_rows_now >= k) return k;
  if (labels.numel() == 0) return bank_rows_now;
  const int64_t members = labels.eq(cls).sum().item<int64_t>();
  return std::min(k, bank_rows_now + members);
}

std::tuple<at::Tensor, at::Tensor> update_hard_banks_cuda(const at::Tensor& z_in, const at::Tensor& labels_in,
                                                          const at::Tensor& center_in,
                                                          const at::Tensor& bank_real_in,
                                                          const at::Tensor& bank_fake_in, int64_t k) {
  const auto in = rccl::checks::bank_inputs(z_in, labels_in, center_in, bank_real_in, bank_fake_in, k,
                                            c10::DeviceType::CUDA);
  const at::Tensor &z = in.z, &labels = in.labels, &center = in.center, &bank_real = in.bank_real,
                   &bank_fake = in.bank_fake;
  const int64_t n = z.size(0), d = z.size(1);
  const auto acc = rccl::checks::accumulation_type(z.scalar_type());

  const c10::cuda::CUDAGuard guard(z.device());
  rccl_cuda::HardBankProblem p{};
  p.dtype = kernel_dtype(z);
  p.n = n, p.d = d, p.k_real = bank_real.size(0), p.k_fake = bank_fake.size(0);
  p.rows_real = bank_rows(p.k_real, k, labels, 0);
  p.rows_fake = bank_rows(p.k_fake, k, labels, 1);
  const auto acc_options = z.options().dtype(acc);
  at::Tensor out_real = at::empty({p.rows_real, d}, acc_options);
  at::Tensor out_fake = at::empty({p.rows_fake, d}, acc_options);
  p.z = z.data_ptr(), p.labels = labels.data_ptr<int64_t>(), p.center = center.data_ptr();
  p.bank_real = bank_real.data_ptr(), p.bank_fake = bank_fake.data_ptr();
  p.out_real = out_real.data_ptr(), p.out_fake = out_fake.data_ptr();
  at::Tensor workspace =
      at::empty({static_cast<int64_t>(rccl_cuda::hard_banks_workspace_bytes(p))}, z.options().dtype(at::kByte));
  p.workspace = workspace.data_ptr();
  C10_CUDA_CHECK(rccl_cuda::launch_hard_banks(p, c10::cuda::getCurrentCUDAStream().stream()));
  return {out_real, out_fake};
}

}  // namespace

// A tuning knob of the CUDA build only (no tensor argument: a catch-all kernel).
TORCH_LIBRARY_FRAGMENT(rccl, m) {
  m.def("_cuda_set_small_tile_max_n(int max_n) -> int", &set_small_tile_max_n);
}

TORCH_LIBRARY_IMPL(rccl, CUDA, m) {
  m.impl("real_centric_loss", &real_centric_loss_cuda);
  m.impl("_real_centric_loss_backward", &real_centric_loss_backward_cuda);
  m.impl("update_hard_banks", &update_hard_banks_cuda);
}
