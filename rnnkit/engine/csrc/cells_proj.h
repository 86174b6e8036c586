// LSTM with a recurrent projection (rnnkit/cells/lstmp.py; torch.nn.LSTM's proj_size): two GEMMs a step.
//
//   forward:   a = h_prev W_hhᵀ (GEMM);  gates, c_t, u_t = o_t ⊙ tanh(c_t) (pointwise);  h_t = u_t W_hrᵀ (GEMM)
//   backward:  du = dh_t W_hr (GEMM);  the LSTM's pointwise backward with du for dh;  dh_prev += da W_hh (GEMM)
//              after the loop: dW_hh = Σ daᵀ h_prev, dW_hr = Σ dh_tᵀ u_t (one GEMM each)
//
// h_t has P = r.H units and c_t, the gates and u_t r.HC. Caches: [i f g o] (4HC), tanh(c_t) (HC), u_t (HC);
// backward keeps each step's dL/dh_t (W_hr's dpre, zero on padded rows) in dhw (T, B, P). Padded rows keep
// h and c and output 0, as in the LSTM. The rows run in one thread or split over threads (over_rows).
#pragma once
#include "cells_basic.h"

namespace rnnkit {

template <typename T>
struct LSTMP {
  static constexpr int64_t kGates = 4;
  static std::vector<int64_t> widths(int64_t HC) { return {4 * HC, HC, HC}; }
  static std::vector<GradSpec> grads(int64_t HC, int64_t P) {
    return {{0, false, 0, 4 * HC, -1, 1}, {2, true, 0, P, 2, -1}};  // W_hh (+ b_hh) from da, W_hr from dh_t
  }

  static void fwd(Run<T>& r, int64_t t) {
    const int64_t P = r.H, HC = r.HC;
    r.mul_wt(0, 4 * HC, P, r.h(r.prev(t)), P, r.tmp[0], 4 * HC);  // h_prev W_hhᵀ
    // the LSTM's pointwise pass: gates, c_t and u_t = o_t ⊙ tanh(c_t) (cache 2; the gates cached only for a backward)
    if (r.keep) LSTM<T>::template fwd_rows<true, true>(r, t, r.tmp[0], 4 * HC, HC, 0, HC);
    else LSTM<T>::template fwd_rows<false, true>(r, t, r.tmp[0], 4 * HC, HC, 0, HC);
    r.mul_wt(2, P, HC, r.C(2, t, HC), HC, r.h(r.next(t)), P);  // h_t = u_t W_hrᵀ
    const T* hp = r.h(r.prev(t));
    T* hn = r.h(r.next(t));
    for (int64_t b = r.b0; b < r.b1; ++b) {  // padded rows keep h_prev; outputs
      T* __restrict h = hn + b * P;
      T* __restrict out = r.out(t, b);
      if (r.m(t, b)) {
        std::copy(h, h + P, out);
      } else {
        std::copy(hp + b * P, hp + (b + 1) * P, h);
        std::fill(out, out + P, T(0));
      }
    }
  }

  static void bwd(Run<T>& r, int64_t t) {
    const int64_t B = r.B, P = r.H, H = r.HC;
    T* dhr = r.dhw + t * B * P;  // dL/dh_t of this step: W_hr's dpre
    for (int64_t b = r.b0; b < r.b1; ++b) {  // dh_prev's direct part: 0, or dh where the row is padded
      const T *dh = r.dh + b * P;
      if (r.m(t, b)) {
        std::copy(dh, dh + P, dhr + b * P);
        std::fill(r.dH + b * P, r.dH + (b + 1) * P, T(0));
      } else {
        std::fill(dhr + b * P, dhr + (b + 1) * P, T(0));
        std::copy(dh, dh + P, r.dH + b * P);
      }
    }
    T* du_all = r.tmp[1];
    r.mul_w(2, false, H, P, r.dh, P, T(0), du_all, H);  // du = dh_t W_hr
    LSTM<T>::template bwd_rows<true>(r, t, du_all, 0, H);  // the LSTM's pointwise backward, du for its dh
    r.mul_w(0, false, P, 4 * H, r.dxw + t * B * r.X, r.X, T(1), r.dH, P);  // dh_prev += da W_hh
  }
};

}  // namespace rnnkit
