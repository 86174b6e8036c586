// The cells whose candidate reads u = r ⊙ h_prev through its own matrix: gru_cho, mut1, mut2, mut3.
// Two (mut3: three) recurrent GEMMs per step, so each step is GEMM, pointwise, GEMM, pointwise.
//
//   xw blocks   gru_cho [r, z, h̃]       mut1-3 [z, r, h̃]
//   h_t         gru_cho z ⊙ h_prev + (1-z) ⊙ h̃      mut  (1-z) ⊙ h_prev + z ⊙ h̃
//   caches      0: the two gates in xw order (2H)  1: h̃ (H)  2: u = r ⊙ h_prev (H)  3: tanh(h_prev) (mut3),
//               tanh(x̃) (mut1 given x̃ raw)
//
// The layer's native path leaves b_xh out of the input projection (one pass over xw less forward, one sum
// of dxw less backward): the loop adds it (r.xb, the last parameter, zeros where xw holds it) and sums its
// gradient as it goes (r.dxb). MUT1's projection then has no pass of its own either: xw's h̃ block holds x̃
// itself (r.raw), the loop takes tanh(x̃), and dxw's h̃ block is dL/dx̃ = da_h̃ ⊙ (1 - tanh²(x̃)), while
// da_h̃, which the candidate's GEMMs read, goes to a buffer of its own (dhw). Where x̃ = x (D = H) even the
// copy of x into xw goes: xw is [z, r] only and the loop reads x̃ from the layer's input (r.xt), writing
// dL/dx̃ to a buffer (r.dxt) in which the projection's backward then forms dx.
//
// As in cells_basic.h the pointwise passes take a range of hidden units [j0, j1), so the same code runs
// all units in one thread (fwd, bwd) or one slab per thread (split.h, split_gated_*).
#pragma once
#include "cells_basic.h"

namespace rnnkit {

enum class Kind { Cho, M1, M2, M3 };

template <typename T, Kind K>
struct Gated {
  static constexpr Kind kind = K;
  static constexpr bool cho = K == Kind::Cho;
  static constexpr int64_t zcol = cho ? 1 : 0, rcol = cho ? 0 : 1;  // block of z and r in xw
  static constexpr int cand = K == Kind::M3 ? 2 : 1;                 // the candidate's matrix in P

  static constexpr int xb_param = K == Kind::M3 ? 3 : 2;  // b_xh's place in P, after the matrices

  static std::vector<int64_t> widths(int64_t H, bool raw) {
    return K == Kind::M3 || (K == Kind::M1 && raw) ? std::vector<int64_t>{2 * H, H, H, H}
                                                   : std::vector<int64_t>{2 * H, H, H};
  }
  static std::vector<GradSpec> grads(int64_t H, bool raw) {
    if (K == Kind::M3) return {{0, false, 0, H, 3, -1}, {1, false, H, H, -1, -1}, {2, false, 2 * H, H, 2, -1}};
    const int64_t c0 = K == Kind::M1 ? H : 0, w = K == Kind::M1 ? H : 2 * H;
    if (K == Kind::M1 && raw) return {{0, false, c0, w, -1, -1}, {1, true, 0, H, 2, -1}};  // da_h̃ in dhw
    return {{0, false, c0, w, -1, -1}, {1, false, 2 * H, H, 2, -1}};
  }
  // Where BPTT keeps da_h̃ of step t, the candidate GEMMs' operand: dxw's h̃ block, or dhw (mut1 raw).
  static T* dah_row(const Run<T>& r, int64_t t) {
    return K == Kind::M1 && r.raw ? r.dhw + t * r.B * r.H : r.dxw + t * r.B * r.X + 2 * r.H;
  }
  static int64_t dah_ld(const Run<T>& r) { return K == Kind::M1 && r.raw ? r.H : r.X; }
  // x̃ of row b at step t before its tanh (mut1 raw), and where dL/dx̃ goes: xw's h̃ block, or r.xt (see Run).
  static const T* xt_row(const Run<T>& r, int64_t t, int64_t b) {
    return r.xt ? r.xt + (t * r.B + b) * r.H : r.xw + (t * r.B + b) * r.X + 2 * r.H;
  }
  static T* dxt_row(const Run<T>& r, int64_t t, int64_t b) {
    return r.dxt ? r.dxt + (t * r.B + b) * r.H : r.dxw + (t * r.B + b) * r.X + 2 * r.H;
  }

  static void th_units(Run<T>& r, int64_t t, int64_t j0, int64_t j1) {  // mut3: tanh(h_prev), W_hz's operand
    const int64_t H = r.H;
    const T* __restrict hp = r.h(r.prev(t));
    T* __restrict TH = r.C(3, t, H);
    for (int64_t b = r.b0; b < r.b1; ++b) {
      RNNKIT_SIMD
      for (int64_t j = b * H + j0; j < b * H + j1; ++j) TH[j] = tanh_(hp[j]);
    }
  }

  // The gates of units [j0, j1), then u = r ⊙ h_prev. Their recurrent pre-activations: block k of unit j at
  // p[b·ldp + k·gs + j - j0], two blocks in xw order (mut1: the r block only, as block 0).
  static void gates_units(Run<T>& r, int64_t t, const T* p, int64_t ldp, int64_t gs, int64_t j0, int64_t j1) {
    const int64_t B = r.B, H = r.H;
    const T* hp = r.h(r.prev(t));
    const T* __restrict xb = r.xb;
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict x = r.xw + (t * B + b) * r.X;
      const T* __restrict q = p + b * ldp - j0;
      const T* __restrict h0 = hp + b * H;
      T* __restrict g = r.C(0, t, 2 * H) + b * 2 * H;
      T* __restrict u = r.C(2, t, H) + b * H;
      if (K == Kind::M1) {  // z = σ(xw_z) has no recurrent term
        RNNKIT_SIMD
        for (int64_t j = j0; j < j1; ++j)
          g[j] = sigmoid(x[j] + xb[j]), g[H + j] = sigmoid(x[H + j] + xb[H + j] + q[j]);
      } else {
        RNNKIT_SIMD
        for (int64_t j = j0; j < j1; ++j)
          g[j] = sigmoid(x[j] + xb[j] + q[j]), g[H + j] = sigmoid(x[H + j] + xb[H + j] + q[gs + j]);
      }
      RNNKIT_SIMD
      for (int64_t j = j0; j < j1; ++j) u[j] = g[rcol * H + j] * h0[j];
    }
  }

  // The candidate h̃ and h_t of units [j0, j1); the candidate's recurrent term at p[b·ldp + j - j0].
  static void cand_units(Run<T>& r, int64_t t, const T* p, int64_t ldp, int64_t j0, int64_t j1) {
    if (K == Kind::M1 && r.raw) return cand_rows<true>(r, t, p, ldp, j0, j1);
    cand_rows<false>(r, t, p, ldp, j0, j1);
  }
  template <bool raw>  // raw: x̃ in xw, tanh(x̃) into cache 3
  static void cand_rows(Run<T>& r, int64_t t, const T* p, int64_t ldp, int64_t j0, int64_t j1) {
    const int64_t B = r.B, H = r.H;
    const T* hp = r.h(r.prev(t));
    T* hn = r.h(r.next(t));
    const T* __restrict xb = r.xb + 2 * H;
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict x = raw ? xt_row(r, t, b) : r.xw + (t * B + b) * r.X + 2 * H;
      const T* __restrict q = p + b * ldp - j0;
      const T* __restrict h0 = hp + b * H;
      const T* __restrict z = r.C(0, t, 2 * H) + b * 2 * H + zcol * H;
      T* __restrict hc = r.C(1, t, H) + b * H;
      T* __restrict tx = raw ? r.C(3, t, H) + b * H : nullptr;
      T* __restrict h = hn + b * H;
      T* __restrict out = r.out(t, b);
      const T m = r.m(t, b) ? T(1) : T(0);
      RNNKIT_SIMD
      for (int64_t j = j0; j < j1; ++j) {
        T a = x[j];
        if constexpr (raw) a = tanh_(a), tx[j] = a;
        const T v = tanh_(a + xb[j] + q[j]);
        const T h_t = cho ? v + z[j] * (h0[j] - v) : h0[j] + z[j] * (v - h0[j]);
        hc[j] = v, h[j] = m != T(0) ? h_t : h0[j], out[j] = m != T(0) ? h_t : T(0);
      }
    }
  }

  static void fwd(Run<T>& r, int64_t t) {
    const int64_t H = r.H;
    const T* hp = r.h(r.prev(t));
    T *p0 = r.tmp[0], *p2 = r.tmp[2];
    if (K == Kind::M3) {
      th_units(r, t, 0, H);
      r.mul_wt(0, H, H, r.C(3, t, H), H, p0, 2 * H);  // z block
      r.mul_wt(1, H, H, hp, H, p0 + H, 2 * H);        // r block
      gates_units(r, t, p0, 2 * H, H, 0, H);
    } else if (K == Kind::M1) {
      r.mul_wt(0, H, H, hp, H, p0, H);
      gates_units(r, t, p0, H, H, 0, H);
    } else {
      r.mul_wt(0, 2 * H, H, hp, H, p0, 2 * H);
      gates_units(r, t, p0, 2 * H, H, 0, H);
    }
    r.mul_wt(cand, H, H, r.C(2, t, H), H, p2, H);
    cand_units(r, t, p2, H, 0, H);
  }

  // Backward, first pass over units [j0, j1): da_h̃ and da_z (and mut1 raw: dL/dx̃).
  static void bwd1_units(Run<T>& r, int64_t t, int64_t j0, int64_t j1) {
    if (K == Kind::M1 && r.raw) return bwd1_rows<true>(r, t, j0, j1);
    bwd1_rows<false>(r, t, j0, j1);
  }
  template <bool raw>
  static void bwd1_rows(Run<T>& r, int64_t t, int64_t j0, int64_t j1) {
    const int64_t B = r.B, H = r.H, X = r.X;
    const T* hp = r.h(r.prev(t));
    T* dxw = r.dxw + t * B * X;
    T* __restrict db = r.dxb;
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict g = r.C(0, t, 2 * H) + b * 2 * H;
      const T* __restrict hc = r.C(1, t, H) + b * H;
      const T* __restrict tx = raw ? r.C(3, t, H) + b * H : nullptr;
      const T* __restrict h0 = hp + b * H;
      const T* __restrict dh = r.dh + b * H;
      T* __restrict dx = dxw + b * X;
      T* __restrict dxt = raw ? dxt_row(r, t, b) : nullptr;
      T* __restrict dah = dah_row(r, t) + b * dah_ld(r);
      if (!r.m(t, b)) {  // padded: no gradient (not m · dh: 0 · inf is NaN, see GRU's bwd_units); bwd2 passes dh
        RNNKIT_SIMD
        for (int64_t j = j0; j < j1; ++j) {
          dah[j] = T(0), dx[zcol * H + j] = T(0);
          if constexpr (raw) dxt[j] = T(0);
        }
        continue;
      }
      RNNKIT_SIMD
      for (int64_t j = j0; j < j1; ++j) {
        const T z = g[zcol * H + j], v = hc[j], d = dh[j];
        const T ah = d * (cho ? T(1) - z : z) * (T(1) - v * v);
        const T az = d * (cho ? h0[j] - v : v - h0[j]) * z * (T(1) - z);
        dah[j] = ah, dx[zcol * H + j] = az;
        if constexpr (raw) dxt[j] = ah * (T(1) - tx[j] * tx[j]);
        db[2 * H + j] += ah, db[zcol * H + j] += az;
      }
    }
  }

  // Second pass: da_r and dh_prev's direct part, from du = da_h̃ W_h (and mut3's dzt = da_z W_hz), (B, H) each.
  static void bwd2_units(Run<T>& r, int64_t t, const T* du, const T* dzt, int64_t j0, int64_t j1) {
    const int64_t B = r.B, H = r.H, X = r.X;
    const T* hp = r.h(r.prev(t));
    T* dxw = r.dxw + t * B * X;
    T* __restrict db = r.dxb;
    for (int64_t b = r.b0; b < r.b1; ++b) {
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
      for (int64_t j = j0; j < j1; ++j) {
        const T z = g[zcol * H + j], rg = g[rcol * H + j];
        const T ar = m != T(0) ? u[j] * h0[j] * rg * (T(1) - rg) : T(0);
        dx[rcol * H + j] = ar, db[rcol * H + j] += ar;
        T d = dh[j] * (cho ? z : T(1) - z) + u[j] * rg;
        if (K == Kind::M3) d += w[j] * (T(1) - th[j] * th[j]);
        dH[j] = m != T(0) ? d : dh[j];
      }
    }
  }

  // The last GEMM of a BPTT step: dh_prev += da_r W_hr (mut1, mut3) or [da_0, da_1] W_g (gru_cho, mut2).
  static int rz_param() { return K == Kind::M3 ? 1 : 0; }
  static int64_t rz_col(int64_t H) { return K == Kind::M3 || K == Kind::M1 ? H : 0; }
  static int64_t rz_width(int64_t H) { return K == Kind::M3 || K == Kind::M1 ? H : 2 * H; }

  static void bwd(Run<T>& r, int64_t t) {
    const int64_t H = r.H, X = r.X;
    T *dxw = r.dxw + t * r.B * X, *du = r.tmp[0], *dzt = r.tmp[1];
    bwd1_units(r, t, 0, H);
    r.mul_w(cand, false, H, H, dah_row(r, t), dah_ld(r), T(0), du, H);
    if (K == Kind::M3) r.mul_w(0, false, H, H, dxw, X, T(0), dzt, H);
    bwd2_units(r, t, du, dzt, 0, H);
    r.mul_w(rz_param(), false, H, rz_width(H), dxw + rz_col(H), X, T(1), r.dH, H);
  }
};

}  // namespace rnnkit
