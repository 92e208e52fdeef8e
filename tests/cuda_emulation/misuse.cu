// Kernels that misuse CUDA on purpose, each behind a C entry point: tests/test_op_cuda_sanitize.py checks
// that the emulation reports every one of them as a GPU (or compute-sanitizer's synccheck) would.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>

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


// ---- tensor-core fragments: one warp multiplies two 16 x 16 bf16 matrices ----------------------------
// A(i, j) = ((3i + 7j) mod 11 - 5) / 4, B(i, j) = ((5i + 2j) mod 13 - 6) / 8: exact in bf16, and so is
// every entry of A B in float (the test computes the same product)
namespace wmma = nvcuda::wmma;
using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major>;
using FragB = wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

__device__ void fill_inputs(__nv_bfloat16 (*a)[24], __nv_bfloat16 (*b)[24]) {
  for (int e = threadIdx.x; e < 256; e += blockDim.x) {
    const int i = e / 16, j = e % 16;
    a[i][j] = __float2bfloat16_rn(static_cast<float>((3 * i + 7 * j) % 11 - 5) / 4.0f);  // A(i, j), row-major
    b[j][i] = __float2bfloat16_rn(static_cast<float>((5 * i + 2 * j) % 13 - 6) / 8.0f);  // B(i, j), column-major
  }
  __syncthreads();
}

// mode 0: correct (store_matrix_sync); 1: reads acc.x[i] as if lane l held row l / 4 + 8 (i / 2 % 2),
// columns 2 (l % 4) + i % 2 + 8 (i / 4) (the PTX m16n8k16 register layout: an assumption CUDA does not
// make for wmma); 2: lane 3 skips the mma; 3: ldm 12; 4: an operand not declared __align__(32);
// 5: the lanes pass different pointers
__global__ void wmma_product(float* out, int mode) {
  __shared__ __align__(32) __nv_bfloat16 a[16][24];
  __shared__ __align__(32) __nv_bfloat16 b[16][24];
  __shared__ __align__(32) float c[16][20];
  __shared__ __nv_bfloat16 unaligned[16][24];
  fill_inputs(a, b);
  for (int e = threadIdx.x; e < 16 * 24; e += blockDim.x) unaligned[e / 24][e % 24] = a[e / 24][e % 24];
  __syncthreads();
  FragA fa;
  FragB fb;
  FragC acc;
  wmma::fill_fragment(acc, 0.0f);
  if (mode == 3) {
    wmma::load_matrix_sync(fa, &a[0][0], 12);
  } else if (mode == 4) {
    wmma::load_matrix_sync(fa, &unaligned[0][0], 24);
  } else if (mode == 5) {
    wmma::load_matrix_sync(fa, threadIdx.x % 2 ? &a[0][0] : &b[0][0], 24);
  } else {
    wmma::load_matrix_sync(fa, &a[0][0], 24);
  }
  wmma::load_matrix_sync(fb, &b[0][0], 24);
  if (mode == 2 && threadIdx.x == 3) return;
  wmma::mma_sync(acc, fa, fb, acc);
  if (mode == 1) {
    const int lane = threadIdx.x;
    for (int i = 0; i < FragC::num_elements; ++i)
      out[(lane / 4 + 8 * (i / 2 % 2)) * 16 + 2 * (lane % 4) + i % 2 + 8 * (i / 4)] = acc.x[i];
    return;
  }
  wmma::store_matrix_sync(&c[0][0], acc, 20, wmma::mem_row_major);
  __syncthreads();
  for (int e = threadIdx.x; e < 256; e += blockDim.x) out[e] = c[e / 16][e % 16];
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

// out: 256 floats, A B in row-major order (mode 0); see wmma_product for the misuses
extern "C" int misuse_wmma(float* out, int mode) {
  wmma_product<<<1, 32, 0, nullptr>>>(out, mode);
  return cudaGetLastError();
}
