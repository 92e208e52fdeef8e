// Kernels that misuse CUDA on purpose, each behind a C entry point: tests/test_op_cuda_sanitize.py checks
// that the emulation reports every one of them as a GPU (or compute-sanitizer's synccheck) would.
#include <cuda_runtime.h>

namespace {

__global__ void partial_barrier(int* out) {
  __shared__ int value[256];
  value[threadIdx.x] = static_cast<int>(threadIdx.x);
  if (threadIdx.x < 200) __syncthreads();  // the last 56 threads never arrive
  out[threadIdx.x] = value[threadIdx.x];
}

__global__ void shuffle_missing_lane(int* out) {
  if (threadIdx.x == 5) return;  // lane 5 leaves before the warp's shuffle
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
}

__global__ void ballot_missing_lane(int* out) {
  if (threadIdx.x % 32 == 31) return;
  out[threadIdx.x] = static_cast<int>(__ballot_sync(0xffffffffu, threadIdx.x % 2 == 0));
}

__global__ void big_static_shared(int* out) {
  __shared__ float tile[128][128];  // 64 KiB: above the 48 KiB a kernel may declare statically
  tile[threadIdx.x][0] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = static_cast<int>(tile[0][0]);
}

__global__ void uses_dynamic_shared(int* out) {
  extern __shared__ int scratch[];
  scratch[threadIdx.x] = 1;
  __syncthreads();
  out[threadIdx.x] = scratch[0];
}

__global__ void trivial(int* out) {
  if (threadIdx.x == 0 && blockIdx.x == 0 && blockIdx.y == 0) out[0] = 1;
}

}  // namespace

extern "C" int misuse_partial_barrier(int* out) {
  partial_barrier<<<1, 256, 0, nullptr>>>(out);
  return cudaGetLastError();
}
extern "C" int misuse_shuffle_missing_lane(int* out) {
  shuffle_missing_lane<<<1, 64, 0, nullptr>>>(out);
  return cudaGetLastError();
}
extern "C" int misuse_ballot_missing_lane(int* out) {
  ballot_missing_lane<<<1, 64, 0, nullptr>>>(out);
  return cudaGetLastError();
}
extern "C" int misuse_big_static_shared(int* out) {
  big_static_shared<<<1, 128, 0, nullptr>>>(out);
  return cudaGetLastError();
}
// threads per block, grid (x, y), dynamic shared bytes, and the opt-in attribute (0 = not set)
extern "C" int misuse_launch(int* out, unsigned int threads, unsigned int grid_x, unsigned int grid_y,
                             unsigned long long dynamic_bytes, int opt_in_bytes) {
  if (opt_in_bytes > 0) {
    const cudaError_t err = cudaFuncSetAttribute(uses_dynamic_shared, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 opt_in_bytes);
    if (err != cudaSuccess) return err;
  }
  if (dynamic_bytes > 0) {
    uses_dynamic_shared<<<dim3(grid_x, grid_y), threads, dynamic_bytes, nullptr>>>(out);
  } else {
    trivial<<<dim3(grid_x, grid_y), threads, 0, nullptr>>>(out);
  }
  return cudaGetLastError();
}
