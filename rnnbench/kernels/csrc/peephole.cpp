// Sequence-level LSTM family on CPU: the time loop of cells.PeepholeLSTMCell.step in C++, forward and
// hand-written backward, for every variant of Greff et al. 2016 except fgr. The equations, the buffer layout
// and the meaning of every argument are documented once, in rnnbench/kernels/fast_peephole.py; this file follows
// them line by line.
//
// A variant is a set of compile-time switches (`Variant`, the flags of cells.LSTMVariant): each covered
// variant is one instantiation of the row passes and loops, chosen once per call (`dispatch_variant`), so a
// removed gate costs nothing and the vanilla instantiation is, expression for expression, the kernel this
// file held before the variants (bit-identical results; tests/test_fast_lstm.py). fgr stays on the explicit
// path: its gates read the previous step's gate activations through R (3H x 3H), a second recurrent GEMM per
// step on a third state tensor, which neither fits this loop's one-GEMM-per-step layout nor its state.
//
// Each thread takes one block of batch rows and runs all T steps on it (common.h, `for_row_blocks`):
// per step one single-threaded GEMM on its rows (ATen, into a preallocated slice) and one fused
// element-wise pass, with no synchronisation between steps. The recurrent weight gradient is one
// (multi-threaded) GEMM after the backward loop. Measured on the 2-core machine with another 2-thread job
// running: this layout stayed within ~2x of its quiet time, where a per-step parallel GEMM + parallel
// element-wise pass (two barriers per step), like nn.LSTM's, slowed down 20-40x.

#include "common.h"

#include <torch/extension.h>

namespace {

using namespace rnnbench;

// The switches of cells.LSTMVariant (full_gate_recurrence excepted), and the layout they imply: the gate
// row blocks present, in the order i, f, g, o (G of them, each H wide), and the peepholes, one per σ gate
// present, in the order i, f, o (P of them).
template <bool IG, bool FG, bool OG, bool IA, bool OA, bool PEEP, bool CPL>
struct Variant {
  static constexpr bool input_gate = IG, forget_gate = FG, output_gate = OG, input_activation = IA,
                        output_activation = OA, peepholes = PEEP, coupled = CPL;
  static constexpr int G = IG + FG + 1 + OG;
  static constexpr int ki = 0, kf = IG, kg = IG + FG, ko = IG + FG + 1;  // gate row blocks
  static constexpr int P = PEEP ? IG + FG + OG : 0;
  static constexpr int pi = 0, pf = IG, po = IG + FG;                    // peephole rows
  // the bits fast_peephole.variant_bits() passes, in LSTMVariant's field order
  static constexpr int64_t bits = IG | FG << 1 | OG << 2 | IA << 3 | OA << 4 | PEEP << 5 | CPL << 6;
};

//                           IG     FG     OG     IA     OA     PEEP   CPL
using Vanilla = Variant<true,  true,  true,  true,  true,  true,  false>;
using NIG     = Variant<false, true,  true,  true,  true,  true,  false>;
using NFG     = Variant<true,  false, true,  true,  true,  true,  false>;
using NOG     = Variant<true,  true,  false, true,  true,  true,  false>;
using NIAF    = Variant<true,  true,  true,  false, true,  true,  false>;
using NOAF    = Variant<true,  true,  true,  true,  false, true,  false>;
using NP      = Variant<true,  true,  true,  true,  true,  false, false>;
using CIFG    = Variant<true,  false, true,  true,  true,  true,  true>;

// Calls f(V{}) for the instantiation whose switches are `bits`.
template <class F>
std::vector<Tensor> dispatch_variant(int64_t bits, F&& f) {
  switch (bits) {
    case Vanilla::bits: return f(Vanilla{});
    case NIG::bits: return f(NIG{});
    case NFG::bits: return f(NFG{});
    case NOG::bits: return f(NOG{});
    case NIAF::bits: return f(NIAF{});
    case NOAF::bits: return f(NOAF{});
    case NP::bits: return f(NP{});
    case CIFG::bits: return f(CIFG{});
  }
  TORCH_CHECK(false, "LSTM kernel: no instantiation for variant bits ", bits,
              " (covered: vanilla, nig, nfg, nog, niaf, noaf, np, cifg)");
  return {};
}

// Forward element-wise pass of step t for one batch row: `a` (G·H) holds U h_{t-1}, `x` the row of x_proj;
// writes the activated gates present (i, f, g, o) to `gates`, which may be `x` itself (each element is read
// before it is written).
template <class V, typename scalar_t>
inline void forward_row(int64_t H, const scalar_t* __restrict__ a, const scalar_t* x,
                        const scalar_t* __restrict__ bias, const scalar_t* __restrict__ peephole,
                        const scalar_t* __restrict__ cp, scalar_t* __restrict__ c, scalar_t* __restrict__ h,
                        scalar_t* gates) {
  const int64_t ki = V::ki * H, kf = V::kf * H, kg = V::kg * H, ko = V::ko * H;
  const scalar_t* __restrict__ p_i = V::peepholes ? peephole + V::pi * H : nullptr;
  const scalar_t* __restrict__ p_f = V::peepholes ? peephole + V::pf * H : nullptr;
  const scalar_t* __restrict__ p_o = V::peepholes ? peephole + V::po * H : nullptr;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    scalar_t i = scalar_t(1), f = scalar_t(1), o = scalar_t(1);
    if constexpr (V::input_gate) {
      if constexpr (V::peepholes) i = sigmoid(a[ki + j] + x[ki + j] + bias[ki + j] + p_i[j] * cp[j]);
      else i = sigmoid(a[ki + j] + x[ki + j] + bias[ki + j]);
    }
    if constexpr (V::forget_gate) {
      if constexpr (V::peepholes) f = sigmoid(a[kf + j] + x[kf + j] + bias[kf + j] + p_f[j] * cp[j]);
      else f = sigmoid(a[kf + j] + x[kf + j] + bias[kf + j]);
    }
    if constexpr (V::coupled) f = scalar_t(1) - i;
    scalar_t g = a[kg + j] + x[kg + j] + bias[kg + j];
    if constexpr (V::input_activation) g = std::tanh(g);
    scalar_t cj;
    if constexpr ((V::forget_gate || V::coupled) && V::input_gate) cj = f * cp[j] + i * g;
    else if constexpr (V::forget_gate || V::coupled) cj = f * cp[j] + g;
    else cj = cp[j] + i * g;
    if constexpr (V::output_gate) {
      if constexpr (V::peepholes) o = sigmoid(a[ko + j] + x[ko + j] + bias[ko + j] + p_o[j] * cj);
      else o = sigmoid(a[ko + j] + x[ko + j] + bias[ko + j]);
    }
    if constexpr (V::input_gate) gates[ki + j] = i;
    if constexpr (V::forget_gate) gates[kf + j] = f;
    gates[kg + j] = g;
    if constexpr (V::output_gate) gates[ko + j] = o;
    c[j] = cj;
    if constexpr (V::output_gate && V::output_activation) h[j] = o * std::tanh(cj);
    else if constexpr (V::output_gate) h[j] = o * cj;
    else if constexpr (V::output_activation) h[j] = std::tanh(cj);
    else h[j] = cj;
  }
}

// Backward element-wise pass of step t for one batch row. `dh` is ∂L/∂h_t from later steps (and the
// final state), `go` the gradient of output t (may be null), `dc` ∂L/∂c_t on entry and ∂L/∂c_{t-1} on
// exit. Overwrites the saved activated gates `a` (G·H) with the pre-activation gradients δa (each element
// is read before it is written), writes the probe gradient (may be null), and accumulates the bias and
// peephole gradients of this row into db (G·H) and dp (P·H): no extra pass over the sequence.
template <class V, typename scalar_t>
inline void backward_row(int64_t H, scalar_t* a, const scalar_t* __restrict__ cp,
                         const scalar_t* __restrict__ c, const scalar_t* __restrict__ peephole,
                         const scalar_t* __restrict__ dh, const scalar_t* __restrict__ go,
                         scalar_t* __restrict__ dc, scalar_t* __restrict__ dprobe,
                         scalar_t* __restrict__ db, scalar_t* __restrict__ dp) {
  const int64_t ki = V::ki * H, kf = V::kf * H, kg = V::kg * H, ko = V::ko * H;
  const scalar_t* __restrict__ p_i = V::peepholes ? peephole + V::pi * H : nullptr;
  const scalar_t* __restrict__ p_f = V::peepholes ? peephole + V::pf * H : nullptr;
  const scalar_t* __restrict__ p_o = V::peepholes ? peephole + V::po * H : nullptr;
  const int64_t pi = V::pi * H, pf = V::pf * H, po = V::po * H;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    scalar_t i = scalar_t(1), f = scalar_t(1), o = scalar_t(1);
    if constexpr (V::input_gate) i = a[ki + j];
    if constexpr (V::forget_gate) f = a[kf + j];
    if constexpr (V::coupled) f = scalar_t(1) - i;
    const scalar_t g = a[kg + j];
    if constexpr (V::output_gate) o = a[ko + j];
    const scalar_t tc = V::output_activation ? std::tanh(c[j]) : c[j];  // what o multiplies
    const scalar_t dht = go ? dh[j] + go[j] : dh[j];
    if (dprobe) dprobe[j] = dht;
    // through h_t = o ⊙ tanh(c_t) (o = 1 without output gate, tanh = id without output activation)
    scalar_t da_o = scalar_t(0), dct;
    if constexpr (V::output_gate) {
      da_o = dht * tc * o * (scalar_t(1) - o);
      if constexpr (V::output_activation) dct = dc[j] + dht * o * (scalar_t(1) - tc * tc);
      else dct = dc[j] + dht * o;
      if constexpr (V::peepholes) dct = dct + da_o * p_o[j];
    } else {
      if constexpr (V::output_activation) dct = dc[j] + dht * (scalar_t(1) - tc * tc);
      else dct = dc[j] + dht;
    }
    // through c_t = f ⊙ c_{t-1} + i ⊙ g (cifg: f = 1 - i, so ∂c_t/∂i = g - c_{t-1})
    scalar_t da_i = scalar_t(0), da_f = scalar_t(0), da_g;
    if constexpr (V::coupled) da_i = dct * (g - cp[j]) * i * (scalar_t(1) - i);
    else if constexpr (V::input_gate) da_i = dct * g * i * (scalar_t(1) - i);
    if constexpr (V::forget_gate) da_f = dct * cp[j] * f * (scalar_t(1) - f);
    if constexpr (V::input_gate && V::input_activation) da_g = dct * i * (scalar_t(1) - g * g);
    else if constexpr (V::input_gate) da_g = dct * i;
    else if constexpr (V::input_activation) da_g = dct * (scalar_t(1) - g * g);
    else da_g = dct;
    if constexpr (V::input_gate) a[ki + j] = da_i;
    if constexpr (V::forget_gate) a[kf + j] = da_f;
    a[kg + j] = da_g;
    if constexpr (V::output_gate) a[ko + j] = da_o;
    scalar_t dcp = (V::forget_gate || V::coupled) ? dct * f : dct;
    if constexpr (V::peepholes && V::input_gate) dcp = dcp + da_i * p_i[j];
    if constexpr (V::peepholes && V::forget_gate) dcp = dcp + da_f * p_f[j];
    dc[j] = dcp;
    if constexpr (V::input_gate) db[ki + j] += da_i;
    if constexpr (V::forget_gate) db[kf + j] += da_f;
    db[kg + j] += da_g;
    if constexpr (V::output_gate) db[ko + j] += da_o;
    if constexpr (V::peepholes && V::input_gate) dp[pi + j] += da_i * cp[j];
    if constexpr (V::peepholes && V::forget_gate) dp[pf + j] += da_f * cp[j];
    if constexpr (V::peepholes && V::output_gate) dp[po + j] += da_o * c[j];
  }
}

template <class V>
void check_inputs(const Tensor& x_proj, const Tensor& h0, const Tensor& c0, const Tensor& weight_hh,
                  const Tensor& bias_hh, const std::optional<Tensor>& peephole, const std::optional<Tensor>& lengths) {
  constexpr int G = V::G, P = V::P;
  TORCH_CHECK(x_proj.dim() == 3 && x_proj.size(2) % G == 0, "x_proj must be (T, B, ", G, "H)");
  const int64_t B = x_proj.size(1), H = x_proj.size(2) / G;
  TORCH_CHECK(h0.sizes() == c0.sizes() && h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H,
              "h0 and c0 must be (B, H)");
  TORCH_CHECK(weight_hh.dim() == 2 && weight_hh.size(0) == G * H && weight_hh.size(1) == H,
              "weight_hh must be (", G, "H, H)");
  TORCH_CHECK(bias_hh.numel() == G * H, "bias_hh must be (", G, "H,)");
  std::vector<const Tensor*> all = {&x_proj, &h0, &c0, &weight_hh, &bias_hh};
  if constexpr (P > 0) {
    TORCH_CHECK(peephole && peephole->dim() == 2 && peephole->size(0) == P && peephole->size(1) == H,
                "peephole must be (", P, ", H)");
    all.push_back(&*peephole);
  } else {
    TORCH_CHECK(!peephole, "this variant has no peepholes: pass None");
  }
  check_cpu_one_dtype("LSTM", all, lengths, B);
}

template <class V>
std::vector<Tensor> forward_impl(Tensor x_proj, Tensor h0, Tensor c0, Tensor weight_hh, Tensor bias_hh,
                                 std::optional<Tensor> peephole_opt, std::optional<Tensor> lengths,
                                 std::optional<Tensor> h_probe, bool overwrite_x_proj) {
  constexpr int G = V::G;
  check_inputs<V>(x_proj, h0, c0, weight_hh, bias_hh, peephole_opt, lengths);
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  x_proj = x_proj.contiguous(); h0 = h0.contiguous(); c0 = c0.contiguous();
  bias_hh = bias_hh.contiguous();
  const Tensor peephole = contiguous_or_undefined(peephole_opt);
  const int64_t T = x_proj.size(0), B = x_proj.size(1), H = x_proj.size(2) / G;
  const Tensor lens = contiguous_or_undefined(lengths);
  const Tensor probe = contiguous_or_undefined(h_probe);
  const int64_t* len_ptr = lengths_ptr(lens);

  // x_proj is read once per element, just before the gates of that element are written: with
  // overwrite_x_proj (the caller's own buffer, read by nobody else) the gates go over it, one (T, B, G·H)
  // buffer, and its page faults, fewer.
  Tensor gates = overwrite_x_proj ? x_proj : at::empty({T, B, G * H}, x_proj.options());
  Tensor cs = at::empty({T, B, H}, x_proj.options());
  Tensor outputs = at::empty({T, B, H}, x_proj.options());
  // With lengths the recurrent state (frozen past each end) differs from the (zeroed) outputs.
  Tensor h_state = len_ptr ? h0.clone() : Tensor();
  const Tensor w_t = weight_hh.t().contiguous();  // (H, G·H): the per-step GEMMs run ~10-20% faster untransposed

  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "lstm_forward", [&] {
    scalar_t* gates_p = gates.data_ptr<scalar_t>();
    scalar_t* cs_p = cs.data_ptr<scalar_t>();
    scalar_t* out_p = outputs.data_ptr<scalar_t>();
    const scalar_t* x_p = x_proj.data_ptr<scalar_t>();
    const scalar_t* c0_p = c0.data_ptr<scalar_t>();
    const scalar_t* bias_p = bias_hh.data_ptr<scalar_t>();
    const scalar_t* peep_p = peephole.defined() ? peephole.data_ptr<scalar_t>() : nullptr;
    const scalar_t* probe_p = probe.defined() ? probe.data_ptr<scalar_t>() : nullptr;
    scalar_t* h_state_p = len_ptr ? h_state.data_ptr<scalar_t>() : nullptr;
    for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      // U h_{t-1} of this block's rows, one buffer for all steps: it stays in cache
      Tensor uh = at::empty({b1 - b0, G * H}, x_proj.options());
      const scalar_t* uh_p = uh.data_ptr<scalar_t>();
      for (int64_t t = 0; t < T; ++t) {
        const Tensor& h_prev = len_ptr ? h_state : (t == 0 ? h0 : outputs[t - 1]);
        at::mm_out(uh, h_prev.narrow(0, b0, b1 - b0), w_t);  // U h_{t-1} on these rows
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * B + b;  // (t, b) in a (T, B, ·) buffer
          const scalar_t* c_prev = t == 0 ? c0_p + b * H : cs_p + (row - B) * H;
          scalar_t* h = out_p + row * H;
          if (!valid(len_ptr, b, t)) {  // finished: carry c, output zero
            std::copy(c_prev, c_prev + H, cs_p + row * H);
            std::fill(h, h + H, scalar_t(0));
            continue;
          }
          forward_row<V, scalar_t>(H, uh_p + (b - b0) * G * H, x_p + row * G * H, bias_p, peep_p, c_prev,
                                   cs_p + row * H, h, gates_p + row * G * H);
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

template <class V>
std::vector<Tensor> backward_impl(std::optional<Tensor> grad_outputs, std::optional<Tensor> grad_h_T,
                                  std::optional<Tensor> grad_c_T, Tensor gates, Tensor cs, Tensor outputs,
                                  Tensor h0, Tensor c0, Tensor weight_hh, std::optional<Tensor> peephole_opt,
                                  std::optional<Tensor> lengths, bool has_probe, bool need_weight_grad) {
  constexpr int G = V::G, P = V::P;
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  const int64_t T = gates.size(0), B = gates.size(1), H = gates.size(2) / G;
  const Tensor lens = contiguous_or_undefined(lengths);
  const int64_t* len_ptr = lengths_ptr(lens);
  const Tensor grad_out = contiguous_or_undefined(grad_outputs);
  weight_hh = weight_hh.contiguous();
  const Tensor peephole = contiguous_or_undefined(peephole_opt);
  h0 = h0.contiguous();
  c0 = c0.contiguous();

  Tensor dprobe = has_probe ? at::empty({T, B, H}, gates.options()) : Tensor();
  Tensor dbias = at::zeros({B, G * H}, gates.options());
  Tensor dpeep = P > 0 ? at::zeros({B, P, H}, gates.options()) : Tensor();
  const std::vector<Tensor> dh_buf = dh_buffers(grad_h_T, B, H, gates.options());
  Tensor dc = grad_c_T ? grad_c_T->contiguous().clone() : at::zeros({B, H}, gates.options());

  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_backward", [&] {
    scalar_t* gates_p = gates.data_ptr<scalar_t>();
    const scalar_t* cs_p = cs.data_ptr<scalar_t>();
    const scalar_t* c0_p = c0.data_ptr<scalar_t>();
    const scalar_t* peep_p = peephole.defined() ? peephole.data_ptr<scalar_t>() : nullptr;
    const scalar_t* grad_out_p = grad_out.defined() ? grad_out.data_ptr<scalar_t>() : nullptr;
    scalar_t* dprobe_p = has_probe ? dprobe.data_ptr<scalar_t>() : nullptr;
    scalar_t* dc_p = dc.data_ptr<scalar_t>();
    scalar_t* dbias_p = dbias.data_ptr<scalar_t>();
    scalar_t* dpeep_p = P > 0 ? dpeep.data_ptr<scalar_t>() : nullptr;
    for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      for (int64_t t = T - 1; t >= 0; --t) {
        const Tensor& dh = dh_buf[(T - 1 - t) % 2];
        const Tensor& dh_prev = dh_buf[(T - t) % 2];
        scalar_t* dh_p = dh.data_ptr<scalar_t>();
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * B + b;
          scalar_t* a = gates_p + row * G * H;
          if (!valid(len_ptr, b, t)) {  // carried state: δc and δh pass through untouched
            std::fill(a, a + G * H, scalar_t(0));
            if (dprobe_p) std::fill(dprobe_p + row * H, dprobe_p + (row + 1) * H, scalar_t(0));
            continue;
          }
          backward_row<V, scalar_t>(H, a, t == 0 ? c0_p + b * H : cs_p + (row - B) * H, cs_p + row * H, peep_p,
                                    dh_p + b * H, grad_out_p ? grad_out_p + row * H : nullptr, dc_p + b * H,
                                    dprobe_p ? dprobe_p + row * H : nullptr, dbias_p + b * G * H,
                                    dpeep_p ? dpeep_p + b * P * H : nullptr);
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

  const Tensor grad_weight = need_weight_grad ? recurrent_weight_grad(gates, outputs, h0) : Tensor();
  return {gates, dh, dc, grad_weight, dbias.sum(0), P > 0 ? dpeep.sum(0) : Tensor(), dprobe};
}

}  // namespace

// Returns {outputs (T,B,H), h_T (B,H), c_T (B,H), gates (T,B,G·H) activated gates present, c (T,B,H)}.
// With overwrite_x_proj, `gates` is x_proj itself (a contiguous one), overwritten.
std::vector<Tensor> forward(Tensor x_proj, Tensor h0, Tensor c0, Tensor weight_hh, Tensor bias_hh,
                            std::optional<Tensor> peephole, std::optional<Tensor> lengths,
                            std::optional<Tensor> h_probe, int64_t variant, bool overwrite_x_proj) {
  return dispatch_variant(variant, [&](auto v) {
    return forward_impl<decltype(v)>(x_proj, h0, c0, weight_hh, bias_hh, peephole, lengths, h_probe,
                                     overwrite_x_proj);
  });
}

// Returns {grad x_proj (T,B,G·H), grad h0, grad c0, grad weight_hh, grad bias_hh, grad peephole, grad h_probe}.
// grad x_proj is δa itself, written over `gates` (so this runs once per forward); grad weight_hh is
// undefined unless requested, grad peephole without peepholes, grad h_probe unless has_probe.
std::vector<Tensor> backward(std::optional<Tensor> grad_outputs, std::optional<Tensor> grad_h_T,
                             std::optional<Tensor> grad_c_T, Tensor gates, Tensor cs, Tensor outputs,
                             Tensor h0, Tensor c0, Tensor weight_hh, std::optional<Tensor> peephole,
                             std::optional<Tensor> lengths, bool has_probe, bool need_weight_grad, int64_t variant) {
  return dispatch_variant(variant, [&](auto v) {
    return backward_impl<decltype(v)>(grad_outputs, grad_h_T, grad_c_T, gates, cs, outputs, h0, c0, weight_hh,
                                      peephole, lengths, has_probe, need_weight_grad);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "LSTM-family sequence forward", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "LSTM-family sequence backward", py::call_guard<py::gil_scoped_release>());
}
