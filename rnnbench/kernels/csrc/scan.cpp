// The diagonal linear recurrence h_t = a_t ⊙ h_{t-1} + b_t over a whole sequence, forward and hand-written
// backward, real (float32/float64) and complex (the same tensors viewed as (…, 2) real pairs). Serves the
// diagonal modern cells (minGRU, minLSTM, RG-LRU, LRU and S6 through the fused forms at the end of this file):
// rnnbench/kernels/scan.py holds the reference loop and the PyTorch fallback it is proven against
// (tests/test_scan.py).
//
// Layout: a, b, out (T, N) with N = batch × state columns, h0 (N); complex: (T, N, 2) and (N, 2). Column n
// never meets column n' (the recurrence is diagonal), so each thread takes one block of columns and runs all
// T steps on it; the inner loop over the block's columns is contiguous and vectorises. Padded batches are the
// caller's: a = 1, b = 0 at padded steps carries the state unchanged (scan.py).
//
// Backward, with g_t = ∂L/∂h_t (output gradient + what step t+1 sends back), for real tensors:
//     g_t = δout_t + a_{t+1} g_{t+1}        ∂L/∂b_t = g_t        ∂L/∂a_t = g_t h_{t-1}        ∂L/∂h0 = a_0 g_0
// and for complex tensors torch's convention (the gradient is the conjugate Wirtinger derivative, so a
// product y = a h sends δy·conj(a) to h and δy·conj(h) to a):
//     g_t = δout_t + conj(a_{t+1}) g_{t+1}   ∂L/∂b_t = g_t     ∂L/∂a_t = g_t conj(h_{t-1})   ∂L/∂h0 = conj(a_0) g_0
#include "common.h"

namespace {

using rnnbench::Tensor;

// Columns per thread: at least ~4k of them, the grain of every kernel here (common.h).
template <class F>
void for_column_blocks(int64_t N, F&& fn) {
  rnnbench::for_row_blocks(N, 1, std::forward<F>(fn));
}

template <typename scalar_t>
void forward_real(const scalar_t* a, const scalar_t* b, const scalar_t* h0, scalar_t* out, int64_t T, int64_t N,
                  int64_t n0, int64_t n1) {
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* hp = t == 0 ? h0 : out + (t - 1) * N;
    const scalar_t* at = a + t * N;
    const scalar_t* bt = b + t * N;
    scalar_t* ot = out + t * N;
#pragma omp simd
    for (int64_t n = n0; n < n1; ++n) ot[n] = at[n] * hp[n] + bt[n];
  }
}

template <typename scalar_t>
void forward_complex(const scalar_t* a, const scalar_t* b, const scalar_t* h0, scalar_t* out, int64_t T,
                     int64_t N, int64_t n0, int64_t n1) {
  for (int64_t t = 0; t < T; ++t) {
    const scalar_t* hp = t == 0 ? h0 : out + (t - 1) * 2 * N;
    const scalar_t* at = a + t * 2 * N;
    const scalar_t* bt = b + t * 2 * N;
    scalar_t* ot = out + t * 2 * N;
#pragma omp simd
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t ar = at[2 * n], ai = at[2 * n + 1], hr = hp[2 * n], hi = hp[2 * n + 1];
      ot[2 * n] = ar * hr - ai * hi + bt[2 * n];
      ot[2 * n + 1] = ar * hi + ai * hr + bt[2 * n + 1];
    }
  }
}

// g (N) enters holding ∂L/∂h_T (or zeros) and leaves holding ∂L/∂h0.
template <typename scalar_t>
void backward_real(const scalar_t* grad_out, const scalar_t* a, const scalar_t* out, const scalar_t* h0,
                   scalar_t* da, scalar_t* db, scalar_t* g, int64_t T, int64_t N, int64_t n0, int64_t n1) {
  for (int64_t t = T - 1; t >= 0; --t) {
    const scalar_t* hp = t == 0 ? h0 : out + (t - 1) * N;
    const scalar_t* at = a + t * N;
    const scalar_t* go = grad_out ? grad_out + t * N : nullptr;
    scalar_t* dat = da + t * N;
    scalar_t* dbt = db + t * N;
#pragma omp simd
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t gn = go ? g[n] + go[n] : g[n];
      dbt[n] = gn;
      dat[n] = gn * hp[n];
      g[n] = gn * at[n];
    }
  }
}

template <typename scalar_t>
void backward_complex(const scalar_t* grad_out, const scalar_t* a, const scalar_t* out, const scalar_t* h0,
                      scalar_t* da, scalar_t* db, scalar_t* g, int64_t T, int64_t N, int64_t n0, int64_t n1) {
  for (int64_t t = T - 1; t >= 0; --t) {
    const scalar_t* hp = t == 0 ? h0 : out + (t - 1) * 2 * N;
    const scalar_t* at = a + t * 2 * N;
    const scalar_t* go = grad_out ? grad_out + t * 2 * N : nullptr;
    scalar_t* dat = da + t * 2 * N;
    scalar_t* dbt = db + t * 2 * N;
#pragma omp simd
    for (int64_t n = n0; n < n1; ++n) {
      const scalar_t gr = go ? g[2 * n] + go[2 * n] : g[2 * n];
      const scalar_t gi = go ? g[2 * n + 1] + go[2 * n + 1] : g[2 * n + 1];
      const scalar_t hr = hp[2 * n], hi = hp[2 * n + 1], ar = at[2 * n], ai = at[2 * n + 1];
      dbt[2 * n] = gr;
      dbt[2 * n + 1] = gi;
      dat[2 * n] = gr * hr + gi * hi;        // g · conj(h)
      dat[2 * n + 1] = gi * hr - gr * hi;
      g[2 * n] = gr * ar + gi * ai;          // g · conj(a)
      g[2 * n + 1] = gi * ar - gr * ai;
    }
  }
}

void check(const std::vector<const Tensor*>& tensors, bool complex_pairs) {
  rnnbench::check_cpu_one_dtype("scan", tensors, std::nullopt, 0);
  for (const Tensor* t : tensors) {
    TORCH_CHECK(t->is_contiguous(), "scan extension: contiguous tensors only");
    TORCH_CHECK(!complex_pairs || t->size(-1) == 2, "scan extension: complex tensors as (..., 2) real pairs");
  }
}

// a, b (T, N[, 2]), h0 (N[, 2]) -> out (T, N[, 2]): out_t = a_t ⊙ out_{t-1} + b_t, out_{-1} = h0.
Tensor forward(const Tensor& a, const Tensor& b, const Tensor& h0, bool complex_pairs) {
  check({&a, &b, &h0}, complex_pairs);
  const int64_t T = a.size(0), N = a.size(1);
  TORCH_CHECK(b.sizes() == a.sizes() && h0.numel() == a.numel() / std::max<int64_t>(T, 1),
              "scan extension: a, b (T, N) and h0 (N) must agree");
  Tensor out = at::empty_like(a);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "scan_forward", [&] {
    const scalar_t *a_p = a.data_ptr<scalar_t>(), *b_p = b.data_ptr<scalar_t>(), *h_p = h0.data_ptr<scalar_t>();
    scalar_t* o_p = out.data_ptr<scalar_t>();
    for_column_blocks(N, [&](int64_t n0, int64_t n1) {
      if (complex_pairs) forward_complex<scalar_t>(a_p, b_p, h_p, o_p, T, N, n0, n1);
      else forward_real<scalar_t>(a_p, b_p, h_p, o_p, T, N, n0, n1);
    });
  });
  return out;
}

// -> [∂L/∂a, ∂L/∂b, ∂L/∂h0]; grad_out may be absent (only h_T used), grad_h_T too.
std::vector<Tensor> backward(const std::optional<Tensor>& grad_out, const std::optional<Tensor>& grad_h_T,
                             const Tensor& a, const Tensor& out, const Tensor& h0, bool complex_pairs) {
  check({&a, &out, &h0}, complex_pairs);
  const int64_t T = a.size(0), N = a.size(1);
  const Tensor go = rnnbench::contiguous_or_undefined(grad_out);
  Tensor g = grad_h_T ? grad_h_T->contiguous().clone() : at::zeros_like(h0);
  Tensor da = at::empty_like(a), db = at::empty_like(a);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "scan_backward", [&] {
    const scalar_t* go_p = go.defined() ? go.data_ptr<scalar_t>() : nullptr;
    const scalar_t *a_p = a.data_ptr<scalar_t>(), *o_p = out.data_ptr<scalar_t>(), *h_p = h0.data_ptr<scalar_t>();
    scalar_t *da_p = da.data_ptr<scalar_t>(), *db_p = db.data_ptr<scalar_t>(), *g_p = g.data_ptr<scalar_t>();
    for_column_blocks(N, [&](int64_t n0, int64_t n1) {
      if (complex_pairs) backward_complex<scalar_t>(go_p, a_p, o_p, h_p, da_p, db_p, g_p, T, N, n0, n1);
      else backward_real<scalar_t>(go_p, a_p, o_p, h_p, da_p, db_p, g_p, T, N, n0, n1);
    });
  });
  return {da, db, g};
}

// -- minGRU and minLSTM fused: their gates, computed from the input projection alone, and the scan in one pass --
// (Feng et al. 2024; rnnbench/modules/modern_cells.py). x_proj (T, B, G·H): minGRU G = 2, [k_z | k_h],
//     z = σ(k_z),  h_t = (1 - z) h_{t-1} + z k_h
// minLSTM G = 3, [k_f | k_i | k_h],
//     f = σ(k_f), i = σ(k_i), a = f/(f + i), c = i/(f + i),  h_t = a h_{t-1} + c k_h
// and their backward, with g = ∂L/∂h_t and h = h_{t-1}:
//     minGRU:  ∂k_h = g z,  ∂k_z = g (k_h - h) z(1 - z),  ∂h_{t-1} = g (1 - z)
//     minLSTM: ∂k_h = g c,  with δa = g h, δc = g k_h:  ∂k_f = i (δa - δc)/(f + i)² · f(1 - f),
//              ∂k_i = f (δc - δa)/(f + i)² · i(1 - i),  ∂h_{t-1} = g a
// Padded steps (t >= lengths[b]) carry the state, output zero and take no gradient. Rows of the batch are
// independent: each thread takes a block of them and runs all T steps.

template <typename scalar_t, int kGates>
void min_rnn_forward_rows(const scalar_t* x, const scalar_t* h0, scalar_t* out, scalar_t* h_last, const int64_t* len,
                          int64_t T, int64_t B, int64_t H, int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    std::copy(h0 + b * H, h0 + (b + 1) * H, h_last + b * H);
    scalar_t* h = h_last + b * H;
    for (int64_t t = 0; t < T; ++t) {
      scalar_t* o = out + (t * B + b) * H;
      if (!rnnbench::valid(len, b, t)) {
        std::fill(o, o + H, scalar_t(0));
        continue;
      }
      const scalar_t* xr = x + (t * B + b) * kGates * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        if constexpr (kGates == 2) {
          const scalar_t z = rnnbench::sigmoid(xr[j]);
          h[j] = (scalar_t(1) - z) * h[j] + z * xr[H + j];
        } else {
          const scalar_t f = rnnbench::sigmoid(xr[j]), i = rnnbench::sigmoid(xr[H + j]);
          h[j] = f / (f + i) * h[j] + i / (f + i) * xr[2 * H + j];
        }
        o[j] = h[j];
      }
    }
  }
}

template <typename scalar_t, int kGates>
void min_rnn_backward_rows(const scalar_t* grad_out, const scalar_t* x, const scalar_t* out, const scalar_t* h0,
                           const int64_t* len, scalar_t* dx, scalar_t* g_all, int64_t T, int64_t B, int64_t H,
                           int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    scalar_t* g = g_all + b * H;  // enters as ∂L/∂h_T, leaves as ∂L/∂h0
    for (int64_t t = T - 1; t >= 0; --t) {
      scalar_t* d = dx + (t * B + b) * kGates * H;
      if (!rnnbench::valid(len, b, t)) {  // the carried state: g passes through, no gradient here
        std::fill(d, d + kGates * H, scalar_t(0));
        continue;
      }
      const scalar_t* xr = x + (t * B + b) * kGates * H;
      const scalar_t* hp = t == 0 ? h0 + b * H : out + ((t - 1) * B + b) * H;
      const scalar_t* go = grad_out + (t * B + b) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const scalar_t gj = g[j] + go[j];
        if constexpr (kGates == 2) {
          const scalar_t z = rnnbench::sigmoid(xr[j]), k_h = xr[H + j];
          d[j] = gj * (k_h - hp[j]) * z * (scalar_t(1) - z);
          d[H + j] = gj * z;
          g[j] = gj * (scalar_t(1) - z);
        } else {
          const scalar_t f = rnnbench::sigmoid(xr[j]), i = rnnbench::sigmoid(xr[H + j]), k_h = xr[2 * H + j];
          const scalar_t s = f + i, a = f / s, c = i / s;
          const scalar_t da = gj * hp[j], dc = gj * k_h, inv_s2 = scalar_t(1) / (s * s);
          d[j] = i * (da - dc) * inv_s2 * f * (scalar_t(1) - f);
          d[H + j] = f * (dc - da) * inv_s2 * i * (scalar_t(1) - i);
          d[2 * H + j] = gj * c;
          g[j] = gj * a;
        }
      }
    }
  }
}

// x_proj (T, B, G·H), h0 (B, H), lengths (B,) or none -> [outputs (T, B, H), h_T (B, H)]
std::vector<Tensor> min_rnn_forward(const Tensor& x_proj, const Tensor& h0, const std::optional<Tensor>& lengths) {
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = h0.size(1), G = x_proj.size(2) / H;
  rnnbench::check_cpu_one_dtype("min_rnn", {&x_proj, &h0}, lengths, B);
  TORCH_CHECK((G == 2 || G == 3) && x_proj.size(2) == G * H, "min_rnn: x_proj must be (T, B, 2H) or (T, B, 3H)");
  const Tensor x = x_proj.contiguous(), h0c = h0.contiguous(), len = rnnbench::contiguous_or_undefined(lengths);
  Tensor out = at::empty({T, B, H}, x.options()), h_T = at::empty({B, H}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "min_rnn_forward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    rnnbench::for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      if (G == 2) min_rnn_forward_rows<scalar_t, 2>(x.data_ptr<scalar_t>(), h0c.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                                   h_T.data_ptr<scalar_t>(), len_p, T, B, H, b0, b1);
      else min_rnn_forward_rows<scalar_t, 3>(x.data_ptr<scalar_t>(), h0c.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                            h_T.data_ptr<scalar_t>(), len_p, T, B, H, b0, b1);
    });
  });
  return {out, h_T};
}

// -> [∂L/∂x_proj (T, B, G·H), ∂L/∂h0 (B, H)]
std::vector<Tensor> min_rnn_backward(const std::optional<Tensor>& grad_out, const std::optional<Tensor>& grad_h_T,
                                     const Tensor& x_proj, const Tensor& out, const Tensor& h0,
                                     const std::optional<Tensor>& lengths) {
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = h0.size(1), G = x_proj.size(2) / H;
  rnnbench::check_cpu_one_dtype("min_rnn", {&x_proj, &out, &h0}, lengths, B);
  const Tensor x = x_proj.contiguous(), h0c = h0.contiguous(), len = rnnbench::contiguous_or_undefined(lengths);
  // without an output gradient (only h_T used) zeros stand in: one branch-free inner loop
  const Tensor go = grad_out ? grad_out->contiguous() : at::zeros({T, B, H}, x.options());
  Tensor g = grad_h_T ? grad_h_T->contiguous().clone() : at::zeros({B, H}, x.options());
  Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "min_rnn_backward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    const scalar_t* go_p = go.data_ptr<scalar_t>();
    rnnbench::for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      if (G == 2) min_rnn_backward_rows<scalar_t, 2>(go_p, x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                                    h0c.data_ptr<scalar_t>(), len_p, dx.data_ptr<scalar_t>(),
                                                    g.data_ptr<scalar_t>(), T, B, H, b0, b1);
      else min_rnn_backward_rows<scalar_t, 3>(go_p, x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                                             h0c.data_ptr<scalar_t>(), len_p, dx.data_ptr<scalar_t>(),
                                             g.data_ptr<scalar_t>(), T, B, H, b0, b1);
    });
  });
  return {dx, g};
}

// -- RG-LRU fused: the gates' nonlinearities, a_t, √(1 - a_t²) and the scan in one pass ------------------------
// (De et al. 2024, Griffin §2.4; rnnbench/modules/modern_cells.py, RGLRUCell). The block-diagonal gate GEMM
// stays in torch; from its pre-activations pre = [p_a | p_x] (T, B, 2H), the recurrence input u (T, B, H) and
// coef = c · softplus(-Λ) (H):
//     r = σ(p_a),  i = σ(p_x),  log a = -coef r,  a = exp(log a),  x = -expm1(2 log a) = 1 - a²,  s = √x
//     h_t = a h_{t-1} + s i u
// Backward, with g = ∂L/∂h_t, h = h_{t-1}, and √'s derivative bounded as the authors' SqrtBoundDerivative
// (1/(2√x) -> 1/√max(4x, 1e-6)):
//     ∂u = g s i,  ∂i = g s u,  ∂x = g i u / √max(4x, 1e-6),  ∂log a = g h a - 2 a² ∂x
//     ∂p_a = -coef ∂log a · r(1 - r),  ∂p_x = ∂i · i(1 - i),  ∂coef = Σ_t -r ∂log a,  ∂h_{t-1} = g a
// Padded steps carry the state, output zero and take no gradient; each thread takes a block of batch rows.

template <typename scalar_t>
void rglru_forward_rows(const scalar_t* u, const scalar_t* pre, const scalar_t* coef, const scalar_t* h0,
                        scalar_t* out, scalar_t* h_last, const int64_t* len, int64_t T, int64_t B, int64_t H,
                        int64_t b0, int64_t b1) {
  for (int64_t b = b0; b < b1; ++b) {
    std::copy(h0 + b * H, h0 + (b + 1) * H, h_last + b * H);
    scalar_t* h = h_last + b * H;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t row = (t * B + b) * H;
      scalar_t* o = out + row;
      if (!rnnbench::valid(len, b, t)) {
        std::fill(o, o + H, scalar_t(0));
        continue;
      }
      const scalar_t *ur = u + row, *pa = pre + 2 * row, *px = pa + H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const scalar_t r = rnnbench::sigmoid(pa[j]), i = rnnbench::sigmoid(px[j]);
        const scalar_t log_a = -coef[j] * r;
        const scalar_t a = std::exp(log_a), s = std::sqrt(-std::expm1(scalar_t(2) * log_a));
        h[j] = a * h[j] + s * i * ur[j];
        o[j] = h[j];
      }
    }
  }
}

template <typename scalar_t>
void rglru_backward_rows(const scalar_t* grad_out, const scalar_t* u, const scalar_t* pre, const scalar_t* coef,
                         const scalar_t* out, const scalar_t* h0, const int64_t* len, scalar_t* du, scalar_t* dpre,
                         scalar_t* dcoef_rows, scalar_t* g_all, int64_t T, int64_t B, int64_t H, int64_t b0,
                         int64_t b1) {
  const scalar_t bound = scalar_t(1e-6);  // (1/1000)²: the authors' _MAX_SQRT_GRADIENT = 1000
  for (int64_t b = b0; b < b1; ++b) {
    scalar_t* g = g_all + b * H;  // enters as ∂L/∂h_T, leaves as ∂L/∂h0
    scalar_t* dc = dcoef_rows + b * H;
    std::fill(dc, dc + H, scalar_t(0));
    for (int64_t t = T - 1; t >= 0; --t) {
      const int64_t row = (t * B + b) * H;
      scalar_t *dur = du + row, *dpa = dpre + 2 * row, *dpx = dpa + H;
      if (!rnnbench::valid(len, b, t)) {  // the carried state: g passes through, no gradient here
        std::fill(dur, dur + H, scalar_t(0));
        std::fill(dpa, dpa + H, scalar_t(0));
        std::fill(dpx, dpx + H, scalar_t(0));
        continue;
      }
      const scalar_t *ur = u + row, *pa = pre + 2 * row, *px = pa + H, *go = grad_out + row;
      const scalar_t* hp = t == 0 ? h0 + b * H : out + row - B * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const scalar_t gj = g[j] + go[j];
        const scalar_t r = rnnbench::sigmoid(pa[j]), i = rnnbench::sigmoid(px[j]);
        const scalar_t log_a = -coef[j] * r;
        const scalar_t a = std::exp(log_a), x = -std::expm1(scalar_t(2) * log_a), s = std::sqrt(x);
        const scalar_t dx = gj * i * ur[j] / std::sqrt(std::max(scalar_t(4) * x, bound));
        const scalar_t dlog_a = gj * hp[j] * a - scalar_t(2) * a * a * dx;
        dur[j] = gj * s * i;
        dpx[j] = gj * s * ur[j] * i * (scalar_t(1) - i);
        dpa[j] = -(coef[j] * dlog_a) * (r * (scalar_t(1) - r));  // torch's order: tiny r never meets coef first
        dc[j] -= r * dlog_a;
        g[j] = gj * a;
      }
    }
  }
}

// u (T, B, H), pre (T, B, 2H), coef (H), h0 (B, H), lengths (B,) or none -> [outputs (T, B, H), h_T (B, H)]
std::vector<Tensor> rglru_forward(const Tensor& u, const Tensor& pre, const Tensor& coef, const Tensor& h0,
                                  const std::optional<Tensor>& lengths) {
  const int64_t T = u.size(0), B = u.size(1), H = u.size(2);
  rnnbench::check_cpu_one_dtype("rglru", {&u, &pre, &coef, &h0}, lengths, B);
  TORCH_CHECK(pre.dim() == 3 && pre.size(0) == T && pre.size(1) == B && pre.size(2) == 2 * H &&
              coef.numel() == H && h0.size(0) == B && h0.size(1) == H,
              "rglru: u (T, B, H), pre (T, B, 2H), coef (H) and h0 (B, H) must agree");
  const Tensor uc = u.contiguous(), pc = pre.contiguous(), cc = coef.contiguous(), h0c = h0.contiguous();
  const Tensor len = rnnbench::contiguous_or_undefined(lengths);
  Tensor out = at::empty({T, B, H}, uc.options()), h_T = at::empty({B, H}, uc.options());
  AT_DISPATCH_FLOATING_TYPES(uc.scalar_type(), "rglru_forward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    rnnbench::for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      rglru_forward_rows<scalar_t>(uc.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(),
                                   h0c.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), h_T.data_ptr<scalar_t>(),
                                   len_p, T, B, H, b0, b1);
    });
  });
  return {out, h_T};
}

// -> [∂L/∂u (T, B, H), ∂L/∂pre (T, B, 2H), ∂L/∂coef (H), ∂L/∂h0 (B, H)]
std::vector<Tensor> rglru_backward(const std::optional<Tensor>& grad_out, const std::optional<Tensor>& grad_h_T,
                                   const Tensor& u, const Tensor& pre, const Tensor& coef, const Tensor& out,
                                   const Tensor& h0, const std::optional<Tensor>& lengths) {
  const int64_t T = u.size(0), B = u.size(1), H = u.size(2);
  rnnbench::check_cpu_one_dtype("rglru", {&u, &pre, &coef, &out, &h0}, lengths, B);
  const Tensor uc = u.contiguous(), pc = pre.contiguous(), cc = coef.contiguous(), h0c = h0.contiguous();
  const Tensor len = rnnbench::contiguous_or_undefined(lengths);
  const Tensor go = grad_out ? grad_out->contiguous() : at::zeros({T, B, H}, uc.options());
  Tensor g = grad_h_T ? grad_h_T->contiguous().clone() : at::zeros({B, H}, uc.options());
  Tensor du = at::empty_like(uc), dpre = at::empty_like(pc), dcoef_rows = at::empty({B, H}, uc.options());
  AT_DISPATCH_FLOATING_TYPES(uc.scalar_type(), "rglru_backward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    rnnbench::for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      rglru_backward_rows<scalar_t>(go.data_ptr<scalar_t>(), uc.data_ptr<scalar_t>(), pc.data_ptr<scalar_t>(),
                                    cc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), h0c.data_ptr<scalar_t>(),
                                    len_p, du.data_ptr<scalar_t>(), dpre.data_ptr<scalar_t>(),
                                    dcoef_rows.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), T, B, H, b0, b1);
    });
  });
  return {du, dpre, dcoef_rows.sum(0), g};
}

// -- LRU fused: the complex diagonal recurrence on real and imaginary halves, γ-scaled input ---------------------
// (Orvieto et al. 2023; rnnbench/modules/modern_cells.py, LRUCell). With λ = lr + i li and γ (N), the input
// B u as its halves (u_re, u_im), rows of x_proj (T, B, 2N + H) = [u_re | u_im | D u], and the state x = p + i q
// kept as a (T, B, 2N) real tensor [p | q] (what the readout's one GEMM [p | q] [C_re | -C_im]^T reads):
//     p_t = lr p_{t-1} - li q_{t-1} + γ u_re,     q_t = li p_{t-1} + lr q_{t-1} + γ u_im
// Backward, with (gp, gq) = ∂L/∂(p_t, q_t) and (p, q) = state t-1:
//     ∂u_re = γ gp,  ∂u_im = γ gq,  ∂γ = Σ gp u_re + gq u_im,  ∂lr = Σ gp p + gq q,  ∂li = Σ gq p - gp q,
//     ∂(p, q)_{t-1} = (lr gp + li gq, lr gq - li gp)
// Padded steps carry the state, output zero and take no gradient; each thread takes a block of batch rows.

template <typename scalar_t>
void lru_forward_rows(const scalar_t* x, const scalar_t* lam, const scalar_t* gamma, const scalar_t* h0,
                      scalar_t* out, scalar_t* h_last, const int64_t* len, int64_t T, int64_t B, int64_t N,
                      int64_t W, int64_t b0, int64_t b1) {
  const scalar_t *lr = lam, *li = lam + N;
  for (int64_t b = b0; b < b1; ++b) {
    std::copy(h0 + b * 2 * N, h0 + (b + 1) * 2 * N, h_last + b * 2 * N);
    scalar_t *p = h_last + b * 2 * N, *q = p + N;
    for (int64_t t = 0; t < T; ++t) {
      scalar_t* o = out + (t * B + b) * 2 * N;
      if (!rnnbench::valid(len, b, t)) {
        std::fill(o, o + 2 * N, scalar_t(0));
        continue;
      }
      const scalar_t *ur = x + (t * B + b) * W, *ui = ur + N;
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) {
        const scalar_t pn = lr[j] * p[j] - li[j] * q[j] + gamma[j] * ur[j];
        const scalar_t qn = li[j] * p[j] + lr[j] * q[j] + gamma[j] * ui[j];
        p[j] = pn;
        q[j] = qn;
        o[j] = pn;
        o[N + j] = qn;
      }
    }
  }
}

template <typename scalar_t>
void lru_backward_rows(const scalar_t* grad_out, const scalar_t* x, const scalar_t* lam, const scalar_t* gamma,
                       const scalar_t* out, const scalar_t* h0, const int64_t* len, scalar_t* dx, scalar_t* dsum,
                       scalar_t* g_all, int64_t T, int64_t B, int64_t N, int64_t W, int64_t b0, int64_t b1) {
  const scalar_t *lr = lam, *li = lam + N;
  for (int64_t b = b0; b < b1; ++b) {
    scalar_t *gp = g_all + b * 2 * N, *gq = gp + N;  // enter as ∂L/∂x_T, leave as ∂L/∂x_0
    scalar_t *dlr = dsum + b * 3 * N, *dli = dlr + N, *dg = dli + N;  // per row: [∂lr | ∂li | ∂γ]
    std::fill(dlr, dlr + 3 * N, scalar_t(0));
    for (int64_t t = T - 1; t >= 0; --t) {
      scalar_t* d = dx + (t * B + b) * W;
      if (!rnnbench::valid(len, b, t)) {
        std::fill(d, d + 2 * N, scalar_t(0));
        continue;
      }
      const scalar_t *ur = x + (t * B + b) * W, *ui = ur + N, *go = grad_out + (t * B + b) * 2 * N;
      const scalar_t* hp = t == 0 ? h0 + b * 2 * N : out + ((t - 1) * B + b) * 2 * N;
#pragma omp simd
      for (int64_t j = 0; j < N; ++j) {
        const scalar_t a = gp[j] + go[j], c = gq[j] + go[N + j], p = hp[j], q = hp[N + j];
        d[j] = gamma[j] * a;
        d[N + j] = gamma[j] * c;
        dg[j] += a * ur[j] + c * ui[j];
        dlr[j] += a * p + c * q;
        dli[j] += c * p - a * q;
        gp[j] = lr[j] * a + li[j] * c;
        gq[j] = lr[j] * c - li[j] * a;
      }
    }
  }
}

// x_proj (T, B, W ≥ 2N) = [u_re | u_im | ...], lam (2N) = [lr | li], gamma (N), h0 (B, 2N) = [p | q], lengths
// -> [states (T, B, 2N), final state (B, 2N)]
std::vector<Tensor> lru_forward(const Tensor& x_proj, const Tensor& lam, const Tensor& gamma, const Tensor& h0,
                                const std::optional<Tensor>& lengths) {
  const int64_t T = x_proj.size(0), B = x_proj.size(1), W = x_proj.size(2), N = gamma.numel();
  rnnbench::check_cpu_one_dtype("lru", {&x_proj, &lam, &gamma, &h0}, lengths, B);
  TORCH_CHECK(W >= 2 * N && lam.numel() == 2 * N && h0.size(0) == B && h0.size(1) == 2 * N,
              "lru: x_proj (T, B, >= 2N), lam (2N), gamma (N) and h0 (B, 2N) must agree");
  const Tensor xc = x_proj.contiguous(), lc = lam.contiguous(), gc = gamma.contiguous(), h0c = h0.contiguous();
  const Tensor len = rnnbench::contiguous_or_undefined(lengths);
  Tensor out = at::empty({T, B, 2 * N}, xc.options()), h_T = at::empty({B, 2 * N}, xc.options());
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "lru_forward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    rnnbench::for_row_blocks(B, 2 * N, [&](int64_t b0, int64_t b1) {
      lru_forward_rows<scalar_t>(xc.data_ptr<scalar_t>(), lc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(),
                                 h0c.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), h_T.data_ptr<scalar_t>(), len_p,
                                 T, B, N, W, b0, b1);
    });
  });
  return {out, h_T};
}

// -> [∂L/∂x_proj (T, B, W; zero past 2N), ∂L/∂lam (2N), ∂L/∂gamma (N), ∂L/∂h0 (B, 2N)]
std::vector<Tensor> lru_backward(const std::optional<Tensor>& grad_out, const std::optional<Tensor>& grad_h_T,
                                 const Tensor& x_proj, const Tensor& lam, const Tensor& gamma, const Tensor& out,
                                 const Tensor& h0, const std::optional<Tensor>& lengths) {
  const int64_t T = x_proj.size(0), B = x_proj.size(1), W = x_proj.size(2), N = gamma.numel();
  rnnbench::check_cpu_one_dtype("lru", {&x_proj, &lam, &gamma, &out, &h0}, lengths, B);
  const Tensor xc = x_proj.contiguous(), lc = lam.contiguous(), gc = gamma.contiguous(), h0c = h0.contiguous();
  const Tensor len = rnnbench::contiguous_or_undefined(lengths);
  const Tensor go = grad_out ? grad_out->contiguous() : at::zeros({T, B, 2 * N}, xc.options());
  Tensor g = grad_h_T ? grad_h_T->contiguous().clone() : at::zeros({B, 2 * N}, xc.options());
  Tensor dx = W > 2 * N ? at::zeros_like(xc) : at::empty_like(xc), dsum = at::empty({B, 3 * N}, xc.options());
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "lru_backward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    rnnbench::for_row_blocks(B, 2 * N, [&](int64_t b0, int64_t b1) {
      lru_backward_rows<scalar_t>(go.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), lc.data_ptr<scalar_t>(),
                                  gc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), h0c.data_ptr<scalar_t>(), len_p,
                                  dx.data_ptr<scalar_t>(), dsum.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), T, B, N,
                                  W, b0, b1);
    });
  });
  const Tensor sums = dsum.sum(0);
  return {dx, sums.slice(0, 0, 2 * N), sums.slice(0, 2 * N, 3 * N), g};
}

// -- S6 fused: Mamba's selective scan without materialising (T, B, E, N) ------------------------------------------
// (Gu & Dao 2023, Algorithm 2; rnnbench/modules/modern_cells.py, S6Cell; the authors' `selective_scan_ref`.)
// delta, u (T, B, E), A (E, N) (= -exp(A_log)), Bm, Cm (T, B, N), h0 (B, E, N):
//     h_t[e, n] = exp(Δ_t[e] A[e, n]) h_{t-1}[e, n] + Δ_t[e] u_t[e] B_t[n],     y_t[e] = Σ_n C_t[n] h_t[e, n]
// (D u, the gate and the projections stay in torch). The state of one batch row, (E, N), stays in cache; the
// inner loop over n vectorises (N = 16: one AVX-512 vector). The forward keeps h only every kChunk steps; the
// backward recomputes a chunk's states from its checkpoint, then walks it backwards, with gh = ∂L/∂h_t:
//     gh += δy_t C_t,  ∂C_t += δy_t h_t,  ∂B_t += gh Δu,  ∂(Δu) = Σ_n gh B_t,  ∂Ā = gh h_{t-1},
//     ∂Δ = Σ_n ∂Ā Ā A + ∂(Δu) u,  ∂A += ∂Ā Ā Δ,  ∂u = ∂(Δu) Δ,  gh_{t-1} = gh Ā
// ∂B and ∂C sum over e within the row's thread; ∂A over rows through per-row partials. Padded steps carry the
// state, output zero and take no gradient.

constexpr int64_t kChunk = 16;

// kN: the state width as a compile-time constant (16, Mamba's default, and 8: each state row one or half a
// vector, the loop over n unrolled), or 0 for any other width at run time.
template <typename scalar_t, int kN>
void s6_step(const scalar_t* delta, const scalar_t* u, const scalar_t* A, const scalar_t* Bt, scalar_t* h, int64_t E,
             int64_t N_) {
  const int64_t N = kN ? kN : N_;
  for (int64_t e = 0; e < E; ++e) {
    const scalar_t d = delta[e], du = d * u[e];
    scalar_t* he = h + e * N;
    const scalar_t* Ae = A + e * N;
#pragma omp simd
    for (int64_t n = 0; n < N; ++n) he[n] = std::exp(d * Ae[n]) * he[n] + du * Bt[n];
  }
}

template <typename scalar_t, int kN>
void s6_forward_rows(const scalar_t* delta, const scalar_t* u, const scalar_t* A, const scalar_t* Bm,
                     const scalar_t* Cm, const scalar_t* h0, scalar_t* y, scalar_t* h_last, scalar_t* checkpoints,
                     const int64_t* len, int64_t T, int64_t B, int64_t E, int64_t N_, int64_t b0, int64_t b1) {
  const int64_t N = kN ? kN : N_, EN = E * N;
  for (int64_t b = b0; b < b1; ++b) {
    scalar_t* h = h_last + b * EN;
    std::copy(h0 + b * EN, h0 + (b + 1) * EN, h);
    for (int64_t t = 0; t < T; ++t) {
      if (t % kChunk == 0) std::copy(h, h + EN, checkpoints + ((t / kChunk) * B + b) * EN);
      scalar_t* yt = y + (t * B + b) * E;
      if (!rnnbench::valid(len, b, t)) {
        std::fill(yt, yt + E, scalar_t(0));
        continue;
      }
      const int64_t row = t * B + b;
      s6_step<scalar_t, kN>(delta + row * E, u + row * E, A, Bm + row * N, h, E, N);
      const scalar_t* Ct = Cm + row * N;
      for (int64_t e = 0; e < E; ++e) {
        scalar_t acc = 0;
        const scalar_t* he = h + e * N;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) acc += Ct[n] * he[n];
        yt[e] = acc;
      }
    }
  }
}

template <typename scalar_t, int kN>
void s6_backward_rows(const scalar_t* grad_y, const scalar_t* delta, const scalar_t* u, const scalar_t* A,
                      const scalar_t* Bm, const scalar_t* Cm, const scalar_t* checkpoints, const int64_t* len,
                      scalar_t* ddelta, scalar_t* du_out, scalar_t* dA_rows, scalar_t* dB, scalar_t* dC,
                      scalar_t* gh_all, scalar_t* states, int64_t T, int64_t B, int64_t E, int64_t N_, int64_t b0,
                      int64_t b1) {
  const int64_t N = kN ? kN : N_, EN = E * N;
  for (int64_t b = b0; b < b1; ++b) {
    scalar_t* gh = gh_all + b * EN;  // enters as ∂L/∂h_T, leaves as ∂L/∂h0
    scalar_t* dA = dA_rows + b * EN;
    std::fill(dA, dA + EN, scalar_t(0));
    for (int64_t c = T > 0 ? (T - 1) / kChunk : -1; c >= 0; --c) {  // T = 0: no chunk, gh passes through
      const int64_t t0 = c * kChunk, t1 = std::min(T, t0 + kChunk);
      // states[k] = h_{t0 + k - 1}: the checkpoint, then the chunk's states recomputed
      std::copy(checkpoints + (c * B + b) * EN, checkpoints + (c * B + b + 1) * EN, states);
      for (int64_t t = t0; t < t1; ++t) {
        scalar_t* next = states + (t - t0 + 1) * EN;
        std::copy(next - EN, next, next);
        const int64_t row = t * B + b;
        if (rnnbench::valid(len, b, t)) s6_step<scalar_t, kN>(delta + row * E, u + row * E, A, Bm + row * N, next, E, N);
      }
      for (int64_t t = t1 - 1; t >= t0; --t) {
        const int64_t row = t * B + b;
        scalar_t *dBt = dB + row * N, *dCt = dC + row * N, *ddt = ddelta + row * E, *dut = du_out + row * E;
        std::fill(dBt, dBt + N, scalar_t(0));
        std::fill(dCt, dCt + N, scalar_t(0));
        if (!rnnbench::valid(len, b, t)) {
          std::fill(ddt, ddt + E, scalar_t(0));
          std::fill(dut, dut + E, scalar_t(0));
          continue;
        }
        const scalar_t *h_t = states + (t - t0 + 1) * EN, *h_prev = h_t - EN;
        const scalar_t *Bt = Bm + row * N, *Ct = Cm + row * N, *gy = grad_y + row * E;
        const scalar_t *dt = delta + row * E, *ut = u + row * E;
        for (int64_t e = 0; e < E; ++e) {
          const scalar_t d = dt[e], dyu = d * ut[e], gye = gy[e];
          scalar_t* g = gh + e * N;
          scalar_t* dAe = dA + e * N;
          const scalar_t *Ae = A + e * N, *he = h_t + e * N, *hp = h_prev + e * N;
          scalar_t d_du = 0, d_delta = 0;
#pragma omp simd reduction(+ : d_du, d_delta)
          for (int64_t n = 0; n < N; ++n) {
            const scalar_t gn = g[n] + gye * Ct[n];
            const scalar_t a = std::exp(d * Ae[n]), da = gn * hp[n] * a;
            dCt[n] += gye * he[n];
            dBt[n] += gn * dyu;
            d_du += gn * Bt[n];
            d_delta += da * Ae[n];
            dAe[n] += da * d;
            g[n] = gn * a;
          }
          ddt[e] = d_delta + d_du * ut[e];
          dut[e] = d_du * d;
        }
      }
    }
  }
}

// delta, u (T, B, E), A (E, N), Bm, Cm (T, B, N), h0 (B, E, N), lengths -> [y (T, B, E), h_T (B, E, N), checkpoints]
std::vector<Tensor> s6_forward(const Tensor& delta, const Tensor& u, const Tensor& A, const Tensor& Bm,
                               const Tensor& Cm, const Tensor& h0, const std::optional<Tensor>& lengths) {
  const int64_t T = delta.size(0), B = delta.size(1), E = delta.size(2), N = A.size(1);
  rnnbench::check_cpu_one_dtype("s6", {&delta, &u, &A, &Bm, &Cm, &h0}, lengths, B);
  TORCH_CHECK(u.sizes() == delta.sizes() && A.size(0) == E && Bm.size(0) == T && Bm.size(1) == B && Bm.size(2) == N &&
              Cm.sizes() == Bm.sizes() && h0.size(0) == B && h0.size(1) == E && h0.size(2) == N,
              "s6: delta, u (T, B, E), A (E, N), B, C (T, B, N) and h0 (B, E, N) must agree");
  const Tensor dc = delta.contiguous(), uc = u.contiguous(), Ac = A.contiguous(), Bc = Bm.contiguous();
  const Tensor Cc = Cm.contiguous(), h0c = h0.contiguous(), len = rnnbench::contiguous_or_undefined(lengths);
  Tensor y = at::empty({T, B, E}, dc.options()), h_T = at::empty({B, E, N}, dc.options());
  Tensor checkpoints = at::empty({(T + kChunk - 1) / kChunk, B, E, N}, dc.options());
  AT_DISPATCH_FLOATING_TYPES(dc.scalar_type(), "s6_forward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    rnnbench::for_row_blocks(B, E * N, [&](int64_t b0, int64_t b1) {
      auto rows = N == 16 ? s6_forward_rows<scalar_t, 16> : N == 8 ? s6_forward_rows<scalar_t, 8> : s6_forward_rows<scalar_t, 0>;
      rows(dc.data_ptr<scalar_t>(), uc.data_ptr<scalar_t>(), Ac.data_ptr<scalar_t>(),
                                Bc.data_ptr<scalar_t>(), Cc.data_ptr<scalar_t>(), h0c.data_ptr<scalar_t>(),
                                y.data_ptr<scalar_t>(), h_T.data_ptr<scalar_t>(), checkpoints.data_ptr<scalar_t>(),
                                len_p, T, B, E, N, b0, b1);
    });
  });
  return {y, h_T, checkpoints};
}

// -> [∂Δ, ∂u (T, B, E), ∂A (E, N), ∂B, ∂C (T, B, N), ∂h0 (B, E, N)]
std::vector<Tensor> s6_backward(const std::optional<Tensor>& grad_y, const std::optional<Tensor>& grad_h_T,
                                const Tensor& delta, const Tensor& u, const Tensor& A, const Tensor& Bm,
                                const Tensor& Cm, const Tensor& checkpoints, const std::optional<Tensor>& lengths) {
  const int64_t T = delta.size(0), B = delta.size(1), E = delta.size(2), N = A.size(1);
  rnnbench::check_cpu_one_dtype("s6", {&delta, &u, &A, &Bm, &Cm, &checkpoints}, lengths, B);
  const Tensor dc = delta.contiguous(), uc = u.contiguous(), Ac = A.contiguous(), Bc = Bm.contiguous();
  const Tensor Cc = Cm.contiguous(), len = rnnbench::contiguous_or_undefined(lengths);
  const Tensor gy = grad_y ? grad_y->contiguous() : at::zeros({T, B, E}, dc.options());
  Tensor gh = grad_h_T ? grad_h_T->contiguous().clone() : at::zeros({B, E, N}, dc.options());
  Tensor ddelta = at::empty_like(dc), du = at::empty_like(uc), dA_rows = at::empty({B, E, N}, dc.options());
  Tensor dB = at::empty_like(Bc), dC = at::empty_like(Cc);
  AT_DISPATCH_FLOATING_TYPES(dc.scalar_type(), "s6_backward", [&] {
    const int64_t* len_p = rnnbench::lengths_ptr(len);
    rnnbench::for_row_blocks(B, E * N, [&](int64_t b0, int64_t b1) {
      std::vector<scalar_t> states((kChunk + 1) * E * N);  // one chunk's states, per thread
      auto rows = N == 16 ? s6_backward_rows<scalar_t, 16> : N == 8 ? s6_backward_rows<scalar_t, 8> : s6_backward_rows<scalar_t, 0>;
      rows(gy.data_ptr<scalar_t>(), dc.data_ptr<scalar_t>(), uc.data_ptr<scalar_t>(),
                                 Ac.data_ptr<scalar_t>(), Bc.data_ptr<scalar_t>(), Cc.data_ptr<scalar_t>(),
                                 checkpoints.data_ptr<scalar_t>(), len_p, ddelta.data_ptr<scalar_t>(),
                                 du.data_ptr<scalar_t>(), dA_rows.data_ptr<scalar_t>(), dB.data_ptr<scalar_t>(),
                                 dC.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(), states.data(), T, B, E, N, b0, b1);
    });
  });
  return {ddelta, du, dA_rows.sum(0), dB, dC, gh};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("min_rnn_forward", &min_rnn_forward, "minGRU / minLSTM forward", py::call_guard<py::gil_scoped_release>());
  m.def("min_rnn_backward", &min_rnn_backward, "minGRU / minLSTM backward", py::call_guard<py::gil_scoped_release>());
  m.def("rglru_forward", &rglru_forward, "RG-LRU forward", py::call_guard<py::gil_scoped_release>());
  m.def("rglru_backward", &rglru_backward, "RG-LRU backward", py::call_guard<py::gil_scoped_release>());
  m.def("lru_forward", &lru_forward, "LRU forward", py::call_guard<py::gil_scoped_release>());
  m.def("lru_backward", &lru_backward, "LRU backward", py::call_guard<py::gil_scoped_release>());
  m.def("s6_forward", &s6_forward, "S6 selective scan forward", py::call_guard<py::gil_scoped_release>());
  m.def("s6_backward", &s6_backward, "S6 selective scan backward", py::call_guard<py::gil_scoped_release>());
  m.def("forward", &forward, "diagonal linear scan forward", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "diagonal linear scan backward", py::call_guard<py::gil_scoped_release>());
}
