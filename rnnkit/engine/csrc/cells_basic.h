// Elman (tanh, ReLU), leaky units, LSTM and GRU: one recurrent GEMM per step, forward and backward.
// Each step is the GEMM into a buffer, then ONE fused loop over the batch rows (the pointwise math of
// rnnkit/cells/*.py).  Padded rows (mask 0) keep their state, output 0 and pass dh straight through.
//
// Every cell here writes its pointwise math for a range of hidden units [j0, j1), so that the same code
// runs all units in one thread (one_gemm_fwd/bwd below) or one slab of units per thread (split.h):
//   fwd_units(r, t, pre, ldp, gs, j0, j1)   gate k of unit j reads pre[b·ldp + k·gs + j - j0]
//   bwd_units(r, t, j0, j1)                  writes da (the GEMM's operand: da_row(r, t), ld da_ld(r))
#pragma once
#include <cmath>

#include "fastmath.h"
#include "run.h"

namespace rnnkit {

// What the engine does after the loop: dU = dpreᵀ u as one GEMM (u: -1 = h_prev, k = cache k).
struct GradSpec {
  int param;
  bool from_dhw;
  int64_t col0, width;
  int u;
  int bias;  // param index of the bias summed from the same dpre, or -1
};

// Asks for blocks [k·bs + j0, k·bs + j1) of every row of a (T, B, ld) buffer at step t (see prefetch).
template <typename T>
void fetch_blocks(const Run<T>& r, const T* base, int64_t t, int64_t ld, int64_t blocks, int64_t bs, int64_t j0,
                  int64_t j1) {
  for (int64_t b = r.b0; b < r.b1; ++b)
    for (int64_t k = 0; k < blocks; ++k) prefetch(base + (t * r.B + b) * ld + k * bs + j0, (j1 - j0) * sizeof(T));
}

// One step of a one-GEMM cell over all units: the recurrent GEMM, then the pointwise pass.
template <typename T, typename Cell>
void one_gemm_fwd(Run<T>& r, int64_t t) {
  const int64_t H = r.H, G = Cell::kGates;
  fetch_blocks(r, r.xw, t, r.X, G, H, 0, H);  // arrives while the GEMM runs
  r.mul_wt(0, G * H, H, r.h(r.prev(t)), H, r.tmp[0], G * H);
  Cell::fwd_units(r, t, r.tmp[0], G * H, H, 0, H);
}

// Before step t's GEMM in BPTT: ask for what the next BPTT step's pointwise pass reads of units [j0, j1),
// dL/dh from above and the cell's own caches (Cell::fetch_bwd).
template <typename T, typename Cell>
void fetch_next_bwd(const Run<T>& r, int64_t t, int64_t j0, int64_t j1) {
  const int64_t next = r.reverse ? t + 1 : t - 1;
  if (next < 0 || next >= r.T_) return;
  for (int64_t b = r.b0; b < r.b1; ++b) prefetch(r.dout(next, b) + j0, (j1 - j0) * sizeof(T));
  Cell::fetch_bwd(r, next, j0, j1);
}

// One BPTT step of a one-GEMM cell: the pointwise pass, then dh_prev += da W_hh.
template <typename T, typename Cell>
void one_gemm_bwd(Run<T>& r, int64_t t) {
  const int64_t H = r.H, G = Cell::kGates;
  Cell::bwd_units(r, t, 0, H);
  fetch_next_bwd<T, Cell>(r, t, 0, H);
  r.mul_w(0, false, H, G * H, Cell::da_row(r, t), Cell::da_ld(r), T(1), r.dH, H);
}

template <typename T, bool relu>
struct Elman {  // h_t = φ(xw_t + h_prev W_hhᵀ + b_hh)
  static constexpr int64_t kGates = 1;
  static std::vector<int64_t> widths(int64_t) { return {}; }
  static std::vector<GradSpec> grads(int64_t H) { return {{0, false, 0, H, -1, 1}}; }
  static void fwd(Run<T>& r, int64_t t) { one_gemm_fwd<T, Elman>(r, t); }
  static void bwd(Run<T>& r, int64_t t) { one_gemm_bwd<T, Elman>(r, t); }
  static T* da_row(const Run<T>& r, int64_t t) { return r.dxw + t * r.B * r.X; }
  static int64_t da_ld(const Run<T>& r) { return r.X; }
  static void fetch_bwd(const Run<T>& r, int64_t t, int64_t j0, int64_t j1) {  // h_t
    fetch_blocks(r, r.at_next(r.HH), t, r.H, 1, r.H, j0, j1);
  }
  static void fwd_units(Run<T>& r, int64_t t, const T* pre, int64_t ldp, int64_t, int64_t j0, int64_t j1) {
    const int64_t B = r.B, H = r.H;
    const T *hp = r.h(r.prev(t)), *bias = r.P[1];
    T* hn = r.h(r.next(t));
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict x = r.xw + (t * B + b) * r.X;
      const T* __restrict p = pre + b * ldp - j0;
      const T* __restrict h0 = hp + b * H;
      T* __restrict h = hn + b * H;
      T* __restrict out = r.out(t, b);
      if (!r.m(t, b)) {
        RNNKIT_SIMD
        for (int64_t j = j0; j < j1; ++j) h[j] = h0[j], out[j] = T(0);
        continue;
      }
      RNNKIT_SIMD
      for (int64_t j = j0; j < j1; ++j) {
        const T a = x[j] + p[j] + bias[j];
        const T v = relu ? (a < T(0) ? T(0) : a) : tanh_(a);
        h[j] = v, out[j] = v;
      }
    }
  }
  static void bwd_units(Run<T>& r, int64_t t, int64_t j0, int64_t j1) {  // da = dh ⊙ φ'(a)
    const int64_t B = r.B, H = r.H;
    const T* hn = r.h(r.next(t));
    T* dxw = r.dxw + t * B * r.X;
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict h = hn + b * H;
      const T* __restrict dh = r.dh + b * H;
      T* __restrict da = dxw + b * r.X;
      T* __restrict dH = r.dH + b * H;
      const T m = r.m(t, b) ? T(1) : T(0);
      RNNKIT_SIMD
      for (int64_t j = j0; j < j1; ++j) {
        const T d = relu ? (h[j] <= T(0) ? T(0) : dh[j]) : dh[j] * (T(1) - h[j] * h[j]);
        da[j] = m != T(0) ? d : T(0), dH[j] = m != T(0) ? T(0) : dh[j];
      }
    }
  }
};

template <typename T>
struct Leaky {  // h̃ = tanh(xw_t + h_prev W_hhᵀ + b),  h_t = h_prev + α ⊙ (h̃ - h_prev);  cache: h̃
  static constexpr int64_t kGates = 1;
  static std::vector<int64_t> widths(int64_t H) { return {H}; }
  static std::vector<GradSpec> grads(int64_t H) { return {{0, false, 0, H, -1, 1}}; }
  static void fwd(Run<T>& r, int64_t t) { one_gemm_fwd<T, Leaky>(r, t); }
  static void bwd(Run<T>& r, int64_t t) { one_gemm_bwd<T, Leaky>(r, t); }
  static T* da_row(const Run<T>& r, int64_t t) { return r.dxw + t * r.B * r.X; }
  static int64_t da_ld(const Run<T>& r) { return r.X; }
  static void fetch_bwd(const Run<T>& r, int64_t t, int64_t j0, int64_t j1) {
    fetch_blocks(r, r.cache[0], t, r.H, 1, r.H, j0, j1);  // h̃
    fetch_blocks(r, r.at_prev(r.HH), t, r.H, 1, r.H, j0, j1);
  }
  static void fwd_units(Run<T>& r, int64_t t, const T* pre, int64_t ldp, int64_t, int64_t j0, int64_t j1) {
    const int64_t B = r.B, H = r.H;
    const T *hp = r.h(r.prev(t)), *bias = r.P[1], *alpha = r.P[2];
    T *hn = r.h(r.next(t)), *hc = r.C(0, t, H);
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict x = r.xw + (t * B + b) * r.X;
      const T* __restrict p = pre + b * ldp - j0;
      const T* __restrict h0 = hp + b * H;
      T* __restrict c = hc + b * H;
      T* __restrict h = hn + b * H;
      T* __restrict out = r.out(t, b);
      const T m = r.m(t, b) ? T(1) : T(0);
      RNNKIT_SIMD
      for (int64_t j = j0; j < j1; ++j) {
        const T v = tanh_(x[j] + p[j] + bias[j]);
        const T n = h0[j] + alpha[j] * (v - h0[j]);
        c[j] = v, h[j] = m != T(0) ? n : h0[j], out[j] = m != T(0) ? n : T(0);
      }
    }
  }
  // da = dh α (1-h̃²),  dα += dh (h̃ - h_prev),  dh_prev's direct part dh (1-α)
  static void bwd_units(Run<T>& r, int64_t t, int64_t j0, int64_t j1) {
    const int64_t B = r.B, H = r.H;
    const T *hp = r.h(r.prev(t)), *hc = r.C(0, t, H), *alpha = r.P[2];
    T* dxw = r.dxw + t * B * r.X;
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict c = hc + b * H;
      const T* __restrict h0 = hp + b * H;
      const T* __restrict dh = r.dh + b * H;
      T* __restrict da = dxw + b * r.X;
      T* __restrict dH = r.dH + b * H;
      T* __restrict dal = r.dalpha;
      if (!r.m(t, b)) {
        RNNKIT_SIMD
        for (int64_t j = j0; j < j1; ++j) da[j] = T(0), dH[j] = dh[j];
        continue;
      }
      RNNKIT_SIMD
      for (int64_t j = j0; j < j1; ++j) {
        da[j] = dh[j] * alpha[j] * (T(1) - c[j] * c[j]);
        dal[j] += dh[j] * (c[j] - h0[j]);
        dH[j] = dh[j] * (T(1) - alpha[j]);
      }
    }
  }
};

// The LSTM's pointwise backward for units [j0, j1) of one row: from dh (dL/dh_t) and dC (dL/dc_t), the
// gradients da of the four gate pre-activations (block stride H) and dc_prev (into dC); g: the four gate
// activations, tc: tanh(c_t), c0: c_prev. With zero_dH, dH[j] = 0 too (dh_prev's direct part of a valid row).
template <typename T, bool zero_dH>
inline void lstm_gate_grads(const T* __restrict g, const T* __restrict tc, const T* __restrict c0,
                            const T* __restrict dh, T* __restrict dC, T* __restrict da, T* __restrict dH,
                            int64_t H, int64_t j0, int64_t j1) {
  RNNKIT_SIMD
  for (int64_t j = j0; j < j1; ++j) {
    const T i_t = g[j], f_t = g[H + j], g_t = g[2 * H + j], o_t = g[3 * H + j], th = tc[j];
    const T dc = dC[j] + dh[j] * o_t * (T(1) - th * th);
    da[j] = dc * g_t * i_t * (T(1) - i_t);
    da[H + j] = dc * c0[j] * f_t * (T(1) - f_t);
    da[2 * H + j] = dc * i_t * (T(1) - g_t * g_t);
    da[3 * H + j] = dh[j] * th * o_t * (T(1) - o_t);
    dC[j] = dc * f_t;
    if constexpr (zero_dH) dH[j] = T(0);
  }
}

template <typename T>
struct LSTM {  // gates i, f, g, o;  caches: [i f g o] activations (4H), tanh(c_t) (H)
  static constexpr int64_t kGates = 4;
  static std::vector<int64_t> widths(int64_t H) { return {4 * H, H}; }
  static std::vector<GradSpec> grads(int64_t H) { return {{0, false, 0, 4 * H, -1, 1}}; }
  static void fwd(Run<T>& r, int64_t t) { one_gemm_fwd<T, LSTM>(r, t); }
  static void bwd(Run<T>& r, int64_t t) { one_gemm_bwd<T, LSTM>(r, t); }
  static T* da_row(const Run<T>& r, int64_t t) { return r.dxw + t * r.B * r.X; }
  static int64_t da_ld(const Run<T>& r) { return r.X; }
  // What bwd_units(t) reads from far away (besides dL/dh): gate activations, tanh(c_t) and c_prev of its units.
  static void fetch_bwd(const Run<T>& r, int64_t t, int64_t j0, int64_t j1) {
    fetch_blocks(r, r.cache[0], t, 4 * r.H, 4, r.H, j0, j1);
    fetch_blocks(r, r.cache[1], t, r.H, 1, r.H, j0, j1);
    fetch_blocks(r, r.at_prev(r.CC), t, r.H, 1, r.H, j0, j1);
  }
  // The pointwise part for hidden units [j0, j1): gate g of unit j reads pre[b·ldp + g·gs + j - j0]
  // (all units: ldp = 4H, gs = H; one thread's slab of units in split.h: ldp = 4·gs, gs = j1 - j0).
  static void fwd_units(Run<T>& r, int64_t t, const T* pre, int64_t ldp, int64_t gs, int64_t j0, int64_t j1) {
    if (r.keep) return fwd_rows<true>(r, t, pre, ldp, gs, j0, j1);
    fwd_rows<false>(r, t, pre, ldp, gs, j0, j1);  // no backward to follow: no caches written
  }
  // proj (lstmp, cells_proj.h): o_t ⊙ tanh(c_t) goes to cache 2 as u_t, of which a GEMM then makes h_t.
  template <bool keep, bool proj = false>
  static void fwd_rows(Run<T>& r, int64_t t, const T* pre, int64_t ldp, int64_t gs, int64_t j0, int64_t j1) {
    const int64_t B = r.B, H = r.HC;  // the units of c_t and of each gate: h_t's too, but in lstmp
    const T *hp = r.h(r.prev(t)), *cp = r.cs(r.prev(t)), *bias = r.P[1];
    T *hn = r.h(r.next(t)), *cn = r.cs(r.next(t));
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict x = r.xw + (t * B + b) * r.X;
      const T* __restrict p = pre + b * ldp - j0;
      const T* __restrict h0 = proj ? nullptr : hp + b * H;
      const T* __restrict c0 = cp + b * H;
      T* __restrict g = r.C(0, t, 4 * H) + b * 4 * H;
      T* __restrict tc = r.C(1, t, H) + b * H;
      T *__restrict h = proj ? r.C(2, t, H) + b * H : hn + b * H, *__restrict c = cn + b * H;
      T* __restrict out = proj ? nullptr : r.out(t, b);
      const T m = r.m(t, b) ? T(1) : T(0);
      RNNKIT_SIMD
      for (int64_t j = j0; j < j1; ++j) {
        const T i_t = sigmoid(x[j] + p[j] + bias[j]);
        const T f_t = sigmoid(x[H + j] + p[gs + j] + bias[H + j]);
        const T g_t = tanh_(x[2 * H + j] + p[2 * gs + j] + bias[2 * H + j]);
        const T o_t = sigmoid(x[3 * H + j] + p[3 * gs + j] + bias[3 * H + j]);
        // one FMA, spelled out: left to the compiler, the loop that keeps caches and the one that doesn't contracted
        // it each its own way, and evaluation's outputs were 1e-16 off training's (torch.nn's agree to the bit)
#ifdef __FMA__
        const T c_t = std::fma(f_t, c0[j], i_t * g_t), th = tanh_(c_t), h_t = o_t * th;
#else
        const T c_t = f_t * c0[j] + i_t * g_t, th = tanh_(c_t), h_t = o_t * th;
#endif
        if constexpr (keep) g[j] = i_t, g[H + j] = f_t, g[2 * H + j] = g_t, g[3 * H + j] = o_t, tc[j] = th;
        if constexpr (proj) h[j] = h_t, c[j] = m != T(0) ? c_t : c0[j];  // padded rows: h_t kept after the GEMM
        else h[j] = m != T(0) ? h_t : h0[j], c[j] = m != T(0) ? c_t : c0[j], out[j] = m != T(0) ? h_t : T(0);
      }
    }
  }
  // The pointwise part for hidden units [j0, j1): da of their four gates, dc_prev; dh_prev's direct part (0,
  // or dh where the row is padded) before the GEMM adds da W_hh.
  static void bwd_units(Run<T>& r, int64_t t, int64_t j0, int64_t j1) { bwd_rows<false>(r, t, r.dh, j0, j1); }
  // dh: dL/d(o_t ⊙ tanh c_t), (B, HC). proj (lstmp, cells_proj.h): that is du = dh_t W_hr, and the caller sets
  // dh_prev's direct part (h_t has other units than c_t there).
  template <bool proj>
  static void bwd_rows(Run<T>& r, int64_t t, const T* dh_all, int64_t j0, int64_t j1) {
    const int64_t B = r.B, H = r.HC;
    const T* cp = r.cs(r.prev(t));
    T* dxw = r.dxw + t * B * r.X;
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict g = r.C(0, t, 4 * H) + b * 4 * H;
      const T* __restrict tc = r.C(1, t, H) + b * H;
      const T* __restrict c0 = cp + b * H;
      const T* __restrict dh = dh_all + b * H;
      T* __restrict da = dxw + b * r.X;
      T *__restrict dH = proj ? nullptr : r.dH + b * H, *__restrict dC = r.dC + b * H;
      if (!r.m(t, b)) {  // padded: no gate gradient; dc (and dh) pass through
        for (int64_t k = 0; k < 4; ++k) std::fill(da + k * H + j0, da + k * H + j1, T(0));
        if constexpr (!proj) std::copy(dh + j0, dh + j1, dH + j0);
        continue;
      }
      lstm_gate_grads<T, !proj>(g, tc, c0, dh, dC, da, dH, H, j0, j1);
    }
  }
};

template <typename T>
struct GRU {  // torch form, gates r, z, n;  caches: [r z n] (3H), h_n = (h_prev W_hnᵀ + b_hn) (H)
  static constexpr int64_t kGates = 3;
  static std::vector<int64_t> widths(int64_t H) { return {3 * H, H}; }
  static std::vector<GradSpec> grads(int64_t H) { return {{0, true, 0, 3 * H, -1, 1}}; }
  static void fwd(Run<T>& r, int64_t t) { one_gemm_fwd<T, GRU>(r, t); }
  static void bwd(Run<T>& r, int64_t t) { one_gemm_bwd<T, GRU>(r, t); }
  // dh_prev's GEMM reads [da_r, da_z, da_n ⊙ r] (dhw), not dxw: the reset gate sits after W_hn
  static T* da_row(const Run<T>& r, int64_t t) { return r.dhw + t * r.B * 3 * r.H; }
  static int64_t da_ld(const Run<T>& r) { return 3 * r.H; }
  static void fetch_bwd(const Run<T>& r, int64_t t, int64_t j0, int64_t j1) {
    fetch_blocks(r, r.cache[0], t, 3 * r.H, 3, r.H, j0, j1);
    fetch_blocks(r, r.cache[1], t, r.H, 1, r.H, j0, j1);
    fetch_blocks(r, r.at_prev(r.HH), t, r.H, 1, r.H, j0, j1);
  }
  static void fwd_units(Run<T>& r, int64_t t, const T* pre, int64_t ldp, int64_t gs, int64_t j0, int64_t j1) {
    if (r.keep) return fwd_rows<true>(r, t, pre, ldp, gs, j0, j1);
    fwd_rows<false>(r, t, pre, ldp, gs, j0, j1);  // no backward to follow: no caches written
  }
  template <bool keep>
  static void fwd_rows(Run<T>& r, int64_t t, const T* pre, int64_t ldp, int64_t gs, int64_t j0, int64_t j1) {
    const int64_t B = r.B, H = r.H;
    const T *hp = r.h(r.prev(t)), *bias = r.P[1];
    T* hn = r.h(r.next(t));
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict x = r.xw + (t * B + b) * r.X;
      const T* __restrict p = pre + b * ldp - j0;
      const T* __restrict h0 = hp + b * H;
      T* __restrict g = r.C(0, t, 3 * H) + b * 3 * H;
      T* __restrict hN = r.C(1, t, H) + b * H;
      T* __restrict h = hn + b * H;
      T* __restrict out = r.out(t, b);
      const T m = r.m(t, b) ? T(1) : T(0);
      RNNKIT_SIMD
      for (int64_t j = j0; j < j1; ++j) {
        const T r_t = sigmoid(x[j] + p[j] + bias[j]);
        const T z_t = sigmoid(x[H + j] + p[gs + j] + bias[H + j]);
        const T h_n = p[2 * gs + j] + bias[2 * H + j];
        const T n_t = tanh_(x[2 * H + j] + r_t * h_n);
        const T h_t = n_t + z_t * (h0[j] - n_t);
        if constexpr (keep) g[j] = r_t, g[H + j] = z_t, g[2 * H + j] = n_t, hN[j] = h_n;
        h[j] = m != T(0) ? h_t : h0[j], out[j] = m != T(0) ? h_t : T(0);
      }
    }
  }
  static void bwd_units(Run<T>& r, int64_t t, int64_t j0, int64_t j1) {
    const int64_t B = r.B, H = r.H;
    const T* hp = r.h(r.prev(t));
    T *dxw = r.dxw + t * B * r.X, *dhw = r.dhw + t * B * 3 * H;
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* __restrict g = r.C(0, t, 3 * H) + b * 3 * H;
      const T* __restrict hN = r.C(1, t, H) + b * H;
      const T* __restrict h0 = hp + b * H;
      const T* __restrict dh = r.dh + b * H;
      T *__restrict dx = dxw + b * r.X, *__restrict dw = dhw + b * 3 * H;
      T* __restrict dH = r.dH + b * H;
      // padded: no gate gradient, dh passes through (not m · dh: 0 · inf is NaN, and an inf dh reaching a padded
      // step made every weight gradient NaN, where autograd and torch.nn's packed run keep them finite)
      if (!r.m(t, b)) {
        RNNKIT_SIMD
        for (int64_t j = j0; j < j1; ++j) {
          dx[j] = dx[H + j] = dx[2 * H + j] = T(0), dw[j] = dw[H + j] = dw[2 * H + j] = T(0);
          dH[j] = dh[j];
        }
        continue;
      }
      RNNKIT_SIMD
      for (int64_t j = j0; j < j1; ++j) {
        const T r_t = g[j], z_t = g[H + j], n_t = g[2 * H + j], d = dh[j];
        const T da_n = d * (T(1) - z_t) * (T(1) - n_t * n_t);
        const T da_r = da_n * hN[j] * r_t * (T(1) - r_t);
        const T da_z = d * (h0[j] - n_t) * z_t * (T(1) - z_t);
        dx[j] = da_r, dx[H + j] = da_z, dx[2 * H + j] = da_n;
        dw[j] = da_r, dw[H + j] = da_z, dw[2 * H + j] = da_n * r_t;
        dH[j] = dh[j] * z_t;
      }
    }
  }
};

}  // namespace rnnkit
