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
#include <cstdint>
#include <cstring>
#include <vector>

#include <torch/extension.h>

namespace segattn {

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t i16 __attribute__((vector_size(64)));
constexpr int64_t W = 16;

static inline v16 splat(float x) { return v16{} + x; }
static inline float hsum(v16 v) { float s = 0.f; for (int w = 0; w < W; ++w) s += v[w]; return s; }
static inline float hmax(v16 v) { float m = v[0]; for (int w = 1; w < W; ++w) m = std::max(m, v[w]); return m; }

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

struct Segment {  // per-segment work buffers, grown as needed
  int64_t L = 0, nc = 0, D = 0, Dv = 0;
  std::vector<v16> q, k, v, go, kt, vt, p, g;
  void fit(int64_t L_, int64_t D_) {
    L = L_; D = D_; Dv = (D + W - 1) / W; nc = (L + W - 1) / W;
    for (auto* b : {&q, &k, &v, &go}) if ((int64_t)b->size() < L * Dv) b->resize(L * Dv);
    for (auto* b : {&kt, &vt}) if ((int64_t)b->size() < D * nc) b->resize(D * nc);
    for (auto* b : {&p, &g}) if ((int64_t)b->size() < L * nc) b->resize(L * nc);
  }
  // rows [s0, s0+L) of the D columns from `col` of a row-major matrix with `stride` columns
  void load(std::vector<v16>& out, const float* X, int64_t stride, int64_t col, int64_t s0) const {
    for (int64_t j = 0; j < L; ++j) {
      float* dst = reinterpret_cast<float*>(out.data() + j * Dv);
      std::memcpy(dst, X + (s0 + j) * stride + col, D * sizeof(float));
      std::fill(dst + D, dst + Dv * W, 0.f);
    }
  }
  void transpose(const std::vector<v16>& rows, std::vector<v16>& out) const {
    float* o = reinterpret_cast<float*>(out.data());
    const float* r = reinterpret_cast<const float*>(rows.data());
    std::fill(o, o + D * nc * W, 0.f);
    for (int64_t j = 0; j < L; ++j)
      for (int64_t d = 0; d < D; ++d) o[d * nc * W + j] = r[j * Dv * W + d];
  }
  // head h of the segment starting at s0: q, k, v rows, and the keys transposed
  void load_qkv(const float* X, int64_t C, int64_t h, int64_t s0) {
    load(q, X, 3 * C, h * D, s0);
    load(k, X, 3 * C, C + h * D, s0);
    load(v, X, 3 * C, 2 * C + h * D, s0);
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
static void each_segment_head(const float* X, const int64_t* S, int64_t N, int64_t C, int64_t heads, Segment& b,
                              Body body) {
  for (int64_t s0 = 0; s0 < N;) {
    const int64_t e = segment_end(S, s0, N);
    b.fit(e - s0, C / heads);
    for (int64_t h = 0; h < heads; ++h) {
      b.load_qkv(X, C, h, s0);
      body(s0, h);
    }
    s0 = e;
  }
}

static inline i16 lanes() { i16 l; for (int w = 0; w < W; ++w) l[w] = w; return l; }

static void forward(const float* X, const int64_t* S, float* O, float* LSE, int64_t N, int64_t C, int64_t heads) {
  const int64_t D = C / heads;
  const float scale = 1.0f / std::sqrt((float)D);
  const i16 lane = lanes();
  Segment b;
  each_segment_head(X, S, N, C, heads, b, [&](int64_t s0, int64_t h) {
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
    for (int64_t i = 0; i < L; ++i) {  // outputs
      const float* p = reinterpret_cast<const float*>(&b.p[i * nc]);
      float* out = O + (s0 + i) * C + h * D;
      for (int64_t dv = 0; dv < Dv; ++dv) {
        v16 a0{}, a1{};
        int64_t j = 0;
        for (; j + 1 <= i; j += 2) { a0 += p[j] * b.v[j * Dv + dv]; a1 += p[j + 1] * b.v[(j + 1) * Dv + dv]; }
        if (j <= i) a0 += p[j] * b.v[j * Dv + dv];
        const v16 a = a0 + a1;
        std::memcpy(out + dv * W, &a, std::min<int64_t>(W, D - dv * W) * sizeof(float));
      }
    }
  });
}

static void backward(const float* X, const float* dO, const float* O, const float* LSE, const int64_t* S,
                     float* dX, int64_t N, int64_t C, int64_t heads) {
  const int64_t D = C / heads, C3 = 3 * C;
  const float scale = 1.0f / std::sqrt((float)D);
  const i16 lane = lanes();
  Segment b;
  each_segment_head(X, S, N, C, heads, b, [&](int64_t s0, int64_t h) {
    const int64_t L = b.L, nc = b.nc, Dv = b.Dv;
    b.load(b.go, dO, C, h * D, s0);
    b.transpose(b.v, b.vt);
    for (int64_t i = 0; i < L; ++i) {  // probabilities p and score gradients g, row by row
      const int64_t ci = i / W + 1, t = s0 + i;
      const float* q = reinterpret_cast<const float*>(&b.q[i * Dv]);
      const float* go = reinterpret_cast<const float*>(&b.go[i * Dv]);
      const float* o = O + t * C + h * D;
      float Di = 0.f;
      for (int64_t d = 0; d < D; ++d) Di += go[d] * o[d];
      const float lse = LSE[t * heads + h];
      for (int64_t c = 0; c < ci; ++c) {
        v16 p = vexp(Segment::dot_chunk(q, b.kt.data(), nc, c, D, scale) - lse);
        if (c == ci - 1) p = lane <= (int32_t)(i % W) ? p : v16{};
        b.p[i * nc + c] = p;
        b.g[i * nc + c] = p * (Segment::dot_chunk(go, b.vt.data(), nc, c, D, 1.f) - Di) * scale;
      }
    }
    for (int64_t i = 0; i < L; ++i) {  // dq_i = sum_j g_ij k_j
      const float* g = reinterpret_cast<const float*>(&b.g[i * nc]);
      float* dq = dX + (s0 + i) * C3 + h * D;
      for (int64_t dv = 0; dv < Dv; ++dv) {
        v16 a0{}, a1{};
        int64_t j = 0;
        for (; j + 1 <= i; j += 2) { a0 += g[j] * b.k[j * Dv + dv]; a1 += g[j + 1] * b.k[(j + 1) * Dv + dv]; }
        if (j <= i) a0 += g[j] * b.k[j * Dv + dv];
        const v16 a = a0 + a1;
        std::memcpy(dq + dv * W, &a, std::min<int64_t>(W, D - dv * W) * sizeof(float));
      }
    }
    for (int64_t j = 0; j < L; ++j) {  // dk_j = sum_i g_ij q_i, dv_j = sum_i p_ij do_i
      const float* P = reinterpret_cast<const float*>(b.p.data());
      const float* G = reinterpret_cast<const float*>(b.g.data());
      const int64_t row = nc * W;
      float* dk = dX + (s0 + j) * C3 + C + h * D;
      float* dvo = dX + (s0 + j) * C3 + 2 * C + h * D;
      for (int64_t dv = 0; dv < Dv; ++dv) {
        v16 ak{}, av{};
        for (int64_t i = j; i < L; ++i) {
          ak += G[i * row + j] * b.q[i * Dv + dv];
          av += P[i * row + j] * b.go[i * Dv + dv];
        }
        const int64_t n = std::min<int64_t>(W, D - dv * W) * sizeof(float);
        std::memcpy(dk + dv * W, &ak, n);
        std::memcpy(dvo + dv * W, &av, n);
      }
    }
  });
}

}  // namespace segattn

namespace {

void check(const torch::Tensor& qkv, const torch::Tensor& start, int64_t heads) {
  TORCH_CHECK(qkv.dim() == 2 && qkv.is_contiguous() && qkv.scalar_type() == torch::kFloat32 && qkv.device().is_cpu(),
              "segment attention: qkv must be a contiguous float32 CPU tensor [N, 3C]");
  TORCH_CHECK(start.dim() == 1 && start.size(0) == qkv.size(0) && start.scalar_type() == torch::kInt64 &&
              start.is_contiguous() && start.device().is_cpu(), "segment attention: start must be a contiguous int64 CPU tensor [N]");
  TORCH_CHECK(heads >= 1 && qkv.size(1) % (3 * heads) == 0, "segment attention: qkv width must be 3 * heads * head size");
  const int64_t* S = start.data_ptr<int64_t>();
  for (int64_t i = 0; i < start.size(0); ++i)  // segments are contiguous runs of tokens
    TORCH_CHECK(S[i] == i || (i > 0 && S[i] == S[i - 1]), "segment attention: start[", i, "] = ", S[i],
                " does not open a segment at ", i, " or continue the previous token's");
}

std::vector<torch::Tensor> forward_op(torch::Tensor qkv, torch::Tensor start, int64_t heads) {
  check(qkv, start, heads);
  const int64_t N = qkv.size(0), C = qkv.size(1) / 3;
  auto out = torch::empty({N, C}, qkv.options());
  auto lse = torch::empty({N, heads}, qkv.options());
  segattn::forward(qkv.data_ptr<float>(), start.data_ptr<int64_t>(), out.data_ptr<float>(), lse.data_ptr<float>(),
                   N, C, heads);
  return {out, lse};
}

torch::Tensor backward_op(torch::Tensor dout, torch::Tensor qkv, torch::Tensor out, torch::Tensor lse,
                          torch::Tensor start, int64_t heads) {
  check(qkv, start, heads);
  const int64_t N = qkv.size(0), C = qkv.size(1) / 3;
  dout = dout.contiguous();
  auto dqkv = torch::empty_like(qkv);  // every entry is written
  segattn::backward(qkv.data_ptr<float>(), dout.data_ptr<float>(), out.data_ptr<float>(), lse.data_ptr<float>(),
                    start.data_ptr<int64_t>(), dqkv.data_ptr<float>(), N, C, heads);
  return dqkv;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward_op, "segment attention: (qkv [N,3C], start [N], heads) -> (out [N,C], lse [N,heads])");
  m.def("backward", &backward_op, "segment attention: gradient of qkv");
}
