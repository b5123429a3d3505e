// IndRNN over a whole sequence (Li et al. 2018, eq. 2; rnnbench/modules/modern_cells.py IndRNNCell), forward and
// hand-written backward, float32/float64. The recurrence is element-wise, so every unit of every row runs its
// own chain of T steps (no GEMM: the input projection W x_t + b is one matmul before the kernel):
//
//     h_t = relu(x_proj_t + u ⊙ h_{t-1})         u: the diagonal recurrent weight, already clamped to its bound
//
// Backward (g = ∂L/∂h_t, from the output at t and from step t + 1):
//     δpre_t = g where h_t > 0, else 0           torch's relu backward: threshold on the output, so a NaN
//                                                 output passes its gradient as torch's does
//     ∂L/∂x_proj_t = δpre_t;   g_{t-1} = δpre_t ⊙ u + ∂L/∂out_{t-1}
// ∂L/∂u = Σ_t δpre_t ⊙ h_{t-1} is one reduction in the Python wrapper (kernels/indrnn.py). Padded steps
// (t >= lengths[b]) carry the state, output zero and take no gradient. relu keeps NaN (torch.relu(NaN) = NaN).
#include "common.h"

#include <cstdint>
#include <cstring>

namespace {

using rnnbench::Tensor;

// NaN tested on the bits: the kernels build with -ffast-math (extension.py), under which gcc may fold x != x
// and std::isnan to false.
inline bool is_nan(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits & 0x7fffffffu) > 0x7f800000u;
}
inline bool is_nan(double x) {
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits & 0x7fffffffffffffffull) > 0x7ff0000000000000ull;
}

// torch.relu: NaN stays NaN
template <typename scalar_t>
inline scalar_t relu(scalar_t x) { return is_nan(x) || x > scalar_t(0) ? x : scalar_t(0); }

// torch's relu backward (threshold_backward on the output): zero where h <= 0, the gradient elsewhere (NaN too)
template <typename scalar_t>
inline bool blocks_gradient(scalar_t h) { return !is_nan(h) && h <= scalar_t(0); }

std::vector<Tensor> forward(const Tensor& x_proj, const Tensor& h0, const Tensor& u, const std::optional<Tensor>& lengths) {
  // x_proj (T, B, H), h0 (B, H), u (H) -> outputs (T, B, H), h (B, H) at each row's own end
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = x_proj.size(2);
  rnnbench::check_cpu_one_dtype("indrnn", {&x_proj, &h0, &u}, lengths, B);
  TORCH_CHECK(h0.size(0) == B && h0.size(1) == H && u.numel() == H, "indrnn: x_proj (T, B, H), h0 (B, H), u (H)");
  const Tensor x = x_proj.contiguous(), len = rnnbench::contiguous_or_undefined(lengths), w = u.contiguous();
  Tensor out = at::empty({T, B, H}, x.options());
  Tensor h = h0.contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "indrnn_forward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    const scalar_t *x_p = x.data_ptr<scalar_t>(), *u_p = w.data_ptr<scalar_t>();
    scalar_t *h_p = h.data_ptr<scalar_t>(), *out_p = out.data_ptr<scalar_t>();
    rnnbench::for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t b = b0; b < b1; ++b) {
          scalar_t* o = out_p + (t * B + b) * H;
          if (!rnnbench::valid(len_p, b, t)) {
            std::fill(o, o + H, scalar_t(0));
            continue;
          }
          const scalar_t* xt = x_p + (t * B + b) * H;
          scalar_t* hb = h_p + b * H;
          for (int64_t j = 0; j < H; ++j) {
            hb[j] = relu(xt[j] + u_p[j] * hb[j]);
            o[j] = hb[j];
          }
        }
      }
    });
  });
  return {out, h};
}

std::vector<Tensor> backward(const Tensor& grad_out, const std::optional<Tensor>& grad_h, const Tensor& out,
                             const Tensor& u, const std::optional<Tensor>& lengths) {
  // -> ∂L/∂x_proj (T, B, H) (= δpre), ∂L/∂h0 (B, H)
  const int64_t T = out.size(0), B = out.size(1), H = out.size(2);
  rnnbench::check_cpu_one_dtype("indrnn", {&grad_out, &out, &u}, lengths, B);
  const Tensor go = grad_out.contiguous(), o = out.contiguous(), w = u.contiguous(),
               len = rnnbench::contiguous_or_undefined(lengths);
  Tensor dx = at::empty({T, B, H}, o.options());
  Tensor g = grad_h ? grad_h->contiguous().clone() : at::zeros({B, H}, o.options());
  AT_DISPATCH_FLOATING_TYPES(o.scalar_type(), "indrnn_backward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    const scalar_t *go_p = go.data_ptr<scalar_t>(), *o_p = o.data_ptr<scalar_t>(), *u_p = w.data_ptr<scalar_t>();
    scalar_t *dx_p = dx.data_ptr<scalar_t>(), *g_p = g.data_ptr<scalar_t>();
    rnnbench::for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      for (int64_t t = T - 1; t >= 0; --t) {
        for (int64_t b = b0; b < b1; ++b) {
          scalar_t* d = dx_p + (t * B + b) * H;
          if (!rnnbench::valid(len_p, b, t)) {  // the state passes through; its gradient too
            std::fill(d, d + H, scalar_t(0));
            continue;
          }
          const scalar_t *ht = o_p + (t * B + b) * H, *got = go_p + (t * B + b) * H;
          scalar_t* gb = g_p + b * H;
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t pre_grad = blocks_gradient(ht[j]) ? scalar_t(0) : gb[j] + got[j];
            d[j] = pre_grad;
            gb[j] = pre_grad * u_p[j];
          }
        }
      }
    });
  });
  return {dx, g};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "IndRNN sequence forward", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "IndRNN sequence backward", py::call_guard<py::gil_scoped_release>());
}
