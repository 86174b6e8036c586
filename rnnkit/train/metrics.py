"""Metrics of a run: one CSV row per step (validation loss where measured) and a loss-curve PNG."""

import contextlib
import csv
import gc
import io
import math
import numbers
import os
import pathlib

from rnnkit._io import atomic_open, refuse_empty, save_figure
from rnnkit.errors import RnnkitError, said

FIELDS = ["step", "epoch", "wall_s", "lr", "train_loss", "val_loss", "val_bpc", "chars_per_s"]
LN2 = math.log(2)


# the train loss's points a long run's plot keeps (every validation point is kept)
MAX_TRAIN_POINTS = 4000
# validation points drawn as markers up to this many (300 of them, a 60,000-step run's at --eval-every 200, were one
# band of markers over the train curve); more are a line
MARKED_VAL_POINTS = 100


class MetricsLog:
    """Appends rows to metrics.csv; on resume it keeps only the rows up to the checkpoint's step.

    `rows` is what the plot reads, bounded: every row with a validation loss, the newest row, and the others on
    the steps that are multiples of `stride`, which doubles whenever they pass MAX_TRAIN_POINTS (every step's row
    was kept: 590 MB in a 1M-step run, whose plot, redrawn at every evaluation, took 2.8 s near the end)."""

    _file = _writer = None  # metrics.csv, open for appending from the first row on (close() lets it go)

    def __init__(self, path, resume_step: int | None = None):
        self.path = pathlib.Path(path)
        rows = []
        if resume_step is not None and self.path.is_file():
            rows = [r for r in read_metrics(self.path) if int(r["step"]) <= resume_step]
        with atomic_open(self.path, "w", newline="") as f:  # a failed write leaves the old rows
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        self.rows, self.stride, self._train_points = [], 1, 0
        for r in rows:
            self._keep(r)

    @classmethod
    def rows_of(cls, path) -> list:
        """The rows a run's log would plot from metrics.csv at `path` (thinned as `rows`), the file left as it is."""
        log = cls.__new__(cls)
        log.rows, log.stride, log._train_points = [], 1, 0
        for r in read_metrics(path):
            log._keep(r)
        return log.rows

    def write(self, **row):
        """One row: step (a whole number) and any of FIELDS' other columns by name."""
        unknown = sorted(set(row) - set(FIELDS))
        if unknown:  # (loss=2.3 was dropped in silence, the row's train_loss left empty)
            raise RnnkitError(f"unknown metrics column {unknown[0]!r}; the columns are {', '.join(FIELDS)}")
        step = row.get("step")
        # (a row without one was lost on reading)
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise RnnkitError(f"a metrics row needs its step, a whole number, got {said(step)}")
        row = {k: _fmt(k, row.get(k)) for k in FIELDS}
        self._keep(row)
        # opened once, not for every row (its open and close were 20 of the 30 µs a row took, at every step), and
        # flushed after each: a row written is in the file, as the close put it there, whatever kills the run after.
        # A file removed, moved or replaced meanwhile (metrics.csv no longer the one held: a link left elsewhere, a
        # snapshot's or a rename's, kept taking the rows) is opened again by its name, as before
        try:
            if self._file is None or not self._held_is_named():
                self.close()
                self._file = open(self.path, "a", newline="")
                self._writer = csv.DictWriter(self._file, FIELDS)
                # made again (removed mid-run): its header, or its first row was read as one
                if self._file.tell() == 0:
                    self._writer.writeheader()
            self._writer.writerow(row)
            self._file.flush()
        except BaseException:  # (a full disk): closed, as each row's file was; the next row opens it again
            self.close()
            raise

    def _held_is_named(self) -> bool:
        """Whether the file held is the one `path` names now."""
        try:
            return os.path.samestat(os.fstat(self._file.fileno()), os.stat(self.path))
        except FileNotFoundError:
            return False

    def close(self):
        """Let metrics.csv go (the next row opens it again); what was written is in the file already."""
        f, self._file, self._writer = self._file, None, None
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()

    # a log dropped without close() (a loop of one's own): no ResourceWarning of its open file
    __del__ = close

    def _keep(self, row):
        """Add row to `rows`, dropping the one before it where that is a train loss off the stride."""
        rows = self.rows
        if rows and rows[-1]["val_loss"] == "":
            if int(rows[-1]["step"]) % self.stride:
                rows.pop()
            else:
                self._train_points += 1
        rows.append(row)
        if self._train_points > MAX_TRAIN_POINTS:
            self.stride *= 2
            self.rows = [r for r in rows[:-1] if r["val_loss"] != "" or int(r["step"]) % self.stride == 0]
            self._train_points = sum(r["val_loss"] == "" for r in self.rows)
            self.rows.append(row)


def _fmt(name, v):
    if v is None:
        return ""
    # a loss as a loop of one's own has it, a tensor (or a numpy number), is its number: written as it was,
    # "tensor(2.5000, grad_fn=<...>)", its row was left out as damaged when read back
    if not isinstance(v, str | int | float) and hasattr(v, "item"):
        n = v.numel() if hasattr(v, "numel") else getattr(v, "size", 1)  # (else "cannot be converted")
        if n != 1:
            raise RnnkitError(f"metrics column {name!r} takes one number, got {v!r:.80}; give loss.item() or the mean")  # fmt: skip
        v = (v.detach() if hasattr(v, "detach") else v).item()
    return f"{v:.6g}" if isinstance(v, float) else v


def read_metrics(path) -> list:
    """The rows of metrics.csv that are whole: a row cut short (a full disk, a kill while writing it) or
    otherwise damaged is left out, so that a resumed run still plots and continues. The columns are FIELDS, read
    by position: a damaged header (chars_per_s with a byte changed) named a column MetricsLog can't write again."""
    refuse_empty(path, "a run's metrics.csv")
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        next(f, None)  # the header MetricsLog writes
        return [r for r in csv.DictReader(f, FIELDS) if _whole(r)]


def _whole(row) -> bool:
    try:
        int(row["step"])
        if None in row or any(v is None for v in row.values()):  # fields past the last, or missing at the end
            return False  # of a row cut short
        for k in ("wall_s", "train_loss", "val_loss"):
            float(row[k] or 0)  # "" where nothing was measured
        return True
    except (KeyError, TypeError, ValueError):
        return False


def _number(v) -> float:
    return float(v) if v != "" else math.nan  # (NaN: no point drawn)


def load_plotting():
    """Import what plot_losses imports (matplotlib, its Agg backend, PIL's image plugins: about 180 modules, 0.5-1.5 s
    the first time) by drawing an empty figure in memory. The training loop calls it before its first step: at the
    first validation a second Ctrl-C (stop now) cut those imports half-way, and the stopped run's redraw of loss.png
    then failed in them ('ImportError: initialization failed', "module 'matplotlib' has no attribute 'colors'"): a
    traceback and exit 1."""
    from matplotlib.figure import Figure

    Figure(figsize=(1, 1)).savefig(io.BytesIO(), format="png")


def plot_losses(rows: list, path):
    """Train and validation loss (nats/char) against steps and against training time: wall_s, the seconds of the
    steps themselves over every session (validation, samples and checkpoints not counted, as in --time-budget).

    The figure is freed here, once saved. Its objects are reference cycles (figure, canvas, axes, artists: 7,000 of
    them at 4,000 points, 2.4 MB with the Agg canvas's pixels) that only Python's cyclic collector frees, and the
    collections during the drawing moved them to its oldest generation, collected in full only once a quarter as
    many objects as the process keeps (210,000 with torch and matplotlib) have joined it: a run redrawing loss.png
    at every validation held 10-50 MB of dead figures at a time, and glibc's heap, the training's blocks between
    them, grew with the plot's rows (a 1x32 GRU, B 16, T 32, at --eval-every 5: 486 MB after 50 validations, 517 MB
    after 800; 441 and 446 MB now). The drawing runs with the automatic collections paused, so that its objects
    stay in the youngest generation, which one collection of that generation alone (milliseconds, not the 0.2-0.4 s
    of a full one) then frees."""
    enabled = gc.isenabled()
    try:
        # (inside the try: a Ctrl-C landing as disable() returned, before the try, left the collector off for good)
        gc.disable()
        _draw_losses(rows, path)
    finally:
        if enabled:
            gc.enable()
        gc.collect(0)


def _draw_losses(rows: list, path):
    """plot_losses's figure, drawn and saved to `path` (and dropped on return)."""
    # a Figure of its own, not pyplot's: the user's backend stays as it is, and no display is needed
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    # a row without its wall_s (a loop of one's own that writes step and loss only) is drawn against steps alone:
    # it failed in "could not convert string to float: ''"
    train = [
        (int(r["step"]), _number(r["wall_s"]), float(r["train_loss"])) for r in rows if r["train_loss"] != ""
    ]
    val = [(int(r["step"]), _number(r["wall_s"]), float(r["val_loss"])) for r in rows if r["val_loss"] != ""]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, i, label in [(axes[0], 0, "step"), (axes[1], 1, "training time (s)")]:
        # the time panel draws the rows with a wall_s alone: a row without one, NaN, broke the line there, so that
        # wall_s on every other row (or on one) drew no point of it, an empty panel under its ticks
        trains, vals = ([r for r in rs if i == 0 or not math.isnan(r[1])] for rs in (train, val))
        if trains:
            # one point (a run of one step, or --val-frac 0 and one row) drawn as a line alone was no mark at all
            dot = dict(marker="o", ms=3) if len(trains) == 1 else {}
            ax.plot([t[i] for t in trains], [t[2] for t in trains], lw=0.8, label="train", **dot)
        if vals:
            ax.plot(
                [v[i] for v in vals],
                [v[2] for v in vals],
                "o-" if len(vals) <= MARKED_VAL_POINTS else "-",
                label="val",
            )
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    if (train or val) and all(math.isnan(t[1]) for t in train + val):
        # (a loop of one's own that writes no wall_s: an empty panel of training times about 0, -0.04 to 0.04 s)
        axes[1].set_xticks([])
        axes[1].text(0.5, 0.5, "no training time (wall_s) in metrics.csv", transform=axes[1].transAxes,
                     ha="center", va="center", color="0.4")  # fmt: skip
    # steps are counted (one step was ticked 0.96 to 1.04): matplotlib's AutoLocator, whole numbers only
    axes[0].xaxis.set_major_locator(
        MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True, min_n_ticks=1)
    )
    axes[0].set_ylabel("loss (nats/char)")
    if train or val:  # (no rows: matplotlib's warning 'No artists with labels found to put in legend')
        axes[0].legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
