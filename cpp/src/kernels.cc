#include "edgerun-cpp/include/kernels.h"
#include "edgerun-cpp/src/lib.rs.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace edgerun {

namespace {

// Linear interpolation between closest ranks (numpy's default "linear" method).
double percentile_sorted(const std::vector<double>& sorted, double p) {
  const double rank = p * static_cast<double>(sorted.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(rank));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  const double frac = rank - static_cast<double>(lo);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * frac;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define EDGERUN_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define EDGERUN_CLONES
#endif

// Blocked i-k-j loop: the inner j loop walks b and c contiguously, so the compiler
// vectorises it; blocks of k and j keep the working set of b in cache.
EDGERUN_CLONES
void matmul_blocked(const float* __restrict a, const float* __restrict b, float* __restrict c,
                    size_t n, size_t k, size_t m) {
  constexpr size_t KB = 128;
  constexpr size_t JB = 512;
  std::fill(c, c + n * m, 0.0f);
  for (size_t j0 = 0; j0 < m; j0 += JB) {
    const size_t j1 = std::min(j0 + JB, m);
    for (size_t k0 = 0; k0 < k; k0 += KB) {
      const size_t k1 = std::min(k0 + KB, k);
      for (size_t i = 0; i < n; ++i) {
        float* ci = c + i * m;
        const float* ai = a + i * k;
        for (size_t kk = k0; kk < k1; ++kk) {
          const float aik = ai[kk];
          const float* bk = b + kk * m;
          for (size_t j = j0; j < j1; ++j) {
            ci[j] += aik * bk[j];
          }
        }
      }
    }
  }
}

}  // namespace

StatsOut stats(rust::Slice<const double> values) {
  if (values.empty()) {
    throw std::invalid_argument("stats: values must not be empty");
  }
  const size_t n = values.size();
  double sum = 0.0;
  double mn = values[0];
  double mx = values[0];
  for (double v : values) {
    if (!std::isfinite(v)) {
      throw std::invalid_argument("stats: values must be finite numbers");
    }
    sum += v;
    mn = std::min(mn, v);
    mx = std::max(mx, v);
  }
  const double mean = sum / static_cast<double>(n);
  double sq = 0.0;
  for (double v : values) {
    const double d = v - mean;
    sq += d * d;
  }
  std::vector<double> sorted(values.begin(), values.end());
  std::sort(sorted.begin(), sorted.end());
  StatsOut out{};
  out.count = n;
  out.mean = mean;
  out.min = mn;
  out.max = mx;
  out.std = std::sqrt(sq / static_cast<double>(n));
  out.p50 = percentile_sorted(sorted, 0.50);
  out.p90 = percentile_sorted(sorted, 0.90);
  out.p99 = percentile_sorted(sorted, 0.99);
  return out;
}

void matmul(rust::Slice<const float> a, rust::Slice<const float> b, size_t n, size_t k, size_t m,
            rust::Slice<float> c) {
  if (n == 0 || k == 0 || m == 0) {
    throw std::invalid_argument("matmul: dimensions must be positive");
  }
  if (a.size() != n * k || b.size() != k * m || c.size() != n * m) {
    throw std::invalid_argument("matmul: buffer sizes do not match the dimensions");
  }
  matmul_blocked(a.data(), b.data(), c.data(), n, k, m);
}

}  // namespace edgerun
