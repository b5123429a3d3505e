// Sequence-level peephole LSTM on CPU: the time loop of cells.PeepholeLSTMCell.step in C++, forward and
// hand-written backward. The equations, the buffer layout and the meaning of every argument are
// documented once, in rnnbench/fast_peephole.py; this file follows them line by line.
//
// Batch row b never meets row b' inside the time loops (each sequence has its own recurrence; only the
// weight gradient sums over rows), so each thread takes one block of rows and runs all T steps on it:
// per step one single-threaded GEMM on its rows (ATen, into a preallocated slice) and one fused
// element-wise pass, with no synchronisation between steps. The recurrent weight gradient is one
// (multi-threaded) GEMM after the backward loop. Measured on the 2-core machine with another 2-thread job
// running: this layout stayed within ~2x of its quiet time, where a per-step parallel GEMM + parallel
// element-wise pass (two barriers per step), like nn.LSTM's, slowed down 20-40x.

#include "common.h"

#include <torch/extension.h>

namespace {

using namespace rnnbench;

// Forward element-wise pass of step t for one batch row. On entry `a` (4H) holds U h_{t-1}; on exit the
// activated gates i, f, g, o.
template <typename scalar_t>
inline void forward_row(int64_t H, scalar_t* __restrict__ a, const scalar_t* __restrict__ x,
                        const scalar_t* __restrict__ bias, const scalar_t* __restrict__ peephole,
                        const scalar_t* __restrict__ cp, scalar_t* __restrict__ c, scalar_t* __restrict__ h) {
  const scalar_t* __restrict__ p_i = peephole;
  const scalar_t* __restrict__ p_f = peephole + H;
  const scalar_t* __restrict__ p_o = peephole + 2 * H;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t i = sigmoid(a[j] + x[j] + bias[j] + p_i[j] * cp[j]);
    const scalar_t f = sigmoid(a[H + j] + x[H + j] + bias[H + j] + p_f[j] * cp[j]);
    const scalar_t g = std::tanh(a[2 * H + j] + x[2 * H + j] + bias[2 * H + j]);
    const scalar_t cj = f * cp[j] + i * g;
    const scalar_t o = sigmoid(a[3 * H + j] + x[3 * H + j] + bias[3 * H + j] + p_o[j] * cj);
    a[j] = i;
    a[H + j] = f;
    a[2 * H + j] = g;
    a[3 * H + j] = o;
    c[j] = cj;
    h[j] = o * std::tanh(cj);
  }
}

// Backward element-wise pass of step t for one batch row. `dh` is ∂L/∂h_t from later steps (and the
// final state), `go` the gradient of output t (may be null), `dc` ∂L/∂c_t on entry and ∂L/∂c_{t-1} on
// exit. Overwrites the saved activated gates `a` (4H) with the pre-activation gradients δa (each element
// is read before it is written), writes the probe gradient (may be null), and accumulates the bias and
// peephole gradients of this row into db (4H) and dp (3H): no extra pass over the sequence.
template <typename scalar_t>
inline void backward_row(int64_t H, scalar_t* a, const scalar_t* __restrict__ cp,
                         const scalar_t* __restrict__ c, const scalar_t* __restrict__ peephole,
                         const scalar_t* __restrict__ dh, const scalar_t* __restrict__ go,
                         scalar_t* __restrict__ dc, scalar_t* __restrict__ dprobe,
                         scalar_t* __restrict__ db, scalar_t* __restrict__ dp) {
  const scalar_t* __restrict__ p_i = peephole;
  const scalar_t* __restrict__ p_f = peephole + H;
  const scalar_t* __restrict__ p_o = peephole + 2 * H;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    const scalar_t i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
    const scalar_t tc = std::tanh(c[j]);
    const scalar_t dht = go ? dh[j] + go[j] : dh[j];
    if (dprobe) dprobe[j] = dht;
    const scalar_t da_o = dht * tc * o * (scalar_t(1) - o);
    const scalar_t dct = dc[j] + dht * o * (scalar_t(1) - tc * tc) + da_o * p_o[j];
    const scalar_t da_i = dct * g * i * (scalar_t(1) - i);
    const scalar_t da_f = dct * cp[j] * f * (scalar_t(1) - f);
    const scalar_t da_g = dct * i * (scalar_t(1) - g * g);
    a[j] = da_i;
    a[H + j] = da_f;
    a[2 * H + j] = da_g;
    a[3 * H + j] = da_o;
    dc[j] = dct * f + da_i * p_i[j] + da_f * p_f[j];
    db[j] += da_i;
    db[H + j] += da_f;
    db[2 * H + j] += da_g;
    db[3 * H + j] += da_o;
    dp[j] += da_i * cp[j];
    dp[H + j] += da_f * cp[j];
    dp[2 * H + j] += da_o * c[j];
  }
}

void check_inputs(const Tensor& x_proj, const Tensor& h0, const Tensor& c0, const Tensor& weight_hh,
                  const Tensor& bias_hh, const Tensor& peephole, const std::optional<Tensor>& lengths) {
  TORCH_CHECK(x_proj.dim() == 3 && x_proj.size(2) % 4 == 0, "x_proj must be (T, B, 4H)");
  const int64_t B = x_proj.size(1), H = x_proj.size(2) / 4;
  TORCH_CHECK(h0.sizes() == c0.sizes() && h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H,
              "h0 and c0 must be (B, H)");
  TORCH_CHECK(weight_hh.dim() == 2 && weight_hh.size(0) == 4 * H && weight_hh.size(1) == H, "weight_hh must be (4H, H)");
  TORCH_CHECK(bias_hh.numel() == 4 * H, "bias_hh must be (4H,)");
  TORCH_CHECK(peephole.dim() == 2 && peephole.size(0) == 3 && peephole.size(1) == H, "peephole must be (3, H)");
  for (const Tensor* t : {&x_proj, &h0, &c0, &weight_hh, &bias_hh, &peephole}) {
    TORCH_CHECK(t->device().is_cpu(), "peephole extension: CPU tensors only");
    TORCH_CHECK(t->scalar_type() == x_proj.scalar_type(), "peephole extension: all tensors must share one dtype");
  }
  if (lengths) {
    TORCH_CHECK(lengths->device().is_cpu() && lengths->scalar_type() == at::kLong && lengths->numel() == B,
                "lengths must be a (B,) int64 CPU tensor");
  }
}

}  // namespace

// Returns {outputs (T,B,H), h_T (B,H), c_T (B,H), gates (T,B,4H) activated i,f,g,o, c (T,B,H)}.
std::vector<Tensor> forward(Tensor x_proj, Tensor h0, Tensor c0, Tensor weight_hh, Tensor bias_hh,
                            Tensor peephole, std::optional<Tensor> lengths, std::optional<Tensor> h_probe) {
  check_inputs(x_proj, h0, c0, weight_hh, bias_hh, peephole, lengths);
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  x_proj = x_proj.contiguous(); h0 = h0.contiguous(); c0 = c0.contiguous();
  bias_hh = bias_hh.contiguous(); peephole = peephole.contiguous();
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = x_proj.size(2) / 4;
  const Tensor lens = lengths ? lengths->contiguous() : Tensor();
  const Tensor probe = h_probe ? h_probe->contiguous() : Tensor();
  const int64_t* len_ptr = lens.defined() ? lens.data_ptr<int64_t>() : nullptr;

  Tensor gates = at::empty({T, B, 4 * H}, x_proj.options());
  Tensor cs = at::empty({T, B, H}, x_proj.options());
  Tensor outputs = at::empty({T, B, H}, x_proj.options());
  // With lengths the recurrent state (frozen past each end) differs from the (zeroed) outputs.
  Tensor h_state = len_ptr ? h0.clone() : Tensor();
  const Tensor w_t = weight_hh.t().contiguous();  // (H, 4H): the per-step GEMMs run ~10-20% faster untransposed

  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "peephole_forward", [&] {
    scalar_t* gates_p = gates.data_ptr<scalar_t>();
    scalar_t* cs_p = cs.data_ptr<scalar_t>();
    scalar_t* out_p = outputs.data_ptr<scalar_t>();
    const scalar_t* x_p = x_proj.data_ptr<scalar_t>();
    const scalar_t* c0_p = c0.data_ptr<scalar_t>();
    const scalar_t* bias_p = bias_hh.data_ptr<scalar_t>();
    const scalar_t* peep_p = peephole.data_ptr<scalar_t>();
    const scalar_t* probe_p = probe.defined() ? probe.data_ptr<scalar_t>() : nullptr;
    scalar_t* h_state_p = len_ptr ? h_state.data_ptr<scalar_t>() : nullptr;
    const CallerState caller;
    at::parallel_for(0, B, row_grain(H), [&](int64_t b0, int64_t b1) {
      const AsCaller as_caller(caller);
      for (int64_t t = 0; t < T; ++t) {
        const Tensor& h_prev = len_ptr ? h_state : (t == 0 ? h0 : outputs[t - 1]);
        Tensor gates_t = gates[t].narrow(0, b0, b1 - b0);
        at::mm_out(gates_t, h_prev.narrow(0, b0, b1 - b0), w_t);  // U h_{t-1} on these rows
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * B + b;  // (t, b) in a (T, B, ·) buffer
          const scalar_t* c_prev = t == 0 ? c0_p + b * H : cs_p + (row - B) * H;
          scalar_t* h = out_p + row * H;
          if (!valid(len_ptr, b, t)) {  // finished: carry c, output zero
            std::copy(c_prev, c_prev + H, cs_p + row * H);
            std::fill(h, h + H, scalar_t(0));
            continue;
          }
          forward_row<scalar_t>(H, gates_p + row * 4 * H, x_p + row * 4 * H, bias_p, peep_p, c_prev,
                                cs_p + row * H, h);
          if (probe_p) {
            for (int64_t j = 0; j < H; ++j) h[j] += probe_p[row * H + j];
          }
          if (h_state_p) std::copy(h, h + H, h_state_p + b * H);
        }
      }
    });
  });
  Tensor h_T = T == 0 ? h0.clone() : (len_ptr ? h_state : outputs[T - 1].clone());
  Tensor c_T = T == 0 ? c0.clone() : cs[T - 1].clone();
  return {outputs, h_T, c_T, gates, cs};
}

// Returns {grad x_proj (T,B,4H), grad h0, grad c0, grad weight_hh, grad bias_hh, grad peephole, grad h_probe}.
// grad x_proj is δa itself, written over `gates` (so this runs once per forward); grad weight_hh is
// undefined unless requested, grad h_probe unless has_probe.
std::vector<Tensor> backward(std::optional<Tensor> grad_outputs, std::optional<Tensor> grad_h_T,
                             std::optional<Tensor> grad_c_T, Tensor gates, Tensor cs, Tensor outputs,
                             Tensor h0, Tensor c0, Tensor weight_hh, Tensor peephole,
                             std::optional<Tensor> lengths, bool has_probe, bool need_weight_grad) {
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  const int64_t T = gates.size(0), B = gates.size(1), H = gates.size(2) / 4;
  const Tensor lens = lengths ? lengths->contiguous() : Tensor();
  const int64_t* len_ptr = lens.defined() ? lens.data_ptr<int64_t>() : nullptr;
  const Tensor grad_out = grad_outputs ? grad_outputs->contiguous() : Tensor();
  weight_hh = weight_hh.contiguous();
  peephole = peephole.contiguous();
  h0 = h0.contiguous();
  c0 = c0.contiguous();

  Tensor dprobe = has_probe ? at::empty({T, B, H}, gates.options()) : Tensor();
  Tensor dbias = at::zeros({B, 4 * H}, gates.options());
  Tensor dpeep = at::zeros({B, 3, H}, gates.options());
  // δh ping-pongs between two buffers, one swap per step: after T steps it is in dh_buf[T % 2].
  Tensor dh_buf[2] = {grad_h_T ? grad_h_T->contiguous().clone() : at::zeros({B, H}, gates.options()),
                      at::empty({B, H}, gates.options())};
  Tensor dc = grad_c_T ? grad_c_T->contiguous().clone() : at::zeros({B, H}, gates.options());

  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "peephole_backward", [&] {
    scalar_t* gates_p = gates.data_ptr<scalar_t>();
    const scalar_t* cs_p = cs.data_ptr<scalar_t>();
    const scalar_t* c0_p = c0.data_ptr<scalar_t>();
    const scalar_t* peep_p = peephole.data_ptr<scalar_t>();
    const scalar_t* grad_out_p = grad_out.defined() ? grad_out.data_ptr<scalar_t>() : nullptr;
    scalar_t* dprobe_p = has_probe ? dprobe.data_ptr<scalar_t>() : nullptr;
    scalar_t* dc_p = dc.data_ptr<scalar_t>();
    scalar_t* dbias_p = dbias.data_ptr<scalar_t>();
    scalar_t* dpeep_p = dpeep.data_ptr<scalar_t>();
    const CallerState caller;
    at::parallel_for(0, B, row_grain(H), [&](int64_t b0, int64_t b1) {
      const AsCaller as_caller(caller);
      for (int64_t t = T - 1; t >= 0; --t) {
        const Tensor& dh = dh_buf[(T - 1 - t) % 2];
        const Tensor& dh_prev = dh_buf[(T - t) % 2];
        scalar_t* dh_p = dh.data_ptr<scalar_t>();
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * B + b;
          scalar_t* a = gates_p + row * 4 * H;
          if (!valid(len_ptr, b, t)) {  // carried state: δc and δh pass through untouched
            std::fill(a, a + 4 * H, scalar_t(0));
            if (dprobe_p) std::fill(dprobe_p + row * H, dprobe_p + (row + 1) * H, scalar_t(0));
            continue;
          }
          backward_row<scalar_t>(H, a, t == 0 ? c0_p + b * H : cs_p + (row - B) * H, cs_p + row * H, peep_p,
                                 dh_p + b * H, grad_out_p ? grad_out_p + row * H : nullptr, dc_p + b * H,
                                 dprobe_p ? dprobe_p + row * H : nullptr, dbias_p + b * 4 * H,
                                 dpeep_p + b * 3 * H);
        }
        Tensor dh_prev_rows = dh_prev.narrow(0, b0, b1 - b0);
        at::mm_out(dh_prev_rows, gates[t].narrow(0, b0, b1 - b0), weight_hh);  // δh_{t-1} = δa_t U
        if (len_ptr) {  // finished rows carry δh unchanged to the previous step
          scalar_t* dst = dh_prev.data_ptr<scalar_t>();
          for (int64_t b = b0; b < b1; ++b)
            if (!valid(len_ptr, b, t)) std::copy(dh_p + b * H, dh_p + (b + 1) * H, dst + b * H);
        }
      }
    });
  });
  const Tensor& dh = dh_buf[T % 2];

  Tensor grad_weight;
  if (need_weight_grad) {
    // Σ_t δa_t^T h_{t-1} in one GEMM: h_{t-1} is outputs[t-1] for t >= 1 (exact wherever δa_t != 0)
    // and h0 for t = 0.
    grad_weight = at::zeros({4 * H, H}, gates.options());
    if (T > 1) {
      at::mm_out(grad_weight, gates.view({T * B, 4 * H}).narrow(0, B, (T - 1) * B).t(),
                 outputs.view({T * B, H}).narrow(0, 0, (T - 1) * B));
    }
    if (T > 0) grad_weight.addmm_(gates[0].t(), h0);
  }
  return {gates, dh, dc, grad_weight, dbias.sum(0), dpeep.sum(0), dprobe};
}

// Sets (on) or clears flush-to-zero and denormals-are-zero on the calling thread and on every thread of the
// OpenMP pool that at::parallel_for, torch's GEMMs and element-wise ops run on (every thread of a team runs
// the body of `omp parallel`; threads made later copy the caller's setting). Returns whether the bits exist.
bool set_flush_denormal(bool on) {
  const unsigned bits = on ? kFlushBits : 0;
  set_flush_bits(bits);
#pragma omp parallel num_threads(std::max(at::get_num_threads(), omp_get_num_procs()))
  set_flush_bits(bits);
  return kFlushBits != 0;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_flush_denormal", &set_flush_denormal, "flush-to-zero on the calling thread and the OpenMP pool");
  m.def("forward", &forward, "peephole LSTM sequence forward", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "peephole LSTM sequence backward", py::call_guard<py::gil_scoped_release>());
}
