import itertools
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from rnnkit.energy import RBM, BoltzmannMachine
from rnnkit.energy import hopfield as hop
from rnnkit.energy.hopfield import FIXED_POINT, TWO_CYCLE, Hopfield
from rnnkit.errors import RnnkitError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_hebbian_is_the_deck_formula():
    xi = hop.random_patterns(4, 7, gen())
    W = hop.hebbian(xi[None])[0]
    for i, j in itertools.product(range(7), range(7)):
        expected = 0.0 if i == j else sum(xi[mu, i] * xi[mu, j] for mu in range(4)) / 4
        assert W[i, j].item() == pytest.approx(float(expected))


def test_storkey_matches_the_per_pattern_formula_with_exclusions():
    xi = hop.random_patterns(3, 6, gen(1)).double()
    N = 6
    W = torch.zeros(N, N, dtype=torch.float64)
    for x in xi:  # w_ij += (ξ_i ξ_j - ξ_i h_ji - h_ij ξ_j) / N,  h_ij = Σ_{k≠i,j} w_ik ξ_k
        h = lambda i, j: sum(W[i, k] * x[k] for k in range(N) if k not in (i, j))  # noqa: B023, E731
        new = torch.zeros_like(W)
        for i, j in itertools.product(range(N), range(N)):
            if i != j:
                new[i, j] = W[i, j] + (x[i] * x[j] - x[i] * h(j, i) - h(i, j) * x[j]) / N
        W = new
    torch.testing.assert_close(hop.storkey(xi[None])[0], W)


def test_storkey_weights_are_exactly_symmetric():
    """Storkey's W came out asymmetric by rounding, 4e-8 in float32 (the two cross terms subtracted one after the
    other); the energy argument (asynchronous updates never raise E) needs w_ij = w_ji."""
    W = hop.storkey(hop.random_patterns(20, 100, gen(0))[None].float())
    assert torch.equal(W, W.mT)


def random_network(N=40, seed=0):
    g = gen(seed)
    A = torch.randn(N, N, generator=g)
    W = (A + A.T) / 2
    W.fill_diagonal_(0)
    return W[None], torch.randn(1, N, generator=g) * 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_energy_never_increases_under_asynchronous_updates(seed):
    W, theta = random_network(seed=seed)
    s = hop.random_patterns(16, 40, gen(seed + 10))
    s[:4, :10] = 0  # partial cues: unknown units
    states, energies, status, _ = hop.run_async(W, theta, s[None], generator=gen(seed))
    steps = energies[0].diff(dim=-1)
    assert (steps <= 1e-4).all(), steps.max()
    assert (status == FIXED_POINT).all()
    torch.testing.assert_close(energies[0, :, -1], hop.energy(W, theta, states)[0], rtol=1e-5, atol=1e-4)
    fields = states[0] @ W[0]  # a fixed point: every unit agrees with the update rule
    assert ((fields >= theta) == (states[0] > 0)).all()


def test_stored_patterns_are_fixed_points_well_below_capacity():
    N, P = 200, 10  # load 0.05, far below 0.138
    xi = hop.random_patterns(P, N, gen())
    net = Hopfield(N).store(xi)
    for mode in ("async", "sync"):
        result = net.recall(xi, mode=mode)
        assert torch.equal(result.states, xi)
        assert (result.status == FIXED_POINT).all() and result.steps == 1
    noisy = hop.corrupt(xi, 0.15, gen(1))
    assert torch.equal(net.recall(noisy, generator=gen(2)).states, xi)
    partial = hop.corrupt(xi, 0.4, gen(3), erase=True)
    assert (partial == 0).sum(-1).eq(80).all()
    assert torch.equal(net.recall(partial, generator=gen(4)).states, xi)


def test_synchronous_updates_detect_a_two_cycle():
    net = Hopfield(2).store([[1, 1]])  # w_12 = 1
    result = net.recall([[1, -1], [1, 1]], mode="sync")
    assert result.status.tolist() == [TWO_CYCLE, FIXED_POINT]
    assert "1 2-cycle" in result.summary()
    assert (net.recall([[1, -1]], mode="async", generator=gen()).status == FIXED_POINT).all()


def test_synchronous_two_cycles_in_a_larger_network_alternate():
    N = 60
    xi = hop.random_patterns(12, N, gen(5))
    net = Hopfield(N).store(xi)
    result = net.recall(hop.random_patterns(64, N, gen(6)), mode="sync", max_steps=200)
    cycling = result.states[result.status == TWO_CYCLE]
    assert len(cycling) > 0
    W, theta = net.W[None], net.theta[None]
    once = hop.run_sync(W, theta, cycling[None], max_steps=1)[0][0]
    twice = hop.run_sync(W, theta, once[None], max_steps=1)[0][0]
    assert not torch.equal(once, cycling) and torch.equal(twice, cycling)


def test_storkey_stores_more_than_hebbian():
    N, P = 100, 18  # load 0.18: above the Hebbian limit
    xi = hop.random_patterns(P, N, gen(7))
    fixed = {}
    for rule in ("hebbian", "storkey"):
        states = Hopfield(N, rule).store(xi).recall(xi, max_steps=1, record=False).states
        fixed[rule] = (states == xi).all(-1).float().mean().item()
    assert fixed["storkey"] == 1.0 and fixed["hebbian"] < 0.7


def test_thresholds_enter_the_rule_and_the_energy():
    net = Hopfield(3, thresholds=[10.0, 10.0, 10.0]).store([[1, 1, 1]])
    result = net.recall([[1, 1, 1]], mode="sync")
    assert result.states.tolist() == [[-1, -1, -1]]
    assert net.energy([[1, 1, 1]]).item() == pytest.approx(-0.5 * 6 + 30)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Hopfield(0),
        lambda: Hopfield(3, rule="oja"),
        lambda: Hopfield(3).store([[1, 0.5, -1]]),
        lambda: Hopfield(3).store([[1, -1, 1], [1, -1]]),
        lambda: Hopfield(3).store([[1, -1, 1, 1]]),
        lambda: Hopfield(3).store([[1, -1, 1]]).recall([[1, 2, 1]]),
        lambda: Hopfield(3).store([[1, -1, 1]]).recall([[1, 1, 1]], mode="parallel"),
        lambda: Hopfield(4, thresholds=[float("nan")] * 4),
        lambda: Hopfield(4, thresholds=[0.0, float("inf"), 0.0, 0.0]),
        lambda: Hopfield(4, thresholds=[0.0, 0.0, 0.0]),
        lambda: Hopfield(4, thresholds="0 0 0 0"),
        lambda: Hopfield(4, thresholds=[[0.0, 0.0], "a"]),
        lambda: Hopfield(4, thresholds=[[0.0, 0.0], [0.0, 0.0]]),  # a table, read row by row as 4 thresholds
        lambda: Hopfield(4).store([[1, -1, 1, -1]]).energy([[1, -1, 1]]),
    ],
)
def test_bad_input_is_one_clear_error(make):
    with pytest.raises(RnnkitError) as e:
        make()
    assert "\n" not in str(e.value)


def test_a_threshold_beyond_the_dtypes_range_is_one_clear_error():
    """θ = 1e39 passed the finite check in float64 and was held as inf in float32: the tie tolerance became
    inf, every other unit's threshold -inf (always +1) and the energies inf and NaN, without a word."""
    with pytest.raises(RnnkitError, match="thresholds .* torch.float32") as e:
        Hopfield(3, thresholds=[1e39, 0.0, 0.0])
    assert "\n" not in str(e.value)
    assert Hopfield(3, thresholds=[1e39, 0.0, 0.0], dtype=torch.float64).theta[0] == 1e39


@pytest.mark.parametrize("mode", ["async", "sync"])
@pytest.mark.parametrize("dtype, big", [(torch.float64, 1e10), (torch.float32, 3e7)])
def test_a_large_threshold_leaves_the_other_units_rule_alone(mode, dtype, big):
    """The tie tolerance was one per network, scaled by the largest |θ| and row sum: θ_0 = 1e10 made it 10 for
    every unit, and unit 1, field -2 < θ_1 = 0, settled at +1, reported as a fixed point."""
    net = Hopfield(3, thresholds=[big, 0.0, 0.0], dtype=dtype).store([[1, 1, -1]])
    result = net.recall([[-1, 1, 1]], mode=mode, generator=gen())
    s = result.states[0].double()
    assert ((net.W.double() @ s >= net.theta.double()) == (s > 0)).all(), s


def test_thresholds_take_lists_arrays_and_tensors():
    for theta in ([1.0, 2.0, 3.0], torch.tensor([1, 2, 3]), torch.tensor([[1.0, 2.0, 3.0]])):
        assert Hopfield(3, thresholds=theta).theta.tolist() == [1.0, 2.0, 3.0]


def test_images_threshold_at_mid_grey_not_at_half_the_brightest_pixel(tmp_path):
    import matplotlib.image
    import numpy as np
    from PIL import Image

    from rnnkit.energy.patterns_io import read_images

    # dark grey (0.3) over black: every pixel darker than mid-grey, so every one +1; stretching the
    # image by its brightest pixel read the dark grey as white (-1)
    dark = np.zeros((4, 4))
    dark[:2] = 0.3
    matplotlib.image.imsave(tmp_path / "dark.png", dark, cmap="gray", vmin=0, vmax=1)
    Image.fromarray((dark * 255).astype(np.uint8)).save(tmp_path / "dark8.png")  # 8-bit: read as 0..255
    light = np.full((4, 4), 0.9)
    light[:2] = 0.2
    Image.fromarray((light * 255).astype(np.uint8)).save(tmp_path / "light.jpg", quality=100)
    x, _ = read_images([tmp_path / "dark.png", tmp_path / "dark8.png"])
    assert (x == 1).all()
    x, _ = read_images([tmp_path / "light.jpg"])
    assert x.view(4, 4)[:2].eq(1).all() and x.view(4, 4)[2:].eq(-1).all()
    # black line art on a transparent background: the transparent pixels are background (light)
    rgba = np.zeros((4, 4, 4))
    rgba[1, :, 3] = 1.0  # one opaque black row; the rest transparent black
    matplotlib.image.imsave(tmp_path / "icon.png", rgba)
    x, _ = read_images([tmp_path / "icon.png"])
    assert x.view(4, 4)[1].eq(1).all() and (x.sum() == 4 - 12)


def test_read_images_takes_a_list_of_paths():
    """One path, a str, was read a character at a time ('image a not found' for 'a.png'); an empty list was
    torch.stack's 'stack expects a non-empty TensorList'."""
    import pathlib

    from rnnkit.energy.patterns_io import read_images

    for paths in ("a.png", pathlib.Path("a.png"), [], None):
        with pytest.raises(
            RnnkitError, match=r"^read_images takes a list of image paths, got .*; give \[path\]"
        ):
            read_images(paths)


def test_read_images_takes_an_array_or_an_iterator_of_paths(tmp_path):
    """The argument check (bdc6980) asked `not paths`, which a numpy array of paths (or a pandas Series) answers
    with 'The truth value of an array with more than one element is ambiguous', where it was read as a list; an
    empty iterator was torch.stack's 'stack expects a non-empty TensorList'."""
    import numpy as np
    from PIL import Image

    from rnnkit.energy.patterns_io import read_images

    paths = [str(tmp_path / f"{i}.png") for i in range(2)]
    for path in paths:
        Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).save(path)
    assert read_images(np.array(paths))[0].tolist() == [[1, -1], [1, -1]]
    assert read_images(iter(paths))[0].tolist() == [[1, -1], [1, -1]]
    with pytest.raises(RnnkitError, match=r"^read_images takes a list of image paths, got .*; give \[path\]"):
        read_images(iter([]))


def test_read_images_takes_a_0_d_array_as_the_one_path_it_is():
    """A 0-d numpy array of a path (np.array('a.png'), an element taken of an array as an array) is one path, as a str
    is: read_images (0c7af72) listed it, and numpy said 'TypeError: iteration over a 0-d array', no line."""
    import numpy as np

    from rnnkit.energy.patterns_io import read_images

    with pytest.raises(
        RnnkitError, match=r"^read_images takes a list of image paths, got .*a\.png.*; give \[path\]"
    ):
        read_images(np.array("a.png"))


def _png(path, width, bit_depth, colour_type, row: bytes, trns: bytes | None = None):
    """A one-row PNG written chunk by chunk (Pillow writes no 2- or 4-bit grey, nor a grey or RGB tRNS key here)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, 1, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + (chunk(b"tRNS", trns) if trns else b"")
                     + chunk(b"IDAT", zlib.compress(b"\0" + row)) + chunk(b"IEND", b""))  # fmt: skip
    return path


def test_2_and_4_bit_grey_pngs_are_read_at_their_brightness(tmp_path):
    """matplotlib's imread divided a 2- or 4-bit grey PNG, which Pillow gives as 0..255, by 3 or 15: brightness
    1/3 read as 28, and every grey but black as light (-1)."""
    from rnnkit.energy.patterns_io import read_images

    two = _png(tmp_path / "2bit.png", 4, 2, 0, bytes([0b00011011]))  # 0, 1, 2, 3: brightness 0, 1/3, 2/3, 1
    four = _png(tmp_path / "4bit.png", 4, 4, 0, bytes([0x03, 0x7C]))  # 0, 3, 7, 12: 0, 0.2, 0.47, 0.8
    assert read_images([two])[0].tolist() == [[1, 1, -1, -1]]
    assert read_images([four])[0].tolist() == [[1, 1, 1, -1]]


def test_the_transparent_colour_of_a_grey_or_rgb_png_shows_the_white_background(tmp_path):
    """A grey or RGB PNG names its one transparent colour in a tRNS chunk (PNG optimisers write an RGBA icon whose
    transparent pixels share a colour so): matplotlib's imread dropped it, and a transparent black background read
    as black (+1), where the same picture as RGBA (and a palette PNG's transparent index) read as white."""
    import struct

    from rnnkit.energy.patterns_io import read_images

    black_key = struct.pack(">H", 0)
    grey = _png(tmp_path / "grey.png", 4, 8, 0, bytes([0, 40, 200, 255]), black_key)
    rgb = _png(tmp_path / "rgb.png", 3, 8, 2, bytes([0, 0, 0, 40, 40, 40, 255, 255, 255]), black_key * 3)
    grey16 = _png(tmp_path / "grey16.png", 2, 16, 0, struct.pack(">HH", 0, 9000), black_key)
    two = _png(
        tmp_path / "2bit.png", 4, 2, 0, bytes([0b00011011]), struct.pack(">H", 1)
    )  # the 1/3 grey clear
    assert read_images([grey])[0].tolist() == [[-1, 1, -1, -1]]
    assert read_images([rgb])[0].tolist() == [[-1, 1, -1]]
    assert read_images([grey16])[0].tolist() == [[-1, 1]]
    assert read_images([two])[0].tolist() == [[1, -1, -1, -1]]


def test_a_16_bit_grey_png_is_read_at_its_brightness_as_pillow_before_10_3_opens_it(tmp_path, monkeypatch):
    """Pillow before 10.3 (matplotlib >= 3.7 takes Pillow 8 or 9 on) opens a 16-bit grey PNG as mode I, 32-bit, not
    I;16: read_images converted it to RGBA, which clips at 255, so that every grey above 255 / 65535 read as white
    (-1); matplotlib's imread divided it by 65535. Pillow's table of PNG modes is set here as it was before 10.3."""
    import numpy as np
    from PIL import Image, PngImagePlugin

    from rnnkit.energy.patterns_io import read_images

    path = tmp_path / "grey16.png"
    Image.fromarray(np.array([[0, 30000, 40000, 65535]], dtype=np.uint16)).save(path)  # 0, 0.46, 0.61, 1
    monkeypatch.setitem(PngImagePlugin._MODES, (16, 0), ("I", "I;16B"))
    with Image.open(path) as im:
        assert im.mode == "I"
    assert read_images([path])[0].tolist() == [[1, 1, -1, -1]]


def test_a_list_of_1d_tensors_or_arrays_is_a_pattern_matrix():
    # a list of patterns as tensors was refused: "could not be read as a matrix of numbers"
    import numpy as np

    from rnnkit.energy.rbm import RBM

    rows = [[1.0, -1, 1, -1], [1.0, 1, -1, -1]]
    expected = Hopfield(4).store(torch.tensor(rows)).W
    for patterns in (
        [torch.tensor(r) for r in rows],
        [np.array(r) for r in rows],
        (torch.tensor(rows[0]), rows[1]),
    ):
        torch.testing.assert_close(Hopfield(4).store(patterns).W, expected)
    rbm = RBM(4, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        rbm.transform([torch.full((4,), 0.5)] * 3), rbm.transform(torch.full((3, 4), 0.5))
    )
    with pytest.raises(RnnkitError, match=r"mixed lengths \[3, 4\]"):
        Hopfield(4).store([torch.ones(4), torch.ones(3)])


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_float32_hebbian_ties_go_to_plus_one_as_the_rule_says(mode):
    """w = ξᵀξ / P is rounded in float32 where P is not a power of 2 (1/10 is not a binary fraction): a
    tied field Σ_j w_ij s_j = 0 came out as -3e-8, beyond the tolerance of 1e-9 Σ_j |w_ij|, and the unit
    went to -1. The final "fixed points" then broke the rule s_i = +1 if h_i >= 0 (N = 40, P = 10: one
    unit in 10 async recalls, two in 9 sync ones)."""
    g = gen(3)
    xi = hop.random_patterns(10, 40, g)
    net = Hopfield(40).store(xi)  # float32
    result = net.recall(hop.corrupt(xi, 0.3, g), mode=mode, generator=gen(1))
    K = xi.T.double() @ xi.double()  # P w in exact integers
    K.fill_diagonal_(0)
    fixed = result.status == FIXED_POINT
    assert fixed.any()
    states = result.states[fixed].double()
    assert ((states @ K >= 0) == (states > 0)).all()


def test_numpy_integer_sizes_work_as_python_ints():
    """Hopfield(np.int64(4)) (N from patterns.shape of an array product) was refused as not an integer."""
    net = Hopfield(np.int64(4)).store([[1, -1, 1, -1]])
    assert net.num_units == 4 and net.recall([1, -1, 1, 1], max_steps=np.int64(5)).states.tolist() == [
        [1, -1, 1, -1]
    ]


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, "float64"])
def test_a_dtype_that_is_not_floating_point_is_one_clear_error(dtype):
    """Hopfield(2, thresholds=[0.5, 0.5], dtype=torch.int64) truncated θ to 0 in silence, then recall failed
    deep in the tie tolerance with 'torch.finfo() requires a floating point input type'."""
    with pytest.raises(RnnkitError, match="floating-point torch.dtype"):
        Hopfield(2, thresholds=[0.5, 0.5], dtype=dtype)


@pytest.mark.parametrize(
    "empty, shape", [([], "(0,)"), (torch.zeros(0), "(0,)"), (np.zeros((0, 4)), "(0, 4)")]
)
def test_empty_patterns_report_the_shape_given(empty, shape):
    """store([]) said 'got shape (1, 0)': the shape after a 1-D input was made one row, not the one given."""
    with pytest.raises(RnnkitError, match=re.escape(f"non-empty (rows, units) matrix, got shape {shape}")):
        Hopfield(4).store(empty)


def test_noise_takes_numpy_floats_and_refuses_booleans():
    """corrupt(patterns, np.float32(0.25)) was refused as not between 0 and 1, while noise=True flipped every unit."""
    patterns = torch.tensor([[1.0, -1, 1, -1]])
    expected = hop.corrupt(patterns, 0.25, gen())
    torch.testing.assert_close(hop.corrupt(patterns, np.float32(0.25), gen()), expected, rtol=0, atol=0)
    with pytest.raises(RnnkitError, match="noise must be between 0 and 1"):
        hop.corrupt(patterns, True)


@pytest.mark.parametrize(
    "call",
    [
        lambda x: Hopfield(4).store(x),
        lambda x: Hopfield(4).recall(x),
        lambda x: RBM(4, 3).free_energy(x),
        lambda x: BoltzmannMachine(4).energy(x),
    ],
)
def test_data_on_the_meta_device_is_one_line(call):
    """A meta tensor holds no values to check: "Tensor.item() cannot be called on meta tensors" (Hopfield) or
    "Cannot copy out of meta tensor; no data!" (RBM), a NotImplementedError, from deep inside the checks."""
    with pytest.raises(RnnkitError, match="meta tensor, which holds no values"):
        call(torch.ones(1, 4, device="meta"))


@pytest.mark.parametrize("value", ["False", None, 2, 0.5])
def test_switches_that_are_no_switch_are_refused(value):
    """corrupt(erase=...), Hopfield.recall(record=...) and RBM.pseudo_likelihood(per_unit=...) took their switch for
    its truth value: erase='False' (a config file's string) zeroed the units it was to flip, in silence."""
    patterns = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    net = Hopfield(4)
    net.store(patterns)
    with pytest.raises(RnnkitError, match="erase must be True or False"):
        hop.corrupt(patterns, 0.5, erase=value)
    with pytest.raises(RnnkitError, match="record must be True or False"):
        net.recall(patterns, record=value)
    with pytest.raises(RnnkitError, match="per_unit must be True or False"):
        RBM(4, 2).pseudo_likelihood(torch.ones(1, 4), per_unit=value)
    a, b = (
        hop.corrupt(patterns, 0.5, torch.Generator().manual_seed(0), erase=e) for e in (np.bool_(False), 0)
    )
    assert torch.equal(a, b)


@pytest.mark.parametrize("as_array", [True, False])
def test_recall_leaves_float64_cues_as_they_were(as_array):
    """Asynchronous recall updated its float64 copy of the cues in place, and .double() of float64 cues (a numpy
    array, a tensor: the model's dtype float64) is no copy: the caller's cues were overwritten with the recalled
    states, a partial cue's zeros lost."""
    net = Hopfield(6, dtype=torch.float64).store([[1, -1, 1, -1, 1, 1]])
    cue = [[1.0, -1, 1, 1, 0, 0]]  # one unit wrong, two unknown
    cues = np.array(cue) if as_array else torch.tensor(cue, dtype=torch.float64)
    result = net.recall(cues, generator=gen())
    assert result.states.tolist() == [[1, -1, 1, -1, 1, 1]]
    assert cues.tolist() == cue


def test_overlap_of_float64_states_with_float32_patterns():
    """A float64 network's states (dtype=torch.float64, or torch's default set so) against random_patterns, which
    are float32, failed in matmul: 'expected m1 and m2 to have the same dtype, but got: double != float'."""
    xi = hop.random_patterns(3, 40, gen())
    net = Hopfield(40, dtype=torch.float64).store(xi)
    result = net.recall(hop.corrupt(xi, 0.1, gen(1)), generator=gen(2))
    m = hop.overlap(result.states, xi)
    assert m.dtype == torch.float64
    assert torch.equal(m, hop.overlap(result.states, xi.double()))
    assert torch.equal(hop.overlap(xi, result.states), m.T)


@pytest.mark.parametrize("count, units", [(-1, 5), (2.5, 5), ("3", 5), (0, 5), (2, 0), (2, np.float64(4))])
def test_random_patterns_of_a_bad_count_or_size_is_one_line(count, units):
    # (-1 failed inside torch "Trying to create tensor with negative dimension", 2.5 in randint's overloads, and
    # 0 gave an empty tensor that store refuses later)
    with pytest.raises(RnnkitError, match="must be an integer >= 1") as e:
        hop.random_patterns(count, units)
    assert "\n" not in str(e.value)
    assert hop.random_patterns(np.int64(2), 3, gen()).shape == (2, 3)


@pytest.mark.parametrize("as_given", [lambda x: x, np.array], ids=["list", "array"])
def test_corrupt_and_overlap_take_lists_and_arrays_as_store_does(as_given):
    """store and recall read a list or array of ±1 rows; corrupt failed on the same list with "'list' object has
    no attribute 'shape'" (an array inside torch.where), overlap with "'list' object has no attribute 'dtype'"."""
    rows = [[1, -1, 1, 1, -1, -1, 1, -1], [-1, -1, 1, 1, 1, -1, -1, 1]]
    xi = torch.tensor(rows, dtype=torch.float32)
    cues = hop.corrupt(as_given(rows), 0.25, gen(1))
    assert torch.equal(cues, hop.corrupt(xi, 0.25, gen(1)))
    assert torch.equal(
        hop.corrupt(as_given(rows), 0.5, gen(1), erase=True), hop.corrupt(xi, 0.5, gen(1), erase=True)
    )
    assert torch.equal(hop.overlap(as_given(rows), as_given(rows)), hop.overlap(xi, xi))
    assert hop.overlap(cues, as_given(rows)).diagonal().tolist() == [0.5, 0.5]
    with pytest.raises(RnnkitError, match="patterns must be binary"):
        hop.corrupt(as_given([[1, 2]]), 0.5)


def test_single_thread_in_overlapping_users_leaves_the_main_threads_count():
    """Two samplers overlapping in two threads (recall, CD training, Ising in threads) left the main thread at 1
    thread for good (torch's count is process-wide for a thread that starts using torch meanwhile); users in the
    main thread that end out of order restored the count of the other's."""
    import contextlib
    import subprocess
    import sys

    from rnnkit.energy._util import single_thread

    code = (
        "import threading, torch\n"
        "from rnnkit.energy._util import single_thread\n"
        "torch.set_num_threads(2); a_in, a_out = threading.Event(), threading.Event()\n"
        "def A():\n"
        "    with single_thread(): a_in.set(); a_out.wait()\n"
        "t = threading.Thread(target=A); t.start(); a_in.wait()\n"
        "with single_thread(): a_out.set(); t.join()\n"
        "print(torch.get_num_threads())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["2"]
    threads = torch.get_num_threads()
    first, second = single_thread(), single_thread()
    try:
        torch.set_num_threads(2)
        with contextlib.ExitStack() as stack:
            first.__enter__()
            stack.callback(second.__exit__, None, None, None)
            second.__enter__()
            assert torch.get_num_threads() == 1
            first.__exit__(None, None, None)
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_the_summary_counts_with_thousands_separators_as_the_commands_do():
    """'1,000 patterns of 2,000 units, hebbian rule, async updates: 1000 unfinished': the summary's counts lacked the
    separators of the command's other counts."""
    net = Hopfield(4).store([[1, 1, -1, -1]])
    assert net.recall(torch.tensor([[1.0, 1, -1, -1]]).repeat(1234, 1)).summary() == "1,234 fixed points"
    assert net.recall([[1, 1, -1, -1]]).summary() == "1 fixed point"


def test_single_thread_and_a_work_in_another_thread_put_back_the_thread_count_of_before_both():
    """A sampler in the main thread (single_thread: 1 thread) while a training run or a word2vec fit started in a
    thread (rnnkit._threads.threads_for_the_work): the work read the main thread's 1 as its count of before (a new
    thread takes the count last set) and, ending last, left every thread started after on 1 (the process at 2)."""
    import threading

    from rnnkit._threads import threads_for_the_work
    from rnnkit.energy._util import single_thread

    threads = torch.get_num_threads()
    work_in, main_out = threading.Event(), threading.Event()

    def work():  # as Word2Vec.fit, or train() with threads=1
        with threads_for_the_work(1):
            work_in.set()
            main_out.wait(30)

    torch.set_num_threads(2)
    try:
        with single_thread():
            t = threading.Thread(target=work)
            t.start()
            assert work_in.wait(30) and torch.get_num_threads() == 1
        main_out.set()
        t.join(30)
        seen = []
        fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        fresh.start()
        fresh.join()
        assert (torch.get_num_threads(), seen) == (2, [2])
    finally:
        main_out.set()
        torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_a_half_precision_network_is_one_clear_error(dtype):
    """In bfloat16 the tie tolerance, eps (1 + Σ_j |w_ij|), reached 0.63 at N = 1000, P = 100 (fields in steps of
    1/P = 0.01): recall left 68 units at +1 whose field under the network's own weights was as low as -0.62, and
    called the states fixed points (float16: 11, down to -0.06). Refused as RBM and Ising refuse it."""
    with pytest.raises(RnnkitError, match=r"float32 or float64, got torch\.(b?float16)"):
        Hopfield(4, dtype=dtype)
    assert Hopfield(4, dtype=torch.float32).W.dtype == torch.float32


def test_an_asynchronous_recall_that_reaches_a_fixed_point_in_its_last_sweep_has_converged():
    """A state that moved in the last allowed sweep was 'unfinished' even when it ended on a fixed point:
    Hopfield(2) storing (1, 1) ran from (1, -1) in one sweep to (1, 1) or (-1, -1), '1 unfinished'; in the
    capacity study 6-9 % of the random starts at N = 1000 were fixed points so reported (left out of spurious)."""
    net = Hopfield(2).store([[1, 1]])
    for seed in range(4):
        result = net.recall([[1, -1]], max_steps=1, generator=gen(seed))
        assert result.states.tolist() in ([[1, 1]], [[-1, -1]]) and result.summary() == "1 fixed point"
    N = 200
    net = Hopfield(N, dtype=torch.float64).store(hop.random_patterns(10, N, gen(8)))
    starts = hop.random_patterns(64, N, gen(9)).double()
    for sweeps in (2, 3, 4):
        result = net.recall(starts, max_steps=sweeps, generator=gen(10), record=False)
        s = result.states.numpy()
        W = (net.W.numpy() * 10).round()  # Σ_μ ξ_i ξ_j: integer fields, no rounding in the sign
        fixed = (np.where(s @ W >= 0, 1.0, -1.0) == s).all(-1)  # the update rule changes no unit
        assert 0 < fixed.sum() < len(s)
        assert (result.status.numpy() == FIXED_POINT).tolist() == fixed.tolist()


def test_a_synchronous_recall_says_what_each_state_is_when_its_budget_ends():
    """A state that reached a fixed point or a 2-cycle in the last allowed steps was 'unfinished': Hopfield(3)
    storing (1, 1, 1) went from (1, 1, -1) to (1, 1, 1) in one step, '1 unfinished'."""
    net = Hopfield(3).store([[1, 1, 1]])
    assert net.recall([[1, 1, -1]], mode="sync", max_steps=1).summary() == "1 fixed point"
    assert Hopfield(2).store([[1, 1]]).recall([[1, -1]], mode="sync", max_steps=1).summary() == "1 2-cycle"
    N, P = 60, 12
    xi = hop.random_patterns(P, N, gen(5))
    net = Hopfield(N, dtype=torch.float64).store(xi)
    W = (net.W.numpy() * P).round()  # Σ_μ ξ_i ξ_j: integer fields, no rounding in the sign

    def F(s):  # one synchronous update
        return np.where(s @ W >= 0, 1.0, -1.0)

    starts = hop.random_patterns(64, N, gen(6)).double()
    for steps in (1, 2, 3, 4):
        result = net.recall(starts, mode="sync", max_steps=steps, record=False)
        s = result.states.numpy()
        fixed = (F(s) == s).all(-1)
        cycle = ~fixed & (F(F(s)) == s).all(-1)
        expected = np.where(fixed, FIXED_POINT, np.where(cycle, TWO_CYCLE, hop.UNFINISHED))
        assert result.status.tolist() == expected.tolist()


def _peak_growth(setup: str, measured: str, nbytes: str) -> float:
    """In a fresh process: the growth of the peak resident set over `measured` (a line of Python after `setup`'s),
    over `nbytes` (an expression of the bytes it should take)."""
    script = (
        "import resource, sys, torch\n"
        f"sys.path.insert(0, {str(pathlib.Path(hop.__file__).parents[2])!r})\n"
        "from rnnkit.energy import hopfield\n"
        f"{setup}\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"{measured}\n"
        f"print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 / ({nbytes}))\n"
    )
    return float(
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    )


def test_hebbian_weights_take_no_more_memory_than_themselves():
    # N = 4,000: 64 MB of float32 weights; the quotient and W - diag_embed(diag W) made three more (M, N, N)
    # tensors, a peak of about 4 x W (1.6 GB for N = 10,000). In a fresh process, the peak resident set's growth.
    growth = _peak_growth(
        "xi = hopfield.random_patterns(20, 4000, torch.Generator().manual_seed(0), batch=(1,))",
        "W = hopfield.hebbian(xi)",
        "W.numel() * 4",
    )
    assert growth < 1.8, f"peak memory {growth:.2f} x the weights'"


def test_a_recall_takes_no_more_memory_than_its_float64_weights():
    # N = 4,000: 64 MB of float32 weights, 128 MB in float64 for the tie-safe comparison; W.abs().sum(-1) made another
    # 128 MB float64 (M, N, N) for the tolerance, the peak of a recall (2.4 GB for N = 10,000)
    growth = _peak_growth(
        "W = hopfield.hebbian(hopfield.random_patterns(20, 4000, torch.Generator().manual_seed(0), batch=(1,)))",
        "W64, threshold = hopfield._tie_safe(W, torch.zeros(1, 4000))",
        "W64.numel() * 8",
    )
    assert growth < 1.4, f"peak memory {growth:.2f} x the float64 weights'"


def test_a_threshold_past_floats_range_is_refused_in_one_line():
    """A Python int past float's range (10**400) in thresholds failed in torch.as_tensor with a bare "OverflowError:
    int too large to convert to float"; it is one line, as inf's is."""
    for theta in (10**400, [0.0, -(10**400), 0.0, 0.0]):
        with pytest.raises(RnnkitError, match="thresholds contain a number past float's range"):
            Hopfield(4, thresholds=theta)


def test_float32_hebbian_ties_of_few_patterns_go_to_plus_one():
    """With P = 3 a weight is ±1 or ±1/3, and float32's 1/3 is 1e-8 off: a tied field Σ_j w_ij s_j = 0 over
    ~75 weights of ±1/3 reads up to a few 1e-7 off, past float32's eps alone (1.2e-7), which is why the tie
    tolerance grows with Σ_j |w_ij|. One synchronous update from random states is the integer rule's."""
    N, P = 301, 3  # odd N: each field a sum of an even number of odd terms, so ties happen
    xi = hop.random_patterns(P, N, gen(11))
    K = xi.T.double() @ xi.double()  # P w in exact integers
    K.fill_diagonal_(0)
    starts = hop.random_patterns(64, N, gen(12))
    expected = torch.where(starts.double() @ K >= 0, 1.0, -1.0)
    assert ((starts.double() @ K) == 0).sum() > 100  # ties enough to test the rule on
    result = Hopfield(N).store(xi).recall(starts, mode="sync", max_steps=1, record=False)
    assert torch.equal(result.states.double(), expected)


def test_the_asynchronous_order_is_a_fresh_random_permutation_of_the_generator():
    """Each sweep visits every unit once in a random order drawn from `generator`: the same seed gives the same
    order, another seed another. Read from the energy trace: with W = 0 and θ_i = -(i + 1), every unit flips
    from -1 to +1 when visited and lowers E by exactly 2 (i + 1)."""
    N = 12
    net = Hopfield(N, thresholds=[-(i + 1.0) for i in range(N)], dtype=torch.float64)

    def order(seed):
        result = net.recall([[-1.0] * N], generator=gen(seed))
        assert result.states.tolist() == [[1.0] * N] and result.steps == 2  # the second sweep moves nothing
        steps = -result.energies[0].diff() / 2 - 1  # the unit visited at each step
        assert steps[N:].tolist() == [-1.0] * N  # (nothing flips in the second sweep: ΔE = 0)
        return steps[:N].long().tolist()

    first = order(0)
    assert sorted(first) == list(range(N))
    assert order(0) == first and order(1) != first and first != list(range(N))


@pytest.mark.parametrize("mode", ["async", "sync"])
def test_a_recall_runs_no_more_than_max_steps(mode):
    """max_steps counts sweeps (async) or synchronous updates: a recall whose budget ends before a fixed point runs
    that many and records the first energy and one per unit updated (async) or per update (sync)."""
    W, theta = random_network(N=40, seed=3)
    net = Hopfield(40, dtype=torch.float64)
    net.W, net.theta = W[0].double(), theta[0].double()
    starts = hop.random_patterns(16, 40, gen(13))
    for max_steps in (1, 2):
        result = net.recall(starts, mode=mode, max_steps=max_steps, generator=gen(14))
        assert (result.status == hop.UNFINISHED).any()
        assert result.steps == max_steps
        assert result.energies.shape == (16, 1 + max_steps * (40 if mode == "async" else 1))


def test_a_state_classified_by_synchronous_recall_stops_where_it_is():
    """A state stops moving once it is a fixed point or in a 2-cycle, whatever the others in the batch do:
    each cue's final state and status are the same recalled alone as among 64 cues that take longer."""
    N = 60
    net = Hopfield(N).store(hop.random_patterns(12, N, gen(5)))
    cues = hop.random_patterns(64, N, gen(6))
    together = net.recall(cues, mode="sync", max_steps=200)
    assert (together.status == TWO_CYCLE).sum() > 4
    for cue, state, status in zip(cues, together.states, together.status):
        alone = net.recall(cue[None], mode="sync", max_steps=200)
        assert torch.equal(alone.states[0], state) and alone.status[0] == status


def test_corrupt_flips_round_noise_times_n_units():
    """round(noise N) units of each pattern, not its floor: 0.29 of 10 units is 3 (2.9), 0.15 of 20 is 3; noise 1 flips all."""
    for noise, N in ((0.29, 10), (0.15, 20), (0.96, 10)):
        xi = hop.random_patterns(50, N, gen(15))
        assert (hop.corrupt(xi, noise, gen(16)) != xi).sum(-1).eq(round(noise * N)).all()
        assert (hop.corrupt(xi, noise, gen(16), erase=True) == 0).sum(-1).eq(round(noise * N)).all()
    assert torch.equal(hop.corrupt(xi, 1.0, gen(17)), -xi)  # noise 1: every unit


def test_stored_patterns_may_not_hold_the_unknown_units_a_cue_may():
    """0 (an unknown unit) is for cues and states only: a stored pattern of ±1 values is what the rules are."""
    with pytest.raises(RnnkitError, match=r"patterns must be binary \(-1 or \+1\); found 0 ") as e:
        Hopfield(3).store([[1, 0, -1]])
    assert "\n" not in str(e.value)
    assert Hopfield(3).store([[1, 1, -1]]).recall([[1, 0, -1]], mode="sync").states.tolist() == [[1, 1, -1]]
