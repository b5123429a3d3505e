// What every sequence kernel in this folder shares: the flush-to-zero mode and torch's thread-local state
// carried into the worker threads, an exact σ, the batch-row blocks. Built with -ffast-math so that gcc
// vectorises exp() and tanh() through glibc's libmvec (AVX2/AVX-512); see rnnbench/kernels/fast_peephole.py.
#pragma once

#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace rnnbench {

using at::Tensor;

// -- flush-to-zero on every thread -----------------------------------------------------------------------
// torch.set_flush_denormal sets MXCSR's flush-to-zero and denormals-are-zero bits on the calling thread
// only; an OpenMP worker copies its creator's MXCSR once, when the pool is made. Measured: after
// set_flush_denormal(True) in a process whose pool already existed, worker thread 1 still ran with MXCSR
// 0x1fa0 (both bits clear), and the batch rows this kernel gave it kept their subnormal values. So every
// parallel block below runs with the caller's two bits, and set_flush_denormal() sets them pool-wide.
#if defined(__x86_64__) || defined(__i386__)
constexpr unsigned kFlushBits = 0x8040;  // MXCSR bit 15 flush-to-zero, bit 6 denormals-are-zero
inline unsigned flush_bits() { return _mm_getcsr() & kFlushBits; }
inline void set_flush_bits(unsigned bits) { _mm_setcsr((_mm_getcsr() & ~kFlushBits) | bits); }
#else
constexpr unsigned kFlushBits = 0;
inline unsigned flush_bits() { return 0; }
inline void set_flush_bits(unsigned) {}
#endif

// What a worker thread must share with the calling thread: torch's thread-local state (grad mode,
// dispatch exclusions) for its GEMMs, and the flush-to-zero mode for all its arithmetic.
struct CallerState {
  at::ThreadLocalState torch_state;
  unsigned flush = flush_bits();
};

// For the lifetime of a parallel block: the worker computes as the caller would, then gets its own
// flush mode back (the pool is torch's; this kernel leaves it as it found it).
class AsCaller {
 public:
  explicit AsCaller(const CallerState& caller) : torch_state_(caller.torch_state), own_flush_(flush_bits()) {
    set_flush_bits(caller.flush);
  }
  ~AsCaller() { set_flush_bits(own_flush_); }

 private:
  at::ThreadLocalStateGuard torch_state_;
  unsigned own_flush_;
};

// σ and tanh must saturate exactly like torch's for every pre-activation, ±inf included, and give NaN for
// NaN. The textbook σ(x) = 1/(1 + e^{-x}) does not survive -ffast-math: for x < -88.7 (float32) e^{-x} is
// inf, and gcc's vectorised float division under -ffast-math is a reciprocal estimate refined by one
// Newton step, r·(2 - d·r) with r = rcp(inf) = 0, i.e. 0·inf = NaN. Written from z = e^{-|x|} ∈ (0, 1]
// instead, nothing overflows and the divisor 1 + z lies in (1, 2]; ±inf give z = 0, NaN stays NaN.
template <typename scalar_t>
inline scalar_t sigmoid(scalar_t x) {
  const scalar_t z = std::exp(-std::abs(x));
  const scalar_t r = scalar_t(1) / (scalar_t(1) + z);
  return x >= scalar_t(0) ? r : z * r;
}

// tanh is std::tanh, vectorised by glibc (libmvec) under -ffast-math like exp: it saturates to ±1 without
// overflowing, is within ~1 ulp, and measured as fast here as the one-exp form 2σ(2x) - 1 (which overflows
// as above and loses all relative precision for |x| < 1e-4).

// Batch rows per thread: at least ~4k hidden units of work per thread and step.
inline int64_t row_grain(int64_t H) { return std::max<int64_t>(1, 4096 / std::max<int64_t>(H, 1)); }

inline bool valid(const int64_t* lengths, int64_t b, int64_t t) { return lengths == nullptr || t < lengths[b]; }

// -- the skeleton every sequence kernel shares -------------------------------------------------------------
// Batch row b never meets row b' inside the time loops (each sequence has its own recurrence; only the
// weight gradient sums over rows), so each thread takes one block of rows [b0, b1) and runs all T steps on
// it, computing as the calling thread would (torch state, flush mode): fn(b0, b1).
template <class F>
inline void for_row_blocks(int64_t B, int64_t H, F&& fn) {
  const CallerState caller;
  at::parallel_for(0, B, row_grain(H), [&](int64_t b0, int64_t b1) {
    const AsCaller as_caller(caller);
    fn(b0, b1);
  });
}

// The checks every kernel makes of its tensors: on the CPU, one dtype, lengths a (B,) int64 CPU tensor.
inline void check_cpu_one_dtype(const char* kernel, const std::vector<const Tensor*>& tensors,
                                const std::optional<Tensor>& lengths, int64_t B) {
  for (const Tensor* t : tensors) {
    TORCH_CHECK(t->device().is_cpu(), kernel, " extension: CPU tensors only");
    TORCH_CHECK(t->scalar_type() == tensors.front()->scalar_type(), kernel,
                " extension: all tensors must share one dtype");
  }
  if (lengths) {
    TORCH_CHECK(lengths->device().is_cpu() && lengths->scalar_type() == at::kLong && lengths->numel() == B,
                "lengths must be a (B,) int64 CPU tensor");
  }
}

// An optional tensor, contiguous, or undefined.
inline Tensor contiguous_or_undefined(const std::optional<Tensor>& t) { return t ? t->contiguous() : Tensor(); }

// The (B,) lengths as a pointer, null without lengths (`valid` then takes every step).
inline const int64_t* lengths_ptr(const Tensor& lengths) {
  return lengths.defined() ? lengths.data_ptr<int64_t>() : nullptr;
}

// δh ping-pongs between two (B, H) buffers, one swap per step: step t reads buffer (T-1-t) % 2 and writes
// (T-t) % 2, so after T steps ∂L/∂h_0 is in buffer T % 2. Starts from ∂L/∂h_T (zero if none).
inline std::vector<Tensor> dh_buffers(const std::optional<Tensor>& grad_h_T, int64_t B, int64_t H,
                                      const at::TensorOptions& options) {
  return {grad_h_T ? grad_h_T->contiguous().clone() : at::zeros({B, H}, options), at::empty({B, H}, options)};
}

// Σ_t δ_t^T h_{t-1} for a recurrent weight read as U h_{t-1}, in one GEMM: delta (T, B, N), outputs (T, B, H)
// -> (N, H). h_{t-1} is outputs[t-1] for t >= 1 (exact wherever δ_t != 0: a padded step has δ_t = 0 and a
// zeroed output) and h0 for t = 0.
inline Tensor recurrent_weight_grad(const Tensor& delta, const Tensor& outputs, const Tensor& h0) {
  const int64_t T = delta.size(0), B = delta.size(1), N = delta.size(2), H = outputs.size(2);
  Tensor grad_weight = at::zeros({N, H}, delta.options());
  if (T > 1) {
    at::mm_out(grad_weight, delta.view({T * B, N}).narrow(0, B, (T - 1) * B).t(),
               outputs.view({T * B, H}).narrow(0, 0, (T - 1) * B));
  }
  if (T > 0) grad_weight.addmm_(delta[0].t(), h0);
  return grad_weight;
}

}  // namespace rnnbench
