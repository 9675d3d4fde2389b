// LayerNorm with the residual add and the bias of the preceding projection folded in, and the
// MLP's bias + exact GELU, forward and backward, for the fused training trunk (fused_trunk.py).
// Each op reads and writes its tensors once: PyTorch spends a pass over memory on each of
// addmm's bias copy, the residual add, LayerNorm, GELU and every bias-gradient sum; at the
// sizes of this project (a few thousand tokens x 16-512 columns) those passes, not the
// arithmetic, are the cost. Rows are independent: one thread, rows in order.
#include <cmath>
#include <type_traits>

#include "kernels.h"

namespace jtk {

void expect(const torch::Tensor& t, const char* what, std::vector<int64_t> shape) {
  TORCH_CHECK(t.scalar_type() == torch::kFloat32 && t.device().is_cpu() && t.is_contiguous(), what,
              " must be a contiguous float32 CPU tensor");
  TORCH_CHECK(t.dim() == (int64_t)shape.size(), what, " must have ", shape.size(), " dimensions");
  for (size_t d = 0; d < shape.size(); ++d)
    TORCH_CHECK(shape[d] < 0 || t.size(d) == shape[d], what, " has size ", t.size(d), " in dimension ", d,
                ", expected ", shape[d]);
}

// A row's vectors: in registers when their count NV is fixed at compile time (C = 16 NV, the
// widths 16, 32, 64, 128 of a sweep; the loops over them unroll and the arrays become registers),
// else on the heap with the count known at run time (NV = 0).
template <int NV>
struct Vecs {
  v16 v[NV];
  explicit Vecs(int64_t) : v{} {}
  v16& operator[](int64_t k) { return v[k]; }
};
template <>
struct Vecs<0> {
  std::vector<v16> v;
  explicit Vecs(int64_t n) : v(n) {}
  v16& operator[](int64_t k) { return v[k]; }
};

// One row's load, store and padding mask; with NV > 0 every vector is whole (no padding).
template <int NV>
struct RowOf {
  const Row& row;
  int64_t n() const { return NV > 0 ? NV : row.n; }
  v16 load(const float* p, int64_t k) const { return NV > 0 ? load_part(p + k * W, W) : row.load(p, k); }
  void store(float* p, int64_t k, v16 v) const {
    if (NV > 0) store_part(p + k * W, v, W);
    else row.store(p, k, v);
  }
  v16 mask(v16 v, int64_t k) const { return NV > 0 ? v : v * row.valid[k]; }
};

// run(std::integral_constant<int, NV>): NV = C / 16 for the widths with a register path, else 0
template <class Run>
static void with_vector_count(int64_t C, Run run) {
  switch (C) {
    case 16: return run(std::integral_constant<int, 1>{});
    case 32: return run(std::integral_constant<int, 2>{});
    case 64: return run(std::integral_constant<int, 4>{});
    case 128: return run(std::integral_constant<int, 8>{});
    default: return run(std::integral_constant<int, 0>{});
  }
}

template <int NV>
static void layer_norm_rows(const Row& row_, const float* R, float* X, float* A, float* M, float* S, int64_t N,
                            const std::vector<v16>& G_, const std::vector<v16>& Be_, const std::vector<v16>& B_,
                            bool residual, float eps) {
  const RowOf<NV> row{row_};
  const int64_t n = row.n(), C = row_.C;
  Vecs<NV> G(n), Be(n), B(n), xs(n);
  for (int64_t k = 0; k < n; ++k) {
    G[k] = G_[k];
    Be[k] = Be_[k];
    B[k] = residual ? B_[k] : v16{};
  }
  for (int64_t i = 0; i < N; ++i) {
    v16 sum{};
#pragma GCC unroll 8
    for (int64_t k = 0; k < n; ++k) {
      xs[k] = row.load(X + i * C, k);
      if (residual) {
        xs[k] += row.load(R + i * C, k) + B[k];
        row.store(X + i * C, k, xs[k]);
      }
      sum += xs[k];
    }
    const float m = hsum(sum) / C;
    v16 var{};
#pragma GCC unroll 8
    for (int64_t k = 0; k < n; ++k) {
      xs[k] = row.mask(xs[k] - m, k);
      var += xs[k] * xs[k];
    }
    const float s = 1.f / std::sqrt(hsum(var) / C + eps);
#pragma GCC unroll 8
    for (int64_t k = 0; k < n; ++k) row.store(A + i * C, k, xs[k] * s * G[k] + Be[k]);
    M[i] = m;
    S[i] = s;
  }
}

std::vector<torch::Tensor> residual_layer_norm(torch::Tensor r, std::optional<torch::Tensor> z,
                                               std::optional<torch::Tensor> bias, torch::Tensor gamma,
                                               torch::Tensor beta, double eps) {
  // With z (and its bias): z <- r + z + bias, in place, becomes the new residual stream.
  // Returns {residual, LayerNorm(residual), mean, 1/std} (mean and 1/std per row, for backward).
  expect(r, "residual", {-1, -1});
  const int64_t N = r.size(0), C = r.size(1);
  expect(gamma, "gamma", {C});
  expect(beta, "beta", {C});
  torch::Tensor x = r;
  if (z) {
    expect(*z, "z", {N, C});
    TORCH_CHECK(bias.has_value(), "residual_layer_norm: z needs its bias");
    expect(*bias, "bias", {C});
    x = *z;
  }
  auto a = torch::empty_like(x);
  auto mean = torch::empty({N}, x.options()), rstd = torch::empty({N}, x.options());
  const Row row(C);
  const auto G = row.vectors(gamma.data_ptr<float>()), Be = row.vectors(beta.data_ptr<float>());
  const auto B = z ? row.vectors(bias->data_ptr<float>()) : std::vector<v16>(row.n);
  const auto run = [&](auto nv) {
    layer_norm_rows<decltype(nv)::value>(row, r.data_ptr<float>(), x.data_ptr<float>(), a.data_ptr<float>(),
                                        mean.data_ptr<float>(), rstd.data_ptr<float>(), N, G, Be, B, z.has_value(),
                                        (float)eps);
  };
  with_vector_count(C, run);
  return {x, a, mean, rstd};
}

template <int NV>
static void layer_norm_backward_rows(const Row& row_, const float* dA, const float* X, const float* M, const float* S,
                                     const std::vector<v16>& G_, float* dX, int64_t N, bool accumulate,
                                     std::vector<v16>& dG_, std::vector<v16>& dB_, std::vector<v16>& dBias_) {
  const RowOf<NV> row{row_};
  const int64_t n = row.n(), C = row_.C;
  Vecs<NV> G(n), dG(n), dB(n), dBias(n), xh(n), g(n);
  for (int64_t k = 0; k < n; ++k) G[k] = G_[k];
  for (int64_t i = 0; i < N; ++i) {
    const float m = M[i], s = S[i];
    v16 s1{}, s2{};
#pragma GCC unroll 8
    for (int64_t k = 0; k < n; ++k) {
      const v16 gi = row.load(dA + i * C, k);
      xh[k] = row.mask((row.load(X + i * C, k) - m) * s, k);
      g[k] = gi * G[k];
      s1 += g[k];
      s2 += g[k] * xh[k];
      dG[k] += gi * xh[k];
      dB[k] += gi;
    }
    const float m1 = hsum(s1) / C, m2 = hsum(s2) / C;
#pragma GCC unroll 8
    for (int64_t k = 0; k < n; ++k) {
      v16 d = (g[k] - m1 - xh[k] * m2) * s;
      if (accumulate) d += row.load(dX + i * C, k);
      row.store(dX + i * C, k, d);
      dBias[k] += d;
    }
  }
  for (int64_t k = 0; k < n; ++k) {
    dG_[k] = dG[k];
    dB_[k] = dB[k];
    dBias_[k] = dBias[k];
  }
}

void layer_norm_backward(torch::Tensor da, torch::Tensor r, torch::Tensor mean, torch::Tensor rstd,
                         torch::Tensor gamma, torch::Tensor dr, bool accumulate, torch::Tensor dgamma,
                         torch::Tensor dbeta, std::optional<torch::Tensor> dbias) {
  // dr (+)= the gradient through LayerNorm of `da`; dgamma, dbeta += their gradients; then
  // dbias += column sums of dr: the gradient of the bias added into this residual.
  expect(r, "residual", {-1, -1});
  const int64_t N = r.size(0), C = r.size(1);
  expect(da, "grad", {N, C});
  expect(dr, "residual grad", {N, C});
  expect(mean, "mean", {N});
  expect(rstd, "rstd", {N});
  for (auto* t : {&gamma, &dgamma, &dbeta}) expect(*t, "LayerNorm parameter", {C});
  if (dbias) expect(*dbias, "bias grad", {C});
  const Row row(C);
  const auto G = row.vectors(gamma.data_ptr<float>());
  std::vector<v16> dG(row.n), dB(row.n), dBias(row.n);
  const auto run = [&](auto nv) {
    layer_norm_backward_rows<decltype(nv)::value>(row, da.data_ptr<float>(), r.data_ptr<float>(),
                                                 mean.data_ptr<float>(), rstd.data_ptr<float>(), G,
                                                 dr.data_ptr<float>(), N, accumulate, dG, dB, dBias);
  };
  with_vector_count(C, run);
  row.add_to(dgamma.data_ptr<float>(), dG);
  row.add_to(dbeta.data_ptr<float>(), dB);
  if (dbias) row.add_to(dbias->data_ptr<float>(), dBias);
}

// Exact GELU, u * Phi(u), and its derivative Phi(u) + u * phi(u). Backward: erf by Abramowitz &
// Stegun 7.1.26 (absolute error <= 1.5e-7), whose exp(-u^2/2) is also phi's, so one exp serves
// both. Forward: erf as a rational function on [-4, 4] (odd degree-13 over even degree-8
// polynomial; the float32 coefficients of XLA's and Eigen's fast erf): no exp, 1.6x faster than
// A&S, within 1.5 ulp of GELU here (tests/test_fused_trunk.py checks both against float64).
static inline float exp_(float x) { return std::exp(x); }
static inline v16 exp_(v16 x) { return vexp(x); }

template <class T>
static inline T normal_cdf(T u, T& pdf) {
  const T t = u * 0.70710678f;
  const T at = t < 0 ? -t : t;
  const T k = 1.0f / (1.0f + 0.3275911f * at);
  const T e = exp_(-(at * at));
  const T tail = 0.5f * e * (((((1.061405429f * k - 1.453152027f) * k + 1.421413741f) * k - 0.284496736f) * k +
                              0.254829592f) * k);  // Phi(-|u|)
  pdf = e * 0.39894228f;
  return t < 0 ? tail : 1.0f - tail;
}

static inline float clamp4(float x) { return x < -4.f ? -4.f : (x > 4.f ? 4.f : x); }
static inline v16 clamp4(v16 x) {
  x = x < splat(-4.f) ? splat(-4.f) : x;
  return x > splat(4.f) ? splat(4.f) : x;
}

template <class T>
static inline T gelu(T u) {
  const T x = clamp4(u * 0.70710678f);  // erf is +-1 in float32 beyond 4
  const T x2 = x * x;
  T p = -2.72614225801306e-10f * x2 + 2.77068142495902e-08f;
  p = p * x2 - 2.10102402082508e-06f;
  p = p * x2 - 5.69250639462346e-05f;
  p = p * x2 - 7.34990630326855e-04f;
  p = p * x2 - 2.95459980854025e-03f;
  p = p * x2 - 1.60960333262415e-02f;
  T q = -1.45660718464996e-05f * x2 - 2.13374055278905e-04f;
  q = q * x2 - 1.68282697438203e-03f;
  q = q * x2 - 7.37332916720468e-03f;
  q = q * x2 - 1.42647390514189e-02f;
  return u * (0.5f + 0.5f * (x * p / q));
}

torch::Tensor bias_gelu(torch::Tensor z, torch::Tensor bias) {
  // gelu(z + bias), z [N, M], bias [M]
  expect(z, "z", {-1, -1});
  const int64_t N = z.size(0), M = z.size(1);
  expect(bias, "bias", {M});
  auto h = torch::empty_like(z);
  const float* Z = z.data_ptr<float>();
  const float* B = bias.data_ptr<float>();
  float* H = h.data_ptr<float>();
  if (M % W == 0) {
    std::vector<v16> Bv(M / W);  // the bias as aligned vectors
    std::memcpy(Bv.data(), B, M * sizeof(float));
    for (int64_t i = 0; i < N; ++i)
      for (int64_t k = 0; k < M / W; ++k) {
        v16 u;
        std::memcpy(&u, Z + i * M + k * W, sizeof u);
        u += Bv[k];
        const v16 y = gelu(u);
        std::memcpy(H + i * M + k * W, &y, sizeof y);
      }
  } else {
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < M; ++c) {
        H[i * M + c] = gelu(Z[i * M + c] + B[c]);
      }
  }
  return h;
}

void bias_gelu_backward(torch::Tensor grad, torch::Tensor z, torch::Tensor bias, torch::Tensor dbias) {
  // grad <- grad * gelu'(z + bias), in place; dbias += its column sums
  expect(z, "z", {-1, -1});
  const int64_t N = z.size(0), M = z.size(1);
  expect(grad, "grad", {N, M});
  expect(bias, "bias", {M});
  expect(dbias, "bias grad", {M});
  const float* Z = z.data_ptr<float>();
  const float* B = bias.data_ptr<float>();
  float* G = grad.data_ptr<float>();
  float* dB = dbias.data_ptr<float>();
  if (M % W == 0) {
    std::vector<v16> Bv(M / W), acc(M / W, v16{});
    std::memcpy(Bv.data(), B, M * sizeof(float));
    for (int64_t i = 0; i < N; ++i)
      for (int64_t k = 0; k < M / W; ++k) {
        v16 u, g, pdf;
        std::memcpy(&u, Z + i * M + k * W, sizeof u);
        std::memcpy(&g, G + i * M + k * W, sizeof g);
        u += Bv[k];
        g *= normal_cdf(u, pdf) + u * pdf;
        acc[k] += g;
        std::memcpy(G + i * M + k * W, &g, sizeof g);
      }
    for (int64_t k = 0; k < M / W; ++k)
      for (int64_t w = 0; w < W; ++w) dB[k * W + w] += acc[k][w];
  } else {
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < M; ++c) {
        float pdf;
        const float u = Z[i * M + c] + B[c];
        const float g = G[i * M + c] * (normal_cdf(u, pdf) + u * pdf);
        G[i * M + c] = g;
        dB[c] += g;
      }
  }
}

}  // namespace jtk
