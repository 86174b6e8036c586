import pytest
import torch

from rnnkit.cli import main

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


def test_patterns_from_a_text_file(tmp_path, capsys):
    path = tmp_path / "patterns.txt"
    path.write_text("+-+-+-+-\n1 1 1 1 -1 -1 -1 -1\n")
    assert main(["hopfield", "recall", "--patterns", str(path), "--noise", "0", "--out", str(tmp_path)]) == 0
    assert "2 patterns of 8 units" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["hopfield", "recall", "--units", "0"], "number of units N must be a positive integer"),
        (["hopfield", "recall", "--patterns", "{bad}"], "must be binary"),
        (["hopfield", "recall", "--patterns", "{ragged}"], "mixed lengths"),
        (["hopfield", "recall", "--patterns", "{missing}"], "cannot read patterns file"),
        (["hopfield", "recall", "--patterns", "{latin1}"], "is not UTF-8 text"),
        (["hopfield", "recall", "--digits", "0"], "--digits takes 1 to 10 classes, got 0"),
        (["hopfield", "recall", "--device", "bogus"], "unknown --device 'bogus'; use cpu or cuda"),
        (["hopfield", "recall", "--device", "meta"], "--device meta is not supported"),
        (["rbm", "cd-check", "--ks", "1", "-1"], "k (Gibbs steps) must be an integer >= 1, got -1"),
        (["rbm", "cd-check", "--ks", "0"], "k (Gibbs steps) must be an integer >= 1, got 0"),
        (["rbm", "dbn", "--C", "0"], "--C (inverse regularisation of the classifier) must be a positive"),
        (["ising", "sweep", "--coupling", "nan"], "--coupling must be a finite number, got nan"),
        (["ising", "sweep", "--field", "inf"], "--field must be a finite number, got inf"),
        (["ising", "sweep", "--temperatures", "1", "nan"], "--temperatures must be a finite number"),
        (["hopfield", "capacity", "--sizes", "0"], "N must be a positive integer"),
        (["rbm", "train", "--k", "0"], "k (Gibbs steps per update) must be an integer >= 1"),
        (["ising", "sweep", "--temperatures", "0", "1"], "temperatures must be positive"),
        (["ising", "sweep", "--t-min", "-1"], "temperatures must be positive"),
        (["ising", "sweep", "--size", "0"], "lattice size L must be a positive integer"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(args, message, tmp_path, capsys):
    files = {"bad": "1 -1 0.5\n", "ragged": "1 -1 1\n1 -1\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "latin1").write_bytes(b"\xff\xfe\x00bad\n")
    paths = {name: str(tmp_path / name) for name in [*files, "latin1", "missing"]}
    args = [a.format(**paths) for a in args]
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
