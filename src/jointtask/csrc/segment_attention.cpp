// Causal attention inside segments of a flat token stream (whole examples packed back to back):
// token i attends to tokens start[i] .. i. qkv is [N, 3C] (q, k, v side by side), `heads` split
// C into heads of size D. Only pairs inside a segment (an example: a few dozen tokens) are
// computed, so there is no block-diagonal mask and no work on other examples' keys.
// Segment by segment, rows are copied into buffers of 16-float vectors (GCC vector extensions:
// one AVX-512 register, or two AVX2 ones) with the head size padded to a multiple of 16 and
// the keys transposed; scores are computed 16 keys at a time, the probability matrix is kept,
// and every sum accumulates in registers (no horizontal sums in inner loops, no read-modify-write
// of memory across loop iterations: both measured as the bottlenecks of simpler versions).
#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace jtk {

struct Segment {  // per-segment work buffers, grown as needed
  int64_t L = 0, nc = 0, D = 0, Dv = 0;
  std::vector<v16> q, k, v, go, kt, vt, p, g, qkv_bias;
  void fit(int64_t L_, int64_t D_) {
    L = L_; D = D_; Dv = (D + W - 1) / W; nc = (L + W - 1) / W;
    for (auto* b : {&q, &k, &v, &go}) if ((int64_t)b->size() < L * Dv) b->resize(L * Dv);
    for (auto* b : {&kt, &vt}) if ((int64_t)b->size() < D * nc) b->resize(D * nc);
    for (auto* b : {&p, &g}) if ((int64_t)b->size() < L * nc) b->resize(L * nc);
    if ((int64_t)qkv_bias.size() < 3 * Dv) qkv_bias.resize(3 * Dv);
  }
  // rows [s0, s0+L) of the D columns from `col` of a row-major matrix with `stride` columns
  // (zeros beyond D) into out
  void load(std::vector<v16>& out, const float* X, int64_t stride, int64_t col, int64_t s0) const {
    v16* o = out.data();
    for (int64_t j = 0; j < L; ++j)
      for (int64_t dv = 0; dv < Dv; ++dv) o[j * Dv + dv] = load_part(X + (s0 + j) * stride + col + dv * W, width(dv));
  }
  int64_t width(int64_t dv) const { return std::min<int64_t>(W, D - dv * W); }
  // out[d * nc + c] = lanes j of column d over rows 16 c + j (zeros beyond L), by 16 x 16 blocks
  void transpose(const std::vector<v16>& rows, std::vector<v16>& out) const {
    for (int64_t c = 0; c < nc; ++c)
      for (int64_t dv = 0; dv < Dv; ++dv) {
        v16 m[16];
#pragma GCC unroll 16
        for (int64_t j = 0; j < W; ++j) m[j] = c * W + j < L ? rows[(c * W + j) * Dv + dv] : v16{};
        transpose16(m);
        const int64_t n = std::min<int64_t>(W, D - dv * W);
#pragma GCC unroll 16
        for (int64_t t = 0; t < W; ++t)
          if (t < n) out[(dv * W + t) * nc + c] = m[t];
      }
  }
  // head h of the segment starting at s0: q, k, v rows, and the keys transposed
  void load_qkv(const float* X, const float* bias, int64_t C, int64_t h, int64_t s0) {
    // row by row, q, k and v of a row together: the segment's rows are one contiguous block of
    // memory, read once front to back (three strided passes were a quarter of the forward's time)
    v16* out[3] = {q.data(), k.data(), v.data()};
    for (int64_t part = 0; part < 3; ++part)  // the bias's vectors, or zeros
      for (int64_t dv = 0; dv < Dv; ++dv)
        qkv_bias[part * Dv + dv] = bias ? load_part(bias + part * C + h * D + dv * W, width(dv)) : v16{};
    const v16* b = qkv_bias.data();
    for (int64_t j = 0; j < L; ++j)
      for (int64_t part = 0; part < 3; ++part) {
        const float* x = X + (s0 + j) * 3 * C + part * C + h * D;
        for (int64_t dv = 0; dv < Dv; ++dv)
          out[part][j * Dv + dv] = load_part(x + dv * W, width(dv)) + b[part * Dv + dv];
      }
    transpose(k, kt);
  }
  // scores of query row a (scaled) against key chunk c of the transposed keys, 4 partial sums
  static inline v16 dot_chunk(const float* a, const v16* t, int64_t nc, int64_t c, int64_t D, float scale) {
    v16 s0{}, s1{}, s2{}, s3{};
    int64_t d = 0;
    for (; d + 4 <= D; d += 4) {
      s0 += a[d] * t[d * nc + c]; s1 += a[d + 1] * t[(d + 1) * nc + c];
      s2 += a[d + 2] * t[(d + 2) * nc + c]; s3 += a[d + 3] * t[(d + 3) * nc + c];
    }
    for (; d < D; ++d) s0 += a[d] * t[d * nc + c];
    return ((s0 + s1) + (s2 + s3)) * scale;
  }
};

static inline int64_t segment_end(const int64_t* S, int64_t s0, int64_t N) {
  int64_t e = s0 + 1;
  while (e < N && S[e] == s0) ++e;
  return e;
}

// Calls body(s0, h) for every segment (its first token s0) and head h, with b fitted to the
// segment and holding its q, k, v rows and transposed keys.
template <class Body>
static void each_segment_head(const float* X, const float* bias, const int64_t* S, int64_t N, int64_t C,
                              int64_t heads, Segment& b, Body body) {
  for (int64_t s0 = 0; s0 < N;) {
    const int64_t e = segment_end(S, s0, N);
    b.fit(e - s0, C / heads);
    for (int64_t h = 0; h < heads; ++h) {
      b.load_qkv(X, bias, C, h, s0);
      body(s0, h);
    }
    s0 = e;
  }
}

static inline i16 lanes() { i16 l; for (int w = 0; w < W; ++w) l[w] = w; return l; }

// out = sum_{j < n} w[j * ws] x_j, x_j the j-th row of Dv vectors: one output row of attention
// (weights along a row of p, ws = 1) or of its key/value gradients (down a column, ws = row).
// With Dv fixed at compile time all Dv sums stay in registers and run side by side (Dv chains
// of multiply-adds instead of one after another: at Dv = 4 the loop was latency-bound).
template <int DV>
static inline void weighted_sum(const float* w, int64_t ws, const v16* x, int64_t n, int64_t Dv, float* out,
                                int64_t D) {
  if constexpr (DV >= 2) {
    v16 a[DV] = {};
    for (int64_t j = 0; j < n; ++j)
      for (int dv = 0; dv < DV; ++dv) a[dv] += w[j * ws] * x[j * DV + dv];
    for (int dv = 0; dv < DV; ++dv) store_part(out + dv * W, a[dv], std::min<int64_t>(W, D - dv * W));
  } else {  // one vector (DV = 1), or a run-time count: two sums per vector, alternating rows
    for (int64_t dv = 0; dv < Dv; ++dv) {
      v16 a0{}, a1{};
      int64_t j = 0;
      for (; j + 1 < n; j += 2) { a0 += w[j * ws] * x[j * Dv + dv]; a1 += w[(j + 1) * ws] * x[(j + 1) * Dv + dv]; }
      if (j < n) a0 += w[j * ws] * x[j * Dv + dv];
      store_part(out + dv * W, a0 + a1, std::min<int64_t>(W, D - dv * W));
    }
  }
}

static void weighted_sum(const float* w, int64_t ws, const v16* x, int64_t n, int64_t Dv, float* out, int64_t D) {
  switch (Dv) {
    case 2: return weighted_sum<2>(w, ws, x, n, Dv, out, D);
    case 4: return weighted_sum<4>(w, ws, x, n, Dv, out, D);
    case 8: return weighted_sum<8>(w, ws, x, n, Dv, out, D);
    default: return weighted_sum<0>(w, ws, x, n, Dv, out, D);
  }
}

static void forward(const float* X, const float* bias, const int64_t* S, float* O, float* LSE, int64_t N, int64_t C,
                    int64_t heads) {
  const int64_t D = C / heads;
  const float scale = 1.0f / std::sqrt((float)D);
  const i16 lane = lanes();
  Segment b;
  each_segment_head(X, bias, S, N, C, heads, b, [&](int64_t s0, int64_t h) {
    const int64_t L = b.L, nc = b.nc, Dv = b.Dv;
    for (int64_t i = 0; i < L; ++i) {  // probabilities, row by row
      const int64_t ci = i / W + 1;
      const float* q = reinterpret_cast<const float*>(&b.q[i * Dv]);
      v16* p = &b.p[i * nc];
      for (int64_t c = 0; c < ci; ++c) p[c] = Segment::dot_chunk(q, b.kt.data(), nc, c, D, scale);
      p[ci - 1] = lane <= (int32_t)(i % W) ? p[ci - 1] : splat(-INFINITY);
      float m = -INFINITY;
      for (int64_t c = 0; c < ci; ++c) m = std::max(m, hmax(p[c]));
      v16 l{};
      for (int64_t c = 0; c < ci; ++c) p[c] = vexp(p[c] - m);
      p[ci - 1] = lane <= (int32_t)(i % W) ? p[ci - 1] : v16{};  // vexp clamps -inf to e^-87, not 0
      for (int64_t c = 0; c < ci; ++c) l += p[c];
      const float sum = hsum(l);
      const float inv = 1.f / sum;
      for (int64_t c = 0; c < ci; ++c) p[c] *= inv;
      LSE[(s0 + i) * heads + h] = m + std::log(sum);
    }
    const float* P = reinterpret_cast<const float*>(b.p.data());
    for (int64_t i = 0; i < L; ++i)  // out_i = sum_j p_ij v_j
      weighted_sum(P + i * nc * W, 1, b.v.data(), i + 1, Dv, O + (s0 + i) * C + h * D, D);
  });
}

static void backward(const float* X, const float* bias, const float* dO, const float* O, const float* LSE,
                     const int64_t* S, float* dX, int64_t N, int64_t C, int64_t heads, float* dB) {
  const int64_t D = C / heads, C3 = 3 * C;
  const Row row3(C3);
  std::vector<v16> dB_acc(row3.n);  // column sums of dX, taken segment by segment while in cache
  const float scale = 1.0f / std::sqrt((float)D);
  const i16 lane = lanes();
  Segment b;
  each_segment_head(X, bias, S, N, C, heads, b, [&](int64_t s0, int64_t h) {
    const int64_t L = b.L, nc = b.nc, Dv = b.Dv;
    b.load(b.go, dO, C, h * D, s0);
    b.transpose(b.v, b.vt);
    for (int64_t i = 0; i < L; ++i) {  // probabilities p and score gradients g, row by row
      const int64_t ci = i / W + 1, t = s0 + i;
      const float* q = reinterpret_cast<const float*>(&b.q[i * Dv]);
      const float* go = reinterpret_cast<const float*>(&b.go[i * Dv]);
      v16 dot{};
      for (int64_t dv = 0; dv < Dv; ++dv) dot += b.go[i * Dv + dv] * load_part(O + t * C + h * D + dv * W, b.width(dv));
      const float Di = hsum(dot);
      const float lse = LSE[t * heads + h];
      for (int64_t c = 0; c < ci; ++c) {
        v16 p = vexp(Segment::dot_chunk(q, b.kt.data(), nc, c, D, scale) - lse);
        if (c == ci - 1) p = lane <= (int32_t)(i % W) ? p : v16{};
        b.p[i * nc + c] = p;
        b.g[i * nc + c] = p * (Segment::dot_chunk(go, b.vt.data(), nc, c, D, 1.f) - Di) * scale;
      }
    }
    const float* P = reinterpret_cast<const float*>(b.p.data());
    const float* G = reinterpret_cast<const float*>(b.g.data());
    const int64_t row = nc * W;
    for (int64_t i = 0; i < L; ++i)  // dq_i = sum_j g_ij k_j
      weighted_sum(G + i * row, 1, b.k.data(), i + 1, Dv, dX + (s0 + i) * C3 + h * D, D);
    for (int64_t j = 0; j < L; ++j) {  // dk_j = sum_i g_ij q_i, dv_j = sum_i p_ij do_i
      weighted_sum(G + j * row + j, row, b.q.data() + j * Dv, L - j, Dv, dX + (s0 + j) * C3 + C + h * D, D);
      weighted_sum(P + j * row + j, row, b.go.data() + j * Dv, L - j, Dv, dX + (s0 + j) * C3 + 2 * C + h * D, D);
    }
    if (dB && h == heads - 1)  // the segment's rows of dX are complete
      for (int64_t i = s0; i < s0 + L; ++i)
        for (int64_t k = 0; k < row3.n; ++k) dB_acc[k] += row3.load(dX + i * C3, k);
  });
  if (dB) row3.add_to(dB, dB_acc);
}

void check(const torch::Tensor& qkv, const std::optional<torch::Tensor>& bias, const torch::Tensor& start,
           int64_t heads) {
  expect(qkv, "segment attention: qkv", {-1, -1});
  TORCH_CHECK(heads >= 1 && qkv.size(1) % (3 * heads) == 0, "segment attention: qkv width must be 3 * heads * head size");
  if (bias) expect(*bias, "segment attention: bias", {qkv.size(1)});
  TORCH_CHECK(start.dim() == 1 && start.size(0) == qkv.size(0) && start.scalar_type() == torch::kInt64 &&
              start.is_contiguous() && start.device().is_cpu(), "segment attention: start must be a contiguous int64 CPU tensor [N]");
  const int64_t* S = start.data_ptr<int64_t>();
  for (int64_t i = 0; i < start.size(0); ++i)  // segments are contiguous runs of tokens
    TORCH_CHECK(S[i] == i || (i > 0 && S[i] == S[i - 1]), "segment attention: start[", i, "] = ", S[i],
                " does not open a segment at ", i, " or continue the previous token's");
}

std::vector<torch::Tensor> attention_forward(torch::Tensor qkv, std::optional<torch::Tensor> bias, torch::Tensor start,
                                             int64_t heads) {
  // attention of qkv (+ bias) [N, 3C] inside segments -> out [N, C], log-sum-exp of scores [N, heads]
  check(qkv, bias, start, heads);
  const int64_t N = qkv.size(0), C = qkv.size(1) / 3;
  auto out = torch::empty({N, C}, qkv.options());
  auto lse = torch::empty({N, heads}, qkv.options());
  forward(qkv.data_ptr<float>(), bias ? bias->data_ptr<float>() : nullptr, start.data_ptr<int64_t>(),
          out.data_ptr<float>(), lse.data_ptr<float>(), N, C, heads);
  return {out, lse};
}

torch::Tensor attention_backward(torch::Tensor dout, torch::Tensor qkv, std::optional<torch::Tensor> bias,
                                 torch::Tensor out, torch::Tensor lse, torch::Tensor start, int64_t heads,
                                 std::optional<torch::Tensor> dbias) {
  // gradient of qkv [N, 3C]; dbias (+)= its column sums
  check(qkv, bias, start, heads);
  const int64_t N = qkv.size(0), C = qkv.size(1) / 3;
  dout = dout.contiguous();
  expect(dout, "segment attention: grad", {N, C});
  if (dbias) expect(*dbias, "segment attention: bias grad", {3 * C});
  auto dqkv = torch::empty_like(qkv);  // every entry is written
  backward(qkv.data_ptr<float>(), bias ? bias->data_ptr<float>() : nullptr, dout.data_ptr<float>(),
           out.data_ptr<float>(), lse.data_ptr<float>(), start.data_ptr<int64_t>(), dqkv.data_ptr<float>(), N, C,
           heads, dbias ? dbias->data_ptr<float>() : nullptr);
  return dqkv;
}

}  // namespace jtk
