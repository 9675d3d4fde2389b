// AdamW for float32 CPU tensors in one pass over memory: the same float operations, in the same
// order and with the same rounding of every scalar, as torch.optim.AdamW(foreach=True) on the CPU
// (mul_ by 1 - lr wd, lerp_, mul_ and addcmul_ of the second moment, sqrt, div_, add_ of eps,
// addcdiv_), so that training results stay bitwise the same (tests/test_train.py checks it step by
// step against torch). PyTorch runs those as ~8 ops per tensor, each a call and a sweep; at
// these model sizes the calls dominated the optimizer step.

#include "kernels.h"

namespace jtk {

#ifdef __AVX512F__
// 16 floats at a time with AVX-512 intrinsics, fused multiply-adds exactly where torch's vector
// kernels have them (lerp; addcmul, as torch's build contracts it). Two passes, because torch's
// CPU sqrt (MKL's vector math) is not the correctly rounded one a sqrt instruction gives (it
// differs in about 0.7% of elements): the first updates the moments and copies the second into
// `root`, torch's own sqrt runs over all of them at once (elementwise, so the same bits as
// tensor by tensor), and the second pass updates the parameters.
static inline __mmask16 tail_mask(int64_t left) { return (__mmask16)(left >= W ? 0xffff : (1u << left) - 1); }

static void moments(const float* g, float* m, float* v, float* root, int64_t n, float w, float beta2,
                    float one_minus_beta2) {
  const bool small_w = w < 0.5f;
  const __m512 w_v = _mm512_set1_ps(small_w ? w : w - 1.f), b2 = _mm512_set1_ps(beta2),
               omb2 = _mm512_set1_ps(one_minus_beta2);
  for (int64_t i = 0; i < n; i += W) {
    const __mmask16 k = tail_mask(n - i);
    const __m512 G = _mm512_maskz_loadu_ps(k, g + i);
    __m512 M = _mm512_maskz_loadu_ps(k, m + i), V = _mm512_maskz_loadu_ps(k, v + i);
    // torch's lerp: start + w (end - start) for w < 0.5, else end + (w - 1)(end - start)
    M = _mm512_fmadd_ps(w_v, _mm512_sub_ps(G, M), small_w ? M : G);
    V = _mm512_fmadd_ps(_mm512_mul_ps(omb2, G), G, _mm512_mul_ps(V, b2));
    _mm512_mask_storeu_ps(m + i, k, M);
    _mm512_mask_storeu_ps(v + i, k, V);
    _mm512_mask_storeu_ps(root + i, k, V);
  }
}

static void parameters(float* p, const float* m, const float* root, int64_t n, bool decay, float keep,
                       float bc2_sqrt, float eps, float step_size) {
  const __m512 keep_v = _mm512_set1_ps(keep), bc2 = _mm512_set1_ps(bc2_sqrt), eps_v = _mm512_set1_ps(eps),
               step = _mm512_set1_ps(step_size);
  for (int64_t i = 0; i < n; i += W) {
    const __mmask16 k = tail_mask(n - i);
    __m512 P = _mm512_maskz_loadu_ps(k, p + i);
    if (decay) {
      P = _mm512_mul_ps(P, keep_v);
      asm("" : "+v"(P));  // torch rounds the decayed parameter before the update's add: no fma
    }
    const __m512 D = _mm512_add_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(k, root + i), bc2), eps_v);
    P = _mm512_add_ps(P, _mm512_div_ps(_mm512_mul_ps(step, _mm512_maskz_loadu_ps(k, m + i)), D));
    _mm512_mask_storeu_ps(p + i, k, P);
  }
}
#endif

bool adamw_available() {
#ifdef __AVX512F__
  return true;
#else
  return false;  // the caller falls back to torch's own step
#endif
}

void adamw_update(std::vector<torch::Tensor> params, std::vector<torch::Tensor> grads,
                  std::vector<torch::Tensor> exp_avgs, std::vector<torch::Tensor> exp_avg_sqs, double lr,
                  double weight_decay, double beta1, double beta2, double eps, double step_size, double bc2_sqrt) {
  TORCH_CHECK(params.size() == grads.size() && params.size() == exp_avgs.size() && params.size() == exp_avg_sqs.size(),
              "adamw: lists of different lengths");
  // the scalars as torch converts them: Python floats (double) computed as torch.optim does, then
  // rounded to float when an op applies them to a float tensor
  const float keep = (float)(1 - lr * weight_decay), w = (float)(1 - beta1);
  int64_t total = 0;
  for (size_t k = 0; k < params.size(); ++k) {
    for (auto* t : {&params[k], &grads[k], &exp_avgs[k], &exp_avg_sqs[k]})
      expect(*t, "adamw tensor", std::vector<int64_t>(t->dim(), -1));
    const int64_t n = params[k].numel();
    TORCH_CHECK(grads[k].numel() == n && exp_avgs[k].numel() == n && exp_avg_sqs[k].numel() == n,
                "adamw: tensors of different sizes");
    total += n;
  }
#ifdef __AVX512F__
  auto root = torch::empty({total}, params.empty() ? torch::TensorOptions() : params[0].options());
  float* r = root.data_ptr<float>();
  for (size_t k = 0, at = 0; k < params.size(); at += params[k].numel(), ++k)
    moments(grads[k].data_ptr<float>(), exp_avgs[k].data_ptr<float>(), exp_avg_sqs[k].data_ptr<float>(), r + at,
            params[k].numel(), w, (float)beta2, (float)(1 - beta2));
  root.sqrt_();
  for (size_t k = 0, at = 0; k < params.size(); at += params[k].numel(), ++k)
    parameters(params[k].data_ptr<float>(), exp_avgs[k].data_ptr<float>(), r + at, params[k].numel(),
               weight_decay != 0, keep, (float)bc2_sqrt, (float)eps, (float)step_size);
#else
  TORCH_CHECK(false, "adamw_update needs AVX-512 (adamw_available() is false)");
#endif
}

}  // namespace jtk
