// What every cell's step sees: sizes, the whole-sequence buffers, and a row-major GEMM.
//
// Layout (time-major, contiguous).  t is real time, whatever the direction:
//   xw   (T, B, X)    input projection         hs  (T, B, H)   outputs (0 past a sequence's end)
//   HH   (T+1, B, H)  states: forward keeps h_t in slot t+1 and h_0 in slot 0; reverse keeps h_t in
//                     slot t and h_0 in slot T, so h_prev of step t is slot t (fwd) or t+1 (rev) and
//                     HH[prev slots] lines up row for row with dpre (T, B, ·): dW = dpreᵀ h_prev is ONE GEMM.
//                     A forward with no backward to follow (keep false) has a ring of a few slots, slot s at
//                     s % ring: 2, or as many as put each slot at the offset's alignment (64 bytes) it has with
//                     T+1 slots, as its caches put slot t at t % cring of the alignment of slot t of T.
//   caches (T, B, ·)  what the backward step reads (gate activations, h̃, u = r ⊙ h_prev, ...)
#pragma once
#include <ATen/ATen.h>

#include "kernel.h"
#include "pool.h"

#include <algorithm>
#include <array>
#include <initializer_list>
#include <limits>
#include <memory>
#include <chrono>
#include <map>
#include <mutex>
#include <set>
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

// at::parallel_for(begin, end, grain, f) on the calling thread's torch count as torch keeps it. at::parallel_for first
// runs at::internal::lazy_init_num_threads, an inline function whose thread_local "done" flag is this extension's own
// copy (libtorch does not export its own): the first call of it in each thread ran at::init_num_threads, which sets
// that thread's count to the one set last by any thread, and a Python thread's --threads 3 work (threads_for_the_work)
// ran at 1, and stayed at 1, after its first forward where the main thread had set 1 meanwhile (torch's own ops, and
// the python backend, keep 3). at::get_num_threads() initializes a thread through libtorch's own flag, as every op of
// torch does; the rest is at::parallel_for's.
template <class F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (begin >= end) return;
#ifdef INTRA_OP_PARALLEL
  const int64_t n = end - begin;
  if (n > grain && n > 1 && !at::in_parallel_region() && at::get_num_threads() > 1) {
    at::internal::invoke_parallel(begin, end, grain, [&](int64_t a, int64_t e) {
      c10::ParallelGuard guard(true);
      f(a, e);
    });
    return;
  }
#endif
  at::internal::ThreadIdGuard tid_guard(0);
  c10::ParallelGuard guard(true);
  f(begin, end);
}

extern "C" {  // MKL's packed GEMM (inside libtorch_cpu with MKL; weak, so absent elsewhere)
size_t SGEMM_PACK_GET_SIZE(const char*, const int*, const int*, const int*) __attribute__((weak));
void SGEMM_PACK(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
                float*) __attribute__((weak));
void SGEMM_COMPUTE(const char*, const char*, const int*, const int*, const int*, const float*, const int*,
                   const float*, const int*, const float*, float*, const int*) __attribute__((weak));
}
inline bool have_packed() { return SGEMM_PACK_GET_SIZE && SGEMM_PACK && SGEMM_COMPUTE; }

// MKL's thread count for the calling thread (Fortran interface: the count by pointer; returns the previous
// one); weak, absent without MKL.
extern "C" int mkl_set_num_threads_local_(const int*) __attribute__((weak));

}  // namespace rnnkit
namespace at::native {  // oneDNN's matmul inside libtorch (exported; its header is not shipped)
void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result, float beta, float alpha);
}
namespace rnnkit {

// Whether oneDNN's matmul runs float32 here: torch 2.13 refuses it on CPUs without AVX-512 or AVX-NE-CONVERT
// ("mkldnn_matmul bf16 path needs ...", an AVX2 AMD EPYC), where timing it failed every first call of a shape.
// Probed once when the extension loads (engine.cpp); without it the options that use it are not offered, and a
// choice of it (RNNKIT_GEMM=dnnl, a plan file from another machine) runs as plain BLAS.
inline bool g_have_dnnl = false;
inline bool probe_dnnl() {
  c10::impl::ExcludeDispatchKeyGuard no_python(c10::DispatchKeySet({c10::DispatchKey::Python,
                                                                    c10::DispatchKey::PythonTLSSnapshot}));
  float a[4] = {1, 2, 3, 4}, c[4] = {0, 0, 0, 0};
  const auto o = at::TensorOptions().dtype(at::kFloat);
  try {
    at::native::mkldnn_matmul(at::from_blob(a, {2, 2}, o), at::from_blob(a, {2, 2}, o), at::from_blob(c, {2, 2}, o),
                              0.f, 1.f);
  } catch (const std::exception&) {
    return false;
  }
  return c[0] == 7 && c[1] == 10 && c[2] == 15 && c[3] == 22;
}
inline bool have_dnnl() { return g_have_dnnl; }

// Which library runs a GEMM. Neither MKL's sgemm nor oneDNN's matmul wins everywhere: at the per-step
// shapes of a 2x512 LSTM oneDNN was 1.3-1.45x faster on an AMD Zen 4, MKL 1.2-1.4x faster on an Intel Sapphire
// Rapids, and oneDNN's per-call overhead loses small GEMMs on both. The per-step GEMMs of the time loop
// multiply the SAME weight matrix a hundred times, so they can also use a form of it prepared once:
// a transposed copy (MKL runs A·Wᵀ 1.15-1.4x faster from a (K×N) copy than from W) or MKL's packed form
// (pack once, no per-call packing: 1.3-2x at the 2x512 step shapes on Sapphire Rapids). With mode Auto
// (RNNKIT_GEMM=auto, the default) the first GEMM of each shape times every option on scratch buffers and
// later ones use the fastest (on AVX-512 CPUs also rnnkit's own kernel, kernel.h); blas, dnnl, packed and own
// force one.
enum class Lib { Blas, Dnnl, Packed, Own };
namespace native_ext {
enum class GemmMode { Auto, Blas, Dnnl, Packed, Own };
inline GemmMode g_gemm_mode = GemmMode::Auto;
using GemmKey = std::array<int64_t, 10>;
inline std::map<GemmKey, int> g_plan;  // shape -> the fastest option
inline std::map<GemmKey, int> g_plan_here;  // the same, chosen without oneDNN for want of room: this process only
inline std::mutex g_plan_mutex;
inline constexpr int64_t kSmall = int64_t(1) << 18;  // multiply-adds below which plain BLAS always wins
// Under torch.use_deterministic_algorithms(True) nothing is timed: a fixed choice for every shape (MKL, its
// packed form for the per-step weights), the same in every process, also in processes started together
// (a DDP job's ranks) before any of them has kept its timed choices (native.py).
inline bool fixed_choice() { return at::globalContext().deterministicAlgorithms(); }

// The plan table's lock is held only to read or write it, never while timing: the timed ops may call back into
// Python (a TorchDispatchMode) and wait for the GIL, while a thread that holds the GIL waits for the lock in
// fork (engine.cpp: lock_for_fork), and the two froze. Threads that meet a new shape together time it each,
// and all take the choice kept first: every thread runs the same option, the same bits.
inline int plan_of(const GemmKey& key) {  // -1: not timed yet (g_plan_mutex held)
  if (const auto it = g_plan.find(key); it != g_plan.end()) return it->second;
  const auto it = g_plan_here.find(key);
  return it == g_plan_here.end() ? -1 : it->second;
}
inline int known_plan(const GemmKey& key) {  // -1: not timed yet
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  return plan_of(key);
}
// The choice kept for key: option, or an earlier one. here: for this process only (g_plan_here), not given to
// later processes (gemm_plans, the plan file: native.py), which time it again with oneDNN offered.
inline int keep_plan(const GemmKey& key, int option, bool here = false) {
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  if (const int known = plan_of(key); known >= 0) return known;
  return (here ? g_plan_here : g_plan).emplace(key, option).first->second;
}
// A GEMM's shape class not timed yet that lies between two timed classes of the same GEMM, differing from both
// in one size only (M, N or K: the one that follows the data, T·B), at most 4x apart, takes their choice where
// they agree: the fastest option changes with that size at one point or two (measured on a Zen 4, the GEMMs of a
// 2x128 LSTM over T·B = 256 .. 28672: oneDNN from 4-8K rows on, MKL at or near a tie below), and timing each of
// a long run's eighth-octave classes cost a fresh machine 0.1-0.3 s a class (25 s in the first 60 steps of
// random-shape training, 3.5x the steps' own time). Leading dimensions equal to that size follow it. -1: none.
inline int bracketed_plan(const GemmKey& key) {
  std::lock_guard<std::mutex> lock(g_plan_mutex);
  for (int i = 0; i < 3; ++i) {
    if (key[i] <= 256) continue;  // exact sizes, no classes
    auto same = [&](const GemmKey& e) {  // e differs from key in size i (and the lds that equal it) only
      for (int j = 0; j < int(key.size()); ++j) {
        const bool follows = j != i && j >= 5 && j <= 7 && key[j] == key[i];
        if (j != i && (follows ? e[j] != e[i] : e[j] != key[j])) return false;
      }
      return true;
    };
    const std::pair<const GemmKey, int>*below = nullptr, *above = nullptr;
    for (const auto& entry : g_plan) {
      const int64_t d = entry.first[i];
      if (d == key[i] || !same(entry.first)) continue;
      if (d < key[i] && (!below || d > below->first[i])) below = &entry;
      if (d > key[i] && (!above || d < above->first[i])) above = &entry;
    }
    if (below && above && above->first[i] <= 4 * below->first[i] && below->second == above->second)
      return below->second;
  }
  return -1;
}
}  // namespace native_ext

// m itself where its rows lie back to back, else a packed copy of it in a pooled buffer. torch's oneDNN matmul
// takes an operand as stored only when it is contiguous, transposed or not; any other view (a block of columns
// of dxw, as a weight gradient dW = dxw[:, block]ᵀ h reads) it made contiguous in the GEMM's orientation, a
// transposing copy through TensorIterator: 3.3 ms for a (3200 × 512) block on an AMD Zen 5, where the GEMM
// itself takes 2.5 ms, and a fifth of a 2x512 MUT2's backward. Row by row it is a memcpy.
template <typename T>
at::Tensor dense_rows(const at::Tensor& m) {
  const int64_t rows = m.size(0), cols = m.size(1), ld = m.stride(0);
  if (ld == cols || rows == 1) return m;
  at::Tensor d = pooled_empty({rows, cols}, m.options());
  const T* src = m.data_ptr<T>();
  T* dst = d.data_ptr<T>();
  parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(cols, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) std::copy(src + i * ld, src + i * ld + cols, dst + i * cols);
  });
  return d;
}

// The rows of op(A) that one oneDNN call takes: torch's oneDNN matmul keeps what it made for each shape it meets (a
// primitive in oneDNN's cache and its descriptor in ideep's, about 0.5 MB a shape, up to 1,024 shapes each), and a
// GEMM over the T·B rows of a batch (the input projection) met a new shape at every new T·B: a 1x128 LSTM (B 32)
// trained on lengths of 600-784 held 850 MB after 100 steps (torch.nn 480 MB), 650 MB in blocks. From 2,048 rows it
// runs in blocks of a power of two (at most 4,096 rows, at least 8 blocks; the last block ends at M, over rows the
// block before it wrote): a few shapes whatever M, the same numbers (each row of C is the same sums whichever block
// holds it). Not where C's old value is added (beta: a row written twice would add it twice) nor over the columns of
// a transposed A (a copy).
inline int64_t dnnl_rows(int64_t M, bool ta, bool beta) {
  if (ta || beta || M < 2048) return M;
  return std::min<int64_t>(4096, int64_t(1) << (63 - __builtin_clzll(uint64_t(M / 8))));
}

// oneDNN's matmul keeps what it makes for each call shape it meets, a primitive in oneDNN's cache and its
// descriptor in ideep's (about 0.6 MB a shape, up to 1,024 shapes each): where the sizes follow the data (the T·B
// rows of a projection under 2,048, of a projection that adds its bias in C, of a weight gradient's sum), every new
// T·B made a new shape, and a 1x64 LSTM trained on random B (4-32) and T (1-300) held 1,065 MB after 1,000 steps,
// 1,289 after 2,000, where MKL alone held 391. So with the timed choices (RNNKIT_GEMM=auto) oneDNN runs at most
// kDnnlShapes call shapes in a process, the first it meets: a training of fixed shapes (its batches, the last one,
// validation's) runs as before, one call each, the same bits; a shape met after that runs by MKL, every time (a
// shape's library is decided at its first call, once). Timing counts as a call: it takes the shapes its oneDNN
// options run before it times them (dnnl_room), all of them or none, and where they don't all fit it offers
// oneDNN no more, and the choice it makes without oneDNN is kept for this process only (gemm_plan, step_weight).
// RNNKIT_GEMM=dnnl runs every shape by oneDNN.
namespace native_ext {
inline constexpr size_t kDnnlShapes = 256;
// rows, N, K, ta, tb, beta, ldc (the operands are dense: dense_rows), and the calling thread's torch threads: oneDNN
// makes a primitive per thread count too (the same 256 shapes run at 1 thread and then at 2 held 137 MB more, the
// count at 256 all the while)
using DnnlShape = std::array<int64_t, 8>;
inline std::set<DnnlShape> g_dnnl_shapes;
inline std::mutex g_dnnl_mutex;
}  // namespace native_ext
inline native_ext::DnnlShape dnnl_shape(int64_t rows, int64_t N, int64_t K, bool ta, bool tb, bool beta, int64_t ldc) {
  return {rows, N, K, ta, tb, beta, ldc, at::get_num_threads()};
}
// Whether a timing may offer oneDNN: the call shapes its oneDNN options run are each met already or all taken now
// (none where they don't all fit). Checking for room and letting the timed calls take it was not enough: a step's
// weight times oneDNN on W and on its transposed copy, two shapes, and with one left the second ran by MKL, timed
// as oneDNN, and the class went to the plan file (so did a class whose one shape another thread took meanwhile).
inline bool dnnl_room(std::initializer_list<native_ext::DnnlShape> shapes) {
  using namespace native_ext;
  if (g_gemm_mode != GemmMode::Auto) return true;
  std::lock_guard<std::mutex> lock(g_dnnl_mutex);
  size_t missing = 0;
  for (const auto& shape : shapes) missing += !g_dnnl_shapes.count(shape);
  if (g_dnnl_shapes.size() + missing > kDnnlShapes) return false;
  g_dnnl_shapes.insert(shapes.begin(), shapes.end());
  return true;
}
// Whether a call of this shape runs by oneDNN: met already, or taken now where the bound has room.
inline bool dnnl_admits(const native_ext::DnnlShape& shape) { return dnnl_room({shape}); }

template <typename T>
void gemm_with(bool dnnl, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
               int64_t ldb, T beta, T* C, int64_t ldc) {
  if (M == 0 || N == 0) return;  // (BLAS would print an error for a leading dimension of 0)
  const auto o = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  if (K == 0) {  // C = beta·C
    auto c = at::from_blob(C, {M, N}, {ldc, 1}, o);
    beta == T(0) ? c.zero_() : c.mul_(beta);
    return;
  }
  // the Fortran BLAS takes int sizes: past 2^31 - 1 (T·B rows of a projection over a long signal) they wrapped
  // and the GEMM computed part of it, or nothing; ATen's path takes int64
  const bool fits = std::max({M, N, K, lda, ldb, ldc}) <= int64_t(std::numeric_limits<int>::max());
  const int64_t rows = dnnl ? dnnl_rows(M, ta, beta != T(0)) : M;
  dnnl = dnnl && have_dnnl() && dnnl_admits(dnnl_shape(rows, N, K, ta, tb, beta != T(0), ldc));
  if (have_blas() && !dnnl && fits) {  // row-major C = op(A) op(B)  <=>  column-major Cᵀ = op(B)ᵀ op(A)ᵀ
    blas<T>(tb ? 'T' : 'N', ta ? 'T' : 'N', N, M, K, T(1), B, ldb, A, lda, beta, C, ldc);
    return;
  }
  auto a = at::from_blob(const_cast<T*>(A), {ta ? K : M, ta ? M : K}, {lda, 1}, o);
  auto b = at::from_blob(const_cast<T*>(B), {tb ? N : K, tb ? K : N}, {ldb, 1}, o);
  auto c = at::from_blob(C, {M, N}, {ldc, 1}, o);
  if (dnnl) {
    a = dense_rows<T>(a), b = dense_rows<T>(b);
    for (int64_t r = 0; r < M; r += rows) {
      const int64_t r0 = std::min(r, M - rows);  // (the last block ends at M, rows before it written again, alike)
      at::native::mkldnn_matmul(ta ? a.t() : a.narrow(0, r0, rows), tb ? b.t() : b, c.narrow(0, r0, rows),
                                float(beta), 1.f);
    }
  } else if (beta == T(0)) {
    at::mm_out(c, ta ? a.t() : a, tb ? b.t() : b);
  } else {
    c.addmm_(ta ? a.t() : a, tb ? b.t() : b, beta);
  }
}

// gemm_with, or (plan 2, beta = 0) the transposed problem into a scratch buffer copied into C.
template <typename T>
void gemm_run(int plan, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
              int64_t ldb, T beta, T* C, int64_t ldc) {
  if (plan != 2 || beta != T(0)) return gemm_with<T>(plan == 1, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
  const auto o = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  at::Tensor Ct = at::empty({N, M}, o);
  gemm_with<T>(false, !tb, !ta, N, M, K, B, ldb, A, lda, T(0), Ct.data_ptr<T>(), M);
  at::from_blob(C, {M, N}, {ldc, 1}, o).copy_(Ct.t());
}

// Best seconds per call of f over a few calls (after one or two to warm up, none when warm: f ran before): five,
// fewer for a call of milliseconds (a GEMM over a long sequence), whose time varies less and whose timing would
// cost seconds, and no more once the best is past give_up (an option already beaten by far).
template <typename F>
double best_time(F&& f, bool warm = false, double give_up = 1e30) {
  using clock = std::chrono::steady_clock;
  auto seconds = [](clock::time_point t0) { return std::chrono::duration<double>(clock::now() - t0).count(); };
  auto t0 = clock::now();
  if (!warm) {
    f();
    if (seconds(t0) < 5e-3) f();
  }
  double best = 1e30, spent = 0;
  for (int k = 0; k < 5 && (k < 2 || spent < 20e-3) && (k == 0 || best <= give_up); ++k) {
    t0 = clock::now();
    f();
    const double s = seconds(t0);
    best = std::min(best, s), spent += s;
  }
  return best;
}

// Seconds per call of each option (run(k) runs option k once; offered(k) false: not timed, 1e30), the best of
// two interleaved rounds (drift hits all alike). An option 2x behind the best so far stops after one timed call,
// and the second round times again only the options within 1.25x of the best: the rounds are there to tell near
// ties apart, and timing losers by far cost a fresh machine a third of its first-call time (a 13 ms GEMM 18 calls).
template <typename F, typename G>
std::vector<double> option_times(int n, F&& run, G&& offered) {
  std::vector<double> t(n, 1e30);
  for (int round = 0; round < 2; ++round)
    for (int k = 0; k < n; ++k) {
      const double best = *std::min_element(t.begin(), t.end());
      if (!offered(k) || (round == 1 && t[k] > 1.25 * best)) continue;
      t[k] = std::min(t[k], best_time([&] { run(k); }, round == 1, 2 * best));
    }
  return t;
}
template <typename F>
std::vector<double> option_times(int n, F&& run) {
  return option_times(n, run, [](int) { return true; });
}

// The option with the least time (option_times).
template <typename F, typename G>
int fastest(int n, F&& run, G&& offered) {
  const std::vector<double> t = option_times(n, run, offered);
  return int(std::min_element(t.begin(), t.end()) - t.begin());
}
template <typename F>
int fastest(int n, F&& run) {
  return fastest(n, run, [](int) { return true; });
}

// An operand for timing a GEMM: fixed values in [-0.5, 0.5), not drawn from torch's random generator, whose
// stream (dropout masks, samples) must not depend on whether a shape was timed in this process before.
template <typename T>
at::Tensor timing_operand(int64_t rows, int64_t cols) {
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  return at::arange(rows * cols, options).mul_(0.6180339887).frac_().sub_(0.5).view({rows, cols});
}

// How a float32 GEMM runs (timed once per shape, see fastest): 0 MKL, 1 oneDNN, 2 MKL on the transposed
// problem Cᵀ = op(B)ᵀ op(A)ᵀ into a scratch buffer, then copied into C (beta = 0 only). Option 2 is for
// weight gradients like dW_xh = dxwᵀ x with a narrow x: (x ᵀ dxw)ᵀ measured 1.2-1.55x faster at D = 64.
//
// The plan is kept per shape class, not per exact shape: sizes above 256 are rounded up to eighths of an octave
// (3200 and 3300 share one), as the sizes that follow the data (T·B) vary from batch to batch, and timing three
// options afresh for every new (T, B) made each new shape's call 10-20x slower. The first shape of a class is
// timed as it is (one of more than 2^32 multiply-adds on a part of its longest side), and every call of the
// class runs the plan found, from the first on: the same input gives the same bits every time.
inline int64_t plan_class(int64_t d) {
  if (d <= 256) return d;
  const int64_t step = int64_t(1) << (63 - __builtin_clzll(uint64_t(d)) - 3);
  return (d + step - 1) / step * step;
}

inline int gemm_plan(bool ta, bool tb, int64_t M, int64_t N, int64_t K, int64_t lda, int64_t ldb, int64_t ldc,
                     bool beta) {
  using namespace native_ext;
  if (g_gemm_mode != GemmMode::Auto || M * N * K < kSmall || fixed_choice())
    return g_gemm_mode == GemmMode::Dnnl && have_dnnl() ? 1 : 0;
  const GemmKey key{plan_class(M), plan_class(N), plan_class(K), ta, tb, plan_class(lda), plan_class(ldb),
                    plan_class(ldc), beta, at::get_num_threads()};
  if (const int known = known_plan(key); known >= 0) return known;
  if (const int between = bracketed_plan(key); between >= 0) return keep_plan(key, between);
  constexpr double kTimeCap = 4294967296.0;  // 2^32 multiply-adds
  const double work = double(M) * double(N) * double(K);
  if (work > kTimeCap) {  // lds stay: a shorter side still fits in them
    int64_t& longest = M >= N && M >= K ? M : (N >= K ? N : K);
    longest = std::max<int64_t>(1, int64_t(double(longest) * kTimeCap / work));
  }
  // and at most 4M floats (16 MB) an operand: a tall, narrow GEMM (a projection over T·B rows) stays under the
  // work cap at any size, and its timing copies were as big as the real operands (3x the memory of the call)
  constexpr int64_t kTimeFloats = int64_t(1) << 22;
  auto floats = [&] { return std::max({(ta ? K : M) * lda, (tb ? N : K) * ldb, M * ldc}); };
  while (floats() > kTimeFloats && std::max({M, N, K}) > 1) {
    int64_t& longest = M >= N && M >= K ? M : (N >= K ? N : K);
    longest = (longest + 1) / 2;
  }
  auto A = timing_operand<float>(ta ? K : M, lda), B = timing_operand<float>(tb ? N : K, ldb);
  auto C = at::zeros({M, ldc}, at::kFloat);  // (float32 GEMMs only: not the default dtype, which may be float64)
  // (option 1's shape)
  const bool room = have_dnnl() && dnnl_room({dnnl_shape(dnnl_rows(M, ta, beta), N, K, ta, tb, beta, ldc)});
  return keep_plan(key, fastest(beta ? 2 : 3, [&](int k) {
    gemm_run<float>(k, ta, tb, M, N, K, A.data_ptr<float>(), lda, B.data_ptr<float>(), ldb, beta ? 1.f : 0.f,
                    C.data_ptr<float>(), ldc);
  }, [&](int k) { return k != 1 || room; }), have_dnnl() && !room);
}

// C (M×N, row-major, ldc) = op(A) op(B) + beta·C with op(A) M×K, op(B) K×N.
template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
  const int plan = std::is_same_v<T, float> && !at::in_parallel_region()
                       ? gemm_plan(ta, tb, M, N, K, lda, ldb, ldc, beta != T(0)) : 0;
  gemm_run<T>(plan, ta, tb, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

// The weight operand of a per-step GEMM, C (M×N) = A (M×K) op(W) with op(W) = Wᵀ (W stored N×K) when tw,
// else W (stored K×N): prepared once for the whole time loop in the form that runs fastest (see Lib).
template <typename T>
struct StepW {
  Lib lib = Lib::Blas;
  const T* W = nullptr;  // what each call reads: W itself, its transposed copy or its packed form
  bool tw = false;
  int64_t N = 0, K = 0, M = 0, ldw = 0;
  at::Tensor hold;  // the copy or the packed form

  // options: 0 plain BLAS on W in (K×N) layout (a transposed copy when tw), 1 oneDNN on W as stored,
  // 2 oneDNN on the (K×N) layout, 3 MKL packed, 4 rnnkit's own kernel (kernel.h)
  static StepW make(int option, const T* W, bool tw, int64_t N, int64_t K, int64_t M) {
    StepW s;
    if (option == 4 && !RNNKIT_OWN_GEMM) option = 0;  // no AVX-512: the kernel is not compiled
    if (option == 3 && !have_packed()) option = 0;    // (a choice read back from a plan file, see native.py)
    if ((option == 1 || option == 2) && !have_dnnl()) option = 0;
    s.N = N, s.K = K, s.M = M, s.W = W, s.tw = tw, s.ldw = tw ? K : N;
    s.lib = option == 0 ? Lib::Blas : option == 3 ? Lib::Packed : option == 4 ? Lib::Own : Lib::Dnnl;
    auto o = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    if (option == 4) {
      if constexpr (std::is_same_v<T, float>) {
        s.hold = pooled_empty({kernel::packed_size(N, K) + 16}, o);
        float* p = s.hold.data_ptr<float>();
        p += (64 - reinterpret_cast<uintptr_t>(p) % 64) % 64 / sizeof(float);  // panels on cache lines
        kernel::pack(W, s.ldw, tw, N, K, p);
        s.W = p;
      }
    } else if (option == 3) {
      if constexpr (std::is_same_v<T, float>) {
        const int n = int(N), m = int(M), k = int(K), ld = int(s.ldw);
        const float one = 1.f;
        const char trans = tw ? 'T' : 'N';
        s.hold = pooled_empty({int64_t(SGEMM_PACK_GET_SIZE("A", &n, &m, &k) / sizeof(float)) + 16}, o);
        SGEMM_PACK("A", &trans, &n, &m, &k, &one, W, &ld, s.hold.data_ptr<float>());
        s.W = s.hold.data_ptr<T>();
      }
    } else if (tw && option != 1) {
      s.hold = pooled_empty({K, N}, o);
      s.hold.copy_(at::from_blob(const_cast<T*>(W), {N, K}, o).t());
      s.W = s.hold.data_ptr<T>(), s.tw = false, s.ldw = N;
    }
    return s;
  }
  void mul(const T* A, int64_t lda, T beta, T* C, int64_t ldc) const {
    if constexpr (std::is_same_v<T, float>) {
      if (lib == Lib::Own) return kernel::gemm(M, N, K, A, lda, W, beta, C, ldc);
      if (lib == Lib::Packed) {  // column-major: Cᵀ (N×M) = packed op(W)ᵀ (N×K) · Aᵀ (K×M)
        const int n = int(N), m = int(M), k = int(K), lw = int(ldw), la = int(lda), lc = int(ldc);
        SGEMM_COMPUTE("P", "N", &n, &m, &k, W, &lw, A, &la, &beta, C, &lc);
        return;
      }
    }
    gemm_with<T>(lib == Lib::Dnnl, false, tw, M, N, K, A, lda, W, ldw, beta, C, ldc);
  }
};

// The fastest prepared form of W for this shape (timed once per shape and remembered; see Lib).
template <typename T>
StepW<T> step_weight(const T* W, bool tw, int64_t N, int64_t K, int64_t M, int64_t lda, int64_t ldc, bool beta) {
  using namespace native_ext;
  const bool f32 = std::is_same_v<T, float>;
  if (!f32 || !have_blas()) return StepW<T>::make(0, W, tw, N, K, M);
  switch (g_gemm_mode) {
    case GemmMode::Blas: return StepW<T>::make(0, W, tw, N, K, M);
    case GemmMode::Dnnl: return StepW<T>::make(have_dnnl() ? 1 : 0, W, tw, N, K, M);
    case GemmMode::Packed: return StepW<T>::make(have_packed() ? 3 : 0, W, tw, N, K, M);
    case GemmMode::Own: return StepW<T>::make(RNNKIT_OWN_GEMM ? 4 : 0, W, tw, N, K, M);
    case GemmMode::Auto: break;
  }
  if (M * N * K < kSmall) return StepW<T>::make(0, W, tw, N, K, M);
  if (fixed_choice()) return StepW<T>::make(have_packed() ? 3 : 0, W, tw, N, K, M);
  const GemmKey key{M, N, K, tw, lda, ldc, beta, at::get_num_threads(), -1, -1};
  if (const int known = known_plan(key); known >= 0) return StepW<T>::make(known, W, tw, N, K, M);
  std::vector<StepW<T>> options;
  const int64_t rows = dnnl_rows(M, false, beta);  // options 1 (W as stored) and 2 (its K×N copy, where tw)
  const bool room = have_dnnl() && (tw ? dnnl_room({dnnl_shape(rows, N, K, 0, 1, beta, ldc),
                                                     dnnl_shape(rows, N, K, 0, 0, beta, ldc)})
                                       : dnnl_room({dnnl_shape(rows, N, K, 0, 0, beta, ldc)}));
  for (int k = 0; k < 5; ++k)
    if ((k != 2 || tw) && (k != 3 || have_packed()) && (k != 4 || RNNKIT_OWN_GEMM) && ((k != 1 && k != 2) || room))
      options.push_back(StepW<T>::make(k, W, tw, N, K, M));
  auto A = timing_operand<T>(M, lda);
  auto C = at::zeros({M, ldc}, A.options());
  const int best = fastest(int(options.size()), [&](int k) {
    options[k].mul(A.template data_ptr<T>(), lda, T(beta), C.template data_ptr<T>(), ldc);
  });
  const Lib lib = options[best].lib;
  const int option = lib == Lib::Own ? 4 : lib == Lib::Packed ? 3 : lib == Lib::Blas ? 0 : options[best].tw == tw ? 1 : 2;
  const int kept = keep_plan(key, option, have_dnnl() && !room);
  return kept == option ? options[best] : StepW<T>::make(kept, W, tw, N, K, M);
}

// A thread's own weight slice, C (M×N) = A op(W) on that thread's M rows: MKL's packed form where it exists
// (no per-call packing), else a (K×N) copy; with RNNKIT_GEMM=auto on an AVX-512 CPU, rnnkit's own kernel
// (kernel.h) instead where a first timing of this shape finds it at least 5% faster than MKL's packed GEMM
// (at the narrow steps of small cells: 16×128×128 ran 1.1-1.2x faster; at an LSTM's 16×512×128 they tie,
// and in the loop MKL was the faster, so a near tie keeps MKL). Only the choice of the two is timed, once per
// shape; the threads of a loop that meet it first time it side by side, as the loop runs, and take the choice
// kept first (keep_plan). threads: the calling loop's torch threads, the key's (a worker of over_rows read its own
// count, 1 in a worker that had not run torch before: the first call of a process, or of a new Python thread, took
// another key's choice than every later call, other bits for the same input).
template <typename T>
StepW<T> thread_weight(const T* W, bool tw, int64_t N, int64_t K, int64_t M, int64_t lda, int64_t ldc, bool beta,
                       int64_t threads) {
  using namespace native_ext;
  const bool f32 = std::is_same_v<T, float>;
  const int packed = f32 && have_packed() && g_gemm_mode != GemmMode::Blas ? 3 : 0;
  if (!f32 || !RNNKIT_OWN_GEMM || g_gemm_mode == GemmMode::Blas) return StepW<T>::make(packed, W, tw, N, K, M);
  if (g_gemm_mode == GemmMode::Own) return StepW<T>::make(4, W, tw, N, K, M);
  if (g_gemm_mode != GemmMode::Auto || fixed_choice()) return StepW<T>::make(packed, W, tw, N, K, M);
  const GemmKey key{M, N, K, tw, lda, ldc, beta, threads, -2, -2};
  int option = known_plan(key);
  if (option < 0) {  // timed on one thread, as the loop runs it (MKL inside a team runs on one)
    const int one = 1;
    const int before = mkl_set_num_threads_local_ ? mkl_set_num_threads_local_(&one) : 0;
    StepW<T> options[2] = {StepW<T>::make(packed, W, tw, N, K, M), StepW<T>::make(4, W, tw, N, K, M)};
    auto A = timing_operand<T>(M, lda);
    auto C = at::zeros({M, ldc}, A.options());
    const std::vector<double> t = option_times(2, [&](int k) {
      options[k].mul(A.template data_ptr<T>(), lda, T(beta), C.template data_ptr<T>(), ldc);
    });
    if (mkl_set_num_threads_local_) mkl_set_num_threads_local_(&before);
    option = keep_plan(key, t[1] < 0.95 * t[0] ? 4 : packed);
  }
  return StepW<T>::make(option, W, tw, N, K, M);
}

template <typename T>
struct Run {
  int64_t T_, B, H, X;  // steps, batch, width of h_t (the state fed back and output), width of an xw row
  int64_t HC = 0;        // width of c_t and of each gate block: H, except in lstmp (h_t is c's projection)
  int64_t b0 = 0, b1 = 0;  // the rows this thread owns: rows never mix within the time loop
  int64_t threads = 1;     // torch's threads where the loop was called (make_run): thread_weight's key
  bool reverse = false, keep = true;
  const T* xw = nullptr;
  const T* mask = nullptr;  // (T, B) of 0/1, or null
  std::vector<const T*> P;  // recurrent parameters in REC_PARAMS order (null = absent bias)
  // gru_cho, mut1-3 (cells_gated.h): the input bias b_xh (X) that the loop adds to xw, zeros where xw holds it
  // already; dxb its gradient, Σ over steps and this thread's rows; raw (mut1): xw's x̃ block is given before
  // its tanh, which the loop takes
  const T* xb = nullptr;
  T* dxb = nullptr;
  bool raw = false;
  // mut1 raw with x̃_t = x_t (D = H): xw holds only [z, r] (X = 2H) and the loop reads x̃ from the layer's input
  // itself, xt (T, B, H), and writes dL/dx̃ to dxt (T, B, H): no copy of x into xw nor of dx̃ out of dxw
  const T* xt = nullptr;
  T* dxt = nullptr;
  const void* tc = nullptr;  // a traced cell's description (cells_traced.h: TracedCell), else null
  bool prepare = false;  // a long loop: per-step weight operands are prepared once (StepW), else read as stored
  std::shared_ptr<std::array<std::shared_ptr<StepW<T>>, 4>> sw = std::make_shared<std::array<std::shared_ptr<StepW<T>>, 4>>();
  T *hs = nullptr, *HH = nullptr, *CC = nullptr;
  int64_t hs_t = 0, hs_b = 0;  // strides of hs (and dhs) per step and per row: (T, B, H) or batch-first (B, T, H)
  std::vector<T*> cache;  // per-cell caches, each (T or 1, B, width)
  std::vector<T*> tmp;    // per-step scratch, (B, up to 4H) each
  // backward
  const T* dhs = nullptr;
  T *dxw = nullptr, *dhw = nullptr, *dalpha = nullptr, *probe = nullptr;
  T *dH = nullptr, *dC = nullptr;  // (B, H), (B, HC): dL/dstate, carried from step t+1 down to step t
  T* dh = nullptr;                 // (B, H): the total dL/dh_t = dH + m_t ⊙ dhs[t], formed before each step

  int64_t prev(int64_t t) const { return reverse ? t + 1 : t; }  // slot of h_prev for step t
  int64_t next(int64_t t) const { return reverse ? t : t + 1; }   // slot of h_t
  // Without a backward to follow (keep false) states and caches are rings of ring and cring slots that start each
  // step's operands at the alignment they have in the whole-sequence buffers: MKL's sgemm picks its kernel by
  // the operand's alignment (h_prev off 16 bytes: other bits), and evaluation's outputs were 1e-8 off
  // training's where B·H is not a multiple of 16 floats.
  int64_t ring = 2, cring = 1;
  int64_t c(int64_t t) const { return keep ? t : t % cring; }    // cache index
  bool m(int64_t t, int64_t b) const { return mask == nullptr || mask[t * B + b] != T(0); }
  T* h(int64_t slot) const { return HH + (keep ? slot : slot % ring) * B * H; }
  T* cs(int64_t slot) const { return CC + (keep ? slot : slot % ring) * B * HC; }
  // (T+1, B, H) state slots read as a (T, B, H) array: row t is slot prev(t), resp. slot next(t)
  const T* at_prev(const T* slots) const { return slots + (reverse ? B * H : 0); }
  const T* at_next(const T* slots) const { return slots + (reverse ? 0 : B * H); }
  T* C(int k, int64_t t, int64_t width) const { return cache[k] + c(t) * B * width; }
  T* out(int64_t t, int64_t b) const { return hs + t * hs_t + b * hs_b; }           // h_t of row b in hs
  const T* dout(int64_t t, int64_t b) const { return dhs + t * hs_t + b * hs_b; }   // dL/dh_t from above
  // this thread's rows of C (B×N) = A (B×K) op(W) + beta·C, W stored (N×K) when tw, else (K×N)
  void rows_gemm(bool tw, int64_t N, int64_t K, const T* A, int64_t lda, const T* W, int64_t ldw, T beta, T* C,
                 int64_t ldc) const {
    gemm<T>(false, tw, b1 - b0, N, K, A + b0 * lda, lda, W, ldw, beta, C + b0 * ldc, ldc);
  }
  // C (B×N) = A (B×K) op(W_k) + beta·C for W_k = P[k]: op(W_k) = W_kᵀ (stored N×K) when tw, else W_k (stored
  // K×N). In a long loop the first call prepares W_k in its fastest form (StepW) and later steps reuse it.
  // With the rows split over threads (over_rows), each thread prepares its own copy in the packed form.
  void mul_w(int k, bool tw, int64_t N, int64_t K, const T* A, int64_t lda, T beta, T* C, int64_t ldc) const {
    if (!prepare) return rows_gemm(tw, N, K, A, lda, P[k], tw ? K : N, beta, C, ldc);
    auto& s = (*sw)[k];
    if (!s) {
      const bool all = b1 - b0 == B && !at::in_parallel_region();
      s = std::make_shared<StepW<T>>(all ? step_weight<T>(P[k], tw, N, K, B, lda, ldc, beta != T(0))
                                         : thread_weight<T>(P[k], tw, N, K, b1 - b0, lda, ldc, beta != T(0), threads));
    }
    TORCH_CHECK(s->N == N && s->K == K, "rnnkit native: weight ", k, " used with two shapes in one loop");
    s->mul(A + b0 * lda, lda, beta, C + b0 * ldc, ldc);
  }
  void mul_wt(int k, int64_t N, int64_t K, const T* A, int64_t lda, T* C, int64_t ldc) const {
    mul_w(k, true, N, K, A, lda, T(0), C, ldc);
  }
};

}  // namespace rnnkit
