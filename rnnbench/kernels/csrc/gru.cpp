// Sequence-level GRU on CPU: the time loop of cells.GRUCell.step (gate order r, z, n), both forms, forward
// and hand-written backward. The equations, the buffers and every argument are documented once, in
// rnnbench/kernels/fast_gru.py; this file follows them line by line. Layout as in peephole.cpp: each thread takes
// one block of batch rows and runs all T steps on it (common.h, `for_row_blocks`: one single-threaded GEMM
// per step and form, fused element-wise passes), the recurrent weight gradient is one GEMM after the
// backward loop. Given the layer's input x and W_ih (the layer path, issue 26), x_t W_ih^T + b_ih is a GEMM
// of each step too, into the block's own buffer (not one GEMM with U h: x_n and U_n h enter n apart), so no
// (T, B, 3H) x_proj is written and read back; the backward sums ∂L/∂W_ih per step from the step's
// ∂L/∂x_proj_t in cache and ∂L/∂b_ih with the other bias gradient (∂L/∂x is the caller's:
// projection.InputProjection).

#include "common.h"

#include <torch/extension.h>

#include <map>
#include <mutex>

namespace {

using namespace rnnbench;

// -- reset_after = true (torch, cuDNN): n = tanh(x_n + r ⊙ (U_n h + b_hn)) ------------------------------

// `a` (3H) holds U h_{t-1}, `x` the row of x_proj; writes r, z, n to `gates`, which may be `x` itself (each
// element is read before it is written). `hn` gets U_n h_{t-1} + b_hn (the backward needs it).
template <typename scalar_t>
inline void forward_row_after(int64_t H, const scalar_t* __restrict__ a, const scalar_t* x,
                              const scalar_t* __restrict__ bias, const scalar_t* __restrict__ hp,
                              scalar_t* __restrict__ hn, scalar_t* __restrict__ h, scalar_t* gates) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t r = sigmoid(x[j] + (a[j] + bias[j]));
    const scalar_t z = sigmoid(x[H + j] + (a[H + j] + bias[H + j]));
    const scalar_t h_n = a[2 * H + j] + bias[2 * H + j];
    const scalar_t n = std::tanh(x[2 * H + j] + r * h_n);
    gates[j] = r;
    gates[H + j] = z;
    gates[2 * H + j] = n;
    hn[j] = h_n;
    h[j] = (scalar_t(1) - z) * n + z * hp[j];
  }
}

// On entry `a` = r, z, n and `hn` = U_n h_{t-1} + b_hn of step t; `dh` = ∂L/∂h_t. On exit `a` holds the
// gradient of U h_{t-1} + b_hh (δ_r, δ_z, r ⊙ δ_n), `hn` holds δ_n (the gradient of x_n), `dh_prev` the
// direct term z ⊙ ∂L/∂h_t (the caller adds δ U); the bias gradient of this row accumulates in db (3H).
template <typename scalar_t>
inline void backward_row_after(int64_t H, scalar_t* __restrict__ a, scalar_t* __restrict__ hn,
                               const scalar_t* __restrict__ hp, const scalar_t* __restrict__ dh,
                               const scalar_t* __restrict__ go, scalar_t* __restrict__ dh_prev,
                               scalar_t* __restrict__ db) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t r = a[j], z = a[H + j], n = a[2 * H + j];
    const scalar_t dht = go ? dh[j] + go[j] : dh[j];
    const scalar_t d_n = dht * (scalar_t(1) - z) * (scalar_t(1) - n * n);
    const scalar_t d_z = dht * (hp[j] - n) * z * (scalar_t(1) - z);
    const scalar_t d_r = d_n * hn[j] * r * (scalar_t(1) - r);
    a[j] = d_r;
    a[H + j] = d_z;
    a[2 * H + j] = r * d_n;
    hn[j] = d_n;
    dh_prev[j] = dht * z;
    db[j] += d_r;
    db[H + j] += d_z;
    db[2 * H + j] += r * d_n;
  }
}

// -- reset_after = false (Cho et al. 2014): n = tanh(x_n + U_n (r ⊙ h) + b_hn) -----------------------------

// First pass: `rz` (2H) holds U_{r,z} h_{t-1}; writes r, z into `a` and r ⊙ h_{t-1} into `rh`. `a` may be
// `x` (the row of x_proj) itself, in both passes: each element is read before it is written.
template <typename scalar_t>
inline void forward_row_before_1(int64_t H, scalar_t* a, const scalar_t* __restrict__ rz,
                                 const scalar_t* x, const scalar_t* __restrict__ bias,
                                 const scalar_t* __restrict__ hp, scalar_t* __restrict__ rh) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t r = sigmoid(x[j] + (bias[j] + rz[j]));
    a[j] = r;
    a[H + j] = sigmoid(x[H + j] + (bias[H + j] + rz[H + j]));
    rh[j] = r * hp[j];
  }
}

// Second pass: `un` (H) holds U_n (r ⊙ h_{t-1}); writes n into `a` and h_t.
template <typename scalar_t>
inline void forward_row_before_2(int64_t H, scalar_t* a, const scalar_t* __restrict__ un,
                                 const scalar_t* x, const scalar_t* __restrict__ bias,
                                 const scalar_t* __restrict__ hp, scalar_t* __restrict__ h) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t z = a[H + j];
    const scalar_t n = std::tanh(x[2 * H + j] + (bias[2 * H + j] + un[j]));
    a[2 * H + j] = n;
    h[j] = (scalar_t(1) - z) * n + z * hp[j];
  }
}

// First backward pass: from r, z, n writes δ_z, δ_n over z, n (r stays for the second pass) and the direct
// term z ⊙ ∂L/∂h_t into dh_prev.
template <typename scalar_t>
inline void backward_row_before_1(int64_t H, scalar_t* __restrict__ a, const scalar_t* __restrict__ hp,
                                  const scalar_t* __restrict__ dh, const scalar_t* __restrict__ go,
                                  scalar_t* __restrict__ dh_prev) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t z = a[H + j], n = a[2 * H + j];
    const scalar_t dht = go ? dh[j] + go[j] : dh[j];
    a[H + j] = dht * (hp[j] - n) * z * (scalar_t(1) - z);
    a[2 * H + j] = dht * (scalar_t(1) - z) * (scalar_t(1) - n * n);
    dh_prev[j] = dht * z;
  }
}

// Second backward pass: `drh` (H) holds ∂L/∂(r ⊙ h_{t-1}) = δ_n U_n; writes δ_r over r, adds r ⊙ drh to
// dh_prev, accumulates the row's bias gradient (δ_r, δ_z, δ_n) in db.
template <typename scalar_t>
inline void backward_row_before_2(int64_t H, scalar_t* __restrict__ a, const scalar_t* __restrict__ drh,
                                  const scalar_t* __restrict__ hp, scalar_t* __restrict__ dh_prev,
                                  scalar_t* __restrict__ db) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t r = a[j];
    const scalar_t d_r = drh[j] * hp[j] * r * (scalar_t(1) - r);
    a[j] = d_r;
    dh_prev[j] += drh[j] * r;
    db[j] += d_r;
    db[H + j] += a[H + j];
    db[2 * H + j] += a[2 * H + j];
  }
}

// x is x_proj (T, B, 3H), or with weight_ih (3H, I) and bias_ih the layer's input (T, B, I).
void check_inputs(const Tensor& x, const std::optional<Tensor>& weight_ih, const std::optional<Tensor>& bias_ih,
                  const Tensor& h0, const Tensor& weight_hh, const Tensor& bias_hh,
                  const std::optional<Tensor>& lengths) {
  TORCH_CHECK(weight_ih.has_value() == bias_ih.has_value(), "weight_ih and bias_ih: both or neither");
  TORCH_CHECK(weight_hh.dim() == 2 && weight_hh.size(0) == 3 * weight_hh.size(1), "weight_hh must be (3H, H)");
  const int64_t H = weight_hh.size(1);
  if (weight_ih) {
    TORCH_CHECK(x.dim() == 3, "x must be (T, B, I)");
    TORCH_CHECK(weight_ih->dim() == 2 && weight_ih->size(0) == 3 * H && weight_ih->size(1) == x.size(2),
                "weight_ih must be (3H, I)");
    TORCH_CHECK(bias_ih->numel() == 3 * H, "bias_ih must be (3H,)");
  } else {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == 3 * H, "x_proj must be (T, B, 3H)");
  }
  const int64_t B = x.size(1);
  TORCH_CHECK(h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H, "h0 must be (B, H)");
  TORCH_CHECK(bias_hh.numel() == 3 * H, "bias_hh must be (3H,)");
  std::vector<const Tensor*> all = {&x, &h0, &weight_hh, &bias_hh};
  if (weight_ih) {
    all.push_back(&*weight_ih);
    all.push_back(&*bias_ih);
  }
  check_cpu_one_dtype("GRU", all, lengths, B);
}

// The largest per-thread ∂L/∂W_ih partial sum (3H x I) accumulated per step, as in peephole.cpp: 256 KiB.
constexpr int64_t kPerStepWeightGradBytes = 256 * 1024;

}  // namespace

// Returns {outputs (T,B,H), h_T (B,H), gates (T,B,3H) activated r,z,n, aux (T,B,H)}: aux is U_n h + b_hn
// (reset_after) or r ⊙ h_{t-1} (Cho), zero at padded steps. `x` is x_proj (T,B,3H), or given weight_ih and
// bias_ih the layer's input (T,B,I), projected per step. With overwrite_x_proj (the caller's own x_proj, read
// by nobody else) `gates` is x_proj itself, overwritten: one (T, B, 3H) buffer, and its page faults, fewer.
std::vector<Tensor> forward(Tensor x, std::optional<Tensor> weight_ih, std::optional<Tensor> bias_ih, Tensor h0,
                            Tensor weight_hh, Tensor bias_hh, std::optional<Tensor> lengths, bool reset_after,
                            bool overwrite_x_proj) {
  check_inputs(x, weight_ih, bias_ih, h0, weight_hh, bias_hh, lengths);
  const bool projected = !weight_ih;  // x is x_proj
  TORCH_CHECK(projected || !overwrite_x_proj, "overwrite_x_proj: only x_proj can be overwritten");
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  x = x.contiguous(); h0 = h0.contiguous(); bias_hh = bias_hh.contiguous();
  const int64_t T = x.size(0), B = x.size(1), H = weight_hh.size(1);
  const Tensor w_ih_t = projected ? Tensor() : weight_ih->t();  // (I, 3H), a view: BLAS reads W^T, as F.linear
  const Tensor lens = contiguous_or_undefined(lengths);
  const int64_t* len_ptr = lengths_ptr(lens);

  Tensor gates = overwrite_x_proj ? x : at::empty({T, B, 3 * H}, x.options());
  Tensor aux = at::empty({T, B, H}, x.options());
  Tensor outputs = at::empty({T, B, H}, x.options());
  Tensor h_state = len_ptr ? h0.clone() : Tensor();  // with lengths: frozen past each end, outputs zeroed
  const Tensor w_t = weight_hh.t().contiguous();     // (H, 3H); Cho: its first 2H columns, then the last H
  const Tensor w_rz_t = reset_after ? Tensor() : w_t.narrow(1, 0, 2 * H).contiguous();
  const Tensor w_n_t = reset_after ? Tensor() : w_t.narrow(1, 2 * H, H).contiguous();

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gru_forward", [&] {
    scalar_t* gates_p = gates.data_ptr<scalar_t>();
    scalar_t* aux_p = aux.data_ptr<scalar_t>();
    scalar_t* out_p = outputs.data_ptr<scalar_t>();
    const scalar_t* x_p = x.data_ptr<scalar_t>();
    const scalar_t* h0_p = h0.data_ptr<scalar_t>();
    const scalar_t* bias_p = bias_hh.data_ptr<scalar_t>();
    scalar_t* h_state_p = len_ptr ? h_state.data_ptr<scalar_t>() : nullptr;
    for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      const int64_t nb = b1 - b0;
      // this block's GEMM outputs, one buffer each for all steps: they stay in cache
      Tensor uh = reset_after ? at::empty({nb, 3 * H}, x.options()) : Tensor();
      Tensor rz = reset_after ? Tensor() : at::empty({nb, 2 * H}, x.options());
      Tensor un = reset_after ? Tensor() : at::empty({nb, H}, x.options());
      Tensor xw = projected ? Tensor() : at::empty({nb, 3 * H}, x.options());  // x_t W_ih^T + b_ih
      for (int64_t t = 0; t < T; ++t) {
        // x_proj_t of row b at x_rows + (b - b0) * 3H
        if (!projected) at::addmm_out(xw, *bias_ih, x[t].narrow(0, b0, nb), w_ih_t);
        const scalar_t* x_rows = projected ? x_p + (t * B + b0) * 3 * H : xw.data_ptr<scalar_t>();
        const Tensor& h_prev = len_ptr ? h_state : (t == 0 ? h0 : outputs[t - 1]);
        const scalar_t* hp_p = len_ptr ? h_state_p : (t == 0 ? h0_p : out_p + (t - 1) * B * H);
        const Tensor h_rows = h_prev.narrow(0, b0, nb);
        if (reset_after) {
          at::mm_out(uh, h_rows, w_t);                            // U h_{t-1} on these rows
        } else {
          at::mm_out(rz, h_rows, w_rz_t);                         // U_{r,z} h_{t-1}
        }
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * B + b;
          scalar_t* h = out_p + row * H;
          if (!valid(len_ptr, b, t)) {  // finished: output zero, aux zero (read by the weight-gradient GEMM)
            std::fill(h, h + H, scalar_t(0));
            std::fill(aux_p + row * H, aux_p + (row + 1) * H, scalar_t(0));
            continue;
          }
          if (reset_after) {
            forward_row_after<scalar_t>(H, uh.data_ptr<scalar_t>() + (b - b0) * 3 * H, x_rows + (b - b0) * 3 * H,
                                        bias_p, hp_p + b * H, aux_p + row * H, h, gates_p + row * 3 * H);
          } else {
            forward_row_before_1<scalar_t>(H, gates_p + row * 3 * H, rz.data_ptr<scalar_t>() + (b - b0) * 2 * H,
                                           x_rows + (b - b0) * 3 * H, bias_p, hp_p + b * H, aux_p + row * H);
          }
        }
        if (!reset_after) {
          at::mm_out(un, aux[t].narrow(0, b0, nb), w_n_t);         // U_n (r ⊙ h_{t-1})
          for (int64_t b = b0; b < b1; ++b) {
            const int64_t row = t * B + b;
            if (!valid(len_ptr, b, t)) continue;
            forward_row_before_2<scalar_t>(H, gates_p + row * 3 * H, un.data_ptr<scalar_t>() + (b - b0) * H,
                                           x_rows + (b - b0) * 3 * H, bias_p, hp_p + b * H, out_p + row * H);
          }
        }
        if (h_state_p) {
          for (int64_t b = b0; b < b1; ++b)
            if (valid(len_ptr, b, t)) std::copy(out_p + (t * B + b) * H, out_p + (t * B + b + 1) * H, h_state_p + b * H);
        }
      }
    });
  });
  Tensor h_T = T == 0 ? h0.clone() : (len_ptr ? h_state : outputs[T - 1].clone());
  return {outputs, h_T, gates, aux};
}

// Returns {grad x_proj (T,B,3H), grad h0, grad weight_hh (undefined unless requested), grad bias_hh,
// grad weight_ih, grad bias_ih (both undefined without x)}. Overwrites `gates` and `aux` (grad x_proj is
// written over `gates`), so it runs once per forward. Given the layer's input x, ∂L/∂W_ih = Σ_t ∂L/∂x_proj_t^T x_t
// (per step while its per-thread sum is at most kPerStepWeightGradBytes, else one GEMM after the loop) and
// ∂L/∂b_ih = Σ ∂L/∂x_proj.
std::vector<Tensor> backward(std::optional<Tensor> grad_outputs, std::optional<Tensor> grad_h_T, Tensor gates,
                             Tensor aux, Tensor outputs, std::optional<Tensor> x_opt, Tensor h0, Tensor weight_hh,
                             std::optional<Tensor> lengths, bool reset_after, bool need_weight_grad) {
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  const int64_t T = gates.size(0), B = gates.size(1), H = gates.size(2) / 3;
  const Tensor lens = contiguous_or_undefined(lengths);
  const int64_t* len_ptr = lengths_ptr(lens);
  const Tensor grad_out = contiguous_or_undefined(grad_outputs);
  weight_hh = weight_hh.contiguous();
  h0 = h0.contiguous();
  const Tensor w_rz = weight_hh.narrow(0, 0, 2 * H);  // (2H, H), contiguous rows
  const Tensor w_n = weight_hh.narrow(0, 2 * H, H);   // (H, H)

  Tensor dbias = at::zeros({B, 3 * H}, gates.options());
  const std::vector<Tensor> dh_buf = dh_buffers(grad_h_T, B, H, gates.options());
  const Tensor x = contiguous_or_undefined(x_opt);
  const int64_t I = x.defined() ? x.size(2) : 0;
  const bool weight_ih_grad_per_step = 3 * H * I * gates.element_size() <= kPerStepWeightGradBytes;
  std::map<int64_t, Tensor> grad_weight_ih_blocks;  // by block start: added up in the order of the blocks
  std::mutex blocks_mutex;

  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "gru_backward", [&] {
    scalar_t* gates_p = gates.data_ptr<scalar_t>();
    scalar_t* aux_p = aux.data_ptr<scalar_t>();
    const scalar_t* out_p = outputs.data_ptr<scalar_t>();
    const scalar_t* h0_p = h0.data_ptr<scalar_t>();
    const scalar_t* grad_out_p = grad_out.defined() ? grad_out.data_ptr<scalar_t>() : nullptr;
    scalar_t* dbias_p = dbias.data_ptr<scalar_t>();
    for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      const int64_t nb = b1 - b0;
      Tensor drh = reset_after ? Tensor() : at::empty({nb, H}, gates.options());
      Tensor grad_weight_ih = x.defined() && weight_ih_grad_per_step ? at::zeros({3 * H, I}, gates.options()) : Tensor();
      for (int64_t t = T - 1; t >= 0; --t) {
        scalar_t* dh_p = dh_buf[(T - 1 - t) % 2].data_ptr<scalar_t>();
        const Tensor& dh_prev = dh_buf[(T - t) % 2];
        scalar_t* dh_prev_p = dh_prev.data_ptr<scalar_t>();
        // h_{t-1} of a valid step: outputs[t-1] (valid too, so not zeroed) or h0
        const scalar_t* hp_p = t == 0 ? h0_p : out_p + (t - 1) * B * H;
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * B + b;
          scalar_t* a = gates_p + row * 3 * H;
          if (!valid(len_ptr, b, t)) {  // carried state: δh passes through, no gate gradient
            std::fill(a, a + 3 * H, scalar_t(0));
            std::fill(aux_p + row * H, aux_p + (row + 1) * H, scalar_t(0));
            std::copy(dh_p + b * H, dh_p + (b + 1) * H, dh_prev_p + b * H);
            continue;
          }
          const scalar_t* go = grad_out_p ? grad_out_p + row * H : nullptr;
          if (reset_after) {
            backward_row_after<scalar_t>(H, a, aux_p + row * H, hp_p + b * H, dh_p + b * H, go,
                                         dh_prev_p + b * H, dbias_p + b * 3 * H);
          } else {
            backward_row_before_1<scalar_t>(H, a, hp_p + b * H, dh_p + b * H, go, dh_prev_p + b * H);
          }
        }
        Tensor gates_rows = gates[t].narrow(0, b0, nb);
        Tensor dh_prev_rows = dh_prev.narrow(0, b0, nb);
        if (reset_after) {
          dh_prev_rows.addmm_(gates_rows, weight_hh);                      // += δ U (zero rows: += 0)
        } else {
          at::mm_out(drh, gates_rows.narrow(1, 2 * H, H), w_n);            // ∂L/∂(r ⊙ h) = δ_n U_n
          for (int64_t b = b0; b < b1; ++b) {
            const int64_t row = t * B + b;
            if (!valid(len_ptr, b, t)) continue;
            backward_row_before_2<scalar_t>(H, gates_p + row * 3 * H, drh.data_ptr<scalar_t>() + (b - b0) * H,
                                            hp_p + b * H, dh_prev_p + b * H, dbias_p + b * 3 * H);
          }
          dh_prev_rows.addmm_(gates_rows.narrow(1, 0, 2 * H), w_rz);      // += δ_{r,z} U_{r,z}
        }
        if (grad_weight_ih.defined()) {  // ∂L/∂x_proj_t = (δ_r, δ_z, δ_n): δ_n is in aux for reset_after
          const Tensor x_rows = x[t].narrow(0, b0, nb);
          if (reset_after) {
            grad_weight_ih.narrow(0, 0, 2 * H).addmm_(gates_rows.narrow(1, 0, 2 * H).t(), x_rows);
            grad_weight_ih.narrow(0, 2 * H, H).addmm_(aux[t].narrow(0, b0, nb).t(), x_rows);
          } else {
            grad_weight_ih.addmm_(gates_rows.t(), x_rows);
          }
        }
      }
      if (grad_weight_ih.defined()) {
        const std::lock_guard<std::mutex> lock(blocks_mutex);
        grad_weight_ih_blocks.emplace(b0, grad_weight_ih);
      }
    });
  });
  const Tensor& dh = dh_buf[T % 2];

  // Σ_t δ_t^T h_{t-1}: h_{t-1} is outputs[t-1] for t >= 1 (exact wherever δ_t != 0) and h0 for t = 0.
  Tensor grad_weight;
  if (need_weight_grad && reset_after) {
    grad_weight = recurrent_weight_grad(gates, outputs, h0);
  } else if (need_weight_grad) {  // Cho: U_{r,z} reads h_{t-1}, U_n reads r ⊙ h_{t-1} (aux)
    grad_weight = at::zeros({3 * H, H}, gates.options());
    const Tensor delta = gates.view({T * B, 3 * H});
    const Tensor h_prev_rows = outputs.view({T * B, H}).narrow(0, 0, std::max<int64_t>(T - 1, 0) * B);
    Tensor g_rz = grad_weight.narrow(0, 0, 2 * H), g_n = grad_weight.narrow(0, 2 * H, H);
    if (T > 1) g_rz.addmm_(delta.narrow(0, B, (T - 1) * B).narrow(1, 0, 2 * H).t(), h_prev_rows);
    if (T > 0) g_rz.addmm_(gates[0].narrow(1, 0, 2 * H).t(), h0);
    g_n.addmm_(delta.narrow(1, 2 * H, H).t(), aux.view({T * B, H}));
  }
  const Tensor grad_bias = dbias.sum(0);
  Tensor grad_weight_ih, grad_bias_ih;
  if (x.defined()) {  // ∂L/∂b_ih: that of b_hh, but Σ δ_n (not Σ r ⊙ δ_n) for b_in in reset_after
    grad_bias_ih = reset_after ? at::cat({grad_bias.narrow(0, 0, 2 * H), aux.view({T * B, H}).sum(0)}) : grad_bias.clone();
  }
  if (reset_after) {  // grad x_proj: δ_r, δ_z as for U h, but δ_n itself (not r ⊙ δ_n) for x_n
    gates.narrow(2, 2 * H, H).copy_(aux);
  }
  if (x.defined() && weight_ih_grad_per_step) {
    grad_weight_ih = at::zeros({3 * H, I}, gates.options());
    for (const auto& block : grad_weight_ih_blocks) grad_weight_ih.add_(block.second);
  } else if (x.defined()) {
    grad_weight_ih = at::mm(gates.view({T * B, 3 * H}).t(), x.view({T * B, I}));
  }
  return {gates, dh, grad_weight, grad_bias, grad_weight_ih, grad_bias_ih};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "GRU sequence forward", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "GRU sequence backward", py::call_guard<py::gil_scoped_release>());
}
