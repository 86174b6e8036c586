// Branch-free exp, sigmoid and tanh that the compiler vectorises inside the pointwise loops.
//
// float:  Cephes-style polynomials (a few ulp; the float32 tests allow 1e-5).
// double: the C library (exact enough for the float64 tests at 1e-12; float64 is for checking).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

// The pointwise loops are independent across j; this tells the compiler so (-fopenmp-simd).
#define RNNKIT_SIMD _Pragma("omp simd")

namespace rnnkit {

// Asks for [p, p + n) in the cache ahead of use: issued before a step's GEMM, the lines its pointwise pass
// reads next arrive while the GEMM runs (they were written many steps ago and left the cache).
inline void prefetch(const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  for (size_t i = 0; i < n; i += 64) __builtin_prefetch(c + i, 0, 2);
}

// e^x for x not NaN (a NaN gives some number: the callers test for NaN themselves, see sigmoid).
inline float fexp(float x) {
  const float x0 = x;
  x = x > -87.3f ? (x < 88.3f ? x : 88.3f) : -87.3f;  // NaN too: its conversion to int below would be UB
  const float n = (x * 1.44269504088896341f + 12582912.f) - 12582912.f;  // round(x / ln 2)
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float p;
  std::memcpy(&p, &bits, sizeof p);
  // past the clamp: 0 and inf as expf gives them, so that a saturated sigmoid is exactly 0 or 1 (its derivative
  // then 0 as in torch, not 4e-39, which a huge input turned into a visible weight gradient). NaN: see sigmoid.
  return x0 < -87.3f ? 0.f : (x0 > 88.3f ? INFINITY : y * p);
}

// ln x, branch-free (Cephes' logf): x = m 2^e with m in [√½, √2), ln x = e ln 2 + ln m, ln m a polynomial in m - 1.
// Subnormals are scaled by 2^23 first; 0 gives -inf, a negative x NaN, inf and NaN themselves, as torch's log.
// (std::log in a pointwise loop ran one value at a time: a traced cell built on log lost half the loop's gain.)
inline float flog(float x) {
  const bool tiny = x < 1.17549435e-38f;
  const float s = tiny ? x * 8388608.f : x;  // 2^23
  int32_t bits;
  std::memcpy(&bits, &s, sizeof bits);
  float e = float(((bits >> 23) & 0xff) - 126) - (tiny ? 23.f : 0.f);
  bits = (bits & 0x807fffff) | 0x3f000000;  // m in [0.5, 1)
  float m;
  std::memcpy(&m, &bits, sizeof m);
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1.f : e;
  m = low ? m + m - 1.f : m - 1.f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += e * -2.12194440e-4f;
  y -= 0.5f * z;
  const float r = m + y + e * 0.693359375f;
  return x > 0.f ? (x < INFINITY ? r : x) : x == 0.f ? -INFINITY : (x != x ? x : NAN);
}

// NaN in, NaN out, tested after the divide: with a NaN arm in fexp's select (x0 for a NaN x0), GCC split the
// divide of sigmoid and tanh over that select's arms, two vector divides for one (a pointwise pass of the LSTM
// with half its divides ran 6% faster alone; in the whole loop the change was lost in the noise).
inline float sigmoid(float x) {
  const float s = 1.f / (1.f + fexp(-x));
  return x != x ? x : s;
}
inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

inline float tanh_(float x) {
  const float a = x < 0.f ? -x : x;
  const float big = 1.f - 2.f / (fexp(2.f * a) + 1.f);
  const float z = x * x;
  float s = -5.70498872745e-3f;
  s = s * z + 2.06390887954e-2f;
  s = s * z - 5.37397155531e-2f;
  s = s * z + 1.33314422036e-1f;
  s = s * z - 3.33332819422e-1f;
  s = s * z * a + a;
  const float r = a < 0.625f ? s : big;
  return x != x ? x : std::copysign(r, x);  // -0.0 gives -0.0, as torch.tanh
}
inline double tanh_(double x) { return std::tanh(x); }

}  // namespace rnnkit
