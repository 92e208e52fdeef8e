// The one place where every rccl op is declared, and the autograd of real_centric_loss (backend-agnostic,
// so it is written once here). Backends register kernels for these schemas with
// TORCH_LIBRARY_IMPL(rccl, CPU, m) in csrc/cpu/ and TORCH_LIBRARY_IMPL(rccl, CUDA, m) in csrc/cuda/; the
// fake (meta) kernels are registered from Python in rccl/ops/_registrations.py.
//
// The outputs beyond `loss` exist so that the forward's shapes never depend on the data (no host sync,
// CUDA-graph and torch.compile friendly) and so that the backward does not redo the mining:
//   extra        (K_real + K_fake + M, D)  the synthesized contrast features, detached: rows [0, K_real) are
//                the hard positives from bank_real, [K_real, K_real + K_fake) those from bank_fake, and
//                [K_real + K_fake, ...) the mixed negatives in slot order t = 0..M-1. Accumulation dtype
//                (float32 for float16/bfloat16 inputs, else z's dtype).
//   extra_labels (K_real + K_fake + M,) int64: 0 or 1 = a positive of that class, 2 = a mixed negative
//                (a positive of no anchor), -1 = an absent row (its bank's class is absent from the
//                batch, or negative slot t >= min(M, n_fake), or the batch has no naturals). Absent rows
//                are not part of the contrast set.
//   lse          (N,) accumulation dtype: logsumexp over A(i) of logit(i, a) for each anchor i.
// The backward recomputes |P(i)| and the number of anchors with a positive from labels and extra_labels.
#include <Python.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <tuple>

extern "C" {
// A Python module with no methods, so that `import rccl._C` loads the library and runs the
// TORCH_LIBRARY registrations below (no pybind11 glue: ops are called through torch.ops.rccl).
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(rccl, m) {
  m.def(
      "real_centric_loss(Tensor z, Tensor labels, Tensor center, Tensor bank_real, Tensor bank_fake, "
      "Tensor lam, int neighbors, float temperature, float margin) "
      "-> (Tensor loss, Tensor extra, Tensor extra_labels, Tensor lse)");
  m.def(
      "_real_centric_loss_backward(Tensor grad_loss, Tensor z, Tensor labels, Tensor extra, "
      "Tensor extra_labels, Tensor lse, float temperature, float margin) -> Tensor");
  // The forward that also returns grad_z = dloss/dz for an incoming gradient of 1 (z's dtype), so that
  // the backward is grad_loss * grad_z instead of recomputing the logits: one GEMM of N x (N + E) x D and
  // one exp pass fewer per training step. CPU only; the autograd below uses it when z needs a gradient
  // and a kernel for z's device exists.
  m.def(
      "_real_centric_loss_with_grad(Tensor z, Tensor labels, Tensor center, Tensor bank_real, "
      "Tensor bank_fake, Tensor lam, int neighbors, float temperature, float margin) "
      "-> (Tensor loss, Tensor extra, Tensor extra_labels, Tensor lse, Tensor grad_z)");
  m.def(
      "update_hard_banks(Tensor z, Tensor labels, Tensor center, Tensor bank_real, Tensor bank_fake, "
      "int k) -> (Tensor, Tensor)");
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Autograd in C++ rather than torch.library.register_autograd in Python: the Python wrapper cost ~0.7 ms
// per forward + backward on the CPU (two Python round trips through the dispatcher), about as much as the
// whole N = 256 step. Only z receives a gradient; extra, extra_labels and lse are bookkeeping for the
// backward (non-differentiable outputs). Where z needs a gradient and the device has the kernel (CPU),
// the forward runs _real_centric_loss_with_grad and the backward only scales its grad_z; otherwise
// (CUDA, or no gradient needed) the forward is real_centric_loss and the backward
// _real_centric_loss_backward. Double backward is not supported.
using Outputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using OutputsWithGrad = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using LossSignature = Outputs(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const at::Tensor&, const at::Tensor&, int64_t, double, double);
using LossWithGradSignature = OutputsWithGrad(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                              const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                              double, double);

// Whether rccl::_real_centric_loss_with_grad has a kernel for this device (the CPU kernels do).
bool fused_gradient_for(const at::Tensor& z) {
  static const c10::OperatorHandle op =
      c10::Dispatcher::singleton().findSchemaOrThrow("rccl::_real_centric_loss_with_grad", "");
  return z.device().is_cpu() && op.hasKernelForDispatchKey(c10::DispatchKey::CPU);
}

class RealCentricLoss : public torch::autograd::Function<RealCentricLoss> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& z, const at::Tensor& labels,
                               const at::Tensor& center, const at::Tensor& bank_real, const at::Tensor& bank_fake,
                               const at::Tensor& lam, int64_t neighbors, double temperature, double margin,
                               bool with_grad) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("rccl::real_centric_loss", "")
                               .typed<LossSignature>();
    static const auto op_with_grad = c10::Dispatcher::singleton()
                                         .findSchemaOrThrow("rccl::_real_centric_loss_with_grad", "")
                                         .typed<LossWithGradSignature>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor loss, extra, extra_labels, lse, grad_z;
    if (with_grad) {
      std::tie(loss, extra, extra_labels, lse, grad_z) =
          op_with_grad.call(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin);
      ctx->save_for_backward({grad_z});
    } else {
      std::tie(loss, extra, extra_labels, lse) =
          op.call(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin);
      ctx->save_for_backward({z, labels, extra, extra_labels, lse});
    }
    ctx->saved_data["with_grad"] = with_grad;
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["margin"] = margin;
    ctx->mark_non_differentiable({extra, extra_labels, lse});
    return {loss, extra, extra_labels, lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = c10::Dispatcher::singleton()
                               .findSchemaOrThrow("rccl::_real_centric_loss_backward", "")
                               .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const at::Tensor&, const at::Tensor&, double,
                                                 double)>();
    const auto saved = ctx->get_saved_variables();
    at::Tensor grad_z;
    if (ctx->saved_data["with_grad"].toBool()) {
      // the gradient is linear in grad_loss: scale the one the forward computed for grad_loss = 1
      grad_z = saved[0].mul(grads[0].to(saved[0].scalar_type()));
    } else {
      grad_z = op.call(grads[0], saved[0], saved[1], saved[2], saved[3], saved[4],
                       ctx->saved_data["temperature"].toDouble(), ctx->saved_data["margin"].toDouble());
    }
    return {grad_z, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

Outputs real_centric_loss_autograd(const at::Tensor& z, const at::Tensor& labels, const at::Tensor& center,
                                   const at::Tensor& bank_real, const at::Tensor& bank_fake, const at::Tensor& lam,
                                   int64_t neighbors, double temperature, double margin) {
  // compute the gradient in the forward only when a backward will need it
  const bool with_grad = at::GradMode::is_enabled() && z.requires_grad() && fused_gradient_for(z);
  auto out = RealCentricLoss::apply(z, labels, center, bank_real, bank_fake, lam, neighbors, temperature, margin,
                                    with_grad);
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(rccl, Autograd, m) { m.impl("real_centric_loss", &real_centric_loss_autograd); }
