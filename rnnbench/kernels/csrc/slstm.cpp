// sLSTM over a whole sequence (Beck et al. 2024, xLSTM §2.2, eqs. 8-17; rnnbench/modules/modern_cells.py
// SLSTMCell), forward and hand-written backward, float32/float64. Per step one GEMM per head (the head-wise
// block-diagonal recurrence) and one element-wise pass over the batch rows:
//
//     pre = x_proj_t + R h_{t-1}                      (z̃, ĩ, f̃, õ), R block-diagonal per head
//     m_t = max(log σ(f̃) + m_{t-1}, ĩ)   i' = exp(ĩ - m_t)   f' = exp(log σ(f̃) + m_{t-1} - m_t)
//     c_t = f' c + i' tanh(z̃)   n_t = f' n + i'   h_t = σ(õ) c_t / n_t
//
// Backward. h_t does not depend on the stabilisers (c and n carry the same factor e^{-m}), so the gradient
// through c, n and h is taken with every m_t held fixed (δ = ∂L/∂·, g = δh_t):
//     δõ = g (c_t/n_t) o(1-o);  δc_t += g o/n_t;  δn_t -= g o c_t/n_t²
//     δz̃ = δc_t i' (1 - z²);  δĩ = (δc_t z + δn_t) i';  δf̃ = (δc_t c_{t-1} + δn_t n_{t-1}) f' (1 - σ(f̃))
//     δc_{t-1} = δc_t f';  δn_{t-1} = δn_t f';  δh_{t-1} = Rᵀ δpre
// What does depend on the m's is the returned final state (c_T, n_T scaled by e^{-m_T}, and m_T): its gradient
// G = δm_T - c_T δc_T - n_T δn_T runs down the max chain (to f̃ and on to m_{t-1} where the forget branch won,
// i.e. where f' = e^0 = 1; to ĩ where the input branch won), and the initial state enters as C₀ = c₀ e^{m₀},
// N₀ = n₀ e^{m₀}: δm₀ = G + δc₀ c₀ + δn₀ n₀. Padded steps (t >= lengths[b]) carry the state, output zero and
// take no gradient. ∂L/∂R = Σ_t h_{t-1}ᵀ δpre_t is one einsum in the Python wrapper (kernels/slstm.py).
#include "common.h"

namespace {

using rnnbench::Tensor;

template <typename scalar_t>
inline scalar_t log_sigmoid(scalar_t x) {  // min(x, 0) - log1p(e^{-|x|}): no overflow, no log(0)
  return std::min(x, scalar_t(0)) - std::log1p(std::exp(-std::abs(x)));
}

// saved per step, each (T, B, H): z, i', f', o, σ(f̃), c_t, n_t, m_t
constexpr int kSaved = 8;

std::vector<Tensor> forward(const Tensor& x_proj, const Tensor& h0, const Tensor& c0, const Tensor& n0,
                            const Tensor& m0, const Tensor& weight_hh, const std::optional<Tensor>& lengths) {
  // x_proj (T, B, 4H) gate blocks z, i, f, o; states (B, H); weight_hh (4, NH, d, d)
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = h0.size(1);
  const int64_t NH = weight_hh.size(1), d = weight_hh.size(2);
  rnnbench::check_cpu_one_dtype("slstm", {&x_proj, &h0, &c0, &n0, &m0, &weight_hh}, lengths, B);
  TORCH_CHECK(x_proj.size(2) == 4 * H && NH * d == H, "slstm: x_proj (T, B, 4H), weight_hh (4, heads, H/heads, H/heads)");
  const Tensor x = x_proj.contiguous(), len = rnnbench::contiguous_or_undefined(lengths);
  // R as one (d, 4d) matrix per head: column g·d + j of head k is R[g, k, :, j]
  const Tensor R = weight_hh.permute({1, 2, 0, 3}).reshape({NH, d, 4 * d}).contiguous();
  Tensor out = at::empty({T, B, H}, x.options());
  Tensor saved = at::empty({kSaved, T, B, H}, x.options());
  Tensor h = h0.contiguous().clone(), c = c0.contiguous().clone(), n = n0.contiguous().clone(),
         m = m0.contiguous().clone();
  Tensor h_heads = h.view({B, NH, d}).permute({1, 0, 2}).contiguous();        // (NH, B, d)
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "slstm_forward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    scalar_t *h_p = h.data_ptr<scalar_t>(), *c_p = c.data_ptr<scalar_t>(), *n_p = n.data_ptr<scalar_t>(),
             *m_p = m.data_ptr<scalar_t>(), *hh_p = h_heads.data_ptr<scalar_t>(), *s_p = saved.data_ptr<scalar_t>();
    const scalar_t* x_p = x.data_ptr<scalar_t>();
    scalar_t* out_p = out.data_ptr<scalar_t>();
    const int64_t plane = T * B * H;
    // rows never meet: each thread runs all T steps on its own block of rows (one parallel region, as the
    // LSTM kernel: a region per step measured 5-10x slower on a loaded machine)
    rnnbench::for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      const int64_t nb = b1 - b0;
      Tensor rec = at::empty({NH, nb, 4 * d}, x.options());
      const scalar_t* rec_p = rec.data_ptr<scalar_t>();
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t k = 0; k < NH; ++k) {  // (nb, 4d) per head
          Tensor rec_k = rec[k];
          at::mm_out(rec_k, h_heads[k].narrow(0, b0, nb), R[k]);
        }
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * B + b;
          scalar_t* o_row = out_p + row * H;
          if (!rnnbench::valid(len_p, b, t)) {
            std::fill(o_row, o_row + H, scalar_t(0));
            continue;
          }
          const scalar_t* xr = x_p + row * 4 * H;
          for (int64_t k = 0; k < NH; ++k) {
            const scalar_t* rk = rec_p + (k * nb + b - b0) * 4 * d;
            _Pragma("omp simd")  // inside AT_DISPATCH's macro argument: the operator form
            for (int64_t jj = 0; jj < d; ++jj) {
              const int64_t j = k * d + jj;
              const scalar_t zt = xr[j] + rk[jj], it = xr[H + j] + rk[d + jj];
              const scalar_t ft = xr[2 * H + j] + rk[2 * d + jj], ot = xr[3 * H + j] + rk[3 * d + jj];
              const scalar_t log_f = log_sigmoid(ft), m_prev = m_p[b * H + j];
              const scalar_t m_new = std::max(log_f + m_prev, it);
              const scalar_t ig = std::exp(it - m_new), fg = std::exp(log_f + m_prev - m_new);
              const scalar_t z = std::tanh(zt), o = rnnbench::sigmoid(ot);
              const scalar_t cn = fg * c_p[b * H + j] + ig * z, nn = fg * n_p[b * H + j] + ig;
              const scalar_t hn = o * cn / nn;
              c_p[b * H + j] = cn;
              n_p[b * H + j] = nn;
              m_p[b * H + j] = m_new;
              h_p[b * H + j] = hn;
              hh_p[(k * B + b) * d + jj] = hn;
              o_row[j] = hn;
              const int64_t idx = row * H + j;
              s_p[idx] = z;
              s_p[plane + idx] = ig;
              s_p[2 * plane + idx] = fg;
              s_p[3 * plane + idx] = o;
              s_p[4 * plane + idx] = rnnbench::sigmoid(ft);
              s_p[5 * plane + idx] = cn;
              s_p[6 * plane + idx] = nn;
              s_p[7 * plane + idx] = m_new;
            }
          }
        }
      }
    });
  });
  return {out, h, c, n, m, saved};
}

// -> [δx_proj (T, B, 4H), δh0, δc0, δn0, δm0]
std::vector<Tensor> backward(const Tensor& grad_out, const Tensor& grad_h, const Tensor& grad_c, const Tensor& grad_n,
                             const Tensor& grad_m, const Tensor& saved, const Tensor& c0, const Tensor& n0,
                             const Tensor& m0, const Tensor& weight_hh, const std::optional<Tensor>& lengths) {
  const int64_t T = saved.size(1), B = saved.size(2), H = saved.size(3);
  const int64_t NH = weight_hh.size(1), d = weight_hh.size(2);
  rnnbench::check_cpu_one_dtype("slstm", {&grad_out, &grad_h, &grad_c, &grad_n, &grad_m, &saved, &c0, &n0, &m0,
                                          &weight_hh}, lengths, B);
  const Tensor len = rnnbench::contiguous_or_undefined(lengths), go = grad_out.contiguous();
  const Tensor Rt = weight_hh.permute({1, 0, 3, 2}).reshape({NH, 4 * d, d}).contiguous();  // (NH, 4d, d): Rᵀ
  Tensor dx = at::empty({T, B, 4 * H}, saved.options());
  Tensor dh = grad_h.contiguous().clone(), dc = grad_c.contiguous().clone(), dn = grad_n.contiguous().clone();
  // the final state's explicit dependence on m_T: G = δm_T - c_T δc_T - n_T δn_T (c_T, n_T: the returned state)
  Tensor G = grad_m.contiguous().clone();
  AT_DISPATCH_FLOATING_TYPES(saved.scalar_type(), "slstm_backward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    const scalar_t* s_p = saved.data_ptr<scalar_t>();
    const scalar_t *go_p = go.data_ptr<scalar_t>(), *c0_p = c0.data_ptr<scalar_t>(), *n0_p = n0.data_ptr<scalar_t>();
    scalar_t* dx_p = dx.data_ptr<scalar_t>();
    scalar_t *dh_p = dh.data_ptr<scalar_t>(), *dc_p = dc.data_ptr<scalar_t>(), *dn_p = dn.data_ptr<scalar_t>(),
             *G_p = G.data_ptr<scalar_t>();
    const int64_t plane = T * B * H;
    rnnbench::for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      const int64_t nb = b1 - b0;
      Tensor dpre_heads = at::empty({NH, nb, 4 * d}, saved.options());
      Tensor dh_heads = at::empty({NH, nb, d}, saved.options());
      scalar_t* dp_p = dpre_heads.data_ptr<scalar_t>();
      const scalar_t* dhh_p = dh_heads.data_ptr<scalar_t>();
      // the returned c_T, n_T: each row's state at its own last valid step (the initial state if none)
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t last = (len_p ? len_p[b] : T) - 1;
        for (int64_t j = 0; j < H; ++j) {
          const scalar_t cT = last >= 0 ? s_p[5 * plane + (last * B + b) * H + j] : c0_p[b * H + j];
          const scalar_t nT = last >= 0 ? s_p[6 * plane + (last * B + b) * H + j] : n0_p[b * H + j];
          G_p[b * H + j] -= cT * dc_p[b * H + j] + nT * dn_p[b * H + j];
        }
      }
      for (int64_t t = T - 1; t >= 0; --t) {
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * B + b;
          scalar_t* dxr = dx_p + row * 4 * H;
          if (!rnnbench::valid(len_p, b, t)) {  // the carried state: every δ passes through unchanged
            std::fill(dxr, dxr + 4 * H, scalar_t(0));
            for (int64_t k = 0; k < NH; ++k) {
              std::fill(dp_p + (k * nb + b - b0) * 4 * d, dp_p + (k * nb + b - b0 + 1) * 4 * d, scalar_t(0));
            }
            continue;
          }
          for (int64_t k = 0; k < NH; ++k) {
            scalar_t* dpk = dp_p + (k * nb + b - b0) * 4 * d;
            _Pragma("omp simd")  // inside AT_DISPATCH's macro argument: the operator form
            for (int64_t jj = 0; jj < d; ++jj) {
              const int64_t j = k * d + jj, idx = row * H + j, sj = b * H + j;
              const scalar_t z = s_p[idx], ig = s_p[plane + idx], fg = s_p[2 * plane + idx], o = s_p[3 * plane + idx];
              const scalar_t sf = s_p[4 * plane + idx], ct = s_p[5 * plane + idx], nt = s_p[6 * plane + idx];
              const scalar_t c_prev = t > 0 ? s_p[5 * plane + idx - B * H] : c0_p[sj];
              const scalar_t n_prev = t > 0 ? s_p[6 * plane + idx - B * H] : n0_p[sj];
              const scalar_t g = dh_p[sj] + go_p[idx];
              const scalar_t d_o = g * (ct / nt) * o * (scalar_t(1) - o);
              const scalar_t dct = dc_p[sj] + g * o / nt, dnt = dn_p[sj] - g * o * ct / (nt * nt);
              const scalar_t d_z = dct * ig * (scalar_t(1) - z * z);
              scalar_t d_i = (dct * z + dnt) * ig;
              scalar_t d_f = (dct * c_prev + dnt * n_prev) * fg * (scalar_t(1) - sf);
              // the max chain: the forget branch won where f' = e^0 = 1, else the input branch
              const bool forget_branch = fg == scalar_t(1);
              const scalar_t Gj = G_p[sj];
              d_f += forget_branch ? Gj * (scalar_t(1) - sf) : scalar_t(0);
              d_i += forget_branch ? scalar_t(0) : Gj;
              G_p[sj] = forget_branch ? Gj : scalar_t(0);
              dc_p[sj] = dct * fg;
              dn_p[sj] = dnt * fg;
              dh_p[sj] = scalar_t(0);  // replaced by Rᵀ δpre below
              dxr[j] = d_z;
              dxr[H + j] = d_i;
              dxr[2 * H + j] = d_f;
              dxr[3 * H + j] = d_o;
              dpk[jj] = d_z;
              dpk[d + jj] = d_i;
              dpk[2 * d + jj] = d_f;
              dpk[3 * d + jj] = d_o;
            }
          }
        }
        for (int64_t k = 0; k < NH; ++k) {  // (nb, d) per head: Rᵀ δpre
          Tensor dh_k = dh_heads[k];
          at::mm_out(dh_k, dpre_heads[k], Rt[k]);
        }
        for (int64_t b = b0; b < b1; ++b) {  // valid rows: δh_{t-1} = Rᵀ δpre; padded rows keep their δh (+ 0)
          for (int64_t k = 0; k < NH; ++k) {
            for (int64_t jj = 0; jj < d; ++jj) dh_p[b * H + k * d + jj] += dhh_p[(k * nb + b - b0) * d + jj];
          }
        }
      }
    });
  });
  // δm₀ = G + δc₀ c₀ + δn₀ n₀ (the initial state enters as c₀ e^{m₀}, n₀ e^{m₀})
  Tensor dm0 = G + dc * c0 + dn * n0;
  return {dx, dh, dc, dn, dm0};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "sLSTM sequence forward", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "sLSTM sequence backward", py::call_guard<py::gil_scoped_release>());
}
