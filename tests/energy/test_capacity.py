import math

import numpy as np
import pytest
import torch

from rnnkit.energy import capacity, hopfield
from rnnkit.energy.hopfield import random_patterns
from rnnkit.errors import RnnkitError


def test_recall_holds_at_low_load_and_collapses_at_high_load():
    cfg = capacity.CapacityConfig(sizes=(200,), loads=(0.05, 0.3), random_starts=8, min_patterns=40)
    low, high = capacity.capacity_experiment(cfg)
    assert low["recalled"] == 1.0 and low["mean_overlap"] > 0.99
    assert high["recalled"] < 0.2 and high["mean_overlap"] < 0.8
    assert 0 <= high["spurious"] <= 1 and high["P"] == 60
    (c,) = capacity.crossings([low, high])
    assert 0.05 < c["recalled_half"] < 0.3
    assert c["perfect_bound"] == pytest.approx(1 / (2 * math.log(200)))


def test_crossing_interpolates_the_first_fall_through_the_level():
    assert capacity.crossing([0.1, 0.2, 0.3], [1.0, 0.6, 0.2], 0.5) == pytest.approx(0.225)
    assert capacity.crossing([0.1, 0.2], [1.0, 0.9], 0.5) is None


def test_a_curve_that_falls_onto_the_level_crosses_it_there():
    """Half recalled (0.5) at the last load was reported as 'none': the fall had to end strictly below 1/2."""
    assert capacity.crossing([0.1, 0.2, 0.3], [1.0, 0.8, 0.5], 0.5) == pytest.approx(0.3)
    assert capacity.crossing([0.1, 0.2, 0.3], [1.0, 0.5, 0.5], 0.5) == pytest.approx(0.2)  # first reached
    assert capacity.crossing([0.1, 0.2, 0.3], [0.5, 0.5, 0.2], 0.5) == pytest.approx(0.2)  # as before
    assert capacity.crossing([0.1, 0.2], [0.4, 0.5], 0.5) is None  # rising onto it is no fall


def test_three_pattern_mixtures_are_classified():
    xi = random_patterns(5, 301, torch.Generator().manual_seed(0))  # odd N: no ties in the sign
    mixture = torch.sign(xi[0] + xi[1] - xi[2])
    states = torch.stack([mixture, -xi[3], xi[4]])[None]
    out = capacity.classify_random_starts(states, xi[None], torch.ones(1, 3, dtype=torch.bool))
    assert out["spurious"] == pytest.approx(1 / 3) and out["mixture"] == pytest.approx(1 / 3)
    assert out["three_mixture"] == pytest.approx(1 / 3)
    assert out["distinct_spurious"] == 1


def test_bad_loads_are_rejected():
    with pytest.raises(RnnkitError):
        capacity.capacity_experiment(capacity.CapacityConfig(sizes=(100,), loads=(0.0,)))
    with pytest.raises(RnnkitError):
        capacity.capacity_experiment(capacity.CapacityConfig(sizes=(-5,)))
    with pytest.raises(RnnkitError):
        capacity.capacity_experiment(capacity.CapacityConfig(sizes=50))  # was TypeError: not iterable
    with pytest.raises(RnnkitError):
        capacity.capacity_experiment(capacity.CapacityConfig(sizes=(100,), loads=("0.1",)))


def test_numpy_sizes_and_loads_work_as_python_numbers():
    """CapacityConfig(sizes=np.array([20]), ...) was refused: 'N must be a positive integer, got np.int64(20)'."""
    settings = dict(min_patterns=4, random_starts=2)
    expected = capacity.capacity_experiment(capacity.CapacityConfig(sizes=(20,), loads=(0.1,), **settings))
    got = capacity.capacity_experiment(
        capacity.CapacityConfig(sizes=np.array([20]), loads=np.array([0.1]), **settings)
    )
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in got] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in expected
    ]


@pytest.mark.parametrize("seed", ["0", 1.5, None, True, 2**70])
def test_a_seed_that_is_no_integer_is_refused_in_one_line(seed):
    """The seed was not checked: '0' (a config file's string), 1.5 or None failed in torch's manual_seed
    ('manual_seed expected a long, but got str'), 2**70 with 'Overflow when unpacking long long'."""
    with pytest.raises(RnnkitError, match="seed must be an integer"):
        capacity.capacity_experiment(capacity.CapacityConfig(sizes=(8,), loads=(0.25,), seed=seed))


@pytest.mark.parametrize(
    "make",
    [lambda v: (x for x in v), torch.tensor],
    ids=["generator", "tensor"],
)
def test_sizes_and_loads_of_a_generator_or_tensor_run_every_point(make):
    """A generator of sizes or loads was used up by CapacityConfig.check, and the experiment then ran no point:
    [] in silence; a tensor's entries, 0-d tensors, were refused ('loads P/N must be in (0, 1], got
    tensor(0.1000)')."""
    settings = dict(min_patterns=4, random_starts=2)
    expected = capacity.capacity_experiment(
        capacity.CapacityConfig(sizes=(20,), loads=(0.1, 0.2), **settings)
    )
    got = capacity.capacity_experiment(
        capacity.CapacityConfig(sizes=make([20]), loads=make([0.1, 0.2]), **settings)
    )
    assert len(got) == 2
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in got] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in expected
    ]


def test_spin_glass_states_are_not_counted_as_mixtures():
    """Every spurious state from a random start at P/N = 0.1 counted as a mixture: a fixed point's overlaps
    spread as sqrt(r / N), r ~ 5 to 14, so two of them were always >= max(0.2, 3/√N); they decay smoothly over
    many patterns (spin-glass states, AGS 1987), while a relaxed 3-mixture at low load stays one."""
    cfg = capacity.CapacityConfig(
        sizes=(300,), loads=(0.1,), random_starts=24, min_patterns=30, max_sweeps=100
    )
    (row,) = capacity.capacity_experiment(cfg)
    assert row["starts_unfinished"] == 0 and row["spurious"] > 0.5
    assert row["mixture"] == 0 and row["three_mixture"] == 0
    g = torch.Generator().manual_seed(1)
    xi = random_patterns(6, 301, g)[None]  # P/N = 0.02: 3-mixtures are stable
    starts = torch.stack(
        [torch.sign(xi[0, 0] + xi[0, 1] - xi[0, 2]), torch.sign(xi[0, 3] - xi[0, 4] + xi[0, 5])]
    )
    states, _, status, _ = hopfield.run_async(hopfield.hebbian(xi), torch.zeros(1, 301), starts[None], 50, g)
    out = capacity.classify_random_starts(states, xi, status == hopfield.FIXED_POINT)
    assert out["spurious"] == out["mixture"] == out["three_mixture"] == 1.0


def test_the_default_sweeps_let_the_random_starts_settle():
    """The default of 20 sweeps left about half the random starts still moving at N = 1000 (0.41 to 0.53 of them,
    P/N 0.04 to 0.25; 0.04 to 0.31 at N = 500), so 'spurious' was about half its settled value; they settle in 45 to
    75 sweeps at N = 1000, 15 to 43 at N = 500 (seed 0)."""
    cfg = capacity.CapacityConfig(sizes=(500,), loads=(0.1,), random_starts=16, min_patterns=50)
    row = capacity.capacity_point(500, 0.1, cfg.check(), torch.Generator().manual_seed(0))
    assert row["starts_unfinished"] == 0 and row["unfinished"] == 0 and row["sweeps"] > 20


def test_the_overlap_panel_draws_negative_overlaps(tmp_path, monkeypatch):
    """Cues flipped past half their bits (hopfield capacity --noise 0.9) end near -ξ: mean overlaps of -1.0 to -0.57,
    printed, drawn under the fractions' y range (-0.02, 1.02), an empty panel."""
    from rnnkit.energy import plots

    figures, save = [], plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k))
    zero = dict.fromkeys(("recalled", "perfect", "spurious_of_settled"), 0.0)
    rows = [dict(N=32, load=load, mean_overlap=m, **zero) for load, m in [(0.06, -1.0), (0.25, -0.57)]]
    plots.capacity_figure(rows, tmp_path / "capacity.png")
    overlap, recalled = figures[0].axes[:2]
    assert overlap.get_ylabel() == "mean final overlap m"
    assert list(overlap.get_lines()[0].get_ydata()) == [-1.0, -0.57]
    low, high = overlap.get_ylim()
    assert low <= -1.0 and high == 1.02
    assert recalled.get_ylim() == (-0.02, 1.02)  # the fractions' panels as before
    rows = [{**r, "mean_overlap": 1.0} for r in rows]  # overlaps in [0, 1]: the range as before
    plots.capacity_figure(rows, tmp_path / "capacity.png")
    assert figures[1].axes[0].get_ylim() == (-0.02, 1.02)


@pytest.mark.parametrize("first", [1.0, 0.1, -1.0])
def test_the_legend_of_the_capacity_figure_covers_no_point(first, tmp_path, monkeypatch):
    """The legend ('N = 32', ...) sat in the upper left of the overlap panel, over the curves at m = 1 of the low
    loads (matplotlib's 'best' counts the points' centres alone, which lay at its top edge): the first points of
    `hopfield capacity --sizes 32 64 128 --loads 0.02 ...` were hidden under it."""
    from rnnkit.energy import plots

    figures, save = [], plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k))
    zero = dict.fromkeys(("recalled", "perfect", "spurious_of_settled"), 0.0)
    start = [(0.02, first), (0.05, first), (0.1, first), (0.14, 0.99 * first)]
    ends = {
        32: [(0.2, 0.99), (0.25, 0.84)],
        64: [(0.2, 0.92), (0.25, 0.89)],
        128: [(0.2, 0.64), (0.25, 0.57)],
    }
    rows = [dict(N=N, load=load, mean_overlap=m, **zero) for N in ends for load, m in start + ends[N]]
    plots.capacity_figure(rows, tmp_path / "capacity.png")
    ax = figures[0].axes[0]
    box = ax.get_legend().get_window_extent().padded(3)  # (pixels; a marker's radius and the line's width)
    curves = [
        ax.transData.transform(line.get_xydata()) for line in ax.get_lines() if line.get_label()[0] != "_"
    ]
    t = np.linspace(0, 1, 50)[:, None]  # the points and the segments between them
    drawn = [(1 - t) * a + t * b for c in curves for a, b in zip(c[:-1], c[1:])]
    assert len(curves) == 3 and not any(box.contains(x, y) for p in drawn for x, y in p)


def test_the_legend_of_the_capacity_figure_covers_no_point_of_steep_curves(tmp_path, monkeypatch):
    """`hopfield capacity --sizes 32 64 --loads 0.02 0.15 0.2 0.25 1.0 --noise 0.4` (m = 1.0 at the lowest loads,
    0.27 and 0.21 at 0.19 and 0.2) put the legend in the lower left, over the points at 0.19 to 0.25 and the curves
    between: the lower left was taken as empty wherever the curves start over 1/2. It now goes to the first corner
    whose box covers no point and no segment of them (here the upper right)."""
    from rnnkit.energy import plots

    figures, save = [], plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k))
    zero = dict.fromkeys(("recalled", "perfect", "spurious_of_settled"), 0.0)
    curves = {
        32: [(0.031, 1.0), (0.156, 0.45), (0.188, 0.271), (0.25, 0.25), (1.0, 0.023)],
        64: [(0.016, 1.0), (0.156, 0.334), (0.203, 0.214), (0.25, 0.176), (1.0, 0.129)],
    }
    rows = [dict(N=N, load=load, mean_overlap=m, **zero) for N in curves for load, m in curves[N]]
    plots.capacity_figure(rows, tmp_path / "capacity.png")
    ax = figures[0].axes[0]
    box = ax.get_legend().get_window_extent().padded(3)
    lines = [
        ax.transData.transform(line.get_xydata()) for line in ax.get_lines() if line.get_label()[0] != "_"
    ]
    t = np.linspace(0, 1, 50)[:, None]
    drawn = [(1 - t) * a + t * b for c in lines for a, b in zip(c[:-1], c[1:])]
    assert len(lines) == 2 and not any(box.contains(x, y) for p in drawn for x, y in p)


def test_a_capacity_point_counts_each_recall_and_random_start_as_documented(monkeypatch):
    """One row's fractions from final states set by hand (the dynamics replaced): N = 200, P = 4, M = 2, R = 3.
    Recalled: m > 0.98 (< 1 % of the bits wrong: 2 wrong of 200 is not); perfect: m = 1; unfinished: of the
    patterns' runs only; spurious: settled random starts away from every ±ξ; spurious_of_settled over the settled
    ones; a cue noise of 0.1 flips 20 bits of each cue (m = 0.8 where the dynamics move nothing)."""

    def settle(W, theta, s0, max_sweeps, generator, record):
        assert max_sweeps == 9 and record is False
        states, status = s0.clone(), torch.full(s0.shape[:2], hopfield.FIXED_POINT)
        if moved:
            states[0, 1, :2] *= -1  # m = 0.98: not recalled
            states[0, 2] *= -1  # -ξ: m = -1
            states[0, 3, :60] *= -1  # m = 0.4, and still moving
            status[0, 3] = hopfield.UNFINISHED
            states[1, 0, :1] *= -1  # m = 0.99: recalled, not perfect
            states[0, 4] = -s0[0, 1]  # a random start that ended on -ξ²: no spurious state
            status[0, 6] = hopfield.UNFINISHED  # a random start still moving
        return states, None, status, 7

    monkeypatch.setattr(capacity, "run_async", settle)
    cfg = capacity.CapacityConfig(random_starts=3, min_patterns=8, max_sweeps=9).check()
    moved = True
    row = capacity.capacity_point(200, 0.02, cfg, torch.Generator().manual_seed(0))
    assert (row["N"], row["P"], row["networks"], row["load"], row["sweeps"]) == (200, 4, 2, 0.02, 7)
    assert row["recalled"] == 5 / 8 and row["perfect"] == 4 / 8 and row["unfinished"] == 1 / 8
    assert row["mean_overlap"] == pytest.approx((1 + 0.98 - 1 + 0.4 + 0.99 + 3) / 8)
    assert row["spurious"] == pytest.approx(4 / 6) and row["spurious_of_settled"] == pytest.approx(4 / 5)
    assert row["starts_unfinished"] == pytest.approx(1 / 6)
    moved = False
    noisy = capacity.capacity_point(
        200,
        0.02,
        capacity.CapacityConfig(random_starts=3, min_patterns=8, max_sweeps=9, cue_noise=0.1).check(),
        torch.Generator().manual_seed(0),
    )
    assert noisy["mean_overlap"] == pytest.approx(0.8) and noisy["recalled"] == 0
    row = capacity.capacity_point(100, 0.29, cfg, torch.Generator().manual_seed(0))  # 0.29 * 100 = 28.999...
    assert (row["P"], row["load"]) == (29, 0.29)


def test_mixtures_are_found_by_their_largest_overlaps_whatever_their_signs():
    """A mixture state is told by its k = 2..7 largest |overlaps|: sgn(-ξ1 - ξ2 - ξ3), the mirror of a 3-mixture,
    has overlaps -1/2 (the smallest of 12 signed ones), a 7-mixture needs k = 7, and with P = 3 a 3-mixture needs
    k = P; s and -s are one attractor."""
    g = torch.Generator().manual_seed(2)
    xi = random_patterns(12, 301, g)  # odd N: no ties in the sign
    three, seven = torch.sign(xi[:3].sum(0)), torch.sign(xi[:7].sum(0))
    states = torch.stack([three, -three, seven])[None]
    out = capacity.classify_random_starts(states, xi[None], torch.ones(1, 3, dtype=torch.bool))
    assert out["spurious"] == out["mixture"] == 1.0
    assert out["three_mixture"] == pytest.approx(2 / 3) and out["distinct_spurious"] == 2
    out = capacity.classify_random_starts(three[None, None], xi[None, :3], torch.ones(1, 1, dtype=torch.bool))
    assert out["spurious"] == out["mixture"] == out["three_mixture"] == 1.0


def test_a_symmetric_three_mixture_has_three_overlaps_of_one_half_and_no_fourth_above_a_quarter():
    """Three |overlaps| within the random spread of 1/2 (2/√N, at least 0.1) and none other above 1/4."""
    m = torch.tensor(
        [
            [0.5, 0.45, 0.55, 0.1, 0.0],
            [0.5, 0.5, 0.5, 0.3, 0.0],
            [0.65, 0.5, 0.4, 0.2, 0.1],
            [0.5, 0.5, 0.5, 0.24, 0.26],
        ]
    )
    assert capacity._three_mixture(m, 10_000).tolist() == [True, False, False, False]
    assert capacity._three_mixture(m, 100).tolist() == [True, False, True, False]  # 2/√100 = 0.2


def test_a_point_runs_enough_networks_for_min_patterns_recalls():
    """M networks of P = round(load N) patterns each make at least min_patterns recalls, and M - 1 fewer."""
    for N, load, min_patterns in ((100, 0.03, 200), (1000, 0.138, 200), (200, 0.3, 40), (50, 0.02, 1)):
        M, P = capacity.networks_per_point(N, load, min_patterns), max(1, round(load * N))
        assert M * P >= min_patterns and (M - 1) * P < min_patterns


def test_crossings_read_each_sizes_rows_in_order_of_load():
    """Rows given out of order (a table sorted by recall, points run in parallel) are one curve by load."""
    rows = [
        dict(N=N, load=load, recalled=r, perfect=r, mean_overlap=r)
        for N in (100, 200)
        for load, r in ((0.1, 1.0), (0.2, 0.6), (0.3, 0.2))
    ]
    (c,) = capacity.crossings(rows[:3])
    assert c["recalled_half"] == pytest.approx(0.225)
    assert capacity.crossings(rows[::-1]) == capacity.crossings(rows)


def test_a_network_of_one_unit_is_refused_in_one_line():
    """One unit has no weights (W's diagonal is zero): N = 1 is refused, N = 2 runs."""
    with pytest.raises(RnnkitError, match="sizes N must be 2 or more") as e:
        capacity.CapacityConfig(sizes=(1, 100)).check()
    assert "\n" not in str(e.value)
    assert capacity.CapacityConfig(sizes=(2,)).check().sizes == (2,)
