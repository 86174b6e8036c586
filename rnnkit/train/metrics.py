"""Metrics of a run: one CSV row per step (validation loss where measured) and a loss-curve PNG."""

import csv
import math
import pathlib

from rnnkit._io import atomic_open, save_figure

FIELDS = ["step", "epoch", "wall_s", "lr", "train_loss", "val_loss", "val_bpc", "chars_per_s"]
LN2 = math.log(2)


class MetricsLog:
    """Appends rows to metrics.csv; on resume it keeps only the rows up to the checkpoint's step."""

    def __init__(self, path, resume_step: int | None = None):
        self.path = pathlib.Path(path)
        rows = []
        if resume_step is not None and self.path.is_file():
            rows = [r for r in read_metrics(self.path) if int(r["step"]) <= resume_step]
        with atomic_open(self.path, "w", newline="") as f:  # a failed write leaves the old rows
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        self.rows = rows

    def write(self, **row):
        row = {k: _fmt(row.get(k)) for k in FIELDS}
        self.rows.append(row)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, FIELDS).writerow(row)


def _fmt(v):
    if v is None:
        return ""
    return f"{v:.6g}" if isinstance(v, float) else v


def read_metrics(path) -> list:
    """The rows of metrics.csv that are whole: a row cut short (a full disk, a kill while writing it) or
    otherwise damaged is left out, so that a resumed run still plots and continues."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        return [r for r in csv.DictReader(f) if _whole(r)]


def _whole(row) -> bool:
    try:
        int(row["step"])
        if any(v is None for v in row.values()):  # fields missing at the end of a row cut short
            return False
        for k in ("wall_s", "train_loss", "val_loss"):
            float(row[k] or 0)  # "" where nothing was measured
        return True
    except (KeyError, TypeError, ValueError):
        return False


def plot_losses(rows: list, path):
    """Train and validation loss (nats/char) against steps and against wall time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [
        (int(r["step"]), float(r["wall_s"]), float(r["train_loss"])) for r in rows if r["train_loss"] != ""
    ]
    val = [(int(r["step"]), float(r["wall_s"]), float(r["val_loss"])) for r in rows if r["val_loss"] != ""]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, i, label in [(axes[0], 0, "step"), (axes[1], 1, "wall time (s)")]:
        if train:
            ax.plot([t[i] for t in train], [t[2] for t in train], lw=0.8, label="train")
        if val:
            ax.plot([v[i] for v in val], [v[2] for v in val], "o-", label="val")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss (nats/char)")
    axes[0].legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
    plt.close(fig)
