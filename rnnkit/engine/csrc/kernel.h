// rnnkit's own float32 GEMM for the per-step products of the time loop, C (M×N) = A (M×K) op(W) + beta·C,
// with op(W) packed once per loop into panels of 32 columns (AVX-512 only; elsewhere the libraries run).
//
// Why: MKL's packed GEMM runs the narrow per-step shapes of small cells at 140-175 GFLOP/s on one Sapphire
// Rapids core (M = 16 rows, N = K = 128: a 1x128 cell with the batch split over 2 threads), against 190-215
// for this kernel, which has no per-call dispatch and keeps an 8×32 block of C in 16 registers while the
// 8 rows of A stream as broadcasts and W's panel as two vector loads a step of k:
//
//   for each panel p of 32 columns:  for each block of 8 rows i:
//       c[i..i+8, 32p..32p+32] = Σ_k a[i.., k] ⊗ Wp[p][k, 0..32]          (16 FMAs per k, 2 loads + 8 broadcasts)
//
// run.h (StepW option 4) runs it; step_weight and thread_weight choose it per shape by timing it against MKL.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#define RNNKIT_OWN_GEMM 1
#else
#define RNNKIT_OWN_GEMM 0
#endif

namespace rnnkit::kernel {

constexpr int64_t kPanel = 32;  // columns of C (and of op(W)) per panel
constexpr int64_t kRows = 8;    // rows of C per register block

// Floats that pack() writes for op(W) of N columns and K rows (panels zero-padded to 32 columns).
inline int64_t packed_size(int64_t N, int64_t K) { return (N + kPanel - 1) / kPanel * kPanel * K; }

// op(W) into panels: column n, row k of op(W) at P[(n / 32)·32K + 32k + n % 32]. op(W) = Wᵀ (W stored N×K,
// leading dimension ldw) when tw, else W (stored K×N). Wᵀ goes in tiles of 32 rows of W × 16 of its columns
// (32 cache lines in, 2 KB of the panel out, all in L1): read a column at a time, 32 rows apart, packing a 2x512
// LSTM's 4 MB W_hh took 2.3 ms, more than 30 of its steps at batch 1 (it is packed anew at every call of 8 steps
// or more, as the weights may have changed since).
inline void pack(const float* W, int64_t ldw, bool tw, int64_t N, int64_t K, float* P) {
  constexpr int64_t kTile = 16;
  for (int64_t p = 0; p < N; p += kPanel) {
    const int64_t w = std::min(kPanel, N - p);
    float* panel = P + p * K;
    if (!tw) {
      for (int64_t k = 0; k < K; ++k) {
        float* dst = panel + k * kPanel;
        std::memcpy(dst, W + k * ldw + p, size_t(w) * sizeof(float));
        std::fill(dst + w, dst + kPanel, 0.f);
      }
      continue;
    }
    for (int64_t k0 = 0; k0 < K; k0 += kTile) {
      const int64_t kn = std::min(kTile, K - k0);
      float* dst = panel + k0 * kPanel;
      for (int64_t c = 0; c < w; ++c) {
        const float* src = W + (p + c) * ldw + k0;
        for (int64_t k = 0; k < kn; ++k) dst[k * kPanel + c] = src[k];
      }
      for (int64_t c = w; c < kPanel; ++c)
        for (int64_t k = 0; k < kn; ++k) dst[k * kPanel + c] = 0.f;
    }
  }
}

#if RNNKIT_OWN_GEMM
// One block: MR rows of C, one panel (two vectors, masks m0/m1 for a panel cut short by N).
template <int MR>
inline void block(int64_t K, const float* A, int64_t lda, const float* P, float beta, float* C, int64_t ldc,
                  __mmask16 m0, __mmask16 m1) {
  __m512 c0[MR], c1[MR];
  for (int i = 0; i < MR; ++i) c0[i] = _mm512_setzero_ps(), c1[i] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; ++k) {
    const __m512 w0 = _mm512_loadu_ps(P + k * kPanel), w1 = _mm512_loadu_ps(P + k * kPanel + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(A[i * lda + k]);
      c0[i] = _mm512_fmadd_ps(a, w0, c0[i]);
      c1[i] = _mm512_fmadd_ps(a, w1, c1[i]);
    }
  }
  for (int i = 0; i < MR; ++i) {
    float* c = C + i * ldc;
    if (beta != 0.f) {
      const __m512 b = _mm512_set1_ps(beta);
      c0[i] = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(m0, c), c0[i]);
      c1[i] = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(m1, c + 16), c1[i]);
    }
    _mm512_mask_storeu_ps(c, m0, c0[i]);
    _mm512_mask_storeu_ps(c + 16, m1, c1[i]);
  }
}

// C = A op(W) + beta·C with op(W) packed by pack().
inline void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* P, float beta, float* C,
                 int64_t ldc) {
  for (int64_t p = 0; p < N; p += kPanel) {
    const int64_t w = std::min(kPanel, N - p);
    const __mmask16 m0 = w >= 16 ? 0xFFFF : __mmask16((1u << w) - 1);
    const __mmask16 m1 = w >= 32 ? 0xFFFF : w > 16 ? __mmask16((1u << (w - 16)) - 1) : 0;
    const float* Pp = P + p * K;
    int64_t i = 0;
    for (; i + kRows <= M; i += kRows) block<8>(K, A + i * lda, lda, Pp, beta, C + i * ldc + p, ldc, m0, m1);
    const float* a = A + i * lda;
    float* c = C + i * ldc + p;
    switch (M - i) {
      case 7: block<7>(K, a, lda, Pp, beta, c, ldc, m0, m1); break;
      case 6: block<6>(K, a, lda, Pp, beta, c, ldc, m0, m1); break;
      case 5: block<5>(K, a, lda, Pp, beta, c, ldc, m0, m1); break;
      case 4: block<4>(K, a, lda, Pp, beta, c, ldc, m0, m1); break;
      case 3: block<3>(K, a, lda, Pp, beta, c, ldc, m0, m1); break;
      case 2: block<2>(K, a, lda, Pp, beta, c, ldc, m0, m1); break;
      case 1: block<1>(K, a, lda, Pp, beta, c, ldc, m0, m1); break;
      default: break;
    }
  }
}
#else
inline void gemm(int64_t, int64_t, int64_t, const float*, int64_t, const float*, float, float*, int64_t) {}
#endif

}  // namespace rnnkit::kernel
