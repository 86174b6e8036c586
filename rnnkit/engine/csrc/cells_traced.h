// A cell of one's own, run by the native loop: its step and step_backward traced into pointwise kernels
// (rnnkit/engine/traced.py generates them in C++, compiles them into a small library of their own and hands
// their addresses here), and the loop around them the same as for the built-in one-GEMM cells:
//
//   forward:  pre = h_prev U_hᵀ (the engine's GEMM, prepared once);  per row: fwd(xw_t, pre, state) -> state_t, caches
//   backward: per row: bwd(dstate_t, caches) -> dxw_t, dpre, dstate_prev's direct part, += the EXTRAS' gradients;
//             dh_prev += dpre U_h (the engine's GEMM);  after the loop dU = dpreᵀ h_prev, db = Σ dpre.
//
// A padded row (mask 0) keeps its state, outputs 0 and passes dh (and dc) straight through, as every cell does.
//
// A cell of several recurrent products that depend on each other (gru_cho, mut1-3 written as one's own: traced.py's
// v2) comes as one kernel per stage, run as cells_gated.h runs the built-in ones (fwd_staged, bwd_staged):
//
//   forward:  per stage s: pre_k = u_k U_kᵀ for the products of stage s (u_k: h_prev, or a buffer an earlier
//             kernel stored), then kernel s row by row; the last one writes the states
//   backward: per stage s: dpre_k U_k for the products the kernels read pointwise, then kernel s;
//             dh_prev += dpre_k U_k for the others;  after the loop dU_k = dpre_kᵀ u_k, db_k = Σ dpre_k.
#pragma once
#include <array>
#include <memory>
#include <mutex>

#include "cells_basic.h"

namespace rnnkit {

// One traced cell, as traced.py describes it (register_traced below). Widths are in blocks of H.
struct TracedCell {
  using Kernel = void (*)(const void* const* in, void* const* out, int64_t H, int64_t j0, int64_t j1);
  int64_t n_states = 1, G = 1, Gp = 1;  // states; blocks of an xw row; blocks of the GEMM's pre row
  int64_t u_param = 0, b_param = -1;    // P indices of U and of the bias summed from dpre (-1: none)
  bool dpre_is_dxw = true;              // dpre is dxw itself (else a buffer of its own, dhw)
  std::vector<int64_t> cache_blocks;    // the forward kernel's caches
  std::vector<int64_t> extra_params, extra_blocks;  // EXTRAS: their P indices and accumulator widths
  Kernel fwd[2] = {nullptr, nullptr}, bwd[2] = {nullptr, nullptr};  // [float, double]
  // v2, several recurrent products (register_staged): one kernel per stage, GEMMs between them
  struct Gemm {
    int64_t param, bias, blocks;  // U's and its bias's P index (-1: none); blocks of H in its pre row
    int64_t src;                  // its operand: -1 h_prev, else a cache buffer (one block wide)
    int64_t fstage, bstage;       // the kernel it runs before (backward: -1 after the last, into dh_prev; -2 none)
    bool in_dhw;                  // its dpre: in dhw, else in dxw
    int64_t col;                  // dpre's first block there
  };
  bool staged = false;
  std::vector<Gemm> gemms;
  int64_t fingerprint = 0;  // of the kernels' source (traced.py): the split plan's key, the same in every process
  std::vector<std::array<Kernel, 2>> fk, bk;  // per stage [float, double]; null: no kernel at that stage
  int64_t extra_width(int64_t H) const {
    int64_t w = 0;
    for (int64_t b : extra_blocks) w += b * H;
    return w;
  }
};
constexpr int64_t kTracedBase = 100;  // cell ids from here on are traced cells, in order of registration
inline std::mutex g_traced_mutex;
inline std::vector<std::shared_ptr<const TracedCell>> g_traced;
// The traced cell of the call running on this thread (with_cell sets it; the loops copy it into their Run).
inline thread_local const TracedCell* tl_traced = nullptr;
inline const TracedCell* traced_cell(int64_t id) {
  std::lock_guard<std::mutex> lock(g_traced_mutex);
  TORCH_CHECK(id >= kTracedBase && id - kTracedBase < int64_t(g_traced.size()), "rnnkit native: unknown cell id ", id);
  return g_traced[id - kTracedBase].get();
}

template <typename T>
struct Traced {
  static constexpr int64_t kGates = 1;  // (unused: the widths are the traced cell's, in r.tc)
  static constexpr int kMaxPointers = 64;
  static const TracedCell& cell(const Run<T>& r) { return *static_cast<const TracedCell*>(r.tc); }
  // What a backward kernel's pointers hold at every step and row: in = [.., P.. after the states and caches],
  // out = [.., the EXTRAS accumulators after dxw, dhw and the states' gradients].
  static void bwd_pointers(const Run<T>& r, const TracedCell& c, const void** in, void** out) {
    const int64_t S = c.n_states, nc = int64_t(c.cache_blocks.size()), ne = int64_t(c.extra_blocks.size());
    for (size_t i = 0; i < r.P.size(); ++i) in[S + nc + int64_t(i)] = r.P[i];
    for (int64_t e = 0, off = 0; e < ne; off += c.extra_blocks[e] * r.H, ++e) out[2 + S + e] = r.dalpha + off;
  }
  static TracedCell::Kernel fwd_kernel(const Run<T>& r) { return cell(r).fwd[std::is_same_v<T, double>]; }
  static TracedCell::Kernel bwd_kernel(const Run<T>& r) { return cell(r).bwd[std::is_same_v<T, double>]; }
  static std::vector<int64_t> widths(const TracedCell& c, int64_t H) {
    std::vector<int64_t> w;
    for (int64_t b : c.cache_blocks) w.push_back(b * H);
    return w;
  }
  static std::vector<GradSpec> grads(const TracedCell& c, int64_t H) {
    if (!c.staged) return {{int(c.u_param), !c.dpre_is_dxw, 0, c.Gp * H, -1, int(c.b_param)}};
    std::vector<GradSpec> g;
    for (const auto& m : c.gemms)
      g.push_back({int(m.param), m.in_dhw, m.col * H, m.blocks * H, int(m.src), int(m.bias)});
    return g;
  }
  static T* dpre_rows(const Run<T>& r, int64_t t) {  // step t's dpre (B rows), and its row stride
    return cell(r).dpre_is_dxw ? r.dxw + t * r.B * r.X : r.dhw + t * r.B * cell(r).Gp * r.H;
  }
  static int64_t dpre_ld(const Run<T>& r) { return cell(r).dpre_is_dxw ? r.X : cell(r).Gp * r.H; }

  // pre = h_prev Uᵀ into tmp[0] (B, Gp·H), then the kernel row by row.
  static void fwd(Run<T>& r, int64_t t) {
    const TracedCell& c = cell(r);
    if (c.staged) return fwd_staged(r, t);
    const int64_t B = r.B, H = r.H, W = c.Gp * H, S = c.n_states, NP = int64_t(r.P.size());
    const T* hp = r.h(r.prev(t));
    fetch_blocks(r, r.xw, t, r.X, 1, r.X, 0, r.X);  // arrives while the GEMM runs
    r.mul_wt(int(c.u_param), W, H, hp, H, r.tmp[0], W);
    const T* cp = S == 2 ? r.cs(r.prev(t)) : nullptr;
    T *hn = r.h(r.next(t)), *cn = S == 2 ? r.cs(r.next(t)) : nullptr;
    const void* in[kMaxPointers];
    void* out[kMaxPointers];
    for (int64_t i = 0; i < NP; ++i) in[2 + S + i] = r.P[i];
    const auto kernel = fwd_kernel(r);
    const std::vector<int64_t>& cb = c.cache_blocks;
    for (int64_t b = r.b0; b < r.b1; ++b) {
      const T* h0 = hp + b * H;
      T* h = hn + b * H;
      T* o = r.out(t, b);
      if (!r.m(t, b)) {  // (its caches 0, as the built-in cells leave them: backward doesn't read them, but the
        std::copy(h0, h0 + H, h), std::fill(o, o + H, T(0));  // operator returns them, and memory left as it was
        if (S == 2) std::copy(cp + b * H, cp + (b + 1) * H, cn + b * H);  // differed from run to run)
        for (size_t k = 0; k < cb.size(); ++k) {
          T* p = r.C(int(k), t, cb[k] * H) + b * cb[k] * H;
          std::fill(p, p + cb[k] * H, T(0));
        }
        continue;
      }
      in[0] = r.xw + (t * B + b) * r.X, in[1] = r.tmp[0] + b * W, in[2] = h0;
      if (S == 2) in[3] = cp + b * H;
      out[0] = h;
      if (S == 2) out[1] = cn + b * H;
      for (size_t k = 0; k < cb.size(); ++k) out[S + k] = r.C(int(k), t, cb[k] * H) + b * cb[k] * H;
      kernel(in, out, H, 0, H);
      std::copy(h, h + H, o);
    }
  }

  // The kernel row by row (dh: the total dL/dh_t, formed by the loop), then dh_prev += dpre U.
  static void bwd(Run<T>& r, int64_t t) {
    const TracedCell& c = cell(r);
    if (c.staged) return bwd_staged(r, t);
    const int64_t B = r.B, H = r.H, W = c.Gp * H, S = c.n_states, NP = int64_t(r.P.size());
    const std::vector<int64_t>& cb = c.cache_blocks;
    const int64_t nc = int64_t(cb.size());
    const void* in[kMaxPointers];
    void* out[kMaxPointers];
    bwd_pointers(r, c, in, out);
    const T* hp = r.h(r.prev(t));
    const T* cp = S == 2 ? r.cs(r.prev(t)) : nullptr;
    T* dpre = dpre_rows(r, t);
    const int64_t ld = dpre_ld(r);
    const auto kernel = bwd_kernel(r);
    for (int64_t b = r.b0; b < r.b1; ++b) {
      T* dx = r.dxw + (t * B + b) * r.X;
      T* dp = dpre + b * ld;
      T* dH = r.dH + b * H;
      const T* dh = r.dh + b * H;
      if (!r.m(t, b)) {  // no gradient into this step; dh (and dc) pass through
        std::fill(dx, dx + r.X, T(0));
        if (!c.dpre_is_dxw) std::fill(dp, dp + W, T(0));
        std::copy(dh, dh + H, dH);
        continue;
      }
      in[0] = dh;
      if (S == 2) in[1] = r.dC + b * H;
      for (int64_t k = 0; k < nc; ++k) in[S + k] = r.C(int(k), t, cb[k] * H) + b * cb[k] * H;
      in[S + nc + NP] = hp + b * H;  // the states the step was given, where the loop keeps them
      if (S == 2) in[S + nc + NP + 1] = cp + b * H;
      out[0] = dx, out[1] = dp, out[2] = dH;
      if (S == 2) out[3] = r.dC + b * H;
      kernel(in, out, H, 0, H);
    }
    fetch_next(r, t);
    r.mul_w(int(c.u_param), false, H, W, dpre, ld, T(1), r.dH, H);
  }

  // v2: per stage s, the GEMMs that run before it (pre_g = u_g U_gᵀ into tmp[g]), then its kernel row by row:
  //   in = [xw, state..., P..., pre_0 ..]    out = [state_t..., buffers...] (a later stage reads what an earlier
  // one stored through out). A padded row keeps its state and outputs 0, its buffers 0 (dU = dpreᵀ u reads them).
  static void fwd_staged(Run<T>& r, int64_t t) {
    const TracedCell& c = cell(r);
    const int64_t B = r.B, H = r.H, S = c.n_states, NP = int64_t(r.P.size()), NG = int64_t(c.gemms.size());
    const std::vector<int64_t>& cb = c.cache_blocks;
    const int64_t nc = int64_t(cb.size());
    const T* hp = r.h(r.prev(t));
    const T* cp = S == 2 ? r.cs(r.prev(t)) : nullptr;
    T *hn = r.h(r.next(t)), *cn = S == 2 ? r.cs(r.next(t)) : nullptr;
    fetch_blocks(r, r.xw, t, r.X, 1, r.X, 0, r.X);
    const void* in[kMaxPointers];
    void* out[kMaxPointers];
    for (int64_t i = 0; i < NP; ++i) in[1 + S + i] = r.P[i];
    for (int64_t b = r.mask ? r.b0 : r.b1; b < r.b1; ++b) {
      if (r.m(t, b)) continue;
      std::copy(hp + b * H, hp + (b + 1) * H, hn + b * H);
      if (S == 2) std::copy(cp + b * H, cp + (b + 1) * H, cn + b * H);
      T* o = r.out(t, b);
      std::fill(o, o + H, T(0));
      for (int64_t k = 0; k < nc; ++k) {
        T* p = r.C(int(k), t, cb[k] * H) + b * cb[k] * H;
        std::fill(p, p + cb[k] * H, T(0));
      }
    }
    const int dbl = std::is_same_v<T, double>;
    const int64_t last = int64_t(c.fk.size()) - 1;
    for (int64_t s = 0; s <= last; ++s) {
      for (int64_t g = 0; g < NG; ++g) {
        const TracedCell::Gemm& m = c.gemms[g];
        if (m.fstage != s) continue;
        const T* u = m.src < 0 ? hp : r.C(int(m.src), t, H);
        r.mul_wt(int(m.param), m.blocks * H, H, u, H, r.tmp[g], m.blocks * H);
      }
      const TracedCell::Kernel kernel = c.fk[s][dbl];
      if (!kernel) continue;
      for (int64_t b = r.b0; b < r.b1; ++b) {
        if (!r.m(t, b)) continue;
        in[0] = r.xw + (t * B + b) * r.X, in[1] = hp + b * H;
        if (S == 2) in[2] = cp + b * H;
        for (int64_t g = 0; g < NG; ++g) in[1 + S + NP + g] = r.tmp[g] + b * c.gemms[g].blocks * H;
        out[0] = hn + b * H;
        if (S == 2) out[1] = cn + b * H;
        for (int64_t k = 0; k < nc; ++k) out[S + k] = r.C(int(k), t, cb[k] * H) + b * cb[k] * H;
        kernel(in, out, H, 0, H);
        if (s == last) std::copy(hn + b * H, hn + (b + 1) * H, r.out(t, b));
      }
    }
  }

  // v2 BPTT: per stage s, the GEMMs whose product the kernels read (dpre_g U_g into tmp[g]), then its kernel:
  //   in = [dstate..., buffers..., P..., state..., dpre_0 U_0 ..]   out = [dxw, dhw, dh_prev, (dc_prev), accumulators]
  // then dh_prev += dpre_g U_g for the products that only add into it.
  static void bwd_staged(Run<T>& r, int64_t t) {
    const TracedCell& c = cell(r);
    const int64_t B = r.B, H = r.H, S = c.n_states, NP = int64_t(r.P.size()), NG = int64_t(c.gemms.size());
    const std::vector<int64_t>& cb = c.cache_blocks;
    const int64_t nc = int64_t(cb.size()), W = c.Gp * H;
    const void* in[kMaxPointers];
    void* out[kMaxPointers];
    bwd_pointers(r, c, in, out);
    const T* hp = r.h(r.prev(t));
    const T* cp = S == 2 ? r.cs(r.prev(t)) : nullptr;
    T* dxw = r.dxw + t * B * r.X;
    T* dhw = c.dpre_is_dxw ? nullptr : r.dhw + t * B * W;
    auto dpre = [&](const TracedCell::Gemm& m) { return m.in_dhw ? dhw + m.col * H : dxw + m.col * H; };
    auto ld = [&](const TracedCell::Gemm& m) { return m.in_dhw ? W : r.X; };
    for (int64_t b = r.mask ? r.b0 : r.b1; b < r.b1; ++b) {
      if (r.m(t, b)) continue;  // no gradient into this step; dh (and dc) pass through
      std::fill(dxw + b * r.X, dxw + (b + 1) * r.X, T(0));
      if (dhw) std::fill(dhw + b * W, dhw + (b + 1) * W, T(0));
      std::copy(r.dh + b * H, r.dh + (b + 1) * H, r.dH + b * H);
    }
    const int dbl = std::is_same_v<T, double>;
    for (int64_t s = 0; s < int64_t(c.bk.size()); ++s) {
      for (int64_t g = 0; g < NG; ++g) {
        const TracedCell::Gemm& m = c.gemms[g];
        if (m.bstage == s) r.mul_w(int(m.param), false, H, m.blocks * H, dpre(m), ld(m), T(0), r.tmp[g], H);
      }
      const TracedCell::Kernel kernel = c.bk[s][dbl];
      if (!kernel) continue;
      for (int64_t b = r.b0; b < r.b1; ++b) {
        if (!r.m(t, b)) continue;
        in[0] = r.dh + b * H;
        if (S == 2) in[1] = r.dC + b * H;
        for (int64_t k = 0; k < nc; ++k) in[S + k] = r.C(int(k), t, cb[k] * H) + b * cb[k] * H;
        in[S + nc + NP] = hp + b * H;
        if (S == 2) in[S + nc + NP + 1] = cp + b * H;
        for (int64_t g = 0; g < NG; ++g) in[S + nc + NP + S + g] = r.tmp[g] + b * H;
        out[0] = dxw + b * r.X, out[1] = dhw ? dhw + b * W : nullptr, out[2] = r.dH + b * H;
        if (S == 2) out[3] = r.dC + b * H;
        kernel(in, out, H, 0, H);
      }
    }
    fetch_next(r, t);
    for (int64_t g = 0; g < NG; ++g) {
      const TracedCell::Gemm& m = c.gemms[g];
      if (m.bstage == -1) r.mul_w(int(m.param), false, H, m.blocks * H, dpre(m), ld(m), T(1), r.dH, H);
    }
  }

  // Before step t's GEMM in BPTT: ask for what the next BPTT step's kernel reads, dL/dh from above and its caches,
  // written many steps ago and gone from the cache (they arrive while the GEMM runs, as fetch_next_bwd does for
  // the built-in cells: without it an LSTM written as one's own ran its layer 16% slower at H = 128).
  static void fetch_next(const Run<T>& r, int64_t t) {
    const int64_t next = r.reverse ? t + 1 : t - 1;
    if (next < 0 || next >= r.T_) return;
    for (int64_t b = r.b0; b < r.b1; ++b) prefetch(r.dout(next, b), r.H * sizeof(T));
    fetch_blocks(r, r.at_prev(r.HH), next, r.H, 1, r.H, 0, r.H);
    if (cell(r).n_states == 2) fetch_blocks(r, r.at_prev(r.CC), next, r.H, 1, r.H, 0, r.H);
    const std::vector<int64_t>& cb = cell(r).cache_blocks;
    for (size_t k = 0; k < cb.size(); ++k) {
      const int64_t w = cb[k] * r.H;
      fetch_blocks(r, r.cache[k], next, w, 1, w, 0, w);
    }
  }
};

// Registers a traced cell (see TracedCell; kernels as addresses), returning its cell id.
inline int64_t register_traced(int64_t n_states, int64_t G, int64_t Gp, int64_t u_param, int64_t b_param,
                               bool dpre_is_dxw, std::vector<int64_t> cache_blocks, std::vector<int64_t> extra_params,
                               std::vector<int64_t> extra_blocks, std::vector<int64_t> kernels, int64_t n_params,
                               int64_t fingerprint) {
  TORCH_CHECK(n_states == 1 || n_states == 2, "rnnkit native: a traced cell has 1 or 2 states");
  TORCH_CHECK(G > 0 && Gp > 0 && u_param >= 0 && u_param < 4 && u_param < n_params && b_param < n_params,
              "rnnkit native: a traced cell's sizes are out of range");
  TORCH_CHECK(kernels.size() == 4 && extra_params.size() == extra_blocks.size(), "rnnkit native: traced cell: 4 kernels");
  const int64_t pointers = 2 + 2 * n_states + int64_t(cache_blocks.size()) + n_params + int64_t(extra_blocks.size());
  TORCH_CHECK(pointers <= Traced<float>::kMaxPointers, "rnnkit native: a traced cell with ", pointers,
              " buffers and parameters (at most ", Traced<float>::kMaxPointers, ")");
  auto c = std::make_shared<TracedCell>();
  c->n_states = n_states, c->G = G, c->Gp = Gp, c->u_param = u_param, c->b_param = b_param;
  c->dpre_is_dxw = dpre_is_dxw, c->cache_blocks = std::move(cache_blocks), c->fingerprint = fingerprint;
  c->extra_params = std::move(extra_params), c->extra_blocks = std::move(extra_blocks);
  for (int k = 0; k < 2; ++k) {
    c->fwd[k] = reinterpret_cast<TracedCell::Kernel>(kernels[2 * k]);
    c->bwd[k] = reinterpret_cast<TracedCell::Kernel>(kernels[2 * k + 1]);
  }
  std::lock_guard<std::mutex> lock(g_traced_mutex);
  g_traced.push_back(std::move(c));
  return kTracedBase + int64_t(g_traced.size()) - 1;
}

// Registers a traced cell of several recurrent products (TracedCell::Gemm, 8 numbers each in `gemms`); kernels:
// per stage [float, double] addresses (0: none), forward stages then backward ones. Returns its cell id.
inline int64_t register_staged(int64_t n_states, int64_t G, std::vector<int64_t> cache_blocks,
                               std::vector<int64_t> extra_params, std::vector<int64_t> extra_blocks,
                               std::vector<int64_t> gemms, int64_t dhw_blocks, std::vector<int64_t> fwd,
                               std::vector<int64_t> bwd, int64_t n_params, int64_t fingerprint) {
  TORCH_CHECK(n_states == 1 || n_states == 2, "rnnkit native: a traced cell has 1 or 2 states");
  const int64_t NG = int64_t(gemms.size()) / 8;
  TORCH_CHECK(G > 0 && NG >= 1 && NG <= 3 && int64_t(gemms.size()) == 8 * NG && fwd.size() % 2 == 0 &&
              bwd.size() % 2 == 0 && extra_params.size() == extra_blocks.size(),
              "rnnkit native: a staged traced cell's layout is malformed");
  auto c = std::make_shared<TracedCell>();
  c->staged = true, c->n_states = n_states, c->G = G, c->cache_blocks = std::move(cache_blocks);
  c->fingerprint = fingerprint;
  c->extra_params = std::move(extra_params), c->extra_blocks = std::move(extra_blocks);
  int64_t widest = std::max<int64_t>(dhw_blocks, 1);
  for (int64_t g = 0; g < NG; ++g) {
    const int64_t* v = gemms.data() + 8 * g;
    TracedCell::Gemm m{v[0], v[1], v[2], v[3], v[4], v[5], v[6] != 0, v[7]};
    TORCH_CHECK(m.param >= 0 && m.param < 4 && m.param < n_params && m.bias < n_params && m.blocks > 0 &&
                m.src < int64_t(c->cache_blocks.size()) && m.fstage >= 1 && m.fstage < int64_t(fwd.size() / 2) &&
                m.bstage >= -2 && m.bstage < int64_t(bwd.size() / 2),
                "rnnkit native: a staged traced cell's GEMM is out of range");
    widest = std::max(widest, m.blocks);
    c->gemms.push_back(m);
  }
  c->Gp = widest, c->dpre_is_dxw = dhw_blocks == 0, c->u_param = c->gemms[0].param;
  for (size_t s = 0; s < fwd.size(); s += 2)
    c->fk.push_back({reinterpret_cast<TracedCell::Kernel>(fwd[s]), reinterpret_cast<TracedCell::Kernel>(fwd[s + 1])});
  for (size_t s = 0; s < bwd.size(); s += 2)
    c->bk.push_back({reinterpret_cast<TracedCell::Kernel>(bwd[s]), reinterpret_cast<TracedCell::Kernel>(bwd[s + 1])});
  const int64_t nc = int64_t(c->cache_blocks.size()), ne = int64_t(c->extra_blocks.size());
  const int64_t pointers = std::max(1 + n_states + n_params + NG, 2 * n_states + nc + n_params + NG) + 2 + ne;
  TORCH_CHECK(pointers <= Traced<float>::kMaxPointers, "rnnkit native: a traced cell with ", pointers,
              " buffers and parameters (at most ", Traced<float>::kMaxPointers, ")");
  std::lock_guard<std::mutex> lock(g_traced_mutex);
  g_traced.push_back(std::move(c));
  return kTracedBase + int64_t(g_traced.size()) - 1;
}

}  // namespace rnnkit
