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
// per step one single-threaded GEMM on its rows (ATen, into a preallocated buffer) and one fused
// element-wise pass, with no synchronisation between steps. Given the layer's input x and W_ih (the layer
// path), the forward step GEMM also does the input projection, [x_t | h_{t-1}] [W_ih | U]^T, and the backward
// accumulates ∂L/∂W_ih per step from δa_t while it is in cache; given x_proj = W x + b_ih instead, the step
// GEMM adds U h_{t-1} to it. The recurrent weight gradient is one (multi-threaded) GEMM after the backward
// loop: the kernel's only pass over the (T, B, G·H) δa in memory (∂L/∂x = δa W_ih is the caller's, after
// this node's saved tensors are freed: projection.InputProjection). Measured on the 2-core machine with
// another 2-thread job running: this layout stayed within ~2x of its quiet time, where a per-step parallel GEMM +
// parallel element-wise pass (two barriers per step), like nn.LSTM's, slowed down 20-40x.

#include "common.h"

#include <torch/extension.h>

#include <map>
#include <mutex>

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

// Forward element-wise pass of step t for one batch row: `a` (G·H) holds the step GEMM's W x_t + U h_{t-1}
// (or x_proj_t + U h_{t-1}), `bias` the biases it lacks; writes the activated gates present (i, f, g, o) to
// `gates`.
template <class V, typename scalar_t>
inline void forward_row(int64_t H, const scalar_t* __restrict__ a, const scalar_t* __restrict__ bias,
                        const scalar_t* __restrict__ peephole, const scalar_t* __restrict__ cp,
                        scalar_t* __restrict__ c, scalar_t* __restrict__ h, scalar_t* __restrict__ gates) {
  const int64_t ki = V::ki * H, kf = V::kf * H, kg = V::kg * H, ko = V::ko * H;
  const scalar_t* __restrict__ p_i = V::peepholes ? peephole + V::pi * H : nullptr;
  const scalar_t* __restrict__ p_f = V::peepholes ? peephole + V::pf * H : nullptr;
  const scalar_t* __restrict__ p_o = V::peepholes ? peephole + V::po * H : nullptr;
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    scalar_t i = scalar_t(1), f = scalar_t(1), o = scalar_t(1);
    if constexpr (V::input_gate) {
      if constexpr (V::peepholes) i = sigmoid(a[ki + j] + bias[ki + j] + p_i[j] * cp[j]);
      else i = sigmoid(a[ki + j] + bias[ki + j]);
    }
    if constexpr (V::forget_gate) {
      if constexpr (V::peepholes) f = sigmoid(a[kf + j] + bias[kf + j] + p_f[j] * cp[j]);
      else f = sigmoid(a[kf + j] + bias[kf + j]);
    }
    if constexpr (V::coupled) f = scalar_t(1) - i;
    scalar_t g = a[kg + j] + bias[kg + j];
    if constexpr (V::input_activation) g = std::tanh(g);
    scalar_t cj;
    if constexpr ((V::forget_gate || V::coupled) && V::input_gate) cj = f * cp[j] + i * g;
    else if constexpr (V::forget_gate || V::coupled) cj = f * cp[j] + g;
    else cj = cp[j] + i * g;
    if constexpr (V::output_gate) {
      if constexpr (V::peepholes) o = sigmoid(a[ko + j] + bias[ko + j] + p_o[j] * cj);
      else o = sigmoid(a[ko + j] + bias[ko + j]);
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

// Checks the tensors of a call; returns I, the columns of x_t in the step GEMM's [x_t | h_{t-1}] (0 when x
// is x_proj: weight_ih and bias_ih absent).
template <class V>
int64_t check_inputs(const Tensor& x, const std::optional<Tensor>& weight_ih, const std::optional<Tensor>& bias_ih,
                     const Tensor& h0, const Tensor& c0, const Tensor& weight_hh, const Tensor& bias_hh,
                     const std::optional<Tensor>& peephole, const std::optional<Tensor>& lengths) {
  constexpr int G = V::G, P = V::P;
  TORCH_CHECK(weight_ih.has_value() == bias_ih.has_value(), "weight_ih and bias_ih: both or neither");
  TORCH_CHECK(weight_hh.dim() == 2 && weight_hh.size(0) == G * weight_hh.size(1),
              "weight_hh must be (", G, "H, H)");
  const int64_t H = weight_hh.size(1), I = weight_ih ? x.size(-1) : 0;
  if (weight_ih) {
    TORCH_CHECK(x.dim() == 3, "x must be (T, B, I)");
    TORCH_CHECK(weight_ih->dim() == 2 && weight_ih->size(0) == G * H && weight_ih->size(1) == I,
                "weight_ih must be (", G, "H, I)");
    TORCH_CHECK(bias_ih->numel() == G * H, "bias_ih must be (", G, "H,)");
  } else {
    TORCH_CHECK(x.dim() == 3 && x.size(2) == G * H, "x_proj must be (T, B, ", G, "H)");
  }
  const int64_t B = x.size(1);
  TORCH_CHECK(h0.sizes() == c0.sizes() && h0.dim() == 2 && h0.size(0) == B && h0.size(1) == H,
              "h0 and c0 must be (B, H)");
  TORCH_CHECK(bias_hh.numel() == G * H, "bias_hh must be (", G, "H,)");
  std::vector<const Tensor*> all = {&x, &h0, &c0, &weight_hh, &bias_hh};
  if (weight_ih) {
    all.push_back(&*weight_ih);
    all.push_back(&*bias_ih);
  }
  if constexpr (P > 0) {
    TORCH_CHECK(peephole && peephole->dim() == 2 && peephole->size(0) == P && peephole->size(1) == H,
                "peephole must be (", P, ", H)");
    all.push_back(&*peephole);
  } else {
    TORCH_CHECK(!peephole, "this variant has no peepholes: pass None");
  }
  check_cpu_one_dtype("LSTM", all, lengths, B);
  return I;
}

template <class V>
std::vector<Tensor> forward_impl(Tensor x, std::optional<Tensor> weight_ih, std::optional<Tensor> bias_ih, Tensor h0,
                                 Tensor c0, Tensor weight_hh, Tensor bias_hh, std::optional<Tensor> peephole_opt,
                                 std::optional<Tensor> lengths, std::optional<Tensor> h_probe, bool overwrite_x_proj) {
  constexpr int G = V::G;
  const int64_t I = check_inputs<V>(x, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, peephole_opt, lengths);
  const bool projected = !weight_ih;  // x is x_proj = W x + b_ih
  TORCH_CHECK(projected || !overwrite_x_proj, "overwrite_x_proj: only x_proj can be overwritten");
  at::AutoDispatchBelowADInplaceOrView no_autograd;
  x = x.contiguous(); h0 = h0.contiguous(); c0 = c0.contiguous();
  const Tensor peephole = contiguous_or_undefined(peephole_opt);
  const int64_t T = x.size(0), B = x.size(1), H = weight_hh.size(1), width = I + H;
  const Tensor lens = contiguous_or_undefined(lengths);
  const Tensor probe = contiguous_or_undefined(h_probe);
  const int64_t* len_ptr = lengths_ptr(lens);

  // The step GEMM [x_t | h_{t-1}] [W_ih | U]^T (I + H columns; I = 0 for x_proj, which is added to its
  // output): W x_t and U h_{t-1} accumulate in one GEMM, so no (T, B, G·H) input projection is written to
  // memory and read back. One GEMM rather than two into the same buffer (x_t W_ih^T, then + h U^T): the
  // concatenation copies rows x I values a step, the second GEMM would read and write the rows x G·H output
  // once more.
  Tensor w_t = at::empty({I + H, G * H}, weight_hh.options());  // (I + H, G·H): [W_ih | U]^T
  if (!projected) w_t.narrow(0, 0, I).copy_(weight_ih->t());
  w_t.narrow(0, I, H).copy_(weight_hh.t());
  const Tensor bias = projected ? bias_hh.contiguous() : (*bias_ih + bias_hh).contiguous();
  // x_proj is read once per element, just before the gates of that element are written: with
  // overwrite_x_proj (the caller's own buffer, read by nobody else) the gates go over it, one (T, B, G·H)
  // buffer, and its page faults, fewer.
  Tensor gates = overwrite_x_proj ? x : at::empty({T, B, G * H}, x.options());
  Tensor cs = at::empty({T, B, H}, x.options());
  Tensor outputs = at::empty({T, B, H}, x.options());
  Tensor h_T = at::empty({B, H}, x.options());

  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_forward", [&] {
    scalar_t* gates_p = gates.data_ptr<scalar_t>();
    scalar_t* cs_p = cs.data_ptr<scalar_t>();
    scalar_t* out_p = outputs.data_ptr<scalar_t>();
    scalar_t* h_T_p = h_T.data_ptr<scalar_t>();
    const scalar_t* x_p = x.data_ptr<scalar_t>();
    const scalar_t* h0_p = h0.data_ptr<scalar_t>();
    const scalar_t* c0_p = c0.data_ptr<scalar_t>();
    const scalar_t* bias_p = bias.data_ptr<scalar_t>();
    const scalar_t* peep_p = peephole.defined() ? peephole.data_ptr<scalar_t>() : nullptr;
    const scalar_t* probe_p = probe.defined() ? probe.data_ptr<scalar_t>() : nullptr;
    for_row_blocks(B, H, [&](int64_t b0, int64_t b1) {
      // [x_t | h_{t-1}] of this block's rows and the step GEMM's output, one buffer each for all steps (they
      // stay in cache). The h columns are the recurrent state: frozen past a sequence's end (lengths).
      Tensor xh = at::empty({b1 - b0, width}, x.options());
      Tensor a = at::empty({b1 - b0, G * H}, x.options());
      scalar_t* xh_p = xh.data_ptr<scalar_t>();
      scalar_t* a_p = a.data_ptr<scalar_t>();
      for (int64_t b = b0; b < b1; ++b) std::copy(h0_p + b * H, h0_p + (b + 1) * H, xh_p + (b - b0) * width + I);
      for (int64_t t = 0; t < T; ++t) {
        if (projected) {  // x_proj_t + U h_{t-1}
          std::copy(x_p + (t * B + b0) * G * H, x_p + (t * B + b1) * G * H, a_p);
          a.addmm_(xh, w_t);
        } else {          // W x_t + U h_{t-1}
          for (int64_t b = b0; b < b1; ++b) std::copy(x_p + (t * B + b) * I, x_p + (t * B + b + 1) * I, xh_p + (b - b0) * width);
          at::mm_out(a, xh, w_t);
        }
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t row = t * B + b;  // (t, b) in a (T, B, ·) buffer
          const scalar_t* c_prev = t == 0 ? c0_p + b * H : cs_p + (row - B) * H;
          scalar_t* h = out_p + row * H;
          if (!valid(len_ptr, b, t)) {  // finished: carry c, output zero
            std::copy(c_prev, c_prev + H, cs_p + row * H);
            std::fill(h, h + H, scalar_t(0));
            continue;
          }
          forward_row<V, scalar_t>(H, a_p + (b - b0) * G * H, bias_p, peep_p, c_prev, cs_p + row * H, h,
                                   gates_p + row * G * H);
          if (probe_p) {
            for (int64_t j = 0; j < H; ++j) h[j] += probe_p[row * H + j];
          }
          std::copy(h, h + H, xh_p + (b - b0) * width + I);
        }
      }
      for (int64_t b = b0; b < b1; ++b) std::copy(xh_p + (b - b0) * width + I, xh_p + (b - b0 + 1) * width, h_T_p + b * H);
    });
  });
  Tensor c_T = T == 0 ? c0.clone() : cs[T - 1].clone();
  return {outputs, h_T, c_T, gates, cs};
}

// The largest per-thread ∂L/∂W_ih partial sum (G·H x I) accumulated per step: 256 KiB, G·H = 1024 by I = 64
// in float32, which stays in a core's L2 (0.5-2 MiB on current x86) beside the step's δa_t.
constexpr int64_t kPerStepWeightGradBytes = 256 * 1024;

template <class V>
std::vector<Tensor> backward_impl(std::optional<Tensor> grad_outputs, std::optional<Tensor> grad_h_T,
                                  std::optional<Tensor> grad_c_T, Tensor gates, Tensor cs, Tensor outputs,
                                  std::optional<Tensor> x_opt, Tensor h0, Tensor c0, Tensor weight_hh,
                                  std::optional<Tensor> peephole_opt, std::optional<Tensor> lengths, bool has_probe,
                                  bool need_weight_grad) {
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
  // Given the layer's input x: ∂L/∂W_ih = Σ_t δa_t^T x_t. Per step from δa_t while it is in cache (no pass
  // over the (T, B, G·H) δa of its own), one (G·H, I) sum per row block, added up in the order of the blocks
  // (the same result for any thread timing), while that sum is small enough to stay in cache beside U and
  // δa_t; for a wider input (its sum read and written every step would cost more than one more pass over
  // δa) one GEMM over all T·B rows after the loop.
  const Tensor x = contiguous_or_undefined(x_opt);
  const int64_t I = x.defined() ? x.size(2) : 0;
  const bool weight_ih_grad_per_step = G * H * I * gates.element_size() <= kPerStepWeightGradBytes;
  std::map<int64_t, Tensor> grad_weight_ih_blocks;
  std::mutex blocks_mutex;

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
      Tensor grad_weight_ih = x.defined() && weight_ih_grad_per_step ? at::zeros({G * H, I}, gates.options()) : Tensor();
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
        const Tensor da = gates[t].narrow(0, b0, b1 - b0);
        Tensor dh_prev_rows = dh_prev.narrow(0, b0, b1 - b0);
        at::mm_out(dh_prev_rows, da, weight_hh);  // δh_{t-1} = δa_t U
        if (grad_weight_ih.defined()) grad_weight_ih.addmm_(da.t(), x[t].narrow(0, b0, b1 - b0));
        if (len_ptr) {  // finished rows carry δh unchanged to the previous step
          scalar_t* dst = dh_prev.data_ptr<scalar_t>();
          for (int64_t b = b0; b < b1; ++b)
            if (!valid(len_ptr, b, t)) std::copy(dh_p + b * H, dh_p + (b + 1) * H, dst + b * H);
        }
      }
      if (grad_weight_ih.defined()) {
        const std::lock_guard<std::mutex> lock(blocks_mutex);
        grad_weight_ih_blocks.emplace(b0, grad_weight_ih);
      }
    });
  });
  const Tensor& dh = dh_buf[T % 2];

  Tensor grad_weight_ih;
  if (x.defined() && weight_ih_grad_per_step) {
    grad_weight_ih = at::zeros({G * H, I}, gates.options());
    for (const auto& block : grad_weight_ih_blocks) grad_weight_ih.add_(block.second);
  } else if (x.defined()) {
    grad_weight_ih = at::mm(gates.view({T * B, G * H}).t(), x.view({T * B, I}));
  }
  const Tensor grad_weight_hh = need_weight_grad ? recurrent_weight_grad(gates, outputs, h0) : Tensor();
  return {gates, dh, dc, grad_weight_ih, grad_weight_hh, dbias.sum(0), P > 0 ? dpeep.sum(0) : Tensor(), dprobe};
}

}  // namespace

// Returns {outputs (T,B,H), h_T (B,H), c_T (B,H), gates (T,B,G·H) activated gates present, c (T,B,H)}.
// x is the input (T,B,I) with weight_ih and bias_ih, or without them x_proj (T,B,G·H) = W x + b_ih; with
// overwrite_x_proj, `gates` is x_proj itself (a contiguous one), overwritten.
std::vector<Tensor> forward(Tensor x, std::optional<Tensor> weight_ih, std::optional<Tensor> bias_ih, Tensor h0,
                            Tensor c0, Tensor weight_hh, Tensor bias_hh, std::optional<Tensor> peephole,
                            std::optional<Tensor> lengths, std::optional<Tensor> h_probe, int64_t variant,
                            bool overwrite_x_proj) {
  return dispatch_variant(variant, [&](auto v) {
    return forward_impl<decltype(v)>(x, weight_ih, bias_ih, h0, c0, weight_hh, bias_hh, peephole, lengths, h_probe,
                                     overwrite_x_proj);
  });
}

// Returns {δa (T,B,G·H), grad h0, grad c0, grad weight_ih, grad weight_hh, grad bias, grad peephole,
// grad h_probe}. δa is ∂L/∂x_proj, written over `gates` (so this runs once per forward); grad bias is that of
// b_hh, and of b_ih alike (both add to a). grad weight_ih is Σ_t δa_t^T x_t given the input x (undefined
// without), grad weight_hh undefined unless requested, grad peephole without peepholes, grad h_probe unless
// has_probe.
std::vector<Tensor> backward(std::optional<Tensor> grad_outputs, std::optional<Tensor> grad_h_T,
                             std::optional<Tensor> grad_c_T, Tensor gates, Tensor cs, Tensor outputs,
                             std::optional<Tensor> x, Tensor h0, Tensor c0, Tensor weight_hh,
                             std::optional<Tensor> peephole, std::optional<Tensor> lengths, bool has_probe,
                             bool need_weight_grad, int64_t variant) {
  return dispatch_variant(variant, [&](auto v) {
    return backward_impl<decltype(v)>(grad_outputs, grad_h_T, grad_c_T, gates, cs, outputs, x, h0, c0, weight_hh,
                                      peephole, lengths, has_probe, need_weight_grad);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "LSTM-family sequence forward", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "LSTM-family sequence backward", py::call_guard<py::gil_scoped_release>());
}
