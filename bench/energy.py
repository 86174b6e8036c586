"""Benchmark of rnnkit.energy (RBM, Hopfield, Ising); not a test. Writes the `energy` section of bench/RESULTS.md.

    .venv/bin/python bench/energy.py [--seeds 10] [--out runs/bench-energy] [--device cpu] [--skip rbm hopfield ising]

1. RBM on scikit-learn's digits, set up as scikit-learn's example plot_rbm_logistic_classification.py
   (digits nudged one pixel each way, min-max scaled to [0, 1], 80/20 split with random_state=0), against
   sklearn.neural_network.BernoulliRBM with the same settings: 100 hidden, lr 0.06, batch 10, 10 epochs,
   PCD-1. Both models are scored by the same code: our exact pseudo-likelihood (all 64 conditionals, per
   pixel) of the binarised test digits, and scikit-learn's own score_samples (one random flip x 64) on
   the test digits; then logistic regression (C = 6000, as in the example) on each model's hidden
   probabilities. Wall time of fit() only, both in this run, alternating which goes first.
2. Hopfield capacity figure for N = 1000 (and for all four sizes), timed.
3. Ising temperature sweep of a 64 x 64 lattice over 32 temperatures, timed.
"""

import argparse
import importlib.util
import pathlib
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # rnnkit without an install
from _results import (  # noqa: E402
    add_no_write,
    check_results,
    folder,
    int_at_least,
    machine_line,
    markdown_table,
    out_folder,
    plural,
    run_main,
    update_results,
)

from rnnkit.energy import _rbm_kernel, capacity, ising, plots  # noqa: E402
from rnnkit.energy.rbm import RBM  # noqa: E402
from rnnkit.energy.rbm_train import RBMTrainConfig  # noqa: E402


def example_digits():
    """scikit-learn's example, verbatim in effect: nudge, min-max scale, split."""
    from scipy.ndimage import convolve
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import minmax_scale

    X, Y = load_digits(return_X_y=True)
    X = np.asarray(X, "float32")
    kernels = [[[0, 1, 0], [0, 0, 0], [0, 0, 0]], [[0, 0, 0], [1, 0, 0], [0, 0, 0]],
               [[0, 0, 0], [0, 0, 1], [0, 0, 0]], [[0, 0, 0], [0, 0, 0], [0, 1, 0]]]  # fmt: skip
    shift = lambda x, w: convolve(x.reshape((8, 8)), mode="constant", weights=w).ravel()  # noqa: E731
    X = np.concatenate([X] + [np.apply_along_axis(shift, 1, X, k) for k in kernels])
    X = minmax_scale(X, feature_range=(0, 1))
    return train_test_split(X, np.concatenate([Y] * 5), test_size=0.2, random_state=0)


def accuracy(train_features, y_train, test_features, y_test) -> float:
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    # The example's tol=1 stops newton-cg at once in scikit-learn 1.9 (chance accuracy); default tol.
    with threadpool_limits(1):
        clf = LogisticRegression(solver="newton-cg", C=6000).fit(train_features, y_train)
    return clf.score(test_features, y_test)


def fit_sklearn(X, seed: int, device: str, blas_threads: int | None = None):
    from sklearn.neural_network import BernoulliRBM
    from threadpoolctl import threadpool_limits

    est = BernoulliRBM(n_components=100, learning_rate=0.06, batch_size=10, n_iter=10, random_state=seed)
    with threadpool_limits(blas_threads):
        start = time.perf_counter()
        est.fit(X)
        seconds = time.perf_counter() - start
    return RBM.from_sklearn(est), seconds


def fit_ours(X, seed: int, device: str, use_kernel=True):
    g = torch.Generator(device=device).manual_seed(seed)
    rbm = RBM(64, 100, generator=g, device=device)
    cfg = RBMTrainConfig(epochs=10, batch_size=10, lr=0.06, k=1, persistent=True, use_kernel=use_kernel)
    x = torch.tensor(X, dtype=torch.float32, device=device)
    start = time.perf_counter()
    rbm.fit(x, cfg, g)
    if device != "cpu":
        torch.cuda.synchronize()
    return rbm.cpu(), time.perf_counter() - start


FITS = {
    "scikit-learn": fit_sklearn,
    "scikit-learn, 1 BLAS thread": lambda X, seed, device: fit_sklearn(X, seed, device, blas_threads=1),
    "rnnkit": fit_ours,
    "rnnkit, torch loop": lambda X, seed, device: fit_ours(X, seed, device, use_kernel=False),
}
SCORED = ("scikit-learn", "rnnkit")


def scores(rbm: RBM, X_train, y_train, X_test, y_test) -> dict:
    test = torch.tensor(X_test, dtype=torch.float32)
    train_features = rbm.transform(torch.tensor(X_train)).numpy()
    return {
        "exact PL per pixel": rbm.pseudo_likelihood((test > 0.5).float(), per_unit=True).mean().item(),
        "sklearn score_samples": float(rbm.to_sklearn(random_state=0).score_samples(X_test).mean()),
        "accuracy": accuracy(train_features, y_train, rbm.transform(test).numpy(), y_test),
    }


def timing_table(times: dict) -> str:
    median = {name: statistics.median(t) for name, t in times.items()}
    baseline = min(median["scikit-learn"], median["scikit-learn, 1 BLAS thread"])
    rows = [
        [name, " ".join(f"{t:.3f}" for t in ts), f"{median[name]:.3f}", f"{baseline / median[name]:.1f}x"]
        for name, ts in times.items()
    ]
    return markdown_table(
        ["fit()", "seconds, seed by seed", "median", "speed-up vs faster scikit-learn"], rows
    )


def quality_table(quality: dict) -> str:
    """Mean ± sd over seeds per model, and rnnkit minus scikit-learn ± the standard error of that (the spreads
    shown as - with a single seed)."""
    keys = list(quality["rnnkit"][0])
    stats = {name: {k: [r[k] for r in runs] for k in keys} for name, runs in quality.items()}
    several = len(quality["rnnkit"]) > 1
    rows = [[name, *(f"{statistics.mean(v):.4f} ± " + (f"{statistics.stdev(v):.4f}" if several else "-")
                     for v in cols.values())] for name, cols in stats.items()]  # fmt: skip
    diff = []
    for k in keys:
        ours, theirs = stats["rnnkit"][k], stats["scikit-learn"][k]
        se = "-"
        if several:
            se = f"{(statistics.variance(ours) / len(ours) + statistics.variance(theirs) / len(theirs)) ** 0.5:.4f}"
        diff.append(f"{statistics.mean(ours) - statistics.mean(theirs):+.4f} ± {se}")
    rows.append(["rnnkit - scikit-learn (± standard error)", *diff])
    return markdown_table(["model (mean ± sd over seeds)", *keys], rows)


def bench_rbm(seeds: int, device: str) -> str:
    X_train, X_test, y_train, y_test = example_digits()
    start = time.perf_counter()
    kernel = _rbm_kernel.load()
    build = time.perf_counter() - start
    times, quality = {name: [] for name in FITS}, {name: [] for name in SCORED}
    for seed in range(seeds):
        for name in list(FITS) if seed % 2 == 0 else list(FITS)[::-1]:  # alternate who goes first
            rbm, seconds = FITS[name](X_train, seed, device)
            times[name].append(seconds)
            if name in SCORED:
                quality[name].append(scores(rbm, X_train, y_train, X_test, y_test))
                print(name, seed, f"{seconds:.3f}s", quality[name][-1], flush=True)
    # the compiled loop takes CPU models only: on a GPU rbm_train runs its torch loop
    if torch.device(device).type != "cpu":
        path = f"the torch loop on {device}"
    else:
        path = (
            "the compiled CPU loop (rbm_cd.c)"
            if kernel is not None
            else f"the torch loop ({_rbm_kernel.unavailable()})"
        )
    return "\n\n".join(
        [
            f"### RBM on digits vs scikit-learn BernoulliRBM ({plural(seeds, 'seed')}; rnnkit runs {path}, "
            f"built or loaded in {build:.2f} s before any timing)",
            f"Training set {X_train.shape[0]} x 64 (scikit-learn's example: nudged digits, min-max scaled), "
            f"test set {X_test.shape[0]}. Same settings: 100 hidden, lr 0.06, batch 10, 10 epochs, PCD-1.",
            timing_table(times),
            quality_table(quality),
            "Exact PL = (1/64) Σ_j log P(v_j | v_-j), all 64 terms, by rnnkit's code on both models; "
            "score_samples = 64 log P(v_j | v_-j) for one random j (scikit-learn issue 23179), by scikit-learn's "
            "code on both models (same random j). Accuracy: LogisticRegression(solver='newton-cg', C=6000) on "
            "the hidden probabilities as in the example, with the default tol: the example's tol=1 stops at once "
            "in scikit-learn 1.9 and scores 0.097 for both models.",
        ]
    )


def half(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def bench_hopfield(out: pathlib.Path, device: str) -> str:
    cfg, rows = capacity.CapacityConfig(), []
    for sizes in ((1000,), cfg.sizes):
        start = time.perf_counter()
        results = capacity.capacity_experiment(capacity.CapacityConfig(sizes=sizes), device)
        path = plots.capacity_figure(results, out / f"capacity_{'_'.join(map(str, sizes))}.png")
        rows.append([", ".join(map(str, sizes)), len(results), f"{time.perf_counter() - start:.1f}", path])
        print(rows[-1], flush=True)
    cross = [
        [
            c["N"],
            half(c["recalled_half"]),
            half(c["perfect_half"]),
            half(c["overlap_half"]),
            half(c["perfect_bound"]),
        ]
        for c in capacity.crossings(results)
    ]
    spurious = [
        [r["N"], f"{r['load']:.2f}", r["networks"] * cfg.random_starts, f"{r['spurious']:.2f}", f"{r['mixture']:.2f}",
         f"{r['three_mixture']:.2f}", r["distinct_spurious"], f"{r['starts_unfinished']:.2f}"]
        for r in results if round(r["load"], 2) in (0.02, 0.04, 0.10)
    ]  # fmt: skip
    header = ["N", "P/N", "random starts", "spurious", "mixtures", "symmetric 3-mixtures", "distinct spurious",
              "still moving"]  # fmt: skip
    return "\n\n".join(
        [
            f"### Hopfield capacity: Hebbian, asynchronous, from each stored pattern; {len(cfg.loads)} loads "
            f"{cfg.loads[0]}..{cfg.loads[-1]}, >= {cfg.min_patterns} patterns a point, {cfg.random_starts} random "
            f"starts a network, <= {cfg.max_sweeps} sweeps",
            markdown_table(["sizes N", "points", "seconds, figure included", "figure"], rows),
            "Where the curves fall through 1/2 (interpolated between loads), beside α_c ≈ 0.138 (Amit, Gutfreund, "
            "Sompolinsky 1985) and the perfect-recall bound 1/(2 ln N):",
            markdown_table(
                ["N", "recalled (< 1% bits wrong)", "recalled perfectly", "mean overlap", "1/(2 ln N)"], cross
            ),
            "Random starts, as fractions of all of them: ending on a spurious fixed point (away from every "
            "±pattern), on a mixture state (within 1 % of the bits of sgn(Σ m_μ ξ^μ) over its 2 to 7 largest "
            "overlaps; the rest are spin-glass states), on a symmetric 3-mixture sgn(±ξ1 ± ξ2 ± ξ3) (three overlaps 1/2), and still moving after the last sweep:",
            markdown_table(header, spurious),
        ]
    )


def bench_ising(out: pathlib.Path, device: str) -> str:
    rows = []
    temps = torch.linspace(1.0, 4.0, 32)
    for update in ("metropolis", "heat-bath"):
        start = time.perf_counter()
        g = torch.Generator(device=device).manual_seed(0)
        results = ising.Ising(64, temps, update=update, generator=g, device=device).run(1000, 500)
        seconds = time.perf_counter() - start
        path = plots.ising_figure(
            results, out / f"ising_{update}.png", ising.onsager_tc(), ising.onsager_magnetisation
        )
        T, m = results["temperature"], results["abs_magnetisation"]
        peak_c, peak_chi = (
            T[results["specific_heat"].argmax()].item(),
            T[results["susceptibility"].argmax()].item(),
        )
        rows.append(
            [
                update,
                f"{seconds:.1f}",
                f"{peak_c:.3f}",
                f"{peak_chi:.3f}",
                f"{m[0]:.4f}",
                f"{m[-1]:.4f}",
                path,
            ]
        )
        print(rows[-1], flush=True)
    header = ["update", "seconds", "T at the C peak", "T at the χ peak", "|m| at T=1", "|m| at T=4", "figure"]
    return "\n\n".join(
        [
            "### Ising model, 64 x 64, 32 temperatures from 1.0 to 4.0 in one batch, 500 + 1000 measured sweeps",
            markdown_table(header, rows),
            f"Onsager's T_c = {ising.onsager_tc():.3f}; the temperature grid step is {temps[1] - temps[0]:.3f}.",
        ]
    )


PARTS = ("rbm", "hopfield", "ising")


def torch_device(text: str) -> str:
    """argparse type: a device rnnkit.energy can run on here (cpu, or cuda[:N] with CUDA available)."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; give cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return text
    if device.type != "cuda":
        raise argparse.ArgumentTypeError(f"device {text!r} is not supported here; give cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: CUDA is not available on this machine; use cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(
            f"{text}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seeds",
        type=int_at_least(1),
        default=10,
        help="RBM fits per model, seeds 0..N-1; the spreads need 2 or more (default: 10)",
    )
    parser.add_argument(
        "--out",
        type=folder,
        default="runs/bench-energy",
        help="folder for the Hopfield and Ising figures (default: runs/bench-energy in the current folder)",
    )
    parser.add_argument(
        "--device",
        type=torch_device,
        default="cpu",
        help="torch device of rnnkit's models: cpu, or cuda / cuda:N where CUDA is available (default: cpu)",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=PARTS,
        help=f"parts to leave out, from {' '.join(PARTS)} (default: none)",
    )
    add_no_write(parser, "energy")
    args = parser.parse_args()
    partial = f"--skip {' '.join(args.skip)}" if args.skip else None  # (a part of the section: not written)
    check_results(parser, args, partial)
    if set(PARTS) <= set(args.skip):
        parser.error(f"--skip {' '.join(args.skip)} leaves nothing to run")
    if "rbm" not in args.skip:
        lacking = [
            name for name in ("sklearn", "scipy", "threadpoolctl") if importlib.util.find_spec(name) is None
        ]
        if lacking:
            parser.error(f"the RBM part needs {', '.join(lacking)}; install scikit-learn, or give --skip rbm")
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} is a file; give a folder")
    if {"hopfield", "ising"} - set(args.skip):  # only they write figures
        out_folder(parser, out)
    sections = [f"## Energy models: {machine_line()}, device {args.device}"]
    if "rbm" not in args.skip:
        sections.append(bench_rbm(args.seeds, args.device))
    if "hopfield" not in args.skip:
        sections.append(bench_hopfield(out, args.device))
    if "ising" not in args.skip:
        sections.append(bench_ising(out, args.device))
    print("\n\n".join(sections), flush=True)  # first: a write that fails loses no table
    if not args.no_write:
        update_results("energy", "\n\n".join(sections), partial)


if __name__ == "__main__":
    run_main(main)
