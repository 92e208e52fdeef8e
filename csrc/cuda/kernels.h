// Raw-pointer launchers of the rccl CUDA kernels: the boundary between the g++-compiled glue (ops.cpp:
// tensors, checks, streams, registration) and the nvcc-compiled kernels (*.cu: no ATen/torch headers, so
// each compiles in seconds). Every launcher only enqueues work on `stream` and returns the first launch
// error; none synchronises with the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace rccl_cuda {

// dtype of z (and of grad_z). The accumulation dtype (center, banks, lam, extra, lse, loss) is float64
// for Float64 and float32 for the other three.
enum class Dtype : int { Float16 = 0, BFloat16 = 1, Float32 = 2, Float64 = 3 };

struct ForwardProblem {
  Dtype dtype;
  int64_t n, d, k_real, k_fake, m;
  int64_t neighbors;
  double temperature, margin;
  // 32 x 32 tiles instead of 64 x 64 (more blocks in flight for small N; float64 always uses them)
  bool small_tiles;
  // blocks the loss pass's column split aims for; 0 = the default (two per SM of a 132-SM card). The
  // emulation's tests set small values to exercise splits of several column tiles at small N.
  int64_t target_blocks;
  // inputs, contiguous: z (n, d) in `dtype`; labels (n,); center (d,), bank_real (k_real, d),
  // bank_fake (k_fake, d), lam (m,) in the accumulation dtype
  const void* z;
  const int64_t* labels;
  const void* center;
  const void* bank_real;
  const void* bank_fake;
  const void* lam;
  // outputs, contiguous, accumulation dtype except extra_labels
  void* loss;             // ()
  void* extra;            // (k_real + k_fake + m, d)
  int64_t* extra_labels;  // (k_real + k_fake + m,)
  void* lse;              // (n,)
  void* workspace;        // forward_workspace_bytes(problem) bytes, 256-byte aligned, no initial value
};

size_t forward_workspace_bytes(const ForwardProblem& p);
// n >= 1 and d >= 1 (the glue handles n == 0 without a launch)
cudaError_t launch_forward(const ForwardProblem& p, cudaStream_t stream);

struct BackwardProblem {
  Dtype dtype;
  int64_t n, d, e;  // e = rows of extra
  double temperature, margin;
  bool small_tiles;  // as in ForwardProblem
  int64_t target_blocks;  // blocks the fold's strips aim for; 0 = the default (see loss_backward.cu)
  const void* grad_loss;  // () accumulation dtype
  const void* z;          // (n, d) dtype
  const int64_t* labels;  // (n,)
  const void* extra;      // (e, d) accumulation dtype
  const int64_t* extra_labels;  // (e,)
  const void* lse;        // (n,) accumulation dtype
  void* grad_z;           // (n, d) dtype
  void* workspace;        // backward_workspace_bytes(problem) bytes
};

size_t backward_workspace_bytes(const BackwardProblem& p);
cudaError_t launch_backward(const BackwardProblem& p, cudaStream_t stream);

struct HardBankProblem {
  Dtype dtype;
  int64_t n, d, k_real, k_fake;
  int64_t rows_real, rows_fake;  // output rows: min(k, K + n_c) for each bank, computed by the caller
  const void* z;                 // (n, d) dtype
  const int64_t* labels;         // (n,)
  const void* center;            // (d,) accumulation dtype
  const void* bank_real;         // (k_real, d) accumulation dtype
  const void* bank_fake;         // (k_fake, d) accumulation dtype
  void* out_real;                // (rows_real, d) accumulation dtype
  void* out_fake;                // (rows_fake, d) accumulation dtype
  void* workspace;
};

size_t hard_banks_workspace_bytes(const HardBankProblem& p);
cudaError_t launch_hard_banks(const HardBankProblem& p, cudaStream_t stream);

}  // namespace rccl_cuda
