// The one place where every rccl op is declared. Backends register kernels for these schemas with
// TORCH_LIBRARY_IMPL(rccl, CPU, m) in csrc/cpu/ and TORCH_LIBRARY_IMPL(rccl, CUDA, m) in csrc/cuda/;
// autograd and fake (meta) kernels are registered from Python in rccl/ops/.
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
#include <torch/library.h>

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
  m.def(
      "update_hard_banks(Tensor z, Tensor labels, Tensor center, Tensor bank_real, Tensor bank_fake, "
      "int k) -> (Tensor, Tensor)");
}
