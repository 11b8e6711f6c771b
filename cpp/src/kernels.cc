#include "edgerun-cpp/include/kernels.h"
#include "edgerun-cpp/src/lib.rs.h"

#include <algorithm>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
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
// One clone per instruction-set level, picked at load time (ifunc): the binary runs on any
// x86-64 and uses AVX-512 or AVX2+FMA where the CPU has them.
#define EDGERUN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EDGERUN_CLONES
#endif

// GEMM in the BLIS/GotoBLAS shape: B is packed into 16-wide column panels per (k, j) block,
// and a 6x16 micro-kernel keeps its C tile in registers for the whole k block (12 vector
// accumulators, 2 loads of B and 6 broadcasts of A per 12 FMAs).
typedef float v8 __attribute__((vector_size(32)));

constexpr size_t MR = 6;
constexpr size_t NR = 16;
constexpr size_t KC = 256;
constexpr size_t NC = 1024;

inline v8 load8(const float* p) {
  v8 v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}

inline void store8(float* p, v8 v) { __builtin_memcpy(p, &v, sizeof v); }

// c (mr x nr, row stride ldc) += a (mr x kc, row stride lda) * bp (kc x 16, packed).
EDGERUN_CLONES
void micro_6x16(size_t kc, const float* __restrict a, size_t lda, const float* __restrict bp,
                float* __restrict c, size_t ldc, size_t mr, size_t nr) {
  v8 acc[MR][2] = {};
  for (size_t k = 0; k < kc; ++k) {
    const v8 b0 = load8(bp + k * NR);
    const v8 b1 = load8(bp + k * NR + 8);
    for (size_t r = 0; r < MR; ++r) {
      const v8 av = v8{} + a[(r < mr ? r : 0) * lda + k];
      acc[r][0] += av * b0;
      acc[r][1] += av * b1;
    }
  }
  if (mr == MR && nr == NR) {
    for (size_t r = 0; r < MR; ++r) {
      store8(c + r * ldc, load8(c + r * ldc) + acc[r][0]);
      store8(c + r * ldc + 8, load8(c + r * ldc + 8) + acc[r][1]);
    }
    return;
  }
  float tile[MR][NR];
  for (size_t r = 0; r < MR; ++r) {
    store8(tile[r], acc[r][0]);
    store8(tile[r] + 8, acc[r][1]);
  }
  for (size_t r = 0; r < mr; ++r) {
    for (size_t j = 0; j < nr; ++j) {
      c[r * ldc + j] += tile[r][j];
    }
  }
}

void matmul_blocked(const float* __restrict a, const float* __restrict b, float* __restrict c,
                    size_t n, size_t k, size_t m) {
  std::fill(c, c + n * m, 0.0f);
  std::vector<float> bp(KC * NC);
  for (size_t jc = 0; jc < m; jc += NC) {
    const size_t nc = std::min(NC, m - jc);
    const size_t panels = (nc + NR - 1) / NR;
    for (size_t pc = 0; pc < k; pc += KC) {
      const size_t kc = std::min(KC, k - pc);
      // Pack B[pc..pc+kc][jc..jc+nc] into panels of NR columns, zero-padded.
      for (size_t p = 0; p < panels; ++p) {
        float* dst = bp.data() + p * kc * NR;
        const size_t j0 = jc + p * NR;
        const size_t w = std::min(NR, m - j0);
        for (size_t kk = 0; kk < kc; ++kk) {
          const float* src = b + (pc + kk) * m + j0;
          size_t j = 0;
          for (; j < w; ++j) dst[kk * NR + j] = src[j];
          for (; j < NR; ++j) dst[kk * NR + j] = 0.0f;
        }
      }
      for (size_t ic = 0; ic < n; ic += MR) {
        const size_t mr = std::min(MR, n - ic);
        for (size_t p = 0; p < panels; ++p) {
          const size_t j0 = jc + p * NR;
          micro_6x16(kc, a + ic * k + pc, k, bp.data() + p * kc * NR, c + ic * m + j0, m, mr,
                     std::min(NR, m - j0));
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

namespace edgerun {

namespace {

void check(bool ok, const char* what) {
  if (!ok) {
    throw std::invalid_argument(what);
  }
}

}  // namespace

void conv2d(rust::Slice<const float> img, size_t h, size_t w, rust::Slice<const float> k, size_t kh,
            size_t kw, rust::Slice<float> out) {
  check(h > 0 && w > 0 && img.size() == h * w && out.size() == h * w, "conv2d: image size");
  check(kh % 2 == 1 && kw % 2 == 1 && k.size() == kh * kw, "conv2d: kernel sides must be odd");
  const long rh = static_cast<long>(kh / 2);
  const long rw = static_cast<long>(kw / 2);
  const long H = static_cast<long>(h);
  const long W = static_cast<long>(w);
  std::fill(out.begin(), out.end(), 0.0f);
  // For each kernel tap, add a shifted row slice: the inner loop is contiguous and vectorises.
  for (long i = 0; i < static_cast<long>(kh); ++i) {
    for (long j = 0; j < static_cast<long>(kw); ++j) {
      const float kv = k[static_cast<size_t>(i) * kw + static_cast<size_t>(j)];
      const long dy = i - rh;
      const long dx = j - rw;
      const long y0 = std::max(0L, -dy), y1 = std::min(H, H - dy);
      const long x0 = std::max(0L, -dx), x1 = std::min(W, W - dx);
      for (long y = y0; y < y1; ++y) {
        float* o = out.data() + y * W;
        const float* src = img.data() + (y + dy) * W + dx;
        for (long x = x0; x < x1; ++x) {
          o[x] += kv * src[x];
        }
      }
    }
  }
}

void sobel(rust::Slice<const float> img, size_t h, size_t w, rust::Slice<float> out) {
  check(h > 0 && w > 0 && img.size() == h * w && out.size() == h * w, "sobel: image size");
  const long H = static_cast<long>(h);
  const long W = static_cast<long>(w);
  auto at = [&](long y, long x) -> float {
    return (y < 0 || y >= H || x < 0 || x >= W) ? 0.0f : img[static_cast<size_t>(y * W + x)];
  };
  for (long y = 0; y < H; ++y) {
    for (long x = 0; x < W; ++x) {
      const float gx = -at(y - 1, x - 1) + at(y - 1, x + 1) - 2 * at(y, x - 1) + 2 * at(y, x + 1) -
                       at(y + 1, x - 1) + at(y + 1, x + 1);
      const float gy = -at(y - 1, x - 1) - 2 * at(y - 1, x) - at(y - 1, x + 1) + at(y + 1, x - 1) +
                       2 * at(y + 1, x) + at(y + 1, x + 1);
      out[static_cast<size_t>(y * W + x)] = std::sqrt(gx * gx + gy * gy);
    }
  }
}

void fft_magnitude(rust::Slice<const double> x, rust::Slice<double> out) {
  const size_t n = x.size();
  check(n >= 1 && (n & (n - 1)) == 0, "fft: length must be a power of two");
  check(out.size() == n / 2 + 1, "fft: output size");
  std::vector<double> re(x.begin(), x.end());
  std::vector<double> im(n, 0.0);
  // Iterative radix-2 Cooley-Tukey: bit reversal, then butterflies.
  for (size_t i = 1, j = 0; i < n; ++i) {
    size_t bit = n >> 1;
    for (; j & bit; bit >>= 1) {
      j ^= bit;
    }
    j ^= bit;
    if (i < j) {
      std::swap(re[i], re[j]);
    }
  }
  const double pi = 3.14159265358979323846;
  for (size_t len = 2; len <= n; len <<= 1) {
    const double ang = -2.0 * pi / static_cast<double>(len);
    for (size_t k = 0; k < len / 2; ++k) {
      const double wr = std::cos(ang * static_cast<double>(k));
      const double wi = std::sin(ang * static_cast<double>(k));
      for (size_t i = k; i < n; i += len) {
        const size_t j = i + len / 2;
        const double tr = re[j] * wr - im[j] * wi;
        const double ti = re[j] * wi + im[j] * wr;
        re[j] = re[i] - tr;
        im[j] = im[i] - ti;
        re[i] += tr;
        im[i] += ti;
      }
    }
  }
  for (size_t k = 0; k <= n / 2; ++k) {
    out[k] = std::sqrt(re[k] * re[k] + im[k] * im[k]);
  }
}

namespace {

constexpr uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

void sha256_block(uint32_t* hs, const uint8_t* p) {
  uint32_t w[64];
  for (int i = 0; i < 16; ++i) {
    w[i] = (uint32_t(p[4 * i]) << 24) | (uint32_t(p[4 * i + 1]) << 16) |
           (uint32_t(p[4 * i + 2]) << 8) | uint32_t(p[4 * i + 3]);
  }
  for (int i = 16; i < 64; ++i) {
    const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
    const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  uint32_t a = hs[0], b = hs[1], c = hs[2], d = hs[3], e = hs[4], f = hs[5], g = hs[6], h = hs[7];
  for (int i = 0; i < 64; ++i) {
    const uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    const uint32_t ch = (e & f) ^ (~e & g);
    const uint32_t t1 = h + S1 + ch + K256[i] + w[i];
    const uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    const uint32_t mj = (a & b) ^ (a & c) ^ (b & c);
    const uint32_t t2 = S0 + mj;
    h = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  hs[0] += a; hs[1] += b; hs[2] += c; hs[3] += d;
  hs[4] += e; hs[5] += f; hs[6] += g; hs[7] += h;
}

}  // namespace

void sha256(rust::Slice<const uint8_t> data, rust::Slice<uint8_t> out) {
  check(out.size() == 32, "sha256: output size");
  uint32_t hs[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                    0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const size_t n = data.size();
  size_t off = 0;
  for (; off + 64 <= n; off += 64) {
    sha256_block(hs, data.data() + off);
  }
  uint8_t tail[128] = {0};
  const size_t rem = n - off;
  std::copy(data.begin() + static_cast<long>(off), data.end(), tail);
  tail[rem] = 0x80;
  const size_t tail_len = (rem + 9 <= 64) ? 64 : 128;
  const uint64_t bits = static_cast<uint64_t>(n) * 8;
  for (int i = 0; i < 8; ++i) {
    tail[tail_len - 1 - i] = static_cast<uint8_t>(bits >> (8 * i));
  }
  for (size_t b = 0; b < tail_len; b += 64) {
    sha256_block(hs, tail + b);
  }
  for (int i = 0; i < 8; ++i) {
    out[4 * i] = static_cast<uint8_t>(hs[i] >> 24);
    out[4 * i + 1] = static_cast<uint8_t>(hs[i] >> 16);
    out[4 * i + 2] = static_cast<uint8_t>(hs[i] >> 8);
    out[4 * i + 3] = static_cast<uint8_t>(hs[i]);
  }
}

void sort_f64(rust::Slice<double> values) {
  for (double v : values) {
    check(!std::isnan(v), "sort: values must not be NaN");
  }
  std::sort(values.begin(), values.end());
}

rust::Vec<WindowOut> window_agg(rust::Slice<const int64_t> t, rust::Slice<const double> v,
                                int64_t window, int64_t slide, double z_threshold,
                                rust::Vec<Outlier>& outliers) {
  check(t.size() == v.size(), "window_agg: t and v differ in length");
  check(window > 0 && slide > 0, "window_agg: window and slide must be positive");
  rust::Vec<WindowOut> result;
  if (t.empty()) {
    return result;
  }
  std::vector<size_t> order(t.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return t[a] < t[b]; });
  const int64_t tmin = t[order.front()];
  const int64_t tmax = t[order.back()];
  // Windows start at multiples of `slide`; the first one that can hold tmin.
  auto floor_div = [](int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); };
  int64_t start = floor_div(tmin - window + slide, slide) * slide;
  if (start + window <= tmin) start += slide;
  size_t lo = 0;
  uint64_t index = 0;
  for (; start <= tmax; start += slide) {
    const int64_t end = start + window;
    while (lo < order.size() && t[order[lo]] < start) ++lo;
    size_t hi = lo;
    double sum = 0, mn = 0, mx = 0;
    uint64_t count = 0;
    while (hi < order.size() && t[order[hi]] < end) {
      const double x = v[order[hi]];
      if (count == 0) { mn = x; mx = x; }
      sum += x;
      mn = std::min(mn, x);
      mx = std::max(mx, x);
      ++count;
      ++hi;
    }
    if (count == 0) {
      continue;
    }
    const double mean = sum / static_cast<double>(count);
    double sq = 0;
    for (size_t i = lo; i < hi; ++i) {
      const double d = v[order[i]] - mean;
      sq += d * d;
    }
    const double sd = std::sqrt(sq / static_cast<double>(count));
    uint64_t anomalies = 0;
    if (sd > 0) {
      for (size_t i = lo; i < hi; ++i) {
        const double z = (v[order[i]] - mean) / sd;
        if (std::fabs(z) > z_threshold) {
          ++anomalies;
          outliers.push_back(Outlier{index, t[order[i]], v[order[i]], z});
        }
      }
    }
    result.push_back(WindowOut{start, end, count, sum, mean, mn, mx, anomalies});
    ++index;
  }
  return result;
}

bool release_free_memory() {
#if defined(__GLIBC__)
  return malloc_trim(0) != 0;
#else
  return false;
#endif
}

}  // namespace edgerun
