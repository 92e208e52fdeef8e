// Row operations of the logit matrix (max, sum of exp, scaled exp in place), the hot loops of the CPU
// kernels. float rows use explicit 8-wide GCC vector code with a branch-free exp, compiled twice
// (x86-64-v3 = AVX2 + FMA, and baseline x86-64) and picked at load time; GCC does not auto-vectorise a
// clamped exp without -ffast-math, and ATen's vectorised exp is not reachable from an extension built
// for the baseline CPU. double rows (tests, gradcheck) use std::exp.
#pragma once
// the float8 helpers are always inlined into their callers, so the AVX ABI note does not apply
#pragma GCC diagnostic ignored "-Wpsabi"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

namespace rccl {
namespace cpu {

#if defined(__GNUC__) && defined(__x86_64__)
#define RCCL_ROW_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define RCCL_ROW_CLONES
#endif

typedef float float8 __attribute__((vector_size(32)));
typedef int32_t int8x __attribute__((vector_size(32)));
constexpr int64_t kLanes = 8;

// Cephes' expf on 8 lanes: e^x = 2^n e^r, n = round(x / ln 2), |r| <= ln2 / 2, degree-6 polynomial
// (~1 ulp). Arguments are clamped to [-87, 88]: e^-inf comes out as e^-87 ~ 1.6e-38, which callers that
// need an exact 0 (the anchor's own column) overwrite.
static inline __attribute__((always_inline)) float8 exp8(float8 x) {
  const float8 zero = {};
  x = x < zero - 87.0f ? zero - 87.0f : x;
  x = x > zero + 88.0f ? zero + 88.0f : x;
  const float8 y = x * 1.44269504088896341f + 0.5f;
  float8 n = __builtin_convertvector(__builtin_convertvector(y, int8x), float8);
  n = n > y ? n - 1.0f : n;  // floor
  const float8 r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float8 p = zero + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int8x bits = (__builtin_convertvector(n, int8x) + 127) << 23;
  return p * (float8)bits;  // a vector cast reinterprets the bits
}

static inline __attribute__((always_inline)) float8 load8(const float* x, int64_t count, float fill) {
  float8 v = {fill, fill, fill, fill, fill, fill, fill, fill};
  std::memcpy(&v, x, sizeof(float) * count);
  return v;
}

static inline float horizontal_sum(float8 v) {
  float s = 0;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

RCCL_ROW_CLONES inline float row_max(const float* x, int64_t n) {
  const float minus_inf = -std::numeric_limits<float>::infinity();
  float8 m = {minus_inf, minus_inf, minus_inf, minus_inf, minus_inf, minus_inf, minus_inf, minus_inf};
  for (int64_t j = 0; j < n; j += kLanes) {
    const float8 v = load8(x + j, std::min<int64_t>(kLanes, n - j), minus_inf);
    m = v > m ? v : m;
  }
  float out = minus_inf;
  for (int i = 0; i < kLanes; ++i) out = m[i] > out ? m[i] : out;
  return out;
}

// sum_j e^(x_j - shift)
RCCL_ROW_CLONES inline float row_sum_exp(const float* x, int64_t n, float shift) {
  float8 sum = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) sum += exp8(load8(x + j, kLanes, 0.0f) - shift);
  if (j < n) {
    const float8 tail = exp8(load8(x + j, n - j, 0.0f) - shift);
    for (int64_t i = 0; i < n - j; ++i) sum[i] += tail[i];
  }
  return horizontal_sum(sum);
}

// x_j <- scale e^(x_j - shift)
RCCL_ROW_CLONES inline void row_scaled_exp(float* x, int64_t n, float shift, float scale) {
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const float8 v = scale * exp8(load8(x + j, kLanes, 0.0f) - shift);
    std::memcpy(x + j, &v, sizeof(v));
  }
  if (j < n) {
    const float8 v = scale * exp8(load8(x + j, n - j, 0.0f) - shift);
    std::memcpy(x + j, &v, sizeof(float) * (n - j));
  }
}

inline double row_max(const double* x, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

inline double row_sum_exp(const double* x, int64_t n, double shift) {
  double s = 0;
  for (int64_t j = 0; j < n; ++j) s += std::exp(x[j] - shift);
  return s;
}

inline void row_scaled_exp(double* x, int64_t n, double shift, double scale) {
  for (int64_t j = 0; j < n; ++j) x[j] = scale * std::exp(x[j] - shift);
}

template <typename scalar_t>
inline void row_add(scalar_t* x, int64_t n, scalar_t a) {
  for (int64_t j = 0; j < n; ++j) x[j] += a;
}

}  // namespace cpu
}  // namespace rccl
