// The cells whose candidate reads u = r ⊙ h_prev through its own matrix: gru_cho, mut1, mut2, mut3.
// Two (mut3: three) recurrent GEMMs per step, so each step is GEMM, pointwise, GEMM, pointwise.
//
//   xw blocks   gru_cho [r, z, h̃]       mut1-3 [z, r, h̃]
//   h_t         gru_cho z ⊙ h_prev + (1-z) ⊙ h̃      mut  (1-z) ⊙ h_prev + z ⊙ h̃
//   caches      0: the two gates in xw order (2H)  1: h̃ (H)  2: u = r ⊙ h_prev (H)  3: tanh(h_prev) (mut3)
#pragma once
#include "cells_basic.h"

namespace rnnkit {

enum class Kind { Cho, M1, M2, M3 };

template <typename T, Kind K>
struct Gated {
  static constexpr bool cho = K == Kind::Cho;
  static constexpr int64_t zcol = cho ? 1 : 0, rcol = cho ? 0 : 1;  // block of z and r in xw

  static std::vector<int64_t> widths(int64_t H) {
    return K == Kind::M3 ? std::vector<int64_t>{2 * H, H, H, H} : std::vector<int64_t>{2 * H, H, H};
  }
  static std::vector<GradSpec> grads(int64_t H) {
    if (K == Kind::M3) return {{0, false, 0, H, 3, -1}, {1, false, H, H, -1, -1}, {2, false, 2 * H, H, 2, -1}};
    const int64_t c0 = K == Kind::M1 ? H : 0, w = K == Kind::M1 ? H : 2 * H;
    return {{0, false, c0, w, -1, -1}, {1, false, 2 * H, H, 2, -1}};
  }

  static void gates(Run<T>& r, int64_t t) {  // the gates' recurrent GEMM(s), then σ, then u = r ⊙ h_prev
    const int64_t B = r.B, H = r.H;
    const T* hp = r.h(r.prev(t));
    T *p0 = r.tmp[0], *p1 = r.tmp[1], *TH = K == Kind::M3 ? r.C(3, t, H) : nullptr;
    if (K == Kind::M3) {
      RNNKIT_SIMD
      for (int64_t i = r.b0 * H; i < r.b1 * H; ++i) TH[i] = tanh_(hp[i]);
      r.mul_wt(0, H, H, TH, H, p0, 2 * H);      // z block
      r.mul_wt(1, H, H, hp, H, p0 + H, 2 * H);  // r block
    } else if (K == Kind::M1) {
      r.mul_wt(0, H, H, hp, H, p1, H);
    } else {
      r.mul_wt(0, 2 * H, H, hp, H, p0, 2 * H);
    }
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict x = r.xw + (t * B + b) * r.X;
      const T* __restrict p = p0 + b * 2 * H;
      const T* __restrict q = p1 + b * H;
      const T* __restrict h0 = hp + b * H;
      T* __restrict g = r.C(0, t, 2 * H) + b * 2 * H;
      T* __restrict u = r.C(2, t, H) + b * H;
      if (K == Kind::M1) {  // z = σ(xw_z) has no recurrent term
        RNNKIT_SIMD
        for (int64_t j = 0; j < H; ++j) g[j] = sigmoid(x[j]), g[H + j] = sigmoid(x[H + j] + q[j]);
      } else {
        RNNKIT_SIMD
        for (int64_t j = 0; j < 2 * H; ++j) g[j] = sigmoid(x[j] + p[j]);
      }
      RNNKIT_SIMD
      for (int64_t j = 0; j < H; ++j) u[j] = g[rcol * H + j] * h0[j];
    }
  }

  static void fwd(Run<T>& r, int64_t t) {
    const int64_t B = r.B, H = r.H;
    gates(r, t);
    const T* hp = r.h(r.prev(t));
    T *p2 = r.tmp[2], *hn = r.h(r.next(t));
    r.mul_wt(K == Kind::M3 ? 2 : 1, H, H, r.C(2, t, H), H, p2, H);
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict x = r.xw + (t * B + b) * r.X + 2 * H;
      const T* __restrict p = p2 + b * H;
      const T* __restrict h0 = hp + b * H;
      const T* __restrict z = r.C(0, t, 2 * H) + b * 2 * H + zcol * H;
      T* __restrict hc = r.C(1, t, H) + b * H;
      T* __restrict h = hn + b * H;
      T* __restrict out = r.hs + (t * B + b) * H;
      const T m = r.m(t, b) ? T(1) : T(0);
      RNNKIT_SIMD
      for (int64_t j = 0; j < H; ++j) {
        const T v = tanh_(x[j] + p[j]);
        const T h_t = cho ? v + z[j] * (h0[j] - v) : h0[j] + z[j] * (v - h0[j]);
        hc[j] = v, h[j] = m != T(0) ? h_t : h0[j], out[j] = m != T(0) ? h_t : T(0);
      }
    }
  }

  static void bwd(Run<T>& r, int64_t t) {
    const int64_t B = r.B, H = r.H, X = r.X;
    const T* hp = r.h(r.prev(t));
    T* dxw = r.dxw + t * B * X;
    for (int64_t b = r.b0; b < r.b1; ++b) {  // da_h̃ and da_z
      const T* __restrict g = r.C(0, t, 2 * H) + b * 2 * H;
      const T* __restrict hc = r.C(1, t, H) + b * H;
      const T* __restrict h0 = hp + b * H;
      const T* __restrict dh = r.dh + b * H;
      T* __restrict dx = dxw + b * X;
      const T m = r.m(t, b) ? T(1) : T(0);
      RNNKIT_SIMD
      for (int64_t j = 0; j < H; ++j) {
        const T z = g[zcol * H + j], v = hc[j], d = m * dh[j];
        dx[2 * H + j] = d * (cho ? T(1) - z : z) * (T(1) - v * v);
        dx[zcol * H + j] = d * (cho ? h0[j] - v : v - h0[j]) * z * (T(1) - z);
      }
    }
    T *du = r.tmp[0], *dzt = r.tmp[1];
    r.mul_w(K == Kind::M3 ? 2 : 1, false, H, H, dxw + 2 * H, X, T(0), du, H);
    if (K == Kind::M3) r.mul_w(0, false, H, H, dxw, X, T(0), dzt, H);
    for (int64_t b = r.b0; b < r.b1; ++b) {  // da_r and the direct part of dh_prev
      const T* __restrict g = r.C(0, t, 2 * H) + b * 2 * H;
      const T* __restrict h0 = hp + b * H;
      const T* __restrict dh = r.dh + b * H;
      const T* __restrict u = du + b * H;
      const T* __restrict w = dzt + b * H;
      const T* __restrict th = K == Kind::M3 ? r.C(3, t, H) + b * H : h0;
      T* __restrict dx = dxw + b * X;
      T* __restrict dH = r.dH + b * H;
      const T m = r.m(t, b) ? T(1) : T(0);
      RNNKIT_SIMD
      for (int64_t j = 0; j < H; ++j) {
        const T z = g[zcol * H + j], rg = g[rcol * H + j];
        dx[rcol * H + j] = m != T(0) ? u[j] * h0[j] * rg * (T(1) - rg) : T(0);
        T d = dh[j] * (cho ? z : T(1) - z) + u[j] * rg;
        if (K == Kind::M3) d += w[j] * (T(1) - th[j] * th[j]);
        dH[j] = m != T(0) ? d : dh[j];
      }
    }
    if (K == Kind::M3 || K == Kind::M1)  // dh_prev += da_r W_hr
      r.mul_w(K == Kind::M3 ? 1 : 0, false, H, H, dxw + H, X, T(1), r.dH, H);
    else  // dh_prev += [da_r, da_z] W_hrz (cho) or [da_z, da_r] W_hzr (mut2)
      r.mul_w(0, false, H, 2 * H, dxw, X, T(1), r.dH, H);
  }
};

}  // namespace rnnkit
