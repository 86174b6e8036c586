"""word2vec's negative-sampling SGD as one compiled loop over pairs (the word2vec.c way), for speed.

The batched torch path in word2vec.py adds up a whole batch's gradients at once; this loop applies
them pair by pair, each in cache, the gradient of `negative_sampling_loss_grads` (the same where a pair's
negatives are all different; a word drawn twice as a negative of one pair gets its second update after its first,
v_t changed in between, as in word2vec.c, where the batched path sums both at the old v_t):

    for each pair p:   lr_p = α - (α - α_min) · min(seen_p / expected, 1)
        h = u_w (skip-gram)  or  h = Σ_i a_i u_{c_i}  with a_i = 1/m (cbow_mean) or 1 (CBOW)
        for target t_0 and negatives t_1..t_K (a negative equal to t_0 is skipped):
            g = σ(h·v_t) - [k = 0]           dJ/ds
            dh += g v_t;   v_t -= lr g h
        u_w -= lr dh   (skip-gram),   u_{c_i} -= lr b_i dh   (CBOW: b_i = a_i, the gradient (cbow_gradient);
                                                         else word2vec.c's b_i = 1 for the mean, 1/m for the sum)

Compiled on first use with torch.utils.cpp_extension and cached ($TORCH_EXTENSIONS_DIR); if that
fails, `load()` returns None, `reason` says why, and word2vec uses the batched torch path.
"""

import warnings

from rnnkit._native_build import build, build_tag, switched_off, vector_flags
from rnnkit.errors import user_stacklevel

SOURCE = r"""
#include <torch/extension.h>
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

static void sgns_range(torch::Tensor U, torch::Tensor V, torch::Tensor centres, torch::Tensor contexts,
                       torch::Tensor negatives, double alpha, double min_alpha, int64_t seen, int64_t expected,
                       bool cbow_mean, bool cbow_gradient, int64_t begin, int64_t end) {
  const int64_t E = U.size(1), K = negatives.size(1);
  const bool cbow = contexts.dim() == 2;
  const int64_t C = cbow ? contexts.size(1) : 1;
  float* u = U.data_ptr<float>();
  float* v = V.data_ptr<float>();
  const int64_t* w = centres.data_ptr<int64_t>();
  const int64_t* ctx = contexts.data_ptr<int64_t>();
  const int64_t* neg = negatives.data_ptr<int64_t>();
  std::vector<float> h(E), dh(E);
  for (int64_t p = begin; p < end; ++p) {
    const float lr = alpha - (alpha - min_alpha) * std::min(double(seen + p) / double(expected), 1.0);
    int64_t target;
    float a = 1.0f, b = 1.0f;  // h = Σ a u_c;  u_c -= lr b dh
    std::fill(h.begin(), h.end(), 0.0f);
    if (!cbow) {
      target = ctx[p];
      std::copy(u + w[p] * E, u + (w[p] + 1) * E, h.begin());
    } else {
      target = w[p];
      int64_t m = 0;
      for (int64_t i = 0; i < C; ++i) m += ctx[p * C + i] >= 0;
      a = cbow_mean ? 1.0f / float(m) : 1.0f;
      b = cbow_gradient ? a : (cbow_mean ? 1.0f : 1.0f / float(m));
      for (int64_t i = 0; i < C; ++i) {
        const int64_t c = ctx[p * C + i];
        if (c < 0) continue;
        const float* uc = u + c * E;
        for (int64_t e = 0; e < E; ++e) h[e] += a * uc[e];
      }
    }
    std::fill(dh.begin(), dh.end(), 0.0f);
    for (int64_t k = 0; k <= K; ++k) {
      const int64_t t = k == 0 ? target : neg[p * K + k - 1];
      if (k > 0 && t == target) continue;
      float* vt = v + t * E;
      float s = 0.0f;
      for (int64_t e = 0; e < E; ++e) s += h[e] * vt[e];
      const float g = 1.0f / (1.0f + std::exp(-s)) - (k == 0 ? 1.0f : 0.0f);
      for (int64_t e = 0; e < E; ++e) {
        dh[e] += g * vt[e];
        vt[e] -= lr * g * h[e];
      }
    }
    if (!cbow) {
      float* uw = u + w[p] * E;
      for (int64_t e = 0; e < E; ++e) uw[e] -= lr * dh[e];
    } else {
      for (int64_t i = 0; i < C; ++i) {
        const int64_t c = ctx[p * C + i];
        if (c < 0) continue;
        float* uc = u + c * E;
        for (int64_t e = 0; e < E; ++e) uc[e] -= lr * b * dh[e];
      }
    }
  }
}

// workers > 1: Hogwild (Recht et al. 2011), threads update shared rows without locks, as word2vec.c
// does; the result then depends on timing. workers = 1 is exactly reproducible.
void sgns_pairs(torch::Tensor U, torch::Tensor V, torch::Tensor centres, torch::Tensor contexts,
                torch::Tensor negatives, double alpha, double min_alpha, int64_t seen, int64_t expected,
                bool cbow_mean, bool cbow_gradient, int64_t workers) {
  // the loop reads raw memory, in threads (where an error would end the process): checked here, once
  TORCH_CHECK(U.dim() == 2 && U.sizes() == V.sizes() && U.dtype() == torch::kFloat32 &&
              V.dtype() == torch::kFloat32 && U.is_contiguous() && V.is_contiguous() && U.is_cpu() && V.is_cpu(),
              "sgns_pairs: U and V must be contiguous float32 CPU tensors of one shape (words, dimension)");
  const int64_t P = centres.size(0), words = U.size(0);
  TORCH_CHECK(centres.dim() == 1 && (contexts.dim() == 1 || contexts.dim() == 2) && contexts.size(0) == P &&
              negatives.dim() == 2 && negatives.size(0) == P,
              "sgns_pairs: centres (P,), contexts (P,) or (P, C) and negatives (P, K) must have P rows");
  for (const torch::Tensor* t : {&centres, &contexts, &negatives}) {
    TORCH_CHECK(t->dtype() == torch::kInt64 && t->is_contiguous() && t->is_cpu(),
                "sgns_pairs: centres, contexts and negatives must be contiguous int64 CPU tensors");
    const int64_t low = t == &contexts && contexts.dim() == 2 ? -1 : 0;  // -1 pads CBOW's windows
    TORCH_CHECK(t->numel() == 0 || (t->min().item<int64_t>() >= low && t->max().item<int64_t>() < words),
                "sgns_pairs: a word index outside [0, ", words, ") (-1 pads the rows of CBOW's contexts)");
  }
  // the loop reads no Python object: without the GIL, word2vec's other threads draw the next chunk meanwhile
  pybind11::gil_scoped_release no_gil;
  std::vector<std::thread> threads;
  try {
    for (int64_t i = 0; i < workers; ++i) {
      const int64_t begin = P * i / workers, end = P * (i + 1) / workers;
      threads.emplace_back(sgns_range, U, V, centres, contexts, negatives, alpha, min_alpha, seen,
                           expected, cbow_mean, cbow_gradient, begin, end);
    }
  } catch (const std::system_error& e) {
    // a thread that could not start (the system's limit): the vector's joinable threads, destroyed unjoined,
    // would abort the process (std::terminate)
    for (auto& t : threads) t.join();
    throw std::runtime_error("the word2vec loop could not start thread " + std::to_string(threads.size() + 1) +
                             " of " + std::to_string(workers) + " (" + e.what() + "); use fewer workers");
  }
  for (auto& t : threads) t.join();
}
"""

_ext, reason = None, None
_warned = False


def warn_fallback() -> None:
    """Say once per process that backend 'auto' runs the batched torch path because the loop can't be built (not
    when switched off by RNNKIT_NATIVE=0): it fell back silently, several times slower."""
    global _warned
    if _warned or reason is None or switched_off() is not None:
        return
    _warned = True
    warnings.warn(f"rnnkit: native word2vec unavailable ({reason}); using the batched torch path, several times "
                  "slower (or set backend 'torch' or RNNKIT_NATIVE=0 to choose it quietly)", RuntimeWarning,
                  stacklevel=user_stacklevel())  # fmt: skip


def _name_and_flags():
    """The build's name carries a hash of this file (the source above), its path and the flags: a fixed name was
    shared by every checkout and virtual environment, whose paths torch's build.ninja holds, so each one's load
    rebuilt it."""
    name, flags = vector_flags("rnnkit_word2vec", ["-O3", "-ffast-math", "-std=c++17"])
    return f"{name}_{build_tag(flags, [__file__])}", flags


def load():
    """The compiled loop (built once, then cached), or None with the reason in `reason`."""
    global _ext, reason
    if _ext is not None or reason is not None:
        return _ext
    from torch.utils import cpp_extension

    name, flags = _name_and_flags()
    _ext, reason = build(
        "the word2vec loop",
        name,
        lambda: cpp_extension.load_inline(
            name, cpp_sources=SOURCE, functions=["sgns_pairs"], extra_cflags=flags, verbose=False
        ),
    )
    return _ext
