// The native backend's time loop: forward and BPTT for every cell, over a whole sequence.
//
//   forward:   for t in order:            cell.fwd(t)     (recurrent GEMM(s) + one fused pointwise loop)
//   backward:  for t in reversed(order):  dh = dH + m_t ⊙ dhs[t];  cell.bwd(t)   (pointwise, dh_prev GEMM)
//              then dU_k = dpre_kᵀ u_k, one GEMM per recurrent matrix over all T·B rows.
// Python (rnnkit/engine/native.py) wraps the two in a torch.autograd.Function.
#include <pthread.h>
#include <torch/extension.h>
#include <unistd.h>

#include <chrono>
#include <numeric>

#include "cells_gated.h"
#include "cells_proj.h"
#include "cells_traced.h"
#include "split.h"

namespace rnnkit {

using Tensors = std::vector<at::Tensor>;

// The cells whose step is one GEMM and a pointwise pass over units (cells_basic.h): split.h runs them.
template <typename T, typename Cell>
constexpr bool one_gemm() {
  return std::is_same_v<Cell, Elman<T, false>> || std::is_same_v<Cell, Elman<T, true>> ||
         std::is_same_v<Cell, Leaky<T>> || std::is_same_v<Cell, LSTM<T>> || std::is_same_v<Cell, GRU<T>>;
}
// Gated cells wait at two or three barriers a step: measured on 2 cores, splitting their units gained 1-6%
// at H = 512 and lost 2-3% at H = 128, so they split from this width on.
constexpr int64_t kGatedSplitMin = 256;
template <typename T, typename Cell>
constexpr bool gated() {  // gru_cho, mut1-3 (cells_gated.h)
  return std::is_same_v<Cell, Gated<T, Kind::Cho>> || std::is_same_v<Cell, Gated<T, Kind::M1>> ||
         std::is_same_v<Cell, Gated<T, Kind::M2>> || std::is_same_v<Cell, Gated<T, Kind::M3>>;
}
template <typename T, typename Cell>
constexpr bool traced() {  // a cell of one's own, traced into kernels (cells_traced.h)
  return std::is_same_v<Cell, Traced<T>>;
}
// Whether a gated cell's b_xh comes folded into the loop (the parameter after its matrices, cells_gated.h).
template <typename T, typename Cell>
bool has_input_bias(const std::vector<c10::optional<at::Tensor>>& P) {
  if constexpr (gated<T, Cell>()) return int64_t(P.size()) > Cell::xb_param && P[Cell::xb_param];
  else return false;
}
// The width of the xw rows the cell reads: its gates' pre-activations ([z, r] only for mut1 with x̃ apart).
template <typename T, typename Cell>
int64_t xw_width(const Run<T>& r, bool xt) {
  if constexpr (gated<T, Cell>()) return (xt ? 2 : 3) * r.H;
  else if constexpr (std::is_same_v<Cell, LSTMP<T>>) return 4 * r.HC;
  else if constexpr (traced<T, Cell>()) return Traced<T>::cell(r).G * r.H;
  else return Cell::kGates * r.H;
}
// The loop's part of the input projection: that b_xh, and mut1's raw x̃ (xt: read from a tensor of its own).
// The sizes it reads are checked here too (engine.run checks them first, with the cell's words): an xw or b_xh
// of another width was read past its end.
template <typename T, typename Cell>
void fold_input(Run<T>& r, const std::vector<c10::optional<at::Tensor>>& P, bool raw, bool xt) {
  const int64_t width = xw_width<T, Cell>(r, xt);
  TORCH_CHECK(r.X == width, "rnnkit native: xw rows of ", r.X, " columns for a cell that reads ", width);
  if constexpr (gated<T, Cell>()) {
    if (has_input_bias<T, Cell>(P)) {
      TORCH_CHECK(P[Cell::xb_param]->numel() == 3 * r.H, "rnnkit native: b_xh of ", P[Cell::xb_param]->numel(),
                  " for ", 3 * r.H, " columns");
      r.xb = r.P[Cell::xb_param];
    }
    r.raw = raw && Cell::kind == Kind::M1;
  }
  TORCH_CHECK(!xt || r.raw, "rnnkit native: a separate x̃ is for mut1 with raw x̃ only");
}
template <typename T, typename Cell>
std::vector<int64_t> cache_widths(const Run<T>& r) {
  if constexpr (gated<T, Cell>()) return Cell::widths(r.H, r.raw);
  else if constexpr (traced<T, Cell>()) return Cell::widths(Cell::cell(r), r.H);
  else return Cell::widths(r.HC);
}
template <typename T, typename Cell>
std::vector<GradSpec> grad_specs(const Run<T>& r) {
  if constexpr (gated<T, Cell>()) return Cell::grads(r.H, r.raw);
  else if constexpr (std::is_same_v<Cell, LSTMP<T>>) return Cell::grads(r.HC, r.H);
  else if constexpr (traced<T, Cell>()) return Cell::grads(Cell::cell(r), r.H);
  else return Cell::grads(r.H);
}
constexpr int64_t kPrepareSteps = 8;  // from this many steps on, per-step weights are prepared once (run.h, StepW)

// make_run's zeros (standing in for an absent bias: only read) and its three per-step scratch rows, where all fit in
// a small block (kSmallScratch bytes: a one-step call, B·4H small): one block per thread and dtype, kept from call
// to call, as [zeros: zcap][tmp 0][tmp 1][tmp 2], each part 64-byte aligned as at::empty's memory (MKL picks its
// kernel by alignment). zcap only grows and the block is made anew (zeroed) when it does, so the zeros stay zeros.
// Four tensors made per call were a fifth of a one-step call's time in the engine.
constexpr int64_t kSmallScratch = int64_t(1) << 16;
template <typename T>
struct Scratch {
  at::Tensor block;
  int64_t zcap = 0;
};
template <typename T>
const Scratch<T>& small_scratch(int64_t zeros, int64_t each, const at::TensorOptions& o) {
  thread_local Scratch<T> s;
  if (!s.block.defined() || zeros > s.zcap || s.zcap + 3 * each > s.block.numel()) {
    s.zcap = std::max(zeros, s.zcap);
    const int64_t had = s.block.defined() ? s.block.numel() : 0;
    s.block = at::zeros({std::max(s.zcap + 3 * each, had)}, o);
  }
  return s;
}

// HC: the width of c_t where it differs from h_t's (lstmp), else 0.
template <typename T>
Run<T> make_run(int64_t T_, const at::Tensor& HH, int64_t X, const std::vector<c10::optional<at::Tensor>>& P,
                const c10::optional<at::Tensor>& mask, bool reverse, Tensors& keepalive, bool batch_first,
                int64_t HC = 0) {
  Run<T> r;
  r.T_ = T_, r.B = HH.size(1), r.H = HH.size(2), r.X = X, r.reverse = reverse;
  r.threads = at::get_num_threads();
  r.HC = HC > 0 ? HC : r.H;
  const int64_t W = std::max(r.H, r.HC);
  r.hs_t = batch_first ? r.H : r.B * r.H, r.hs_b = batch_first ? r.T_ * r.H : r.H;
  r.HH = HH.data_ptr<T>();
  r.mask = mask ? mask->data_ptr<T>() : nullptr;
  r.tc = tl_traced;  // (with_cell's, for a traced cell)
  const int64_t tmp_width = std::max(4 * W, r.tc ? static_cast<const TracedCell*>(r.tc)->Gp * r.H : 0);
  constexpr int64_t align = 64 / int64_t(sizeof(T));
  auto aligned = [](int64_t n) { return (n + align - 1) / align * align; };
  const int64_t nz = aligned(4 * W), each = aligned(r.B * tmp_width);
  const T* zeros;
  if ((nz + 3 * each) * int64_t(sizeof(T)) <= kSmallScratch) {
    const Scratch<T>& s = small_scratch<T>(nz, each, HH.options());
    zeros = s.block.template data_ptr<T>();  // (the tmp rows start past the block's zeros, wherever they end)
    for (int k = 0; k < 3; ++k) r.tmp.push_back(s.block.template data_ptr<T>() + s.zcap + k * each);
  } else {
    keepalive.push_back(at::zeros({4 * W}, HH.options()));  // stands in for an absent bias
    zeros = keepalive.back().data_ptr<T>();
    for (int k = 0; k < 3; ++k) {
      keepalive.push_back(pooled_empty({r.B, tmp_width}, HH.options()));
      r.tmp.push_back(keepalive.back().data_ptr<T>());
    }
  }
  for (auto& p : P) r.P.push_back(p ? p->data_ptr<T>() : zeros);
  r.xb = zeros;
  return r;
}

// How many threads split the batch rows (see over_rows), for recurrent weights of wbytes bytes.
// 0 (the default, auto): all of torch's threads (at most one per 4 rows) when the weights fit in one core's L2
// cache, else 1: one loop over all rows, the hidden units split over threads (split.h) or, failing that, the
// BLAS threading each step's GEMM. Rows split: each thread streams the WHOLE W_hh every step for its rows,
// which is cheap from its own L2 and needs no barrier at all; units split: each thread reads only its slice
// of W_hh, but the threads meet at a barrier every step and read each other's h_t. Measured on 2 cores
// (Sapphire Rapids, 2 MB L2 a core), B32 T50, forward + backward, rows vs units: LSTM H128 5.0 vs 6.4 ms,
// H256 12.4 vs 15.0, H512 (4 MB of W_hh) 50.6 vs 45.0; GRU H512 (3 MB) 41.1 vs 35.9; mut1 H512 (2 MB)
// 29.2 vs 31.3. N > 0 splits the rows whatever the weights' size, over at most N threads (no more than torch's
// threads nor one per 4 rows; 1: never split rows).
inline int64_t g_row_threads = 0;
inline void set_row_threads(int64_t n) { g_row_threads = std::max<int64_t>(0, n); }
inline int64_t l2_bytes() {
  static const int64_t bytes = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE  // glibc; elsewhere assume 1 MB
    const long n = sysconf(_SC_LEVEL2_CACHE_SIZE);
#else
    const long n = 0;
#endif
    return n > 0 ? int64_t(n) : int64_t(1) << 20;
  }();
  return bytes;
}
inline int64_t most_row_threads(int64_t B) { return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B / 4)); }
inline int64_t row_threads(int64_t B, int64_t wbytes) {
  const int64_t most = most_row_threads(B);
  if (g_row_threads > 0) return std::min(most, g_row_threads);
  return wbytes <= l2_bytes() ? most : 1;
}
template <typename T>
int64_t weight_bytes(const std::vector<c10::optional<at::Tensor>>& P) {  // the recurrent matrices
  int64_t n = 0;
  for (auto& p : P)
    if (p && p->dim() == 2) n += p->numel();
  return n * int64_t(sizeof(T));
}

// Past L2 the cache below decides whether rows or units split the loop faster. On a Sapphire Rapids (2 MB L2)
// units won by 12-13% at 3-4 MB of W_hh (LSTM, GRU at H512, above); on an AMD Zen 4 (1 MB L2, 32 MB L3),
// forward + backward at 2x512 B32, rows won at 2-4 MB: MUT1 by 17%, GRU 15%, gru_cho 9%, MUT2 5%, MUT3 4%,
// LSTM 2%. So there the forward times both once per (cell, B up to a power of 2, H, weights, threads): four
// loops (the first call of such a layer costs about 4x) and keeps the faster in the plan table (and its file,
// with the GEMM choices: same choice, same bits, in every later process); the backward takes the same. Not
// timed: float64, RNNKIT_ROW_THREADS or RNNKIT_GEMM set, deterministic mode.
template <typename T, typename Cell>
constexpr int64_t cell_id() {  // as CELL_IDS in rnnkit/engine/native.py (and with_cell below)
  if constexpr (std::is_same_v<Cell, Elman<T, false>>) return 0;
  else if constexpr (std::is_same_v<Cell, Elman<T, true>>) return 1;
  else if constexpr (std::is_same_v<Cell, LSTM<T>>) return 2;
  else if constexpr (std::is_same_v<Cell, GRU<T>>) return 3;
  else if constexpr (std::is_same_v<Cell, Leaky<T>>) return 8;
  else if constexpr (std::is_same_v<Cell, LSTMP<T>>) return 9;
  else if constexpr (traced<T, Cell>()) return 10;
  else return 4 + int64_t(Cell::kind);  // Gated: Cho, M1, M2, M3
}
template <typename T, typename Cell>
native_ext::GemmKey split_key(int64_t B, int64_t H, int64_t wbytes) {  // -3: a split choice, not a GEMM's
  const int64_t batch = B <= 1 ? B : int64_t(1) << (64 - __builtin_clzll(uint64_t(B - 1)));  // B up to a power of 2
  // (a cell of one's own: which one by its kernels' fingerprint, not its id, which is the order of tracing in
  // this process; with the id alone every own cell of a shape took the first one's choice, in the file too)
  int64_t own = 0;
  if constexpr (traced<T, Cell>()) own = tl_traced ? tl_traced->fingerprint : 0;
  return {cell_id<T, Cell>(), batch, H, wbytes, at::get_num_threads(), own, 0, 0, -3, -3};
}

// Whether the forward times (and the backward looks up) rows or units: past L2 (the rule says units), from 8
// steps on, where the units would split and the rows could; float32 with every setting on auto.
template <typename T, typename Cell>
bool timed_split(const Run<T>& r, int64_t rule_rows) {
  // (a traced cell's other way is one loop over all rows, each step's GEMM threaded by the BLAS: it splits no
  // units; its rows ran 13-16% faster at a 2x512 LSTM's and GRU's sizes on an AMD Zen 5)
  const bool units = (one_gemm<T, Cell>() || (gated<T, Cell>() && r.H >= kGatedSplitMin) || traced<T, Cell>()) &&
                     r.prepare;
  return std::is_same_v<T, float> && rule_rows == 1 && most_row_threads(r.B) > 1 && units &&
         split_threads(r.H) > 1 && g_row_threads == 0 && native_ext::g_gemm_mode == native_ext::GemmMode::Auto &&
         !native_ext::fixed_choice();
}

// Whether preparing the per-step weights (r.prepare: StepW, split.h's slabs) pays at this call's length: it costs
// about a write of the weights per call (per thread where units split) and saves a part of each step. From 8 steps
// on it paid at a batch of 16 (at 4 mostly), but at batch 1 with MBs of weights only from a few dozen steps (AMD Zen 4, 2
// threads, no_grad: a 1x1000 GRU at 8 steps took 3.5 ms prepared, 1.3 ms as stored; a 1x512 LSTM 0.84 vs 0.64 ms;
// even at 40 steps the GRU 5.7 ms vs 6.6). So where the recurrent weights pass 1 MB and a call has 8 to 63 steps,
// a batch of up to 4 rows (kPrepareTimedRows) times both ways once per (cell, B up to a power of 2, H, weights,
// threads, steps' octave: 8-15, 16-31, 32-63): six loops (more where the first prepared one times the rows-or-units
// split), the faster kept in the plan table (and its file) as split_key's choices; the backward times its own.
// Larger batches prepare (a first call of a 2x512 LSTM at B32, T50 timed so took 10x a later one's time, to keep
// what the rule does). Not timed: float64, RNNKIT_ROW_THREADS or RNNKIT_GEMM set, deterministic mode (the rule).
constexpr int64_t kPrepareTimedBelow = 64, kPrepareTimedBytes = int64_t(1) << 20, kPrepareTimedRows = 4;
// each way's best of three (of two, in a bench run's process the ways' first call kept the slower way of a 1x1000 GRU
// at 8 steps, 2.2x slower: a call of about a millisecond, timed once, is at the mercy of the machine's noise)
constexpr int kPrepareTimings = 6;
template <typename T, typename Cell>
bool timed_prepare(const Run<T>& r, int64_t wbytes) {
  return std::is_same_v<T, float> && r.T_ >= kPrepareSteps && r.T_ < kPrepareTimedBelow && r.B <= kPrepareTimedRows &&
         wbytes >= kPrepareTimedBytes && g_row_threads == 0 &&
         native_ext::g_gemm_mode == native_ext::GemmMode::Auto && !native_ext::fixed_choice();
}
template <typename T, typename Cell>
native_ext::GemmKey prepare_key(const Run<T>& r, int64_t wbytes) {  // -4: a choice to prepare, not a GEMM's
  native_ext::GemmKey key = split_key<T, Cell>(r.B, r.H, wbytes);
  key[6] = 63 - __builtin_clzll(uint64_t(r.T_));  // log2 of the steps, rounded down
  key[8] = key[9] = -4;
  return key;
}

// The choice kept for key (0 or 1), with run(way) done by it. A key not timed yet runs the two ways alternately,
// `runs` runs from way `first`, keeps the faster by each way's best run (threads that met the key together all take
// the choice kept first), and where the last run was the other way runs the kept one again (its bits). run must
// start afresh at each call after the first (the same inputs, every output written again).
template <typename F>
int timed_choice(const native_ext::GemmKey& key, int runs, int first, F&& run) {
  int choice = native_ext::known_plan(key);
  if (choice >= 0) {
    run(choice);
    return choice;
  }
  double best[2] = {1e30, 1e30};
  int way = first;
  for (int k = 0; k < runs; ++k, way = 1 - way) {
    const auto t0 = std::chrono::steady_clock::now();
    run(way);
    best[way] = std::min(best[way], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  choice = native_ext::keep_plan(key, best[1] < best[0] ? 1 : 0);
  if (choice == way) run(choice);  // (way: the one after the last run's)
  return choice;
}

// Rows of the batch never mix inside the time loop (every step is row-wise: GEMM rows, pointwise),
// so each thread runs the WHOLE loop on its own slice of rows with single-threaded BLAS: no fork/join
// per step. Only the weight-gradient GEMMs after the loop mix rows. (MKL's per-thread setting,
// mkl_set_num_threads_local_, is declared in run.h.)

template <typename T, typename F>
void over_rows(const Run<T>& r, int64_t nt, F&& loop) {
  auto slice = [&](int64_t k) {
    Run<T> s = r;
    s.b0 = r.B * k / nt, s.b1 = r.B * (k + 1) / nt;
    if (nt > 1) s.sw = std::make_shared<std::array<std::shared_ptr<StepW<T>>, 4>>();  // its own prepared weights
    loop(s, k);
  };
  if (nt == 1) return slice(0);
  parallel_for(0, nt, 1, [&](int64_t a, int64_t e) {
    const int one = 1;  // single-threaded BLAS inside (a nested team only oversubscribes), then each thread's
    const int before = mkl_set_num_threads_local_ ? mkl_set_num_threads_local_(&one) : 0;  // own setting back
    for (int64_t k = a; k < e; ++k) slice(k);
    if (mkl_set_num_threads_local_) mkl_set_num_threads_local_(&before);
  });
}

// Returns [hs, h_T, (c_T), HH, (CC), caches...]; HH onwards is what backward needs.
template <typename T, typename Cell>
Tensors forward(const at::Tensor& xw, const Tensors& state0, const std::vector<c10::optional<at::Tensor>>& P,
                const c10::optional<at::Tensor>& mask, bool reverse, bool keep, bool batch_first, bool raw,
                const c10::optional<at::Tensor>& xt) {
  const int64_t T_ = xw.size(0), B = xw.size(1), H = state0[0].size(1);
  const bool lstm = state0.size() == 2;
  const int64_t HC = lstm ? state0[1].size(1) : H;  // c_t's width: H but in lstmp
  // without a backward to follow, only h_prev and h_t (and c) are needed: a ring of 2 slots or a few more, each
  // at the alignment the slot has with T+1 (run.h: ring), in the cache
  constexpr int64_t align = 64 / int64_t(sizeof(T));
  const int64_t ring = std::max<int64_t>(2, align / std::gcd(B * std::gcd(H, HC), align));
  const int64_t slots = keep ? T_ + 1 : ring, first = (reverse ? T_ : 0) % slots, last = (reverse ? 0 : T_) % slots;
  at::Tensor HH = pooled_empty({slots, B, H}, xw.options()), CC;
  at::Tensor hs = batch_first ? pooled_empty({B, T_, H}, xw.options()) : pooled_empty({T_, B, H}, xw.options());
  Tensors keepalive, caches;
  Run<T> r = make_run<T>(T_, HH, xw.size(2), P, mask, reverse, keepalive, batch_first, HC);
  r.keep = keep, r.ring = ring, r.xw = xw.data_ptr<T>(), r.hs = hs.data_ptr<T>();
  fold_input<T, Cell>(r, P, raw, bool(xt));
  if (xt) {
    TORCH_CHECK(xt->is_contiguous() && xt->numel() == T_ * B * H, "rnnkit native: x̃ must be a contiguous (T, B, H)");
    r.xt = xt->data_ptr<T>();
  }
  // state_0 into its slot: a copy of the memory where it lies contiguous in the loop's dtype (one-step calls:
  // select and copy_ through the dispatcher cost more than the step), else copy_
  auto put = [](const at::Tensor& to, int64_t slot, const at::Tensor& s) {
    const int64_t n = to.size(1) * to.size(2);
    if (n == 0 && s.numel() == 0) return;  // (0 units: null data pointers, which memcpy must not get, even for 0 bytes)
    if (s.is_contiguous() && s.scalar_type() == to.scalar_type() && s.numel() == n)
      std::memcpy(to.data_ptr<T>() + slot * n, s.data_ptr<T>(), size_t(n) * sizeof(T));
    else
      to[slot].copy_(s);
  };
  put(HH, first, state0[0]);
  if (lstm) {
    CC = pooled_empty({slots, B, HC}, xw.options());
    put(CC, first, state0[1]);
    r.CC = CC.data_ptr<T>();
  }
  r.prepare = T_ >= kPrepareSteps;
  const std::vector<int64_t> widths = cache_widths<T, Cell>(r);
  int64_t g = 0;
  for (int64_t w : widths) g = std::gcd(g, w);
  r.cring = align / std::gcd(B * std::max<int64_t>(g, 1), align);
  for (int64_t w : widths) {
    caches.push_back(pooled_empty({keep ? T_ : r.cring, B, w}, xw.options()));
    r.cache.push_back(caches.back().data_ptr<T>());
  }
  auto loop = [&](int64_t rows) {
    const int split = one_gemm<T, Cell>() && r.prepare && rows == 1 ? split_threads(H) : 1;
    const int gsplit = gated<T, Cell>() && r.prepare && rows == 1 && H >= kGatedSplitMin ? split_threads(H) : 1;
    if (split > 1) {
      if constexpr (one_gemm<T, Cell>()) split_forward<T, Cell>(r, split);
    } else if (gsplit > 1) {
      if constexpr (gated<T, Cell>()) split_gated_forward<T, Cell::kind>(r, gsplit);
    } else {
      over_rows(r, rows, [&](Run<T>& q, int64_t) {
        for (int64_t s = 0; s < T_; ++s) Cell::fwd(q, reverse ? T_ - 1 - s : s);
      });
    }
  };
  bool ran = false;
  auto restart = [&] {  // the initial state again (the 2-slot ring without a backward overwrites it)
    if (ran) {
      HH[first].copy_(state0[0]);
      if (lstm) CC[first].copy_(state0[1]);
    }
    ran = true;
  };
  const int64_t wbytes = weight_bytes<T>(P), most = most_row_threads(B);
  const int64_t rows = row_threads(B, wbytes);
  auto run = [&] {
    if (timed_split<T, Cell>(r, rows)) {  // 1: rows, 0: units; rows, units, rows, units (the first run of each way
      timed_choice(split_key<T, Cell>(B, H, wbytes), 4, 1, [&](int by_rows) {  // also prepares its per-thread
        restart();                                                             // weights, timing new shapes)
        loop(by_rows ? most : 1);
      });
    } else {
      restart();
      loop(rows);
    }
  };
  if (timed_prepare<T, Cell>(r, wbytes)) {  // 1: prepared, 0: as stored; as stored first
    timed_choice(prepare_key<T, Cell>(r, wbytes), kPrepareTimings, 0, [&](int prepare) {
      r.prepare = prepare;
      r.sw = std::make_shared<std::array<std::shared_ptr<StepW<T>>, 4>>();  // (prepared anew, as every call does)
      run();
    });
  } else {
    run();
  }
  auto take = [&](const at::Tensor& from) {  // slot last, as a (B, width) tensor of its own
    const int64_t n = from.size(1) * from.size(2);
    at::Tensor got = at::empty({from.size(1), from.size(2)}, from.options());
    if (n > 0) std::memcpy(got.data_ptr<T>(), from.data_ptr<T>() + last * n, size_t(n) * sizeof(T));  // (as put)
    return got;
  };
  Tensors out{hs, take(HH)};
  if (lstm) out.push_back(take(CC));
  if (!keep) return out;
  out.push_back(HH);
  if (lstm) out.push_back(CC);
  out.insert(out.end(), caches.begin(), caches.end());
  return out;
}

// Whether row b was padded at the step BPTT took before step t (t + 1, or t - 1 in reverse): its dh passed through
// as it was, still in r.dh. Its dH is that dh plus 0 · W_hh from the step's GEMM, NaN where W_hh holds an inf.
template <typename T>
bool passed(const Run<T>& r, int64_t t, int64_t b) {
  const int64_t before = r.reverse ? t - 1 : t + 1;
  return before >= 0 && before < r.T_ && !r.m(before, b);
}

template <typename T>
void total_dh(Run<T>& r, int64_t t, int64_t j0, int64_t j1) {  // dh = dH + m_t ⊙ dhs[t]  (units [j0, j1))
  const int64_t BH = r.B * r.H;
  for (int64_t b = r.b0; b < r.b1; ++b) {
    const T m = r.m(t, b) ? T(1) : T(0);
    const T* __restrict dhs = r.dout(t, b) - b * r.H;
    // after a padded step its dh, not dH: an inf in W_hh made the padded rows' dH NaN (0 · inf) and with them the
    // gradients of x and h_0 where torch.nn's packed run, which takes no padded step, has numbers
    const T* carried = passed(r, t, b) ? r.dh : r.dH;
    RNNKIT_SIMD
    // a select, not m · dhs: a padded step's output is 0 whatever came before, so dL/dout there reaches nothing
    // (a masked loss's NaN there, sqrt(Σ out²) at 0, made every gradient NaN; torch.nn's packed run drops it)
    for (int64_t j = b * r.H + j0; j < b * r.H + j1; ++j) r.dh[j] = carried[j] + (m != T(0) ? dhs[j] : T(0));
    if (r.probe != nullptr) std::copy(r.dh + b * r.H + j0, r.dh + b * r.H + j1, r.probe + t * BH + b * r.H + j0);
  }
}

// aᵀ b (a: K×M, b: K×N, rows contiguous): a weight gradient dU = dpreᵀ u over all T·B rows, by gemm's timed
// plan (run.h), not at::mm's MKL: at a 2x512 LSTM's dW_hh (2048×512, K = 3200) oneDNN ran 1.8x faster than
// MKL on an AMD Zen 4, about a tenth of the whole train step.
template <typename T>
at::Tensor t_mm(const at::Tensor& a, const at::Tensor& b) {
  if (a.stride(1) != 1 || b.stride(1) != 1 || a.stride(0) < a.size(1) || b.stride(0) < b.size(1)) return a.t().mm(b);
  at::Tensor c = at::empty({a.size(1), b.size(1)}, a.options());
  gemm<T>(true, false, a.size(1), b.size(1), a.size(0), a.data_ptr<T>(), a.stride(0), b.data_ptr<T>(), b.stride(0),
          T(0), c.data_ptr<T>(), b.size(1));
  return c;
}

// saved = [HH, (CC), caches...]; returns [dxw, dx̃ (xt; else undefined), dh_0, (dc_0), dP..., (probe dh)]; need[k]:
// whether P[k] wants its gradient (a frozen W_hh's GEMM dU = dpreᵀ u is as long as the loop's own; else undefined)
template <typename T, typename Cell>
Tensors backward(const Tensors& saved, int64_t X, const std::vector<c10::optional<at::Tensor>>& P,
                 const c10::optional<at::Tensor>& mask, bool reverse, const at::Tensor& dhs,
                 const Tensors& dstate, bool probe, bool batch_first, bool raw, bool xt, const std::vector<bool>& need) {
  const at::Tensor& HH = saved[0];
  const bool lstm = dstate.size() == 2;
  Tensors keepalive;
  Run<T> r = make_run<T>(HH.size(0) - 1, HH, X, P, mask, reverse, keepalive, batch_first, lstm ? saved[1].size(2) : 0);
  fold_input<T, Cell>(r, P, raw, xt);
  const int64_t T_ = r.T_, B = r.B, H = r.H;
  r.prepare = T_ >= kPrepareSteps;  // (timed below, as in the forward)
  const int64_t wbytes = weight_bytes<T>(P);
  auto o = HH.options();
  at::Tensor dxw = pooled_empty({T_, B, X}, o), dH = dstate[0].clone(), dh = pooled_empty({B, H}, o), dC, dhw, rec, dxt;
  if (xt) dxt = pooled_empty({T_, B, H}, o), r.dxt = dxt.data_ptr<T>();
  r.dxw = dxw.data_ptr<T>(), r.dH = dH.data_ptr<T>(), r.dh = dh.data_ptr<T>(), r.dhs = dhs.data_ptr<T>();
  if (lstm) dC = dstate[1].clone(), r.CC = saved[1].data_ptr<T>(), r.dC = dC.data_ptr<T>();
  for (size_t k = lstm ? 2 : 1; k < saved.size(); ++k) r.cache.push_back(saved[k].data_ptr<T>());
  if (std::is_same_v<Cell, GRU<T>>) dhw = pooled_empty({T_, B, 3 * H}, o), r.dhw = dhw.data_ptr<T>();
  if (std::is_same_v<Cell, LSTMP<T>>) dhw = pooled_empty({T_, B, H}, o), r.dhw = dhw.data_ptr<T>();  // W_hr's dpre
  if (r.raw) dhw = pooled_empty({T_, B, H}, o), r.dhw = dhw.data_ptr<T>();  // mut1's da_h̃
  if constexpr (traced<T, Cell>())
    if (!Cell::cell(r).dpre_is_dxw) dhw = pooled_empty({T_, B, Cell::cell(r).Gp * H}, o), r.dhw = dhw.data_ptr<T>();
  if (probe) rec = pooled_empty({T_, B, H}, o), r.probe = rec.data_ptr<T>();
  int64_t AW = H;  // the width of dalpha's rows: a traced cell's EXTRAS side by side
  if constexpr (traced<T, Cell>()) AW = Cell::cell(r).extra_width(H);
  const int64_t XB = X + (xt ? H : 0);  // b_xh's width
  at::Tensor dalpha, dxb;
  // the loop, from the last step to the first: dL/dstate from dstate again (after a first run), the sums over
  // threads' rows from 0
  bool ran = false;
  auto run = [&](bool prepare) {
    r.prepare = prepare;
    r.sw = std::make_shared<std::array<std::shared_ptr<StepW<T>>, 4>>();  // (weights prepared anew, as every call)
    if (ran) {
      dH.copy_(dstate[0]);
      if (lstm) dC.copy_(dstate[1]);
    }
    ran = true;
    int64_t rows = row_threads(B, wbytes);
    if (timed_split<T, Cell>(r, rows))  // the forward's timed choice (none: the rule)
      if (native_ext::known_plan(split_key<T, Cell>(B, H, wbytes)) == 1) rows = most_row_threads(B);
    dalpha = at::zeros({rows, AW}, o);  // one row per thread: no race
    // the same for a gated cell's b_xh (summed whether folded or not: no branch in the loop)
    if (gated<T, Cell>()) dxb = at::zeros({rows, XB}, o), r.dxb = dxb.data_ptr<T>();  // units split: row 0
    const int split = one_gemm<T, Cell>() && r.prepare && rows == 1 ? split_threads(H) : 1;
    const int gsplit = gated<T, Cell>() && r.prepare && rows == 1 && H >= kGatedSplitMin ? split_threads(H) : 1;
    if (split > 1) {
      r.dalpha = dalpha.data_ptr<T>();  // leaky: each thread adds into its own units of row 0
      if constexpr (one_gemm<T, Cell>()) split_backward<T, Cell>(r, split, total_dh<T>);
    } else if (gsplit > 1) {
      if constexpr (gated<T, Cell>()) split_gated_backward<T, Cell::kind>(r, gsplit, total_dh<T>);
    } else over_rows(r, rows, [&](Run<T>& q, int64_t k) {
      q.dalpha = dalpha.data_ptr<T>() + k * AW;
      if (q.dxb) q.dxb += k * XB;
      for (int64_t s = T_ - 1; s >= 0; --s) {
        const int64_t t = reverse ? T_ - 1 - s : s;
        total_dh(q, t, 0, H);
        Cell::bwd(q, t);
      }
    });
  };
  if (timed_prepare<T, Cell>(r, wbytes)) {  // as the forward, but its own choice (key -5): a 1x512 LSTM, B1, 8 steps
    native_ext::GemmKey key = prepare_key<T, Cell>(r, wbytes);  // ran its forward faster prepared (0.66 against
    key[8] = key[9] = -5;  // 0.99 ms) and its forward + backward faster as stored (2.7 against 4.0 ms)
    timed_choice(key, kPrepareTimings, 0, run);
  } else {
    run(T_ >= kPrepareSteps);
  }
  // dL/dh_0 of a row padded at the step taken last (reverse, or length 0): its dh passed through (see passed)
  const int64_t taken_last = reverse ? T_ - 1 : 0;
  for (int64_t b = 0; mask && T_ > 0 && b < B; ++b)
    if (!r.m(taken_last, b)) std::copy(r.dh + b * H, r.dh + (b + 1) * H, r.dH + b * H);
  Tensors out{dxw, dxt, dH};
  if (lstm) out.push_back(dC);
  Tensors dP(P.size());
  at::Tensor h_prev = HH.narrow(0, reverse ? 1 : 0, T_).reshape({T_ * B, H});
  const size_t first = lstm ? 2 : 1;
  // a padded row's dpre is 0, but its u (h_prev: the state kept there) may be inf, a relu state that overflowed at
  // the sequence's last step: 0 · inf made every weight gradient NaN (torch.nn's packed run has no padded steps;
  // the python loops run a padded step on a zero state). Those rows of u are taken as 0.
  const at::Tensor live = mask ? mask->reshape({T_ * B, 1}) != 0 : at::Tensor();
  auto wanted = [&](int64_t k) { return P[k] && (static_cast<size_t>(k) >= need.size() || need[k]); };
  for (const GradSpec& g : grad_specs<T, Cell>(r)) {  // dU = dpreᵀ u: ONE GEMM over all T·B rows
    at::Tensor dpre = (g.from_dhw ? dhw : dxw).reshape({T_ * B, -1}).narrow(1, g.col0, g.width);
    if (wanted(g.param)) {
      at::Tensor u = g.u < 0 ? h_prev : saved[first + g.u].reshape({T_ * B, -1});
      if (live.defined()) u = at::where(live, u, at::zeros({}, u.options()));
      dP[g.param] = t_mm<T>(dpre, u);
    }
    if (g.bias >= 0 && wanted(g.bias)) dP[g.bias] = dpre.sum(0);
  }
  if (std::is_same_v<Cell, Leaky<T>> && P[2]) dP[2] = dalpha.sum(0);  // leaky: α's gradient, summed over steps and rows
  if constexpr (traced<T, Cell>()) {  // the EXTRAS' accumulators, summed over threads (Python sums to their shapes)
    const TracedCell& c = Cell::cell(r);
    for (size_t e = 0, off = 0; e < c.extra_params.size(); off += c.extra_blocks[e] * H, ++e)
      if (P[c.extra_params[e]]) dP[c.extra_params[e]] = dalpha.narrow(1, off, c.extra_blocks[e] * H).sum(0);
  }
  if constexpr (gated<T, Cell>())
    if (has_input_bias<T, Cell>(P)) dP[Cell::xb_param] = dxb.sum(0);
  out.insert(out.end(), dP.begin(), dP.end());
  if (probe) out.push_back(rec);
  return out;
}

// cell ids in rnnkit/engine/native.py: CELL_IDS
template <typename T, typename F>
Tensors with_cell(int64_t cell, F&& f) {
  tl_traced = nullptr;
  if (cell >= kTracedBase) {
    tl_traced = traced_cell(cell);
    return f(Traced<T>{});
  }
  switch (cell) {
    case 0: return f(Elman<T, false>{});
    case 1: return f(Elman<T, true>{});
    case 2: return f(LSTM<T>{});
    case 3: return f(GRU<T>{});
    case 4: return f(Gated<T, Kind::Cho>{});
    case 5: return f(Gated<T, Kind::M1>{});
    case 6: return f(Gated<T, Kind::M2>{});
    case 7: return f(Gated<T, Kind::M3>{});
    case 8: return f(Leaky<T>{});
    case 9: return f(LSTMP<T>{});
  }
  TORCH_CHECK(false, "rnnkit native: unknown cell id ", cell);
  return {};
}

Tensors forward_py(int64_t cell, const at::Tensor& xw, const Tensors& state0,
                   const std::vector<c10::optional<at::Tensor>>& P, const c10::optional<at::Tensor>& mask,
                   bool reverse, bool keep, bool batch_first, bool raw, const c10::optional<at::Tensor>& xt) {
  at::NoGradGuard no_grad;
  return AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "rnnkit_forward", [&] {
    return with_cell<scalar_t>(cell, [&](auto c) {
      return forward<scalar_t, decltype(c)>(xw, state0, P, mask, reverse, keep, batch_first, raw, xt);
    });
  });
}

Tensors backward_py(int64_t cell, const Tensors& saved, int64_t X, const std::vector<c10::optional<at::Tensor>>& P,
                    const c10::optional<at::Tensor>& mask, bool reverse, const at::Tensor& dhs,
                    const Tensors& dstate, bool probe, bool batch_first, bool raw, bool xt,
                    const std::vector<bool>& need) {
  at::NoGradGuard no_grad;
  return AT_DISPATCH_FLOATING_TYPES(dhs.scalar_type(), "rnnkit_backward", [&] {
    return with_cell<scalar_t>(cell, [&](auto c) {
      return backward<scalar_t, decltype(c)>(saved, X, P, mask, reverse, dhs, dstate, probe, batch_first, raw, xt,
                                             need);
    });
  });
}

// The no-grad forward of a plain stack of rnnkit's cells over a short sequence (a sampling loop, a decoder stepped
// token by token), in one call: per layer i
//   xw = linear(below, W[i], b[i]);  below, state_T = forward(xw, state0[:, i] or zeros)      (below_0 = x, (T, B, D))
// and then h_n (c_n) = stack(state_T over layers): the calls Recurrent._forward_fast made per layer from Python, in
// the same order on the same tensors (the same bits), without its per-layer Python (a third of a one-step call
// of a small cell). x is (B, T, D) where x_batch_first; the last layer's outputs (B, T, H) where batch_first.
// P[i]: the cell's recurrent parameters as forward takes them (a leaky unit's α spread to (H,)); state0: the
// states (L, B, width) in the cell's order, or none (zeros of widths).
Tensors forward_stack_py(const std::vector<int64_t>& cells, const at::Tensor& x, bool x_batch_first,
                         const Tensors& W, const std::vector<c10::optional<at::Tensor>>& b,
                         const std::vector<std::vector<c10::optional<at::Tensor>>>& P, const Tensors& state0,
                         const std::vector<int64_t>& widths, bool batch_first) {
  at::NoGradGuard no_grad;
  const int64_t n = int64_t(cells.size());
  TORCH_CHECK(n > 0 && int64_t(W.size()) == n && int64_t(b.size()) == n && int64_t(P.size()) == n,
              "rnnkit native: forward_stack needs one W, b and P per cell");
  TORCH_CHECK(state0.empty() || state0.size() == widths.size(), "rnnkit native: forward_stack's states");
  at::Tensor below = x_batch_first ? x.transpose(0, 1).contiguous() : x.contiguous();  // (T, B, D)
  const int64_t B = below.size(1);
  std::vector<Tensors> finals(widths.size());
  for (int64_t i = 0; i < n; ++i) {
    // (as rows (T·B, D), as affine_input: without b, linear's matmul of a 3-D tensor folds it or not by whether W
    // requires grad, and MUT2's cat W did only when recording: other bits)
    const at::Tensor xw =
        at::linear(below.view({-1, below.size(2)}), W[i], b[i]).view({below.size(0), B, W[i].size(0)});
    Tensors s0;
    for (size_t k = 0; k < widths.size(); ++k)
      s0.push_back(state0.empty() ? at::zeros({B, widths[k]}, below.options()) : state0[k].select(0, i));
    std::vector<c10::optional<at::Tensor>> p;
    for (const auto& t : P[i]) p.push_back(t ? c10::optional<at::Tensor>(t->contiguous()) : c10::nullopt);
    const bool bf = batch_first && i == n - 1;
    const Tensors out = AT_DISPATCH_FLOATING_TYPES(xw.scalar_type(), "rnnkit_forward_stack", [&] {
      return with_cell<scalar_t>(cells[i], [&](auto c) {
        return forward<scalar_t, decltype(c)>(xw, s0, p, c10::nullopt, false, false, bf, false, c10::nullopt);
      });
    });
    below = out[0];
    for (size_t k = 0; k < widths.size(); ++k) finals[k].push_back(out[1 + k]);
  }
  Tensors result{below};
  for (const Tensors& f : finals) result.push_back(at::stack(f));
  return result;
}

// The widths of forward's caches (its outputs after HH and CC, each (T, B, width)) for a cell of H units (c_t HC
// wide), mut1's x̃ raw or not: what a graph compiler must know of forward's outputs before it runs (compiled.py).
std::vector<int64_t> cache_widths_py(int64_t cell, int64_t H, int64_t HC, bool raw) {
  std::vector<int64_t> widths;
  with_cell<float>(cell, [&](auto c) {
    using Cell = decltype(c);
    Run<float> r;
    r.H = H, r.HC = HC, r.tc = tl_traced;
    if constexpr (gated<float, Cell>()) r.raw = raw && Cell::kind == Kind::M1;  // as fold_input
    widths = cache_widths<float, Cell>(r);
    return Tensors{};
  });
  return widths;
}

// The input projection of all steps, xw = x W_xhᵀ + b (x (N, D), W_xh (G, D)), into a recycled buffer:
// with F.linear every train step wrote it, and the bias broadcast before it, into fresh memory (page faults).
//   tail n > 0 (MUT1's tanh(x̃_t) block): the last n columns are tanh(·) + b; their tanh t is returned too.
//   ident c >= 0 (MUT1/MUT2 with x̃_t = x_t): columns [c, c + D) are x itself (no GEMM), and W holds the
//   other G - D rows in order: W[:c] gives columns [0, c), W[c:] columns [c + D, G).
// shape: xw's shape, (..., G) with N rows (given, so that xw is not a view). Returns [xw, t].
Tensors project(const at::Tensor& x, const at::Tensor& W, const c10::optional<at::Tensor>& b,
                std::vector<int64_t> shape, int64_t tail, int64_t ident) {
  at::NoGradGuard no_grad;
  const int64_t N = x.size(0), D = x.size(1), G = W.size(0) + (ident >= 0 ? D : 0);
  at::Tensor xw = pooled_empty(shape, x.options()), t;
  TORCH_CHECK(xw.numel() == N * G, "rnnkit native: project into a shape of ", xw.numel(), " elements, not ", N * G);
  const bool plain = tail == 0 && ident < 0;
  if (b && plain) xw.view({N, G}).copy_(b->expand({N, G}));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnkit_project", [&] {
    using T = scalar_t;
    T* out = xw.data_ptr<T>();
    const T *xp = x.data_ptr<T>(), *w = W.data_ptr<T>();
    if (ident < 0) {
      gemm<T>(false, true, N, G, D, xp, D, w, D, T(b && plain ? 1 : 0), out, G);
    } else {  // the blocks around the identity block
      if (ident > 0) gemm<T>(false, true, N, ident, D, xp, D, w, D, T(0), out, G);
      if (G - ident - D > 0) gemm<T>(false, true, N, G - ident - D, D, xp, D, w + ident * D, D, T(0), out + ident + D, G);
    }
    if (plain) return;
    if (tail) t = pooled_empty({N, tail}, x.options());
    T* th = tail ? t.data_ptr<T>() : nullptr;
    // b as a row of G values: it broadcasts over the columns as F.linear's (and the plain path's copy_ above) does; a
    // b of one value was read at every column j, past its end (AddressSanitizer: heap-buffer-overflow)
    const at::Tensor row_b = b ? b->expand({1, G}).contiguous() : at::Tensor();
    const T* bias = b ? row_b.data_ptr<T>() : nullptr;
    const int64_t g0 = G - tail;
    parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
      for (int64_t n = n0; n < n1; ++n) {
        T* __restrict row = out + n * G;
        if (ident >= 0) std::copy(xp + n * D, xp + (n + 1) * D, row + ident);
        if (bias) {
          RNNKIT_SIMD
          for (int64_t j = 0; j < g0; ++j) row[j] += bias[j];
        }
        T* __restrict tr = th + n * tail;
        RNNKIT_SIMD
        for (int64_t j = 0; j < tail; ++j) {
          const T v = tanh_(row[g0 + j]);
          tr[j] = v, row[g0 + j] = bias ? v + bias[g0 + j] : v;
        }
      }
    });
  });
  return {xw, t};
}

// Its backward: [dx = dpre W_xh, dW_xh = dpreᵀ x, db = Σ dxw], each only where asked (else undefined), where
// dpre = dxw except on the tanh tail (t from project; undefined: no tail): there dtail = dxw_tail ⊙ (1 - t²),
// formed in a (N × n) buffer of its own, so dxw itself is never copied. An identity block (ident >= 0)
// adds its columns to dx directly and has no GEMM. dx0 (N, D), a gradient of x from elsewhere (mut1's dL/dx̃
// from the loop when x̃ = x): dx is formed in it, in place (the GEMM adds to it).
Tensors project_backward(const at::Tensor& dxw, const at::Tensor& x, const at::Tensor& W, bool dx_, bool dW_, bool db_,
                         const c10::optional<at::Tensor>& t, int64_t ident, const c10::optional<at::Tensor>& dx0) {
  at::NoGradGuard no_grad;
  const int64_t N = x.size(0), D = x.size(1), G = W.size(0) + (ident >= 0 ? D : 0), R = W.size(0);
  const int64_t tail = t ? t->size(1) : 0, g0 = G - tail;
  at::Tensor dx, dW, db, dtail;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "rnnkit_project_backward", [&] {
    using T = scalar_t;
    const T* g = dxw.data_ptr<T>();
    if (tail && (dx_ || dW_)) {  // one pass over dxw: dtail, and (db) column sums of fixed row chunks
      const int64_t chunks = std::min<int64_t>(N, 32);
      dtail = pooled_empty({N, tail}, x.options());
      at::Tensor part = db_ ? at::zeros({chunks, G}, x.options()) : at::Tensor();
      const T* th = t->data_ptr<T>();
      T *d = dtail.data_ptr<T>(), *ps = db_ ? part.data_ptr<T>() : nullptr;
      parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c)
          for (int64_t n = N * c / chunks; n < N * (c + 1) / chunks; ++n) {
            const T* __restrict gr = g + n * G;
            const T* __restrict tr = th + n * tail;
            T* __restrict dr = d + n * tail;
            RNNKIT_SIMD
            for (int64_t j = 0; j < tail; ++j) dr[j] = gr[g0 + j] * (T(1) - tr[j] * tr[j]);
            if (ps) {
              T* __restrict p = ps + c * G;
              RNNKIT_SIMD
              for (int64_t j = 0; j < G; ++j) p[j] += gr[j];
            }
          }
      });
      if (db_) db = part.sum(0), db_ = false;  // the same sums in the same order whatever the threads
    }
    if (!dx_ && !dW_) return;
    // Column segments of dpre: {first column, columns, source, its leading dimension}; the sources are dxw
    // and dtail. W's rows pair with the segments outside the identity block, in order.
    struct Seg {
      int64_t c0, n;
      const T* src;
      int64_t ld;
    };
    std::vector<Seg> segs;
    auto add = [&](int64_t c0, int64_t c1) {  // [c0, c1) within [0, g0) from dxw, within the tail from dtail
      for (int64_t a = c0; a < c1;) {
        const int64_t e = a < g0 ? std::min(c1, g0) : c1;
        if (e > a) segs.push_back(a < g0 ? Seg{a, e - a, g + a, G} : Seg{a, e - a, dtail.data_ptr<T>() + a - g0, tail});
        a = e;
      }
    };
    if (ident < 0) add(0, G);
    else add(0, ident), add(ident + D, G);
    auto row_of = [&](int64_t c) { return ident >= 0 && c > ident ? c - D : c; };  // W row of column c
    const T *w = W.data_ptr<T>(), *xp = x.data_ptr<T>();
    if (dx_) {
      TORCH_CHECK(!dx0 || (ident < 0 && dx0->is_contiguous() && dx0->numel() == N * D),
                  "rnnkit native: dx0 must be a contiguous (N, D) and ident < 0");
      dx = dx0 ? *dx0 : pooled_empty({N, D}, x.options());
      T* out = dx.data_ptr<T>();
      T beta = T(dx0 ? 1 : 0);
      if (ident >= 0) {  // the identity block's gradient goes straight to dx
        const bool in_tail = ident >= g0;
        const T* src = in_tail ? dtail.data_ptr<T>() + ident - g0 : g + ident;
        dx.copy_(at::from_blob(const_cast<T*>(src), {N, D}, {in_tail ? tail : G, 1}, x.options()));
        beta = T(1);
      }
      for (const Seg& sg : segs) {
        gemm<T>(false, false, N, D, sg.n, sg.src, sg.ld, w + row_of(sg.c0) * D, D, beta, out, D);
        beta = T(1);
      }
    }
    if (dW_) {
      dW = at::empty({R, D}, x.options());
      for (const Seg& sg : segs)
        gemm<T>(true, false, sg.n, D, N, sg.src, sg.ld, xp, D, T(0), dW.data_ptr<T>() + row_of(sg.c0) * D, D);
    }
  });
  if (db_) db = dxw.sum(0);
  return {dx, dW, db};
}

}  // namespace rnnkit

namespace rnnkit {
// The loops run without the GIL (as torch's own ops do: other Python threads go on meanwhile), so a thread
// may fork while another holds the plan table's or the pool's lock, which the child would then wait for
// forever. fork waits until neither is held instead, as glibc does for malloc's locks.
void lock_for_fork() {
  native_ext::g_plan_mutex.lock();
  Pool::get().mutex.lock();
  g_traced_mutex.lock();
  native_ext::g_dnnl_mutex.lock();
}
void unlock_after_fork() {
  native_ext::g_dnnl_mutex.unlock();
  g_traced_mutex.unlock();
  Pool::get().mutex.unlock();
  native_ext::g_plan_mutex.unlock();
}
}  // namespace rnnkit

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pthread_atfork(rnnkit::lock_for_fork, rnnkit::unlock_after_fork, rnnkit::unlock_after_fork);
  rnnkit::g_have_dnnl = rnnkit::probe_dnnl();
  m.def("have_dnnl", &rnnkit::have_dnnl, "whether oneDNN's matmul runs float32 on this CPU (else not offered)");
  // The loops, and the plan table's bindings, run without the GIL, as torch's ops do (the table's lock is held
  // only to read or write it: run.h, known_plan).
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("forward", &rnnkit::forward_py, "the cell over a sequence: [hs, state_T..., saved...]", nogil);
  m.def("forward_stack", &rnnkit::forward_stack_py,
        "no-grad forward of a stack of cells over a short sequence: [out, h_n, (c_n)]", nogil);
  m.def("register_traced", &rnnkit::register_traced,
        "a traced cell of one's own (cells_traced.h) -> its cell id; kernels: [fwd f32, bwd f32, fwd f64, bwd f64]");
  m.def("register_staged", &rnnkit::register_staged,
        "a traced cell of several recurrent products (cells_traced.h) -> its cell id; kernels per stage [f32, f64]");
  m.def("cache_widths", &rnnkit::cache_widths_py, "the widths of forward's caches: (cell, H, HC, raw) -> [width...]");
  m.def("backward", &rnnkit::backward_py, "BPTT: [dxw, dstate_0..., dP..., (probe dh)]", nogil);
  m.def("set_row_threads", &rnnkit::set_row_threads, "threads that split the batch rows: 0 auto (W_hh in L2, or timed past it), N at most N whatever its size (1: never)");
  m.def("set_gemm", [](const std::string& mode) {
          using rnnkit::native_ext::GemmMode;
          const std::vector<std::string> names{"auto", "blas", "dnnl", "packed", "own"};
          const auto it = std::find(names.begin(), names.end(), mode);
          TORCH_CHECK(it != names.end(), "RNNKIT_GEMM: auto, blas, dnnl, packed or own, not ", mode);
          rnnkit::native_ext::g_gemm_mode = GemmMode(it - names.begin());
        }, "float32 GEMMs: auto (time each option once per shape, keep the fastest), blas, dnnl, packed or own");
  m.def("gemm_plans", [](bool here) {
          std::vector<std::pair<std::vector<int64_t>, int>> out;
          std::lock_guard<std::mutex> lock(rnnkit::native_ext::g_plan_mutex);
          for (auto& [k, v] : rnnkit::native_ext::g_plan) out.emplace_back(std::vector<int64_t>(k.begin(), k.end()), v);
          if (here)
            for (auto& [k, v] : rnnkit::native_ext::g_plan_here)
              out.emplace_back(std::vector<int64_t>(k.begin(), k.end()), v);
          return out;
        }, py::arg("here") = false,
        "the timed choices so far: ([M, N, K, trans, lda, ldc/ldb, ..., threads, ...], option), those for the plan "
        "file; here=True: also those kept for this process only (timed past oneDNN's shape bound: run.h)", nogil);
  m.def("add_gemm_plans", [](const std::vector<std::pair<std::vector<int64_t>, int>>& plans) {
          // choices timed by an earlier process (native.py keeps them in a file): same choices, same bits
          std::lock_guard<std::mutex> lock(rnnkit::native_ext::g_plan_mutex);
          int64_t added = 0;
          for (auto& [k, v] : plans) {
            if (k.size() != std::tuple_size_v<rnnkit::native_ext::GemmKey> || v < 0 || v > 4) continue;
            rnnkit::native_ext::GemmKey key;
            std::copy(k.begin(), k.end(), key.begin());
            added += rnnkit::native_ext::g_plan.emplace(key, v).second;
          }
          return added;
        }, "add choices (as gemm_plans gives them) for shapes not timed yet; returns how many were added", nogil);
  m.def("gemm_plan_count", [] {
          std::lock_guard<std::mutex> lock(rnnkit::native_ext::g_plan_mutex);
          return int64_t(rnnkit::native_ext::g_plan.size());
        }, "how many choices are known", nogil);  // (no GIL while waiting for the table: see below)
  m.def("dnnl_shapes", [] {
          std::lock_guard<std::mutex> lock(rnnkit::native_ext::g_dnnl_mutex);
          return std::make_pair(int64_t(rnnkit::native_ext::g_dnnl_shapes.size()), int64_t(rnnkit::native_ext::kDnnlShapes));
        }, "(the call shapes oneDNN has run with the timed choices, the most it runs: run.h dnnl_admits)", nogil);
  m.def("set_split", [](int64_t on) { rnnkit::g_split = on; }, "1: split an LSTM's hidden units over threads");
  m.def("project", &rnnkit::project, "[xw = x W_xhᵀ + b (tanh before b on a tail; an identity block), t] into recycled buffers", nogil);
  m.def("project_backward", &rnnkit::project_backward, "[dx, dW_xh, db] of project", nogil);
  m.def("have_own_gemm", [] { return bool(RNNKIT_OWN_GEMM); }, "whether rnnkit's AVX-512 GEMM kernel is compiled in");
  m.def("own_gemm", [](const at::Tensor& A, const at::Tensor& W, bool tw, int64_t N, double beta, at::Tensor C) {
          // for the tests: C[:, :N] = A[:, :K] op(W) + beta·C by kernel.h, A and C as strided row-major views
          TORCH_CHECK(RNNKIT_OWN_GEMM, "rnnkit native: the own GEMM kernel needs AVX-512");
          TORCH_CHECK(A.dim() == 2 && W.dim() == 2 && C.dim() == 2, "own_gemm: A, W and C must be matrices");
          TORCH_CHECK(A.scalar_type() == at::kFloat && W.scalar_type() == at::kFloat && C.scalar_type() == at::kFloat,
                      "own_gemm: A, W and C must be float32");
          TORCH_CHECK(W.is_contiguous() && A.stride(1) == 1 && C.stride(1) == 1,
                      "own_gemm: W must be contiguous, A and C rows of unit stride");
          const int64_t K = tw ? W.size(1) : W.size(0);
          // op(W) is K×N (W stored N×K when tw, else K×N); A's first K columns and C's first N are used
          TORCH_CHECK(W.size(tw ? 0 : 1) == N && A.size(1) >= K && C.size(0) == A.size(0) && C.size(1) >= N,
                      "own_gemm: shapes disagree: A ", A.sizes(), ", W ", W.sizes(), (tw ? " (transposed)" : ""),
                      ", N ", N, ", C ", C.sizes());
          auto s = rnnkit::StepW<float>::make(4, W.data_ptr<float>(), tw, N, K, A.size(0));
          s.mul(A.data_ptr<float>(), A.stride(0), float(beta), C.data_ptr<float>(), C.stride(0));
          return C;
        }, "one float32 GEMM by rnnkit's own kernel (tests)");
  m.def("release_memory", [] { return int64_t(rnnkit::Pool::get().release()); },
        "return every idle recycled buffer to the system; the bytes released");
  m.def("pool_stats", [] { return rnnkit::Pool::get().stats(); },
        "bytes of the recycled-buffer pool: (idle, handed out now, most ever handed out at once)");
  m.def("have_blas", &rnnkit::have_blas, "whether the BLAS GEMM inside libtorch is reachable");
  m.def("gemm_run", [](int64_t plan, bool ta, bool tb, const at::Tensor& A, const at::Tensor& B, double beta,
                       at::Tensor C) {  // for the tests: C = op(A) op(B) + beta·C by one plan (0 MKL, 1 oneDNN, 2 Cᵀ)
          TORCH_CHECK(plan >= 0 && plan <= 2, "gemm_run: plan is 0 (MKL), 1 (oneDNN) or 2 (Cᵀ), not ", plan);
          TORCH_CHECK(A.dim() == 2 && B.dim() == 2 && C.dim() == 2, "gemm_run: A, B and C must be matrices");
          TORCH_CHECK(A.scalar_type() == at::kFloat && B.scalar_type() == at::kFloat && C.scalar_type() == at::kFloat,
                      "gemm_run: A, B and C must be float32");
          TORCH_CHECK(A.is_contiguous() && B.is_contiguous() && C.is_contiguous(),
                      "gemm_run: A, B and C must be contiguous");
          const int64_t M = C.size(0), N = C.size(1), K = ta ? A.size(0) : A.size(1);
          // op(A) is M×K and op(B) K×N
          TORCH_CHECK(A.size(ta ? 1 : 0) == M && B.size(tb ? 1 : 0) == K && B.size(tb ? 0 : 1) == N,
                      "gemm_run: shapes disagree: A ", A.sizes(), (ta ? " (transposed)" : ""), ", B ", B.sizes(),
                      (tb ? " (transposed)" : ""), ", C ", C.sizes());
          rnnkit::gemm_run<float>(int(plan), ta, tb, M, N, K, A.data_ptr<float>(), A.size(1), B.data_ptr<float>(),
                                  B.size(1), float(beta), C.data_ptr<float>(), N);
          return C;
        }, "one float32 GEMM by a given plan (tests)");
}
