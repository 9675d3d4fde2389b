// Causal attention inside segments of a flat token stream (whole examples packed back to back):
// token i attends to tokens start[i] .. i. qkv is [N, 3C] (q, k, v side by side), `heads` split
// C into heads of size D. Only pairs inside a segment (an example: a few dozen tokens) are
// computed, so there is no block-diagonal mask and no work on other examples' keys.
//
// The stream is cut into blocks of 16 consecutive tokens, whatever their segments (a short
// example shares a block with its neighbours instead of padding one of its own). A block's
// queries are transposed into 16-float vectors (GCC vector extensions: one AVX-512 register, or
// two AVX2 ones) with one lane per query, and every key from the first row's segment start to
// the block's last row is scored against all 16 lanes at once, eight keys at a time (eight
// independent multiply-add chains keep both FMA units busy); keys outside a lane's own segment
// or after it are masked. The softmax is then elementwise across keys: no horizontal sums, no
// dependent exp per row (computed row by row, the softmax was 40% of the forward's time).
// Weighted sums over rows or keys accumulate in registers.
#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace jtk {

static inline i16 lanes() { i16 l; for (int w = 0; w < W; ++w) l[w] = w; return l; }

// natural log on 16 lanes of positive normal floats: x = 2^e m with m in [sqrt(1/2), sqrt(2)),
// log m = 2 atanh(t), t = (m - 1) / (m + 1), |t| < 0.172, by its series to t^9 (error ~1e-9)
static inline v16 vlog(v16 x) {
  i16 bits;
  std::memcpy(&bits, &x, sizeof bits);
  const i16 e = (bits - 0x3f3504f3) >> 23;
  bits -= e << 23;
  v16 m, ef;
  std::memcpy(&m, &bits, sizeof m);
  for (int w = 0; w < W; ++w) ef[w] = (float)e[w];
  const v16 t = (m - 1.f) / (m + 1.f), t2 = t * t;
  v16 s = splat(1.f / 9) * t2 + 1.f / 7;
  s = s * t2 + 1.f / 5; s = s * t2 + 1.f / 3; s = s * t2 + 1.f;
  return ef * 0.693359375f - ef * 2.12194440e-4f + 2.f * t * s;
}

// acc[0 .. Dv) = sum_{j < n} w[j] x_j, x_j the D floats at x + j * xs. With Dv fixed at compile
// time all sums stay in registers and run side by side (Dv chains of multiply-adds instead of
// one after another: at Dv = 4 the loop was latency-bound).
template <int DV>
static inline void weighted_sum(const float* w, const float* x, int64_t xs, int64_t n, int64_t D, int64_t Dv,
                                v16* acc) {
  if constexpr (DV >= 2) {
    v16 a[DV] = {};
    for (int64_t j = 0; j < n; ++j)
#pragma GCC unroll 8
      for (int dv = 0; dv < DV; ++dv) a[dv] += w[j] * load_part(x + j * xs + dv * W, std::min<int64_t>(W, D - dv * W));
    for (int dv = 0; dv < DV; ++dv) acc[dv] = a[dv];
  } else {  // one vector (DV = 1), or a run-time count: two sums per vector, alternating rows
    for (int64_t dv = 0; dv < Dv; ++dv) {
      const int64_t m = std::min<int64_t>(W, D - dv * W);
      v16 a0{}, a1{};
      int64_t j = 0;
      for (; j + 1 < n; j += 2) {
        a0 += w[j] * load_part(x + j * xs + dv * W, m);
        a1 += w[j + 1] * load_part(x + (j + 1) * xs + dv * W, m);
      }
      if (j < n) a0 += w[j] * load_part(x + j * xs + dv * W, m);
      acc[dv] = a0 + a1;
    }
  }
}

static void weighted_sum(const float* w, const float* x, int64_t xs, int64_t n, int64_t D, int64_t Dv, v16* acc) {
  switch (Dv) {
    case 2: return weighted_sum<2>(w, x, xs, n, D, Dv, acc);
    case 4: return weighted_sum<4>(w, x, xs, n, D, Dv, acc);
    case 8: return weighted_sum<8>(w, x, xs, n, D, Dv, acc);
    default: return weighted_sum<0>(w, x, xs, n, D, Dv, acc);
  }
}

// The same for K weight vectors at once over shared rows: acc[k * DV + dv] = sum_{j < n}
// w_k[j] x_j. Each row is loaded once for all K; K * DV = 16 independent chains (one weight
// vector at a time, n = 16 rows deep, the key gradients were latency-bound).
template <int DV, int K>
static inline void weighted_sums(const float* const* w, const float* x, int64_t xs, int64_t n, v16* acc) {
  const float* wk[K];
  for (int k = 0; k < K; ++k) wk[k] = w[k];
  v16 a[K * DV] = {};
  for (int64_t j = 0; j < n; ++j) {
    v16 xj[DV];
#pragma GCC unroll 8
    for (int dv = 0; dv < DV; ++dv) std::memcpy(&xj[dv], x + j * xs + dv * W, sizeof(v16));
#pragma GCC unroll 16
    for (int k = 0; k < K; ++k)
#pragma GCC unroll 8
      for (int dv = 0; dv < DV; ++dv) a[k * DV + dv] += wk[k][j] * xj[dv];
  }
#pragma GCC unroll 16
  for (int i = 0; i < K * DV; ++i) acc[i] = a[i];
}

// k < K weight vectors (K = 16 / Dv when D = 16 Dv for Dv in 1, 2, 4, 8; else 1): returns how many it summed
static int64_t weighted_sums(const float* const* w, int64_t k, const float* x, int64_t xs, int64_t n, int64_t D,
                             int64_t Dv, v16* acc) {
  if (D == Dv * W) switch (Dv) {  // whole vectors
    case 1: if (k >= 16) { weighted_sums<1, 16>(w, x, xs, n, acc); return 16; } break;
    case 2: if (k >= 8) { weighted_sums<2, 8>(w, x, xs, n, acc); return 8; } break;
    case 4: if (k >= 4) { weighted_sums<4, 4>(w, x, xs, n, acc); return 4; } break;
    case 8: if (k >= 2) { weighted_sums<8, 2>(w, x, xs, n, acc); return 2; } break;
  }
  weighted_sum(w[0], x, xs, n, D, Dv, acc);
  return 1;
}

// One block of 16 tokens (rows b0 .. b0 + nr - 1) of one head, and the keys its queries need:
// ks .. ke - 1, ks the start of the first row's segment, ke = b0 + nr.
struct Block {
  int64_t N, C, D, Dv, heads, h, nk = 0, nkc = 0, b0 = 0, nr = 0, ks = 0;
  std::vector<v16> rows, tr, key_major, row_major, zero;
  i16 lane_start, lane_row;  // per lane: the keys it may see, start .. row
  const int64_t* starts = nullptr;
  Block(int64_t N_, int64_t C_, int64_t heads_, int64_t h_)
      : N(N_), C(C_), D(C_ / heads_), Dv((C_ / heads_ + W - 1) / W), heads(heads_), h(h_),
        rows(W * Dv), tr(W * Dv), zero(Dv) {}
  int64_t width(int64_t dv) const { return std::min<int64_t>(W, D - dv * W); }
  void fit(const int64_t* S, int64_t b0_) {
    starts = S; b0 = b0_; nr = std::min<int64_t>(W, N - b0); ks = S[b0];
    nk = b0 + nr - ks; nkc = (nk + W - 1) / W;
    if ((int64_t)key_major.size() < nkc * W) key_major.resize(nkc * W);
    if ((int64_t)row_major.size() < W * nkc) row_major.resize(W * nkc);
    for (int64_t l = 0; l < W; ++l) {  // lanes past the end see key ks alone (finite, unused)
      lane_start[l] = l < nr ? S[b0 + l] : ks;
      lane_row[l] = l < nr ? b0 + l : ks;
    }
  }
  // visibility of key ks + j to each lane
  i16 visible(int64_t j) const { const int32_t k = ks + j; return (lane_start <= k) & (lane_row >= k); }
  // rows[l] = the block's rows of the D columns from `col` of X (row stride xs), plus bias;
  // zero rows past the end; tr[d] = column d, one lane per row
  void load_rows(const float* X, int64_t xs, int64_t col, const float* bias) {
    for (int64_t l = 0; l < W; ++l)
      for (int64_t dv = 0; dv < Dv; ++dv)
        rows[l * Dv + dv] = l < nr ? load_part(X + (b0 + l) * xs + col + dv * W, width(dv)) +
                                         (bias ? load_part(bias + dv * W, width(dv)) : v16{})
                                   : v16{};
    for (int64_t dv = 0; dv < Dv; ++dv) {
      v16 m[16];
#pragma GCC unroll 16
      for (int64_t t = 0; t < W; ++t) m[t] = rows[t * Dv + dv];
      transpose16(m);
#pragma GCC unroll 16
      for (int64_t t = 0; t < W; ++t) tr[dv * W + t] = m[t];
    }
  }
  // out[j] = scale * (sum_d key_j[d] t[d] + sum_d bias[d] t[d]) for keys j < nk (rounded up to
  // 8; zero keys beyond nk), key_j = the D columns from `col` of X's row ks + j
  void key_scores(const float* X, int64_t xs, int64_t col, const float* bias, float scale,
                  std::vector<v16>& out) const {
    const float* zrow = reinterpret_cast<const float*>(zero.data());
    v16 c[4] = {};  // the bias's share, the same for every key: four chains, not one of D
    if (bias)
      for (int64_t d = 0; d < D; ++d) c[d % 4] += bias[d] * tr[d];
    const v16 cb = (c[0] + c[1]) + (c[2] + c[3]);
    for (int64_t j0 = 0; j0 < nk; j0 += 8) {
      const float* x[8];
      for (int u = 0; u < 8; ++u) x[u] = j0 + u < nk ? X + (ks + j0 + u) * xs + col : zrow;
      v16 s[8] = {};
      for (int64_t d = 0; d < D; ++d) {
        const v16 td = tr[d];
#pragma GCC unroll 8
        for (int u = 0; u < 8; ++u) s[u] += x[u][d] * td;
      }
#pragma GCC unroll 8
      for (int u = 0; u < 8; ++u) out[j0 + u] = (s[u] + cb) * scale;
    }
  }
  // key-major vectors (key j: one lane per row) to row-major ones (row l: nkc vectors, one lane
  // per key), by 16 x 16 transposes
  void to_rows(const std::vector<v16>& kj) {
    for (int64_t c = 0; c < nkc; ++c) {
      v16 m[16];
#pragma GCC unroll 16
      for (int64_t t = 0; t < W; ++t) m[t] = c * W + t < nk ? kj[c * W + t] : v16{};
      transpose16(m);
#pragma GCC unroll 16
      for (int64_t l = 0; l < W; ++l) row_major[l * nkc + c] = m[l];
    }
  }
  const float* row_weights(int64_t l) const { return reinterpret_cast<const float*>(row_major.data() + l * nkc); }
  // out(i, sum_j w_ij x_j) for the block's rows i, w = row_major, x_j the D columns from `col`
  // of X's row j (row stride xs), j from the row's segment start to i; rows in groups that
  // share the keys from the first one's start (weights are zero on keys a row does not see)
  template <class Out>
  void each_row_group(const float* X, int64_t xs, int64_t col, std::vector<v16>& acc, Out out) const {
    const int64_t* S = starts;
    const float* w[16];
    for (int64_t r = 0; r < nr;) {
      const int64_t k = std::min<int64_t>(16, nr - r), first = S[b0 + r] - ks;
      for (int64_t u = 0; u < k; ++u) w[u] = row_weights(r + u) + first;
      const int64_t done = weighted_sums(w, k, X + (ks + first) * xs + col, xs, b0 + r + k - ks - first, D, Dv, acc.data());
      // the group's last row sees keys up to itself; rows before it have zero weights beyond theirs
      for (int64_t u = 0; u < done; ++u) out(b0 + r + u, &acc[u * Dv]);
      r += done;
    }
  }
};

static void forward(const float* X, const float* bias, const int64_t* S, float* O, float* LSE, int64_t N, int64_t C,
                    int64_t heads) {
  const int64_t C3 = 3 * C;
  for (int64_t h = 0; h < heads; ++h) {
    Block b(N, C, heads, h);
    const int64_t D = b.D, Dv = b.Dv, qc = h * D, kc = C + h * D, vc = 2 * C + h * D;
    const float scale = 1.0f / std::sqrt((float)D);
    std::vector<v16> acc(std::max<int64_t>(16, Dv)), bv(Dv);
    for (int64_t dv = 0; dv < Dv; ++dv) bv[dv] = bias ? load_part(bias + vc + dv * W, b.width(dv)) : v16{};
    for (int64_t b0 = 0; b0 < N; b0 += W) {
      b.fit(S, b0);
      b.load_rows(X, C3, qc, bias ? bias + qc : nullptr);
      b.key_scores(X, C3, kc, bias ? bias + kc : nullptr, scale, b.key_major);
      v16 m = splat(-INFINITY), l{};
      for (int64_t j = 0; j < b.nk; ++j) {
        v16& s = b.key_major[j];
        s = b.visible(j) ? s : splat(-INFINITY);
        m = m > s ? m : s;
      }
      for (int64_t j = 0; j < b.nk; ++j) {
        v16& s = b.key_major[j];
        s = b.visible(j) ? vexp(s - m) : v16{};  // vexp clamps -inf to e^-87, not 0
        l += s;
      }
      const v16 inv = 1.f / l;
      for (int64_t j = 0; j < b.nk; ++j) b.key_major[j] *= inv;
      const v16 lse = m + vlog(l);
      b.to_rows(b.key_major);
      for (int64_t r = 0; r < b.nr; ++r) LSE[(b0 + r) * heads + h] = lse[r];
      b.each_row_group(X, C3, vc, acc, [&](int64_t i, const v16* a) {  // out_i = sum_j p_ij v_j + bias (the p_ij sum to 1)
        for (int64_t dv = 0; dv < Dv; ++dv) store_part(O + i * C + qc + dv * W, a[dv] + bv[dv], b.width(dv));
      });
    }
  }
}

static void backward(const float* X, const float* bias, const float* dO, const float* O, const float* LSE,
                     const int64_t* S, float* dX, int64_t N, int64_t C, int64_t heads, float* dB) {
  const int64_t C3 = 3 * C;
  std::vector<float> dB_acc(C3, 0.f);  // column sums of dX, from the vectors as they are written
  for (int64_t h = 0; h < heads; ++h) {
    Block q(N, C, heads, h), go(N, C, heads, h);  // the block's queries (q, with bias) and output gradients
    const int64_t D = q.D, Dv = q.Dv, qc = h * D, kc = C + h * D, vc = 2 * C + h * D;
    const float scale = 1.0f / std::sqrt((float)D);
    std::vector<v16> acc(std::max<int64_t>(16, Dv)), bk(Dv), dbq(Dv), dbk(Dv), dbv(Dv);
    for (int64_t dv = 0; dv < Dv; ++dv) bk[dv] = bias ? load_part(bias + kc + dv * W, q.width(dv)) : v16{};
    // writes a row of a gradient: the first contribution to it (=) or a later one (+=)
    auto put = [&](float* p, bool first, const v16* a) {
      for (int64_t dv = 0; dv < Dv; ++dv) {
        const int64_t n = q.width(dv);
        store_part(p + dv * W, first ? a[dv] : load_part(p + dv * W, n) + a[dv], n);
      }
    };
    for (int64_t b0 = 0; b0 < N; b0 += W) {
      q.fit(S, b0);
      go.fit(S, b0);
      q.load_rows(X, C3, qc, bias ? bias + qc : nullptr);
      go.load_rows(dO, C, qc, nullptr);
      float lse_a[W] = {}, Di_a[W] = {};  // per row: log-sum-exp, and D_i = do_i . o_i
      for (int64_t r = 0; r < q.nr; ++r) {
        v16 dot{};
        for (int64_t dv = 0; dv < Dv; ++dv) dot += go.rows[r * Dv + dv] * load_part(O + (b0 + r) * C + qc + dv * W, q.width(dv));
        lse_a[r] = LSE[(b0 + r) * heads + h];
        Di_a[r] = hsum(dot);
      }
      v16 lse, Di;
      std::memcpy(&lse, lse_a, sizeof lse);
      std::memcpy(&Di, Di_a, sizeof Di);
      q.key_scores(X, C3, kc, bias ? bias + kc : nullptr, scale, q.key_major);    // scores
      go.key_scores(X, C3, vc, bias ? bias + vc : nullptr, 1.f, go.key_major);  // do_i . v_j
      v16 gsum{}, psum{};
      for (int64_t j = 0; j < q.nk; ++j) {  // q.key_major becomes p, go.key_major the score gradients g
        v16& p = q.key_major[j];
        v16& g = go.key_major[j];
        p = q.visible(j) ? vexp(p - lse) : v16{};
        g = p * (g - Di) * scale;
        gsum += g;
        psum += p;
      }
      // bias gradients of k and v: the column sums of this block's contributions to dk and dv,
      // sum_j sum_i g_ij q_i = sum_i (sum_j g_ij) q_i, and likewise with p and do
      {
        const float* w[1] = {reinterpret_cast<const float*>(&gsum)};
        weighted_sums(w, 1, reinterpret_cast<const float*>(q.rows.data()), Dv * W, q.nr, D, Dv, acc.data());
        for (int64_t dv = 0; dv < Dv; ++dv) dbk[dv] += acc[dv];
        w[0] = reinterpret_cast<const float*>(&psum);
        weighted_sums(w, 1, reinterpret_cast<const float*>(go.rows.data()), Dv * W, q.nr, D, Dv, acc.data());
        for (int64_t dv = 0; dv < Dv; ++dv) dbv[dv] += acc[dv];
      }
      go.to_rows(go.key_major);
      go.each_row_group(X, C3, kc, acc, [&](int64_t i, v16* a) {  // dq_i = sum_j g_ij (k_j + bias)
        for (int64_t dv = 0; dv < Dv; ++dv) a[dv] += gsum[i - b0] * bk[dv];
        put(dX + i * C3 + qc, true, a);
        for (int64_t dv = 0; dv < Dv; ++dv) dbq[dv] += a[dv];
      });
      // dk_j = sum_i g_ij (q_i + bias), dv_j = sum_i p_ij do_i over this block's rows (g and p are
      // zero on rows before key j); a key before the block already holds earlier blocks' sums
      const float* qrows = reinterpret_cast<const float*>(q.rows.data());
      const float* gorows = reinterpret_cast<const float*>(go.rows.data());
      const float* gw[16];
      const float* pw[16];
      for (int64_t j = 0; j < q.nk;) {
        const int64_t r0 = std::max<int64_t>(0, q.ks + j - b0), k = std::min<int64_t>(16, q.nk - j);
        for (int64_t u = 0; u < k; ++u) {
          gw[u] = reinterpret_cast<const float*>(&go.key_major[j + u]) + r0;
          pw[u] = reinterpret_cast<const float*>(&q.key_major[j + u]) + r0;
        }
        const int64_t done = weighted_sums(gw, k, qrows + r0 * Dv * W, Dv * W, q.nr - r0, D, Dv, acc.data());
        for (int64_t u = 0; u < done; ++u) put(dX + (q.ks + j + u) * C3 + kc, q.ks + j + u >= b0, &acc[u * Dv]);
        weighted_sums(pw, done, gorows + r0 * Dv * W, Dv * W, q.nr - r0, D, Dv, acc.data());
        for (int64_t u = 0; u < done; ++u) put(dX + (q.ks + j + u) * C3 + vc, q.ks + j + u >= b0, &acc[u * Dv]);
        j += done;
      }
    }
    if (dB)
      for (auto [col, sums] : {std::pair{qc, &dbq}, std::pair{kc, &dbk}, std::pair{vc, &dbv}})
        for (int64_t dv = 0; dv < Dv; ++dv)
          for (int64_t t = 0; t < q.width(dv); ++t) dB_acc[col + dv * W + t] += (*sums)[dv][t];
  }
  if (dB)
    for (int64_t c = 0; c < C3; ++c) dB[c] += dB_acc[c];
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
