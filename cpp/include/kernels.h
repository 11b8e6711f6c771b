// edgerun C++ kernels. Inputs are validated in Rust before they get here; the kernels still
// check what they rely on and throw std::invalid_argument, which cxx turns into a Rust Err.
#pragma once
#include "rust/cxx.h"
#include <cstddef>

namespace edgerun {

struct StatsOut;
struct WindowOut;
struct Outlier;

StatsOut stats(rust::Slice<const double> values);

// c (n x m) = a (n x k) * b (k x m), all row-major.
void matmul(rust::Slice<const float> a, rust::Slice<const float> b, size_t n, size_t k, size_t m,
            rust::Slice<float> c);

// out (h x w) = img (h x w) cross-correlated with k (kh x kw, odd sides), zero padding.
void conv2d(rust::Slice<const float> img, size_t h, size_t w, rust::Slice<const float> k, size_t kh,
            size_t kw, rust::Slice<float> out);

// Sobel gradient magnitude sqrt(gx^2 + gy^2), zero padding.
void sobel(rust::Slice<const float> img, size_t h, size_t w, rust::Slice<float> out);

// Magnitudes of bins 0..n/2 of the DFT of a real series of power-of-two length n.
void fft_magnitude(rust::Slice<const double> x, rust::Slice<double> out);

// SHA-256 digest of data into out (32 bytes).
void sha256(rust::Slice<const uint8_t> data, rust::Slice<uint8_t> out);

// Sort ascending in place.
void sort_f64(rust::Slice<double> values);

// Windows [start, start + window) every `slide` over points (t, v); z-score outliers per window.
rust::Vec<WindowOut> window_agg(rust::Slice<const int64_t> t, rust::Slice<const double> v,
                                int64_t window, int64_t slide, double z_threshold,
                                rust::Vec<Outlier>& outliers);

// Hand the allocator's free pages back to the system (glibc malloc_trim); false where the C
// library has no such call or had nothing to return.
bool release_free_memory();

}  // namespace edgerun
