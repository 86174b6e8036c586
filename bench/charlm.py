"""Character language models on Tiny Shakespeare: validation nats/char against wall time.

    .venv/bin/python bench/charlm.py [--budget 3] [--preset-budget 20] [--only lstm,torch_lstm]
    .venv/bin/python bench/charlm.py --report-only      # rebuild the section from the runs in --out

nanoGPT's split (first 90% train, last 10% val). Every model is trained by the same loop
(rnnkit.train.loop.train) with identical settings; "torch.nn LSTM" is the same CharLM with its
recurrent module swapped for torch.nn.LSTM(batch_first=True). Wall time is training time
(validation excluded). Then the `shakespeare` preset for its own budget, and sampling speed
(chars/s at batch 1, one character per call) of the `char-rnn` preset model.
One torch thread throughout: the machine's 2 cores are shared with other jobs, and two spinning
OpenMP threads on a busy machine ran 5-10x slower than one in our measurements.
Data: RNNKIT_DATA or ../shared/data (tinyshakespeare.txt).
"""

import argparse
import contextlib
import json
import math
import os
import pathlib
import statistics
import sys
import time

import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's rnnkit (before _results imports it), not an installed one

from _results import (  # noqa: E402
    add_no_write,
    check_results,
    finite_float,
    folder,
    machine_line,
    markdown_table,
    name_list,
    out_folder,
    plural,
    run_main,
    update_results,
)

from rnnkit.errors import RnnkitError  # noqa: E402
from rnnkit.models.charlm import CharLM  # noqa: E402
from rnnkit.presets import PRESETS  # noqa: E402
from rnnkit.train.config import RunConfig  # noqa: E402
from rnnkit.train.loop import _locked, check_out, load_data, train  # noqa: E402
from rnnkit.train.metrics import read_metrics  # noqa: E402

# (RNNKIT_DATA empty is unset, as rnnkit's corpus reader takes it)
DATA = pathlib.Path(os.environ.get("RNNKIT_DATA") or ROOT.parent / "shared" / "data")
THRESHOLDS = [2.2, 2.0, 1.9, 1.8, 1.7, 1.6, 1.5]
THREADS = 1  # torch threads of every run (see above)
# sampling speed: best of SAMPLE_ROUNDS interleaved rounds of SAMPLE_CHARS characters
SAMPLE_CHARS, SAMPLE_ROUNDS = 1000, 5
# the settings of the --budget runs: one layer, embedding input, Adam; the same for every model
BUDGET_CONFIG = {
    "data": {"corpus": "shakespeare", "seq_len": 64, "batch_size": 32, "val_frac": 0.1},
    "model": {"hidden_size": 384, "num_layers": 1, "embedding_size": 48, "dropout": 0.0},
    "train": {"optimizer": "adam", "lr": 4e-3, "clip_norm": 1.0, "clip_value": 0.0, "max_epochs": 0,
              "eval_every": 100, "sample_every": 0, "seed": 1337, "threads": THREADS},
}  # fmt: skip
MODELS = {  # name -> (cell, torch_rnn)
    "lstm": ("lstm", False), "gru": ("gru", False), "rnn_tanh": ("rnn_tanh", False), "torch_lstm": ("lstm", True),
}  # fmt: skip
LABELS = {"lstm": "rnnkit LSTM", "gru": "rnnkit GRU", "rnn_tanh": "rnnkit tanh RNN", "torch_lstm": "torch.nn LSTM",
          "preset": "`shakespeare` preset (rnnkit LSTM 1x512)"}  # fmt: skip


def run_config(name, budget) -> RunConfig:
    """The config of model `name`'s run ("preset": the shakespeare preset) for `budget` minutes."""
    if name == "preset":
        cfg = RunConfig.from_dict(PRESETS["shakespeare"])
        cfg.train.threads = THREADS
    else:
        cfg = RunConfig.from_dict(BUDGET_CONFIG)
        cfg.model.cell, cfg.model.torch_rnn = MODELS[name]
    cfg.data.data_dir, cfg.train.time_budget = str(DATA), budget
    return cfg


def run_model(name, budget, out):
    finished(train(run_config(name, budget), out / name, force=True), out / name)
    return read_metrics(out / name / "metrics.csv")


def finished(status: int, run: pathlib.Path) -> None:
    """Stop the benchmark where train returned after Ctrl-C (130) or SIGTERM (143): it went on to the next model's
    whole budget, and then wrote the run cut short into RESULTS.md as if it had trained its budget."""
    if status:
        print(f"charlm.py: stopped during the run in {run}; RESULTS.md has no table of it", file=sys.stderr)
        sys.exit(status)


def time_to(points, threshold):
    return next((t for t, v in points if v <= threshold), None)


def val_text(v: float) -> str:
    """v to 3 decimals, or more where 3 round it down onto a threshold it is above (2.0004, not 2.000 beside 's to 2.0'
    '-')."""
    for digits in range(3, 10):
        text = f"{v:.{digits}f}"
        if not any(float(text) <= t < v for t in THRESHOLDS):
            return text
    return repr(v)


def sampling_speeds(n=SAMPLE_CHARS, rounds=SAMPLE_ROUNDS) -> dict:
    """chars/s of `model.sample` at batch 1, one character per call; best of interleaved rounds."""
    models = {}
    for name, torch_rnn in [("rnnkit", False), ("torch.nn", True)]:
        cfg = RunConfig.from_dict(PRESETS["char-rnn"])
        cfg.model.vocab_size, cfg.model.torch_rnn = 65, torch_rnn
        torch.manual_seed(0)
        models[name] = CharLM(cfg.model).eval()
        models[name].sample([0], 50)  # warm up
    best = dict.fromkeys(models, 0.0)
    for _ in range(rounds):  # interleaved, so that a busy moment on the shared machine hits both
        for name, model in models.items():
            t = time.perf_counter()
            model.sample([0], n, generator=torch.Generator().manual_seed(0))
            best[name] = max(best[name], n / (time.perf_counter() - t))
    return best


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--budget",
        type=finite_float(0, strict=True),  # 0 would mean no time limit at all (the trainer's convention)
        default=3.0,
        help="training minutes per model, > 0 (default: 3)",
    )
    p.add_argument(
        "--preset-budget",
        type=finite_float(0, strict=False),
        default=20.0,
        help="training minutes of the shakespeare preset model; 0 = skip it (default: 20)",
    )
    p.add_argument(
        "--only",
        type=name_list(MODELS),
        default=list(MODELS),
        help=f"comma-separated models to train, from {','.join(MODELS)} (default: all four)",
    )
    p.add_argument(
        "--out",
        type=folder,
        default=str(ROOT / "runs" / "bench-charlm"),
        help="folder of the runs, one subfolder per model (and preset/); runs already there are replaced "
        "(default: runs/bench-charlm in the repository)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rebuild the table from the runs in --out (their budgets are read from them; "
        "--preset-budget 0 leaves the preset out) (default: off)",
    )
    p.add_argument(
        "--note",
        default="",
        help="a sentence added under the table, e.g. which runs were repeated (default: none)",
    )
    add_no_write(p, "charlm")
    args = p.parse_args()
    check_results(p, args, partial_run(args))
    out = pathlib.Path(args.out)
    names = [*args.only, *(["preset"] if args.preset_budget else [])]
    if out.exists() and not out.is_dir():
        p.error(f"--out {out} is a file; give a folder")
    if args.report_only:
        missing = [name for name in names if not (out / name / "metrics.csv").is_file()]
        if missing:
            p.error(
                f"--report-only: no runs of {', '.join(missing)} in {out}; run without --report-only first"
                + (" (or give --preset-budget 0)" if "preset" in missing else "")
            )
    else:
        if not (DATA / "tinyshakespeare.txt").is_file():
            p.error(f"no {DATA / 'tinyshakespeare.txt'}; set RNNKIT_DATA to the folder holding it")
        try:
            for name in names:
                check_out(out / name, resume=False, force=True)
            # the corpus as the runs read it (an empty or cut tinyshakespeare.txt): the runs' traceback came after the
            # sampling timing, or after the four models where the preset's windows did not fit
            for name in (
                ["lstm", "preset"] if args.preset_budget else ["lstm"]
            ):  # (the four models read it alike)
                load_data(run_config(name, 1.0), dry_run=False)
        except RnnkitError as e:
            p.error(str(e))
        out_folder(p, out)
    with holding(p, out):
        torch.set_num_threads(THREADS)
        speeds = sampling_speeds()
        for name in args.only:
            if not args.report_only:
                run_model(name, args.budget, out)
        # printed now; written with the preset's row: a section written now and the preset stopped (Ctrl-C) or
        # failed had no preset row, the one there from the run before lost
        report(out, args.only, speeds, args, write=not args.preset_budget)
        if args.preset_budget:
            if not args.report_only:
                run_model("preset", args.preset_budget, out)
            report(out, [*args.only, "preset"], speeds, args)


@contextlib.contextmanager
def holding(p, out: pathlib.Path):
    """train's flock on the --out folder while the benchmark runs (train locks only the run it trains). A second
    charlm.py in the same folder (started twice, or a --report-only beside a run) timed its sampling and then failed in
    a traceback at a run the first one was training ('RnnkitError: another run is writing to ...'), or, where that
    run was done, replaced it with its own, the first one's table then read from it; it stops in one line."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(_locked(out, f"another charlm.py is running in {out}; wait for it to end, or give "
                                             "another --out"))  # fmt: skip
        except RnnkitError as e:
            p.error(str(e))
        yield


def partial_run(args) -> str | None:
    """The options that run part of the section's table (update_results's `partial`), or None."""
    left_out = [] if set(args.only) == set(MODELS) else [f"--only {','.join(args.only)}"]
    left_out += [] if args.preset_budget else ["--preset-budget 0"]
    return " ".join(left_out) or None


def summary(metrics):
    """Validation points (training seconds, nats/char), the median training speed, and the seconds trained."""
    rows = read_metrics(metrics)
    speeds = [float(r["chars_per_s"]) for r in rows if r["chars_per_s"]]
    speed = statistics.median(speeds) if speeds else math.nan  # (an even count: the mean of the middle two)
    trained = float(rows[-1]["wall_s"]) if rows else 0.0
    return [(float(r["wall_s"]), float(r["val_loss"])) for r in rows if r["val_loss"]], speed, trained


def preset_sample(run) -> str:
    """A sample from the preset model, and deck 004's sentence pair scored under it."""
    from rnnkit.cli.charlm import load_model, score_text

    model, chars = load_model(run)
    ids = model.sample([chars.index("\n")], 600, temperature=0.8, generator=torch.Generator().manual_seed(0))
    pair = ["Colorless green ideas sleep furiously", "Furiously sleep ideas green colorless"]
    scores = [score_text(model, chars, t) for t in pair]
    lines = [
        f"- {s['text']!r}: log p = {s['log_prob']:.2f} nats ({s['nats_per_char']:.3f} nats/char)"
        for s in scores
    ]
    return (
        "\n".join(lines)
        + "\n\nSample (temperature 0.8, seed 0):\n\n```\n"
        + "".join(chars[i] for i in ids)
        + "\n```\n"
    )


def run_settings(run: pathlib.Path) -> dict:
    """The `train` part of a run's config.json (its time budget and threads); {} if there is none."""
    try:
        return json.loads((run / "config.json").read_text())["train"]
    except (OSError, ValueError, KeyError):
        return {}


def listing(items) -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def notes(names, args) -> str:
    """What the table's columns mean and how the runs went: worded from this run's options."""
    text = (
        f"The runs are sequential, on a {os.cpu_count()}-core machine that may be shared with other jobs, so "
        "throughput can vary within and between runs; the median chars/s column shows what each run got. "
    )
    if not args.report_only:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        text += f"Load average at the end of the training (1, 5, 15 min): {load}. "
    every = f"every {BUDGET_CONFIG['train']['eval_every']} steps"
    if "preset" in names:
        every += f"; {PRESETS['shakespeare']['train']['eval_every']} for the preset"
    return text + (
        f"'s to X' = training seconds at the first validation ({every}) with val <= X. "
        f"Sampling: best of {SAMPLE_ROUNDS} interleaved rounds of {SAMPLE_CHARS:,} characters."
    )


def report(out, names, speeds, args, write=True) -> str:
    """The section's Markdown, printed, then written into RESULTS.md (if `write`, and not --no-write)."""
    header = [
        "model",
        "budget (min)",
        "train chars/s (median)",
        "final val nats/char",
        "best val",
        "bits/char",
    ]
    header += [f"s to {t}" for t in THRESHOLDS]
    rows, budgets, threads = [], {}, set()
    for name in names:
        points, speed, trained = summary(out / name / "metrics.csv")
        settings = run_settings(out / name)  # what the run used (with --report-only, maybe other options)
        budget = settings.get("time_budget", args.preset_budget if name == "preset" else args.budget)
        budgets[name] = budget
        # a run ends at the first step at or past its budget: one short of it was stopped (Ctrl-C, killed)
        stopped = f" (stopped at {trained / 60:.2g})" if trained < budget * 60 else ""
        threads.add(settings.get("threads", THREADS))
        best = min((v for _, v in points), default=math.nan)
        times = [time_to(points, t) for t in THRESHOLDS]
        rows.append([LABELS[name], f"{budget:g}{stopped}", f"{speed:,.0f}" if speed == speed else "-",
                     val_text(points[-1][1]) if points else "-", val_text(best) if points else "-",
                     f"{best / math.log(2):.3f}" if points else "-"]
                    + [f"{t:.0f}" if t is not None else "-" for t in times])  # fmt: skip
    models = [name for name in names if name != "preset"]
    which = "all four models" if sorted(models) == sorted(MODELS) else listing(LABELS[n] for n in models)
    minutes = {budgets[n] for n in models}
    settings = (
        f"{min(minutes):g}-minute settings ({which})"
        if len(minutes) == 1
        else f"Settings of {which} (training minutes in the budget column)"
    )
    thread_text = " or ".join(plural(n, "torch thread") for n in sorted(threads))
    md = "## Character language model (bench/charlm.py)\n\n" + machine_line() + "\n\n"
    md += f"Tiny Shakespeare, first 90% train / last 10% val; wall time = training seconds (validation excluded); {thread_text}.\n"
    md += f"{settings}: `{BUDGET_CONFIG}`\n\n"
    md += (
        notes(names, args)
        + "\n\n"
        + markdown_table(header, rows)
        + "\n\n"
        + (args.note + "\n\n" if args.note else "")
    )
    md += markdown_table(["sampling, char-rnn preset (2x128 LSTM), batch 1", "chars/s"],
                         [[k, f"{v:,.0f}"] for k, v in speeds.items()]) + "\n"  # fmt: skip
    if "preset" in names and (out / "preset" / "best.pt").is_file():
        md += "\n`shakespeare` preset model:\n\n" + preset_sample(out / "preset")
    print(md, flush=True)  # first: a write that fails loses no table
    # (--preset-budget 0: the section's preset row and sample, not run, would be lost)
    if write and not args.no_write:
        update_results("charlm", md, partial_run(args))
    return md


if __name__ == "__main__":
    run_main(main)
