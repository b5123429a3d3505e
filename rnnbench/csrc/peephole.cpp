// Sequence-level peephole LSTM on CPU: the time loop of cells.PeepholeLSTMCell.step in C++, forward and
// hand-written backward. The equations, the buffer layout and the meaning of every argument are
// documented once, in rnnbench/fast_peephole.py; this file follows them line by line.
//
// Per step: one GEMM (ATen, into a preallocated slice) and one fused element-wise pass over the batch
// rows (at::parallel_for). The recurrent weight gradient is one GEMM after the backward loop.
// Built with -ffast-math so that gcc vectorises exp() through glibc's libmvec (AVX2/AVX-512).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <optional>
#include <vector>

namespace {

using at::Tensor;

template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  return scalar_t(1) / (scalar_t(1) + std::exp(-x));
}

// tanh(x) = 2 σ(2x) - 1: one exp instead of a (much slower) vectorised tanh.
template <typename scalar_t>
inline scalar_t tanh_(scalar_t x) {
  return scalar_t(2) / (scalar_t(1) + std::exp(scalar_t(-2) * x)) - scalar_t(1);
}

// Batch rows per parallel chunk: at least ~4k hidden units of work per thread.
inline int64_t row_grain(int64_t H) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(H, 1)); }

inline bool valid(const int64_t* lengths, int64_t b, int64_t t) { return lengths == nullptr || t < lengths[b]; }

// Forward element-wise pass of step t. On entry `gates` (B, 4H) holds U h_{t-1}; on exit the activated
// gates i, f, g, o. Rows past their sequence's end carry c and output zero.
template <typename scalar_t>
void forward_step(int64_t B, int64_t H, int64_t t, const int64_t* lengths,
                  scalar_t* gates, const scalar_t* x_proj, const scalar_t* bias_hh, const scalar_t* peephole,
                  const scalar_t* c_prev, const scalar_t* probe,
                  scalar_t* c_out, scalar_t* h_out, scalar_t* h_state) {
  const scalar_t* __restrict__ p_i = peephole;
  const scalar_t* __restrict__ p_f = peephole + H;
  const scalar_t* __restrict__ p_o = peephole + 2 * H;
  at::parallel_for(0, B, row_grain(H), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const scalar_t* __restrict__ cp = c_prev + b * H;
      scalar_t* __restrict__ c = c_out + b * H;
      scalar_t* __restrict__ h = h_out + b * H;
      if (!valid(lengths, b, t)) {
        std::copy(cp, cp + H, c);
        std::fill(h, h + H, scalar_t(0));
        continue;
      }
      scalar_t* __restrict__ a = gates + b * 4 * H;
      const scalar_t* __restrict__ x = x_proj + b * 4 * H;
      const scalar_t* __restrict__ pr = probe ? probe + b * H : nullptr;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const scalar_t i = sigmoid(a[j] + x[j] + bias_hh[j] + p_i[j] * cp[j]);
        const scalar_t f = sigmoid(a[H + j] + x[H + j] + bias_hh[H + j] + p_f[j] * cp[j]);
        const scalar_t g = tanh_(a[2 * H + j] + x[2 * H + j] + bias_hh[2 * H + j]);
        const scalar_t cj = f * cp[j] + i * g;
        const scalar_t o = sigmoid(a[3 * H + j] + x[3 * H + j] + bias_hh[3 * H + j] + p_o[j] * cj);
        a[j] = i;
        a[H + j] = f;
        a[2 * H + j] = g;
        a[3 * H + j] = o;
        c[j] = cj;
        h[j] = o * tanh_(cj);
      }
      if (pr) {
        for (int64_t j = 0; j < H; ++j) h[j] += pr[j];
      }
      if (h_state) std::copy(h, h + H, h_state + b * H);
    }
  });
}

// Backward element-wise pass of step t. `dh` (B, H) is ∂L/∂h_t from later steps (and the final state),
// `grad_out` the gradient of output t (may be null), `dc` ∂L/∂c_t on entry and ∂L/∂c_{t-1} on exit.
// Overwrites the saved activated gates (B, 4H) with the pre-activation gradients δa (each element is
// read before it is written), writes the probe gradient, and accumulates the bias and peephole
// gradients per batch row into dbias (B, 4H) and dpeep (B, 3H): no extra pass over the sequence.
template <typename scalar_t>
void backward_step(int64_t B, int64_t H, int64_t t, const int64_t* lengths,
                   scalar_t* gates, const scalar_t* c_prev, const scalar_t* c_cur, const scalar_t* peephole,
                   const scalar_t* dh, const scalar_t* grad_out, scalar_t* dc, scalar_t* dprobe,
                   scalar_t* dbias, scalar_t* dpeep) {
  const scalar_t* __restrict__ p_i = peephole;
  const scalar_t* __restrict__ p_f = peephole + H;
  const scalar_t* __restrict__ p_o = peephole + 2 * H;
  at::parallel_for(0, B, row_grain(H), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      scalar_t* a = gates + b * 4 * H;  // in: i, f, g, o; out: δa_i, δa_f, δa_g, δa_o
      scalar_t* __restrict__ dpr = dprobe ? dprobe + b * H : nullptr;
      if (!valid(lengths, b, t)) {  // carried state: dc and dh pass through untouched
        std::fill(a, a + 4 * H, scalar_t(0));
        if (dpr) std::fill(dpr, dpr + H, scalar_t(0));
        continue;
      }
      const scalar_t* __restrict__ cp = c_prev + b * H;
      const scalar_t* __restrict__ c = c_cur + b * H;
      const scalar_t* __restrict__ dhb = dh + b * H;
      const scalar_t* __restrict__ go = grad_out ? grad_out + b * H : nullptr;
      scalar_t* __restrict__ dcb = dc + b * H;
      scalar_t* __restrict__ db = dbias + b * 4 * H;
      scalar_t* __restrict__ dp = dpeep + b * 3 * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const scalar_t i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
        const scalar_t tc = tanh_(c[j]);
        const scalar_t dht = go ? dhb[j] + go[j] : dhb[j];
        if (dpr) dpr[j] = dht;
        const scalar_t da_o = dht * tc * o * (scalar_t(1) - o);
        const scalar_t dct = dcb[j] + dht * o * (scalar_t(1) - tc * tc) + da_o * p_o[j];
        const scalar_t da_i = dct * g * i * (scalar_t(1) - i);
        const scalar_t da_f = dct * cp[j] * f * (scalar_t(1) - f);
        const scalar_t da_g = dct * i * (scalar_t(1) - g * g);
        a[j] = da_i;
        a[H + j] = da_f;
        a[2 * H + j] = da_g;
        a[3 * H + j] = da_o;
        dcb[j] = dct * f + da_i * p_i[j] + da_f * p_f[j];
        db[j] += da_i;
        db[H + j] += da_f;
        db[2 * H + j] += da_g;
        db[3 * H + j] += da_o;
        dp[j] += da_i * cp[j];
        dp[H + j] += da_f * cp[j];
        dp[2 * H + j] += da_o * c[j];
      }
    }
  });
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
  const Tensor w_t = weight_hh.t();  // (H, 4H) view; the GEMM reads it transposed in place

  AT_DISPATCH_FLOATING_TYPES(x_proj.scalar_type(), "peephole_forward", [&] {
    scalar_t* gates_p = gates.data_ptr<scalar_t>();
    scalar_t* cs_p = cs.data_ptr<scalar_t>();
    scalar_t* out_p = outputs.data_ptr<scalar_t>();
    const scalar_t* x_p = x_proj.data_ptr<scalar_t>();
    const scalar_t* probe_p = probe.defined() ? probe.data_ptr<scalar_t>() : nullptr;
    for (int64_t t = 0; t < T; ++t) {
      Tensor gates_t = gates[t];
      at::mm_out(gates_t, len_ptr ? h_state : (t == 0 ? h0 : outputs[t - 1]), w_t);  // U h_{t-1}  (B, 4H)
      forward_step<scalar_t>(B, H, t, len_ptr, gates_p + t * B * 4 * H, x_p + t * B * 4 * H,
                             bias_hh.data_ptr<scalar_t>(), peephole.data_ptr<scalar_t>(),
                             t == 0 ? c0.data_ptr<scalar_t>() : cs_p + (t - 1) * B * H,
                             probe_p ? probe_p + t * B * H : nullptr, cs_p + t * B * H, out_p + t * B * H,
                             len_ptr ? h_state.data_ptr<scalar_t>() : nullptr);
    }
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
  Tensor dh = grad_h_T ? grad_h_T->contiguous().clone() : at::zeros({B, H}, gates.options());
  Tensor dh_next = at::empty({B, H}, gates.options());
  Tensor dc = grad_c_T ? grad_c_T->contiguous().clone() : at::zeros({B, H}, gates.options());

  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "peephole_backward", [&] {
    scalar_t* gates_p = gates.data_ptr<scalar_t>();
    const scalar_t* cs_p = cs.data_ptr<scalar_t>();
    const scalar_t* grad_out_p = grad_out.defined() ? grad_out.data_ptr<scalar_t>() : nullptr;
    scalar_t* dprobe_p = has_probe ? dprobe.data_ptr<scalar_t>() : nullptr;
    for (int64_t t = T - 1; t >= 0; --t) {
      backward_step<scalar_t>(B, H, t, len_ptr, gates_p + t * B * 4 * H,
                              t == 0 ? c0.data_ptr<scalar_t>() : cs_p + (t - 1) * B * H, cs_p + t * B * H,
                              peephole.data_ptr<scalar_t>(), dh.data_ptr<scalar_t>(),
                              grad_out_p ? grad_out_p + t * B * H : nullptr, dc.data_ptr<scalar_t>(),
                              dprobe_p ? dprobe_p + t * B * H : nullptr, dbias.data_ptr<scalar_t>(),
                              dpeep.data_ptr<scalar_t>());
      at::mm_out(dh_next, gates[t], weight_hh);  // δh_{t-1} = δa_t U  (B, H)
      if (len_ptr) {  // finished rows carry δh unchanged to the previous step
        scalar_t* dst = dh_next.data_ptr<scalar_t>();
        const scalar_t* src = dh.data_ptr<scalar_t>();
        for (int64_t b = 0; b < B; ++b)
          if (!valid(len_ptr, b, t)) std::copy(src + b * H, src + (b + 1) * H, dst + b * H);
      }
      std::swap(dh, dh_next);
    }
  });

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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "peephole LSTM sequence forward", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "peephole LSTM sequence backward", py::call_guard<py::gil_scoped_release>());
}
