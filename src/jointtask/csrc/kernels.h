// Shared pieces of jointtask's CPU kernels: 16-float vectors (GCC vector extensions: one AVX-512
// register, or two AVX2 ones), a vectorised exp, and the ops that module.cpp exposes to Python.
#pragma once
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include <torch/extension.h>

namespace jtk {

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t i16 __attribute__((vector_size(64)));
constexpr int64_t W = 16;

static inline v16 splat(float x) { return v16{} + x; }

// The first n <= 16 floats at p as a vector (zeros beyond n), and back: one vector move when
// n == 16 (a memcpy of run-time length is a library call, measured as the bulk of short loops)
static inline v16 load_part(const float* p, int64_t n) {
  v16 v{};
  if (n == W) std::memcpy(&v, p, sizeof v);
  else std::memcpy(&v, p, n * sizeof(float));
  return v;
}
static inline void store_part(float* p, v16 v, int64_t n) {
  if (n == W) std::memcpy(p, &v, sizeof v);
  else std::memcpy(p, &v, n * sizeof(float));
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
static inline float hmax(v16 v) { return all_lanes(v, true)[0]; }

// exp on 16 lanes: 2^n * e^f with |f| <= ln2/2, degree-6 Taylor polynomial (relative error ~2e-7)
static inline v16 vexp(v16 x) {
  x = x < splat(-87.f) ? splat(-87.f) : x;
  x = x > splat(88.f) ? splat(88.f) : x;
  const i16 ni = __builtin_convertvector(x * 1.44269504f + (x < 0 ? -0.5f : 0.5f), i16);
  const v16 n = __builtin_convertvector(ni, v16);
  const v16 f = x - n * 0.693359375f + n * 2.12194440e-4f;
  v16 p = splat(1.0f / 720) * f + 1.0f / 120;
  p = p * f + 1.0f / 24; p = p * f + 1.0f / 6; p = p * f + 0.5f; p = p * f + 1.0f; p = p * f + 1.0f;
  const i16 bits = (ni + 127) << 23;
  v16 two_n; std::memcpy(&two_n, &bits, sizeof two_n);
  return p * two_n;
}

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

}  // namespace jtk
