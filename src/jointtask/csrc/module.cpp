// Python bindings of jointtask's CPU kernels (cpu_kernels.py builds and loads them).
#include "kernels.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("attention_forward", &jtk::attention_forward,
        "causal attention inside segments: (qkv [N,3C], bias [3C] or None, start [N], heads) -> (out [N,C], lse [N,heads])");
  m.def("attention_backward", &jtk::attention_backward,
        "(grad [N,C], qkv, bias, out, lse, start, heads, dbias or None) -> grad of qkv; dbias += its column sums");
  m.def("residual_layer_norm", &jtk::residual_layer_norm,
        "(r, z or None, bias or None, gamma, beta, eps) -> (r + z + bias written into z, its LayerNorm, mean, 1/std)");
  m.def("layer_norm_backward", &jtk::layer_norm_backward,
        "(grad, r, mean, rstd, gamma, dr, accumulate, dgamma, dbeta, dbias or None): dr (+)= grad through LayerNorm");
  m.def("bias_gelu", &jtk::bias_gelu, "(z [N,M], bias [M]) -> gelu(z + bias)");
  m.def("adamw_update", &jtk::adamw_update,
        "(params, grads, exp_avgs, exp_avg_sqs, lr, weight_decay, beta1, beta2, eps, step_size, bc2_sqrt): one "
        "AdamW update of a group, bitwise as torch.optim.AdamW(foreach=True) on the CPU");
  m.def("adamw_available", &jtk::adamw_available, "whether adamw_update was built (it needs AVX-512)");
  m.def("bias_gelu_backward", &jtk::bias_gelu_backward, "(grad, z, bias, dbias): grad *= gelu'(z + bias); dbias += sums");
}
