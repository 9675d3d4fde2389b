// Shared pieces of jointtask's CPU kernels: 16-float vectors (GCC vector extensions: one AVX-512
// register, or two AVX2 ones), a vectorised exp, and the ops that module.cpp exposes to Python.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <immintrin.h>
#include <optional>
#include <vector>

#include <torch/extension.h>

namespace jtk {

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t i16 __attribute__((vector_size(64)));
constexpr int64_t W = 16;

static inline v16 splat(float x) { return v16{} + x; }

// The first n <= 16 floats at p as a vector (zeros beyond n), and back: one vector move when
// n == 16, a masked one with AVX-512 (a memcpy of run-time length is a library call, measured
// as the bulk of short loops)
static inline v16 load_part(const float* p, int64_t n) {
  v16 v{};
  if (n == W) std::memcpy(&v, p, sizeof v);
#ifdef __AVX512F__
  else v = (v16)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#else
  else std::memcpy(&v, p, n * sizeof(float));
#endif
  return v;
}
static inline void store_part(float* p, v16 v, int64_t n) {
  if (n == W) std::memcpy(p, &v, sizeof v);
#ifdef __AVX512F__
  else _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#else
  else std::memcpy(p, &v, n * sizeof(float));
#endif
}

// horizontal sum and max by halving (4 shuffles, not 15 dependent scalar steps); every lane
// of the result holds the answer
static inline v16 all_lanes(v16 v, bool max) {
  const i16 swaps[4] = {{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7},
                        {4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11},
                        {2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13},
                        {1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14}};
  for (const i16& s : swaps) {
    const v16 o = __builtin_shuffle(v, s);
    v = max ? (v > o ? v : o) : v + o;
  }
  return v;
}
static inline float hsum(v16 v) { return all_lanes(v, false)[0]; }

// 16 x 16 transpose in registers: 4 rounds (b = 8, 4, 2, 1) of two-source shuffles, each swapping
// the off-diagonal b x b sub-blocks of every 2b x 2b block: 64 shuffles instead of 256 scalar
// loads and stores (3-4x faster standalone). The masks must be constants and the loops unrolled,
// or GCC keeps the block on the stack and the scalar loop wins.
template <int b>
static inline void swap_blocks(v16 (&m)[16]) {
  constexpr i16 lo = {(0 & b) ? W + 0 - b : 0,    (1 & b) ? W + 1 - b : 1,    (2 & b) ? W + 2 - b : 2,
                      (3 & b) ? W + 3 - b : 3,    (4 & b) ? W + 4 - b : 4,    (5 & b) ? W + 5 - b : 5,
                      (6 & b) ? W + 6 - b : 6,    (7 & b) ? W + 7 - b : 7,    (8 & b) ? W + 8 - b : 8,
                      (9 & b) ? W + 9 - b : 9,    (10 & b) ? W + 10 - b : 10, (11 & b) ? W + 11 - b : 11,
                      (12 & b) ? W + 12 - b : 12, (13 & b) ? W + 13 - b : 13, (14 & b) ? W + 14 - b : 14,
                      (15 & b) ? W + 15 - b : 15};  // row i: own columns without bit b, row i+b's with it
  constexpr i16 hi = lo + b;                       // row i+b: row i's columns with bit b, own without
#pragma GCC unroll 16
  for (int i = 0; i < W; ++i)
    if (!(i & b)) {
      const v16 r0 = m[i], r1 = m[i + b];
      m[i] = __builtin_shuffle(r0, r1, lo);
      m[i + b] = __builtin_shuffle(r0, r1, hi);
    }
}
static inline void transpose16(v16 (&m)[16]) {
  swap_blocks<8>(m);
  swap_blocks<4>(m);
  swap_blocks<2>(m);
  swap_blocks<1>(m);
}
static inline float hmax(v16 v) { return all_lanes(v, true)[0]; }

// exp on 16 lanes for x <= 88 (every caller passes x <= 0 up to rounding): 2^n * e^f with
// |f| <= ln2/2, degree-6 Taylor polynomial (relative error ~2e-7). n is rounded to nearest by
// adding 1.5 * 2^23, after which the float's low mantissa bits hold n itself: no conversions,
// no sign-dependent rounding, one clamp (12% faster GELU than the convert-and-clamp version).
static inline v16 vexp(v16 x) {
  x = x < splat(-87.f) ? splat(-87.f) : x;
  const v16 shifted = x * 1.44269504f + 12582912.f;
  const v16 n = shifted - 12582912.f;
  const v16 f = x - n * 0.693359375f + n * 2.12194440e-4f;
  v16 p = splat(1.0f / 720) * f + 1.0f / 120;
  p = p * f + 1.0f / 24; p = p * f + 1.0f / 6; p = p * f + 0.5f; p = p * f + 1.0f; p = p * f + 1.0f;
  i16 bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  bits = (bits << 23) + (127 << 23);
  v16 two_n;
  std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

// A row of C floats as ceil(C / 16) vectors; the last one zero-padded when 16 does not divide C.
struct Row {
  int64_t C, n;
  std::vector<v16> valid;  // 1 on real columns, 0 on padding
  explicit Row(int64_t C_) : C(C_), n((C_ + W - 1) / W), valid(n) {
    for (int64_t k = 0; k < n; ++k)
      for (int64_t w = 0; w < W; ++w) valid[k][w] = k * W + w < C ? 1.f : 0.f;
  }
  int64_t width(int64_t k) const { return std::min<int64_t>(W, C - k * W); }
  v16 load(const float* p, int64_t k) const { return load_part(p + k * W, width(k)); }
  void store(float* p, int64_t k, v16 v) const { store_part(p + k * W, v, width(k)); }
  std::vector<v16> vectors(const float* p) const {
    std::vector<v16> out(n);
    for (int64_t k = 0; k < n; ++k) out[k] = load(p, k);
    return out;
  }
  void add_to(float* p, const std::vector<v16>& acc) const {  // p[c] += acc[c]
    for (int64_t k = 0; k < n; ++k) store(p, k, load(p, k) + acc[k]);
  }
};

// Checks that a tensor is a contiguous float32 CPU tensor of the given shape (-1: any size).
void expect(const torch::Tensor& t, const char* what, std::vector<int64_t> shape);

// segment_attention.cpp
std::vector<torch::Tensor> attention_forward(torch::Tensor qkv, std::optional<torch::Tensor> bias, torch::Tensor start,
                                             int64_t heads);
torch::Tensor attention_backward(torch::Tensor dout, torch::Tensor qkv, std::optional<torch::Tensor> bias,
                                 torch::Tensor out, torch::Tensor lse, torch::Tensor start, int64_t heads,
                                 std::optional<torch::Tensor> dbias);

// layer_ops.cpp
std::vector<torch::Tensor> residual_layer_norm(torch::Tensor r, std::optional<torch::Tensor> z,
                                               std::optional<torch::Tensor> bias, torch::Tensor gamma,
                                               torch::Tensor beta, double eps);
void layer_norm_backward(torch::Tensor da, torch::Tensor r, torch::Tensor mean, torch::Tensor rstd,
                         torch::Tensor gamma, torch::Tensor dr, bool accumulate, torch::Tensor dgamma,
                         torch::Tensor dbeta, std::optional<torch::Tensor> dbias);
torch::Tensor bias_gelu(torch::Tensor z, torch::Tensor bias);
void bias_gelu_backward(torch::Tensor grad, torch::Tensor z, torch::Tensor bias, torch::Tensor dbias);

// optimizer.cpp
bool adamw_available();
void adamw_update(std::vector<torch::Tensor> params, std::vector<torch::Tensor> grads,
                  std::vector<torch::Tensor> exp_avgs, std::vector<torch::Tensor> exp_avg_sqs, double lr,
                  double weight_decay, double beta1, double beta2, double eps, double step_size, double bc2_sqrt);

}  // namespace jtk
