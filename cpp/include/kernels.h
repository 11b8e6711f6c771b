// edgerun C++ kernels. Inputs are validated in Rust before they get here; the kernels still
// check what they rely on and throw std::invalid_argument, which cxx turns into a Rust Err.
#pragma once
#include "rust/cxx.h"
#include <cstddef>

namespace edgerun {

struct StatsOut;

StatsOut stats(rust::Slice<const double> values);

// c (n x m) = a (n x k) * b (k x m), all row-major.
void matmul(rust::Slice<const float> a, rust::Slice<const float> b, size_t n, size_t k, size_t m,
            rust::Slice<float> c);

}  // namespace edgerun
