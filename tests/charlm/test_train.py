import dataclasses
import json
import math
import os
import re
import shutil
import signal
import zipfile
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnnkit.errors import RnnkitError
from rnnkit.train import checkpoint as ckpt_mod
from rnnkit.train.checkpoint import load_checkpoint, save_checkpoint
from rnnkit.train.config import RunConfig
from rnnkit.train.loop import train
from rnnkit.train.metrics import read_metrics


def tiny_config(corpus, **train):
    cfg = RunConfig.from_dict({
        "data": {"corpus": str(corpus), "seq_len": 16, "batch_size": 8, "val_frac": 0.1},
        "model": {"cell": "lstm", "hidden_size": 32, "num_layers": 1, "embedding_size": 16},
        "train": {"optimizer": "adam", "lr": 1e-2, "clip_norm": 1.0, "clip_value": 0.0, "max_epochs": 0,
                  "eval_every": 20, "sample_every": 0, "seed": 7, **train},
    })  # fmt: skip
    return cfg


def test_learning_loss_falls_from_ln_v(tmp_path, corpus):
    assert train(tiny_config(corpus, max_steps=120), tmp_path / "run", log=lambda s: None) == 0
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    V = len(set(corpus.read_text()))
    first, last_val = float(rows[0]["train_loss"]), float(rows[-1]["val_loss"])
    assert abs(first - math.log(V)) < 0.3  # starts near ln V (uniform guess)
    assert last_val < 0.5 * math.log(V)  # and learns the pangrams well below it
    for name in ["config.json", "vocab.json", "metrics.csv", "loss.png", "latest.pt", "best.pt"]:
        assert (tmp_path / "run" / name).is_file()


def test_the_loss_plot_says_its_time_axis_is_training_time(tmp_path, monkeypatch):
    """loss.png's second panel was labelled 'wall time (s)' over wall_s, the seconds of the steps alone (validation,
    samples and checkpoints not counted): a run of 2 s by the clock was drawn as 0.08 s of 'wall time'."""
    from rnnkit.train import metrics

    figures = []
    monkeypatch.setattr(metrics, "save_figure", lambda fig, path, dpi: figures.append(fig))
    rows = [{"step": "1", "wall_s": "0.5", "train_loss": "3", "val_loss": ""},
            {"step": "2", "wall_s": "0.9", "train_loss": "2.5", "val_loss": "2.7"}]  # fmt: skip
    metrics.plot_losses(rows, tmp_path / "loss.png")
    by_step, by_time = figures[0].axes
    assert by_step.get_xlabel() == "step" and by_step.get_ylabel() == "loss (nats/char)"
    assert by_time.get_xlabel() == "training time (s)"
    assert [list(line.get_xdata()) for line in by_time.get_lines()] == [[0.5, 0.9], [0.9]]


def test_a_loss_plot_of_one_train_loss_marks_its_point(tmp_path, monkeypatch):
    """`rnnkit train --max-steps 1 --val-frac 0` drew loss.png with a legend and no mark: one train loss, drawn as a
    line of one point, which draws nothing."""
    from rnnkit.train import metrics

    figures = []
    monkeypatch.setattr(metrics, "save_figure", lambda fig, path, dpi: figures.append(fig))
    metrics.plot_losses(
        [{"step": "1", "wall_s": "0.21", "train_loss": "2.84", "val_loss": ""}], tmp_path / "a.png"
    )
    two = [{"step": str(s), "wall_s": str(s / 10), "train_loss": "2.84", "val_loss": ""} for s in (1, 2)]
    metrics.plot_losses(two, tmp_path / "b.png")
    for ax, x in zip(figures[0].axes, (1, 0.21)):
        (line,) = ax.get_lines()
        assert list(line.get_xdata()) == [x] and list(line.get_ydata()) == [2.84] and line.get_marker() == "o"
    assert [line.get_marker() for ax in figures[1].axes for line in ax.get_lines()] == [
        "None",
        "None",
    ]  # as before


def test_a_loss_plot_without_training_times_says_so_in_their_panel(tmp_path, monkeypatch):
    """A loop of one's own that writes step and train_loss only drew an empty 'training time (s)' panel about 0,
    its ticks -0.04 to 0.04 s, as if the times were there and nothing was drawn. The panel now says why it is empty."""
    from rnnkit.train import metrics

    figures = []
    monkeypatch.setattr(metrics, "save_figure", lambda fig, path, dpi: figures.append(fig))
    rows = [{"step": str(s), "wall_s": "", "train_loss": str(2 / s), "val_loss": ""} for s in range(1, 20)]
    metrics.plot_losses(rows, tmp_path / "a.png")
    rows[5]["wall_s"] = "0.3"  # one time: drawn, as before
    metrics.plot_losses(rows, tmp_path / "b.png")
    (by_step, by_time), (_, by_time_b) = figures[0].axes, figures[1].axes
    assert list(by_step.get_lines()[0].get_xdata()) == list(range(1, 20))  # the steps' panel as before
    assert [t.get_text() for t in by_time.texts] == ["no training time (wall_s) in metrics.csv"]
    assert list(by_time.get_xticks()) == []
    assert list(by_time_b.texts) == [] and len(by_time_b.get_xticks()) > 0


def test_a_loss_plot_with_training_times_on_some_rows_draws_them(tmp_path, monkeypatch):
    """metrics.csv with wall_s on some rows only (a loop of one's own timing every other step, or one) drew an empty
    'training time (s)' panel under ticks 0.25 to 1.75 s: each row was drawn against its wall_s, NaN where it had
    none, and a line breaks at NaN, so that no point between two NaN was drawn. The time panel now draws the rows
    with a wall_s (joined; one of them marked), the steps' panel every row as before."""
    from rnnkit.train import metrics

    figures = []
    monkeypatch.setattr(metrics, "save_figure", lambda fig, path, dpi: figures.append(fig))
    rows = [
        {"step": str(s), "wall_s": f"{s / 10}" if s % 2 else "", "train_loss": str(2 / s), "val_loss": ""}
        for s in range(1, 20)
    ]
    rows[4]["val_loss"], rows[5]["val_loss"] = "1.5", "1.4"  # (steps 5, timed, and 6, not)
    metrics.plot_losses(rows, tmp_path / "a.png")
    for row in rows[1:]:
        row["wall_s"] = ""  # the first row's time alone
    metrics.plot_losses(rows, tmp_path / "b.png")
    (by_step, by_time), (_, by_time_b) = figures[0].axes, figures[1].axes
    train, val = by_time.get_lines()
    assert list(train.get_xdata()) == pytest.approx([s / 10 for s in range(1, 20, 2)])
    assert list(train.get_ydata()) == pytest.approx([2 / s for s in range(1, 20, 2)])
    assert list(val.get_xdata()) == [0.5] and list(val.get_ydata()) == [1.5] and val.get_marker() == "o"
    assert list(by_step.get_lines()[0].get_xdata()) == list(range(1, 20))  # every row by step
    assert list(by_step.get_lines()[1].get_xdata()) == [5, 6]
    (train_b,) = by_time_b.get_lines()
    assert list(train_b.get_xdata()) == [0.1] and train_b.get_marker() == "o"  # one point: marked


def test_the_loss_plot_ticks_whole_steps(tmp_path, monkeypatch):
    """A loss.png of one step (or a few) ticked its step axis 0.96, 0.98, 1.00, 1.02, 1.04: steps that do not
    exist. The steps' ticks are whole numbers, where a run's were already (0 to 60 by 10: the same)."""
    from rnnkit.train import metrics

    figures, save = [], metrics.save_figure
    monkeypatch.setattr(
        metrics, "save_figure", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k)
    )
    for steps in (1, 3, 60):
        rows = [
            {"step": str(s), "wall_s": str(s / 10), "train_loss": "2.8", "val_loss": ""}
            for s in range(1, steps + 1)
        ]
        metrics.plot_losses(rows, tmp_path / "loss.png")
    ticks = [[t for t in fig.axes[0].get_xticks() if fig.axes[0].get_xlim()[0] <= t <= fig.axes[0].get_xlim()[1]]
             for fig in figures]  # fmt: skip
    assert ticks == [[1], [1, 2, 3], [0, 10, 20, 30, 40, 50, 60]]


def test_the_bars_speed_is_the_mean_of_the_last_steps(tmp_path, corpus, monkeypatch):
    """The bar's chars_s was the speed of the one step before its refresh: steps of 1 ms and 10 ms in turn showed
    128,000 or 12,800 chars/s for a run at 23,273 (one run's steps ranged 9,400 to 262,281 about a mean of 97,772).
    It is the mean over the last SPEED_STEPS steps; metrics.csv keeps each step's own speed."""
    import tqdm as tqdm_module

    from rnnkit.train import loop

    shown = []

    class Bar(tqdm_module.tqdm):
        def set_postfix(self, *args, **kwargs):
            shown.append(kwargs.get("chars_s"))
            return super().set_postfix(*args, **kwargs)

    class Clock:  # each step reads it twice: at its start, and at its end 0.2 s or 2 s later
        def __init__(self):
            self.now, self.reads = 0.0, 0

        def perf_counter(self):
            self.reads += 1
            if self.reads % 2 == 0:
                self.now += 0.2 if self.reads % 4 == 2 else 2.0
            return self.now

        def process_time(self):  # (read for a step the process was stopped in: none here)
            return 0.0

    monkeypatch.setattr(loop, "tqdm", Bar)
    monkeypatch.setattr(loop, "time", Clock())
    assert train(tiny_config(corpus, max_steps=6), tmp_path / "run", log=lambda s: None) == 0
    per_step = [float(r["chars_per_s"]) for r in read_metrics(tmp_path / "run" / "metrics.csv")]
    assert per_step == pytest.approx([640, 64] * 3)  # 8 streams of 16 characters a step
    assert shown[0] == "640" and shown[1:] == ["116", "160", "116", "139", "116"]


def test_the_done_line_gives_the_runs_training_time(tmp_path, corpus):
    """The last line rounded the seconds of training to whole ones: a short run was 'done: 3 steps in 0 s'. It
    gives them to 3 digits, the wall_s of metrics.csv's last row, said to be training's ('200 steps in 0.348 s' read
    as the run's time where its bar showed 2 s: validation, checkpoints and the plot are not in it); and its best val
    is the lowest val_loss there."""
    lines = []
    assert train(tiny_config(corpus, max_steps=3, eval_every=2), tmp_path / "run", log=lines.append) == 0
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    done = re.fullmatch(r"done: (\d+) steps in (\S+) s of training; best val (\S+) nats/char .*", lines[-1])
    assert int(done[1]) == 3 == int(rows[-1]["step"])
    assert float(done[2]) == pytest.approx(float(rows[-1]["wall_s"]), rel=0.01)
    assert float(done[3]) == pytest.approx(min(float(r["val_loss"]) for r in rows if r["val_loss"]), abs=1e-4)


def test_a_run_without_stderr_trains_without_its_bar(tmp_path, corpus, monkeypatch):
    """Started with stderr closed (`rnnkit train ... 2>&-`, pythonw: sys.stderr is None), the run stopped at its
    first step in tqdm's "AttributeError: 'NoneType' object has no attribute 'write'", exit 1 and nothing said (the
    traceback had nowhere to go either). The bar is left out; the run trains and logs as ever."""
    monkeypatch.setattr("sys.stderr", None)
    lines = []
    assert train(tiny_config(corpus, max_steps=3, eval_every=2), tmp_path / "run", log=lines.append) == 0
    assert lines[-1].startswith("done: 3 steps") and len(read_metrics(tmp_path / "run" / "metrics.csv")) == 3


def test_the_bar_in_a_log_is_whole_lines(tmp_path, corpus, capsys):
    """With stderr no terminal (`rnnkit train ... 2> log.txt`, `| tee`; capsys here) the bar's updates, twice a
    second, were written as '\\r' and the bar again: the log held them run together on one line. It holds whole
    lines, the bar's start and end (and one every LOG_EVERY seconds between)."""
    assert train(tiny_config(corpus, max_steps=3, eval_every=2), tmp_path / "run", log=lambda s: None) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and err.endswith("\n"), err
    assert "0/3 [" in err.splitlines()[0] and "3/3 [" in err.splitlines()[-1], err


def test_resuming_a_finished_run_whose_metrics_lost_their_rows_draws_no_warning(tmp_path, corpus, capsys):
    """A finished run whose metrics.csv kept only its header (its rows cut or damaged) drew its loss.png again on
    --resume with an empty legend: matplotlib's 'No artists with labels found to put in legend' warning (an error
    under -W error). The empty plot is drawn without it."""
    run = tmp_path / "run"
    assert train(tiny_config(corpus, max_steps=2, eval_every=2), run, log=lambda s: None) == 0
    header = (run / "metrics.csv").read_text().splitlines()[0]
    (run / "metrics.csv").write_text(header + "\n")
    os.utime(run / "loss.png", (0, 0))  # older than metrics.csv: drawn again
    lines = []
    assert train(tiny_config(corpus, max_steps=2, eval_every=2), run, resume=True, log=lines.append) == 0
    assert "already at step 2" in lines[-1] and os.stat(run / "loss.png").st_mtime > 0


def test_resume_equals_uninterrupted(tmp_path, corpus):
    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=30, eval_every=10)
    cfg.model.dropout = 0.1  # the random state must be restored too
    train(cfg, tmp_path / "whole", log=quiet)
    cfg.train.max_steps = 20
    train(cfg, tmp_path / "split", log=quiet)
    cfg.train.max_steps = 30
    train(cfg, tmp_path / "split", resume=True, log=quiet)
    whole, split = (
        read_metrics(tmp_path / "whole" / "metrics.csv"),
        read_metrics(tmp_path / "split" / "metrics.csv"),
    )
    assert [r["step"] for r in split] == [str(s) for s in range(1, 31)]
    assert [r["train_loss"] for r in whole] == [r["train_loss"] for r in split]
    assert [r["val_loss"] for r in whole] == [r["val_loss"] for r in split]


def test_resume_of_a_torch_rnn_gru_equals_uninterrupted(tmp_path, corpus):
    """A GRU's carried state is one tensor, an LSTM's two (h, c): latest.pt's carry of one is put back as the tensor
    itself, which torch.nn.GRU takes (a 1-tuple of it: "'tuple' object has no attribute 'dim'" at the first step)."""
    cfg = tiny_config(corpus, max_steps=10, eval_every=5)
    cfg.model.cell, cfg.model.torch_rnn = "gru", True
    train(cfg, tmp_path / "whole", log=lambda s: None)
    cfg.train.max_steps = 5
    train(cfg, tmp_path / "split", log=lambda s: None)
    cfg.train.max_steps = 10
    train(cfg, tmp_path / "split", resume=True, log=lambda s: None)
    whole, split = (read_metrics(tmp_path / run / "metrics.csv") for run in ("whole", "split"))
    assert [r["train_loss"] for r in split] == [r["train_loss"] for r in whole] and len(whole) == 10


def test_the_metrics_val_bpc_is_the_validation_loss_in_bits_per_character(tmp_path, corpus):
    """metrics.csv's val_bpc is val_loss / ln 2 (nats to bits); no test read the column: val_loss · ln 2 passed."""
    train(tiny_config(corpus, max_steps=2, eval_every=2), tmp_path / "run", log=lambda s: None)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.csv") if r["val_loss"]]
    assert rows
    for r in rows:  # (written to 6 significant digits)
        assert float(r["val_bpc"]) == pytest.approx(float(r["val_loss"]) / math.log(2), rel=1e-5)


def test_an_output_closed_at_a_validation_line_keeps_the_steps_up_to_it(tmp_path, corpus):
    """`rnnkit train ... | head` (a pager quit): the BrokenPipeError of the validation line at step 10 stopped the run
    before that step's checkpoint, latest.pt left at step 0 and the 10 steps lost ('continue with --resume' went on
    from step 0). The step is finished and saved, then the error raised; a resume goes on as an uninterrupted run."""
    quiet = lambda s: None  # noqa: E731

    def closed(line):
        if line.startswith("step "):  # the validation line; the header before it is written
            raise BrokenPipeError(32, "Broken pipe")

    cfg = tiny_config(corpus, max_steps=15, eval_every=10)
    train(cfg, tmp_path / "whole", log=quiet)
    with pytest.raises(BrokenPipeError):
        train(cfg, tmp_path / "run", log=closed)
    assert torch.load(tmp_path / "run" / "latest.pt", weights_only=True)["progress"]["step"] == 10
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.csv")] == [
        str(s) for s in range(1, 11)
    ]
    assert train(cfg, tmp_path / "run", resume=True, log=quiet) == 0
    whole, run = (read_metrics(tmp_path / name / "metrics.csv") for name in ("whole", "run"))
    assert [r["train_loss"] for r in whole] == [r["train_loss"] for r in run]


def test_a_bar_whose_stream_is_closed_mid_interval_keeps_the_steps_up_to_it(tmp_path, corpus, monkeypatch):
    """`rnnkit train ... 2>&1 | head` (a `| tee log` that ended): the bar's write raised BrokenPipeError inside step 6's
    update, after its optimizer step, and the run stopped with latest.pt at step 0. The step is finished and saved,
    then the error raised; a resume goes on as an uninterrupted run."""
    import io
    import sys

    from rnnkit import _io

    class Closed(io.TextIOBase):
        writes = 0

        def write(self, s):
            Closed.writes += 1
            if Closed.writes > 6:  # the bar's start and its first steps, in a line a step (LOG_EVERY 0)
                raise BrokenPipeError(32, "Broken pipe")
            return len(s)

    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=15, eval_every=10)
    train(cfg, tmp_path / "whole", log=quiet)
    monkeypatch.setattr(_io, "LOG_EVERY", 0.0)
    monkeypatch.setattr(sys, "stderr", Closed())
    with pytest.raises(BrokenPipeError):
        train(cfg, tmp_path / "run", log=quiet)
    monkeypatch.undo()
    step = torch.load(tmp_path / "run" / "latest.pt", weights_only=True)["progress"]["step"]
    assert 0 < step < 10 and len(read_metrics(tmp_path / "run" / "metrics.csv")) == step
    assert train(cfg, tmp_path / "run", resume=True, log=quiet) == 0
    whole, run = (read_metrics(tmp_path / name / "metrics.csv") for name in ("whole", "run"))
    assert [r["train_loss"] for r in whole] == [r["train_loss"] for r in run]


def test_resume_from_python_takes_the_given_lr_and_refuses_other_windows(tmp_path, corpus):
    """train()'s docstring: from Python, resume=True goes on with the lr (and other training settings) of the cfg
    given, and writes them to config.json; the windows (and cell, sizes, optimizer) must be the run's."""
    run, quiet = tmp_path / "run", (lambda s: None)
    assert train(tiny_config(corpus, max_steps=2, eval_every=2), run, log=quiet) == 0
    assert train(tiny_config(corpus, max_steps=4, eval_every=2, lr=1e-3), run, resume=True, log=quiet) == 0
    assert [float(r["lr"]) for r in read_metrics(run / "metrics.csv")] == [1e-2, 1e-2, 1e-3, 1e-3]
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 1e-3
    cfg = tiny_config(corpus, max_steps=6)
    cfg.data.seq_len = 8
    with pytest.raises(RnnkitError, match="cannot resume .* with seq_len 8: the run was trained with 16"):
        train(cfg, run, resume=True, log=quiet)


def test_resume_from_python_steps_with_the_given_weight_decay(tmp_path, corpus):
    """A resume from Python with another weight_decay wrote it to config.json and stepped with the run's old one, which
    the optimizer's state in latest.pt carried (load_state_dict takes a group's settings from the file; only the lr
    was set anew at each step). The optimizer's settings are the cfg's now, its moments the file's."""
    run, quiet = tmp_path / "run", (lambda s: None)
    assert train(tiny_config(corpus, max_steps=2, weight_decay=0.5), run, log=quiet) == 0
    assert train(tiny_config(corpus, max_steps=3, weight_decay=0.0), run, resume=True, log=quiet) == 0
    assert json.loads((run / "config.json").read_text())["train"]["weight_decay"] == 0.0
    assert load_checkpoint(run / "latest.pt")["optimizer"]["param_groups"][0]["weight_decay"] == 0.0


def test_resume_of_a_run_at_its_limit_says_so(tmp_path, corpus):
    """--resume with --max-steps at or below the run's step (or the run's own limit reached) took no step, said
    'done: 3 steps' and rewrote config.json with the lower limit, in silence: it says where the run is and what
    to pass, leaves the run as it was, and exits 0 (a restart loop resuming a finished run sees it done)."""
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    assert train(tiny_config(corpus, max_steps=3), run, log=quiet) == 0
    config = (run / "config.json").read_text()

    def resumed(**limit):
        lines = []
        assert train(tiny_config(corpus, **limit), run, resume=True, log=lines.append) == 0
        assert len(lines) == 1
        return lines[0]

    for steps in (3, 2):
        assert re.search(rf"already at step 3 \(--max-steps {steps}\): nothing to do; to train on, resume with "
                         r"--max-steps above 3 \(0: no limit\)$", resumed(max_steps=steps))  # fmt: skip
    assert (run / "config.json").read_text() == config
    assert re.search(
        r"already at step 3, epoch .* \(--max-epochs 0.01\).*--max-epochs", resumed(max_epochs=0.01)
    )
    # (its minutes trained were '0.0', a run of 3 tiny steps: in 3 significant digits now)
    said = re.search(
        r"end of its --time-budget of 1e-06 minutes \(([0-9.e-]+) trained\).*larger --time-budget",
        resumed(time_budget=1e-6),
    )
    assert said and float(said[1]) > 0, said
    assert (run / "config.json").read_text() == config
    assert train(tiny_config(corpus, max_steps=4), run, resume=True, log=quiet) == 0
    assert read_metrics(run / "metrics.csv")[-1]["step"] == "4"


def test_resume_of_a_long_run_at_its_time_budget_says_its_minutes_in_full(corpus):
    """The minutes trained went to 3 significant digits (for a budget under 6 s, once '0.0'), so a day's run read
    'the end of its --time-budget of 1440 minutes (1.44e+03 trained)'. Minutes from 1 on are said to a tenth again,
    those below in 3 significant digits."""
    from rnnkit.train.loop import Progress, _finished

    for budget, minutes, said in (
        (1440, 1440.3, "1440.3"),
        (999.9, 999.96, "1000.0"),
        (1e-6, 0.0203, "0.0203"),
    ):
        cfg = tiny_config(corpus, max_steps=0, time_budget=budget)
        line = _finished(cfg, Progress(step=3, elapsed=minutes * 60), None, "run")
        assert f"--time-budget of {budget:g} minutes ({said} trained)" in line, line


def test_out_folder_with_a_run_is_refused(tmp_path, corpus):
    train(tiny_config(corpus, max_steps=2), tmp_path / "run", log=lambda s: None)
    with pytest.raises(RnnkitError, match="already holds a run.*--resume.*--force"):
        train(tiny_config(corpus, max_steps=2), tmp_path / "run", log=lambda s: None)
    assert train(tiny_config(corpus, max_steps=2), tmp_path / "run", force=True, log=lambda s: None) == 0
    with pytest.raises(RnnkitError, match="nothing to resume"):
        train(tiny_config(corpus, max_steps=2), tmp_path / "other", resume=True, log=lambda s: None)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus):
    cfg = tiny_config(corpus, max_steps=10, eval_every=2, lr=1e30, optimizer="sgd", clip_norm=0.0)
    with pytest.raises(
        RnnkitError,
        match=r"(became nan|exploded).*last good checkpoint.*start again with --force and a lower --lr",
    ):
        train(cfg, tmp_path / "run", log=lambda s: None)
    ckpt = load_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in ckpt["model"].values())


def test_a_loss_that_blows_up_before_the_first_validation_leaves_its_loss_curve(tmp_path, corpus):
    """A run stopped by an exploding or NaN loss before its first validation left no loss.png (drawn at validations
    only), the curve of the steps up to the blow-up being what to look at; it is drawn from the rows written."""
    cfg = tiny_config(corpus, max_steps=50, eval_every=100, lr=1e30, optimizer="sgd", clip_norm=0.0)
    with pytest.raises(RnnkitError, match=r"(became nan|exploded).*last good checkpoint"):
        train(cfg, tmp_path / "run", log=lambda s: None)
    assert (tmp_path / "run" / "loss.png").is_file()


@pytest.mark.parametrize(
    "lr, val_frac, message",
    [
        (1e6, 0.1, "validation loss exploded"),  # a finite blow-up, seen at the validation after the step
        (1e39, 0.1, "validation loss became nan"),  # overflow
        (1e39, 0.0, "weights became NaN or infinite"),  # overflow with no validation: refused at the save
    ],
)
def test_an_update_that_blows_up_never_reaches_a_checkpoint(tmp_path, corpus, lr, val_frac, message):
    """The step's own update can blow the weights up after its loss was checked: the checkpoints written after
    it (at a validation, at the end of the run) must not be the blown-up weights."""
    cfg = tiny_config(corpus, max_steps=1, eval_every=1, lr=lr, optimizer="sgd", clip_norm=0.0)
    cfg.data.val_frac = val_frac
    with pytest.raises(RnnkitError, match=f"{message}.*last good checkpoint"):
        train(cfg, tmp_path / "run", log=lambda s: None)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["progress"]["step"] == 0 and not (tmp_path / "run" / "best.pt").exists()
    assert all(torch.isfinite(p).all() and p.abs().max() < 10 for p in ckpt["model"].values())


def test_overfitting_is_recorded_not_stopped_as_a_blow_up(tmp_path):
    """A validation loss over 3x the initial train loss stopped the run as 'exploded' although the train loss
    was falling (a model that learned "abcd" repeated meets a random tail): it could never finish, even with
    --resume. char-rnn's test reads the train loss; a high validation loss is recorded and best.pt kept."""
    import random

    rng = random.Random(1)
    corpus = tmp_path / "shift.txt"
    corpus.write_text("abcd" * 4750 + "".join(rng.choice("abcd") for _ in range(1000)))
    cfg = tiny_config(corpus, max_steps=300, eval_every=25, lr=0.01, clip_norm=0.0, clip_value=5.0, seed=1337)
    cfg.data.seq_len, cfg.data.val_frac, cfg.model.hidden_size, cfg.model.embedding_size = 20, 0.05, 16, 0
    assert train(cfg, tmp_path / "run", log=lambda s: None) == 0
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    vals = [float(r["val_loss"]) for r in rows if r["val_loss"]]
    assert max(vals) > 3 * float(rows[0]["train_loss"]) and float(rows[-1]["train_loss"]) < 0.1
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["progress"]["best_val"] == pytest.approx(min(vals), rel=1e-5)  # metrics.csv keeps 6 digits


@pytest.mark.parametrize("clip_norm", [0.0, 1.0])
def test_an_infinite_gradient_stops_before_the_optimizer_step(tmp_path, corpus, monkeypatch, clip_norm):
    """clip_grad_norm_ scales an inf gradient by inf/inf = NaN: every weight would become NaN."""
    from rnnkit.train import loop

    real = loop.clip_gradients

    def inf_grad(params, *args):
        params = list(params)
        params[0].grad[0] = float("inf")
        return real(params, *args)

    monkeypatch.setattr(loop, "clip_gradients", inf_grad)
    cfg = tiny_config(corpus, max_steps=3, clip_norm=clip_norm, clip_value=5.0)
    with pytest.raises(
        RnnkitError,
        match="gradient norm became inf at step 1.*last good checkpoint.*--force and a lower --lr",
    ):
        train(cfg, tmp_path / "run", log=lambda s: None)
    ckpt = load_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in ckpt["model"].values())


def _ctrl_c_at_step_5(monkeypatch):
    """A Ctrl-C (KeyboardInterrupt) in the 5th step's gradient clipping: 4 steps done."""
    from rnnkit.train import loop

    calls = {"n": 0}
    real = loop.clip_gradients

    def interrupt_at_5(*a):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(loop, "clip_gradients", interrupt_at_5)


def test_ctrl_c_saves_and_exits_cleanly(tmp_path, corpus, monkeypatch):
    _ctrl_c_at_step_5(monkeypatch)
    assert train(tiny_config(corpus, max_steps=50), tmp_path / "run", log=lambda s: None) == 130
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["progress"]["step"] == 4


def test_a_run_stopped_by_ctrl_c_before_its_first_validation_has_its_loss_curve(
    tmp_path, corpus, monkeypatch
):
    """The README says a run folder holds the loss-curve PNG; Ctrl-C (or SIGTERM, SIGHUP) at step 4 of a run that
    validates every 20 left config.json, vocab.json, metrics.csv (4 rows) and latest.pt, no loss.png: it was drawn
    at validations only. The stopped run draws the rows it wrote."""
    _ctrl_c_at_step_5(monkeypatch)
    assert train(tiny_config(corpus, max_steps=50), tmp_path / "run", log=lambda s: None) == 130
    assert (tmp_path / "run" / "loss.png").stat().st_size > 0


def test_a_dry_run_stopped_by_ctrl_c_is_not_said_to_resume(tmp_path, corpus, monkeypatch):
    """Ctrl-C in a dry run said 'interrupted at step 2; saved .../latest.pt; continue with --resume', and --resume
    then refused the dry run ('not a run to continue; start the run with --force'). The line says what to do."""
    from rnnkit.train import loop

    calls = {"n": 0}
    real = loop.clip_gradients

    def interrupt_at_3(*a):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(loop, "clip_gradients", interrupt_at_3)
    lines = []
    assert train(tiny_config(corpus, max_steps=50), tmp_path / "run", dry_run=True, log=lines.append) == 130
    assert lines[-1].startswith("interrupted at step 2 of a dry run"), lines[-1]
    assert "--resume" not in lines[-1] and "--force" in lines[-1]
    with pytest.raises(RnnkitError, match="holds a dry run"):
        train(tiny_config(corpus, max_steps=50), tmp_path / "run", resume=True, log=lines.append)


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path, corpus, monkeypatch):
    """Ctrl-C while the engine compiles (about a minute on first use) leaves config.json but no checkpoint:
    the same command then said "already holds a run; use --resume", and --resume "nothing to resume"."""
    from rnnkit.train import loop

    def interrupt():
        raise KeyboardInterrupt

    monkeypatch.setattr(loop.native, "load", interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(corpus, max_steps=2), tmp_path / "run", log=lambda s: None)
    assert (tmp_path / "run" / "config.json").is_file() and not (tmp_path / "run" / "latest.pt").exists()
    monkeypatch.undo()
    assert train(tiny_config(corpus, max_steps=2), tmp_path / "run", log=lambda s: None) == 0
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["progress"]["step"] == 2
    (tmp_path / "w2v").mkdir()  # another command's folder with a config.json is not taken for such a run
    (tmp_path / "w2v" / "config.json").write_text('{"dim": 100}')
    # it said "already holds a run; copy its best.pt to latest.pt and --resume", and --resume "nothing to resume
    # ... drop --resume": a loop of advice about a best.pt the folder never had
    for resume in (False, True):
        with pytest.raises(
            RnnkitError, match=r"holds another command's output .*; give another --out folder"
        ):
            train(tiny_config(corpus, max_steps=2), tmp_path / "w2v", resume=resume, log=lambda s: None)


def test_a_folder_with_a_best_pt_only_is_neither_written_over_nor_a_dead_end(tmp_path, corpus):
    """Without latest.pt, a run was refused as "already holds a run; use --resume", and --resume said "nothing to
    resume ... drop --resume"; without config.json, a new run wrote over the folder's best.pt."""
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    train(tiny_config(corpus, max_steps=2), run, log=quiet)
    (run / "latest.pt").unlink()
    with pytest.raises(RnnkitError, match=r"already holds a run; copy its best.pt to latest.pt and --resume"):
        train(tiny_config(corpus, max_steps=4), run, log=quiet)
    with pytest.raises(RnnkitError, match=r"nothing to resume .*; copy its best.pt to latest.pt to resume"):
        train(tiny_config(corpus, max_steps=4), run, resume=True, log=quiet)
    (run / "config.json").unlink()
    best = (run / "best.pt").read_bytes()
    with pytest.raises(RnnkitError, match="already holds a run"):
        train(tiny_config(corpus, max_steps=4), run, log=quiet)
    assert (run / "best.pt").read_bytes() == best


def _interrupted_then_resumed_equals_whole(tmp_path, corpus, monkeypatch, interrupt, code=130):
    """Stop a run at the 5th clip_gradients call with `interrupt`, resume it to 12 steps: the same weights and
    metrics as 12 steps in one go, and every step's metrics row exactly once. With dropout: an undone step has
    drawn masks already, and the random stream is put back too (the resumed run drew other masks)."""
    from rnnkit.train import loop

    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=12, eval_every=3)
    cfg.model.num_layers, cfg.model.dropout = 2, 0.3
    train(cfg, tmp_path / "whole", log=quiet)
    calls, real = {"n": 0}, loop.clip_gradients

    def stop_in_step_5(*a):
        calls["n"] += 1
        if calls["n"] == 5:
            interrupt()
        return real(*a)

    monkeypatch.setattr(loop, "clip_gradients", stop_in_step_5)
    assert train(cfg, tmp_path / "split", log=quiet) == code
    monkeypatch.setattr(loop, "clip_gradients", real)
    assert train(cfg, tmp_path / "split", resume=True, log=quiet) == 0
    whole, split = (load_checkpoint(tmp_path / name / "latest.pt")["model"] for name in ("whole", "split"))
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    rows = read_metrics(tmp_path / "split" / "metrics.csv")
    assert [r["step"] for r in rows] == [str(s) for s in range(1, 13)]
    assert [r["train_loss"] for r in rows] == [
        r["train_loss"] for r in read_metrics(tmp_path / "whole" / "metrics.csv")
    ]


def test_ctrl_c_finishes_the_step_and_resumes_exactly(tmp_path, corpus, monkeypatch):
    """A real SIGINT half-way through a step (after its forward pass): the step is finished, then the run
    stops; before, the state carried to the next window was saved with the window not yet counted."""
    import os
    import signal

    interrupt = lambda: os.kill(os.getpid(), signal.SIGINT)  # noqa: E731
    _interrupted_then_resumed_equals_whole(tmp_path, corpus, monkeypatch, interrupt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back after the run


def test_sigterm_saves_like_ctrl_c_and_resumes_exactly(tmp_path, corpus, monkeypatch):
    """SIGTERM (kill, timeout, a job scheduler, docker stop) half-way through a step: as Ctrl-C, the step is
    finished, latest.pt saved, and the run exits with 143 (128 + SIGTERM); before, the process died at once and
    every step since the last checkpoint (up to --eval-every of them) was lost. Here a SIGTERM that reached no
    handler of the run's raises instead of killing the test."""
    import os
    import signal

    from rnnkit.train import loop

    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached the handler installed before the run")

    before = signal.signal(signal.SIGTERM, unhandled)
    try:
        terminate = lambda: os.kill(os.getpid(), signal.SIGTERM)  # noqa: E731
        _interrupted_then_resumed_equals_whole(tmp_path, corpus, monkeypatch, terminate, code=143)
        assert signal.getsignal(signal.SIGTERM) is unhandled  # put back after the run
        # a process its parent told to ignore SIGTERM still does
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        monkeypatch.setattr(loop, "clip_gradients", lambda *a: (terminate(), 0.0)[1])
        assert train(tiny_config(corpus, max_steps=3), tmp_path / "ignored", log=lambda s: None) == 0
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, before)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform (Windows)")
def test_sighup_saves_like_sigterm_and_resumes_exactly(tmp_path, corpus, monkeypatch):
    """SIGHUP (the terminal closed, an ssh connection dropped) half-way through a step killed the run at once, the
    steps since the last checkpoint lost; as SIGTERM, the step is finished, latest.pt saved, exit 129."""
    import os

    def unhandled(signum, frame):
        raise AssertionError("SIGHUP reached the handler installed before the run")

    before = signal.signal(signal.SIGHUP, unhandled)
    try:
        hang_up = lambda: os.kill(os.getpid(), signal.SIGHUP)  # noqa: E731
        _interrupted_then_resumed_equals_whole(tmp_path, corpus, monkeypatch, hang_up, code=129)
        assert signal.getsignal(signal.SIGHUP) is unhandled  # put back after the run
    finally:
        signal.signal(signal.SIGHUP, before)


def test_second_ctrl_c_inside_a_step_undoes_it(tmp_path, corpus, monkeypatch):
    """A KeyboardInterrupt inside a step (a second Ctrl-C) before its optimizer step: the step is undone,
    state included, and --resume runs it again."""

    def interrupt():
        raise KeyboardInterrupt

    _interrupted_then_resumed_equals_whole(tmp_path, corpus, monkeypatch, interrupt)


def test_a_second_ctrl_c_while_the_first_ones_line_is_written_stops_the_run_saved(
    tmp_path, corpus, monkeypatch
):
    """Two SIGINTs at once (a wrapper that passes the terminal's Ctrl-C on, a script's kill -INT twice): the second
    came while the first one's handler wrote 'Ctrl-C: stopping after this step', as tqdm took its lock for the line,
    and its KeyboardInterrupt there was replaced by tqdm's clean-up, 'RuntimeError: cannot release un-acquired lock':
    a traceback, exit 1, the run stopped unsaved. Now it stops at once, as a second Ctrl-C does: the step undone,
    saved, 130, and --resume goes on as an uninterrupted run."""
    from tqdm import tqdm

    lock = tqdm.get_lock()

    class SignalledWhileTaken:  # the second SIGINT comes as tqdm takes its lock for the first one's line
        armed = False

        def acquire(self, *args, **kwargs):
            if SignalledWhileTaken.armed:
                SignalledWhileTaken.armed = False
                os.kill(os.getpid(), signal.SIGINT)
            return lock.acquire(*args, **kwargs)

        def release(self):
            lock.release()

        def __enter__(self):
            self.acquire()

        def __exit__(self, *exc):
            self.release()

    monkeypatch.setattr(tqdm, "_lock", SignalledWhileTaken())

    def twice():
        SignalledWhileTaken.armed = True
        os.kill(os.getpid(), signal.SIGINT)

    _interrupted_then_resumed_equals_whole(tmp_path, corpus, monkeypatch, twice)


def test_ctrl_c_in_the_last_step_ends_the_run_done(tmp_path, corpus, monkeypatch):
    """Ctrl-C (or SIGTERM) inside the run's last step: the step, its validation and checkpoint were done, and the
    run said 'interrupted at step 6; saved ...; continue with --resume' (exit 130), where --resume then said 'already
    at step 6 (--max-steps 6): nothing to do'. The run is done, and says so."""
    from rnnkit.train import loop

    calls = []
    real = loop.clip_gradients

    def interrupt_at_6(*a):
        calls.append(1)
        if len(calls) == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a)

    monkeypatch.setattr(loop, "clip_gradients", interrupt_at_6)
    lines = []
    assert train(tiny_config(corpus, max_steps=6), tmp_path / "run", log=lines.append) == 0
    assert lines[-1].startswith("done: 6 steps"), lines[-1]
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["progress"]["step"] == 6


@pytest.mark.skipif(not hasattr(signal, "SIGCONT"), reason="no job control on this platform (Windows)")
def test_a_step_stopped_by_ctrl_z_does_not_count_the_stop_as_training(tmp_path, corpus, monkeypatch):
    """Ctrl-Z (SIGTSTP, or SIGSTOP) inside a step and `fg` later: the step's clock counted the stop as training. A
    12 s --time-budget run stopped 15 s at step 200 ended at step 263, 'done: 263 steps in 15.8 s of training'
    (uninterrupted: 2,239 steps), its row 17 chars/s. A step the process was stopped in (a SIGCONT came) counts as
    the mean of the steps before it. Here the clock jumps an hour inside step 3 and a SIGCONT comes."""
    import time

    from rnnkit.train import loop

    clock, clip, stopped, calls = time.perf_counter, loop.clip_gradients, [0.0], []

    def stopped_an_hour_at_3(*a):
        calls.append(1)
        if len(calls) == 3:
            stopped[0] += 3600.0
            os.kill(os.getpid(), signal.SIGCONT)
        return clip(*a)

    monkeypatch.setattr(time, "perf_counter", lambda: clock() + stopped[0])
    monkeypatch.setattr(loop, "clip_gradients", stopped_an_hour_at_3)
    assert train(tiny_config(corpus, max_steps=6, time_budget=1.0), tmp_path / "run", log=lambda s: None) == 0
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert rows[-1]["step"] == "6" and float(rows[-1]["wall_s"]) < 60, rows[-1]
    assert signal.getsignal(signal.SIGCONT) is signal.SIG_DFL  # put back after the run


def test_a_second_ctrl_c_that_cuts_the_first_plot_still_stops_saved(tmp_path, corpus, monkeypatch):
    """Ctrl-C twice at the first validation: the second one cut the plot's first import of matplotlib, left
    half-imported, and the stopped run's redraw of loss.png then failed in it ("module 'matplotlib' has no
    attribute 'colors'"): a traceback and exit 1 after latest.pt was saved, no 'interrupted' line. Here the plot
    receives both signals, then fails as that half-imported matplotlib does."""
    from rnnkit.train import loop

    calls = []

    def plot(rows, path):
        calls.append(path)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)  # stop after this step
            os.kill(os.getpid(), signal.SIGINT)  # stop now
        raise AttributeError("module 'matplotlib' has no attribute 'colors'")

    monkeypatch.setattr(loop, "plot_losses", plot)
    lines = []
    assert train(tiny_config(corpus, max_steps=9, eval_every=2), tmp_path / "run", log=lines.append) == 130
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["progress"]["step"] == 2
    assert lines[-1].startswith("interrupted at step 2; saved"), lines[-1]


def test_the_loop_imports_nothing_a_second_ctrl_c_could_cut_half_way(tmp_path, corpus):
    """The first loss.png imports matplotlib, its Agg backend and PIL's plugins (180 modules, 0.5-1.5 s): a second
    Ctrl-C there cut an import half-way ('ImportError: initialization failed' of a C extension, or a half-made
    matplotlib: 'no attribute colors'), a traceback and exit 1. They are imported before the loop, where a Ctrl-C
    stops the run as the engine's build does. A fresh process: here they were imported long ago."""
    import subprocess
    import sys

    code = (
        "import os, signal, sys\n"
        "from rnnkit.train.loop import train\n"
        "from tests.charlm.test_train import tiny_config\n"
        "cut = []\n"
        "class Cut:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('matplotlib', 'PIL') and signal.getsignal(signal.SIGINT) is not "
        "signal.default_int_handler and not cut:\n"
        "            cut.append(name)\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, Cut())\n"
        f"code = train(tiny_config({str(corpus)!r}, max_steps=2, eval_every=2), {str(tmp_path / 'run')!r}, "
        "log=lambda s: None)\n"
        "print(code, cut)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["0", "[]"], out.stdout + out.stderr[-2000:]


def test_files_a_kill_left_half_written_are_removed(tmp_path, corpus):
    """A kill -9 inside an atomic write leaves its temporary file; a checkpoint's was removed when the run
    started again, those of loss.png (rewritten at every validation), metrics.csv and config.json stayed for good."""
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    train(tiny_config(corpus, max_steps=2), run, log=quiet)
    left = [
        "latest.pt.k1ll3d00.tmp",
        "loss.png.k1ll3d00.tmp",
        "metrics.csv.k1ll3d00.tmp",
        "config.json.k1ll3d00.tmp",
    ]
    for name in [*left, "notes.tmp"]:
        (run / name).write_bytes(b"half")
    assert train(tiny_config(corpus, max_steps=3), run, resume=True, log=quiet) == 0
    assert sorted(p.name for p in run.glob("*.tmp")) == ["notes.tmp"]  # the user's own file is left alone


def test_files_a_kill_left_half_written_at_the_last_step_are_removed(tmp_path, corpus):
    """A kill -9 inside the last writes of a run (its last latest.pt, after the one of its last step, or its last
    loss.png) leaves their temporary files; --resume then found the run at its limit and said so, leaving them in
    the run folder for good."""
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    train(tiny_config(corpus, max_steps=2), run, log=quiet)
    for name in ["latest.pt.k1ll3d00.tmp", "loss.png.k1ll3d00.tmp"]:
        (run / name).write_bytes(b"half")
    lines = []
    assert train(tiny_config(corpus, max_steps=2), run, resume=True, log=lines.append) == 0
    assert "nothing to do" in lines[-1]
    assert list(run.glob("*.tmp")) == []


def test_force_keeps_the_old_run_when_the_new_one_is_refused(tmp_path, corpus):
    quiet = lambda s: None  # noqa: E731
    train(tiny_config(corpus, max_steps=2), tmp_path / "run", log=quiet)
    with pytest.raises(RnnkitError, match="--lr must be > 0"):
        train(tiny_config(corpus, max_steps=2, lr=-1.0), tmp_path / "run", force=True, log=quiet)
    bad = tiny_config(corpus, max_steps=2)
    bad.data.corpus = str(tmp_path / "missing.txt")
    with pytest.raises(RnnkitError, match="not found"):
        train(bad, tmp_path / "run", force=True, log=quiet)
    assert (tmp_path / "run" / "latest.pt").is_file() and (tmp_path / "run" / "config.json").is_file()
    with pytest.raises(RnnkitError, match="not both"):
        train(tiny_config(corpus, max_steps=2), tmp_path / "run", resume=True, force=True, log=quiet)


def test_resume_refuses_a_corpus_changed_with_the_same_characters(tmp_path, corpus):
    quiet = lambda s: None  # noqa: E731
    text = tmp_path / "text.txt"
    text.write_text(corpus.read_text())
    cfg = tiny_config(text, max_steps=2)
    train(cfg, tmp_path / "run", log=quiet)
    text.write_text(corpus.read_text()[::-1])  # the same characters in another text
    cfg.train.max_steps = 4
    with pytest.raises(RnnkitError, match="corpus of .* has changed .same characters, other text"):
        train(cfg, tmp_path / "run", resume=True, log=quiet)


@pytest.mark.parametrize("short", ["xyz", "the quick brown fox jumps over the lazy dog.\n"])
def test_resume_with_a_corpus_changed_to_a_short_text_says_it_changed(tmp_path, corpus, short):
    """A resumed run's corpus replaced by a text too short for its windows and validation split was answered with
    the split's advice, 'use a larger --val-frac (at least 0.67)' or 'lower --val-frac', an option a resume
    refuses to change: the corpus is the run's no longer, and that is what is said."""
    quiet = lambda s: None  # noqa: E731
    text = tmp_path / "text.txt"
    text.write_text(corpus.read_text())
    cfg = tiny_config(text, max_steps=2)
    train(cfg, tmp_path / "run", log=quiet)
    text.write_text(short)
    with pytest.raises(
        RnnkitError, match=r"^the corpus of .* has changed \(its vocabulary differs\); start a new"
    ):
        train(cfg, tmp_path / "run", resume=True, log=quiet)


@pytest.mark.parametrize("key, value", [("seq_len", 12), ("batch_size", 6), ("val_frac", 0.2)])
def test_resume_refuses_windows_cut_otherwise(tmp_path, corpus, key, value):
    """The run's position (window k of an epoch), carried state and validation split are counted in its seq_len,
    batch size and val_frac; a resume with others (an edited config.json, or another config from Python) trained
    on: a seq_len of 12 read other text as window k, a val_frac of 0.2 trained on part of the validation text,
    and a batch size of 6 was called a damaged latest.pt ("its carried state is not 2 tensors of shape ...")."""
    quiet = lambda s: None  # noqa: E731
    train(tiny_config(corpus, max_steps=4), tmp_path / "run", log=quiet)
    cfg = tiny_config(corpus, max_steps=6)
    setattr(cfg.data, key, value)
    saved = getattr(tiny_config(corpus).data, key)
    with pytest.raises(
        RnnkitError, match=rf"cannot resume .* with {key} {value}: the run was trained with {saved}"
    ):
        train(cfg, tmp_path / "run", resume=True, log=quiet)


def test_resume_refuses_another_optimizer(tmp_path, corpus):
    """latest.pt's optimizer state is the run's optimizer's: resumed with another (an edited config.json, or
    another config from Python), torch loaded Adam's state into SGD, whose first step ended in a KeyError
    traceback ('momentum'; RMSprop: 'square_avg')."""
    quiet = lambda s: None  # noqa: E731
    train(tiny_config(corpus, max_steps=2), tmp_path / "run", log=quiet)
    for optimizer in ("sgd", "rmsprop"):
        cfg = tiny_config(corpus, max_steps=4, optimizer=optimizer)
        with pytest.raises(RnnkitError, match=rf"cannot resume .* with optimizer {optimizer}: .* adam"):
            train(cfg, tmp_path / "run", resume=True, log=quiet)


def test_resume_refuses_another_cell_of_the_same_shapes(tmp_path, corpus):
    """gru and gru_cho have weights of the same shapes: a run of one resumed as the other (an edited config.json)
    loaded its weights into the other cell in silence and trained a model whose function had changed."""
    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=2)
    cfg.model.cell = "gru"
    train(cfg, tmp_path / "run", log=quiet)
    cfg = tiny_config(corpus, max_steps=4)
    cfg.model.cell = "gru_cho"
    with pytest.raises(
        RnnkitError, match=r"cannot resume .* with cell gru_cho: the run was trained with gru"
    ):
        train(cfg, tmp_path / "run", resume=True, log=quiet)


def test_a_dry_run_leaves_the_callers_config_alone(tmp_path, corpus):
    """train(cfg, dry_run=True) wrote its limits into the caller's cfg: the run trained with that cfg next stopped
    after 4 steps, validating every 2 and sampling 40 characters."""
    cfg = tiny_config(corpus, max_steps=30, eval_every=10)
    before = dataclasses.asdict(cfg.train)
    assert train(cfg, tmp_path / "smoke", dry_run=True, log=lambda s: None) == 0
    assert dataclasses.asdict(cfg.train) == before
    assert len(read_metrics(tmp_path / "smoke" / "metrics.csv")) == 4


@pytest.mark.parametrize(
    "section,key,value,message",
    [
        ("train", "lr", float("nan"), "--lr must be a finite number"),
        ("train", "weight_decay", -1.0, "--weight-decay must be >= 0"),
        ("train", "max_epochs", float("inf"), "--max-epochs must be a finite number"),
        ("train", "seed", 10**30, r"--seed must lie in \[0, 2\^32\)"),
        ("train", "threads", 100_000, "--threads must be at most 1024"),
        ("model", "backend", "nope", "unknown --backend 'nope'"),
        ("model", "forget_bias", float("nan"), "--forget-bias must be a finite number"),
    ],
)
def test_bad_numbers_are_one_line_errors(tmp_path, corpus, section, key, value, message):
    cfg = tiny_config(corpus, max_steps=2)
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(RnnkitError, match=message):
        train(cfg, tmp_path / "run", log=lambda s: None)


def test_bad_checkpoints(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"config": "{}", "chars": "ab"})
    assert load_checkpoint(good)["chars"] == "ab"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    for path in (truncated, other, text):
        with pytest.raises(RnnkitError, match="not an rnnkit|cannot be read"):
            load_checkpoint(path)
    newer = tmp_path / "newer.pt"
    torch.save({"format": ckpt_mod.FORMAT, "version": ckpt_mod.VERSION + 1}, newer)
    with pytest.raises(RnnkitError, match="newer rnnkit"):
        load_checkpoint(newer)
    corrupt = tmp_path / "corrupt.pt"
    data = bytearray(good.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    corrupt.write_bytes(bytes(data))
    with pytest.raises(RnnkitError):
        load_checkpoint(corrupt)
    assert zipfile.is_zipfile(good)


def test_an_ngram_model_is_named_not_a_checkpoint(tmp_path):
    """An .npz (an n-gram model) is a zip file too: the error quoted torch's "[enforce fail at inline_container.cc"."""
    import numpy as np

    path = tmp_path / "model.npz"
    np.savez_compressed(path, meta=np.array("{}"), counts=np.zeros(3))
    with pytest.raises(RnnkitError, match=r"is a numpy .npz file \(an n-gram model\? .*rnnkit ngram sample"):
        load_checkpoint(path)


def test_checkpoint_does_not_unpickle_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt_mod.FORMAT, "version": 1, "x": Evil()}, path)
    # not torch's "Re-running `torch.load` with `weights_only` set to `False` will likely succeed"
    with pytest.raises(RnnkitError, match=r"holds a Python object \(\S*print\) that only running code"):
        load_checkpoint(path)


def test_explosion_test_reads_a_running_average():
    """One noisy window of a batch of one (min-char-rnn) may read 3x the start; a lasting blow-up still stops."""
    from rnnkit.train.loop import Progress, _check_loss

    progress = Progress()
    for loss in [4.1, 3.9, 5.6, 9.5, 12.9, 5.4, 8.3, 6.2, 7.5]:  # what min-char-rnn's first steps read
        progress.smooth_loss = _check_loss(loss, progress, "run")
    progress = Progress()
    with pytest.raises(RnnkitError, match=r"exploded to .* \(running average\) at step"):
        for loss in [4.0] + [20.0] * 5:
            progress.smooth_loss = _check_loss(loss, progress, "run")
            progress.step += 1
    assert progress.step <= 4
    with pytest.raises(RnnkitError, match="became nan"):
        _check_loss(float("nan"), Progress(initial_loss=4.0, smooth_loss=4.0), "run")


def test_the_explosion_tests_running_average_weighs_a_new_loss_by_0_3():
    """smooth <- 0.7·smooth + 0.3·loss: one window at 4x the start (16 after 4) reads 7.6, no blow-up; weighed the
    other way round (0.3·smooth + 0.7·loss, 12.4 > 3 x 4) that one window stopped the run."""
    from rnnkit.train.loop import Progress, _check_loss

    progress = Progress()
    progress.smooth_loss = _check_loss(4.0, progress, "run")
    assert _check_loss(16.0, progress, "run") == pytest.approx(0.7 * 4.0 + 0.3 * 16.0)


def test_threads_hold_for_the_run_only(tmp_path, corpus):
    """train(..., threads=N) used to leave torch at N threads for the rest of the caller's process."""
    before = torch.get_num_threads()
    other = 1 if before > 1 else 2
    assert train(tiny_config(corpus, max_steps=2, threads=other), tmp_path / "run", log=lambda s: None) == 0
    assert torch.get_num_threads() == before
    bad = tiny_config(corpus, max_steps=2, threads=other)
    bad.data.corpus = str(tmp_path / "missing.txt")
    with pytest.raises(RnnkitError, match="not found"):
        train(bad, tmp_path / "other", log=lambda s: None)
    assert torch.get_num_threads() == before


def test_runs_overlapping_in_threads_put_back_the_thread_count_of_before_both(tmp_path, corpus):
    """Each train() read torch's thread count as it started and put its reading back as it ended: a run started in a
    thread while another held its threads=N read N (a new thread takes the count last set), and, ending last, left
    every thread started after on N threads (here 2 where 1 was set before). The count of before the first of the
    runs under way is put back."""
    import threading

    before = torch.get_num_threads()
    other = 1 if before > 1 else 2
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()

    def run(name):
        def log(line):  # a holds until b has started, b until a has ended
            if line.startswith("corpus"):
                (a_in if name == "a" else b_in).set()
                (b_in if name == "a" else a_out).wait(30)

        try:
            train(tiny_config(corpus, max_steps=1, threads=other), tmp_path / name, log=log)
        finally:
            if name == "a":
                a_out.set()

    a = threading.Thread(target=run, args=("a",))
    a.start()
    assert a_in.wait(30)
    b = threading.Thread(target=run, args=("b",))
    b.start()
    a.join(60), b.join(60)
    assert (tmp_path / "a" / "latest.pt").is_file() and (tmp_path / "b" / "latest.pt").is_file()
    seen = []
    fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    fresh.start()
    fresh.join()
    assert (torch.get_num_threads(), seen) == (before, [before])


def test_runs_overlapping_in_threads_put_back_the_showwarning_of_before_both(tmp_path, corpus, monkeypatch):
    """Each run put warnings' showwarning (the one that says warnings above its bar) back to its own reading: a run
    started in a thread while another's was installed read that one and, ending last, left it installed for good; and
    the first to end put back the original while the other still drew its bar. One is installed while any run is under
    way, and the showwarning of before the first is put back after the last."""
    import threading
    import warnings

    from rnnkit.train import loop

    original, set_lr = warnings.showwarning, loop.set_lr
    reached, a_out, seen = {"a": threading.Event(), "b": threading.Event()}, threading.Event(), []

    def held_set_lr(*args):  # (in the loop, with no lock held) a holds until b is there, b until a has ended
        name = threading.current_thread().name
        reached[name].set()
        (reached["b"] if name == "a" else a_out).wait(30)
        seen.append((name, warnings.showwarning is original))
        return set_lr(*args)

    def run(name):
        try:
            train(tiny_config(corpus, max_steps=1), tmp_path / name, log=lambda line: None)
        finally:
            if name == "a":
                a_out.set()

    monkeypatch.setattr(loop, "set_lr", held_set_lr)
    a = threading.Thread(target=run, args=("a",), name="a")
    a.start()
    assert reached["a"].wait(30)
    b = threading.Thread(target=run, args=("b",), name="b")
    b.start()
    a.join(60), b.join(60)
    assert seen == [("a", False), ("b", False)] and warnings.showwarning is original


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": {"hidden_size": 12.5}}, r"model.hidden_size must be a whole number, got 12.5"),
        ({"model": {"hidden_size": True}}, r"model.hidden_size must be a whole number, got True"),
        ({"data": {"val_frac": "0.1"}}, r"data.val_frac must be a number, got '0.1'"),
        ({"train": {"seed": 1.5}}, r"train.seed must be a whole number"),
        ({"model": {"backend": 3}}, r"model.backend must be a string or none"),
        ({"train": {"sample_length": -1}}, r"sample length must be >= 0"),
    ],
)
def test_config_options_of_the_wrong_kind_are_one_line(overrides, message):
    """A config from Python or a hand-edited config.json is not parsed as the flags are: 12.5 hidden units or a
    string learning rate ran into a TypeError deep in validation, or were taken as they came."""
    from rnnkit.train.config import validate

    cfg = RunConfig.from_dict(overrides)
    with pytest.raises(RnnkitError, match=message):
        validate(cfg)
    with pytest.raises(RnnkitError, match="config section 'model' must be a mapping"):
        RunConfig.from_dict({"model": 5})
    validate(
        RunConfig.from_dict({"train": {"max_epochs": 3, "lr": 1}})
    )  # ints where floats are declared: fine


def test_the_sgd_weight_decay_limit_advised_is_below_the_limit():
    """sgd's line for lr x weight decay >= 2 advises a --weight-decay below 2 / lr, said to 4 digits: rounded to the
    nearest, --lr 3 said 'below 0.6667' (the limit 0.666...), and 0.66668, below it, was refused by the same line.
    It is rounded down now: what it says is below is taken."""
    from rnnkit.train.config import validate

    cfg = RunConfig.from_dict({"train": {"optimizer": "sgd", "lr": 3, "weight_decay": 0.66668}})
    with pytest.raises(RnnkitError, match=r"give a --weight-decay below 0\.6666, or a lower --lr"):
        validate(cfg)
    validate(RunConfig.from_dict({"train": {"optimizer": "sgd", "lr": 3, "weight_decay": 0.6666}}))


def test_config_takes_numpy_numbers_as_the_numbers_they_are():
    """A sweep over np.arange(...) or np.float32 rates was refused: "option model.hidden_size must be a whole number,
    got np.int64(16)" (a whole number), "option train.lr must be a number, got np.float32(0.01)". They are taken
    as Python's int and float, which config.json and the checkpoints hold."""
    import numpy as np

    from rnnkit.train.config import validate

    cfg = RunConfig.from_dict({"model": {"hidden_size": np.int64(16)}, "data": {"seq_len": np.int16(10)},
                               "train": {"lr": np.float32(0.25), "max_epochs": np.int32(3)}})  # fmt: skip
    validate(cfg)
    values = (cfg.model.hidden_size, cfg.data.seq_len, cfg.train.lr, cfg.train.max_epochs)
    assert values == (16, 10, 0.25, 3.0) and [type(v) for v in values] == [int, int, float, float]
    json.dumps(cfg.to_dict())
    with pytest.raises(RnnkitError, match=r"hidden_size must be a whole number, got np.float64\(16.0\)"):
        validate(RunConfig.from_dict({"model": {"hidden_size": np.float64(16.0)}}))
    with pytest.raises(RnnkitError, match=r"model.torch_rnn must be true or false, got np.int64\(1\)"):
        validate(RunConfig.from_dict({"model": {"torch_rnn": np.int64(1)}}))


def test_save_checkpoint_refuses_what_loading_would_refuse(tmp_path):
    """A numpy array or a config object saved fine and then loaded as 'corrupt or of another format' (loading
    reads weights only); a missing folder was a FileNotFoundError on a temporary name."""
    import numpy as np

    for payload, where in [({"x": np.zeros(3)}, r"payload\['x'\] \(ndarray\)"),
                           ({"cfg": RunConfig()}, r"payload\['cfg'\] \(RunConfig\)"),
                           ({"a": [1, {"b": frozenset([3])}]}, r"payload\['a'\]\[1\]\['b'\] \(frozenset\)")]:  # fmt: skip
        with pytest.raises(RnnkitError, match=where + " is not one"):
            save_checkpoint(tmp_path / "c.pt", payload)
    assert not list(tmp_path.iterdir())  # nothing written, no temporary file left
    with pytest.raises(RnnkitError, match="folder .*missing does not exist"):
        save_checkpoint(tmp_path / "missing" / "c.pt", {"x": 1})
    save_checkpoint(
        tmp_path / "c.pt", {"x": torch.zeros(2), "cfg": RunConfig().to_dict(), "t": (1, 2.0, None)}
    )
    assert load_checkpoint(tmp_path / "c.pt")["t"] == (1, 2.0, None)


def test_save_checkpoint_refuses_a_format_or_version_of_ones_own_that_loading_refuses(tmp_path):
    """save_checkpoint(path, {"model": ..., "version": "v1.2"}) wrote the file, and load_checkpoint then called it
    damaged ("has no valid checkpoint format version ('v1.2')"): the payload's key took the format's place. Such
    a value is refused when saving; a loaded checkpoint saved again (its own format and version) still loads."""
    w = {"w": torch.ones(2)}
    for key, value in [("version", "v1.2"), ("version", 7), ("version", True), ("format", "mine")]:
        with pytest.raises(
            RnnkitError, match=f"checkpoint's '{key}' is its file format's .* store it under another key"
        ):
            save_checkpoint(tmp_path / "c.pt", {"model": w, key: value})
        assert not list(tmp_path.iterdir())
    save_checkpoint(tmp_path / "c.pt", {"model": w, "step": 3})
    ckpt = load_checkpoint(tmp_path / "c.pt")
    save_checkpoint(tmp_path / "c.pt", {**ckpt, "step": 4})
    assert load_checkpoint(tmp_path / "c.pt")["step"] == 4
    # a version-1 checkpoint (no param_names) saved again is still one: its version is its content's, not the writer's
    save_checkpoint(tmp_path / "c.pt", {"model": w, "version": 1})
    save_checkpoint(tmp_path / "c.pt", {**load_checkpoint(tmp_path / "c.pt"), "step": 5})
    assert load_checkpoint(tmp_path / "c.pt")["version"] == 1


def test_save_checkpoint_takes_what_a_weights_only_load_reads(tmp_path):
    """save_checkpoint refused a torch.dtype, a torch.device, a complex number, bytes and a set ("is not one
    (convert it ...)"), all of which torch.load(..., weights_only=True) reads: a loop of one's own keeping its
    dtype or device beside the weights could not save them. What torch's load refuses (a frozenset) still is."""
    payload = {"dtype": torch.float64, "device": torch.device("cpu"), "z": 1 + 2j, "b": b"ab", "ba": bytearray(b"c"),
               "s": {"a", 1}, "layout": torch.strided}  # fmt: skip
    save_checkpoint(tmp_path / "c.pt", payload)
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert {k: ckpt[k] for k in payload} == payload
    with pytest.raises(RnnkitError, match=r"payload\['f'\] \(frozenset\) is not one"):
        save_checkpoint(tmp_path / "c.pt", {"f": frozenset([1])})
    with pytest.raises(RnnkitError, match=r"payload\['s'\] \(a set\) \(range\) is not one"):
        save_checkpoint(tmp_path / "c.pt", {"s": {range(2)}})


def test_clipping_by_value_survives_gradients_whose_float32_norm_overflows():
    """min-char-rnn clips by value only: gradients of 1e19 are finite, clamped to ±5, though their float32 sum
    of squares overflows (the run stopped on an inf norm); the norm comes from float64 then."""
    from rnnkit.train.optim import clip_gradients

    p = torch.nn.Parameter(torch.zeros(1000))
    p.grad = torch.full((1000,), 1e19)
    norm = clip_gradients([p], clip_norm=0.0, clip_value=5.0)
    assert math.isfinite(norm) and abs(norm / (1e19 * 1000**0.5) - 1) < 1e-6
    assert torch.equal(p.grad, torch.full((1000,), 5.0))


@pytest.mark.parametrize("dtypes", [[torch.float32], [torch.float32, torch.float64]])
def test_clipping_by_a_value_past_the_gradients_dtype_clips_nothing(dtypes):
    """--clip-value 1e308 stopped training at its first step in a traceback, torch's "value cannot be converted to type
    float without overflow": the clamp of float32 gradients took a limit float32 lacks. A limit past a dtype's largest
    value clips nothing of its gradients (finite, as they are where clipped); float64 gradients are still clamped."""
    from rnnkit.train.optim import clip_gradients

    params = [torch.nn.Parameter(torch.zeros(3, dtype=d)) for d in dtypes]
    for p, big in zip(params, (3e38, 1e100)):
        p.grad = torch.tensor([big, -big, 0.5], dtype=p.dtype)
    want = [p.grad.clone() for p in params]
    if len(dtypes) > 1:
        want[1] = torch.tensor([1e39, -1e39, 0.5], dtype=torch.float64)
    clip_gradients(params, 0.0, 1e39 if len(dtypes) > 1 else 1e308)
    assert all(torch.equal(p.grad, w) for p, w in zip(params, want))


def test_clip_gradients_runs_torchs_clipping_ops_and_reads_the_norm_once():
    """A training step's clipping ran one clamp op per parameter and tested the norm with torch.isfinite twice (5 ops
    each): 26 ops for 12 parameters clipped by value where torch's clip_grad_value_ runs 2, on steps of about 1 ms
    (min-char-rnn's). It now runs torch's own clipping, plus the norm read once (the finite check), whatever the
    number of parameters."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from rnnkit.train.optim import clip_gradients

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    def ops(fn, n_params, clip_norm, clip_value):
        params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(n_params)]
        for p in params:
            p.grad = torch.randn(3)
        with Count() as count:
            fn(params, clip_norm, clip_value)
        return count.n

    def torchs(params, clip_norm, clip_value):
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(params, clip_norm)
        if clip_value:
            torch.nn.utils.clip_grad_value_(params, clip_value)

    norm = 3  # the norm torch's clip_grad_norm_ computes (_foreach_norm, stack, norm), for the finite check
    for limits in [(0.0, 0.5), (1.0, 0.0), (1.0, 0.5)]:
        want = ops(torchs, 12, *limits) + 1 + (0 if limits[0] else norm)  # + the norm read once
        for n_params in (2, 12):
            assert ops(clip_gradients, n_params, *limits) <= want, (limits, n_params)


def test_clip_gradients_of_one_device_and_dtype_runs_the_ops_without_torchs_grouping(monkeypatch):
    """get_total_norm, clip_grad_value_ and clip_grads_with_norm_ each grouped the gradients by device and dtype
    (and entered no_grad) before their one foreach op: 17-30 µs of a min-char-rnn step's clip by value. Gradients of
    one device and dtype (a model's) now go to those ops directly: the same norm and clipped gradients, bit for bit,
    as torch's functions give; others (two dtypes) through torch's functions as before."""
    from torch.nn.utils import clip_grad

    from rnnkit.train.optim import clip_gradients

    grouped, real = [], clip_grad._group_tensors_by_device_and_dtype
    monkeypatch.setattr(
        clip_grad, "_group_tensors_by_device_and_dtype", lambda *a: grouped.append(1) or real(*a)
    )
    for dtypes in ([torch.float32] * 3, [torch.float64] * 2, [torch.float32, torch.float64]):
        for clip_norm, clip_value in [(0.0, 0.05), (0.5, 0.0), (0.5, 0.05)]:
            torch.manual_seed(0)
            params = [torch.nn.Parameter(torch.zeros(5, 3, dtype=d)) for d in dtypes]
            for p in params:
                p.grad = torch.randn_like(p)
            copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
            for c, p in zip(copies, params):
                c.grad = p.grad.clone()
            norm = torch.nn.utils.get_total_norm([c.grad for c in copies])
            if clip_norm:
                torch.nn.utils.clip_grads_with_norm_(copies, clip_norm, norm)
            if clip_value:
                torch.nn.utils.clip_grad_value_(copies, clip_value)
            del grouped[:]
            assert clip_gradients(params, clip_norm, clip_value) == float(norm)
            assert all(torch.equal(p.grad, c.grad) for p, c in zip(params, copies))
            # two dtypes: the norm and the clips grouped, as before
            mixed = len(set(dtypes)) > 1
            assert len(grouped) == mixed * (1 + (clip_value > 0) + (clip_norm > 0))


def test_make_optimizer_refuses_a_name_it_does_not_know():
    """make_optimizer(params, TrainConfig(optimizer="adamw")) (or "Adam", torch's spelling) gave SGD, in silence, to
    a loop of one's own (the command line's validate refuses it, make_optimizer did not)."""
    from rnnkit.train.config import TrainConfig
    from rnnkit.train.optim import make_optimizer

    params = [torch.nn.Parameter(torch.zeros(2))]
    for name in ("adamw", "Adam", "rmsprop "):
        with pytest.raises(
            RnnkitError, match=f"unknown optimizer '{name}'; choose adam, rmsprop, adagrad, sgd"
        ):
            make_optimizer(params, TrainConfig(optimizer=name))
    assert isinstance(make_optimizer(params, TrainConfig(optimizer="rmsprop")), torch.optim.RMSprop)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])
def test_a_ctrl_c_while_the_optimizer_is_made_stops_the_run(tmp_path, corpus, monkeypatch, optimizer):
    """A Ctrl-C while the run made its optimizer, the first of the process (torch._dynamo's import: 1-2 s of its start,
    hundreds of dataclasses made), which Python 3.11 raises inside a dataclass field's __set_name__ as RuntimeError
    ('Error calling __set_name__ ...') from the KeyboardInterrupt: --optimizer adam took it for a torch without the
    fused kernel, made the plain Adam and trained to the end (the Ctrl-C lost); rmsprop's was a traceback, exit 1."""

    class Interrupted:
        def __set_name__(self, owner, name):
            raise KeyboardInterrupt  # what the Ctrl-C handler raises where the signal came

    make, calls = torch.optim.Optimizer.__init__, []

    def init(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # the first optimizer made imports torch._dynamo; a second one finds it imported
            type("Made", (), {"field": Interrupted()})
        make(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Optimizer, "__init__", init)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(corpus, max_steps=3, optimizer=optimizer), tmp_path / "run", log=lambda s: None)
    assert not (tmp_path / "run" / "latest.pt").exists()


def test_clip_gradients_takes_one_parameter_as_torchs_clip_grad_norm_does():
    """clip_gradients(p, 1.0, 0) of one parameter read its rows as the parameters, none with a gradient: it returned
    0.0 and clipped nothing (with torch's warning on a non-leaf's .grad), where clip_grad_norm_(p, 1.0) gives 6.0."""
    from rnnkit.train.optim import clip_gradients

    for clip_norm, clip_value, want in [(1.0, 0.0, 0.5), (0.0, 2.0, 2.0)]:
        p = torch.nn.Parameter(torch.zeros(2, 2))
        p.grad = torch.full((2, 2), 3.0)
        assert clip_gradients(p, clip_norm, clip_value) == 6.0
        assert torch.allclose(p.grad, torch.full((2, 2), want))


def test_make_optimizer_and_set_lr_refuse_a_rate_that_is_no_finite_number_ge_0():
    """make_optimizer(params, TrainConfig(optimizer="sgd", lr=nan)) was taken (torch's SGD checks lr < 0 only: every
    weight NaN at the first step), as were weight_decay NaN there, lr True or inf in every optimizer and any lr in
    set_lr (-0.1 ascended); "0.1" failed in "'<=' not supported". Each is one line now."""
    from rnnkit.train.config import TrainConfig
    from rnnkit.train.optim import make_optimizer, set_lr

    params = [torch.nn.Parameter(torch.zeros(2))]
    for name in ("adam", "rmsprop", "adagrad", "sgd"):
        for key, bad in [
            ("lr", math.nan),
            ("lr", math.inf),
            ("lr", True),
            ("lr", "0.1"),
            ("weight_decay", math.nan),
        ]:
            with pytest.raises(RnnkitError, match=f"{key} must be a finite number >= 0, got"):
                make_optimizer(params, TrainConfig(optimizer=name, **{key: bad}))
    optimizer = make_optimizer(params, TrainConfig(optimizer="sgd", lr=0.1))
    for bad in (math.nan, -0.1, True):
        with pytest.raises(RnnkitError, match="lr must be a finite number >= 0, got"):
            set_lr(optimizer, bad)
    set_lr(optimizer, 0.05)
    assert optimizer.param_groups[0]["lr"] == 0.05


def test_make_optimizer_takes_param_groups_and_named_parameters_as_torch_optim_does():
    """make_optimizer([{"params": weights}, {"params": biases, "weight_decay": 0.0}], cfg) (a no-decay group for the
    biases) failed for adam, adagrad and sgd in "AttributeError: 'dict' object has no attribute 'is_floating_point'",
    and model.named_parameters() in "'tuple' object has no attribute ..."; torch.optim takes both."""
    from rnnkit.train.config import TrainConfig
    from rnnkit.train.optim import make_optimizer

    m = torch.nn.Linear(3, 2)
    for name in ("adam", "rmsprop", "adagrad", "sgd"):
        cfg = TrainConfig(optimizer=name, weight_decay=0.1)
        groups = [{"params": (p for p in [m.weight])}, {"params": m.bias, "weight_decay": 0.0}]
        optimizer = make_optimizer(groups, cfg)
        assert [(g["params"], g["weight_decay"]) for g in optimizer.param_groups] == [
            ([m.weight], 0.1),
            ([m.bias], 0.0),
        ]
        assert optimizer.defaults.get("fused") is (
            None if name == "rmsprop" else True
        )  # fused where torch has it
        optimizer = make_optimizer(m.named_parameters(), cfg)
        assert optimizer.param_groups[0]["params"] == [m.weight, m.bias]


def test_make_optimizer_steps_a_sparse_embedding_as_torch_optim_does():
    """torch's Adagrad and SGD step an nn.Embedding(sparse=True) (min-char-rnn's Adagrad on a word embedding); their
    fused kernels, which make_optimizer chose, refused it at the first step: "RuntimeError: `fused` does not support
    sparse grad or complex param" (adagrad), "`_fused_sgd` does not support sparse gradients" (sgd). Such a step is
    now the plain one, as torch.optim's own; dense steps before it stay fused."""
    from rnnkit.train.config import TrainConfig
    from rnnkit.train.optim import make_optimizer

    def model():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Embedding(10, 3, sparse=True), torch.nn.Linear(3, 2))

    for name, Torch in [("adagrad", torch.optim.Adagrad), ("sgd", torch.optim.SGD)]:
        ours, theirs = model(), model()
        optimizers = [make_optimizer(ours.parameters(), TrainConfig(optimizer=name, lr=0.1)),
                      Torch(theirs.parameters(), lr=0.1, **({"eps": 1e-8} if name == "adagrad" else {}))]  # fmt: skip
        for ids in ([1, 2], [2, 5, 5], [0]):
            for m, optimizer in zip((ours, theirs), optimizers):
                optimizer.zero_grad()
                # checks on: with them off (the default) torch warns so, and a warning fails a test
                with torch.sparse.check_sparse_tensor_invariants(enable=True):
                    m(torch.tensor(ids)).square().sum().backward()
                    optimizer.step()
        for p, q in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(p, q, msg=name)


def test_clip_gradients_refuses_a_limit_that_is_no_number_ge_0():
    """clip_gradients(params, nan, 0) and a negative limit left the gradients unclipped in silence, True clipped at
    1 and "5" failed in "'>' not supported between instances of 'str' and 'int'"; each is one line now."""
    from rnnkit.train.optim import clip_gradients

    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 4.0])
    for bad in (math.nan, -1.0, True, "5", None):
        for args in ((bad, 0.0), (0.0, bad)):
            name = "clip_norm" if args[0] is bad else "clip_value"
            with pytest.raises(RnnkitError, match=f"{name} must be a number >= 0 \\(0: off\\), got"):
                clip_gradients([p], *args)
    assert torch.equal(p.grad, torch.tensor([3.0, 4.0]))  # left as it was
    assert clip_gradients([p], math.inf, 0) == 5.0 and torch.equal(p.grad, torch.tensor([3.0, 4.0]))
    assert clip_gradients([p], 1, 0) == 5.0 and torch.allclose(p.grad, torch.tensor([0.6, 0.8]))


def test_metrics_log_writes_a_tensor_or_numpy_loss_as_its_number(tmp_path):
    """MetricsLog.write(step=1, train_loss=loss) with loss a tensor, as a loop of one's own has it, wrote
    "tensor(2.5000, grad_fn=<MulBackward0>)" in metrics.csv, and read_metrics (the plot, a resume) left the row out
    as damaged; a numpy float32 stayed one in `rows`. Both are written and kept as numbers now."""
    import numpy as np

    from rnnkit.train.metrics import MetricsLog

    log = MetricsLog(tmp_path / "m.csv")
    loss = torch.tensor(2.5, requires_grad=True) * 1
    log.write(step=1, epoch=0.5, wall_s=0.25, lr=1e-3, train_loss=loss, val_loss=torch.tensor([2.75]))
    log.write(step=2, epoch=1.0, wall_s=0.5, lr=np.float32(1e-3), train_loss=np.float32(2.25))
    rows = read_metrics(tmp_path / "m.csv")
    assert [(r["step"], r["train_loss"], r["val_loss"], r["lr"]) for r in rows] == [
        ("1", "2.5", "2.75", "0.001"), ("2", "2.25", "", "0.001")
    ]  # fmt: skip
    assert [r["train_loss"] for r in log.rows] == ["2.5", "2.25"]
    # several numbers (a per-row loss not reduced) ended in torch's or numpy's "cannot be converted" traceback
    for many in (torch.ones(3), np.ones(2)):
        with pytest.raises(RnnkitError, match="column 'train_loss' takes one number, got .*loss.item"):
            log.write(step=3, train_loss=many)
    assert len(read_metrics(tmp_path / "m.csv")) == 2  # nothing written for it


def test_metrics_log_refuses_a_column_it_has_not_and_a_row_without_its_step(tmp_path):
    """MetricsLog.write(step=1, loss=2.3) dropped `loss` in silence (the row's train_loss empty), and a row written
    without its step was lost when read back, the next write failing in "invalid literal for int() with base 10"."""
    from rnnkit.train.metrics import MetricsLog

    log = MetricsLog(tmp_path / "m.csv")
    with pytest.raises(RnnkitError, match="unknown metrics column 'loss'; the columns are step, epoch, "):
        log.write(step=1, loss=2.3)
    for step in (None, 1.5, True, "1"):
        with pytest.raises(RnnkitError, match="a metrics row needs its step, a whole number, got"):
            log.write(step=step, train_loss=2.3) if step is not None else log.write(train_loss=2.3)
    log.write(step=1, train_loss=2.3)
    log.write(step=2, train_loss=2.2)
    assert [(r["step"], r["train_loss"]) for r in read_metrics(tmp_path / "m.csv")] == [
        ("1", "2.3"),
        ("2", "2.2"),
    ]


def test_the_loop_lists_the_models_parameters_once_not_at_every_clip(tmp_path, corpus, monkeypatch):
    """Each step's clip_gradients was given model.parameters(), a generator walked through the model's modules
    again at every step (12-19 µs of a min-char-rnn step of about 1.5 ms); the loop lists them once and gives
    that list, every parameter in the model's order."""
    from rnnkit.train import loop

    given, real = [], loop.clip_gradients
    monkeypatch.setattr(loop, "clip_gradients", lambda params, *a: given.append(params) or real(params, *a))
    assert train(tiny_config(corpus, max_steps=3), tmp_path / "run", log=lambda s: None) == 0
    assert len(given) == 3 and all(p is given[0] for p in given) and isinstance(given[0], list)
    assert [p.shape for p in given[0]] == [
        w.shape for w in load_checkpoint(tmp_path / "run")["model"].values()
    ]


def test_the_metrics_log_opens_its_file_once_and_each_row_outlives_a_kill(tmp_path, monkeypatch):
    """MetricsLog.write opened and closed metrics.csv for every row: 20 of the 30 µs a row took, at every training
    step (a min-char-rnn step is about 1.5 ms). It is opened once and flushed after each row: a row written is in
    the file at once (a kill -9 right after it keeps it, as the close did), and a file removed meanwhile is made
    again by its name, as before."""
    import builtins
    import subprocess
    import sys

    from rnnkit.train import metrics

    opened = []
    monkeypatch.setattr(
        metrics, "open", lambda *a, **k: opened.append(a[0]) or builtins.open(*a, **k), raising=False
    )
    path = tmp_path / "m.csv"
    log = metrics.MetricsLog(path)
    for step in range(1, 6):
        log.write(step=step, train_loss=2.5)
        assert path.read_text().splitlines()[-1].startswith(f"{step},")  # in the file, not in a buffer
    assert opened == [path]
    path.unlink()
    log.write(step=6, train_loss=2.4)
    assert len(opened) == 2 and [r["step"] for r in read_metrics(path)] == ["6"]  # (made again, header too)
    log.close()
    # a row, then kill -9: the row is on disk
    code = ("import os, signal, sys; from rnnkit.train.metrics import MetricsLog; log = MetricsLog(sys.argv[1]); "
            "log.write(step=1, train_loss=2.5); os.kill(os.getpid(), signal.SIGKILL)")  # fmt: skip
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", code, str(tmp_path / "k.csv")], env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert [r["train_loss"] for r in read_metrics(tmp_path / "k.csv")] == ["2.5"]


def test_the_metrics_log_writes_to_the_file_its_path_names_after_a_move_or_a_replacement(tmp_path):
    """The log kept metrics.csv open and reopened it only where no link to the file held was left: metrics.csv
    moved aside took the next rows under its new name (metrics.csv gone), and replaced by a resume's MetricsLog
    while a hard link (a snapshot) kept the old file, the rows went to the snapshot, metrics.csv never got them."""
    from rnnkit.train import metrics

    path = tmp_path / "metrics.csv"
    log = metrics.MetricsLog(path)
    log.write(step=1, train_loss=2.5)
    os.rename(path, tmp_path / "moved.csv")
    log.write(step=2, train_loss=2.4)
    log.write(step=3, train_loss=2.3)
    # made again by its name, with its header: without one its first row was read as the header, and lost
    assert [r["step"] for r in read_metrics(path)] == ["2", "3"]
    assert [r["step"] for r in read_metrics(tmp_path / "moved.csv")] == ["1"]
    log.close()
    path, log = tmp_path / "b.csv", metrics.MetricsLog(tmp_path / "b.csv")
    log.write(step=1, train_loss=2.5)
    os.link(path, tmp_path / "snapshot.csv")
    metrics.MetricsLog(path, resume_step=1).close()  # b.csv replaced, the snapshot keeps the old file
    log.write(step=2, train_loss=2.3)
    log.close()
    assert [r["step"] for r in read_metrics(path)] == ["1", "2"]
    assert [r["step"] for r in read_metrics(tmp_path / "snapshot.csv")] == ["1"]


def test_the_loss_plot_draws_rows_without_their_training_time_against_steps(tmp_path, monkeypatch):
    """plot_losses of a MetricsLog's rows written with step and losses only (a loop of one's own) failed in
    "ValueError: could not convert string to float: ''" (wall_s); those rows are drawn against steps alone."""
    from rnnkit.train import metrics

    figures = []
    monkeypatch.setattr(metrics, "save_figure", lambda fig, path, dpi: figures.append(fig))
    log = metrics.MetricsLog(tmp_path / "m.csv")
    log.write(step=1, train_loss=3.0)
    log.write(step=2, train_loss=2.5, val_loss=2.7)
    metrics.plot_losses(log.rows, tmp_path / "loss.png")
    by_step, by_time = figures[0].axes
    assert [list(line.get_xdata()) for line in by_step.get_lines()] == [[1, 2], [2]]
    assert [list(line.get_ydata()) for line in by_step.get_lines()] == [[3.0, 2.5], [2.7]]
    assert all(math.isnan(x) for line in by_time.get_lines() for x in line.get_xdata())


def test_the_loss_plot_marks_its_validation_points_only_where_they_are_few(tmp_path, monkeypatch):
    """Every validation point was drawn with a marker: a 60,000-step run validated every 200 steps (the default
    preset's) drew 300 markers, one orange band that hid the train curve under it for the first 10,000 steps (every
    7 steps: the whole curve). Past 100 points the validation loss is a line; up to 100, points on a line as before."""
    from rnnkit.train import metrics

    figures = []
    monkeypatch.setattr(metrics, "save_figure", lambda fig, path, dpi: figures.append(fig))
    for n in (100, 101):
        rows = [
            {"step": str(s), "wall_s": str(s / 10), "train_loss": "2", "val_loss": "2.1"}
            for s in range(1, n + 1)
        ]
        metrics.plot_losses(rows, tmp_path / "loss.png")
    few, many = (fig.axes[0].get_lines()[1] for fig in figures)
    assert few.get_marker() == "o" and many.get_marker() in ("None", "", None)


@pytest.mark.parametrize("collecting", [True, False])
def test_the_loss_plot_leaves_no_dead_figure_to_the_cyclic_collector(tmp_path, collecting):
    """Each plot_losses left its figure, reference cycles moved to the collector's oldest generation by the
    collections during the drawing, to Python's next full collection (7,000 objects and 2.4 MB at 4,000 points,
    a full collection only every few dozen plots in a process holding torch): a run redrawing loss.png at every
    validation held 20-50 MB of dead figures at a time, and its heap grew with each validation. The figure is freed
    by the plot itself now, and the collector is left on or off as it was."""
    import gc

    from matplotlib.figure import Figure

    from rnnkit.train import metrics

    rows = [{"step": str(s), "wall_s": str(s / 10), "train_loss": "2", "val_loss": "2.1" if s % 50 == 0 else ""}
            for s in range(1, 501)]  # fmt: skip
    was = gc.isenabled()
    gc.collect()
    (gc.enable if collecting else gc.disable)()
    try:
        metrics.plot_losses(rows, tmp_path / "loss.png")
        # (type, not isinstance: isinstance asks each object its __class__, and torch's deprecated reduce_op warns)
        left = sum(type(o) is Figure for o in gc.get_objects())
        assert gc.isenabled() == collecting
    finally:
        (gc.enable if was else gc.disable)()
    assert left == 0
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_a_ctrl_c_as_the_loss_plot_pauses_the_collector_leaves_it_on(tmp_path, monkeypatch):
    """plot_losses paused the cyclic collector before its try, so that a Ctrl-C landing as gc.disable() returned (a
    signal is handled once a call returns) left the collector off for the rest of the process: a program training
    in-process then kept every reference cycle it dropped. It is back on whatever interrupts the plot."""
    import gc

    from rnnkit.train import metrics

    disable = gc.disable

    def interrupted():
        disable()
        raise KeyboardInterrupt  # (as a SIGINT that came during the call)

    was = gc.isenabled()
    gc.enable()
    monkeypatch.setattr(gc, "disable", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt):
            metrics.plot_losses([{"step": "1", "wall_s": "0.1", "train_loss": "2", "val_loss": "2.1"}],
                                tmp_path / "loss.png")  # fmt: skip
        on = gc.isenabled()
    finally:
        monkeypatch.undo()
        (gc.enable if was else gc.disable)()
    assert on, "the collector was left off"


def test_resume_survives_a_metrics_row_cut_short(tmp_path, corpus):
    """A row cut short in metrics.csv (a full disk or a kill while it was written) is left out on resume; it
    made every later resume fail at its first plot."""
    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=10, eval_every=5)
    train(cfg, tmp_path / "run", log=quiet)
    path = tmp_path / "run" / "metrics.csv"
    text = path.read_text()
    path.write_text(text[: text.index("\n8,") + 4])  # rows 1-7, and row 8 cut after its step
    cfg.train.max_steps = 12
    assert train(cfg, tmp_path / "run", resume=True, log=quiet) == 0
    steps = [r["step"] for r in read_metrics(path)]
    assert steps == [str(s) for s in [*range(1, 8), *range(11, 13)]]


def test_a_damaged_metrics_header_or_row_does_not_stop_a_resume(tmp_path):
    """metrics.csv with a byte of its header changed ('chars_per\\x0cs') or a row with a field too many: the
    resume failed in csv's 'dict contains fields not in fieldnames' traceback as it wrote the rows kept back."""
    from rnnkit.train.metrics import FIELDS, MetricsLog

    path = tmp_path / "metrics.csv"
    rows = ["1,0.1,0.5,0.002,3.2,,,100", "2,0.2,0.6,0.002,3.1,3.0,4.3,100", "3,0.3,0.7,0.002,3,1,,,100"]
    path.write_text(",".join(FIELDS).replace("per_s", "per\x0cs") + "\n" + "\n".join(rows) + "\n")
    log = MetricsLog(path, resume_step=3)
    assert [r["step"] for r in read_metrics(path)] == ["1", "2"]  # the row of a field too many left out
    assert read_metrics(path)[1]["val_loss"] == "3.0" and path.read_text().startswith(",".join(FIELDS) + "\n")
    assert [r["step"] for r in log.rows] == ["1", "2"]


def test_an_unreadable_best_pt_points_to_latest_pt(tmp_path):
    """A run folder whose best.pt is empty (a disk that filled as it was renamed in, a copy cut short) sends the
    user to the run's latest.pt, which may be whole, instead of telling them to retrain."""
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run / "latest.pt", {"config": "{}", "chars": "ab"})
    (run / "best.pt").write_bytes(b"")
    with pytest.raises(RnnkitError, match=r"other checkpoint may be whole: give .*latest\.pt"):
        load_checkpoint(run)
    assert load_checkpoint(run / "latest.pt")["chars"] == "ab"


def test_resume_from_a_damaged_latest_pt_says_how(tmp_path, corpus):
    """--resume reads latest.pt only: its error told the user to "give best.pt", which --resume can't take."""
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    train(tiny_config(corpus, max_steps=4, eval_every=2), run, log=quiet)
    (run / "latest.pt").write_bytes((run / "latest.pt").read_bytes()[:500])
    with pytest.raises(RnnkitError, match=r"copy it over .*latest\.pt; or start anew with --force"):
        train(tiny_config(corpus, max_steps=6, eval_every=2), run, resume=True, log=quiet)
    torch.save({"weights": torch.zeros(2)}, run / "latest.pt")  # another program's: it said "give a file ..."
    with pytest.raises(RnnkitError, match=r"another format\); to resume from the run's best\.pt"):
        train(tiny_config(corpus, max_steps=6, eval_every=2), run, resume=True, log=quiet)
    torch.save({"format": "rnnkit-charlm", "version": "2"}, run / "latest.pt")  # it said only "it is damaged"
    with pytest.raises(RnnkitError, match=r"it is damaged; to resume from the run's best\.pt"):
        train(tiny_config(corpus, max_steps=6, eval_every=2), run, resume=True, log=quiet)
    (run / "latest.pt").write_bytes((run / "best.pt").read_bytes())  # as the error says
    assert train(tiny_config(corpus, max_steps=6, eval_every=2), run, resume=True, log=quiet) == 0
    (run / "best.pt").unlink()
    (run / "latest.pt").write_bytes(b"")
    with pytest.raises(RnnkitError, match=r"start the run anew with --force$"):
        train(tiny_config(corpus, max_steps=8, eval_every=2), run, resume=True, log=quiet)


def test_resume_from_a_checkpoint_of_another_shape_names_the_mismatch(tmp_path, corpus):
    """The error said only "(Error(s) in loading state_dict for CharLM:)", the first line of torch's."""
    quiet = lambda s: None  # noqa: E731
    train(tiny_config(corpus, max_steps=2), tmp_path / "a", log=quiet)
    cfg = tiny_config(corpus, max_steps=2)
    cfg.model.hidden_size = 16
    train(cfg, tmp_path / "b", log=quiet)
    (tmp_path / "a" / "latest.pt").write_bytes((tmp_path / "b" / "latest.pt").read_bytes())
    with pytest.raises(
        RnnkitError, match=r"does not fit .*\(size mismatch for [\w.]+: copying a param with shape"
    ):
        train(tiny_config(corpus, max_steps=4), tmp_path / "a", resume=True, log=quiet)


@pytest.mark.parametrize(
    "progress, message",
    [
        ({"step": "x"}, "its progress is malformed"),  # TypeError: '<=' not supported ...
        ({"bogus": 1}, "its progress is malformed"),  # TypeError: ... unexpected keyword argument 'bogus'
        ({"window": 10**6}, "its progress is at window 1000000 of an epoch of"),  # IndexError from the loop
        # the loop's elapsed < budget never true: every resume said 'done: 2 steps in nan s', exit 0
        ({"elapsed": math.nan}, "its progress is malformed"),
        ({"elapsed": math.inf}, "its progress is malformed"),
        ({"initial_loss": math.nan}, "its progress is malformed"),  # the explosion test turned off
        # lr_at_epoch's 'epoch must be a number >= 0 (the epochs completed), got -3', no file named
        ({"epoch": -3}, "its progress is malformed"),
    ],
)
def test_resume_from_a_checkpoint_with_a_damaged_progress_is_one_line(tmp_path, corpus, progress, message):
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    train(tiny_config(corpus, max_steps=2), run, log=quiet)
    ckpt = load_checkpoint(run / "latest.pt")
    save_checkpoint(run / "latest.pt", {**ckpt, "progress": {**ckpt["progress"], **progress}})
    with pytest.raises(RnnkitError, match=message):
        train(tiny_config(corpus, max_steps=4), run, resume=True, log=quiet)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: c.pop("progress"), r"its progress is missing or malformed"),  # KeyError: 'progress'
        (
            lambda c: c.update(progress=[1]),
            r"its progress is missing",
        ),  # 'list' object has no attribute 'get'
        (lambda c: c.pop("chars"), r"its chars is missing"),  # KeyError: 'chars'
        (lambda c: c.update(rng=torch.zeros(3)), r"its rng is missing"),  # TypeError: RNG state must be a ...
        (
            lambda c: c.update(carry=[torch.zeros(3)]),
            r"its carried state is not 2 tensors of shape \(1, 8, 32\)",
        ),
        (  # loaded with torch's 'UserWarning: Casting complex values to real discards the imaginary part'
            lambda c: c["model"].update({"head.weight": c["model"]["head.weight"] * (1 + 1j)}),
            r"its weights head\.weight are complex numbers; a model's are real",
        ),
        (  # 'does not fit this configuration (Tensor.item() cannot be called on meta tensors); resume without changing
            # model options', of options never changed (sparse: "Could not run 'aten::ne.Scalar' ...")
            lambda c: c["model"].update({"head.weight": c["model"]["head.weight"].to("meta")}),
            r"its weights head\.weight hold no values \(meta tensors: their shapes only\)\)",
        ),
        (
            lambda c: c["model"].update({"head.weight": c["model"]["head.weight"].to_sparse()}),
            r"its weights head\.weight are sparse \(torch\.sparse_coo\); a model's are dense\)",
        ),
        (  # copied into the model in silence, and trained on
            lambda c: c["model"].update({"head.weight": c["model"]["head.weight"].long()}),
            r"its weights head\.weight are torch\.int64: whole numbers or bools; a model's are floating-point",
        ),
        (  # the first step's 'loss became nan ...; start again with --force and a lower --lr'
            lambda c: c["model"]["head.bias"].fill_(math.nan),
            r"its weights head\.bias hold NaN or infinite values",
        ),
        (  # KeyError: 'betas' from Adam's first step
            lambda c: c["optimizer"]["param_groups"][0].pop("betas"),
            r"its optimizer state lacks the settings betas",
        ),
        (  # 'ValueError: not enough values to unpack (expected 2, got 1)' from Adam's first step
            lambda c: c["optimizer"]["param_groups"][0].update(betas=(0.9,)),
            r"its optimizer setting betas is \(0\.9,\), where the run's optimizer takes a value like \(0\.9, 0\.999\)",
        ),
        (  # the first step's 'the weights became NaN or infinite at step 3; ...; start again with ... a lower --lr'
            lambda c: c["optimizer"]["state"][0]["exp_avg"].fill_(math.nan),
            r"its optimizer state of [\w.]+ holds NaN or infinite values",
        ),
        (  # the first step's 'loss became nan at step 3 (initial ...); ...; start again with ... a lower --lr'
            lambda c: c["carry"][0].fill_(math.nan),
            r"its carried state holds NaN",
        ),
        (  # an infinite one too: 'loss became nan at step 3' (h), 'the gradient norm became nan at step 3' (c)
            lambda c: c["carry"][0].fill_(math.inf),
            r"its carried state holds NaN or infinite values",
        ),
        (
            lambda c: c["carry"][1][0, 0, 0].fill_(-math.inf),
            r"its carried state holds NaN or infinite values",
        ),
        (  # the sqrt of a negative second moment: 'loss became nan at step 4 (initial ...); ... a lower --lr'
            lambda c: c["optimizer"]["state"][0]["exp_avg_sq"].sub_(1),
            r"its optimizer state of [\w.]+ has a negative exp_avg_sq",
        ),
        (  # Adam's bias correction of step -3: the same 'loss became nan at step 4'
            lambda c: c["optimizer"]["state"][1].update(step=-c["optimizer"]["state"][1]["step"] - 1),
            r"its optimizer state of [\w.]+ has a negative step",
        ),
        (  # KeyError: 'exp_avg' from Adam's first step
            lambda c: [state.pop("exp_avg") for state in c["optimizer"]["state"].values()],
            r"its optimizer state of [\w.]+ lacks exp_avg",
        ),
        (  # 'does not fit this configuration (While copying the parameter named "head.weight", expected
            # torch.Tensor or Tensor-like object from checkpoint but ...); resume without changing model options'
            lambda c: c["model"].update({"head.weight": None}),
            r"its weights head\.weight are not tensors \(NoneType\); a model's weights are tensors",
        ),
        (
            lambda c: c["model"].update({"head.bias": [0.0] * 30}),
            r"its weights head\.bias are not tensors \(list\)",
        ),
        (  # "TypeError: expected Tensor as element 0 in argument 2, but got NoneType" from the first step, a traceback
            lambda c: c["optimizer"]["state"][0].update(exp_avg=None),
            r"its optimizer state of [\w.]+ holds no tensor as exp_avg",
        ),
        # tensors without values, and containers of another kind: 'does not fit this configuration (Cannot copy out of
        # meta tensor; no data!); resume without changing model options', options never changed
        (
            lambda c: c["optimizer"]["state"][1].update(
                exp_avg_sq=c["optimizer"]["state"][1]["exp_avg_sq"].to("meta")
            ),
            r"its optimizer is missing or malformed",
        ),
        (lambda c: c["optimizer"].update(param_groups=None), r"its optimizer is missing or malformed"),
        (lambda c: c.update(carry=[s.to_sparse() for s in c["carry"]]), r"its carry is missing or malformed"),
        (lambda c: c.update(rng=c["rng"].to("meta")), r"its rng is missing or malformed"),
        (  # set_rng_state's RuntimeError, said as 'does not fit this configuration; resume without changing ...'
            lambda c: c.update(rng=c["rng"][:100]),
            r"its rng is not a state of torch's random generator",
        ),
    ],  # (the carry's: IndexError: tuple index out of range, from the first step's forward)
)
def test_resume_from_a_checkpoint_missing_a_part_is_one_line(tmp_path, corpus, damage, message):
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    train(tiny_config(corpus, max_steps=2), run, log=quiet)
    ckpt = dict(load_checkpoint(run / "latest.pt"))
    for key in ("format", "version"):
        ckpt.pop(key)
    damage(ckpt)
    save_checkpoint(run / "latest.pt", ckpt)
    with pytest.raises(RnnkitError, match=message + r".*; to resume from the run's best\.pt"):
        train(tiny_config(corpus, max_steps=4), run, resume=True, log=quiet)


@pytest.mark.parametrize("keyed", [lambda w: dict(enumerate(w.values())), lambda w: {**w, 0: w["head.bias"]}])
def test_resume_from_a_checkpoint_whose_weights_are_keyed_by_numbers_is_one_line(tmp_path, corpus, keyed):
    """load_state_dict of {0: W_xh, 1: ...} (a damaged or hand-made file) ended in its AttributeError traceback,
    "'int' object has no attribute 'startswith'", then was said as 'does not fit this configuration (it lacks
    embedding.weight)' or ('int' object has no attribute 'startswith') with the advice to resume 'without changing
    model options', of options never changed: the file is damaged, as load_run says it."""
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    train(tiny_config(corpus, max_steps=2), run, log=quiet)
    ckpt = dict(load_checkpoint(run / "latest.pt"))
    ckpt["model"] = keyed(ckpt["model"])
    save_checkpoint(run / "latest.pt", {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    with pytest.raises(RnnkitError, match=r"latest\.pt is damaged \(its weights are keyed by 0 \(int\), .*not by "
                       r"names; a model's weights are named by strings\); to resume from the run's best\.pt"):  # fmt: skip
        train(tiny_config(corpus, max_steps=4), run, resume=True, log=quiet)


def test_resume_with_sizes_its_weights_do_not_have_says_so_before_allocating_them(tmp_path, corpus):
    """A config (an edited config.json) of hidden_size 10**6: the model was built before the checkpoint was
    compared with it, and the resume ended in torch's allocator error (the command line: 'out of memory ...')."""
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    train(tiny_config(corpus, max_steps=2), run, log=quiet)
    cfg = tiny_config(corpus, max_steps=4)
    cfg.model.hidden_size = 10**6
    with pytest.raises(RnnkitError, match=r"latest\.pt does not fit this configuration \(size mismatch for "):
        train(cfg, run, resume=True, log=quiet)
    # past 2^63 rows (an edited config.json's 10**19): torch's TypeError 'Overflow when unpacking long long', a
    # traceback of 50 C++ frames
    cfg.model.hidden_size = 10**19
    with pytest.raises(
        RnnkitError, match=r"latest\.pt does not fit this configuration \(its sizes make no model"
    ):
        train(cfg, run, resume=True, log=quiet)


def test_learning_rate_decays_as_char_rnn_does():
    """char-rnn multiplies the rate at the end of every epoch k with k >= learning_rate_decay_after; this
    applied one decay fewer (the char-rnn preset's first decay came after epoch 11, not 10)."""
    from rnnkit.train.config import TrainConfig
    from rnnkit.train.optim import lr_at_epoch

    for after in (0, 1, 2, 10):
        cfg = TrainConfig(lr=1.0, lr_decay=0.5, lr_decay_after=after)
        lr = 1.0  # char-rnn's optim_state.learningRate
        for epoch in range(1, 16):  # the end of epoch `epoch`: char-rnn's check, then the next epoch's rate
            if epoch >= after:
                lr *= 0.5
            assert lr_at_epoch(cfg, epoch) == lr, (after, epoch)
        assert lr_at_epoch(cfg, 0) == 1.0


def test_learning_rate_of_a_fractional_epoch_is_that_of_its_completed_epochs():
    """lr_at_epoch(cfg, 2.5) (a loop's step / windows per epoch) decayed by 0.5 ** 1.5, a rate char-rnn never has
    (0.5 half-way through the first epoch was 0.71), and -1, NaN or True were taken; now the completed epochs count
    and a bad epoch is one line."""
    from rnnkit.train.config import TrainConfig
    from rnnkit.train.optim import lr_at_epoch

    cfg = TrainConfig(lr=1.0, lr_decay=0.5, lr_decay_after=1)
    assert [lr_at_epoch(cfg, e) for e in (0, 0.5, 0.999, 1, 2.5, 3)] == [1.0, 1.0, 1.0, 0.5, 0.25, 0.125]
    for bad in (-1, math.nan, math.inf, True, "2"):
        with pytest.raises(RnnkitError, match="epoch must be a number >= 0 \\(the epochs completed\\), got"):
            lr_at_epoch(cfg, bad)


def test_learning_rate_decays_after_a_fractional_lr_decay_after_as_char_rnn_does():
    """char-rnn's check `epoch >= learning_rate_decay_after` at the end of each epoch takes 1.5 (its first decay at the
    end of epoch 2); lr_at_epoch(TrainConfig(lr_decay_after=1.5), 1) decayed by 0.5 ** 0.5 (0.707) instead."""
    from rnnkit.train.config import TrainConfig
    from rnnkit.train.optim import lr_at_epoch

    for after in (0.5, 1.5, 2.25):
        cfg = TrainConfig(lr=1.0, lr_decay=0.5, lr_decay_after=after)
        lr = 1.0
        for epoch in range(1, 6):
            lr *= 0.5 if epoch >= after else 1.0
            assert lr_at_epoch(cfg, epoch) == lr, (after, epoch)


def test_learning_rate_never_decays_with_lr_decay_after_inf():
    """lr_decay_after=inf (never decay, in a config of one's own) gave lr before the fractional rule; since, it ended
    in "OverflowError: cannot convert float infinity to integer" (math.ceil(inf))."""
    from rnnkit.train.config import TrainConfig
    from rnnkit.train.optim import lr_at_epoch

    cfg = TrainConfig(lr=1.0, lr_decay=0.5, lr_decay_after=math.inf)
    assert [lr_at_epoch(cfg, e) for e in (0, 1, 2.5, 1e6)] == [1.0, 1.0, 1.0, 1.0]


def test_make_optimizer_and_set_lr_take_a_tensor_rate_as_torch_optim_does():
    """torch.optim takes lr as a float or a Tensor, and so did make_optimizer and set_lr; since 03644d9 a tensor was
    refused as "lr must be a finite number >= 0, got tensor(0.0100)". A bad one is still refused."""
    from rnnkit.train.config import TrainConfig
    from rnnkit.train.optim import make_optimizer, set_lr

    for name in ("adam", "rmsprop", "adagrad", "sgd"):
        p = torch.nn.Parameter(torch.ones(2))
        optimizer = make_optimizer([p], TrainConfig(optimizer=name, lr=torch.tensor(0.01)))
        set_lr(optimizer, torch.tensor(0.02))
        p.grad = torch.ones(2)
        optimizer.step()
        assert (p < 1).all(), name
        for bad in (torch.tensor(math.nan), torch.tensor(-0.1), torch.tensor([0.1, 0.2]), torch.tensor(True)):
            with pytest.raises(RnnkitError, match="lr must be a finite number >= 0, got"):
                set_lr(optimizer, bad)


def test_min_char_rnn_clips_the_summed_gradient_at_5():
    """min-char-rnn clips the gradient of the window's summed loss to [-5, 5]; rnnkit's loss is the mean over
    the window's characters, so the preset's clip is 5 / 25 (at 5 it never fired: 125 on the sum)."""
    from rnnkit.presets import preset

    p = preset("min-char-rnn")
    assert p["train"]["clip_value"] * p["data"]["seq_len"] * p["data"]["batch_size"] == pytest.approx(5.0)


def test_min_char_rnn_validates_no_more_windows_than_it_trains_between():
    """min-char-rnn's batch is one stream of 25 characters, and so is its validation: the default corpus's 5% is
    6,000 windows, a call each, which at eval_every 1000 took longer than the 1,000 training steps between two
    validations (58% of a run's time). A validation reads no more windows than the steps between two (each
    window a forward pass only: about 12% of the time)."""
    from rnnkit.presets import preset
    from rnnkit.train.config import RunConfig
    from rnnkit.train.loop import load_data

    cfg = RunConfig.from_dict(preset("min-char-rnn"))
    _, _, val_batches = load_data(cfg, dry_run=False)
    assert len(val_batches) <= cfg.train.eval_every


def test_char_rnn_clips_the_gradient_of_the_loss_summed_over_the_window_at_5():
    """char-rnn's feval sums the batch-mean losses of the seq_length steps and clamps that sum's gradient to
    [-grad_clip, grad_clip] = [-5, 5] (its grad_params:div(opt.seq_length) is commented out: RMSprop does not
    care); rnnkit's loss is the mean over the window, so the preset's clip is 5 / 50 (at 5 it was 50x looser
    than char-rnn's: 250 on char-rnn's gradient)."""
    from rnnkit.presets import preset

    p = preset("char-rnn")
    assert p["train"]["clip_value"] * p["data"]["seq_len"] == pytest.approx(5.0)
    assert p["train"]["optimizer"] == "rmsprop" and p["train"]["clip_norm"] == 0.0


def test_a_preset_edited_by_its_caller_stays_as_it_is():
    """preset(name) gave the preset's own dict: a caller that edited what it got (a notebook's
    `p = preset("char-rnn"); p["train"]["lr"] = 1e-3`) changed the preset for every later run in the process."""
    from rnnkit.presets import preset

    p = preset("char-rnn")
    p["train"]["lr"] = 1.0
    p["data"].clear()
    assert preset("char-rnn")["train"]["lr"] == 2e-3 and preset("char-rnn")["data"]["seq_len"] == 50


def test_resume_reads_a_version_1_checkpoint_whose_optimizer_listed_b_xh_after_w_xh(tmp_path, corpus):
    """The cells torch.nn has list their parameters in torch.nn's order now (W_hh before b_xh), and an
    optimizer's state_dict pairs parameters by position: a version-1 checkpoint's Adam state (each b_xh right
    after its W_xh) would have loaded shape-mismatched, or silently swapped. Version 2 names them."""
    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=30, eval_every=10)
    cfg.model.cell, cfg.model.num_layers = "gru", 2
    train(cfg, tmp_path / "whole", log=quiet)
    cfg.train.max_steps = 20
    train(cfg, tmp_path / "split", log=quiet)
    path = tmp_path / "split" / "latest.pt"
    ckpt = load_checkpoint(path)
    assert ckpt["version"] == 2
    names = ckpt.pop("param_names")
    old = []  # version 1's order: b_xh right after W_xh
    for name in names:
        if not name.endswith("b_xh"):
            old.append(name)
        if name.endswith("W_xh"):
            old.append(name[: -len("W_xh")] + "b_xh")
    assert old != names and sorted(old) == sorted(names)
    opt = ckpt["optimizer"]
    opt["state"] = {old.index(name): opt["state"][i] for i, name in enumerate(names)}
    save_checkpoint(path, {**ckpt, "param_names": names})  # a state that does not fit its names
    cfg.train.max_steps = 30
    with pytest.raises(
        RnnkitError,
        match=r"does not fit .*optimizer exp_avg of rnn.cells.0.W_hh is \(96,\), the parameter \(96, 32\)",
    ):
        train(cfg, tmp_path / "split", resume=True, log=quiet)  # (fused Adam crashed the process on it)
    save_checkpoint(path, {**ckpt, "version": 1})
    train(cfg, tmp_path / "split", resume=True, log=quiet)
    whole, split = (read_metrics(tmp_path / run / "metrics.csv") for run in ("whole", "split"))
    assert [r["train_loss"] for r in whole] == [r["train_loss"] for r in split]


def test_a_ctrl_c_inside_best_pt_save_keeps_the_old_best(monkeypatch):
    """best_val was set before best.pt's save: a second Ctrl-C inside that save left latest.pt claiming a best that
    the old best.pt doesn't hold, and a later, slightly worse validation then didn't replace best.pt."""
    from rnnkit.train import loop

    monkeypatch.setattr(loop, "evaluate", lambda model, batches, **bar: 1.5)
    progress = loop.Progress(best_val=2.0, initial_loss=4.0)

    def save(name):
        if name == "best.pt":
            raise KeyboardInterrupt

    row = {"train_loss": 1.6}
    with pytest.raises(KeyboardInterrupt):
        loop._validate(None, [], progress, row, save, lambda line: None, "out", lambda: 1.6)
    assert progress.best_val == 2.0


@pytest.mark.parametrize("epochs, windows, steps", [(1.5, 7, 10), (0.29, 100, 29), (2, 7, 14), (0.01, 7, 1)])
def test_max_epochs_rounds_down_as_char_rnn(epochs, windows, steps):
    """char-rnn runs floor(max_epochs * windows) iterations; rnnkit rounded up (1.5 epochs of 7 windows took 11
    steps, where char-rnn takes 10). A run still takes at least one step."""
    from rnnkit.train.loop import _total_steps

    cfg = RunConfig.from_dict({"train": {"max_epochs": epochs, "max_steps": 0}})
    assert _total_steps(cfg, range(windows)) == steps


def test_an_epoch_count_whose_steps_pass_a_floats_range_is_no_traceback(tmp_path, corpus):
    """--max-epochs 1e307 is finite, so validate took it, and its steps (1e307 x the windows) are inf: the run and
    its --resume ended in floor's 'OverflowError: cannot convert float infinity to integer' before the first step.
    Such a count is a limit no run reaches."""
    from rnnkit.train.loop import _total_steps

    cfg = RunConfig.from_dict({"train": {"max_epochs": 1e307, "max_steps": 0}})
    assert _total_steps(cfg, range(1000)) >= 2**62
    quiet = lambda line: None  # noqa: E731
    for steps, resume in [(2, False), (3, True)]:
        cfg = tiny_config(corpus, max_epochs=1e307, max_steps=steps)
        assert train(cfg, tmp_path / "run", resume=resume, log=quiet) == 0
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.csv")] == ["1", "2", "3"]


def test_a_kill_after_latest_pt_loses_no_metrics_row(tmp_path, corpus, monkeypatch):
    """latest.pt of step N was saved before metrics.csv's row N was appended: a kill -9 between the two left a run
    that resumed at step N without row N, for good. The row is written first: a kill between them resumes from the
    checkpoint before, and steps on from there write their rows again."""
    from rnnkit.train import loop

    class Killed(BaseException):
        pass

    real = loop.save_checkpoint

    def killed_after_step_5(path, payload):
        real(path, payload)
        if path.name == "latest.pt" and payload["progress"]["step"] == 5:
            raise Killed

    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=10, eval_every=5)
    monkeypatch.setattr(loop, "save_checkpoint", killed_after_step_5)
    with pytest.raises(Killed):
        train(cfg, tmp_path / "run", log=quiet)
    monkeypatch.setattr(loop, "save_checkpoint", real)
    assert train(cfg, tmp_path / "run", resume=True, log=quiet) == 0
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.csv")]
    assert steps == [str(s) for s in range(1, 11)]


@pytest.mark.parametrize("optimizer, lr", [("adam", 1e-2), ("rmsprop", 1e-2), ("adagrad", 0.1), ("sgd", 0.5)])
def test_training_steps_equal_a_plain_torch_loop(tmp_path, optimizer, lr):
    """12 steps of `train` (2 epochs and 2 windows: the state carried between windows, detached, and reset at each
    epoch; the rate decayed at the end of every epoch from --lr-decay-after on, as char-rnn does) give the weights of a
    plain torch loop in float64 written from the documented rules: the window's mean loss, --clip-norm then
    --clip-value, --weight-decay wd·θ added to the clipped gradient (torch's L2, not AdamW's), and each optimizer's
    update (rmsprop: char-rnn's α 0.95 and 1e-8 outside the root)."""
    text = (
        "the quick brown fox jumps over the lazy dog. " * 4 + "pack my box with five dozen liquor jugs!\n"
    ) * 6
    (tmp_path / "c.txt").write_text(text)
    cfg = RunConfig.from_dict({
        "data": {"corpus": str(tmp_path / "c.txt"), "seq_len": 10, "batch_size": 20, "val_frac": 0.1},
        "model": {"cell": "lstm", "hidden_size": 8, "num_layers": 2, "embedding_size": 0},
        "train": {"optimizer": optimizer, "lr": lr, "lr_decay": 0.5, "lr_decay_after": 1, "clip_norm": 0.5,
                  "clip_value": 0.02, "weight_decay": 0.1, "max_steps": 12, "max_epochs": 0, "eval_every": 100,
                  "sample_every": 0, "seed": 3},
    })  # fmt: skip
    train(cfg, tmp_path / "run", log=lambda s: None)
    got = load_checkpoint(tmp_path / "run" / "latest.pt")["model"]

    from rnnkit.models.charlm import CharLM

    chars = sorted(set(text))
    tokens = torch.tensor([chars.index(c) for c in text])
    tokens = tokens[: len(tokens) - round(len(tokens) * 0.1)]
    B, T, V = 20, 10, len(chars)
    L = (len(tokens) - 1) // B
    xs, ys = tokens[: B * L].reshape(B, L), tokens[1 : B * L + 1].reshape(B, L)
    windows = L // T
    assert windows == 5
    torch.manual_seed(3)
    model = CharLM(cfg.model)  # its initial weights
    rnn, head = model.rnn.to_torch().double(), torch.nn.Linear(8, V).double()
    head.load_state_dict(model.head.state_dict())
    params = list(rnn.parameters()) + list(head.parameters())
    m1, m2 = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    rate, state = lr, None
    for i in range(1, 13):
        k = (i - 1) % windows
        state = None if k == 0 else state
        hs, state = rnn(torch.nn.functional.one_hot(xs[:, k * T : (k + 1) * T], V).double(), state)
        state = tuple(s.detach() for s in state)
        loss = torch.nn.functional.cross_entropy(head(hs).flatten(0, 1), ys[:, k * T : (k + 1) * T].flatten())
        grads = torch.autograd.grad(loss, params)
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        grads = [(g * min(1.0, 0.5 / norm)).clamp(-0.02, 0.02) for g in grads]
        with torch.no_grad():
            for p, g, a, b in zip(params, grads, m1, m2):
                g = g + 0.1 * p
                if optimizer == "adam":
                    a.mul_(0.9).add_(0.1 * g)
                    b.mul_(0.999).add_(0.001 * g * g)
                    p -= rate * (a / (1 - 0.9**i)) / ((b / (1 - 0.999**i)).sqrt() + 1e-8)
                elif optimizer == "rmsprop":
                    a.mul_(0.95).add_(0.05 * g * g)
                    p -= rate * g / (a.sqrt() + 1e-8)
                elif optimizer == "adagrad":
                    a.add_(g * g)
                    p -= rate * g / (a.sqrt() + 1e-8)
                else:
                    p -= rate * g
        if (
            i % windows == 0 and i // windows >= 1
        ):  # char-rnn: the end of an epoch >= learning_rate_decay_after
            rate *= 0.5
    ours = model.rnn.from_torch(rnn).state_dict()
    for name, p in {
        **{f"rnn.{k}": v for k, v in ours.items()},
        "head.weight": head.weight,
        "head.bias": head.bias,
    }.items():
        torch.testing.assert_close(got[name].double(), p, rtol=1e-5, atol=1e-5, msg=name)


def test_log_takes_every_line_of_the_run(tmp_path, corpus, capsys):
    """train(..., log=...) took the header and the last line, while the validation lines and the samples were
    printed to stdout whatever log was (log=lambda s: None still printed them through the progress bar)."""
    lines = []
    cfg = tiny_config(corpus, max_steps=4, eval_every=2, sample_every=2, sample_length=10)
    assert train(cfg, tmp_path / "run", log=lines.append) == 0
    assert capsys.readouterr().out == ""
    assert [line.split(":")[0] for line in lines if line.startswith("step ")] == ["step 2", "step 4"]
    assert sum(line.startswith("---- sample at step") for line in lines) == 2
    assert lines[0].startswith("corpus ") and lines[-1].startswith("done: 4 steps")


def test_a_dry_runs_header_gives_the_length_of_its_slice(tmp_path, corpus):
    """The header gave the whole corpus's length while the dry run trained on its first 20,000 characters."""
    text = tmp_path / "long.txt"
    text.write_text(corpus.read_text() * 5)  # 30,750 characters
    lines = []
    assert train(tiny_config(text), tmp_path / "smoke", dry_run=True, log=lines.append) == 0
    assert lines[0].startswith(
        f"corpus {text}: the first 20,000 of its 30,750 chars (dry run), vocabulary 30"
    )
    lines.clear()
    assert train(tiny_config(corpus), tmp_path / "short", dry_run=True, log=lines.append) == 0
    assert lines[0].startswith(f"corpus {corpus}: 6,150 chars, vocabulary 30")


def test_a_second_ctrl_c_just_after_a_metrics_row_is_written_does_not_write_it_again(
    tmp_path, corpus, monkeypatch
):
    """Two Ctrl-C landing after the step's row was written to metrics.csv but before the loop marked it written: the
    interrupt handler wrote the row again, and metrics.csv held step 3 twice."""
    import os
    import signal

    from rnnkit.train import loop

    real, fired = loop.MetricsLog.write, []

    def twice_after_step_3(self, **row):
        real(self, **row)
        if row["step"] == 3 and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(loop.MetricsLog, "write", twice_after_step_3)
    lines = []
    assert train(tiny_config(corpus, max_steps=10), tmp_path / "run", log=lines.append) == 130
    assert sum("stopping after this step" in line for line in lines) == 1
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.csv")] == ["1", "2", "3"]
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["progress"]["step"] == 3


def test_a_ctrl_c_while_the_stop_saves_its_checkpoint_does_not_cut_it(tmp_path, corpus, monkeypatch):
    """Ctrl-C (or SIGTERM) twice in a row: the first stopped the run after its step, and the second, landing while that
    stop wrote latest.pt, cut the write: a traceback (torch's zip writer, "RuntimeError: [enforce fail at
    inline_container.cc:672] . unexpected pos 577600 vs 577488") or 'rnnkit: interrupted', exit 1 or 130, the steps
    since the last checkpoint lost. The stop's checkpoint is now saved whole, the signal said."""
    import os
    import signal

    from rnnkit.train import loop

    real_write, real_save = loop.MetricsLog.write, loop.save_checkpoint

    def first_after_step_3(self, **row):
        real_write(self, **row)
        if row["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    def second_while_saving(path, payload):
        if payload["progress"]["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        real_save(path, payload)

    monkeypatch.setattr(loop.MetricsLog, "write", first_after_step_3)
    monkeypatch.setattr(loop, "save_checkpoint", second_while_saving)
    lines = []
    assert train(tiny_config(corpus, max_steps=10), tmp_path / "run", log=lines.append) == 130
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["progress"]["step"] == 3
    assert "saving the checkpoint, then stopping" in lines


def test_a_ctrl_c_inside_torch_save_is_a_ctrl_c(tmp_path, monkeypatch):
    """A KeyboardInterrupt inside torch.save's writes came out as the zip writer's RuntimeError ('[enforce fail at
    inline_container.cc:672] . unexpected pos 46 vs 0'), a traceback where the command says 'interrupted'; the
    checkpoint there before stays."""
    import contextlib

    real = ckpt_mod.atomic_open

    class CutAtThirdWrite:
        def __init__(self, f):
            self.f, self.writes = f, 0

        def write(self, b):
            self.writes += 1
            if self.writes == 3:
                raise KeyboardInterrupt
            return self.f.write(b)

        def flush(self):
            self.f.flush()

    @contextlib.contextmanager
    def cut_open(path, mode="w", **kw):
        with real(path, mode, **kw) as f:
            yield CutAtThirdWrite(f)

    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"chars": "ab"})
    monkeypatch.setattr(ckpt_mod, "atomic_open", cut_open)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"chars": "abc", "model": {"w": torch.zeros(1000)}})
    assert load_checkpoint(path)["chars"] == "ab"
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_a_checkpoint_it_may_not_read_is_named_so_not_corrupt(tmp_path, monkeypatch):
    """zipfile.is_zipfile says False for a file it can't open: permission denied read as 'not an rnnkit checkpoint
    (corrupt, truncated or another format)', and the fix offered was the run's other checkpoint."""
    import builtins

    path = tmp_path / "best.pt"
    save_checkpoint(path, {"config": "{}", "chars": "ab"})
    save_checkpoint(tmp_path / "latest.pt", {"config": "{}", "chars": "ab"})
    real_open = builtins.open

    def denied(file, *args, **kwargs):  # chmod 000, which root reads all the same
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(
        RnnkitError, match=f"^cannot read {re.escape(str(path))}: Permission denied; check its permissions$"
    ):
        load_checkpoint(tmp_path)


def test_save_checkpoint_refuses_numpy_numbers_that_loading_would_refuse(tmp_path):
    """A numpy float64 or str_ is a float or str to isinstance (a namedtuple a tuple, a defaultdict a dict): the check
    let it through, the checkpoint was written, and loading it (weights_only) refused it as 'a Python object that
    only running code could make'."""
    import collections

    import numpy as np

    pair = collections.namedtuple("pair", "a b")
    for value, name in [(np.float64(1.5), "float64"), (np.str_("a"), "str_"), (pair(1, 2), "pair"),
                        (collections.defaultdict(list), "defaultdict")]:  # fmt: skip
        with pytest.raises(RnnkitError, match=rf"payload\['progress'\]\['best_val'\] \({name}\) is not one"):
            save_checkpoint(tmp_path / "c.pt", {"progress": {"best_val": value}})
    assert not list(tmp_path.iterdir())


def test_a_pipe_given_as_a_checkpoint_is_named_not_missing(tmp_path):
    """A FIFO (or a device, a socket) exists but is no regular file: it was said to be 'not found'."""
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    with pytest.raises(
        RnnkitError, match=r"model\.pt is not a regular file \(a pipe, device or socket\); give"
    ):
        load_checkpoint(fifo)
    with pytest.raises(RnnkitError, match=r"missing\.pt not found; give a run folder or a checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_the_metrics_log_keeps_a_bounded_series_for_the_plot(tmp_path, monkeypatch):
    """MetricsLog.rows, which loss.png is redrawn from at every evaluation, kept every step's row: in a 1M-step run
    590 MB, and each plot near the end took 2.8 s (0.9 s at 100k rows), about 4 hours in all. It now keeps every row
    with a validation loss, the newest row, and the others thinned to at most MAX_TRAIN_POINTS; metrics.csv keeps them
    all, and a resumed log is as bounded."""
    from rnnkit.train import metrics

    monkeypatch.setattr(metrics, "MAX_TRAIN_POINTS", 100, raising=False)
    path = tmp_path / "metrics.csv"
    log = metrics.MetricsLog(path)
    for step in range(1, 3001):
        log.write(step=step, wall_s=step * 0.1, train_loss=2.0, val_loss=1.5 if step % 100 == 0 else None)
    log.write(step=3001, wall_s=300.1, train_loss=1.9)
    assert len(read_metrics(path)) == 3001
    for got in (log.rows, metrics.MetricsLog(path, resume_step=3001).rows):
        val = [int(r["step"]) for r in got if r["val_loss"] != ""]
        train_only = [int(r["step"]) for r in got if r["val_loss"] == ""]
        assert val == list(range(100, 3001, 100))
        assert 50 <= len(train_only) <= 102
        assert train_only == sorted(train_only)
    assert log.rows[-1]["step"] == 3001
    metrics.plot_losses(log.rows, tmp_path / "loss.png")


def test_a_second_run_in_a_folder_a_run_is_writing_is_refused(tmp_path, corpus):
    """Two runs in one --out folder at once (started together, or a --resume or --force in another terminal while
    the first still ran) each passed the checks and wrote there: metrics.csv held both runs' rows interleaved, the
    checkpoints and config.json were whichever wrote last, --force removed the running one's files, and both said
    'done'. The second is refused in one line while the first runs (here: started from the first's log lines)."""
    run, refused = tmp_path / "run", []

    def second(**how):
        try:
            train(tiny_config(corpus, max_steps=4, seed=8), run, log=lambda s: None, **how)
        except RnnkitError as e:
            refused.append(str(e))

    def log(line):
        if line.startswith("corpus "):  # the header: the first run has made the folder
            second(force=True)
        elif line.startswith("step 2:"):  # a validation: latest.pt is there
            second(resume=True)

    assert train(tiny_config(corpus, max_steps=4, eval_every=2), run, log=log) == 0
    assert len(refused) == 2 and all(f"another run is writing to {run}" in e for e in refused), refused
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == ["1", "2", "3", "4"]
    assert train(tiny_config(corpus, max_steps=6, eval_every=2), run, resume=True, log=lambda s: None) == 0


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork here")
def test_a_child_forked_during_a_run_does_not_hold_its_folder_after_it(tmp_path, corpus):
    """A child forked while a run held its folder's flock (a program's worker, forked by another thread or, here, by
    the run's log) had a copy of the folder's descriptor, which kept the lock for as long as the child lived: once
    the run had ended, its resume was refused 'another run is writing to ...'. The child closes its copy at once."""
    import warnings

    run, children = tmp_path / "run", []
    read, write = os.pipe()

    def log(line):
        if line.startswith("corpus "):  # inside the run, its folder locked
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # (a multi-threaded process forked)
                pid = os.fork()
            if pid == 0:  # alive until the test is done with it
                os.close(write)
                os.read(read, 1)
                os._exit(0)
            children.append(pid)

    try:
        assert train(tiny_config(corpus, max_steps=2, eval_every=2), run, log=log) == 0
        assert (
            train(tiny_config(corpus, max_steps=4, eval_every=2), run, resume=True, log=lambda s: None) == 0
        )
    finally:
        os.close(write)
        os.close(read)
        for pid in children:
            os.waitpid(pid, 0)
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == ["1", "2", "3", "4"]


def test_a_resume_of_a_finished_run_while_a_run_writes_there_is_refused(tmp_path, corpus):
    """A --resume whose limit the running run's latest.pt had passed (--max-steps 2 at its step 2) was answered
    from that checkpoint while the run still wrote there: 'the run in OUT is already at step 2 (--max-steps 2):
    nothing to do', exit 0 (a restart loop took the run for finished), where the README says a --resume in
    another terminal is refused. It is now refused in one line as any other run there."""
    run, got = tmp_path / "run", []

    def log(line):
        if line.startswith(
            "step 4:"
        ):  # a validation: latest.pt is there, at step 2 (step 4's is saved after)
            try:
                got.append(train(tiny_config(corpus, max_steps=2), run, resume=True, log=got.append))
            except RnnkitError as e:
                got.append(str(e))

    assert train(tiny_config(corpus, max_steps=6, eval_every=2), run, log=log) == 0
    assert len(got) == 1 and f"another run is writing to {run}" in str(got[0]), got
    assert train(tiny_config(corpus, max_steps=2), run, resume=True, log=got.append) == 0  # ended: one line
    assert "is already at step 6 (--max-steps 2)" in got[-1]


def test_a_run_that_ends_in_the_folder_while_another_starts_there_is_not_written_over(
    tmp_path, corpus, monkeypatch
):
    """A run read the folder (check_out's 'already holds a run', --resume's latest.pt) before it took the folder's
    lock, the corpus loaded in between: a run that wrote there and ended meanwhile was written over, a --resume
    going on from the latest.pt of before (the other run's steps 3 and 4 dropped from metrics.csv and taken
    again), a new run without --force replacing the run. The checks are made again under the lock: refused."""
    from rnnkit.train import loop

    run, load_data = tmp_path / "run", loop.load_data
    assert train(tiny_config(corpus, max_steps=2), run, log=lambda s: None) == 0

    def another_run_ends_meanwhile(out, **how):
        def load(*args):  # between the first checks and the lock
            monkeypatch.setattr(loop, "load_data", load_data)
            assert train(tiny_config(corpus, max_steps=4), out, log=lambda s: None, **how) == 0
            return load_data(*args)

        monkeypatch.setattr(loop, "load_data", load)

    another_run_ends_meanwhile(run, resume=True)
    with pytest.raises(RnnkitError, match=r"latest\.pt was replaced by another run .* --resume again"):
        train(tiny_config(corpus, max_steps=6), run, resume=True, log=lambda s: None)
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == ["1", "2", "3", "4"]

    another_run_ends_meanwhile(new := tmp_path / "new")
    with pytest.raises(RnnkitError, match=r"already holds a run; use --resume to continue it or --force"):
        train(tiny_config(corpus, max_steps=3, seed=8), new, log=lambda s: None)
    assert [r["step"] for r in read_metrics(new / "metrics.csv")] == ["1", "2", "3", "4"]


def test_a_second_ctrl_c_inside_the_optimizer_step_finishes_the_step(tmp_path, corpus, monkeypatch):
    """Two Ctrl-C landing in the optimizer step (its update under way, or just taken): the KeyboardInterrupt came
    before the loop marked the step taken, so the step was 'undone' (its carried state and random stream put back)
    over weights and moments already updated, and --resume trained that window a second time (other weights than
    an uninterrupted run's). The step is now finished, its row written, and --resume continues exactly."""
    import signal

    from rnnkit.train import loop

    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=8, eval_every=3)
    cfg.model.dropout = 0.3
    train(cfg, tmp_path / "whole", log=quiet)
    real = loop.make_optimizer

    def twice_in_step_5(params, t):
        optimizer = real(params, t)
        step, calls = optimizer.step, []

        def stepped(*a, **k):
            out = step(*a, **k)
            calls.append(1)
            if len(calls) == 5:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
            return out

        optimizer.step = stepped
        return optimizer

    monkeypatch.setattr(loop, "make_optimizer", twice_in_step_5)
    assert train(cfg, tmp_path / "split", log=quiet) == 130
    assert load_checkpoint(tmp_path / "split" / "latest.pt")["progress"]["step"] == 5
    monkeypatch.undo()
    assert train(cfg, tmp_path / "split", resume=True, log=quiet) == 0
    whole, split = (load_checkpoint(tmp_path / name / "latest.pt")["model"] for name in ("whole", "split"))
    assert all(torch.equal(whole[k], split[k]) for k in whole)
    rows = read_metrics(tmp_path / "split" / "metrics.csv")
    assert [r["step"] for r in rows] == [str(s) for s in range(1, 9)]
    assert [r["train_loss"] for r in rows] == [
        r["train_loss"] for r in read_metrics(tmp_path / "whole" / "metrics.csv")
    ]


def test_resume_in_a_read_only_run_folder_says_to_make_it_writable(tmp_path, corpus, monkeypatch):
    """A run folder that is read-only (its permissions, a file system mounted read-only) was refused on --resume
    with 'cannot make the --out folder ...; give another folder': the folder is there, and a resume in another
    one has nothing to resume."""
    from rnnkit.train import loop

    run = tmp_path / "run"
    train(tiny_config(corpus, max_steps=2), run, log=lambda s: None)
    access = os.access
    monkeypatch.setattr(loop.os, "access", lambda p, mode, **kw: str(p) != str(run) and access(p, mode, **kw))
    with pytest.raises(
        RnnkitError, match=r"^cannot resume .*run: the folder is not writable .*; make it writable"
    ):
        train(tiny_config(corpus, max_steps=4), run, resume=True, log=lambda s: None)


def test_a_second_ctrl_c_inside_validation_keeps_the_validation(tmp_path, corpus, monkeypatch):
    """Two Ctrl-C landing in a step's validation stopped the run with the step kept and its validation lost for good:
    its metrics row had no val_loss and --resume went on at the next step, never validating it (where that step had
    the best validation, best.pt differed from an uninterrupted run's). The validation now finishes first."""
    import signal

    from rnnkit.train import loop

    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=8, eval_every=3)
    train(cfg, tmp_path / "whole", log=quiet)
    real, calls = loop.evaluate, []

    def twice_in_the_second(model, batches, **bar):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(model, batches, **bar)

    monkeypatch.setattr(loop, "evaluate", twice_in_the_second)
    split = _stopped_and_resumed_as_whole(cfg, tmp_path, monkeypatch)
    assert split[5]["val_loss"] != ""


def _stopped_and_resumed_as_whole(cfg, tmp_path, monkeypatch):
    """The run "split" (its interruption patched in by the caller) stops with 130, is resumed without the patch, and
    ends as the run "whole": the same validations at the same steps, the same latest.pt and best.pt. Its rows."""
    quiet = lambda s: None  # noqa: E731
    assert train(cfg, tmp_path / "split", log=quiet) == 130
    monkeypatch.undo()
    assert train(cfg, tmp_path / "split", resume=True, log=quiet) == 0
    whole, split = (read_metrics(tmp_path / name / "metrics.csv") for name in ("whole", "split"))
    assert [(r["step"], r["val_loss"]) for r in split] == [(r["step"], r["val_loss"]) for r in whole]
    for name in ("latest.pt", "best.pt"):
        a, b = (load_checkpoint(tmp_path / run / name)["model"] for run in ("whole", "split"))
        assert all(torch.equal(a[k], b[k]) for k in a)
    return split


def test_resuming_a_finished_run_draws_a_plot_the_run_did_not(tmp_path, corpus):
    """A kill after a finished run's last checkpoint and metrics row but before its loss.png (during its last
    sample) left the plot of an earlier validation, and a --resume, finding the run done, returned without drawing
    it. It is drawn there where it is missing or older than metrics.csv (and left alone where it is not)."""
    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=4, eval_every=2)
    run = tmp_path / "run"
    train(cfg, run, log=quiet)
    png = run / "loss.png"
    png.unlink()
    assert train(cfg, run, resume=True, log=quiet) == 0
    assert png.read_bytes().startswith(b"\x89PNG")
    drawn = png.stat().st_mtime_ns
    assert train(cfg, run, resume=True, log=quiet) == 0
    assert png.stat().st_mtime_ns == drawn


def test_evaluate_of_no_windows_says_so_in_one_line():
    """evaluate(model, []) ended in Python's 'ZeroDivisionError: float division by zero'."""
    from rnnkit.models.charlm import CharLM, CharLMConfig
    from rnnkit.train.loop import evaluate

    with pytest.raises(RnnkitError, match="^evaluate was given no windows"):
        evaluate(CharLM(CharLMConfig(vocab_size=5, hidden_size=4, num_layers=1)), [])


def test_evaluate_counts_the_characters_a_padded_window_scores():
    """CharLM(batch) leaves a target of -100 (cross_entropy's ignore_index, torch's padding) out of its mean loss, and
    evaluate weighted that mean by every target, padding too: 1.538 where the scored characters' mean is 1.570 (a
    stream that ended, padded), and NaN after a window of padding alone. It counts the scored characters now."""
    from rnnkit.data.bptt import Window
    from rnnkit.models.charlm import CharLM, CharLMConfig
    from rnnkit.train.loop import evaluate

    torch.manual_seed(0)
    model = CharLM(CharLMConfig(vocab_size=5, hidden_size=4, num_layers=1))
    xs, ys = torch.randint(0, 5, (2, 6)), torch.randint(0, 5, (2, 6))
    padded = ys[:, 3:].clone()
    padded[1] = -100  # the second stream ended after 3 characters
    windows = [
        Window(xs[:, :3], ys[:, :3]),
        Window(xs[:, 3:], padded),
        Window(xs[:, 3:], torch.full_like(padded, -100)),
    ]
    model.eval()
    with torch.no_grad():  # the scored characters' mean, each from the state the windows before left
        logits = model.run(xs)[0][:, :6].flatten(0, 1)
        targets = torch.cat([ys[:, :3], padded], 1).flatten()
        want = F.cross_entropy(logits, targets, reduction="sum", ignore_index=-100) / 9
    assert evaluate(model, windows) == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(RnnkitError, match=r"given 1 window\(s\) whose targets are all padding"):
        evaluate(model, windows[2:])  # (it said 'given no windows')
    with pytest.raises(RnnkitError, match="given no windows"):
        evaluate(model, [])


def _spanning_disks(data: bytes) -> bytes:
    """A zip with its zip64 end locator's disk number changed (one damaged byte): zipfile.is_zipfile raises
    BadZipFile 'zipfiles that span multiple disks are not supported' on it, where other damage answers False."""
    at = data.rfind(b"PK\x06\x07")
    assert at > 0  # torch.save writes zip64 records
    return data[: at + 5] + b"\xdc" + data[at + 6 :]


def test_a_checkpoint_whose_zip64_end_record_is_damaged_is_one_line(tmp_path):
    """One flipped byte there ended sample, score, eval and --resume in zipfile's BadZipFile traceback."""
    path = tmp_path / "best.pt"
    save_checkpoint(path, {"config": "{}"})
    path.write_bytes(_spanning_disks(path.read_bytes()))
    with pytest.raises(RnnkitError, match=r"best\.pt is not an rnnkit checkpoint \(corrupt, truncated"):
        load_checkpoint(path)


def test_a_sample_the_output_cant_encode_is_written_escaped(tmp_path):
    """A sample of characters the output's encoding lacks ('→' on an ASCII stdout) stopped the run in one line,
    and every step since the last checkpoint was lost; it is written escaped ('\\u2192') and training goes on."""
    corpus = tmp_path / "arrows.txt"
    corpus.write_text("left → right, up ↑ down.\n" * 200, encoding="utf-8")
    lines = []

    def ascii_print(line):  # print to a stdout of PYTHONIOENCODING=ascii
        lines.append(str(line).encode("ascii").decode("ascii"))

    cfg = tiny_config(corpus, max_steps=4, eval_every=2, sample_every=2, sample_length=200)
    assert train(cfg, tmp_path / "run", log=ascii_print) == 0
    assert any(line.startswith("done: 4 steps") for line in lines), lines


def test_a_sample_a_code_page_stdout_cant_encode_is_written_escaped(tmp_path, monkeypatch):
    """On a stdout of an 8-bit code page without 'é' (cp1251, a Russian Windows' redirected output) a sample's 'é'
    was escaped as Latin-1, the codec the encoder's error names ('charmap'), which keeps it: refused again, the run
    stopped with the steps since the last checkpoint lost. It is escaped in the stream's own encoding."""
    import io

    out = io.TextIOWrapper(io.BytesIO(), encoding="cp1251", errors="strict", write_through=True)
    monkeypatch.setattr("sys.stdout", out)
    corpus = tmp_path / "fr.txt"
    corpus.write_text("café crème, brûlée à côté.\n" * 200, encoding="utf-8")
    cfg = tiny_config(corpus, max_steps=4, eval_every=2, sample_every=2, sample_length=200)
    assert train(cfg, tmp_path / "run") == 0
    assert "done: 4 steps" in out.buffer.getvalue().decode("cp1251")


def test_a_sample_a_log_of_its_own_on_a_code_page_stream_cant_encode_is_written_escaped(tmp_path):
    """A log of one's own writing to a cp1251 stream: the fallback escaped in the error's codec, 'charmap' (Latin-1),
    which keeps 'é', and the run stopped on the second UnicodeEncodeError. It is escaped in ASCII then."""
    import io

    out = io.TextIOWrapper(io.BytesIO(), encoding="cp1251", errors="strict", write_through=True)
    corpus = tmp_path / "fr.txt"
    corpus.write_text("café crème, brûlée à côté.\n" * 200, encoding="utf-8")
    cfg = tiny_config(corpus, max_steps=4, eval_every=2, sample_every=2, sample_length=200)
    assert train(cfg, tmp_path / "run", log=lambda s: print(s, file=out)) == 0
    written = out.buffer.getvalue().decode("cp1251")
    assert "done: 4 steps" in written and "\\xe9" in written


class _Batches:
    """What restore reads of a run's batches: B streams, len windows an epoch."""

    B = 8

    def __len__(self):
        return 10


def _fresh_run(tmp_path, corpus):
    """A tiny run's latest.pt, and a model and optimizer of its configuration (one step taken: a state of its own)."""
    from rnnkit.data.bptt import Window
    from rnnkit.models.charlm import CharLM
    from rnnkit.train.optim import make_optimizer

    cfg = tiny_config(corpus, max_steps=2)
    train(cfg, tmp_path / "run", log=lambda s: None)
    ckpt = load_checkpoint(tmp_path / "run" / "latest.pt")
    cfg.model.vocab_size = len(ckpt["chars"])
    model = CharLM(cfg.model)
    optimizer = make_optimizer(model.parameters(), cfg.train)
    model(Window(torch.zeros(8, 2, dtype=torch.long), torch.zeros(8, 2, dtype=torch.long)))[1].backward()
    optimizer.step()
    return ckpt, model, optimizer


def test_restore_of_a_damaged_checkpoint_by_its_default_path_is_one_line(tmp_path, corpus):
    """restore's path defaults to the string 'latest.pt', which the damaged-checkpoint line read as a path
    (path.name): restore(ckpt, model, optimizer, batches) of a damaged checkpoint ended in "AttributeError: 'str'
    object has no attribute 'name'"; the line names latest.pt."""
    from rnnkit.train.loop import restore

    ckpt, model, optimizer = _fresh_run(tmp_path, corpus)
    with pytest.raises(RnnkitError, match=r"^latest\.pt is damaged \(its rng"):
        restore({**ckpt, "rng": ckpt["rng"][:100]}, model, optimizer, _Batches())


@pytest.mark.parametrize("damage", ["rng", "progress", "carry", "optimizer", "weights"])
def test_a_refused_restore_changes_nothing(tmp_path, corpus, damage):
    """restore loaded the weights and the optimizer's state before it refused a damaged rng, progress or carried
    state in the checkpoint (or an optimizer state lacking a setting, or a weight of another shape): a caller
    catching the error was left with a model changed in part. A refused restore leaves the model, the optimizer
    and torch's generator as they were."""
    from rnnkit.train.loop import restore

    ckpt, model, optimizer = _fresh_run(tmp_path, corpus)
    if damage == "rng":
        ckpt["rng"] = ckpt["rng"][:100]
    elif damage == "progress":
        ckpt["progress"] = {**ckpt["progress"], "window": 10**6}
    elif damage == "carry":
        ckpt["carry"] = [torch.zeros(1, 2, 3)]
    elif damage == "optimizer":
        for group in ckpt["optimizer"]["param_groups"]:
            del group["betas"]
    else:  # the last weight of another shape: the others were copied before load_state_dict refused
        last = list(ckpt["model"])[-1]
        ckpt["model"] = {**ckpt["model"], last: torch.zeros(3)}
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    before = optimizer.state_dict()
    moments = {i: {k: v.clone() for k, v in s.items()} for i, s in before["state"].items()}
    rng, carried = torch.get_rng_state(), model.state
    with pytest.raises((RnnkitError, RuntimeError), match="is damaged|size mismatch"):
        restore(ckpt, model, optimizer, _Batches())
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    after = optimizer.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for i, s in after["state"].items():
        assert all(torch.equal(v, moments[i][k]) for k, v in s.items()), i
    assert torch.equal(torch.get_rng_state(), rng) and model.state is carried


def test_a_dry_run_refuses_what_the_run_refuses(tmp_path, corpus):
    """--dry-run --sample-every -1 passed (the smoke test set it to 2 before the check), where the run it smoke-tests
    is refused: '--sample-every must be >= 0'."""
    for dry_run in (True, False):
        with pytest.raises(RnnkitError, match="--sample-every must be >= 0, got -1"):
            train(
                tiny_config(corpus, sample_every=-1),
                tmp_path / f"run{dry_run}",
                dry_run=dry_run,
                log=lambda s: None,
            )


def test_the_header_counts_one_window_in_the_singular(tmp_path, corpus):
    """A corpus of one window an epoch was said as '1 windows of 8x16 per epoch'."""
    text = tmp_path / "short.txt"
    text.write_text(corpus.read_text()[:200])  # 180 characters for training: one window of 8 streams x 16
    lines = []
    assert train(tiny_config(text, max_steps=1), tmp_path / "run", log=lines.append) == 0
    assert "; 1 window of 8x16 per epoch -> " in lines[0]


def test_a_corpus_that_is_one_of_the_runs_files_is_refused_before_any_work(tmp_path, corpus):
    """A corpus lying in --out under the name of a file the run writes (run/vocab.json, run/metrics.csv; or a hard
    link to one) was read, then written over by the run (vocab.json with no --force, any of them with --force: clear_out
    removed it first), the corpus lost. It is one line before anything is written; a corpus of another name in the
    run folder stays, --force removing only the run's own files."""
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    run.mkdir()
    for name, force in [
        ("vocab.json", False),
        ("metrics.csv", True),
        ("config.json", True),
        ("latest.pt", True),
    ]:
        text = run / name
        text.write_text(corpus.read_text())
        with pytest.raises(RnnkitError, match=rf"--out {re.escape(str(run))} would overwrite CORPUS .*{name}: the "
                           rf"run writes its {re.escape(name)} there; move the corpus out of the run folder or give "
                           "another --out"):  # fmt: skip
            train(tiny_config(text, max_steps=2), run, force=force, log=quiet)
        assert text.read_text() == corpus.read_text() and sorted(p.name for p in run.iterdir()) == [name]
        text.unlink()
    (run / "vocab.json").write_text(corpus.read_text())  # a link to it: the reads go there
    (tmp_path / "linked.txt").symlink_to(run / "vocab.json")
    with pytest.raises(
        RnnkitError, match="would overwrite CORPUS .*linked.txt: the run writes its vocab.json"
    ):
        train(tiny_config(tmp_path / "linked.txt", max_steps=2), run, log=quiet)
    (run / "vocab.json").unlink()
    hard = (
        tmp_path / "hard.txt"
    )  # a hard link elsewhere keeps its text (the run's files are replaced by a rename)
    hard.write_text(corpus.read_text())
    os.link(hard, run / "vocab.json")
    assert train(tiny_config(hard, max_steps=2), tmp_path / "run", log=quiet) == 0
    assert hard.read_text() == corpus.read_text() and (run / "vocab.json").read_text() != corpus.read_text()
    shutil.rmtree(run)
    run.mkdir()
    text = run / "text.txt"  # another name: read, kept by the run and by --force
    text.write_text(corpus.read_text())
    assert train(tiny_config(text, max_steps=2), run, log=quiet) == 0
    assert train(tiny_config(text, max_steps=2), run, force=True, log=quiet) == 0
    assert text.read_text() == corpus.read_text()


def test_only_the_runs_own_temporary_files_are_removed(tmp_path, corpus):
    """clear_out removed every NAME.*.tmp of a run file's NAME, wider than atomic_open's mkstemp names
    (NAME.XXXXXXXX.tmp): the user's run/vocab.json.mine.tmp was deleted in silence, and a folder of such a name
    (run/metrics.csv.backup.tmp) stopped every run, 'Is a directory: ...; check the path'. Only the files of
    mkstemp's exact names go."""
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    run.mkdir()
    (run / "vocab.json.mine.tmp").write_text("keep")
    (run / "metrics.csv.backup.tmp").mkdir()
    (run / "config.json.k1ll3d00.tmp").write_bytes(b"half")  # a kill's
    assert train(tiny_config(corpus, max_steps=2), run, log=quiet) == 0
    assert (run / "vocab.json.mine.tmp").read_text() == "keep" and (run / "metrics.csv.backup.tmp").is_dir()
    assert not (run / "config.json.k1ll3d00.tmp").exists()


def test_a_second_ctrl_c_between_the_update_and_its_validation_keeps_the_validation(
    tmp_path, corpus, monkeypatch
):
    """Two Ctrl-C landing after a step's update but before its validation (the progress bar's update between the
    two held blocks) stopped the run with the step kept and its validation lost for good: its row had no val_loss,
    and --resume went on at the next step. The step's update, validation and row are held as one block."""
    import signal

    from rnnkit.train import loop

    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=8, eval_every=3)
    train(cfg, tmp_path / "whole", log=quiet)

    class Bar(loop.tqdm):
        def update(self, n=1):
            out = super().update(n)
            if self.n == 6:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)
            return out

    monkeypatch.setattr(loop, "tqdm", Bar)
    _stopped_and_resumed_as_whole(cfg, tmp_path, monkeypatch)


def test_a_kill_between_best_pt_and_latest_pt_keeps_the_better_best(tmp_path, corpus):
    """A kill after a validation's best.pt but before its latest.pt left latest.pt recording the best_val of before,
    and a --resume whose next validation (another --eval-every, or a shorter run) was worse than best.pt's own but
    better than that record replaced best.pt with a worse model. On resume best_val is the better of the two."""
    quiet = lambda s: None  # noqa: E731
    run = tmp_path / "run"
    train(tiny_config(corpus, max_steps=10, eval_every=10), run, log=quiet)
    before = (run / "latest.pt").read_bytes()
    train(tiny_config(corpus, max_steps=20, eval_every=10), run, resume=True, log=quiet)
    best = load_checkpoint(run / "best.pt")["progress"]
    assert best["step"] == 20  # (the loss still falls at step 20)
    (run / "latest.pt").write_bytes(before)  # the kill: best.pt of step 20, latest.pt of step 10
    train(tiny_config(corpus, max_steps=15, eval_every=5), run, resume=True, log=quiet)
    vals = [float(r["val_loss"]) for r in read_metrics(run / "metrics.csv") if r["val_loss"]]
    assert vals[-1] > best["best_val"]  # step 15's validation: worse than best.pt's
    after = load_checkpoint(run / "best.pt")["progress"]
    assert (after["step"], after["best_val"]) == (20, best["best_val"])
    assert load_checkpoint(run / "latest.pt")["progress"]["best_val"] == best["best_val"]


def test_a_full_disk_while_a_checkpoint_is_written_is_said_as_one(tmp_path, monkeypatch):
    """torch.save's zip writer turns a write that failed into RuntimeError '[enforce fail at inline_container.cc:672]
    . unexpected pos 7936 vs 7864': a disk that filled up inside a checkpoint's write ended `rnnkit train` in that
    traceback. It is the OSError (No space left on device), naming the checkpoint; the old one is kept."""
    import contextlib
    import errno

    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1})
    real = ckpt_mod.atomic_open

    class Full:  # the disk fills up after the first 4 KiB
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            self.n += len(b)
            if self.n > 4096:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def flush(self):
            self.f.flush()

    @contextlib.contextmanager
    def full(path, mode):
        with real(path, mode) as f:
            yield Full(f)

    monkeypatch.setattr(ckpt_mod, "atomic_open", full)
    with pytest.raises(OSError) as e:
        save_checkpoint(path, {"step": 2, "w": torch.zeros(10_000)})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(path)
    assert load_checkpoint(path)["step"] == 1 and os.listdir(tmp_path) == ["latest.pt"]


def test_the_bars_closable_stream_is_cleared_before_a_line_as_its_stream_is(monkeypatch):
    """The bar's stream wrapper (_Closable, for a reader that goes away) was unequal to sys.stderr, so
    tqdm.external_write_mode, which clears the bars on stdout/stderr before a validation line or a sample, left a
    live bar on the terminal line the text then overwrote."""
    import io
    import sys

    from tqdm import tqdm

    from rnnkit.train.loop import _Closable

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = tqdm(total=3, file=_Closable(err, []))
    cleared = []
    monkeypatch.setattr(bar, "clear", lambda nolock=False: cleared.append(True))
    with tqdm.external_write_mode():
        pass
    bar.close()
    assert cleared == [True]


@pytest.mark.parametrize("clip_norm, advice", [(0.0, "a lower --lr, or set --clip-norm (0 now: off"),
                                               (1.0, "a lower --lr or --clip-norm")])  # fmt: skip
def test_a_blow_up_with_clipping_by_norm_off_names_a_clip_norm_to_set(tmp_path, corpus, clip_norm, advice):
    """With --clip-norm 0 (off: the char-rnn and min-char-rnn presets, a CORPUS without --preset) a blow-up advised
    'a lower --lr or --clip-norm', a norm below 0, which the run refuses; it names one to set instead."""
    cfg = tiny_config(corpus, max_steps=10, eval_every=2, lr=1e30, optimizer="sgd", clip_norm=clip_norm)
    with pytest.raises(RnnkitError, match=r"(became nan|exploded).*last good checkpoint") as e:
        train(cfg, tmp_path / "run", log=lambda s: None)
    assert advice in str(e.value) and ("or --clip-norm" in str(e.value)) == (clip_norm > 0)


def test_the_bars_numbers_are_set_a_few_times_a_second_not_at_every_step(tmp_path, corpus, monkeypatch):
    """The loop set the bar's loss and chars_s (tqdm's set_postfix, two numbers formatted) at every step, 3-8 µs of a
    min-char-rnn step, where tqdm draws the bar twice a second at most. They are set once in POSTFIX_EVERY seconds,
    at a validation's step and at the run's last: the bar drawn last shows the last step's loss."""
    import tqdm as tqdm_module

    from rnnkit.train import loop

    shown = []

    class Bar(tqdm_module.tqdm):
        def set_postfix(self, *args, **kwargs):
            shown.append((self.n + 1, kwargs.get("loss")))
            return super().set_postfix(*args, **kwargs)

    class Clock:  # steps of 1 ms
        now = 0.0

        def perf_counter(self):
            self.now += 0.0005
            return self.now

        def process_time(self):
            return 0.0

    monkeypatch.setattr(loop, "tqdm", Bar)
    monkeypatch.setattr(loop, "time", Clock())
    assert train(tiny_config(corpus, max_steps=7, eval_every=4), tmp_path / "run", log=lambda s: None) == 0
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    assert shown == [(step, f"{float(rows[step - 1]['train_loss']):.3f}") for step in (1, 4, 7)]


def test_a_work_inside_another_of_the_same_thread_leaves_the_outer_ones_thread_count():
    """A command's --threads inside a run's log callback (or one work inside another in one thread) put back, as it
    ended, the count of before the first work, so the outer work went on with it: with the process at 2, an outer
    work at 1 read 2 after an inner one at 1 ended (before 3c71137 each put back its own reading, 1). The inner puts
    back the count it found now; the outer, ending, the count of before, as before."""
    import torch

    from rnnkit._threads import threads_for_the_work

    start = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with threads_for_the_work(1):
            with threads_for_the_work(1):
                pass
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(start)


def test_works_ended_out_of_their_order_leave_the_thread_as_before():
    """Two works of one thread ended out of their order (an ExitStack, two generators) left its depth at 1 for good
    after e979f8c: with the thread at 2, works at 1 then 3, the first ended first, it read 1 after both (not 2), and
    a later work alone at 1 left it at 1 too (3c71137: 2 and 2)."""
    import contextlib
    import threading

    import torch

    from rnnkit._threads import threads_for_the_work

    read = []

    def work():  # (in a thread of its own: a depth left over would stay in the test's thread)
        torch.set_num_threads(2)
        first, second = contextlib.ExitStack(), contextlib.ExitStack()
        first.enter_context(threads_for_the_work(1))
        second.enter_context(threads_for_the_work(3))
        first.close()
        second.close()
        read.append(torch.get_num_threads())
        with threads_for_the_work(1):
            pass
        read.append(torch.get_num_threads())

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert read == [2, 2]


@pytest.mark.skipif(not hasattr(os, "register_at_fork"), reason="no fork here")
def test_a_child_forked_while_a_thread_puts_back_its_thread_count_can_set_its_own(monkeypatch):
    """rnnkit._threads' lock is held while a work puts back torch's count (set_num_threads, under it): a child forked
    by another thread just then inherited it held by a thread it doesn't have, and its first run or --threads command
    waited forever. The child starts with a fresh lock, its own thread's works counted."""
    import threading
    import warnings

    import torch

    from rnnkit import _threads

    inside, go, real = threading.Event(), threading.Event(), torch.set_num_threads
    worker = []

    def held(n):  # the worker thread putting its count back, under the lock, until the fork is done
        if threading.current_thread() is worker[0] and not inside.is_set():
            inside.set()
            go.wait(30)
        real(n)

    monkeypatch.setattr(torch, "set_num_threads", held)
    start = torch.get_num_threads()

    def work():
        with _threads.threads_for_the_work():
            pass

    worker.append(threading.Thread(target=work))
    worker[0].start()
    try:
        assert inside.wait(30)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # (a multi-threaded process forked)
            pid = os.fork()
        if pid == 0:  # the child: a work of its own
            try:
                with _threads.threads_for_the_work(1):
                    pass
                os._exit(0)
            finally:
                os._exit(3)
        status = _child_status(pid)
        assert status == 0, "the child's threads_for_the_work waited forever on the lock"
    finally:
        go.set()
        worker[0].join(30)
        real(start)


def test_a_child_forked_while_a_thread_holds_the_showwarning_lock_can_run():
    """train()'s shared showwarning (_warnings_above, 7a3dcb1) is counted under a lock: a child forked by one thread
    while another held it (a run starting or ending, preempted inside the block) inherited it held by a thread it
    doesn't have, and its first train() waited forever. The child starts with a fresh lock."""
    import threading
    import warnings

    from rnnkit.train import loop

    inside, go = threading.Event(), threading.Event()

    def hold():  # another thread's run inside the block, preempted there until the fork is done
        with loop._shown_lock:
            inside.set()
            go.wait(30)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert inside.wait(30)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # (a multi-threaded process forked)
            pid = os.fork()
        if pid == 0:  # the child: a run of its own installs and puts back the showwarning
            try:
                loop._warnings_above()()
                os._exit(0)
            finally:
                os._exit(3)
        status = _child_status(pid)
        assert status == 0, "the child's _warnings_above waited forever on the lock"
    finally:
        go.set()
        worker.join(30)


def _child_status(pid, seconds=10):
    """The exit status of the forked child pid, or None where it has not ended in `seconds` (then killed)."""
    import time

    for _ in range(int(seconds * 10)):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def test_a_resume_without_best_pt_writes_it_again_at_the_next_validation(tmp_path, corpus):
    """best.pt deleted (or latest.pt copied into a folder of its own) and the run resumed: the run still compared
    against the best it recorded, so no later validation, all worse, wrote best.pt again, and the closing line named
    a best val that no file held. Now the resume says so, and the next validation writes best.pt (as Keras's
    ModelCheckpoint(save_best_only) after a restart); the run's closing best is that of best.pt."""
    lines = []
    run = tmp_path / "run"
    train(tiny_config(corpus, max_steps=10, eval_every=5), run, log=lambda s: None)
    before = load_checkpoint(run / "latest.pt")["progress"]["best_val"]
    # (a recorded best that no later validation reaches, as a run past its best by overfitting: best.pt at step 15
    # is then written by the fresh best alone, where this corpus's falling val loss would write it anyway)
    latest = load_checkpoint(run / "latest.pt")
    latest["progress"]["best_val"] = 0.0
    save_checkpoint(run / "latest.pt", latest)
    (run / "best.pt").unlink()
    train(tiny_config(corpus, max_steps=15, eval_every=5), run, resume=True, log=lines.append)
    assert any("best.pt is missing: the run's best (val" in line for line in lines), lines
    best = load_checkpoint(run / "best.pt")["progress"]
    assert (
        best["step"] == 15 and best["best_val"] == load_checkpoint(run / "latest.pt")["progress"]["best_val"]
    )
    assert f"best val {best['best_val']:.4f}" in lines[-1] and math.isfinite(before)
    (run / "best.pt").unlink()  # a finished run resumed: no validation comes, and none is promised
    lines.clear()
    assert train(tiny_config(corpus, max_steps=15, eval_every=5), run, resume=True, log=lines.append) == 0
    assert "nothing to do" in lines[-1] and not any("missing" in line for line in lines), lines


@pytest.mark.parametrize("damage", ["truncated", "another corpus's"])
def test_a_resume_with_an_unusable_best_pt_writes_it_again_at_the_next_validation(tmp_path, corpus, damage):
    """A best.pt that is there but can't be used (truncated, another corpus's) was taken as no record, and the resume
    compared against latest.pt's recorded best: no later validation, all worse, replaced the unusable file, nothing
    was said, and the closing line named a best no file held. Now it is told as a missing best.pt is (254c6cc), and
    the next validation writes best.pt; latest.pt records a best of 0 that no validation reaches."""
    run, lines = tmp_path / "run", []
    train(tiny_config(corpus, max_steps=10, eval_every=5), run, log=lambda s: None)
    if damage == "truncated":
        data = (run / "best.pt").read_bytes()
        (run / "best.pt").write_bytes(data[: len(data) // 2])
    else:
        best = load_checkpoint(run / "best.pt")
        best["progress"]["corpus_id"] = "another corpus"
        save_checkpoint(run / "best.pt", best)
    latest = load_checkpoint(run / "latest.pt")
    latest["progress"]["best_val"] = 0.0
    save_checkpoint(run / "latest.pt", latest)
    train(tiny_config(corpus, max_steps=15, eval_every=5), run, resume=True, log=lines.append)
    said = "can't be read" if damage == "truncated" else "is another corpus's"
    assert any(f"best.pt {said}: the run's best (val 0.0000" in line for line in lines), lines
    best = load_checkpoint(run / "best.pt")["progress"]
    assert best["step"] == 15 and best["corpus_id"] == latest["progress"]["corpus_id"]
    assert f"best val {best['best_val']:.4f}" in lines[-1], lines


def test_a_resume_of_a_run_saved_before_its_corpus_id_was_kept_keeps_its_best_pt(tmp_path, corpus):
    """A run whose checkpoints record no corpus id (saved before it was kept; _check_corpus resumes it unchecked) had
    its best.pt called 'can't be read' (_recorded_best's KeyError) and replaced by the next validation, worse too.
    It is this corpus's best.pt; here it records a best of 0 that no validation reaches, so it stays."""
    run, lines = tmp_path / "run", []
    train(tiny_config(corpus, max_steps=10, eval_every=5), run, log=lambda s: None)
    for name, best_val in (("latest.pt", None), ("best.pt", 0.0)):
        ckpt = load_checkpoint(run / name)
        del ckpt["progress"]["corpus_id"]
        if best_val is not None:
            ckpt["progress"]["best_val"] = best_val
        save_checkpoint(run / name, ckpt)
    train(tiny_config(corpus, max_steps=15, eval_every=5), run, resume=True, log=lines.append)
    assert not any("best.pt" in line for line in lines[:-1]), lines
    best = load_checkpoint(run / "best.pt")["progress"]
    assert best["step"] == 10 and best["best_val"] == 0.0 and "best val 0.0000" in lines[-1], lines


def test_a_resume_compares_its_validations_with_the_val_best_pt_holds(tmp_path, corpus):
    """A kill between the first best.pt of a resume without one (254c6cc) and its latest.pt left latest.pt recording
    the best of the deleted best.pt, lower than the new one's: the next resume took the lower of the two, so a later
    validation better than best.pt's model did not replace it, and the closing line named a best no file held (a run
    on random characters: step 30's val 2.0808 not kept over best.pt's 2.0811 of step 25, 'best val 2.0803'). The
    val that best.pt records is the one compared; here latest.pt records a best of 0 that no file holds."""
    run, lines = tmp_path / "run", []
    train(tiny_config(corpus, max_steps=10, eval_every=5), run, log=lambda s: None)
    latest = load_checkpoint(run / "latest.pt")
    latest["progress"]["best_val"] = 0.0
    save_checkpoint(run / "latest.pt", latest)
    train(tiny_config(corpus, max_steps=15, eval_every=5), run, resume=True, log=lines.append)
    best = load_checkpoint(run / "best.pt")["progress"]
    assert best["step"] == 15 and f"best val {best['best_val']:.4f}" in lines[-1], lines


def _slow_validations(monkeypatch, seconds):
    """tqdm's clock, which runs `seconds` at each read while a validation is under way (and stands still else)."""
    import tqdm.std

    from rnnkit.train import loop

    now, validating, evaluate = [0.0], [False], loop.evaluate

    def clock():
        now[0] += seconds if validating[0] else 0.0
        return now[0]

    def slow(*args, **kwargs):
        validating[0] = True
        try:
            return evaluate(*args, **kwargs)
        finally:
            validating[0] = False

    monkeypatch.setattr(tqdm.std, "time", clock)
    monkeypatch.setattr(loop, "evaluate", slow)


def test_a_long_validation_has_its_own_bar_in_a_log_as_whole_lines(tmp_path, corpus, capsys, monkeypatch):
    """`rnnkit train` validated with its bar off: on 5% of 112 MB (40 s) the step bar sat still and nothing said what
    ran. A validation of more than VAL_BAR_DELAY s draws its own bar, with the loss so far; in a log (stderr no
    terminal) as the step bar: whole lines, one every LOG_EVERY s, at the left (no cursor-up codes). A short one
    draws none (the run's log is as before)."""
    assert train(tiny_config(corpus, max_steps=2, eval_every=2), tmp_path / "short", log=lambda s: None) == 0
    assert "eval" not in capsys.readouterr().err
    _slow_validations(monkeypatch, 10.0)  # 10 s at each read of tqdm's clock: 5 windows, 40 s or more
    assert train(tiny_config(corpus, max_steps=2, eval_every=2), tmp_path / "run", log=lambda s: None) == 0
    err = capsys.readouterr().err
    evals = [line for line in err.splitlines() if line.startswith("eval:")]
    assert evals and len(evals) <= 3 and all("loss=" in line and " chars" in line for line in evals), err
    assert "\r" not in err and "\x1b" not in err and err.endswith("\n"), err
    assert "2/2 [" in err.splitlines()[-1], err


def test_a_long_validations_bar_is_drawn_below_the_step_bar_and_cleared(tmp_path, corpus, monkeypatch):
    """On a terminal a long validation's bar is drawn below the step bar (tqdm's position 1) and cleared at its end
    (leave=False): the step bar is the terminal's last line again."""
    import io

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    _slow_validations(monkeypatch, 10.0)
    assert train(tiny_config(corpus, max_steps=2, eval_every=2), tmp_path / "run", log=lambda s: None) == 0
    drawn = terminal.getvalue()
    at = drawn.index("eval:")
    assert drawn[:at].endswith("\n\r") and "loss=" in drawn[at:], repr(drawn)  # a line below, then up again
    cleared = drawn.rindex("\x1b[A")
    assert "eval:" not in drawn[cleared:] and "2/2 [" in drawn[cleared:], repr(drawn)


@pytest.mark.parametrize(
    "value",
    [10**400, -(10**400), Fraction(10**400), Fraction(-(10**400), 3)],
    ids=["10**400", "-10**400", "Fraction(10**400)", "Fraction(-10**400, 3)"],
)
def test_a_number_past_floats_range_is_refused_in_one_line_by_validate_and_charlm(value):
    """A Python int is a Real: validate() of a RunConfig filled in Python with lr=10**400 (or any of the float
    options) raised a bare "OverflowError: int too large to convert to float" from math.isfinite, as did CharLM's
    forget_bias with torch_rnn=True; each says the option in one line. A Fraction past float's range failed before
    that, in _check_types' float() ("OverflowError: integer division result too large for a float")."""
    from rnnkit.models.charlm import CharLM, CharLMConfig
    from rnnkit.train.config import validate

    for section, name in [("train", "lr"), ("train", "clip_norm"), ("train", "sample_temperature"),
                          ("data", "val_frac"), ("model", "dropout"), ("model", "forget_bias")]:  # fmt: skip
        cfg = RunConfig()
        cfg.data.corpus = "tiny"
        setattr(getattr(cfg, section), name, value)
        with pytest.raises(RnnkitError, match="must be a finite number"):
            validate(cfg)
    with pytest.raises(RnnkitError, match="forget_bias must be a finite number"):
        CharLM(CharLMConfig(vocab_size=5, hidden_size=4, num_layers=1, forget_bias=value, torch_rnn=True))
    # 2**63, finite and below float32's largest value, failed in the assignment ("Overflow when unpacking long long")
    m = CharLM(CharLMConfig(vocab_size=5, hidden_size=4, num_layers=1, forget_bias=2**63, torch_rnn=True))
    assert m.rnn.bias_ih_l0[4:8].tolist() == [float(2**63)] * 4


@pytest.mark.parametrize(
    "tiny", [Fraction(1, 10**400), np.longdouble("1e-400")], ids=["Fraction", "longdouble"]
)
def test_a_limit_that_is_0_as_a_float_is_refused_not_taken_as_none(tiny):
    """A Real > 0 below float's least became 0.0 in validate's type check, and 0 is no limit to max_epochs,
    time_budget, clip_norm and clip_value: max_epochs=Fraction(1, 10**400), a run of one step, had no epoch limit,
    and such a clip_norm clipped nothing. Each is one line now; elsewhere (dropout) it is 0.0 as before."""
    from rnnkit.train.config import validate

    for name in ("max_epochs", "time_budget", "clip_norm", "clip_value"):
        cfg = RunConfig()
        setattr(cfg.train, name, tiny)
        with pytest.raises(
            RnnkitError, match=rf"^option train\.{name} .* is too small for a float: it reads as 0, "
        ):
            validate(cfg)
    cfg = RunConfig()
    cfg.model.dropout = tiny
    validate(cfg)
    assert cfg.model.dropout == 0.0 and type(cfg.model.dropout) is float
