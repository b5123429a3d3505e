// The diagonal linear recurrence h_t = a_t ⊙ h_{t-1} + b_t over a whole sequence, forward and hand-written
// backward, real (float32/float64) and complex (the same tensors viewed as (…, 2) real pairs). Serves the
// diagonal modern cells (minGRU, minLSTM, LRU, RG-LRU, S6): rnnbench/scan.py holds the reference loop and
// the PyTorch fallback it is proven against (tests/test_scan.py).
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

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "diagonal linear scan forward", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "diagonal linear scan backward", py::call_guard<py::gil_scoped_release>());
}
