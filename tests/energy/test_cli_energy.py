import io
import json
import pathlib
import re
import sys

import numpy as np
import pytest
import torch

from rnnkit.cli import main
from rnnkit.errors import RnnkitError

SMOKE = {
    "hopfield recall": ["recall.png", "energy.png"],
    "hopfield recall --mode sync --rule storkey --erase": ["recall.png"],
    "hopfield recall --digits 3": ["recall.png"],
    "hopfield capacity": ["capacity.png", "capacity.json"],
    "rbm train": ["filters.png", "samples.png"],
    "rbm train --visible gaussian --cd --k 2": ["filters.png", "samples.png"],
    "rbm dbn": ["dbn_filters.png"],
    "rbm cd-check": ["cd_check.png"],
    "ising sweep --update heat-bath": ["ising.png"],
}


@pytest.mark.parametrize("command", SMOKE)
def test_every_subcommand_runs_dry_and_writes_its_figures(command, tmp_path, capsys):
    assert main([*command.split(), "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in SMOKE[command]:
        assert (tmp_path / name).stat().st_size > 0
        assert f"wrote {tmp_path / name}" in out
    if command == "rbm train":  # the log-likelihood of the digits its pseudo-likelihood scores, not grey ones
        assert "log-likelihood of binarised test digits" in out
    if command == "rbm dbn":  # the top layer's features alone were said to be "(top layers)"
        assert "DBN features (top layer): accuracy" in out and "DBN features (all layers): accuracy" in out


@pytest.mark.parametrize("erase", [False, True])
def test_hopfield_recall_recalls_as_the_python_api_with_each_flag_given(tmp_path, capsys, erase):
    """`hopfield recall --rule storkey --mode sync --max-steps 2 --noise 0.3 --erase --seed 5` stores, corrupts and
    recalls as Hopfield(N, "storkey"), corrupt(xi, 0.3, g, erase) and recall(cues, "sync", 2, g) of a generator seeded
    5 do (mutants that stored by the Hebbian rule or recalled asynchronously whatever --rule and --mode said passed
    every test: the smoke test of those flags checks that the figures are written)."""
    from rnnkit.energy import hopfield

    flags = ["--random", "6", "--units", "24", "--noise", "0.3", "--mode", "sync", "--rule", "storkey"]
    flags += ["--max-steps", "2", "--seed", "5", *(["--erase"] if erase else [])]
    assert main(["hopfield", "recall", *flags, "--out", str(tmp_path)]) == 0
    g = torch.Generator().manual_seed(5)
    xi = hopfield.random_patterns(6, 24, g, "cpu")
    cues = hopfield.corrupt(xi, 0.3, g, erase=erase)
    result = hopfield.Hopfield(24, "storkey").store(xi).recall(cues, "sync", 2, g, record=False)
    m = " ".join(f"{v:.3f}" for v in hopfield.overlap(result.states, xi).diagonal().tolist())
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"6 patterns of 24 units, storkey rule, sync updates: {result.summary()}"
    assert f"final overlap with the stored pattern: {m}" in out


def test_hopfield_capacity_runs_the_python_apis_experiment_with_each_flag_given(tmp_path, capsys):
    """capacity.json's rows are capacity_experiment's of CapacityConfig(sizes, loads, "storkey", 0.1, random_starts 2,
    min_patterns 4, max_sweeps 3, seed 7), each flag reaching the field of its name (the tests ran --sizes and
    --loads alone: a mutant that dropped any other flag passed them all)."""
    from rnnkit.energy import capacity

    flags = ["--sizes", "16", "24", "--loads", "0.1", "0.3", "--rule", "storkey", "--noise", "0.1"]
    flags += ["--random-starts", "2", "--min-patterns", "4", "--max-sweeps", "3", "--seed", "7"]
    assert main(["hopfield", "capacity", *flags, "--out", str(tmp_path)]) == 0
    cfg = capacity.CapacityConfig((16, 24), (0.1, 0.3), "storkey", 0.1, 2, 4, 3, 7)
    rows = json.loads((tmp_path / "capacity.json").read_text())["rows"]
    expected = json.loads(json.dumps(capacity.capacity_experiment(cfg)))  # (tuples as JSON lists)
    assert [{**r, "seconds": 0} for r in rows] == [{**r, "seconds": 0} for r in expected]


@pytest.mark.parametrize("action", ["train", "dbn"])
def test_each_rbm_training_flag_given_reaches_the_option_of_its_name(action):
    """`rbm train --cd` trains by CD-k (persistent False), `--momentum 0.5` sets momentum, and so on: each flag,
    parsed by the real parser, the RBMTrainConfig field of its name (mutants that dropped --cd, --momentum,
    --weight-decay, --batch-size or --k passed every test: the smoke tests check the figures are written)."""
    from rnnkit.cli import build_parser
    from rnnkit.cli.energy import _train_config

    given = {
        "--epochs": 3,
        "--batch-size": 7,
        "--lr": 0.02,
        "--k": 2,
        "--momentum": 0.5,
        "--weight-decay": 0.001,
    }
    flags = [str(a) for kv in given.items() for a in kv]
    cfg = _train_config(build_parser().parse_args(["rbm", action, *flags, "--cd"]))
    for flag, value in given.items():
        assert getattr(cfg, flag[2:].replace("-", "_")) == value, flag
    assert cfg.persistent is False


def test_ising_sweep_runs_the_python_apis_model_with_each_flag_given(tmp_path, capsys):
    """ising.json's settings and rows are those of Ising(6, [1.5, 2.5], 0.5, 0.25, "heat-bath", "random", generator
    seeded 3).run(5, 4): each flag reaching the argument of its name (the heat bath's smoke test checks the figure is
    written, and no test gave --start)."""
    from rnnkit.energy import ising

    flags = ["--size", "6", "--temperatures", "1.5", "2.5", "--coupling", "0.5", "--field", "0.25"]
    flags += ["--update", "heat-bath", "--start", "random", "--sweeps", "5", "--burn-in", "4", "--seed", "3"]
    assert main(["ising", "sweep", *flags, "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "ising.json").read_text())
    settings = {"size": 6, "coupling": 0.5, "field": 0.25, "update": "heat-bath", "start": "random", "burn_in": 4,
                "sweeps": 5, "measured": 5, "seed": 3, "onsager_tc": None}  # fmt: skip
    assert {k: v for k, v in written.items() if k != "rows"} == settings
    g = torch.Generator().manual_seed(3)
    results = ising.Ising(6, [1.5, 2.5], 0.5, 0.25, "heat-bath", "random", g).run(5, 4)
    for i, row in enumerate(written["rows"]):
        assert row == {k: results[k][i].item() for k in row}


def test_cd_check_measures_the_python_apis_errors_with_each_flag_given(tmp_path, capsys):
    """`rbm cd-check --visible-units 4 --hidden-units 3 --weight-scale 0.5 --ks 1 3 --seed 2` says the errors of
    cd_gradient_expected against exact_gradient for RBM(4, 3, init_scale=0.5) and its data, drawn from a generator
    seeded 2 (a mutant that drew the weights at the default scale 2 whatever --weight-scale said passed every test)."""
    from rnnkit.energy import rbm_exact
    from rnnkit.energy.rbm import RBM

    flags = [
        "--visible-units",
        "4",
        "--hidden-units",
        "3",
        "--weight-scale",
        "0.5",
        "--ks",
        "1",
        "3",
        "--seed",
        "2",
    ]
    assert main(["rbm", "cd-check", *flags, "--out", str(tmp_path)]) == 0
    g = torch.Generator().manual_seed(2)
    rbm = RBM(4, 3, init_scale=0.5, generator=g)
    data = (torch.rand(200, 4, generator=g) < 0.3).float()
    exact = torch.cat([t.flatten() for t in rbm_exact.exact_gradient(rbm, data)])
    expected = []
    for k in (1, 3):
        cd = torch.cat([t.flatten() for t in rbm_exact.cd_gradient_expected(rbm, data, k)])
        error = ((cd - exact).norm() / exact.norm()).item()
        expected.append(f"k={k:4d}: |E[CD-k gradient] - exact gradient| / |exact| = {error:.2e}")
    assert capsys.readouterr().out.splitlines()[:2] == expected


def test_rbm_gibbs_steps_and_dbn_c_reach_the_functions_they_name(tmp_path, capsys, monkeypatch):
    """`rbm train --gibbs-steps 3` draws its samples figure by RBM.sample(50, 3) and `rbm dbn --C 0.5` fits
    LogisticRegression(C=0.5) (mutants that passed 10 and 100.0 whatever the flags said passed every test)."""
    from sklearn.linear_model import LogisticRegression

    from rnnkit.energy.rbm import RBM

    steps, cs = [], []
    sample, fit = RBM.sample, LogisticRegression.fit
    monkeypatch.setattr(RBM, "sample", lambda self, n, k, **kw: steps.append(k) or sample(self, n, k, **kw))
    monkeypatch.setattr(LogisticRegression, "fit", lambda self, *a: cs.append(self.C) or fit(self, *a))
    assert main(["rbm", "train", "--dry-run", "--gibbs-steps", "3", "--out", str(tmp_path / "t")]) == 0
    assert main(["rbm", "dbn", "--dry-run", "--C", "0.5", "--out", str(tmp_path / "d")]) == 0
    assert steps == [3] and cs == [0.5, 0.5, 0.5]  # (raw pixels, the top layer's features, all layers')


@pytest.mark.parametrize("action", ["train", "dbn"])
def test_rbm_digits_are_split_in_the_order_of_seed(action):
    """--seed 4 shuffles the digits by torch.randperm of a generator seeded 4 before the split (a mutant that shuffled
    them by seed 0 whatever --seed said passed every test); under --dry-run the first 300, 80% to training."""
    from rnnkit.cli import build_parser
    from rnnkit.cli.energy import _digits_split
    from rnnkit.energy.digits import load_digits

    x, y = load_digits()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(4))[:300]
    args = build_parser().parse_args(["rbm", action, "--seed", "4", "--dry-run"])
    x_train, y_train, x_test, y_test = _digits_split(args)
    assert torch.equal(x_train, x[order[:240]]) and torch.equal(y_test, y[order[240:]])


def test_patterns_from_a_text_file(tmp_path, capsys):
    path = tmp_path / "patterns.txt"
    path.write_text("+-+-+-+-\n1 1 1 1 -1 -1 -1 -1\n")
    assert main(["hopfield", "recall", "--patterns", str(path), "--noise", "0", "--out", str(tmp_path)]) == 0
    assert "2 patterns of 8 units" in capsys.readouterr().out


def test_a_patterns_file_that_is_a_device_is_refused(tmp_path, pipe, capsys):
    """--patterns /dev/zero (or a pipe without end) was read to an end that never came: the memory filled, then
    'out of memory ...; choose smaller sizes'. Read to its first NUL byte, it is one line; a pipe of text reads."""
    zeros = pipe(b"\0" * 65536, 64)
    assert main(["hopfield", "recall", "--patterns", str(zeros), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"rnnkit: error: {zeros} is a pipe or a device that gives binary data (a NUL byte at byte 0); give a text file\n"
    )
    from rnnkit.energy.patterns_io import read_patterns

    assert read_patterns(pipe(b"1 -1 1\n+-+\n", 1)) == ([[1.0, -1.0, 1.0], [1.0, -1.0, 1.0]], None)


def test_patterns_file_lines_may_end_with_a_separator(tmp_path):
    # "1,-1,1," was refused: cannot read the line as numbers (the empty token after the last comma)
    from rnnkit.energy.patterns_io import read_patterns

    path = tmp_path / "patterns.txt"
    path.write_text("1,-1,1,\n,-1, 1 ,-1 \n1 -1 -1\n")
    assert read_patterns(path) == ([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0]], None)
    path.write_text("1,-1\n, ,\n")
    with pytest.raises(RnnkitError, match="cannot read the line ', ,' as numbers"):
        read_patterns(path)


@pytest.mark.parametrize("within", ["\f", "\x85", "\u2028", "\x1c", "\v"])
def test_a_patterns_file_line_ends_at_a_newline_only(tmp_path, within):
    """str.splitlines ended a line at a form feed, \\x85, \\u2028 (and \\v, \\x1c-\\x1e) inside it: '1 -1\\f1 -1'
    was two patterns of 2 where numpy.loadtxt reads one of 4 (those characters are whitespace between its values),
    as the pairs files of word vectors end their lines at \\n, \\r\\n and \\r only."""
    import numpy as np

    from rnnkit.energy.patterns_io import read_patterns

    path = tmp_path / "patterns.txt"
    path.write_bytes(f"1 -1{within}1 -1\r\n-1 1 -1 1\r-1 -1{within}1 1\n".encode())
    rows, _ = read_patterns(path)
    assert rows == np.loadtxt(path).tolist() == [[1, -1, 1, -1], [-1, 1, -1, 1], [-1, -1, 1, 1]]
    # (a string of + and - holds no separator: such a line is refused, as a line of two strings is)
    path.write_bytes(f"+-+{within}-+-\n".encode())
    with pytest.raises(RnnkitError, match="cannot read the line"):
        read_patterns(path)


@pytest.mark.parametrize("text", ["+-+\n-+-\n", "1 -1 1\n-1 1 -1\n"])
def test_a_patterns_file_saved_with_a_byte_order_mark_reads(tmp_path, text):
    # Notepad's "UTF-8 with BOM": the first line read "\ufeff+-+", refused as "cannot read the line as numbers"
    from rnnkit.energy.patterns_io import read_patterns

    path = tmp_path / "patterns.txt"
    path.write_text(text, encoding="utf-8-sig")
    assert read_patterns(path) == ([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]], None)


@pytest.mark.parametrize(
    "args, message",
    [
        (["hopfield", "recall", "--units", "0"], "--units (number of units N) must be an integer >= 1"),
        # the value errors named no file ("patterns must be binary")
        (["hopfield", "recall", "--patterns", "{bad}"], "--patterns {bad}: patterns must be binary"),
        (
            ["hopfield", "recall", "--patterns", "{ragged}"],
            "--patterns {ragged}: patterns have mixed lengths",
        ),
        # an empty (or blank) file was "patterns must be a non-empty (rows, units) matrix, got shape (1, 0)"
        (
            ["hopfield", "recall", "--patterns", "{blank}"],
            "{blank} holds no patterns; give one ±1 pattern a line",
        ),
        # a missing file was 'cannot read patterns file X: No such file or directory' and, for an image, '[Errno 2] ...'
        (
            ["hopfield", "recall", "--patterns", "{missing}"],
            "patterns file {missing} not found; give a text file of",
        ),
        (
            ["hopfield", "recall", "--images", "{missing}"],
            "image {missing} not found; give PNG or JPEG images",
        ),
        (["hopfield", "recall", "--patterns", "{latin1}"], "is not UTF-8 text"),
        (["hopfield", "recall", "--digits", "0"], "--digits takes 1 to 10 classes, got 0"),
        (["hopfield", "recall", "--device", "bogus"], "unknown --device 'bogus'; use cpu or cuda"),
        (["hopfield", "recall", "--device", "meta"], "--device meta is not supported"),
        (["rbm", "cd-check", "--ks", "1", "-1"], "k (Gibbs steps) must be an integer >= 1, got -1"),
        (["rbm", "cd-check", "--ks", "0"], "k (Gibbs steps) must be an integer >= 1, got 0"),
        (["rbm", "dbn", "--C", "0"], "--C (inverse regularisation of the classifier) must be a positive"),
        (["ising", "sweep", "--coupling", "nan"], "--coupling must be a finite number, got nan"),
        (["ising", "sweep", "--field", "inf"], "--field must be a finite number, got inf"),
        (["ising", "sweep", "--coupling", "1e39"], "must keep the local field J n_i + h"),  # -inf energies
        (["ising", "sweep", "--temperatures", "1", "nan"], "--temperatures must be a finite number"),
        (["hopfield", "capacity", "--sizes", "0"], "--sizes (N) must be an integer >= 1, got 0"),
        (["hopfield", "capacity", "--sizes", "1"], "--sizes (N) must be 2 or more"),  # 1 / (2 ln 1) crashed
        # recall ran a network of 1 unit (W = 0): every state went to +1, whatever was stored
        (["hopfield", "recall", "--units", "1"], "--units 1: a Hopfield network needs 2 or more units"),
        (
            ["hopfield", "recall", "--patterns", "{one}"],
            "{one} has patterns of 1 unit: a Hopfield network needs 2",
        ),
        (
            ["ising", "sweep", "--temperatures", "1e-50"],
            "temperatures must be positive numbers that torch.float32",
        ),
        (["rbm", "train", "--k", "0"], "--k (Gibbs steps per update) must be an integer >= 1"),
        (["ising", "sweep", "--temperatures", "0", "1"], "--temperatures must be positive"),
        (["ising", "sweep", "--t-min", "-1"], "--t-min and --t-max: temperatures must be positive"),
        (["ising", "sweep", "--size", "0"], "--size (lattice side L) must be an integer >= 1"),
        # (it was Python's "[Errno 21] Is a directory: '...'", as --patterns of a folder says it no longer)
        (
            ["hopfield", "recall", "--images", "{folder}"],
            "cannot read image {folder}: Is a directory; give PNG",
        ),
        # "$PATTERNS" unset: it was 'patterns file  not found', 'image  not found'
        (
            ["hopfield", "recall", "--patterns", ""],
            "--patterns is empty; give a text file of ±1 patterns, or leave",
        ),
        (["hopfield", "recall", "--images", "{one}", " "], "--images holds an empty name (["),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(args, message, tmp_path, capsys):
    files = {"bad": "1 -1 0.5\n", "ragged": "1 -1 1\n1 -1\n", "blank": "\n  \n", "one": "1\n-1\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "latin1").write_bytes(b"caf\xe9 1 -1\n")  # (not FF FE: a UTF-16 byte-order mark)
    paths = {name: str(tmp_path / name) for name in [*files, "latin1", "missing"]} | {"folder": str(tmp_path)}
    args, message = [a.format(**paths) for a in args], message.format(**paths)
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and message in err and err.count("\n") == 1, err


OUT_COMMANDS = ["hopfield recall", "hopfield capacity", "rbm train", "rbm dbn", "rbm cd-check", "ising sweep"]


@pytest.mark.parametrize("command", OUT_COMMANDS)
def test_an_out_that_is_a_file_is_one_line_before_any_work(command, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("not a folder\n")
    assert main([*command.split(), "--dry-run", "--out", str(taken)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"rnnkit: error: --out {taken} is a file; give a folder\n"


def test_cuda_asked_for_on_a_machine_without_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["ising", "sweep", "--dry-run", "--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "rnnkit: error: --device cuda: CUDA is not available on this machine; use --device cpu\n"


# Options are checked under their flag's name, before any work (nothing trained, no --out made), and a
# given option is honoured under --dry-run, never silently replaced.
@pytest.mark.parametrize(
    "args, message",
    [
        (["hopfield", "recall", "--noise", "1.5"], "--noise must be between 0 and 1, got 1.5"),
        (["hopfield", "recall", "--max-steps", "0"], "--max-steps must be an integer >= 1, got 0"),
        (["hopfield", "recall", "--random", "0"], "--random (number of patterns P) must be an integer >= 1"),
        (["hopfield", "capacity", "--sizes", "0", "--dry-run"], "--sizes (N) must be an integer >= 1"),
        (["hopfield", "capacity", "--loads", "1.5", "--dry-run"], "--loads (P/N) must be in (0, 1]"),
        (["hopfield", "capacity", "--noise", "2"], "--noise must be between 0 and 1, got 2.0"),
        (["hopfield", "capacity", "--max-sweeps", "0"], "--max-sweeps must be an integer >= 1"),
        (["rbm", "train", "--gibbs-steps", "0"], "--gibbs-steps must be an integer >= 1, got 0"),
        (["rbm", "train", "--gibbs-steps", "0", "--dry-run"], "--gibbs-steps must be an integer >= 1"),
        (["rbm", "train", "--hidden", "0", "--dry-run"], "--hidden must be an integer >= 1, got 0"),
        (["rbm", "train", "--epochs", "0"], "--epochs must be an integer >= 1, got 0"),
        (["rbm", "train", "--lr", "0"], "--lr must be a positive number, got 0.0"),
        (["rbm", "train", "--momentum", "1"], "--momentum must be in [0, 1), got 1.0"),
        # lr x weight decay >= 2 (1 + momentum): W grew each step whatever the data; a dry run ended, exit 0, with a
        # log-likelihood of -5e16 per image, a long one diverged advising a 10x lower --lr, still past the limit
        (
            ["rbm", "train", "--weight-decay", "1000", "--lr", "0.006", "--dry-run"],
            "--weight-decay 1000 with --lr 0.006 grows the weights without bound: the decay step overshoots where "
            "lr x weight decay >= 2 (1 + momentum) (6 here, 2 the limit); give a --weight-decay below 333.3",
        ),
        (["rbm", "dbn", "--weight-decay", "50", "--momentum", "0.5"], "(3 here, 3 the limit)"),
        (
            ["rbm", "dbn", "--layers", "16", "0", "--dry-run"],
            "--layers (hidden sizes) must be an integer >= 1",
        ),
        (["rbm", "dbn", "--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
        (["rbm", "cd-check", "--hidden-units", "0"], "--hidden-units must be an integer >= 1, got 0"),
        (["ising", "sweep", "--size", "7", "--dry-run"], "--size (lattice side L) must be even"),
        (["ising", "sweep", "--burn-in", "-1"], "--burn-in must be an integer >= 0, got -1"),
        (["ising", "sweep", "--count", "0"], "--count (number of temperatures) must be an integer >= 1"),
        # the range options were ignored without a word beside --temperatures: 4 temperatures swept, not 10
        (
            ["ising", "sweep", "--temperatures", "2", "3", "--count", "10"],
            "--count sets the range of temperatures "
            "that --temperatures replaces; give --temperatures or --t-min, --t-max and --count",
        ),
        (
            ["ising", "sweep", "--t-min", "2", "--temperatures", "2", "3", "--t-max", "3"],
            "--t-min and --t-max set",
        ),
        # linspace(t_min, t_max, 1) is [t_min]: the sweep ran at T = 1 alone, --t-max 3 unused in silence
        (["ising", "sweep", "--count", "1", "--t-max", "3"], "--count 1 sweeps one temperature, --t-min (1)"),
    ],
)
def test_options_are_checked_by_flag_before_any_work(args, message, tmp_path, capsys, monkeypatch):
    from rnnkit.energy import rbm_train

    def no_training(*a, **k):
        raise AssertionError("trained before checking the options")

    monkeypatch.setattr(rbm_train, "fit", no_training)
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("rnnkit: error: ")
    assert message in captured.err and captured.err.count("\n") == 1, captured.err
    assert not out.exists()


def test_a_given_option_is_honoured_under_dry_run(tmp_path, capsys):
    assert main(["hopfield", "capacity", "--sizes", "40", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "N=   40 P/N=0.050" in out and "N=   32" not in out
    assert main(["ising", "sweep", "--dry-run", "--temperatures", "1.5", "2.5", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("T=1.500 ")


def test_ising_sweep_shows_a_bar_of_sweeps_on_stderr(tmp_path, capsys):
    # --size 64 --sweeps 3000 ran 13 s with nothing on screen until the table; a bar of sweeps now, on stderr
    args = ["--temperatures", "1.5", "--sweeps", "7", "--burn-in", "5", "--size", "4", "--out", str(tmp_path)]
    assert main(["ising", "sweep", *args]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("T=1.500 ") and "sweeps/s" not in captured.out
    assert captured.err.splitlines()[-1].startswith("ising: 100%") and "12/12" in captured.err
    assert "sweeps/s" in captured.err


def test_temperatures_below_a_thousandth_or_huge_are_printed_as_given(tmp_path, capsys):
    # every row read "T=0.000" (three decimals), the sweep's rows told apart by nothing; 1e30 read
    # T=1000000015047466219876688855040.000
    temps = ["1e-4", "1e-5", "1e30", "2.5"]
    args = [
        "ising",
        "sweep",
        "--dry-run",
        "--update",
        "heat-bath",
        "--temperatures",
        *temps,
        "--out",
        str(tmp_path),
    ]
    assert main(args) == 0
    rows = capsys.readouterr().out.splitlines()
    assert [r.split()[0] for r in rows[:4]] == ["T=0.0001", "T=1e-05", "T=1e+30", "T=2.500"], rows[:4]


@pytest.mark.parametrize("interrupt", [False, True])
def test_a_failed_command_leaves_no_empty_out_folder(tmp_path, capsys, monkeypatch, interrupt):
    # an RBM that diverged ("stopped before writing any figure") or a Ctrl-C left the --out folder made for it, empty
    from rnnkit.energy import ising

    if interrupt:
        monkeypatch.setattr(ising.Ising, "run", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    args = (
        ["ising", "sweep", "--dry-run"]
        if interrupt
        else ["rbm", "train", "--visible", "gaussian", "--lr", "1"]
    )

    def run(out):  # as the command line runs it: main(argv) from a program raises the Ctrl-C again
        monkeypatch.setattr(sys, "argv", ["rnnkit", *args, "--dry-run", "--out", str(out)])
        return main()

    out = tmp_path / "new" / "out"
    assert run(out) == (130 if interrupt else 2)
    assert not out.exists()
    assert run(tmp_path) != 0  # a folder that was there stays
    assert tmp_path.is_dir()


def test_diverging_training_stops_with_one_line_naming_lr(tmp_path, capsys):
    args = ["rbm", "train", "--visible", "gaussian", "--lr", "1", "--dry-run", "--out", str(tmp_path)]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert "nan" not in captured.out and "wrote" not in captured.out
    err = captured.err
    assert err.startswith("rnnkit: error: RBM training diverged in epoch 1 with --lr ")
    assert (
        "with --lr 1: the weights became NaN or" in err and "try a lower --lr" in err and err.count("\n") == 1
    )
    assert not list(tmp_path.glob("*.png"))


def test_bernoulli_weights_too_large_for_ais_stop_with_one_line_naming_lr(tmp_path, capsys):
    """Bernoulli units saturate rather than overflow (their CD gradient is bounded): --lr 1000 trains a poor
    model with finite weights, in the compiled loop as in the torch loop (the compiled sigmoid's NaN for
    pre-activations below -88 used to report it as diverged); weights near float32's limit stop at AIS."""
    assert main(["rbm", "train", "--lr", "1e37", "--dry-run", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("rnnkit: error: the AIS estimate of log Z is ") and err[0].startswith("AIS: ")
    assert all(line.startswith("AIS: ") for line in err[:-1])  # (its bar of temperatures above the error)
    assert "the weights grew too large" in err[-1] and "try a lower --lr than 1e+37" in err[-1]


def test_gaussian_visibles_train_with_their_default_lr(tmp_path, capsys):
    import matplotlib.image

    argv = ["rbm", "train", "--visible", "gaussian", "--dry-run", "--epochs", "2", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "inf" not in out
    assert "AIS log Z = " in out
    pixels = matplotlib.image.imread(tmp_path / "filters.png")[..., :3]
    assert pixels.std() > 0.1  # a blank figure (title only) has std < 0.04


def test_lr_help_gives_the_gaussian_default(capsys):
    with pytest.raises(SystemExit):
        main(["rbm", "train", "--help"])
    assert "0.005 with --visible gaussian" in " ".join(capsys.readouterr().out.split())


def test_capacity_help_gives_capacity_configs_defaults(capsys):
    """hopfield capacity's help says CapacityConfig's defaults from a copy (CAPACITY_DEFAULTS: its module imports
    torch, which the help no longer does), and the command runs on CapacityConfig's own: the two must agree."""
    import dataclasses

    from rnnkit.cli.energy import CAPACITY_DEFAULTS
    from rnnkit.energy.capacity import CapacityConfig

    d = CapacityConfig()
    assert CAPACITY_DEFAULTS == {k: getattr(d, k) for k in CAPACITY_DEFAULTS}
    assert {f.name for f in dataclasses.fields(d)} - set(CAPACITY_DEFAULTS) == {"loads", "seed"}
    with pytest.raises(SystemExit):
        main(["hopfield", "capacity", "--help"])
    help = " ".join(capsys.readouterr().out.split())
    assert f"(default: {' '.join(map(str, d.sizes))};" in help and f"(default: {d.random_starts};" in help
    assert f"(default: {d.loads[0]} to {d.loads[-1]};" in help


def _write_images(tmp_path, *shapes):
    import matplotlib.image
    import numpy as np

    paths = []
    for i, shape in enumerate(shapes):
        paths.append(str(tmp_path / f"image{i}.png"))
        matplotlib.image.imsave(paths[-1], np.random.default_rng(i).random(shape))
    return paths


def test_images_too_big_for_the_weights_are_one_line_before_allocating(tmp_path, capsys, monkeypatch):
    from rnnkit.energy import hopfield

    monkeypatch.setattr(hopfield.Hopfield, "__init__", lambda *a, **k: pytest.fail("allocated the weights"))
    paths = _write_images(tmp_path, (40, 300), (40, 300))  # 12,000 pixels
    assert main(["hopfield", "recall", "--images", *paths, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "rnnkit: error: --images of 300x40 = 12,000 pixels: a 12,000² weight matrix (576 MB) is too big; "
        "hopfield recall takes at most 10,000 units; resize the images (to 100x100, say)\n"
    )
    assert main(["hopfield", "recall", "--units", "400000", "--out", str(tmp_path / "out")]) == 2
    assert "a 400,000² weight matrix (640 GB) is too big" in capsys.readouterr().err


def test_an_image_past_pillows_decompression_bomb_limit_is_one_line(tmp_path, capsys, monkeypatch):
    """An image of more than twice Pillow's MAX_IMAGE_PIXELS (179 million: a 20,000 x 10,000 scan) ended in the
    traceback of PIL.Image.DecompressionBombError, which is no OSError; the limit is lowered here to 2 x 20."""
    from PIL import Image

    paths = _write_images(tmp_path, (6, 8))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20)
    out = tmp_path / "out"
    assert main(["hopfield", "recall", "--images", *paths, "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"rnnkit: error: cannot read image {paths[0]}: Image size (48 pixels) exceeds limit of 40 pixels, could be "
        "decompression bomb DOS attack; resize it\n"
    )
    assert not out.exists()


def test_images_of_different_sizes_are_named(tmp_path, capsys):
    paths = _write_images(tmp_path, (4, 6), (6, 4))
    assert main(["hopfield", "recall", "--images", *paths, "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"rnnkit: error: images must all have the same size: {paths[0]} is 6x4 pixels but {paths[1]} is "
        "4x6; resize them to one size\n"
    )


def test_images_are_recalled(tmp_path, capsys):
    paths = _write_images(tmp_path, (6, 8), (6, 8))
    assert main(["hopfield", "recall", "--images", *paths, "--noise", "0", "--out", str(tmp_path)]) == 0
    assert "2 patterns of 48 units" in capsys.readouterr().out


@pytest.mark.parametrize("extra", [["--field", "0.5"], ["--coupling", "-1"]])
def test_ising_without_a_critical_temperature_draws_no_empty_legend(extra, tmp_path, capsys):
    # pytest turns warnings into errors: matplotlib's "No artists with labels" would fail this
    assert main(["ising", "sweep", "--dry-run", *extra, "--out", str(tmp_path)]) == 0
    assert (tmp_path / "ising.png").stat().st_size > 0


def test_recall_summary_counts_in_plural(tmp_path, capsys):
    assert main(["hopfield", "recall", "--dry-run", "--noise", "0", "--out", str(tmp_path)]) == 0
    assert "async updates: 5 fixed points\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["ising", "sweep", "--size", "100000", "--dry-run"],
            "give --size 5,590 or less, or fewer temperatures",
        ),
        (["ising", "sweep", "--count", "1000000000"], "need about 131 TB, more than the 4 GB allowed"),
        (
            ["hopfield", "capacity", "--sizes", "10000000", "--dry-run"],
            "hopfield capacity takes at most 10,000",
        ),
        (["hopfield", "capacity", "--sizes", "20000"], "give --sizes of 10,000 or less"),
        (["hopfield", "capacity", "--sizes", "10000", "--loads", "0.001"], "20 networks of 10,000 units"),
    ],
)
def test_sizes_too_big_to_hold_are_one_line_before_allocating(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch, "linspace", None)  # nothing, not even the temperatures, is made first
    monkeypatch.setattr(torch, "randint", None)
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["hopfield", "recall", "--bogus"],
        ["hopfield", "capacity", "--bogus"],
        ["rbm", "train", "--bogus"],
        ["rbm", "cd-check", "--bogus"],
        ["ising", "sweep", "--bogus"],
    ],
)
def test_each_action_parser_is_known_for_its_own_usage(args):
    from rnnkit.cli import build_parser

    parsed, extra = build_parser().parse_known_args(args)
    assert extra == ["--bogus"] and parsed._parser.prog == f"rnnkit {args[0]} {args[1]}"


@pytest.mark.parametrize(
    "args",
    [
        ["--random", "5", "--digits", "3"],  # 5 is the default number of random patterns
        ["--random", "5", "--patterns", "p.txt"],
        ["--random", "6", "--digits", "3"],
    ],
)
def test_recall_refuses_two_pattern_sources_whatever_the_values(args, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["hopfield", "recall", *args, "--dry-run", "--out", str(tmp_path / "out")])
    assert e.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_recall_refuses_units_with_another_pattern_source(tmp_path, capsys):
    assert main(["hopfield", "recall", "--units", "50", "--digits", "3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "--units is for random patterns, not --digits" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "ends, shown",
    [
        (["--t-min", "1e308", "--t-max", "1e308"], "1e+308, 1e+308"),  # linspace's overflow, a traceback
        (["--t-max", "1e39"], "1, 1e+39"),
        (["--t-min", "1e-308", "--t-max", "1e-308"], "1e-308, 1e-308"),  # said as 'got [0.0, 0.0, 0.0, 0.0]'
    ],
)
def test_a_temperature_range_past_float32_is_one_line_naming_the_flags(ends, shown, tmp_path, capsys):
    assert main(["ising", "sweep", "--dry-run", *ends, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "rnnkit: error: --t-min and --t-max: temperatures must be numbers that float32 holds (about 1e-38 to "
        f"3e38), got {shown}\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [  # each ended in torch's 'Overflow when unpacking long long' (a TypeError traceback), after --out was made
        ["hopfield", "recall", "--random"],
        ["hopfield", "capacity", "--random-starts"],
        ["rbm", "train", "--batch-size"],
        ["rbm", "train", "--k"],
        ["rbm", "train", "--hidden"],
        ["rbm", "dbn", "--layers"],
    ],
)
def test_whole_numbers_past_2_to_the_63_are_one_line_naming_the_flag(args, tmp_path, capsys):
    assert main([*args, str(10**30), "--dry-run", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"rnnkit: error: {args[-1]} {10**30} is too large (past a 64-bit integer, 2^63); give a smaller one\n"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["hopfield", "recall", "--patterns", "{ragged}"], "mixed lengths"),
        (["hopfield", "recall", "--patterns", "{bad}"], "must be binary"),
        (["rbm", "cd-check", "--visible-units", "40"], "give --visible-units 12 or less"),
        (["rbm", "cd-check", "--visible-units", "15"], "give --visible-units 12 or less"),
        (["rbm", "cd-check", "--hidden-units", "30"], "--hidden-units 30: the exact CD-k check"),
        (
            ["rbm", "cd-check", "--weight-scale", "-1"],
            "--weight-scale (std of the random weights) must be >= 0",
        ),
        (  # weights of ±inf in float32: nan for every k, exit 0
            ["rbm", "cd-check", "--weight-scale", "1e300"],
            "--weight-scale 1e+300 is beyond the range of float32",
        ),
    ],
)
def test_bad_options_make_no_out_folder_and_name_the_flag(args, message, tmp_path, capsys):
    (tmp_path / "bad").write_text("1 -1 0.5\n")
    (tmp_path / "ragged").write_text("1 -1 1\n1 -1\n")
    args = [a.format(bad=tmp_path / "bad", ragged=tmp_path / "ragged") for a in args]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rnnkit: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_recall_of_one_pattern_says_pattern(tmp_path, capsys):
    assert (
        main(["hopfield", "recall", "--random", "1", "--dry-run", "--noise", "0", "--out", str(tmp_path)])
        == 0
    )
    assert capsys.readouterr().out.startswith("1 pattern of 64 units,")
    # (one unit, a 1x1 image or --units 1, was '1 pattern of 1 units'; recall now refuses it: test_bad_input_...)


def test_gaussian_pixels_are_standardised_with_the_training_split_only(tmp_path, monkeypatch, capsys):
    """μ and σ of train + test together leaked the test digits into their own inputs; the samples figure shows
    pixels again (μ + σ z), not standardised units."""
    from rnnkit.energy import plots
    from rnnkit.energy.digits import load_digits
    from rnnkit.energy.rbm import RBM

    seen, grids = [], {}
    fit, grid = RBM.fit, plots.image_grid

    def recording_fit(self, data, *args):
        seen.append(data)
        return fit(self, data, *args)

    def recording_grid(images, path, *args, **kwargs):
        grids[path.name] = images
        return grid(images, path, *args, **kwargs)

    monkeypatch.setattr(RBM, "fit", recording_fit)
    monkeypatch.setattr(plots, "image_grid", recording_grid)
    argv = ["rbm", "train", "--visible", "gaussian", "--dry-run", "--out", str(tmp_path)]
    assert main(argv) == 0
    x_train = seen[0]
    assert x_train.mean(0).abs().max() < 1e-5  # centred on its own mean, not on train + test's
    spread = x_train.std(0)  # 1, or below for the (near-)constant pixels whose σ is clamped at 0.01
    assert (spread <= 1 + 1e-4).all() and abs(spread.median().item() - 1) < 1e-4
    x = load_digits()[0][torch.randperm(1797, generator=torch.Generator().manual_seed(0))][:240]
    assert abs(grids["samples.png"].mean().item() - x.mean().item()) < 0.1  # pixels, about 0.3 on average


def test_rbm_samples_are_drawn_on_the_pixels_scale(tmp_path, monkeypatch, capsys):
    """samples.png stretched each image over its own range: a blur of means 0.4 to 0.8 was drawn black on white,
    as crisp as a digit of the data. Every sample is drawn on the pixels' [0, 1]; the filters keep their own ±max."""
    from rnnkit.energy import plots

    figures = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path, dpi: figures.setdefault(path.name, fig))
    assert main(["rbm", "train", "--dry-run", "--out", str(tmp_path)]) == 0
    samples = [im for ax in figures["samples.png"].axes for im in ax.get_images()]
    assert len(samples) == 50 and {(im.norm.vmin, im.norm.vmax) for im in samples} == {(0, 1)}
    for im in (im for ax in figures["filters.png"].axes for im in ax.get_images()):
        limit = abs(im.get_array()).max()
        assert im.norm.vmin == pytest.approx(-limit) and im.norm.vmax == pytest.approx(limit)


@pytest.mark.parametrize("command", OUT_COMMANDS)
def test_an_out_folder_it_cannot_write_in_is_one_line_before_any_work(command, tmp_path, capsys, monkeypatch):
    """The figures failed only once the work was done, naming a temporary file (recall.png.x1y2z3.tmp)."""
    import os

    tmp_path.chmod(0o555)  # root may write there all the same: os.access reads the mode bits, as for a user
    monkeypatch.setattr(
        os, "access", lambda p, mode, **k: not mode & os.W_OK or bool(os.stat(p).st_mode & 0o222)
    )
    assert main([*command.split(), "--dry-run", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    said = f"cannot write --out {tmp_path}: the folder {tmp_path} is not writable; give another --out"
    assert captured.err == f"rnnkit: error: {said}\n"
    tmp_path.chmod(0o755)


def test_cd_check_draws_ks_given_out_of_order_as_a_curve(tmp_path, monkeypatch, capsys):
    """`rbm cd-check --ks 4 1 2` joined the points in the order given: the curve ran from k = 4 back to 1 and
    on to 2 (as ising sweep's did for --temperatures out of order) instead of along the k axis."""
    from rnnkit.energy import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or str(path))
    assert main(["rbm", "cd-check", "--ks", "4", "1", "2", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    errors = {int(k): float(e) for k, e in re.findall(r"k=\s*(\d+): .* = (\S+)", out)}
    line = figures[0].axes[0].lines[0]
    assert list(line.get_xdata()) == [1, 2, 4]
    assert list(line.get_ydata()) == pytest.approx([errors[1], errors[2], errors[4]], rel=1e-2)


def test_an_image_that_an_output_would_overwrite_is_refused_before_any_work(tmp_path, capsys):
    """`rnnkit hopfield recall --images out/recall.png --out out` drew its figure over the image it had read."""
    out = tmp_path / "out"
    out.mkdir()
    pathlib.Path(*_write_images(out, (6, 8))).rename(out / "recall.png")
    image = (out / "recall.png").read_bytes()
    assert main(["hopfield", "recall", "--images", str(out / "recall.png"), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"rnnkit: error: --out {out} would overwrite --images {out / 'recall.png'}: it writes {out / 'recall.png'}, "
        "the same file; give another --out\n"
    )
    assert (out / "recall.png").read_bytes() == image and sorted(p.name for p in out.iterdir()) == [
        "recall.png"
    ]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_patterns_file_in_utf16_or_32_names_its_encoding(tmp_path, encoding):
    # Notepad's "Unicode": the digits between NULs were "cannot read the line '1\x00 \x00-\x001...' as numbers"
    from rnnkit.energy.patterns_io import read_patterns

    path = tmp_path / "patterns.txt"
    path.write_text("1 -1 1 -1\n-1 1 1 1\n", encoding=encoding)
    with pytest.raises(RnnkitError, match=r"UTF-(16|32)(LE)? text.*not UTF-8; convert it to UTF-8: iconv"):
        read_patterns(path)


@pytest.mark.parametrize("noise", ["0", "0.004"])
def test_recall_refuses_erase_that_erases_no_unit(noise, tmp_path, capsys):
    """--erase --noise 0 (or a noise of under half a unit) erased nothing and recalled the stored patterns
    themselves, in silence; it is refused, as --units with another pattern source."""
    args = ["hopfield", "recall", "--erase", "--noise", noise, "--units", "100", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"--erase with --noise {noise} erases no unit of 100 units" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()
    args = [
        "hopfield",
        "recall",
        "--erase",
        "--noise",
        "0.01",
        "--units",
        "100",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*args, "--random", "2", "--max-steps", "5"]) == 0


def test_capacity_summary_tells_recall_below_half_throughout_from_above_half_throughout(tmp_path, capsys):
    # both printed "half recalled at P/N=none ... overlap 1/2 at none": recall of 3% at every load read as never falling
    common = ["hopfield", "capacity", "--sizes", "40", "--min-patterns", "8", "--random-starts", "1"]
    assert main([*common, "--loads", "0.5", "0.6", "--out", str(tmp_path / "high")]) == 0
    high = capsys.readouterr().out.splitlines()[-3]
    assert (
        "half recalled at P/N<0.500" in high and "half perfect at P/N<0.500" in high and "none" not in high
    ), high
    assert main([*common, "--loads", "0.025", "0.05", "--out", str(tmp_path / "low")]) == 0
    low = capsys.readouterr().out.splitlines()[-3]
    assert "half recalled at P/N>0.050" in low and "overlap 1/2 at P/N>0.050" in low and "none" not in low, (
        low
    )


def test_capacity_keeps_the_points_done_when_interrupted(tmp_path, monkeypatch, capsys):
    # capacity.json was written only at the end: a Ctrl-C after hours of points left nothing but the printed lines
    from rnnkit.energy import capacity

    point, calls = capacity.capacity_point, []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return point(*args, **kwargs)

    monkeypatch.setattr(capacity, "capacity_point", interrupted_second)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        main(["hopfield", "capacity", "--sizes", "40", "--dry-run", "--out", str(out)])
    rows = json.loads((out / "capacity.json").read_text())["rows"]
    assert [(r["N"], r["P"]) for r in rows] == [(40, 2)]
    assert "capacity.json holds the 1 point done" in capsys.readouterr().err


def test_a_filters_figure_says_it_draws_100_of_more_hidden_units(tmp_path, monkeypatch):
    # --hidden 500 drew 100 filters under 'RBM filters: rows of W (hidden x 64 pixels)', read as all of them
    from rnnkit.energy import plots

    titles, grid = {}, plots.image_grid

    def recording_grid(images, path, title="", *args, **kwargs):
        titles[path.name] = (len(images), title)
        return grid(images[:2], path, title, *args, **kwargs)  # (two are enough to draw)

    monkeypatch.setattr(plots, "image_grid", recording_grid)
    common = ["--dry-run", "--epochs", "1", "--out"]
    assert main(["rbm", "dbn", "--layers", "101", "4", *common, str(tmp_path / "b")]) == 0
    assert main(["rbm", "train", "--hidden", "100", *common, str(tmp_path / "c")]) == 0
    assert titles["filters.png"] == (100, "RBM filters: rows of W (hidden x 64 pixels)")
    assert titles["dbn_filters.png"] == (100, "first-layer filters, the first 100 of 101")
    assert main(["rbm", "train", "--hidden", "120", *common, str(tmp_path / "d")]) == 0
    assert titles["filters.png"] == (100, "RBM filters: rows of W (hidden x 64 pixels), the first 100 of 120")


def test_hopfield_recall_records_energies_only_of_the_cues_it_draws(tmp_path, monkeypatch):
    # every cue's energy after every unit update was kept, (cues, N x sweeps) in float64 and stacked again, for a
    # figure of 8: 7.8 GB for --units 4000 --random 800 --noise 0.3
    from rnnkit.energy import hopfield, plots

    recorded, drawn, run = [], [], hopfield.run_async

    def recording_run(W, theta, s, max_sweeps, generator, record, *progress):
        recorded.append((s.shape[1], record))
        return run(W, theta, s, max_sweeps, generator, record, *progress)

    monkeypatch.setattr(hopfield, "run_async", recording_run)
    figure = plots.energy_figure
    monkeypatch.setattr(plots, "energy_figure", lambda e, *a: drawn.append(e) or figure(e, *a))
    assert main(["hopfield", "recall", "--units", "40", "--random", "20", "--out", str(tmp_path)]) == 0
    assert max(cues for cues, record in recorded if record) == 8 and drawn[0].shape[0] == 8


def test_ising_sweep_keeps_the_sweeps_measured_when_interrupted(tmp_path, monkeypatch, capsys):
    # a Ctrl-C in the measured sweeps of a long run lost every temperature: now the averages of the sweeps done
    # are printed and written (ising.json, ising.png), and the command still ends as interrupted
    from rnnkit.energy import ising

    sweep, calls = ising.Ising.sweep, []

    def interrupted_tenth(self):
        calls.append(1)
        if len(calls) == 10:  # 4 burn-in sweeps, 5 measured, the 6th interrupted
            raise KeyboardInterrupt
        sweep(self)

    monkeypatch.setattr(ising.Ising, "sweep", interrupted_tenth)
    out = tmp_path / "out"
    args = "--temperatures 1.5 3 --sweeps 50 --burn-in 4 --size 4 --out".split()
    with pytest.raises(KeyboardInterrupt):
        main(["ising", "sweep", *args, str(out)])
    captured = capsys.readouterr()
    assert "interrupted after 5 of 50 measured sweeps" in captured.err
    assert captured.out.startswith("T=1.500 ") and "T=3.000 " in captured.out
    saved = json.loads((out / "ising.json").read_text())
    assert saved["measured"] == 5 and saved["sweeps"] == 50 and len(saved["rows"]) == 2
    assert (out / "ising.png").stat().st_size > 0
    # the same numbers as a run of 5 measured sweeps from the same seed
    monkeypatch.setattr(ising.Ising, "sweep", sweep)
    g = torch.Generator().manual_seed(0)
    expected = ising.Ising(4, [1.5, 3.0], generator=g).run(5, 4)
    assert [r["energy"] for r in saved["rows"]] == expected["energy"].tolist()


def test_ising_sweep_stopped_by_sigterm_ends_as_terminated(tmp_path, monkeypatch, capsys):
    # SIGTERM (a job scheduler, timeout) is raised as a Ctrl-C is (_Terminated): the run kept its averages, then ended
    # as a Ctrl-C, 'rnnkit: interrupted' and exit status 130, not 'terminated' and 143
    from rnnkit.cli import _Terminated
    from rnnkit.energy import ising

    sweep, calls = ising.Ising.sweep, []

    def terminated_sixth(self):
        calls.append(1)
        if len(calls) == 6:  # 2 burn-in sweeps, 3 measured
            raise _Terminated
        sweep(self)

    monkeypatch.setattr(ising.Ising, "sweep", terminated_sixth)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt) as stopped:
        main(["ising", "sweep", *"--temperatures 2 --sweeps 50 --burn-in 2 --size 4 --out".split(), str(out)])
    assert isinstance(stopped.value, _Terminated)  # (main() of the command line: 'rnnkit: terminated', 143)
    assert "after 3 of 50 measured sweeps" in capsys.readouterr().err
    assert json.loads((out / "ising.json").read_text())["measured"] == 3


@pytest.mark.parametrize("done", [0, 1])
def test_ising_run_interrupted_before_two_measured_sweeps_raises(done):
    from rnnkit.energy import ising

    model = ising.Ising(4, [2.0], generator=torch.Generator().manual_seed(0))
    sweep, calls = model.sweep, []

    def interrupted(n=3 + done):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        sweep()

    model.sweep = interrupted
    with pytest.raises(KeyboardInterrupt):
        model.run(10, 2, interruptible=True)
    assert model.measured == done
    with pytest.raises(KeyboardInterrupt):  # and without interruptible, always
        calls.clear()
        model.run(10, 0)


def test_rbm_train_shows_a_bar_of_the_ais_temperatures(tmp_path, capsys):
    # AIS ran with nothing on screen (half a minute at 784 x 500 units and 2,000 temperatures): a bar now, on stderr
    assert main(["rbm", "train", "--dry-run", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "AIS log Z = " in captured.out and "temperatures/s" not in captured.out
    assert "AIS: 100%" in captured.err and "50/50" in captured.err and "temperatures/s" in captured.err


def test_hopfield_recall_of_many_cues_prints_a_summary_of_the_overlaps(tmp_path, capsys):
    # --random 1000 printed the 1,000 overlaps on one line of 6,000 characters
    args = "hopfield recall --random 30 --units 200 --noise 0.1 --out".split()
    assert main([*args, str(tmp_path)]) == 0
    line = next(li for li in capsys.readouterr().out.splitlines() if li.startswith("final overlap"))
    assert re.match(r"final overlap with the stored pattern: mean \d\.\d{3}, lowest -?\d\.\d{3}, \d+ of 30 recalled exactly; "
                    r"the first 20: (-?\d\.\d{3} ){19}-?\d\.\d{3}$", line), line  # fmt: skip


def test_a_file_the_command_writes_that_is_a_folder_or_a_pipe_is_refused_before_its_work(tmp_path, capsys):
    """`ising sweep --out o` with o/ising.json a folder ran every sweep, then failed ('Is a directory: o/ising.json'),
    and a FIFO at o/capacity.png was replaced by the figure once `hopfield capacity` had run all its points (then
    refused there, by atomic_open). Each command's files in --out are checked as ngram train's are, before any work."""
    import os

    (tmp_path / "i" / "ising.json").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    os.mkfifo(tmp_path / "c" / "capacity.png")
    for args, out, written, kind in [
        (["ising", "sweep", "--dry-run"], "i", "ising.json", "a folder"),
        (["hopfield", "capacity", "--dry-run"], "c", "capacity.png", "a pipe (FIFO), not a file"),
    ]:
        out = tmp_path / out
        assert main([*args, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert (
            err
            == f"rnnkit: error: --out {out}: it writes {out / written}, which is {kind}; remove it or give another --out\n"
        )


def test_ising_sweep_on_an_ascii_stdout_writes_its_symbols_escaped_and_its_files(tmp_path, monkeypatch):
    """On an ASCII stdout (PYTHONIOENCODING=ascii, a C locale without UTF-8 mode) the first row's χ stopped the
    sweep with every temperature done, 'the output holds characters ('\\u03c7') ...', exit 2, and nothing written
    (the --out folder removed again); a --out named in another language stopped it at its first 'wrote' line. The
    rows say \\u03c7, the names are escaped, and both files are written."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors="strict", write_through=True)
    monkeypatch.setattr("sys.stdout", out)
    folder = tmp_path / "résumé"
    args = ["--temperatures", "1.5", "--sweeps", "7", "--burn-in", "5", "--size", "4", "--out", str(folder)]
    assert main(["ising", "sweep", *args]) == 0
    said = out.buffer.getvalue().decode("ascii")
    assert (
        said.startswith("T=1.500 ") and "\\u03c7=" in said and "wrote " in said and "r\\xe9sum\\xe9" in said
    )
    assert (folder / "ising.json").is_file() and (folder / "ising.png").is_file()


def test_recall_figure_frames_each_pattern(tmp_path, monkeypatch):
    """recall.png drew its patterns with the axes off: a -1 pixel is white on the white page, so that a white image
    (a constant pattern) was an empty space under 'stored' and 'recalled', and tall images ran into the row below.
    Each is now framed, without ticks."""
    from rnnkit.energy import plots

    figures, save = [], plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k))
    white = -torch.ones(1, 60)
    cue = white.clone()
    cue[0, :6] = 0  # erased
    plots.recall_figure(white, cue, white, tmp_path / "recall.png", (3, 20))
    axes = figures[0].axes
    assert [ax.get_title() for ax in axes] == ["stored", "cue", "recalled"]
    for ax in axes:
        assert ax.axison and all(spine.get_visible() for spine in ax.spines.values())
        assert list(ax.get_xticks()) == [] and list(ax.get_yticks()) == []
        assert ax.get_images()[0].get_array().shape == (3, 20)


def test_recall_figure_frames_cover_no_pixel(tmp_path, monkeypatch):
    """The frames recall.png gained were drawn over the patterns' edge pixels: an image of 1 x 64 (--images of one
    row, a given shape), 2 pixels high at 110 dpi, kept one row of them, the other all frame. The image is now drawn
    above its frame: every pixel row of it shows the pattern (a third dark, two thirds light), framed above and
    below by a dark row."""
    from matplotlib.image import imread

    from rnnkit.energy import plots

    figures, save = [], plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k))
    wide = -torch.ones(1, 64)
    wide[0, ::3] = 1
    plots.recall_figure(wide, wide, wide, tmp_path / "recall.png", (1, 64))
    gray = imread(tmp_path / "recall.png")[..., :3].mean(-1)
    for ax in figures[0].axes:
        box = ax.get_position()  # (figure fractions; the PNG's rows are counted from the top)
        left, right = round(box.x0 * gray.shape[1]) + 3, round(box.x1 * gray.shape[1]) - 3
        top, bottom = round((1 - box.y1) * gray.shape[0]), round((1 - box.y0) * gray.shape[0])
        light = [(gray[y, left:right] > 0.6).mean() for y in range(top - 3, bottom + 3)]
        pattern = [y for y, f in enumerate(light) if 0.6 < f < 0.75]
        assert len(pattern) == round(box.height * gray.shape[0]) == 2, light
        assert light[pattern[0] - 1] == light[pattern[-1] + 1] == 0.0, light  # the frame, outside them


@pytest.mark.parametrize(
    "units, shape", [(97, (10, 10)), (94, (10, 10)), (5, (2, 3)), (100, (10, 10)), (48, (6, 8))]
)
def test_recall_figure_draws_a_pattern_of_prime_length_in_rows(units, shape, tmp_path, monkeypatch):
    """`hopfield recall --units 97` drew each pattern as the most square factorisation of 97, one row of 97 units
    1.5 pixels high: a line. A factorisation over 4 times as wide as high is drawn as rows of ⌈√N⌉ units, the last
    row's missing cells NaN (the colour map's 'bad' colour, pink), said in the title."""
    from matplotlib.colors import to_rgba

    from rnnkit.energy import plots

    figures, save = [], plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k))
    xi = torch.where(torch.rand(2, units, generator=torch.Generator().manual_seed(0)) < 0.5, 1.0, -1.0)
    plots.recall_figure(xi, xi, xi, tmp_path / "recall.png")
    for ax, image in zip(figures[0].axes, [xi[0]] * 3 + [xi[1]] * 3):
        drawn = ax.get_images()[0].get_array()
        assert drawn.shape == shape and tuple(ax.get_images()[0].get_cmap().get_bad()) == to_rgba(
            plots.NO_UNIT
        )
        assert drawn.ravel()[:units].tolist() == image.tolist() and all(
            np.ma.getmaskarray(drawn).ravel()[units:]
        )
    missing = shape[0] * shape[1] - units
    said = {0: "", 1: "the last cell (pink) is no unit", 3: "the last 3 cells (pink) are no unit"}
    said[6] = "the last 6 cells (pink) are no unit"
    assert (
        figures[0].get_suptitle()
        == (f"{units} units in rows of {shape[1]}:\n" if missing else "") + said[missing]
    )


def test_recall_figures_say_they_draw_8_of_more_patterns(tmp_path, monkeypatch):
    """`hopfield recall --random 200` drew 8 rows in recall.png and 8 energies in energy.png under no word of the
    other 192 (the summary above said 200 patterns), read as all of them, as the filters figures were."""
    from rnnkit.energy import plots

    titles, recall, energy = {}, plots.recall_figure, plots.energy_figure

    def recording_recall(*args):  # (patterns, cues, states, path, shape[, title])
        titles["recall.png"] = (len(args[0]), args[5] if len(args) > 5 else "")
        return recall(*args)

    def recording_energy(energies, path, title):
        titles["energy.png"] = (len(energies), title)
        return energy(energies, path, title)

    monkeypatch.setattr(plots, "recall_figure", recording_recall)
    monkeypatch.setattr(plots, "energy_figure", recording_energy)
    assert main(["hopfield", "recall", "--units", "16", "--random", "9", "--out", str(tmp_path / "a")]) == 0
    assert titles == {"recall.png": (8, "the first 8 of 9 patterns"),
                      "energy.png": (8, "energy, async updates, the first 8 of 9 cues")}  # fmt: skip
    assert main(["hopfield", "recall", "--units", "16", "--random", "8", "--out", str(tmp_path / "b")]) == 0
    assert titles == {"recall.png": (8, ""), "energy.png": (8, "energy, async updates")}  # as before


@pytest.mark.parametrize("symmetric, colour, word", [(False, "#f2b8b8", "pink"), (True, "0.55", "grey")])
def test_image_grid_draws_the_cells_of_no_unit_in_a_colour_of_their_own(
    symmetric, colour, word, tmp_path, monkeypatch
):
    """image_grid of 97 pixels, no shape given, draws rows of 10, the last 3 cells past the 97 NaN: transparent,
    they were white, the lowest value of gray_r ('white (lowest)') and 0 of RdBu_r, under a key that said nothing
    of them. They are drawn in a colour of their own, which the key names."""
    from matplotlib.colors import to_rgba

    from rnnkit.energy import plots

    figures, save = [], plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k))
    plots.image_grid(torch.randn(2, 97, generator=torch.Generator().manual_seed(0)), tmp_path / "g.png", "97",
                     symmetric=symmetric)  # fmt: skip
    (image,) = figures[0].axes[0].get_images()
    assert image.get_array().shape == (10, 10) and image.get_array().mask.sum() == 3
    assert image.get_cmap().get_bad() == pytest.approx(to_rgba(colour))
    assert figures[0].get_suptitle().endswith(f"; the last 3 cells ({word}) are no unit")


def test_image_grids_say_what_their_colours_are(tmp_path, monkeypatch):
    """filters.png and dbn_filters.png drew the weights red and blue with no colour bar and no word of which sign is
    which, or that each filter is stretched over its own largest |w| (a filter of weights near 0 looked as strong
    as the largest); samples.png's grey had no scale either. The title's second line says it."""
    from rnnkit.energy import plots

    figures, save = [], plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k))
    W = torch.tensor([[0.01, -0.02, 0.0, 0.005], [3.0, -1.0, 2.0, 0.0]])
    plots.image_grid(W, tmp_path / "f.png", "RBM filters", (2, 2), symmetric=True)
    plots.image_grid(W.abs() / 3, tmp_path / "s.png", "samples", (2, 2), value_range=(0, 1))
    plots.image_grid(W, tmp_path / "g.png", shape=(2, 2))
    assert [f.get_suptitle() for f in figures] == [
        "RBM filters\nred > 0 > blue, each on its own scale",
        "samples\nwhite 0 to black 1",
        "white (lowest) to black (highest), each on its own scale",
    ]
    images = [ax.get_images()[0] for ax in figures[0].axes[:2]]
    assert [im.get_clim() for im in images] == [pytest.approx((-0.02, 0.02)), (-3.0, 3.0)]  # each its own
    assert images[1].get_array().tolist() == [[3.0, -1.0], [2.0, 0.0]]


def test_counted_axes_are_ticked_in_whole_numbers(tmp_path, monkeypatch):
    """energy.png of 18 synchronous updates ticked 'update' 0, 2.5, 5, 7.5, ...; cd_check.png of --ks 1 2 4 ticked
    'k (Gibbs steps)' 1.0, 1.5, 2.0, ...: counts that do not exist. Both are whole numbers now."""
    from rnnkit.energy import plots

    figures, save = [], plots.save_figure
    monkeypatch.setattr(plots, "save_figure", lambda fig, *a, **k: figures.append(fig) or save(fig, *a, **k))
    plots.energy_figure(-torch.arange(19.0)[None], tmp_path / "energy.png")
    plots.line_figure([1, 2, 4], {"CD-k": [0.3, 0.2, 0.08]}, tmp_path / "cd.png", "k", "error", logy=True)
    plots.line_figure(
        [0.5, 1.0, 1.5], {"y": [1, 2, 3]}, tmp_path / "x.png", "x", "y"
    )  # not counts: as before
    shown = [
        [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        for f in figures
        for ax in f.axes
    ]
    assert shown[:2] == [[0, 5, 10, 15], [1, 2, 3, 4]]
    assert any(t != round(t) for t in shown[2])


def test_hopfield_recall_shows_a_bar_of_units_on_stderr(tmp_path, capsys):
    # --units 10000 --random 500 ran 83 s with nothing on screen until its results; a bar of units updated now
    args = ["--units", "40", "--random", "3", "--noise", "0.3", "--seed", "1", "--out", str(tmp_path)]
    assert main(["hopfield", "recall", *args]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("3 patterns of 40 units") and "units/s" not in captured.out
    last = captured.err.splitlines()[-1]
    assert last.startswith("recall: ") and "units/s" in last and last.endswith(" moved 0 of 3 states]")
    sweeps = int(last.split("sweep ")[1].split(" ")[0])  # the last one moved none: every state settled
    assert float(last.split()[1]) == 40 * sweeps  # every unit of every sweep run


def test_rbm_train_scores_the_test_digits_binarised_above_one_half_from_an_ais_base_of_the_training_digits(
    tmp_path, monkeypatch
):
    """The Bernoulli model's scores read the test digits as x > 0.5 (a pixel of 8/16 is off), and AIS starts from the
    training digits' marginals (ais.base_visible_bias(rbm, x_train)); under --dry-run, the split of
    test_rbm_digits_are_split_in_the_order_of_seed."""
    from rnnkit.cli import build_parser
    from rnnkit.cli.energy import _digits_split
    from rnnkit.energy import ais
    from rnnkit.energy.rbm import RBM

    scored, based, log_partition, pseudo_likelihood = [], [], ais.log_partition, RBM.pseudo_likelihood
    monkeypatch.setattr(
        RBM, "pseudo_likelihood", lambda self, x, **kw: scored.append(x) or pseudo_likelihood(self, x, **kw)
    )
    monkeypatch.setattr(
        ais, "log_partition", lambda rbm, *a, **kw: based.append(a[2]) or log_partition(rbm, *a, **kw)
    )
    assert main(["rbm", "train", "--dry-run", "--seed", "4", "--out", str(tmp_path)]) == 0
    x_train, _, x_test, _ = _digits_split(
        build_parser().parse_args(["rbm", "train", "--seed", "4", "--dry-run"])
    )
    assert (x_test == 0.5).any()  # (a pixel that >= 0.5 would turn on)
    assert torch.equal(scored[0], (x_test > 0.5).float()) and torch.equal(based[0], x_train)
