"""Engine benchmark: train steps of a character LM, rnnkit's engine against torch.nn in the same run.

    Embedding(65, 64) -> Recurrent(cell, 64, H, L) -> Linear(H, 65) -> cross-entropy;  Adam (fused, as rnnkit's trainer)

One train step = forward + backward + Adam step on a (B, T) batch of characters (random: the timing
does not depend on the text). Times are medians over interleaved rounds (every model once a round,
in a new shuffled order each round), so load from other processes hits both sides alike. GEMM FLOPs of a step = 6·T·B·Σ|W| over
the weight matrices (forward, dx and dW of every GEMM); the machine's GEMM peak is measured here too.

    .venv/bin/python bench/engine.py [--rounds 6] [--only lstm,gru,lstmp,own,eval,step] [--threads N] [--plans kept]
                                     [--no-write]
"""

import argparse
import math
import os
import random
import statistics
import sys
import time
import warnings

import torch
from torch import nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from _results import (
    add_no_write,
    check_results,
    cpu_key,
    int_at_least,
    machine_line,
    markdown_table,
    name_list,
    plural,
    run_main,
    update_results,
)  # noqa: E402

from rnnkit import Recurrent  # noqa: E402
from rnnkit.engine import native  # noqa: E402
from rnnkit.train.config import MAX_THREADS  # noqa: E402
from rnnkit.train.optim import fused_or_not  # noqa: E402

V, E = 65, 64
TORCH = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn_tanh": nn.RNN}
SIZES = {"2x512": (2, 512, 32, 100), "1x128": (1, 128, 32, 50)}
TARGETS = {("lstm", "2x512"): 1.0, ("gru", "2x512"): 1.1, ("rnn_tanh", "2x512"): 1.1,
           ("lstm", "1x128"): 1.0, ("gru", "1x128"): 1.3, ("rnn_tanh", "1x128"): 1.3}  # fmt: skip
OTHERS = ("mut1", "mut2", "mut3", "leaky", "gru_cho")
OWN = ("lstm", "gru", "rnn_tanh", "leaky", "gru_cho", "mut2")  # written as cells of one's own: "own" rows
ROWS = (*TORCH, *OTHERS, "lstmp", "own", "eval", "step", "short")  # what --only picks from
# --plans: a choice kept in the plan file is never timed again, and one timed while other jobs loaded the machine
# stays wrong: a 2x512 MUT1 split over the units (kept) read 0.76x the LSTM's GEMM rate, and 0.91x over the rows,
# timed afresh on the idle machine minutes later (AMD Zen 4, 2 threads)
PLANS = {
    "fresh": "its GEMM and thread-split choices timed in this run",
    "kept": "its choices from the plan file",
}
READING = """
How to read it: the speed-up is the reference's time over rnnkit's (above 1x: rnnkit faster), same run, interleaved rounds.
The other cells are compared with a Python loop through autograd (target 1.5x) and, by GEMM FLOP
rate, with rnnkit's LSTM at the same size (target 0.9x), that LSTM timed in the same interleaved
rounds as the cell (the LSTM's own row is an earlier run of it) and compared round by round (the
median of the per-round ratios, so that a change of load during the run cancels); "partly" in the met
column: the speed-up over autograd met, the GEMM rate not. Timings are only
comparable on an idle machine, and the same row moves by 10-20% between runs on this shared one.
The native engine prepares each per-step weight matrix once per loop in the form a first timing on
this CPU found fastest (MKL packed, transposed copy, oneDNN or rnnkit's own AVX-512 kernel for the
narrow steps of small cells; RNNKIT_GEMM). Threads split the batch rows when the recurrent weights
fit in a core's L2 cache (every 1x128 cell; at 2x512 rnn_tanh and leaky with 1 MB of W_hh, and mut1 with
2 MB where the L2 holds it; RNNKIT_ROW_THREADS), or where a first timing finds the rows faster past L2 (an
AMD Zen 4: every 2x512 cell), else the hidden units (one barrier per step; gru_cho, mut1
and mut2 two, mut3 three; RNNKIT_SPLIT=0 turns that off). The GEMM rate counts only GEMM FLOPs of the whole train step (embedding lookup,
softmax, Adam and the like take the same time for every cell), so a cell with fewer FLOPs per step
(leaky: a quarter of an LSTM's recurrent FLOPs) shows a lower rate at the same engine efficiency.
In brackets: the same ratio for the recurrent layer alone (forward + backward of Recurrent, no
embedding, head or Adam). Where a row misses 0.9x, "needs its layer at" says how fast the cell's layer
would have to run, per GEMM FLOP, against the LSTM's layer in its own step, for the whole step to
reach 0.9x. The rest of the step (timed with a free stand-in for the layer) costs the same for every
cell, so the fewer FLOPs a cell has, the faster per FLOP its layer must run: 0.90x where the rest is
small (2x512), more at 1x128, and above 1.0x means narrower GEMMs beating the LSTM's wide ones.
The evaluation rows time the same model's loss under torch.no_grad (a validation pass; no target in
the issue): there torch.nn.LSTM switches to oneDNN's fused inference RNN, about 1.4x faster than its own
forward under autograd, while rnnkit's loop keeps no caches and only two state slots.
The "written as one's own cell" rows: rnnkit's cell rewritten as a user writes one, a Cell subclass with its
own step and step_backward (the built-in functions, so the same math), which the engine knows only by tracing
them into kernels (rnnkit/engine/traced.py; gru_cho and mut2, of two dependent products, as staged kernels); the
reference is the built-in cell in the same rounds, and "its python loop" says how much slower the same class
trains on the python backend, where every cell of one's own ran before. Every row is timed after one 30 MB block is freed (settle_malloc): glibc then reuses big blocks
instead of faulting fresh pages in, as in any process that has run a while; without it torch.nn.LSTM 1x128
ran about 20% slower. It narrows the spread but does not remove it: over the same hour torch.nn.LSTM 1x128 read
295,000-410,000 chars/s from run to run (rnnkit's lstm against it 1.02-1.16x), the heap's state after the rows
before it counting too.
Each kind of CPU (vendor, generation where the CPU family tells it, and vector width) keeps its own section,
engine-amd-zen5-avx512 say; `--threads 1` writes engine-1thread-amd-zen5-avx512."""


class CharLM(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        out = getattr(rnn, "proj_size", 0) or rnn.hidden_size
        self.emb, self.rnn, self.head = nn.Embedding(V, E), rnn, nn.Linear(out, V)

    def forward(self, x, y):
        out, _ = self.rnn(self.emb(x))
        return nn.functional.cross_entropy(self.head(out).reshape(-1, V), y.reshape(-1))


def own_cell(name):
    """rnnkit's cell `name` as a user would write it outside rnnkit: a Cell subclass defining its own step and
    step_backward (here the built-in ones, so the math is the same), which the engine knows only by tracing them
    (rnnkit/engine/traced.py); before, the python loop ran every such cell."""
    base = native.CELLS[name]
    body = {"step": staticmethod(base.step), "step_backward": staticmethod(base.step_backward)}
    return type(f"Own{base.__name__}", (base,), {**body, "__module__": __name__})


def make(cell, L, H, kind):
    """kind: "native", "python" (the hand-written BPTT in a Python loop), "autograd" (a Python loop through
    autograd) or "torch" (torch.nn). cell "lstmp": an LSTM with proj_size H/2 (torch.nn.LSTM's proj_size); a Cell
    class: that class."""
    torch.manual_seed(0)
    if cell == "lstmp":
        kw = dict(proj_size=H // 2, batch_first=True)
        rnn = nn.LSTM(E, H, L, **kw) if kind == "torch" else Recurrent("lstm", E, H, L, backend=kind, **kw)
    elif kind == "torch":
        rnn = TORCH[cell](E, H, L, batch_first=True)
    else:
        rnn = Recurrent(cell, E, H, L, backend=kind)
    model = CharLM(rnn)
    return model, fused_or_not(torch.optim.Adam, model.parameters(), lr=1e-3)  # as rnnkit's trainer


class FreeLayer(nn.Module):
    """A stand-in for the recurrent layer that costs (almost) nothing: (B, T, E) -> (B, T, H), the input repeated.
    A train step through it times the rest of the step (embedding, head, softmax, Adam)."""

    def __init__(self, H):
        super().__init__()
        self.hidden_size = H

    def forward(self, x):
        return x.repeat(1, 1, self.hidden_size // E), None


def gemm_flops(model, B, T):
    mats = [p for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("emb")]
    return 6 * T * B * sum(p.numel() for p in mats)


def train_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    model(x, y).backward()
    opt.step()


def interleaved(fns, rounds, reps, raw=False):
    """Median seconds per call of each fn, timed in rounds after one warm-up round, each round in a new order
    (seeded), so that no fn always follows the same one (whose data it finds in the caches, or which it finds them
    flushed by) and none follows itself across rounds: the first and last of the old scheme (every other round
    reversed) followed themselves every other round, the ones between never. raw: each fn's list of per-round
    times instead."""
    times = [[] for _ in fns]
    order, draw = list(range(len(fns))), random.Random(0)
    for r in range(rounds + 1 if fns else 0):
        last = order[-1]
        while True:
            draw.shuffle(order)
            if len(fns) == 1 or order[0] != last:
                break
        for k in order:
            fn = fns[k]
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            if r:
                times[k].append((time.perf_counter() - t0) / reps)
    return times if raw else [statistics.median(t) for t in times]


def paired_ratio(a, b):
    """Median over rounds of a[r] / b[r]: two fns timed in the same rounds, compared round by round, so that a
    change of load during the run (which moves both alike) cancels instead of shifting one median."""
    return statistics.median(x / y for x, y in zip(a, b))


def calls_per_round(L, H):
    """Calls of a timed fn per interleaved round: one for the big models, five for the small (1x128)."""
    return 1 if L * H >= 1024 else 5


def gemm_peak(rounds):
    """The machine's float32 GEMM peak (FLOP/s) and how it was found: a 2048² sgemm by MKL (torch.mm) and, where
    it runs float32, by oneDNN's matmul (the native engine uses either), the faster of the two. On an AMD Zen 4
    MKL reached 140 GFLOP/s, oneDNN 188, and the engine's rate above an MKL-only "peak" read 1.3 of it. The best
    of at least 5 rounds: a peak is what the machine can do, and other jobs only slow a round down (the median of
    one round on a loaded machine read 207 GFLOP/s, and a row 1.71 "of peak", where a moment later it was 391-434)."""
    a, b, c = torch.randn(2048, 2048), torch.randn(2048, 2048), torch.zeros(2048, 2048)
    ext = native.load()
    libs = {"MKL": lambda: a @ b}
    if ext.have_dnnl():
        libs["oneDNN"] = lambda: ext.gemm_run(1, False, False, a, b, 0.0, c)
    times = interleaved(list(libs.values()), max(rounds, 5), 3, raw=True)
    rates = {lib: 2 * 2048**3 / min(t) for lib, t in zip(libs, times)}
    best = max(rates, key=rates.get)
    how = f"2048² sgemm, {best}" + "".join(
        f"; {lib} {r / 1e9:.0f}" for lib, r in rates.items() if lib != best
    )
    return rates[best], how


def train_row(cell, size, ref_kind, rounds, against_lstm=False):
    """Seconds per train step [rnnkit, reference] and rnnkit's GEMM FLOPs for one config; the reference is
    torch.nn or autograd. against_lstm: also rnnkit's LSTM of the same size and the rest of the step
    (FreeLayer in the layer's place), timed in the same interleaved rounds; then returns
    ([rnnkit, reference, rnnkit lstm, rest], flops, lstm flops, GEMM rate over the lstm's: the median of the
    per-round ratios)."""
    L, H, B, T = SIZES[size]
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    models = [make(cell, L, H, "native"), make(cell, L, H, ref_kind)]
    if against_lstm:
        free = CharLM(FreeLayer(H))
        models += [
            make("lstm", L, H, "native"),
            (free, fused_or_not(torch.optim.Adam, free.parameters(), lr=1e-3)),
        ]
    steps = [lambda m=m: train_step(*m, x, y) for m in models]
    per_round = interleaved(steps, rounds, calls_per_round(L, H), raw=True)
    times = [statistics.median(t) for t in per_round]
    flops = gemm_flops(models[0][0], B, T)
    if not against_lstm:
        return times, flops
    flops_lstm = gemm_flops(models[2][0], B, T)
    return times, flops, flops_lstm, flops / flops_lstm * paired_ratio(per_round[2], per_round[0])


def layer_rate_needed(size, t, flops, rel, flops_lstm, t_rest):
    """For a cell whose step takes t seconds for flops GEMM FLOPs, at `rel` times the LSTM's GEMM rate (the paired
    ratio the row's miss is decided on): the GEMM rate its recurrent layer would need for the whole step to reach
    0.9x the LSTM's rate, over the rate the LSTM's layer has in its own step (flops_lstm FLOPs in the time rel
    gives it; t_rest: the step without its layer). inf: even a free layer misses. (From the medians' LSTM time, where
    their ratio and the paired one lay on either side of 0.9, a miss read as needing a rate the layer had already.)"""
    L, H, B, T = SIZES[size]
    head = 6 * T * B * H * V  # the Linear(H, V) head's share of both counts
    t_lstm = rel * t * flops_lstm / flops  # the LSTM's step time, as the paired ratio has it
    budget = t * rel / 0.9 - t_rest  # seconds the layer may take
    lstm_layer = (flops_lstm - head) / (t_lstm - t_rest)
    return (flops - head) / budget / lstm_layer if budget > 0 else float("inf")


def layer_ratio(cell, size, rounds):
    """GEMM FLOP rate of the cell's recurrent layer alone (forward + backward of Recurrent, no embedding, head
    or Adam) over the LSTM layer's, the two timed in the same interleaved rounds."""
    L, H, B, T = SIZES[size]
    x, w = torch.randn(B, T, E, requires_grad=True), torch.randn(B, T, H)
    layers = []
    for name in (cell, "lstm"):
        torch.manual_seed(0)
        layers.append(Recurrent(name, E, H, L, backend="native"))

    def go(layer):
        out, _ = layer(x)
        (out * w).sum().backward()

    times = interleaved([lambda m=m: go(m) for m in layers], rounds, calls_per_round(L, H), raw=True)
    flops = [sum(p.numel() for p in m.parameters() if p.dim() == 2) for m in layers]
    return flops[0] / flops[1] * paired_ratio(times[1], times[0])


def own_row(cell, size, rounds):
    """Seconds per train step [own cell on the native loop, the built-in cell, own cell on the python loop], and
    the GEMM FLOPs: rnnkit's `cell` rewritten as a cell of one's own (own_cell), traced into the native loop."""
    L, H, B, T = SIZES[size]
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    own = own_cell(cell)
    models = [make(own, L, H, "native"), make(cell, L, H, "native"), make(own, L, H, "python")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (the native loop must run it: no fallback)
        train_step(*models[0], x, y)
    steps = [lambda m=m: train_step(*m, x, y) for m in models]
    times = interleaved(steps, rounds, calls_per_round(L, H))
    return (*times, gemm_flops(models[0][0], B, T))


def eval_row(cell, size, rounds):
    """Seconds per evaluation pass [rnnkit, torch.nn]: the model's loss under torch.no_grad, as a validation
    pass runs it (no issue target; for the reader: torch.nn.LSTM has a separate oneDNN inference path)."""
    L, H, B, T = SIZES[size]
    x, y = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    models = [make(cell, L, H, kind)[0] for kind in ("native", "torch")]

    def run(m):
        def go():
            with torch.no_grad():
                m(x, y)

        return go

    t_ours, t_ref = interleaved([run(m) for m in models], rounds, calls_per_round(L, H))
    return t_ours, t_ref, gemm_flops(models[0], B, T) // 3  # forward only: a third of the step's


# (cell, layers, H, target)
STEP_ROWS = [("lstm", 2, 128, 1.0), ("gru", 1, 32, None), ("rnn_tanh", 1, 32, None)]


def step_row(rounds, cell="lstm", layers=2, H=128, steps=1000):
    """One-step inference: B=1, the state fed back for `steps` steps (a sampling loop); at H = 32 the time is the
    per-call overhead of the layer around a few µs of arithmetic."""
    torch.manual_seed(0)
    ours, ref = Recurrent(cell, E, H, layers, backend="native"), TORCH[cell](E, H, layers, batch_first=True)
    x = torch.randn(1, 1, E)

    def run(m):
        def go():
            with torch.no_grad():
                state = None
                for _ in range(steps):
                    _, state = m(x, state)

        return go

    t_ours, t_ref = interleaved([run(ours), run(ref)], rounds, 1)
    flops = 2 * sum(p.numel() for p in ours.parameters() if p.dim() == 2) * steps
    return t_ours, t_ref, flops


# (cell, H): MBs of recurrent weights, where preparing them per call (a copy, a packed form) costs most
SHORT_ROWS = [("lstm", 512), ("gru", 1000), ("rnn_tanh", 1024)]
SHORT_STEPS = (8, 16, 40)


def short_row(rounds, cell, H, T, train):
    """A short call at batch 1 of one layer with MBs of recurrent weights: (B=1, T, 64) through Recurrent and
    torch.nn, under no_grad or forward + backward of out.sum(). Below a few dozen steps preparing the weights for
    the loop costs more than it saves here (csrc/engine.cpp: timed_prepare), and such calls ran at 0.4-0.9x
    torch.nn when every call from 8 steps on prepared them."""
    torch.manual_seed(0)
    ours, ref = Recurrent(cell, E, H, backend="native"), TORCH[cell](E, H, batch_first=True)
    x = torch.randn(1, T, E, requires_grad=train)

    def run(m):
        def go():
            if train:
                m(x)[0].sum().backward()
            else:
                with torch.no_grad():
                    m(x)

        return go

    t_ours, t_ref = interleaved([run(ours), run(ref)], rounds, 5)
    flops = 2 * sum(p.numel() for p in ours.parameters() if p.dim() == 2) * T * (3 if train else 1)
    return t_ours, t_ref, flops


def ratio_text(value, target):
    """value to 2 decimals, or to 3, cut rather than rounded, where 2 would round a miss up to its target (0.897
    read "0.90x (target 0.9x)", the figure shown meeting the target the row said it missed)."""
    if value < target <= round(value, 2):
        return f"{math.floor(value * 1000) / 1000:.3f}"
    return f"{value:.2f}"


def fmt_row(name, ref_name, t_ours, t_ref, chars, flops, peak, target):
    ratio = t_ref / t_ours
    rate = flops / t_ours
    share = target and ratio_text(ratio / target, 1)
    ok = "" if target is None else ("yes" if ratio >= target else f"no ({share} of target)")
    cps = f"{chars / t_ours:,.0f}" if chars else f"{t_ours * 1e3:.1f} ms"
    ref = f"{chars / t_ref:,.0f}" if chars else f"{t_ref * 1e3:.1f} ms"
    return [name, cps, ref_name, ref, f"{ratio_text(ratio, target or 0)}x", "" if target is None else f">= {target}x",
            f"{rate / 1e9:.1f}", f"{rate / peak:.2f}", ok]  # fmt: skip


def builtin_rates(builtin):
    """For scale, the GEMM-rate measure applied to the built-in cells: torch.nn.RNN and nn.GRU against
    torch.nn.LSTM, and rnnkit's rnn_tanh and gru against rnnkit's lstm (medians of their own rows)."""
    lines = []
    for size in SIZES:
        if ("lstm", size) not in builtin:
            continue
        t_lstm, t_ref_lstm, f_lstm = builtin["lstm", size]
        parts = []
        for cell in ("rnn_tanh", "gru"):
            if (cell, size) in builtin:
                t, t_ref, f = builtin[cell, size]
                ours, ref = f / f_lstm * t_lstm / t, f / f_lstm * t_ref_lstm / t_ref
                parts.append(f"torch.nn.{TORCH[cell].__name__} {ref:.2f}x (rnnkit {cell} {ours:.2f}x)")
        if parts:
            lines.append(f"{size}: " + ", ".join(parts))
    if not lines:
        return []
    head = (
        "\nFor scale, the same GEMM-rate measure for the built-in cells, each against its own library's LSTM "
        "(whole train step, medians of the rows above): "
    )
    return [head + "; ".join(lines) + "."]


def settle_malloc():
    """Free one 30 MB block first. glibc serves a block over its mmap threshold (128 KB at the start) with fresh pages
    from the kernel and returns them on free, and raises that threshold (up to 32 MB) to the size of the first such
    block freed: from then on blocks of that size are reused from the heap, without page faults. A process that had
    freed no big block (the GEMM choices read from their file rather than timed) ran torch.nn.LSTM 1x128's train
    step 20% slower, and its one-step inference 25% (rnnkit's loops recycle their buffers: 5-10%), so the speed-ups
    moved with it (1.04x against 1.15-1.2x): all rows are timed after this, the state of any process that has run
    a while."""
    block = torch.empty(30 << 18)  # 30 MB of float32 (glibc takes at most 32 MB as its threshold)
    block.fill_(0)
    del block


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rounds",
        type=int_at_least(1),
        default=6,
        help="timed rounds per row, after one warm-up round; the tables show their medians (default: 6)",
    )
    ap.add_argument(
        "--only",
        type=name_list(ROWS),
        default=None,
        help=f"comma-separated rows to run: cells {','.join((*TORCH, *OTHERS))} (train steps at both sizes), "
        f"lstmp (an LSTM with proj_size), own ({','.join(OWN)} written as cells of one's own, traced), eval (no_grad forward), "
        "step (one-step inference) and short (short calls at batch 1 of MBs of weights) (default: all)",
    )
    ap.add_argument(
        "--threads",
        type=int_at_least(0, MAX_THREADS),
        default=0,
        help="torch threads; 0 = torch's choice; N > 0 writes the section engine-Nthread-CPU (default: 0)",
    )
    ap.add_argument(
        "--plans",
        choices=("fresh", "kept"),
        default="fresh",
        help="fresh: the native engine times its GEMM and thread-split choices in this run (RNNKIT_GEMM_PLANS "
        "empty), as on a machine new to this build; kept: it takes the choices in this machine's plan file, "
        "timed by the processes before it, on a machine that may have been loaded then (default: fresh)",
    )
    add_no_write(ap, "engine")
    args = ap.parse_args()
    if args.plans == "fresh":  # (read when the engine loads, below)
        os.environ["RNNKIT_GEMM_PLANS"] = ""
    # (a part of the table: not written; every row named is the whole table)
    partial = f"--only {','.join(args.only)}" if args.only and set(args.only) != set(ROWS) else None
    check_results(ap, args, partial)
    reason = native.unsupported(native.CELLS["lstm"], torch.zeros(1))
    if reason:
        sys.exit(f"native backend unavailable: {reason}")
    if args.threads:
        torch.set_num_threads(args.threads)
    settle_malloc()
    only = set(args.only) if args.only else None
    peak, peak_how = gemm_peak(args.rounds)
    print(f"GEMM peak: {peak / 1e9:.1f} GFLOP/s ({peak_how})", flush=True)
    rows, notes, builtin = [], [], {}
    for size, (_, _, B, T) in SIZES.items():
        for cell in (*TORCH, *OTHERS):
            if only and cell not in only:
                continue
            ref_kind = "torch" if cell in TORCH else "autograd"
            ref_name = f"torch.nn.{TORCH[cell].__name__}" if cell in TORCH else "autograd loop"
            target = TARGETS.get((cell, size), None if cell in TORCH else 1.5)
            if cell in OTHERS:
                (t_ours, t_ref, t_lstm, t_rest), flops, flops_lstm, rel = train_row(
                    cell, size, ref_kind, args.rounds, True
                )
            else:
                (t_ours, t_ref), flops = train_row(cell, size, ref_kind, args.rounds)
                builtin[cell, size] = (t_ours, t_ref, flops)
            row = fmt_row(f"{cell} {size}, B{B} T{T}", ref_name, t_ours, t_ref, B * T, flops, peak, target)
            if cell in OTHERS:
                gemm_rate = f"; GEMM rate {ratio_text(rel, 0.9)}x rnnkit lstm"
                row[-1] += gemm_rate + ("" if rel >= 0.9 else " (target 0.9x)")
                row[-1] += f" (layer alone: {layer_ratio(cell, size, args.rounds):.2f}x)"
                if rel < 0.9:  # the speed-up over autograd met, the GEMM rate not: half the row's target
                    row[-1] = row[-1].replace("yes;", "partly (GEMM rate no);", 1)
                    need = layer_rate_needed(size, t_ours, flops, rel, flops_lstm, t_rest)
                    row[-1] += f"; 0.9x needs its layer at {need:.2f}x the lstm layer's rate"
            rows.append(row)
            print(" | ".join(row), flush=True)
    if not only or "lstmp" in only:  # torch.nn.LSTM's proj_size: no target in the issue
        warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN")
        for size, (_, H, B, T) in SIZES.items():
            (t_ours, t_ref), flops = train_row("lstmp", size, "torch", args.rounds)
            row = fmt_row(f"lstm proj_size={H // 2} {size}, B{B} T{T}", "torch.nn.LSTM", t_ours,
                          t_ref, B * T, flops, peak, None)  # fmt: skip
            rows.append(row)
            print(" | ".join(row), flush=True)
    if not only or "own" in only:  # a cell of one's own (the mission: about what a built-in one costs)
        for size, (_, _, B, T) in SIZES.items():
            for cell in OWN:
                t_own, t_builtin, t_python, flops = own_row(cell, size, args.rounds)
                row = fmt_row(f"{cell} written as one's own cell (traced), {size}, B{B} T{T}", f"rnnkit {cell}",
                              t_own, t_builtin, B * T, flops, peak, None)  # fmt: skip
                row[-1] = f"its python loop (before): {t_python / t_own:.2f}x slower"
                rows.append(row)
                print(" | ".join(row), flush=True)
    if not only or "eval" in only:
        for size, (_, _, B, T) in SIZES.items():
            for cell in TORCH:
                t_ours, t_ref, flops = eval_row(cell, size, args.rounds)
                ref_name = f"torch.nn.{TORCH[cell].__name__}"
                row = fmt_row(f"evaluation (no_grad forward), {cell} {size}, B{B} T{T}", ref_name, t_ours, t_ref,
                              B * T, flops, peak, None)  # fmt: skip
                rows.append(row)
                print(" | ".join(row), flush=True)
    if not only or "step" in only:
        for cell, layers, H, target in STEP_ROWS:
            t_ours, t_ref, flops = step_row(args.rounds, cell, layers, H)
            row = fmt_row(f"one-step inference, {cell} {layers}x{H}, B1, 1000 steps", f"torch.nn.{TORCH[cell].__name__}",
                          t_ours, t_ref, 0, flops, peak, target)  # fmt: skip
            rows.append(row)
            print(" | ".join(row), flush=True)
    if not only or "short" in only:
        for train in (False, True):
            for cell, H in SHORT_ROWS:
                for T in SHORT_STEPS:
                    t_ours, t_ref, flops = short_row(args.rounds, cell, H, T, train)
                    what = "forward + backward" if train else "no_grad forward"
                    row = fmt_row(f"short call, {what}, {cell} 1x{H}, B1 T{T}", f"torch.nn.{TORCH[cell].__name__}",
                                  t_ours, t_ref, T, flops, peak, None)  # fmt: skip
                    rows.append(row)
                    print(" | ".join(row), flush=True)
    notes.append(READING)
    notes.extend(builtin_rates(builtin))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    notes.append(f"\nLoad average at the end of the run (1, 5, 15 min): {load} on {os.cpu_count()} cores.")
    # (the one-step rows give the time of their 1,000 steps instead: "126.6 ms" stood under "chars/s")
    header = ["config", "rnnkit (chars/s; one-step: time)", "reference", "reference (chars/s; one-step: time)",
              "speed-up", "target",
              "GEMM GFLOP/s", "of peak", "met"]  # fmt: skip
    md = "\n".join([
        f"## engine, {cpu_key()}: train step (forward + backward + Adam) of Embedding(65,64) -> Recurrent -> Linear"
        " -> CE",
        "", f"{machine_line()}; GEMM peak {peak / 1e9:.1f} GFLOP/s ({peak_how}; same run); "
        f"{'median' if args.rounds == 1 else 'medians'} of {plural(args.rounds, 'interleaved round')}; "
        f"rnnkit backend: native, {PLANS[args.plans]}.", "", markdown_table(header, rows), *notes,
    ])  # fmt: skip
    print(md)
    if not args.no_write:
        threads = f"-{args.threads}thread" if args.threads else ""
        update_results(f"engine{threads}-{cpu_key()}", md, partial)


if __name__ == "__main__":
    run_main(main)
