// Flush-to-zero on every thread torch computes on (rnnbench/kernels/flush.py). Its own small extension, so a
// run turns flushing on without building or loading a sequence kernel it does not use.
#include "common.h"

#include <torch/extension.h>

namespace rnnbench {

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

}  // namespace rnnbench

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_flush_denormal", &rnnbench::set_flush_denormal, "flush-to-zero on the calling thread and the OpenMP pool");
}
