// What every cell's step sees: sizes, the whole-sequence buffers, and a row-major GEMM.
//
// Layout (time-major, contiguous).  t is real time, whatever the direction:
//   xw   (T, B, X)    input projection         hs  (T, B, H)   outputs (0 past a sequence's end)
//   HH   (T+1, B, H)  states: forward keeps h_t in slot t+1 and h_0 in slot 0; reverse keeps h_t in
//                     slot t and h_0 in slot T, so h_prev of step t is slot t (fwd) or t+1 (rev) and
//                     HH[prev slots] lines up row for row with dpre (T, B, ·): dW = dpreᵀ h_prev is ONE GEMM.
//   caches (T, B, ·)  what the backward step reads (gate activations, h̃, u = r ⊙ h_prev, ...)
#pragma once
#include <ATen/ATen.h>

#include <vector>

extern "C" {  // BLAS inside libtorch_cpu (MKL); weak, so a build without it falls back to ATen
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
            const int*, const float*, const int*, const float*, float*, const int*) __attribute__((weak));
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*,
            const int*, const double*, const int*, const double*, double*, const int*) __attribute__((weak));
}

namespace rnnkit {

template <typename T>
void blas(char ta, char tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb, T beta,
          T* c, int ldc) {
  if constexpr (std::is_same_v<T, float>)
    sgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
  else
    dgemm_(&ta, &tb, &m, &n, &k, &alpha, a, &lda, b, &ldb, &beta, c, &ldc);
}

inline bool have_blas() { return sgemm_ != nullptr && dgemm_ != nullptr; }

// oneDNN's matmul inside libtorch (exported, header not shipped). On AMD Zen 4 it runs the per-step
// GEMMs of a 2x512 LSTM 1.3-1.45x faster than MKL's sgemm (measured here); on tiny GEMMs its per-call
// overhead loses, so only products of at least g_dnnl_min multiply-adds use it (RNNKIT_DNNL_MIN).
namespace native_ext {
inline int64_t g_dnnl_min = int64_t(1) << 23;
}
}  // namespace rnnkit
namespace at::native {
void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result, float beta, float alpha);
}
namespace rnnkit {

// C (M×N, row-major, ldc) = op(A) op(B) + beta·C with op(A) M×K, op(B) K×N.
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
  const bool dnnl = std::is_same_v<T, float> && M * N * K >= native_ext::g_dnnl_min && !at::in_parallel_region();
  if (have_blas() && !dnnl) {  // row-major C = op(A) op(B)  <=>  column-major Cᵀ = op(B)ᵀ op(A)ᵀ
    blas<T>(tb ? 'T' : 'N', ta ? 'T' : 'N', N, M, K, T(1), B, ldb, A, lda, beta, C, ldc);
    return;
  }
  auto o = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  auto a = at::from_blob(const_cast<T*>(A), {ta ? K : M, ta ? M : K}, {lda, 1}, o);
  auto b = at::from_blob(const_cast<T*>(B), {tb ? N : K, tb ? K : N}, {ldb, 1}, o);
  auto c = at::from_blob(C, {M, N}, {ldc, 1}, o);
  if (dnnl) {
    at::native::mkldnn_matmul(ta ? a.t() : a, tb ? b.t() : b, c, float(beta), 1.f);
  } else if (beta == T(0)) {
    at::mm_out(c, ta ? a.t() : a, tb ? b.t() : b);
  } else {
    c.addmm_(ta ? a.t() : a, tb ? b.t() : b, beta);
  }
}

template <typename T>
struct Run {
  int64_t T_, B, H, X;  // steps, batch, hidden, width of an xw row
  int64_t b0 = 0, b1 = 0;  // the rows this thread owns: rows never mix within the time loop
  bool reverse = false, keep = true;
  const T* xw = nullptr;
  const T* mask = nullptr;  // (T, B) of 0/1, or null
  std::vector<const T*> P;  // recurrent parameters in REC_PARAMS order (null = absent bias)
  T *hs = nullptr, *HH = nullptr, *CC = nullptr;
  std::vector<T*> cache;  // per-cell caches, each (T or 1, B, width)
  std::vector<T*> tmp;    // per-step scratch, (B, up to 4H) each
  // backward
  const T* dhs = nullptr;
  T *dxw = nullptr, *dhw = nullptr, *dalpha = nullptr, *probe = nullptr;
  T *dH = nullptr, *dC = nullptr;  // (B, H): dL/dstate, carried from step t+1 down to step t
  T* dh = nullptr;                 // (B, H): the total dL/dh_t = dH + m_t ⊙ dhs[t], formed before each step

  int64_t prev(int64_t t) const { return reverse ? t + 1 : t; }  // slot of h_prev for step t
  int64_t next(int64_t t) const { return reverse ? t : t + 1; }   // slot of h_t
  int64_t c(int64_t t) const { return keep ? t : 0; }            // cache index (1 slot when not kept)
  bool m(int64_t t, int64_t b) const { return mask == nullptr || mask[t * B + b] != T(0); }
  T* h(int64_t slot) const { return HH + slot * B * H; }
  T* cs(int64_t slot) const { return CC + slot * B * H; }
  T* C(int k, int64_t t, int64_t width) const { return cache[k] + c(t) * B * width; }
  // this thread's rows of C (B×N) = A (B×K) op(W) + beta·C, W stored (N×K) when tw, else (K×N)
  void rows_gemm(bool tw, int64_t N, int64_t K, const T* A, int64_t lda, const T* W, int64_t ldw, T beta, T* C,
                 int64_t ldc) const {
    gemm<T>(false, tw, b1 - b0, N, K, A + b0 * lda, lda, W, ldw, beta, C + b0 * ldc, ldc);
  }
};

}  // namespace rnnkit
