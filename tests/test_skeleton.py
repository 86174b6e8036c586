import subprocess
import sys

import pytest

import rnnkit
from rnnkit.cli import main


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "rnnkit", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "rnnkit" in out.stdout


def test_cli_version_and_unknown_options_in_the_commands_words(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"rnnkit {rnnkit.__version__}"
    with pytest.raises(SystemExit) as e:
        main(["train", "--bogus", "--out", "x"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "rnnkit train: error: unrecognized arguments: --bogus" in err
    for action in (["rbm", "train"], ["markov", "sample"], ["ising", "sweep"]):  # two-level: the action's own
        with pytest.raises(SystemExit):
            main([*action, "--bogus"])
        err = capsys.readouterr().err
        assert f"usage: rnnkit {' '.join(action)}" in err and "error: unrecognized arguments: --bogus" in err
