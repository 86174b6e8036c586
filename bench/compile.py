"""torch.compile benchmark: the engine's char-LM train step compiled, against the same model eager and against
torch.nn compiled, in the same run; and what a new sequence length costs.

    Embedding(65, 64) -> Recurrent(cell, 64, H, L) -> Linear(H, 65) -> cross-entropy;  Adam (eager, fused)

The model (forward + backward) is compiled with torch.compile's default backend (inductor); the optimizer step
runs eagerly. Compile times: the first call at T, then the first call at each of two more lengths (T + 10,
T + 20), the second of which should find the graph dynamo made symbolic in T at the second (no compile). Step
times: medians of interleaved rounds (bench/engine.py's scheme). Under torch.compile the recurrent loop is the
operator rnnkit::recurrence (rnnkit/engine/compiled.py); backend="autograd" is what compile made of a layer
before that, the time loop unrolled into T copies of the step (--unrolled: also time that, about a minute of
compiling per length).

    .venv/bin/python bench/compile.py [--rounds 6] [--only lstm,gru] [--unrolled] [--no-write]
"""

import argparse
import atexit
import os
import shutil
import signal
import sys
import tempfile
import time
import warnings

# compile times from a cold start: inductor's on-disk cache of compiled graphs in a fresh folder (before torch)
CACHE = os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="rnnkit-bench-inductor-")
atexit.register(shutil.rmtree, CACHE, ignore_errors=True)  # each run left one
# SIGTERM (kill, `timeout`) exits as Ctrl-C does, through that removal: it skipped it, the folder left behind
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

import torch  # noqa: E402

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))  # this checkout's rnnkit
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from _results import (  # noqa: E402
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
)  # noqa: E402,I001
from engine import SIZES, TORCH, calls_per_round, interleaved, make, train_step  # noqa: E402
from torch._inductor.utils import fresh_cache  # noqa: E402

from rnnkit.engine import native  # noqa: E402

CELLS = ("lstm", "gru", "rnn_tanh", "mut1", "leaky")
DEFAULT_CELLS = ("lstm", "gru", "mut1")  # every run's rows (without --only)
HEADER = [
    "config",
    "model",
    "train chars/s",
    "vs rnnkit eager",
    "first forward + backward at T / T+10 / T+20 (s)",
]


def batch(B, T):
    return torch.randint(0, 65, (B, T)), torch.randint(0, 65, (B, T))


def compile_times(model, B, T):
    """Seconds of the first forward + backward at T, T + 10 and T + 20 (each compiles what it has to)."""
    times = []
    for t in (T, T + 10, T + 20):
        x, y = batch(B, t)
        t0 = time.perf_counter()
        model(x, y).backward()
        times.append(time.perf_counter() - t0)
    return times


def warm_up():
    """Compile a small model once, untimed: the first compile of a process pays inductor's start (its workers,
    imports, C++ toolchain checks), 15-25 s that were charged to the first row's "first at T" alone."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    with fresh_cache(dir=CACHE):  # (inside CACHE: torch keeps a fresh cache where its block is stopped)
        torch.compile(model)(torch.randn(2, 4)).sum().backward()
    torch._dynamo.reset()


def row(cell, size, rounds, unrolled):
    L, H, B, T = SIZES[size]
    kinds = {"rnnkit eager": (None, False), "rnnkit compiled": (None, True)}
    if cell in TORCH:
        kinds["torch.nn compiled"] = ("torch", True)
    if unrolled:
        kinds["rnnkit compiled, unrolled loop (backend='autograd')"] = ("autograd", True)
    steps, compiles = {}, {}
    for name, (
        kind,
        comp,
    ) in kinds.items():  # compile times, each model from a fresh dynamo and inductor cache
        if comp:
            torch._dynamo.reset()
            # (the rows before compiled the same embedding, head and loss: their kernels came from the cache)
            with fresh_cache(dir=CACHE):
                compiles[name] = compile_times(torch.compile(make(cell, L, H, kind or "native")[0]), B, T)
    torch._dynamo.reset()
    for name, (kind, comp) in kinds.items():
        model, opt = make(cell, L, H, kind or "native")
        if comp:
            model = torch.compile(model)  # (compiled again in the warm-up round, from the graph cache)
        x, y = batch(B, T)
        steps[name] = lambda m=model, o=opt, x=x, y=y: train_step(m, o, x, y)
    times = dict(zip(steps, interleaved(list(steps.values()), rounds, calls_per_round(L, H))))
    eager = times["rnnkit eager"]
    rows = []
    for name, t in times.items():
        c = compiles.get(name)
        first = "" if c is None else f"{c[0]:.1f} / {c[1]:.1f} / {c[2]:.1f}"
        rows.append([f"{cell} {size}, B{B} T{T}", name, f"{B * T / t:,.0f}", f"{eager / t:.2f}x", first])
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int_at_least(1), default=6,
                    help="timed rounds per row, after one warm-up round (default: 6)")  # fmt: skip
    ap.add_argument("--only", type=name_list(CELLS), default=None,
                    help=f"comma-separated cells from {','.join(CELLS)} (default: {','.join(DEFAULT_CELLS)})")  # fmt: skip
    ap.add_argument("--sizes", type=name_list(tuple(SIZES)), default=["1x128"],
                    help=f"comma-separated sizes from {','.join(SIZES)} (default: 1x128)")  # fmt: skip
    ap.add_argument("--unrolled", action="store_true",
                    help="also time compile's unrolled loop (backend='autograd'; a minute of compiling per length)")  # fmt: skip
    add_no_write(ap, "compile")
    args = ap.parse_args()
    # (the default cells at 1x128, the default size: their rows are every run's; more cells add rows)
    only = [] if not args.only or set(DEFAULT_CELLS) <= set(args.only) else [f"--only {','.join(args.only)}"]
    partial = " ".join(only + ([] if "1x128" in args.sizes else [f"--sizes {','.join(args.sizes)}"])) or None
    check_results(ap, args, partial)
    reason = native.unsupported(native.CELLS["lstm"], torch.zeros(1))
    if reason:
        sys.exit(f"native backend unavailable: {reason}")
    warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
    warm_up()
    rows = []
    for size in args.sizes:
        for cell in args.only or DEFAULT_CELLS:
            print(f"{cell} {size} ...", flush=True)
            new = row(cell, size, args.rounds, args.unrolled)
            print(markdown_table(HEADER, new), flush=True)
            rows.extend(new)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    md = "\n".join([
        f"## torch.compile, {cpu_key()}: train step of Embedding(65,64) -> Recurrent -> Linear -> CE, the model "
        "compiled (inductor), Adam eager",
        "", f"{machine_line()}; {'median' if args.rounds == 1 else 'medians'} of "
        f"{plural(args.rounds, 'interleaved round')}.", "", markdown_table(HEADER, rows), "",
        "The first calls include compiling (each model with inductor's cache of compiled graphs empty, after one untimed compile of a small model that pays inductor's start-up): at T (a graph of static shapes), at T+10 (dynamo makes T "
        "symbolic and compiles once more) and at T+20 (that graph again: no compile). Compiled, the recurrent "
        "loop is one operator, rnnkit::recurrence, running the native engine's C++ forward and backward; inductor "
        "compiles the embedding, projection, head and loss around it. Where the few percent under eager go (torch.profiler, "
        "lstm 1x128): the projection's forward (inductor's addmm) takes what rnnkit's takes eagerly, the loop's "
        "forward and backward 5-10% more than eagerly (the same C++ calls; why, not found), the projection's backward (inductor's two mm) runs about 0.25 ms slower than rnnkit's, and "
        "each compiled call pays dynamo's guards, AOTAutograd's wrappers and the operator's dispatch through Python "
        "(about 0.15 ms a train step at the smallest sizes). dynamo refuses torch.nn's RNN modules "
        "(torch._dynamo.config.allow_rnn is False) and then compiles no graph of the forward that calls one: the "
        "\"torch.nn compiled\" rows run the whole model eagerly (hence their compile times of about 0 s). "
        f"Load average at the end (1, 5, 15 min): {load} on {os.cpu_count()} cores.",
    ])  # fmt: skip
    print(md)
    if not args.no_write:
        update_results(f"compile-{cpu_key()}", md, partial)


if __name__ == "__main__":
    run_main(main)
