// The time loop of a one-GEMM cell (Elman, leaky, LSTM, GRU) with the hidden units, not the batch rows,
// split over threads.
//
// With BLAS-threaded GEMMs every step pays a fork and a join inside the BLAS, and the pointwise math runs
// on one thread while the others wait. Here each of nt threads owns a slab of hidden units [j0, j1) for the
// whole loop, keeps its own slice of W_hh (packed once), and does all the work of those units:
//
//   forward, per step:   pre_k = h_prev W_kᵀ       W_k: the rows of W_hh of the G gates of its units
//                        the cell's pointwise pass for its units (fwd_units)        then ONE barrier
//   backward, per step:  dh, da of its units (bwd_units)                            then ONE barrier
//                        dh_prev[:, j0:j1] += da W_hh[:, j0:j1]      (its units' columns, all G·H gate rows)
//
// The backward needs no second barrier: the next step's pointwise reads only its own units' dh_prev (and c).
// Same numbers as the BLAS-threaded loop up to float summation order (the tests compare both).
#pragma once
#include <omp.h>

#include "cells_basic.h"

namespace rnnkit {

// 1 (default): split the units over threads where it applies (RNNKIT_SPLIT=0 turns it off). Measured on 2
// cores, forward steps of a 2x512 LSTM: 250 µs split, 300 µs with BLAS-threaded GEMMs; backward steps even.
inline int64_t g_split = 1;

// Threads that split H units: torch's threads, each with at least 32 units; 1 = don't split.
inline int split_threads(int64_t H) {
  if (g_split == 0 || at::in_parallel_region()) return 1;
  return int(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), H / 32)));
}

template <typename T>
struct Slab {
  int64_t j0 = 0, j1 = 0;
  StepW<T> w;        // forward: the (G·Hk × H) rows of W_hh of its units' gates; backward: W_hh[:, j0:j1]
  at::Tensor rows, pre;
};

template <typename T>
std::vector<Slab<T>> make_slabs(const Run<T>& r, int64_t G, int nt, bool backward) {
  const int64_t H = r.H, B = r.B;
  const auto o = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  const at::Tensor W = at::from_blob(const_cast<T*>(r.P[0]), {G * H, H}, o);
  const int option =
      std::is_same_v<T, float> && have_packed() && native_ext::g_gemm_mode != native_ext::GemmMode::Blas ? 3 : 0;
  std::vector<Slab<T>> slabs(nt);
  for (int k = 0; k < nt; ++k) {
    Slab<T>& s = slabs[k];
    s.j0 = k == 0 ? 0 : H * k / nt / 16 * 16, s.j1 = k == nt - 1 ? H : H * (k + 1) / nt / 16 * 16;
    const int64_t Hk = s.j1 - s.j0;
    if (!backward) {
      s.rows = pooled_empty({G * Hk, H}, o);
      s.rows.view({G, Hk, H}).copy_(W.view({G, H, H}).narrow(1, s.j0, Hk));
      s.w = StepW<T>::make(option, s.rows.template data_ptr<T>(), true, G * Hk, H, B);
      s.pre = pooled_empty({B, G * Hk}, o);
    } else {
      s.rows = pooled_empty({G * H, Hk}, o);
      s.rows.copy_(W.narrow(1, s.j0, Hk));
      s.w = StepW<T>::make(option, s.rows.template data_ptr<T>(), false, Hk, G * H, B);
    }
  }
  return slabs;
}

extern "C" int mkl_set_num_threads_local_(const int*) __attribute__((weak));

// Runs body(thread, threads) on nt OpenMP threads with single-threaded BLAS inside.
template <typename F>
void team(int nt, F&& body) {
#pragma omp parallel num_threads(nt)
  {
    const int one = 1, zero = 0;
    if (mkl_set_num_threads_local_) mkl_set_num_threads_local_(&one);
    body(omp_get_thread_num(), omp_get_num_threads());
    if (mkl_set_num_threads_local_) mkl_set_num_threads_local_(&zero);  // 0: back to the global setting
  }
}

template <typename T, typename Cell>
void split_forward(const Run<T>& r, int nt) {
  const int64_t G = Cell::kGates;
  std::vector<Slab<T>> slabs = make_slabs(r, G, nt, false);
  team(nt, [&](int id, int got) {  // got < nt: a thread takes several slabs
    Run<T> q = r;
    q.b0 = 0, q.b1 = r.B;
    for (int64_t s = 0; s < r.T_; ++s) {
      const int64_t t = r.reverse ? r.T_ - 1 - s : s;
      for (int k = id; k < nt; k += got) {
        Slab<T>& sl = slabs[k];
        const int64_t Hk = sl.j1 - sl.j0;
        T* pre = sl.pre.template data_ptr<T>();
        fetch_blocks(q, q.xw, t, q.X, G, q.H, sl.j0, sl.j1);  // arrives while the GEMM runs
        sl.w.mul(q.h(q.prev(t)), q.H, T(0), pre, G * Hk);
        Cell::fwd_units(q, t, pre, G * Hk, Hk, sl.j0, sl.j1);
      }
#pragma omp barrier
    }
  });
}

template <typename T, typename Cell, typename TotalDh>
void split_backward(const Run<T>& r, int nt, TotalDh&& total_dh) {
  const int64_t G = Cell::kGates;
  std::vector<Slab<T>> slabs = make_slabs(r, G, nt, true);
  team(nt, [&](int id, int got) {
    Run<T> q = r;
    q.b0 = 0, q.b1 = r.B;
    for (int64_t s = r.T_ - 1; s >= 0; --s) {
      const int64_t t = r.reverse ? r.T_ - 1 - s : s;
      for (int k = id; k < nt; k += got) {
        total_dh(q, t, slabs[k].j0, slabs[k].j1);
        Cell::bwd_units(q, t, slabs[k].j0, slabs[k].j1);
      }
#pragma omp barrier
      const int64_t next = r.reverse ? t + 1 : t - 1;  // the step after this one in BPTT's order
      for (int k = id; k < nt; k += got) {  // dh_prev[:, j0:j1] += da W_hh[:, j0:j1]
        if (next >= 0 && next < r.T_) Cell::fetch_bwd(q, next, slabs[k].j0, slabs[k].j1);
        slabs[k].w.mul(Cell::da_row(q, t), Cell::da_ld(q), T(1), q.dH + slabs[k].j0, q.H);
      }
    }
  });
}

}  // namespace rnnkit
