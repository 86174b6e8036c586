// The time loop with the hidden units, not the batch rows, split over threads: every cell (one-GEMM cells
// here, gated cells at the end of the file).
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

#include <exception>

#include <tuple>
#include <utility>

#include "cells_gated.h"

namespace rnnkit {

// 1 (default): split the units over threads where it applies (RNNKIT_SPLIT=0 turns it off). Measured on 2
// cores, forward steps of a 2x512 LSTM: 250 µs split, 300 µs with BLAS-threaded GEMMs; backward steps even.
inline int64_t g_split = 1;

// Threads that split H units: torch's threads, each with at least 32 units; 1 = don't split.
inline int split_threads(int64_t H) {
  if (g_split == 0 || at::in_parallel_region()) return 1;
  return int(std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), H / 32)));
}

// Thread k's slab of H units out of nt: boundaries on multiples of 16 (whole AVX-512 vectors).
inline std::pair<int64_t, int64_t> slab(int64_t H, int nt, int k) {
  return {k == 0 ? 0 : H * k / nt / 16 * 16, k == nt - 1 ? H : H * (k + 1) / nt / 16 * 16};
}

// A forward step weight from the rows {k·H + j : k < blocks, j0 <= j < j1} of W (blocks·H × H): C = A rowsᵀ.
template <typename T>
StepW<T> rows_of(const T* W, int64_t blocks, int64_t H, int64_t j0, int64_t j1, int64_t M, std::vector<at::Tensor>& keep,
                 int64_t threads) {
  const auto o = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  const int64_t Hk = j1 - j0;
  at::Tensor rows = pooled_empty({blocks * Hk, H}, o);
  rows.view({blocks, Hk, H}).copy_(at::from_blob(const_cast<T*>(W), {blocks, H, H}, o).narrow(1, j0, Hk));
  keep.push_back(rows);
  return thread_weight<T>(rows.data_ptr<T>(), true, blocks * Hk, H, M, H, blocks * Hk, false, threads);
}

// A backward step weight from the columns [j0, j1) of W (K × H): C = A cols.
template <typename T>
StepW<T> cols_of(const T* W, int64_t K, int64_t H, int64_t j0, int64_t j1, int64_t M, std::vector<at::Tensor>& keep,
                 int64_t threads) {
  const auto o = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  at::Tensor cols = pooled_empty({K, j1 - j0}, o);
  cols.copy_(at::from_blob(const_cast<T*>(W), {K, H}, o).narrow(1, j0, j1 - j0));
  keep.push_back(cols);
  return thread_weight<T>(cols.data_ptr<T>(), false, j1 - j0, K, M, K, H, true, threads);
}

// What a thread keeps for a one-GEMM cell: its units, its slice of W_hh (forward: the G·Hk rows of its units'
// gates; backward: the columns of its units), and (forward) its pre-activations. Each thread prepares its own
// slabs as the team starts (copied and packed at one thread, a batch-1 call of 8 steps of a 2x512 LSTM spent
// most of its time there while the other thread waited).
template <typename T>
struct Slab {
  int64_t j0 = 0, j1 = 0;
  StepW<T> w;
  at::Tensor pre;
  std::vector<at::Tensor> keep;  // what w reads
};

template <typename T>
void make_slab(Slab<T>& s, const Run<T>& r, int64_t G, int nt, int k, bool backward, int64_t threads) {
  std::tie(s.j0, s.j1) = slab(r.H, nt, k);
  if (backward) {
    s.w = cols_of(r.P[0], G * r.H, r.H, s.j0, s.j1, r.B, s.keep, threads);
  } else {
    s.w = rows_of(r.P[0], G, r.H, s.j0, s.j1, r.B, s.keep, threads);
    s.pre = pooled_empty({r.B, G * (s.j1 - s.j0)}, at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value));
  }
}

// Runs body(thread, threads) on nt OpenMP threads with single-threaded BLAS inside.
template <typename F>
void team(int nt, F&& body) {
#pragma omp parallel num_threads(nt)
  {
    const int one = 1;  // each thread's own setting put back after (the caller's: torch's, or MKL_NUM_THREADS)
    const int before = mkl_set_num_threads_local_ ? mkl_set_num_threads_local_(&one) : 0;
    body(omp_get_thread_num(), omp_get_num_threads());
    if (mkl_set_num_threads_local_) mkl_set_num_threads_local_(&before);
  }
}

// A team's first part: each thread prepares its own slabs (prep(k) for k = id, id + got, ...), then all wait for
// all. False in every thread where one failed (an allocation): the team then returns and the caller rethrows
// `failed` (an exception may not leave an OpenMP region: it ended the process).
template <typename F>
bool prepared(int id, int got, int nt, std::exception_ptr& failed, F&& prep) {
  try {
    for (int k = id; k < nt; k += got) prep(k);
  } catch (...) {
#pragma omp critical(rnnkit_prepared)
    if (!failed) failed = std::current_exception();
  }
#pragma omp barrier
  bool ok;
#pragma omp critical(rnnkit_prepared)
  ok = !failed;
  return ok;
}

template <typename T, typename Cell>
void split_forward(const Run<T>& r, int nt) {
  const int64_t G = Cell::kGates, threads = at::get_num_threads();
  std::vector<Slab<T>> slabs(nt);
  std::exception_ptr failed;
  team(nt, [&](int id, int got) {  // got < nt: a thread takes several slabs
    if (!prepared(id, got, nt, failed, [&](int k) { make_slab(slabs[k], r, G, nt, k, false, threads); })) return;
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
  if (failed) std::rethrow_exception(failed);
}

template <typename T, typename Cell, typename TotalDh>
void split_backward(const Run<T>& r, int nt, TotalDh&& total_dh) {
  const int64_t G = Cell::kGates, threads = at::get_num_threads();
  std::vector<Slab<T>> slabs(nt);
  std::exception_ptr failed;
  team(nt, [&](int id, int got) {
    if (!prepared(id, got, nt, failed, [&](int k) { make_slab(slabs[k], r, G, nt, k, true, threads); })) return;
    Run<T> q = r;
    q.b0 = 0, q.b1 = r.B;
    for (int64_t s = r.T_ - 1; s >= 0; --s) {
      const int64_t t = r.reverse ? r.T_ - 1 - s : s;
      for (int k = id; k < nt; k += got) {
        total_dh(q, t, slabs[k].j0, slabs[k].j1);
        Cell::bwd_units(q, t, slabs[k].j0, slabs[k].j1);
      }
#pragma omp barrier
      for (int k = id; k < nt; k += got) {  // dh_prev[:, j0:j1] += da W_hh[:, j0:j1]
        fetch_next_bwd<T, Cell>(q, t, slabs[k].j0, slabs[k].j1);
        slabs[k].w.mul(Cell::da_row(q, t), Cell::da_ld(q), T(1), q.dH + slabs[k].j0, q.H);
      }
    }
  });
  if (failed) std::rethrow_exception(failed);
}

// gru_cho and mut1-3 (cells_gated.h): two barriers a step (mut3: three), since the candidate's GEMM reads
// u = r ⊙ h_prev of every unit, and BPTT's dh_prev GEMMs read da_h̃ and then da_r of every unit.
template <typename T, Kind K>
void split_gated_forward(const Run<T>& r, int nt) {
  using Cell = Gated<T, K>;
  const int64_t H = r.H, B = r.B, threads = at::get_num_threads();
  std::vector<std::vector<at::Tensor>> keep(nt);
  std::vector<int64_t> j0(nt), j1(nt);
  std::vector<StepW<T>> wg(nt), wr(nt), wc(nt);  // gates (mut3: W_hz), mut3's W_hr, candidate
  std::vector<at::Tensor> pg(nt), pc(nt);
  const auto o = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  std::exception_ptr failed;
  team(nt, [&](int id, int got) {
    const bool ok = prepared(id, got, nt, failed, [&](int k) {  // each thread its own slabs (see Slab)
      std::tie(j0[k], j1[k]) = slab(H, nt, k);
      const int64_t blocks = K == Kind::Cho || K == Kind::M2 ? 2 : 1;
      wg[k] = rows_of(r.P[0], blocks, H, j0[k], j1[k], B, keep[k], threads);
      if (K == Kind::M3) wr[k] = rows_of(r.P[1], 1, H, j0[k], j1[k], B, keep[k], threads);
      wc[k] = rows_of(r.P[Cell::cand], 1, H, j0[k], j1[k], B, keep[k], threads);
      pg[k] = pooled_empty({B, 2 * (j1[k] - j0[k])}, o), pc[k] = pooled_empty({B, j1[k] - j0[k]}, o);
    });
    if (!ok) return;
    Run<T> q = r;
    q.b0 = 0, q.b1 = B;
    for (int64_t s = 0; s < r.T_; ++s) {
      const int64_t t = r.reverse ? r.T_ - 1 - s : s;
      const T* hp = q.h(q.prev(t));
      if (K == Kind::M3) {
        for (int k = id; k < nt; k += got) Cell::th_units(q, t, j0[k], j1[k]);
#pragma omp barrier
      }
      for (int k = id; k < nt; k += got) {
        const int64_t Hk = j1[k] - j0[k];
        T* p = pg[k].template data_ptr<T>();
        fetch_blocks(q, q.xw, t, q.X, q.X / H, H, j0[k], j1[k]);
        if (q.xt) fetch_blocks(q, q.xt, t, H, 1, H, j0[k], j1[k]);
        if (K == Kind::M3) {
          wg[k].mul(q.C(3, t, H), H, T(0), p, 2 * Hk);
          wr[k].mul(hp, H, T(0), p + Hk, 2 * Hk);
          Cell::gates_units(q, t, p, 2 * Hk, Hk, j0[k], j1[k]);
        } else if (K == Kind::M1) {
          wg[k].mul(hp, H, T(0), p, Hk);
          Cell::gates_units(q, t, p, Hk, Hk, j0[k], j1[k]);
        } else {
          wg[k].mul(hp, H, T(0), p, 2 * Hk);
          Cell::gates_units(q, t, p, 2 * Hk, Hk, j0[k], j1[k]);
        }
      }
#pragma omp barrier
      for (int k = id; k < nt; k += got) {
        const int64_t Hk = j1[k] - j0[k];
        T* p = pc[k].template data_ptr<T>();
        wc[k].mul(q.C(2, t, H), H, T(0), p, Hk);
        Cell::cand_units(q, t, p, Hk, j0[k], j1[k]);
      }
#pragma omp barrier
    }
  });
  if (failed) std::rethrow_exception(failed);
}

template <typename T, Kind K, typename TotalDh>
void split_gated_backward(const Run<T>& r, int nt, TotalDh&& total_dh) {
  using Cell = Gated<T, K>;
  const int64_t H = r.H, B = r.B, X = r.X, threads = at::get_num_threads();
  std::vector<std::vector<at::Tensor>> keep(nt);
  std::vector<int64_t> j0(nt), j1(nt);
  std::vector<StepW<T>> wc(nt), wz(nt), wrz(nt);  // candidate, mut3's W_hz, the dh_prev GEMM's matrix
  T *du = r.tmp[0], *dzt = r.tmp[1];
  std::exception_ptr failed;
  team(nt, [&](int id, int got) {
    const bool ok = prepared(id, got, nt, failed, [&](int k) {  // each thread its own slabs (see Slab)
      std::tie(j0[k], j1[k]) = slab(H, nt, k);
      wc[k] = cols_of(r.P[Cell::cand], H, H, j0[k], j1[k], B, keep[k], threads);
      if (K == Kind::M3) wz[k] = cols_of(r.P[0], H, H, j0[k], j1[k], B, keep[k], threads);
      wrz[k] = cols_of(r.P[Cell::rz_param()], Cell::rz_width(H), H, j0[k], j1[k], B, keep[k], threads);
    });
    if (!ok) return;
    Run<T> q = r;
    q.b0 = 0, q.b1 = B;
    for (int64_t s = r.T_ - 1; s >= 0; --s) {
      const int64_t t = r.reverse ? r.T_ - 1 - s : s;
      T* dxw = q.dxw + t * B * X;
      for (int k = id; k < nt; k += got) {
        total_dh(q, t, j0[k], j1[k]);
        Cell::bwd1_units(q, t, j0[k], j1[k]);
      }
#pragma omp barrier
      for (int k = id; k < nt; k += got) {  // du = da_h̃ W_h (and dzt = da_z W_hz) of its units, then da_r
        wc[k].mul(Cell::dah_row(q, t), Cell::dah_ld(q), T(0), du + j0[k], H);
        if (K == Kind::M3) wz[k].mul(dxw, X, T(0), dzt + j0[k], H);
        Cell::bwd2_units(q, t, du, dzt, j0[k], j1[k]);
      }
#pragma omp barrier
      for (int k = id; k < nt; k += got)  // dh_prev[:, j0:j1] += da_{r(z)} W[:, j0:j1]
        wrz[k].mul(dxw + Cell::rz_col(H), X, T(1), q.dH + j0[k], H);
    }
  });
  if (failed) std::rethrow_exception(failed);
}

}  // namespace rnnkit
