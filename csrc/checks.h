// The argument checks of the rccl ops, ONE definition for every backend: the CPU kernels (csrc/cpu/) and
// the CUDA glue (csrc/cuda/ops.cpp) call the same functions in the same order, so both accept and refuse
// the same inputs with the same messages ("rccl: <argument>: ..."; rccl.functional turns them into a
// ValueError naming the argument).
//
// The rules:
//   z             2-D (N, D), float16/bfloat16/float32/float64, D >= 1, N < 2^31, on the backend's device.
//   labels        int64 (N,); extra_labels int64 (E,).
//   center (D,), bank_real / bank_fake (K, D), lam (M,), extra (E, D), lse (N,): any floating dtype, on z's
//                 device. A dtype other than the accumulation dtype of z (float32 for float16/bfloat16/
//                 float32 z, float64 for float64 z) is CONVERTED to it (a copy; none when it already is),
//                 on every backend: float32 centre and banks serve bfloat16 features under autocast, and a
//                 float64 centre with float32 features is rounded to float32 as the kernels compute in it.
//   grad_loss     one element, floating, on z's device (read in the accumulation dtype).
//   Non-contiguous tensors are accepted and copied to a contiguous one.
//   neighbors >= 0, k >= 0, temperature finite > 0, margin finite.
// Values (labels in {0, 1}, extra_labels in {-1, 0, 1, 2}, z finite, lam in [0, 1]) are checked by the
// host-side functions at the end of this file on the CPU, in the pass that reads the data anyway; the CUDA
// kernels check the same rules with device-side asserts (reading values on the host would synchronise).
//
// Only tensor metadata and plain loops here (no ATen op on the hot path beyond a no-op to()/contiguous()).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace rccl {
namespace checks {

// float32 for half-precision features, the features' own dtype otherwise (as rccl.reference).
inline at::ScalarType accumulation_type(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
}

inline bool is_feature_dtype(at::ScalarType t) {
  return t == at::kHalf || t == at::kBFloat16 || t == at::kFloat || t == at::kDouble;
}

// z, checked; `backend` is the device type of the kernel that runs (CPU or CUDA).
inline void features(const at::Tensor& z, c10::DeviceType backend) {
  TORCH_CHECK(z.device().type() == backend, "rccl: z: this is the ", c10::DeviceTypeName(backend),
              " kernel, but z is on ", z.device(), ": all inputs must be on one device of that type");
  TORCH_CHECK(z.dim() == 2, "rccl: z: expected a 2-D tensor (N, D), got shape ", z.sizes());
  TORCH_CHECK(is_feature_dtype(z.scalar_type()), "rccl: z: expected float16, bfloat16, float32 or float64, got ",
              z.scalar_type());
  TORCH_CHECK(z.size(1) >= 1, "rccl: z: feature size D must be at least 1");
  TORCH_CHECK(z.size(0) < std::numeric_limits<int32_t>::max(), "rccl: z: at most 2^31 - 1 rows, got ", z.size(0));
}

inline void same_device(const char* name, const at::Tensor& t, const at::Tensor& z) {
  TORCH_CHECK(t.device() == z.device(), "rccl: ", name, ": is on ", t.device(), " but z is on ", z.device(),
              ": all inputs must be on one device");
}

// int64 of shape (rows,), on z's device, contiguous.
inline at::Tensor labels(const char* name, const at::Tensor& t, int64_t rows, const at::Tensor& z) {
  same_device(name, t, z);
  TORCH_CHECK(t.scalar_type() == at::kLong, "rccl: ", name, ": expected int64, got ", t.scalar_type());
  TORCH_CHECK(t.dim() == 1 && t.size(0) == rows, "rccl: ", name, ": expected shape (", rows, ",), got ", t.sizes());
  return t.contiguous();
}

// A floating input with `dims` dimensions and, when d >= 0, last size d; returned contiguous in z's
// accumulation dtype (converted if it is another floating dtype: see the rules above).
inline at::Tensor floating(const char* name, const at::Tensor& t, int64_t dims, int64_t d, const at::Tensor& z) {
  same_device(name, t, z);
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "rccl: ", name, ": expected a floating-point tensor, got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == dims, "rccl: ", name, ": expected a ", dims, "-D tensor, got shape ", t.sizes());
  TORCH_CHECK(d < 0 || t.size(dims - 1) == d, "rccl: ", name, ": expected feature size D = ", d,
              " (z's), got shape ", t.sizes());
  return t.to(accumulation_type(z.scalar_type())).contiguous();
}

inline void neighbors(int64_t value) {
  TORCH_CHECK(value >= 0, "rccl: neighbors: expected an int >= 0, got ", value);
}

inline void k(int64_t value) { TORCH_CHECK(value >= 0, "rccl: k: expected an int >= 0, got ", value); }

inline void temperature_and_margin(double temperature, double margin) {
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0, "rccl: temperature: expected a finite number > 0, got ",
              temperature);
  TORCH_CHECK(std::isfinite(margin), "rccl: margin: expected a finite number, got ", margin);
}

// The inputs of each op, checked in one fixed order (so that two faults give the same first error on
// every backend) and normalised: z contiguous in its own dtype, the rest as the functions above return.
//
// The checks the loss and update_hard_banks share: the batch (z, labels), the centre and both banks.
template <typename Inputs>
void batch_centre_and_banks(Inputs& in, const at::Tensor& z, const at::Tensor& labels_, const at::Tensor& center,
                            const at::Tensor& bank_real, const at::Tensor& bank_fake, c10::DeviceType backend) {
  features(z, backend);
  const int64_t n = z.size(0), d = z.size(1);
  in.labels = labels("labels", labels_, n, z);
  in.center = floating("center", center, 1, d, z);
  in.bank_real = floating("bank_real", bank_real, 2, d, z);
  in.bank_fake = floating("bank_fake", bank_fake, 2, d, z);
}

struct LossInputs {
  at::Tensor z, labels, center, bank_real, bank_fake, lam;
};

inline LossInputs loss_inputs(const at::Tensor& z, const at::Tensor& labels_, const at::Tensor& center,
                              const at::Tensor& bank_real, const at::Tensor& bank_fake, const at::Tensor& lam,
                              int64_t neighbors_, double temperature, double margin, c10::DeviceType backend) {
  LossInputs in;
  batch_centre_and_banks(in, z, labels_, center, bank_real, bank_fake, backend);
  in.lam = floating("lam", lam, 1, -1, z);
  neighbors(neighbors_);
  temperature_and_margin(temperature, margin);
  in.z = z.contiguous();
  return in;
}

struct BackwardInputs {
  at::Tensor grad_loss, z, labels, extra, extra_labels, lse;
};

inline BackwardInputs backward_inputs(const at::Tensor& grad_loss, const at::Tensor& z, const at::Tensor& labels_,
                                      const at::Tensor& extra, const at::Tensor& extra_labels,
                                      const at::Tensor& lse, double temperature, double margin,
                                      c10::DeviceType backend) {
  features(z, backend);
  const int64_t n = z.size(0), d = z.size(1);
  BackwardInputs in;
  in.labels = labels("labels", labels_, n, z);
  same_device("grad_loss", grad_loss, z);
  TORCH_CHECK(grad_loss.numel() == 1 && at::isFloatingType(grad_loss.scalar_type()),
              "rccl: grad_loss: expected a floating-point tensor of one element, got ", grad_loss.scalar_type(),
              " of shape ", grad_loss.sizes());
  in.grad_loss = grad_loss.reshape({}).to(accumulation_type(z.scalar_type()));
  in.extra = floating("extra", extra, 2, d, z);
  in.extra_labels = labels("extra_labels", extra_labels, in.extra.size(0), z);
  in.lse = floating("lse", lse, 1, -1, z);
  TORCH_CHECK(in.lse.size(0) == n, "rccl: lse: expected shape (", n, ",), got ", lse.sizes());
  temperature_and_margin(temperature, margin);
  in.z = z.contiguous();
  return in;
}

struct BankInputs {
  at::Tensor z, labels, center, bank_real, bank_fake;
};

inline BankInputs bank_inputs(const at::Tensor& z, const at::Tensor& labels_, const at::Tensor& center,
                              const at::Tensor& bank_real, const at::Tensor& bank_fake, int64_t k_,
                              c10::DeviceType backend) {
  BankInputs in;
  batch_centre_and_banks(in, z, labels_, center, bank_real, bank_fake, backend);
  k(k_);
  in.z = z.contiguous();
  return in;
}

// ---- Host-side value checks (CPU tensors; the CUDA kernels assert the same rules on the device) ----

// labels: every value 0 (natural) or 1 (fake).
inline void label_values(const int64_t* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(p[i] == 0 || p[i] == 1, "rccl: labels: must be 0 (natural) or 1 (fake), found ", p[i], " at index ",
                i);
}

// extra_labels: -1 (absent), 0 or 1 (a positive of that class), 2 (a mixed negative).
inline void extra_label_values(const int64_t* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    TORCH_CHECK(p[i] >= -1 && p[i] <= 2, "rccl: extra_labels: values must be -1, 0, 1 or 2, found ", p[i],
                " at index ", i);
}

// Every value finite. On the bits (exponent all ones = inf or NaN), so that the loop vectorises:
// at::isfinite(z).all() costs more than the whole small-batch loss.
template <typename scalar_t>
void finite_values(const scalar_t* x, int64_t count, const char* name) {
  static_assert(std::is_floating_point<scalar_t>::value, "float or double");
  using bits_t = std::conditional_t<sizeof(scalar_t) == 4, uint32_t, uint64_t>;
  constexpr int mantissa = std::numeric_limits<scalar_t>::digits - 1;
  constexpr bits_t exponent_mask = (~bits_t(0) >> 1) >> mantissa << mantissa;
  const bits_t* p = reinterpret_cast<const bits_t*>(x);
  bits_t non_finite = 0;
  for (int64_t i = 0; i < count; ++i) non_finite |= (p[i] & exponent_mask) == exponent_mask;
  TORCH_CHECK(!non_finite, "rccl: ", name, ": contains NaN or infinite values");
}

// lam: every mixing coefficient in [0, 1].
template <typename scalar_t>
void mixing_values(const scalar_t* lam, int64_t m) {
  for (int64_t t = 0; t < m; ++t)
    TORCH_CHECK(lam[t] >= 0 && lam[t] <= 1, "rccl: lam: mixing coefficients must lie in [0, 1], found ", lam[t],
                " at index ", t);
}

}  // namespace checks
}  // namespace rccl
