"""Figures of the energy models, written as PNG files (matplotlib Figures of their own, not pyplot's: no display
needed, and the user's backend stays as it is)."""

import math

import numpy as np
import torch
from matplotlib import colormaps, rcParams
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from rnnkit._io import check_save_path, save_figure
from rnnkit.energy.capacity import ALPHA_C

NO_UNIT = "#f2b8b8"  # the cells of recall.png's short last row (pink: -1 is white, 0 grey, +1 black)
NO_UNIT_RED_BLUE = "0.55"  # those of a red and blue image_grid (grey: RdBu_r runs through white, not grey)
# a factorisation of N wider than this many times its height is drawn as rows of ⌈√N⌉ units instead
MAX_ASPECT = 4
# the Onsager curve of one temperature T spans T ± this fraction of it at least (matplotlib's view of one point)
ONE_POINT_MARGIN = 0.05


def image_shape(units: int, shape=None) -> tuple:
    """The given (height, width), or the most square factorisation of `units`; where that is more than MAX_ASPECT
    times as wide as high, rows of w = ⌈√N⌉ units, the last one short (h·w >= N): a prime N = 97 was one row of 97,
    1.5 pixels high in recall.png, a line."""
    if shape:
        return tuple(shape)
    h = max(d for d in range(1, math.isqrt(units) + 1) if units % d == 0)
    if units // h > MAX_ASPECT * h:
        w = math.isqrt(units - 1) + 1  # ⌈√N⌉
        return -(-units // w), w
    return h, units // h


def _picture(image, h, w):
    """A pattern (V,) as its (h, w) picture; the cells past V, where h·w > V (image_shape's short last row), NaN:
    drawn in the colour map's 'bad' colour, no unit."""
    if h * w > len(image):
        image = torch.cat([image, image.new_full((h * w - len(image),), math.nan)])
    return image.view(h, w).numpy()


def _counted_ticks():
    """The ticks of a counted axis (updates, k): matplotlib's AutoLocator's, whole numbers only."""
    return MaxNLocator(nbins="auto", steps=[1, 2, 2.5, 5, 10], integer=True, min_n_ticks=1)


def _save(fig, path, laid_out=None) -> str:
    """fig as a PNG, laid out; `laid_out()` is called once the axes have their places (a legend placed in pixels)."""
    check_save_path(path)
    fig.tight_layout()
    if laid_out:
        laid_out()
    save_figure(fig, path, dpi=110)
    return str(path)


def image_grid(images, path, title="", shape=None, columns=10, symmetric=False, value_range=None) -> str:
    """Rows of `images` (n, V) as small pictures; symmetric colours around 0 for weights. `value_range` (low, high)
    is one scale for every image (pixels: (0, 1)); else each image is stretched over its own range."""
    images = torch.as_tensor(images).detach().cpu().float()
    h, w = image_shape(images.shape[1], shape)
    rows = math.ceil(len(images) / columns)
    fig = Figure(figsize=(columns * 0.8, rows * 0.8 + 0.65))  # (0.25 of it for the key under the title)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    # the cells past V (image_shape's short last row) in a colour of their own: transparent, they were white, the
    # lowest value of gray_r and 0 of RdBu_r (whose light reds are near NO_UNIT's pink: grey there)
    bad, colour = ("grey", NO_UNIT_RED_BLUE) if symmetric else ("pink", NO_UNIT)
    cmap = colormaps["RdBu_r" if symmetric else "gray_r"].with_extremes(bad=colour)
    for ax, image in zip(axes.flat, images):
        limit = image.abs().max().item() or 1.0
        kw = dict(vmin=-limit, vmax=limit, cmap=cmap) if symmetric else dict(cmap=cmap)
        if value_range is not None:
            kw.update(vmin=value_range[0], vmax=value_range[1])
        ax.imshow(_picture(image, h, w), interpolation="nearest", **kw)
    # the colours' key (no colour bar: a filter's scale is its own): the filters were drawn red and blue under no
    # word of which is positive, or that a filter of weights near 0 is stretched as far as the largest
    if value_range is not None:
        key = f"white {value_range[0]:g} to black {value_range[1]:g}"
    elif symmetric:
        key = "red > 0 > blue, each on its own scale"
    else:
        key = "white (lowest) to black (highest), each on its own scale"
    if (
        h * w > images.shape[1]
    ):  # (image_shape's short last row: cells of no unit, not of the lowest value or 0)
        left = h * w - images.shape[1]
        key += (
            f"; the last {left} cells ({bad}) are no unit"
            if left > 1
            else f"; the last cell ({bad}) is no unit"
        )
    fig.suptitle(f"{title}\n{key}" if title else key)
    return _save(fig, path)


def recall_figure(patterns, cues, states, path, shape=None, title="") -> str:
    """Stored pattern, cue and recalled state side by side, one example per row."""
    n = len(cues)
    h, w = image_shape(cues.shape[1], shape)
    patterns, cues, states = (torch.as_tensor(t).detach().cpu().float() for t in (patterns, cues, states))
    units, cmap = cues.shape[1], colormaps["gray_r"].with_extremes(bad=NO_UNIT)
    if h * w > units:  # (image_shape's short last row)
        left = h * w - units
        short = f"{units} units in rows of {w}:\n" + (
            "the last cell (pink) is no unit" if left == 1 else f"the last {left} cells (pink) are no unit"
        )
        title = f"{title}\n{short}" if title else short
    fig = Figure(figsize=(4.5, 1.5 * n + 0.5))
    axes = fig.subplots(n, 3, squeeze=False)
    for row, images in enumerate(zip(patterns, cues, states)):
        for col, (image, name) in enumerate(zip(images, ("stored", "cue", "recalled"))):
            # above its frame (zorder 3 over the spines' 2.5), the frame twice as wide so that its outer half is
            # matplotlib's: the frame drawn over the pixels covered a pattern's edge, a 1 x 64 image's top row
            axes[row, col].imshow(
                _picture(image, h, w), vmin=-1, vmax=1, cmap=cmap, interpolation="nearest", zorder=3
            )
            # framed, without ticks: off, the axes left a pattern's -1 pixels white on white, so that a constant
            # pattern (a white image) was an empty space, and tall patterns ran into the row below
            axes[row, col].set(xticks=[], yticks=[])
            for spine in axes[row, col].spines.values():
                spine.set_linewidth(2 * rcParams["axes.linewidth"])
            if row == 0:
                axes[row, col].set_title(name)
    fig.suptitle(title)
    return _save(fig, path)


def energy_figure(energies, path, title="energy after each update") -> str:
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for trace in torch.as_tensor(energies).cpu():
        ax.plot(trace.numpy(), lw=1)
    ax.set(xlabel="update", ylabel="E", title=title)
    ax.xaxis.set_major_locator(_counted_ticks())  # updates are counted: 18 of them were ticked 2.5, 7.5, ...
    return _save(fig, path)


def capacity_figure(rows, path, alpha_c=ALPHA_C) -> str:
    """Overlap, recall with < 1 % errors, perfect recall and spurious states against the load P/N."""
    panels = [
        ("mean_overlap", "mean final overlap m"),
        ("recalled", "fraction recalled (< 1% bits wrong)"),
        ("perfect", "fraction recalled perfectly"),
        ("spurious_of_settled", "settled random starts: share spurious"),
    ]
    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2)
    firsts = []  # each N's overlap at its lowest load
    for N in sorted({r["N"] for r in rows}):
        mine = sorted((r for r in rows if r["N"] == N), key=lambda r: r["load"])
        firsts.append(mine[0]["mean_overlap"])
        for ax, (key, _) in zip(axes.flat, panels):
            line = ax.plot(
                [r["load"] for r in mine], [r[key] for r in mine], marker="o", ms=3, label=f"N = {N}"
            )
            if key == "perfect" and N > 1:
                ax.axvline(1 / (2 * math.log(N)), color=line[0].get_color(), ls=":", lw=1)
    for ax, (key, label) in zip(axes.flat, panels):
        ax.axvline(alpha_c, color="k", ls="--", lw=1)
        # m = s·ξ/N lies in [-1, 1]: cues flipped past half their bits (--noise 0.9) end near -ξ, m = -1, which the
        # fractions' (0, 1) left off the panel, drawn empty
        low = min([-0.02] + [r[key] - 0.02 for r in rows if key == "mean_overlap"])
        ax.set(xlabel="load P / N", ylabel=label, ylim=(low, 1.02))
    # the curves start near m = 1 at the low loads and fall to the right, under the upper left, where 'best' put the
    # legend over them (it counts the points' centres alone, which lay on its top edge): the lower left is empty,
    # unless they fall steeply (--noise 0.4: m = 0.27 at load 0.19 of 0.02 to 1), so the legend goes to the first
    # corner where it covers no point and no segment of them, in pixels as laid out; 'best' where none is free
    axes[0, 0].set_title(f"dashed: α_c = {alpha_c}; dotted: 1 / (2 ln N)", fontsize=9)

    def place_legend():  # (once laid out: its box and the curves in pixels, as saved)
        ax, t = axes[0, 0], np.linspace(0, 1, 50)[:, None]
        curves = [
            ax.transData.transform(line.get_xydata()) for line in ax.get_lines() if line.get_label()[0] != "_"
        ]
        drawn = [
            (1 - t) * a + t * b for c in curves for a, b in zip(c, c[1:])
        ] + curves  # (a curve of one point)
        corners = (
            ("lower left", "upper right", "lower right", "upper left") if min(firsts, default=0) > 0.5 else ()
        )
        for loc in corners + ("best",):
            legend = ax.legend(loc=loc)
            if loc == "best" or not legend.get_window_extent().padded(3).count_contains(
                np.concatenate(drawn)
            ):
                break

    return _save(fig, path, place_legend)


def ising_figure(results, path, tc=None, onsager=None) -> str:
    """|m|, energy, specific heat and susceptibility against temperature, with T_c marked."""
    order = results["temperature"].cpu().argsort()  # temperatures given out of order: curves, not zigzags
    T = results["temperature"].cpu()[order].numpy()
    panels = [("abs_magnetisation", "<|m|>"), ("energy", "<e> per site"),
              ("specific_heat", "specific heat C"), ("susceptibility", "susceptibility χ")]  # fmt: skip
    fig = Figure(figsize=(10, 7))
    axes = fig.subplots(2, 2)
    for ax, (key, label) in zip(axes.flat, panels):
        ax.plot(T, results[key].cpu()[order].numpy(), marker="o", ms=3)
        if tc:
            ax.axvline(tc, color="k", ls="--", lw=1, label=f"Onsager T_c = {tc:.3f}")
        ax.set(xlabel="temperature T", ylabel=label)
    if onsager:
        low, high = float(T.min()), float(T.max())
        if low == high:  # one temperature: a curve of 200 copies of one point, in the legend and not drawn
            t = low
            if tc:
                low, high = min(low, tc), max(high, tc)  # (the x range reaches T_c, its dashed line)
            # at least matplotlib's own view of one point, T ± 5%: T = T_c (float32 of it, 1e-8 under) drew the
            # curve over [T, T_c], 1e-8 long, unseen, and the panel's x axis 1e-8 wide
            margin = ONE_POINT_MARGIN * abs(t)
            if high - low < 2 * margin:
                low, high = min(low, t - margin), max(high, t + margin)
        fine = torch.linspace(low, high, 200)
        axes[0, 0].plot(
            fine.numpy(), [onsager(t) for t in fine.tolist()], "k:", lw=1, label="Onsager, infinite lattice"
        )
    if axes[0, 0].get_legend_handles_labels()[0]:  # no T_c line and no Onsager curve: no legend
        axes[0, 0].legend(fontsize=8)
    return _save(fig, path)


def line_figure(x, ys: dict, path, xlabel, ylabel, title="", logy=False) -> str:
    """One line per entry of ys against x, its points in the order of x (x given out of order: no zigzag)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    order = sorted(range(len(x)), key=lambda i: x[i])
    for label, y in ys.items():
        ax.plot([x[i] for i in order], [y[i] for i in order], marker="o", ms=3, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if all(isinstance(v, int) for v in x):  # a count (k Gibbs steps): ticked 1.5, 2.5, ... over k = 1, 2, 4
        ax.xaxis.set_major_locator(_counted_ticks())
    if logy and any(v > 0 for y in ys.values() for v in y):  # all zero (an exact match): no log scale to draw
        ax.set_yscale("log")
    ax.legend()
    return _save(fig, path)
