import math

import numpy as np
import pytest
import torch

from rnnkit.energy import ising
from rnnkit.errors import RnnkitError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("update", ["metropolis", "heat-bath"])
def test_magnetisation_orders_at_low_and_vanishes_at_high_temperature(update):
    for start in ("ordered", "random"):
        results = ising.Ising(32, [1.0, 4.0], update=update, start=start, generator=gen()).run(200, 300)
        low, high = results["abs_magnetisation"].tolist()
        assert high < 0.1
        if start == "ordered":  # from a random start a 32x32 lattice can freeze into stripes at T = 1
            assert low > 0.99


@pytest.mark.parametrize("update", ["metropolis", "heat-bath"])
def test_small_lattice_matches_exact_enumeration(update):
    temps = [1.8] * 64 + [3.0] * 64  # 64 independent replicas per temperature
    results = ising.Ising(4, temps, h=0.1, update=update, generator=gen(1)).run(3000, 200)
    for which, T in ((slice(0, 64), 1.8), (slice(64, 128), 3.0)):
        expected = ising.exact_averages(4, T, h=0.1)
        assert results["abs_magnetisation"][which].mean().item() == pytest.approx(
            expected["abs_magnetisation"], abs=0.01
        )
        assert results["energy"][which].mean().item() == pytest.approx(expected["energy"], abs=0.01)


@pytest.mark.parametrize("start", ["ordered", "random"])
def test_metropolis_without_field_matches_exact_enumeration(start):
    """At h = 0 a flip can be free (n_i = 0): taken with certainty, a 2 x 2 lattice's chain split into two
    closed sets of states and gave <e> = -1.79 (ordered start) or -1.36 (random) against -1.70 at T = 2.269."""
    temps = [1.5] * 256 + [2.269] * 256
    results = ising.Ising(2, temps, start=start, generator=gen(2), dtype=torch.float64).run(1000, 100)
    for which, T in ((slice(0, 256), 1.5), (slice(256, 512), 2.269)):
        expected = ising.exact_averages(2, T)
        assert results["energy"][which].mean().item() == pytest.approx(expected["energy"], abs=0.01)
        assert results["abs_magnetisation"][which].mean().item() == pytest.approx(
            expected["abs_magnetisation"], abs=0.01
        )


@pytest.mark.parametrize("update", ["metropolis", "heat-bath"])
def test_ordered_start_aligns_with_a_negative_field(update):
    """The ordered start was all +1 whatever h: with h < 0 below T_c that is the metastable phase, which an
    8 x 8 lattice keeps for far longer than a run, and <e> came out -1.5 against -2.5 (h = -0.5, T = 1)."""
    for h in (0.5, -0.5):
        results = ising.Ising(8, [1.0], h=h, update=update, generator=gen(4), dtype=torch.float64).run(50, 50)
        assert results["energy"].item() == pytest.approx(
            ising.exact_averages(4, 1.0, h=h)["energy"], abs=0.02
        )


@pytest.mark.parametrize("update", ["metropolis", "heat-bath"])
def test_a_uniform_of_zero_takes_no_unlikely_flip(update, monkeypatch):
    """torch.rand can return exactly 0 (one draw in 2^24 in float32), and u < p then took a flip of any p > 0: at
    T = 0.1 one of probability 1e-35 was taken at a rate of 6e-8, a floor on every unlikely flip."""
    model = ising.Ising(4, [0.1], h=-0.5, update=update, generator=gen())
    monkeypatch.setattr(torch, "rand", lambda shape, generator, **kw: torch.zeros(shape, **kw))
    model.sweep()
    assert (model.spins == -1).all()


def test_metropolis_leaves_width_one_stripes():
    """Every site of width-1 stripes has n_i = 0: with free flips always taken, whole colours flipped back and
    forth forever and the energy stayed 0 at every temperature."""
    model = ising.Ising(16, [1.5], generator=gen(3))
    model.spins = (torch.arange(16) % 2 * 2 - 1.0).expand(1, 16, 16).clone()
    assert model.run(200, 300)["energy"].item() < -1.5


def test_energy_counts_each_bond_once():
    up = torch.ones(1, 6, 6)
    assert ising.energy_per_site(up, J=1.0, h=0.5).item() == pytest.approx(-2.5)
    checker = (torch.arange(6)[:, None] + torch.arange(6)[None]) % 2 * 2 - 1.0
    assert ising.energy_per_site(checker[None], J=1.0, h=0.0).item() == pytest.approx(2.0)


def test_specific_heat_and_susceptibility_are_the_fluctuation_formulas(monkeypatch):
    """C = N (<e²> - <e>²) / T² and χ = N (<m²> - <|m|>²) / T over the measured sweeps, here from each sweep's m and e
    recorded as the run measures them; no test read either (C over T, χ over T² or χ of <m²> alone passed)."""
    seen, energy_per_site = [], ising.energy_per_site

    def energy(s, J, h):  # each measured sweep's m and e
        e = energy_per_site(s, J, h)
        seen.append((s.mean((-2, -1)).double(), e.double()))
        return e

    monkeypatch.setattr(ising, "energy_per_site", energy)
    temperatures = [1.5, 2.5, 4.0]
    got = ising.Ising(4, temperatures, update="heat-bath", start="random", generator=gen(1)).run(100, 5)
    m, e = (torch.stack(x) for x in zip(*seen))
    T, N = torch.tensor(temperatures, dtype=torch.float64), 16
    torch.testing.assert_close(got["specific_heat"], N * ((e**2).mean(0) - e.mean(0) ** 2) / T**2)
    torch.testing.assert_close(got["susceptibility"], N * ((m**2).mean(0) - m.abs().mean(0) ** 2) / T)
    assert (got["susceptibility"] > 0).all() and (got["specific_heat"] > 0).all()


def test_onsager():
    assert ising.onsager_tc() == pytest.approx(2.269185, abs=1e-6)
    assert ising.onsager_magnetisation(1.0) == pytest.approx(0.99927, abs=1e-5)
    assert ising.onsager_magnetisation(3.0) == 0.0
    assert ising.onsager_magnetisation(1e-3) == 1.0  # sinh(2J/T) overflowed below T = 0.0028 J
    assert ising.onsager_magnetisation(1e-300) == 1.0


@pytest.mark.parametrize(
    "make",
    [
        lambda: ising.Ising(8, [0.0, 1.0]),
        lambda: ising.Ising(8, [-2.0]),
        lambda: ising.Ising(8, [1e-50, 1.0]),  # 0 in float32: C and χ came out NaN
        lambda: ising.Ising(8, [1e39]),  # inf in float32
        lambda: ising.Ising(8, []),
        lambda: ising.Ising(7, [1.0]),
        lambda: ising.Ising(0, [1.0]),
        lambda: ising.Ising(8, [1.0], update="wolff"),
        lambda: ising.Ising(8, [1.0]).run(0, 0),
        lambda: ising.Ising(8, [1.0], J=float("nan")),
        lambda: ising.Ising(8, [1.0], h=float("inf")),
        lambda: ising.Ising(8, [1.0], J=1e39),  # inf in float32: e = -inf and C = nan, exit 0
        lambda: ising.Ising(8, [1.0], J=1e38),  # its local field 4 J is inf in float32
        lambda: ising.Ising(8, [1.0], h=-1e39),
        lambda: ising.Ising(8, [1.0], J="a"),
        lambda: ising.Ising(8, [1.0], J="3"),  # float("3"): ran with J = 3, a string taken for a number
        lambda: ising.Ising(8, [1.0], h=True),  # ran with h = 1
        lambda: ising.exact_averages(2, 1.0, J=True),
        lambda: ising.Ising(8, "hot"),
        lambda: ising.Ising(8, True),  # ran at T = 1, a switch taken for a temperature
        lambda: ising.Ising(8, torch.tensor([True, True])),
        lambda: ising.exact_averages(2, -1.0),
        lambda: ising.exact_averages(2, 0.0),
        lambda: ising.exact_averages(2, float("nan")),
        lambda: ising.exact_averages(2, [1.0, 2.0]),
        lambda: ising.exact_averages(0, 1.0),
        lambda: ising.exact_averages(2, 1.0, J="a"),
        lambda: ising.onsager_magnetisation(-1.0),
        lambda: ising.onsager_magnetisation(0.0),
    ],
)
def test_bad_input(make):
    with pytest.raises(RnnkitError) as e:
        make()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_refused_not_sampled_with_coarse_numbers(dtype):
    """bfloat16 drew uniforms in steps of 2^-8 (flips of probability e^-8 taken 10x too often), held T = 2.269
    as 2.266 and averaged m and e to 3 digits: at T = 1 on 16 x 16 |m| was 0.995 and C 0.15 (float32: 0.999
    and 0.03), without a word."""
    with pytest.raises(RnnkitError, match="float32 or float64") as e:
        ising.Ising(4, [1.0], dtype=dtype)
    assert "\n" not in str(e.value)


def test_the_figure_draws_temperatures_given_out_of_order_as_curves(tmp_path, monkeypatch):
    """`ising sweep --temperatures 3.5 1.5 2.27` joined the points in the order given: each curve zigzagged
    from T = 3.5 back to 1.5 and on to 2.27 instead of running along the temperature axis."""
    from rnnkit.energy import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or str(path))
    results = ising.Ising(4, [3.5, 1.5, 2.27], generator=gen()).run(5, 0)
    plots.ising_figure(results, tmp_path / "ising.png", ising.onsager_tc(), ising.onsager_magnetisation)
    for ax in figures[0].axes:
        x = list(ax.lines[0].get_xdata())
        assert x == sorted(x)


@pytest.mark.parametrize("T", [2.0, 3.0])
def test_the_onsager_curve_of_one_temperature_is_drawn_up_to_the_critical_one(T, tmp_path, monkeypatch):
    """`ising sweep --temperatures 2.0` drew the Onsager curve over [T, T], 200 copies of one point: named in the
    legend ('Onsager, infinite lattice'), nothing drawn. It now runs from T to T_c, whose dashed line is drawn."""
    from rnnkit.energy import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or str(path))
    results = ising.Ising(4, [T], generator=gen()).run(5, 0)
    tc = ising.onsager_tc()
    plots.ising_figure(results, tmp_path / "ising.png", tc, ising.onsager_magnetisation)
    (curve,) = [line for line in figures[0].axes[0].lines if line.get_label() == "Onsager, infinite lattice"]
    x, y = curve.get_xdata(), curve.get_ydata()
    assert (min(x), max(x)) == pytest.approx(sorted([T, tc]))
    assert y[list(x).index(min(x))] == pytest.approx(ising.onsager_magnetisation(min(x)))
    results = ising.Ising(4, [1.5, 2.0], generator=gen()).run(5, 0)  # two: over their range, as before
    plots.ising_figure(results, tmp_path / "ising.png", tc, ising.onsager_magnetisation)
    (curve,) = [line for line in figures[1].axes[0].lines if line.get_label() == "Onsager, infinite lattice"]
    assert (min(curve.get_xdata()), max(curve.get_xdata())) == pytest.approx((1.5, 2.0))


@pytest.mark.parametrize("T", ["tc", 2.25, 2.3])
def test_the_onsager_curve_of_one_temperature_at_the_critical_one_is_seen(T, tmp_path, monkeypatch):
    """`ising sweep --temperatures 2.269185314213022` (T_c itself, held as float32: 1e-8 under it) drew the Onsager
    curve from T to T_c, 1e-8 long: named in the legend, not seen, and the |m| panel's x axis 1e-8 wide. The curve
    of one temperature now spans T ± 5% at least (matplotlib's own view of one point), T_c included."""
    from rnnkit.energy import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or str(path))
    tc = ising.onsager_tc()
    T = tc if T == "tc" else T
    results = ising.Ising(4, [T], generator=gen()).run(5, 0)
    plots.ising_figure(results, tmp_path / "ising.png", tc, ising.onsager_magnetisation)
    ax = figures[0].axes[0]
    (curve,) = [line for line in ax.lines if line.get_label() == "Onsager, infinite lattice"]
    x, y = curve.get_xdata(), curve.get_ydata()
    assert min(x) == pytest.approx(min(0.95 * T, tc)) and max(x) == pytest.approx(max(1.05 * T, tc))
    assert list(y) == pytest.approx([ising.onsager_magnetisation(t) for t in x])
    assert ax.get_xlim()[1] - ax.get_xlim()[0] > 0.2  # not 1e-8


def test_numpy_numbers_work_as_python_numbers():
    """Ising(np.int64(4), ...), run(np.int64(2), ...) and onsager_magnetisation(np.float32(2.0)) were refused."""
    expected = ising.Ising(4, 2.0, generator=gen()).run(3, 2)["energy"]
    got = ising.Ising(np.int64(4), 2.0, generator=gen()).run(np.int64(3), np.int64(2))["energy"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert ising.onsager_magnetisation(np.float32(2.0)) == ising.onsager_magnetisation(2.0)
    with pytest.raises(RnnkitError, match=r"^burn-in \(sweeps\) must be an integer >= 0, got True$"):
        ising.Ising(4, 2.0).run(3, True)


@pytest.mark.parametrize("h", [0.0, 0.5])
def test_exact_averages_at_a_tiny_temperature_are_the_ground_states(h):
    """exact_averages took softmax(-E / T): below T ~ 3e-307 (L = 4) the ground states' -E / T overflowed to inf
    and every average was NaN, where the sampler runs at such a T in float64; E is taken above its minimum."""
    for T in (1e-307, 5e-324):
        got = ising.exact_averages(4, T, h=h)
        assert got == {"abs_magnetisation": 1.0, "energy": -2.0 - h}


def test_metropolis_far_above_tc_warns_and_names_the_heat_bath():
    """Far above T_c Metropolis takes nearly every flip, so its checkerboard sweeps flip nearly every site each
    time: 32 x 32 at T = 1000 read <e> = -0.022 (it is -0.002; T = 1e9 stayed in the ground state, e = -2),
    silently. It now warns where it takes over 90% of every flip (T > 8 / ln(1/0.9) = 75.9 for J = 1, h = 0);
    the heat bath's averages are right there."""
    with pytest.warns(
        UserWarning, match=r"Metropolis at T = 80 and up takes over 90% of every flip.*heat-bath"
    ):
        ising.Ising(8, [2.0, 1000.0, 80.0])
    with pytest.warns(UserWarning, match=r"Metropolis at T = 80 takes"):
        ising.Ising(8, [80.0], h=0.0)
    ising.Ising(8, [75.0, 2.0])  # just under: no warning (warnings are errors here)
    ising.Ising(8, [1000.0], update="heat-bath")
    ising.Ising(8, [1000.0], J=0.0)  # no coupling, no field: every flip is free, taken with probability 1/2
    hb = ising.Ising(16, [1000.0] * 8, update="heat-bath", generator=gen(3)).run(400, 100)
    assert hb["energy"].mean().item() == pytest.approx(-2 * np.tanh(1 / 1000), abs=0.003)


def test_a_long_run_keeps_a_bounded_number_of_sweeps_measurements(monkeypatch):
    """Every measured sweep's m and e, two (T,) tensors, were kept to the end of the run: 1.1 KB a sweep, a GB for a
    million sweeps, and `rnnkit ising sweep --sweeps 9223372036854775807` grew until memory was gone. Past
    MEASURED_AT_ONCE sweeps the run keeps each block's moments only: the same averages to float64's rounding (the
    same bits up to MEASURED_AT_ONCE sweeps), and a Ctrl-C still ends it with the averages of the sweeps done."""
    import weakref

    measured, most, stop_at, energy_per_site = [], [0], [0], ising.energy_per_site

    def energy(*args):  # each sweep's e, watched: how many are alive at once
        e = energy_per_site(*args)
        measured.append(weakref.ref(e))
        most[0] = max(most[0], sum(r() is not None for r in measured))
        if len(measured) == stop_at[0]:
            raise KeyboardInterrupt
        return e

    def run(sweeps, at_once, stop=0):
        monkeypatch.setattr(ising, "MEASURED_AT_ONCE", at_once, raising=False)
        measured.clear()
        most[0], stop_at[0] = 0, stop
        torch.manual_seed(3)
        model = ising.Ising(6, [1.5, 2.27, 3.5])
        return model.run(sweeps, 5, interruptible=True), model

    monkeypatch.setattr(ising, "energy_per_site", energy)
    whole, _ = run(100, 1000)
    assert most[0] >= 100  # (all kept: one block)
    blocks, _ = run(100, 8)
    assert most[0] <= 8 + 1
    for k in whole:
        torch.testing.assert_close(blocks[k], whole[k], rtol=1e-12, atol=1e-14)
    cut, model = run(100, 8, stop=21)  # a Ctrl-C in the 21st measurement: 20 sweeps, two blocks and 4 more
    assert model.measured == 20 and model.interrupted is not None
    first, _ = run(20, 1000)
    for k in whole:
        torch.testing.assert_close(cut[k], first[k], rtol=1e-12, atol=1e-14)


def test_a_ctrl_c_at_any_line_of_a_long_run_keeps_every_measured_sweep(monkeypatch):
    """A full block's moments were computed, m and e emptied, and only then the block kept: a Ctrl-C between the two
    lost the block's sweeps while `measured` counted them (16 measured, blocks of 8: the averages of the first 8
    reported as those of 16, 0.375 off in the energy; at the first block, a ZeroDivisionError). A KeyboardInterrupt
    raised at each line of the run (a trace function, as a signal lands between two lines) once a block is full
    ends with the averages of exactly the sweeps measured."""
    import inspect
    import sys

    monkeypatch.setattr(ising, "MEASURED_AT_ONCE", 8)
    code = ising.Ising.run.__code__
    source, first = inspect.getsourcelines(ising.Ising.run)
    body = [
        i
        for i, text in enumerate(source)
        if "for _ in range(sweeps):" in text or "except KeyboardInterrupt" in text
    ]
    for line in range(first + body[0] + 1, first + body[1]):  # the measured sweeps' loop
        hit = []

        def local(frame, event, arg, line=line, hit=hit):
            if (
                event == "line"
                and frame.f_lineno == line
                and not hit
                and getattr(frame.f_locals["self"], "measured", 0) >= 8
            ):
                hit.append(line)
                raise KeyboardInterrupt
            return local

        torch.manual_seed(3)
        model = ising.Ising(4, [2.27])
        sys.settrace(lambda frame, event, arg: local if frame.f_code is code else None)
        try:
            cut = model.run(12, 0, interruptible=True)
        finally:
            sys.settrace(None)
        torch.manual_seed(3)
        done = ising.Ising(4, [2.27]).run(model.measured, 0)
        for k in done:
            torch.testing.assert_close(
                cut[k], done[k], rtol=1e-12, atol=1e-14, msg=f"a Ctrl-C at line {line}"
            )


@pytest.mark.parametrize("value", [10**400, -(10**400)], ids=["10**400", "-10**400"])
def test_a_number_past_floats_range_is_refused_in_one_line_by_ising(value):
    """A Python int is a Real: Ising(J=10**400), h=10**400 or temperatures=[10**400] raised a bare "OverflowError: int
    too large to convert to float" from float() and torch.as_tensor; each says what it takes in one line."""
    with pytest.raises(RnnkitError, match="J and field h must be finite numbers"):
        ising.Ising(4, [2.0], J=value)
    with pytest.raises(RnnkitError, match="J and field h must be finite numbers"):
        ising.Ising(4, [2.0], h=value)
    with pytest.raises(RnnkitError, match="temperatures must be positive numbers"):
        ising.Ising(4, [value])


def test_a_run_sweeps_burn_in_times_before_it_measures():
    """run(sweeps, burn_in) equilibrates for burn_in unmeasured sweeps, then measures `sweeps` more: the averages are
    those of sweeps burn_in + 1 .. burn_in + sweeps of the same seeded chain, and its spins those after them all."""
    for update in ising.UPDATES:
        run = ising.Ising(8, [2.0, 3.0], update=update, start="random", generator=gen(7))
        out = run.run(2, 5)
        chain, e = ising.Ising(8, [2.0, 3.0], update=update, start="random", generator=gen(7)), []
        for t in range(7):
            chain.sweep()
            if t >= 5:
                e.append(ising.energy_per_site(chain.spins, 1.0, 0.0))
        assert torch.equal(run.spins, chain.spins)
        torch.testing.assert_close(out["energy"], torch.stack(e).double().mean(0))


def test_onsagers_magnetisation_depends_on_t_over_j_alone():
    """m(T, J) = (1 - sinh(2J/T)^-4)^(1/8) below T_c = 2J / ln(1 + √2): a lattice of J = 2 at T = 2 is one of
    J = 1 at T = 1, and orders up to T = 4.5."""
    for T in (0.5, 1.0, 2.0, 2.2):
        assert ising.onsager_magnetisation(2 * T, 2.0) == pytest.approx(
            ising.onsager_magnetisation(T), rel=1e-12
        )
    assert ising.onsager_magnetisation(4.0, 2.0) == pytest.approx((1 - math.sinh(1.0) ** -4) ** 0.125)
    assert ising.onsager_magnetisation(4.6, 2.0) == 0.0
