// C entry points over the raw launchers of csrc/cuda/kernels.h, for ctypes, with host memory standing in
// for device memory. Workspaces are allocated at their exact size (AddressSanitizer sees an overrun) and
// filled with 0xff bytes (NaN floats, -1 integers) so that a kernel reading workspace it never wrote shows
// up as a wrong answer or, used as an index, as an out-of-bounds access.
#include <cstdlib>
#include <cstring>

#include "cuda_emulation.h"
#include "kernels.h"

using namespace rccl_cuda;

namespace {
struct Workspace {
  void* p = nullptr;
  explicit Workspace(size_t bytes) {
    if (bytes == 0) return;
    p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);  // aligned_alloc wants a multiple of the alignment
    std::memset(p, 0xff, bytes);
  }
  ~Workspace() { std::free(p); }
};
}  // namespace

// How the following launches run: `concurrency` blocks at once, in an order drawn from `seed`.
extern "C" void rccl_emu_set_schedule(unsigned int concurrency, unsigned long long seed) {
  emu::set_schedule(concurrency, seed);
}
// The schedule in force: concurrency, seed and launches since it was set (what EmulatedOps asked for)
extern "C" void rccl_emu_get_schedule(unsigned int* concurrency, unsigned long long* seed,
                                      unsigned long long* launches) {
  *concurrency = emu::schedule.concurrency, *seed = emu::schedule.seed, *launches = emu::schedule.launches;
}

// mma_sync calls (one per warp and fragment product) since the last call; resets the count
extern "C" unsigned long long rccl_emu_take_mma_calls() { return emu::mma_calls.exchange(0); }

extern "C" int rccl_emu_forward(int dtype, int64_t n, int64_t d, int64_t k_real, int64_t k_fake, int64_t m,
                                int64_t neighbors, double temperature, double margin, const void* z,
                                const int64_t* labels, const void* center, const void* bank_real,
                                const void* bank_fake, const void* lam, void* loss, void* extra,
                                int64_t* extra_labels, void* lse, int small_tiles, int64_t target_blocks) {
  ForwardProblem p{};
  p.dtype = static_cast<Dtype>(dtype);
  p.n = n, p.d = d, p.k_real = k_real, p.k_fake = k_fake, p.m = m, p.neighbors = neighbors;
  p.temperature = temperature, p.margin = margin, p.small_tiles = small_tiles != 0;
  p.target_blocks = target_blocks;
  p.z = z, p.labels = labels, p.center = center, p.bank_real = bank_real, p.bank_fake = bank_fake, p.lam = lam;
  p.loss = loss, p.extra = extra, p.extra_labels = extra_labels, p.lse = lse;
  Workspace ws(forward_workspace_bytes(p));
  p.workspace = ws.p;
  return launch_forward(p, nullptr);
}

extern "C" int rccl_emu_backward(int dtype, int64_t n, int64_t d, int64_t e, double temperature, double margin,
                                 const void* grad_loss, const void* z, const int64_t* labels, const void* extra,
                                 const int64_t* extra_labels, const void* lse, void* grad_z,
                                 int small_tiles, int64_t target_blocks) {
  BackwardProblem p{};
  p.dtype = static_cast<Dtype>(dtype);
  p.n = n, p.d = d, p.e = e, p.temperature = temperature, p.margin = margin, p.small_tiles = small_tiles != 0;
  p.target_blocks = target_blocks;
  p.grad_loss = grad_loss, p.z = z, p.labels = labels, p.extra = extra, p.extra_labels = extra_labels;
  p.lse = lse, p.grad_z = grad_z;
  Workspace ws(backward_workspace_bytes(p));
  p.workspace = ws.p;
  return launch_backward(p, nullptr);
}

extern "C" int rccl_emu_hard_banks(int dtype, int64_t n, int64_t d, int64_t k_real, int64_t k_fake,
                                   int64_t rows_real, int64_t rows_fake, const void* z, const int64_t* labels,
                                   const void* center, const void* bank_real, const void* bank_fake,
                                   void* out_real, void* out_fake) {
  HardBankProblem p{};
  p.dtype = static_cast<Dtype>(dtype);
  p.n = n, p.d = d, p.k_real = k_real, p.k_fake = k_fake, p.rows_real = rows_real, p.rows_fake = rows_fake;
  p.z = z, p.labels = labels, p.center = center, p.bank_real = bank_real, p.bank_fake = bank_fake;
  p.out_real = out_real, p.out_fake = out_fake;
  Workspace ws(hard_banks_workspace_bytes(p));
  p.workspace = ws.p;
  return launch_hard_banks(p, nullptr);
}
