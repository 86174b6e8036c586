import csv
import io
import json
import math
import os
import re
import shutil
import stat
import struct
import sys
import zipfile

import pytest
import torch
from conftest import TINY

from rnnkit.cli import main
from rnnkit.cli.charlm import load_model, score_text
from rnnkit.errors import RnnkitError


def test_train_dry_run_writes_a_run_folder(trained):
    for name in ["config.json", "vocab.json", "metrics.csv", "loss.png", "latest.pt", "best.pt"]:
        assert (trained / name).is_file()
    assert json.loads((trained / "config.json").read_text())["model"]["hidden_size"] == 16


@pytest.mark.parametrize("preset", ["min-char-rnn", "char-rnn"])
def test_presets_dry_run(tmp_path, corpus, cli, preset):
    code, out, err = cli("train", corpus, "--out", tmp_path / preset, "--preset", preset, "--dry-run")
    assert code == 0, err
    assert "vocabulary 30" in out


def test_sample_prints_as_it_draws_so_ctrl_c_keeps_a_huge_lengths_text(trained, monkeypatch, ctrl_c_after):
    # it printed all at the end: --length 10**20 showed nothing and kept every character until stopped
    out = ctrl_c_after(40)
    monkeypatch.setattr(sys, "stdout", out)
    with pytest.raises(KeyboardInterrupt):
        main(["sample", str(trained), "--length", str(10**20), "--prime", "the ", "--seed", "1"])
    monkeypatch.undo()
    assert out.text.startswith("the ") and len(out.text) >= 40 and out.text.endswith("\n")


def test_an_error_while_sampling_ends_the_line_of_text_so_far(trained, monkeypatch, capsys):
    """A model's error in the middle of sample's text (log-probabilities of NaN once its state overflowed) left the
    text without its newline: 'the abrnnkit: error: ...' on a terminal and in a 2>&1 log. The line is ended first."""
    from rnnkit.models.charlm import CharLM

    step, calls = CharLM._step, [0]

    def failing(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] > 5:
            raise RnnkitError("the model's log-probabilities are NaN after 9 characters")
        return step(self, *args, **kwargs)

    monkeypatch.setattr(CharLM, "_step", failing)
    assert main(["sample", str(trained), "--prime", "the ", "--length", "50", "--seed", "1"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith("the ") and len(out) == 10 and out.endswith("\n"), repr(out)
    assert err.startswith("rnnkit: error: the model's log-probabilities are NaN")


@pytest.mark.parametrize("beam", [1, 3])
def test_complete_prints_as_the_search_settles_so_ctrl_c_keeps_a_huge_lengths_text(
    trained, monkeypatch, beam, ctrl_c_after
):
    """complete printed its text at the end, after every step's beams were kept: --length 2^63-1 printed nothing and
    grew until memory was gone. Each character is printed once the search has settled it (every beam kept descends
    from one of that step's), as sample prints its draws: the same text as --json's."""
    from rnnkit.models.charlm import CharLM

    steps, at_write = [0], []
    step = CharLM._step

    def counted(self, *args, **kwargs):
        steps[0] += 1
        return step(self, *args, **kwargs)

    class Out(io.StringIO):
        def write(self, s):
            at_write.append((steps[0], s))
            return super().write(s)

    monkeypatch.setattr(CharLM, "_step", counted)
    monkeypatch.setattr(sys, "stdout", Out())
    assert main(["complete", str(trained), "the", "--length", "200", "--beam", str(beam)]) == 0
    text, start = (
        sys.stdout.getvalue(),
        steps[0] - 200,
    )  # (the steps before the search's: the prime's, if any)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert main(["complete", str(trained), "the", "--length", "200", "--beam", str(beam), "--json"]) == 0
    assert text == "the" + json.loads(sys.stdout.getvalue())["completion"] + "\n"
    first = next(n for n, s in at_write if s and s != "the")
    assert first - start < 100, f"the first character was printed after {first - start} of 200 steps"
    out = ctrl_c_after(40)
    monkeypatch.setattr(sys, "stdout", out)
    with pytest.raises(KeyboardInterrupt):
        main(["complete", str(trained), "the", "--length", str(2**63 - 1), "--beam", str(beam)])
    assert out.text.startswith("the") and len(out.text) >= 40 and out.text.endswith("\n")


def test_sample(trained, cli):
    code, out, _ = cli("sample", trained, "--length", "30", "--seed", "1", "--prime", "the ")
    assert code == 0 and out.startswith("the ") and len(out.rstrip("\n")) >= 30
    assert cli("sample", trained, "--length", "30", "--seed", "1", "--prime", "the ")[1] == out
    assert cli("sample", trained, "--length", "20", "--greedy")[0] == 0
    # a temperature so small that log p / T overflows float32, and a float32 denormal, flushed to zero where the
    # CPU flushes denormals (as oneDNN may set it): the most probable character, as --greedy
    greedy = cli("sample", trained, "--length", "20", "--greedy", "--prime", "the ")[1]
    torch.set_flush_denormal(True)
    try:
        assert (
            cli("sample", trained, "--length", "20", "--temperature", "1e-40", "--prime", "the ")[1] == greedy
        )
    finally:
        torch.set_flush_denormal(False)


def test_sample_draws_what_the_python_api_draws_with_its_options(trained, tmp_path, cli):
    """`sample --prime P --seed S --temperature T --top-k K` writes P and what model.sample draws from a newline and
    P with a generator seeded S at temperature T among the top K: each option reaches the model (the seed, not a
    fixed one; top-k, not all; the prime read from the start of a line). The dry run's weights times 3: a state
    that shows in the draws (the prime read without its newline drew the same 80 characters from the dry run's)."""
    ckpt = torch.load(trained / "latest.pt", weights_only=True)
    ckpt["model"] = {k: 3 * w for k, w in ckpt["model"].items()}
    torch.save(ckpt, tmp_path / "model.pt")
    model, chars = load_model(tmp_path / "model.pt")
    args = ["--prime", "the ", "--length", "80", "--seed", "3", "--temperature", "0.7", "--top-k", "5"]
    code, out, _ = cli("sample", tmp_path / "model.pt", *args)
    ids = [chars.index(c) for c in "\nthe "]
    drawn = model.sample(ids, 80, 0.7, 5, generator=torch.Generator().manual_seed(3))
    assert code == 0 and out == "the " + "".join(chars[i] for i in drawn) + "\n"


def test_score_ranks_and_matches_the_model(trained, cli):
    code, out, _ = cli("score", trained, "the lazy dog", "dgo yzal eht", "--json")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2] and rows[0]["log_prob"] >= rows[1]["log_prob"]
    model, chars = load_model(trained)
    r = score_text(model, chars, "the lazy dog")
    assert r["chars"] == 12 and abs(r["bits_per_char"] * 0.6931471805599453 - r["nats_per_char"]) < 1e-9
    assert cli("score", trained, "the lazy dog")[1].startswith("1. log p = ")


def test_complete_greedy_and_beam(trained, cli):
    code, out, _ = cli("complete", trained, "the quick", "--length", "10")
    assert code == 0 and out.startswith("the quick") and len(out.rstrip("\n")) == 19
    code, out, _ = cli("complete", trained, "the quick", "--length", "10", "--beam", "4")
    assert code == 0 and out.startswith("the quick")


def test_complete_shows_a_bar_of_characters_once_it_takes_a_while(trained, cli, monkeypatch):
    # complete --length 20000 --beam 5 ran 6 s with nothing on screen; a bar now, after PROGRESS_DELAY seconds
    from rnnkit.models import charlm

    assert cli("complete", trained, "the", "--length", "30")[2] == ""  # a short one says nothing
    monkeypatch.setattr(charlm, "PROGRESS_DELAY", 0.0, raising=False)
    code, out, err = cli("complete", trained, "the", "--length", "30", "--beam", "2", "--json")
    assert code == 0 and len(json.loads(out)["completion"]) == 30
    assert err.splitlines()[-1].startswith("complete: 100%") and "30.0/30.0" in err and "chars/s" in err


def test_sample_shows_complete_s_bar_where_its_text_goes_elsewhere_than_a_terminal(trained, cli, monkeypatch):
    """`rnnkit sample RUN --length 100000000 > out.txt` ran for hours with nothing on screen, where complete shows a
    bar of the characters found and their rate on stderr (the text on a terminal is its own progress): sample has
    complete's bar, after the same PROGRESS_DELAY, and writes the same text with it."""
    from rnnkit.models import charlm

    code, text, err = cli("sample", trained, "--length", "30", "--seed", "4")
    assert code == 0 and err == ""  # a short one says nothing
    monkeypatch.setattr(charlm, "PROGRESS_DELAY", 0.0, raising=False)
    code, out, err = cli("sample", trained, "--length", "30", "--seed", "4")
    assert code == 0 and out == text and len(out) == 31
    assert err.splitlines()[-1].startswith("sample: 100%") and "30.0/30.0" in err and "chars/s" in err


def test_a_beam_too_wide_for_memory_names_beam(trained, cli, monkeypatch):
    """complete --beam 2147483648 ran out of memory once its beams had grown (1.2 GiB at 3 GB), said as "choose smaller
    sizes (the model's --hidden-size/--num-layers, --batch-size, --seq-len or the command's own)": a trained run's
    sizes, which complete can't change. It names --beam. (Raised by hand: a real one could page the machine.)"""
    from rnnkit.models.charlm import CharLM

    def too_big(*args, **kwargs):
        raise RuntimeError(
            "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1288490188 bytes."
        )

    monkeypatch.setattr(CharLM, "_step", too_big)
    code, out, err = cli("complete", trained, "the", "--beam", str(2**31))
    assert code == 2 and out in ("", "the\n") and err.count("\n") == 1, (out, err)
    assert (
        "out of memory: an allocation of 1.2 GiB failed" in err and "choose smaller sizes (--beam)" in err
    ), err


def test_eval(trained, corpus, cli):
    code, out, _ = cli("eval", trained, corpus, "--json")
    result = json.loads(out)
    assert (
        code == 0
        and result["nats_per_char"] > 0
        and abs(result["bits_per_char"] - result["nats_per_char"] / 0.6931471805599453) < 1e-9
    )


def test_eval_shows_a_bar_of_characters_on_stderr_and_keeps_json_clean(trained, corpus, cli):
    # eval of a big file ran for minutes with nothing on screen: a bar of characters predicted now, on stderr
    code, out, err = cli("eval", trained, corpus, "--json")
    result = json.loads(out)
    assert code == 0 and result["chars"] == 6148 and "6.15k/6.15k" in err and "chars/s" in err
    assert err.splitlines()[-1].startswith("eval: 100%")


def test_eval_reads_line_ends_as_training_does(tmp_path, cli):
    """\r and \r\n are characters of the corpus: eval of the training file itself predicts every one."""
    text = tmp_path / "cr.txt"
    text.write_bytes(("the quick brown fox\r" * 300).encode())
    run = tmp_path / "run"
    assert cli("train", text, "--out", run, *TINY, "--dry-run", "--val-frac", "0.1")[0] == 0
    code, out, err = cli("eval", run, text, "--json")
    assert code == 0, err
    assert json.loads(out)["chars"] <= len(text.read_bytes()) - 1


def test_resume_from_another_folder(tmp_path, corpus, cli, monkeypatch):
    """The saved config names the corpus by its absolute path: --resume works from anywhere."""
    monkeypatch.chdir(corpus.parent)
    run = tmp_path / "run"
    assert cli("train", corpus.name, "--out", run, *TINY, "--max-steps", "2")[0] == 0
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "3")
    assert code == 0, err


def test_resume_finds_a_corpus_that_moved(tmp_path, corpus, cli):
    """The run's corpus file moved: --resume said "not found; give a text file", and refused a CORPUS given with
    --resume, so no command could continue the run. A changed text is still refused by its fingerprint."""
    text, run = tmp_path / "a" / "corpus.txt", tmp_path / "run"
    text.parent.mkdir()
    text.write_text(corpus.read_text())
    assert cli("train", text, "--out", run, *TINY, "--max-steps", "2")[0] == 0
    moved = tmp_path / "b.txt"
    text.rename(moved)
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "3")
    assert code == 2 and f"the run's corpus {text} is gone; if the file moved, give its new place" in err
    code, _, err = cli("train", moved, "--out", run, "--resume", "--max-steps", "3")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["data"]["corpus"] == str(moved)
    moved.write_text(corpus.read_text()[::-1])  # the same characters, another text
    code, _, err = cli("train", moved, "--out", run, "--resume", "--max-steps", "4")
    assert code == 2 and "has changed (same characters, other text)" in err
    code, _, err = cli("train", moved, "--out", run, "--resume", "--preset", "char-rnn")
    assert code == 2 and "drop --preset" in err


def test_resume_names_a_data_dir_that_moved_as_the_runs(tmp_path, corpus, cli):
    """The run's --data-dir (saved in its config) moved: --resume without the flag said '--data-dir D does not exist;
    give the folder that holds tinyshakespeare.txt', of a flag the command line did not give. It names the run's
    folder and how to give its new place, as for a corpus file that moved."""
    old, new, run = tmp_path / "d1", tmp_path / "d2", tmp_path / "run"
    old.mkdir()
    (old / "tinyshakespeare.txt").write_text(corpus.read_text())
    assert cli("train", "shakespeare", "--data-dir", old, "--out", run, *TINY, "--max-steps", "2")[0] == 0
    old.rename(new)
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "3")
    assert code == 2 and f"the run's --data-dir {old} is gone; if it moved, give its new place" in err, err
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "3", "--data-dir", new)
    assert code == 0, err


def test_resume_and_force_from_the_command_line(tmp_path, corpus, cli):
    trained = tmp_path / "run"
    assert cli("train", corpus, "--out", trained, *TINY, "--max-steps", "3")[0] == 0
    assert cli("train", corpus, "--out", trained, *TINY, "--dry-run")[0] == 2  # refused: a run is there
    assert cli("train", "--out", trained, "--resume", "--max-steps", "6")[0] == 0
    # the backend runs the same model (to float rounding), as --threads does: it was refused
    code, _, err = cli("train", "--out", trained, "--resume", "--max-steps", "8", "--backend", "python")
    assert code == 0, err
    assert json.loads((trained / "config.json").read_text())["model"]["backend"] == "python"
    assert cli("train", corpus, "--out", trained, *TINY, "--dry-run", "--force")[0] == 0
    code, _, err = cli("train", "--out", trained, "--resume", "--hidden-size", "64")
    assert code == 2 and "cannot change when resuming; only --backend, --data-dir, --eval-every" in err


def test_resume_with_nothing_to_resume_says_so_whatever_flags_are_given(tmp_path, corpus, cli):
    """--resume on a folder without a run, with the run's options on the line (one command line for the first start
    and every restart), said '--cell cannot change when resuming', and dropping them then led to 'nothing to
    resume'."""
    run = tmp_path / "run"
    code, _, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", "2", "--resume")
    assert code == 2 and err.count("\n") == 1 and "nothing to resume in" in err, err
    assert not run.exists()


def test_resume_takes_the_runs_own_options_on_its_command_line(tmp_path, corpus, cli):
    """The command line that started a run, with --resume, was refused ('--cell cannot change when resuming') though
    it changed nothing: only an option given another value than the run's is a change."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--dropout", "0.3", "--max-steps", "2")[0] == 0
    code, _, err = cli(
        "train", corpus, "--out", run, *TINY, "--dropout", "0.3", "--max-steps", "3", "--resume"
    )
    assert code == 0, err
    assert (run / "metrics.csv").read_text().splitlines()[-1].startswith("3,")
    code, _, err = cli(
        "train", corpus, "--out", run, *TINY, "--dropout", "0.2", "--max-steps", "4", "--resume"
    )
    assert code == 2 and "--dropout cannot change when resuming" in err, err


def test_resume_takes_the_runs_own_preset(tmp_path, corpus, cli):
    """--resume with --preset was refused ('drop --preset') even for the preset that started the run, so the line
    that began it plus --resume could not restart it; the run's own preset is taken, another refused in one line."""
    run, line = tmp_path / "run", ["train", corpus, "--out", tmp_path / "run", "--preset", "char-rnn", *TINY]
    assert cli(*line, "--max-steps", "2")[0] == 0
    code, _, err = cli(*line, "--max-steps", "3", "--resume")
    assert code == 0, err
    assert (run / "metrics.csv").read_text().splitlines()[-1].startswith("3,")
    code, _, err = cli(*line[:4], "--preset", "min-char-rnn", *TINY, "--max-steps", "4", "--resume")
    assert code == 2 and err.count("\n") == 1, err
    assert (
        "--preset min-char-rnn sets --optimizer adagrad (this run: rmsprop), --lr 0.1 (this run: 0.002), "
        in err
    )
    # (min-char-rnn's sample_temperature, which no flag gives, leaves dropping --preset the one way)
    assert "; no flag sets train.sample_temperature: drop --preset (the run keeps its own settings)" in err


def test_another_preset_setting_an_option_no_flag_sets_says_drop_preset(tmp_path, corpus, cli):
    """A preset differing from the run in sample_temperature, which no flag sets, said 'give the run's values
    with it', advice no command line could follow; it says to drop --preset."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", "2")[0] == 0  # sample_temperature 0.8
    same = ["--optimizer", "adam", "--lr", "3e-3", "--clip-norm", "1", "--clip-value", "0", "--val-frac", "0.02"]  # fmt: skip
    code, _, err = cli(
        "train", "--out", run, "--preset", "default", *TINY, *same, "--max-steps", "3", "--resume"
    )
    assert code == 2 and err.count("\n") == 1, err
    assert "--preset default sets train.sample_temperature 0.7 (this run: 0.8); no flag sets " in err
    assert "train.sample_temperature: drop --preset (the run keeps its own settings)" in err
    assert "give the run's values" not in err


def test_a_dry_run_never_touches_a_run_it_would_resume(tmp_path, corpus, cli):
    """--resume --dry-run trained the run on the dry run's slice (validating on training text) and wrote its
    config (max_steps 4, sample_length 40) into config.json and the checkpoints, for every later resume."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", "3")[0] == 0
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    code, _, err = cli("train", "--out", run, "--resume", "--dry-run")
    assert code == 2 and "--dry-run with --resume would train the run on a slice" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files


def test_a_dry_run_is_not_resumed_as_a_run(tmp_path, corpus, cli):
    """train said of a dry run's folder 'use --resume to continue it', and --resume then went on with the dry
    run's config (max_steps 4, a validation and a sample of 40 characters every 2 steps) on the whole corpus, its
    windows and validation split cut from the dry run's slice; it is refused, naming --force."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--dry-run")[0] == 0
    files = {p.name: p.read_bytes() for p in run.iterdir()}
    code, _, err = cli("train", corpus, "--out", run, "--resume", "--max-steps", "8")
    assert code == 2 and "holds a dry run" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files
    # nor offered to be: "already holds a run; use --resume to continue it" led to the refusal above
    code, _, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", "2")
    assert code == 2 and "already holds a dry run" in err and "--force" in err and "--resume" not in err
    (run / "latest.pt").rename(
        run / "kept.pt"
    )  # best.pt alone: not "copy its best.pt to latest.pt and --resume"
    code, _, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", "2")
    assert code == 2 and "already holds a dry run" in err and "--resume" not in err
    (run / "kept.pt").rename(run / "latest.pt")
    assert {p.name: p.read_bytes() for p in run.iterdir()} == files
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", "2", "--force")[0] == 0
    code, _, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", "2")  # a run again
    assert code == 2 and "already holds a run; use --resume to continue it" in err


def test_run_folder_without_validation_and_unmakeable(tmp_path, corpus, cli):
    """--val-frac 0 still plots the training loss; checkpoints are readable as the other run files; an --out
    that cannot be made (under a file) is one line."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--dry-run", "--val-frac", "0")[0] == 0
    assert (run / "loss.png").is_file() and not (run / "best.pt").exists()
    mode = (run / "latest.pt").stat().st_mode & 0o777
    assert mode == (run / "config.json").stat().st_mode & 0o777, oct(mode)
    code, _, err = cli("train", corpus, "--out", run / "config.json" / "x", *TINY, "--dry-run")
    assert code == 2 and "cannot make the --out folder" in err and "is a file" in err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hidden-size", "0"], "--hidden-size must be an integer >= 1"),
        (["--seq-len", "-3"], "--seq-len must be an integer >= 1"),
        (["--batch-size", "0"], "--batch-size must be an integer >= 1"),
        (["--lr", "0"], "--lr must be > 0"),
        (["--cell", "nope"], "unknown --cell"),
        (["--preset", "nope"], "unknown --preset"),
        # "$PRESET" unset: '' was no preset, the CORPUS's settings (or without one the default preset) run in silence
        (["--preset", ""], "unknown --preset ''; choose one of min-char-rnn, char-rnn"),
        (["--dropout", "1.5"], "--dropout"),
        # it counted the training part alone: "5,842 characters are too few" of a corpus of 6,150
        (
            ["--batch-size", "400", "--seq-len", "400"],
            r"the corpus's 6,150 characters \(5,842 for training\) are too few .*need at least 160,001 for training",
        ),
        # the corpus was long enough; it said "6 characters are too few ... use a longer corpus" of 6,150 characters
        (
            ["--val-frac", "0.999"],
            r"--val-frac 0.999 leaves 6 of the corpus's 6,150 .*need at least 33\); lower --val-frac",
        ),
        # 6,149 of its 6,150 characters for training leave 1 to hold out: "lower --val-frac" led in circles to the
        # split's "holds out 0 ..., use a larger --val-frac"
        (
            ["--seq-len", "1537"],
            r"--val-frac 0.05 leaves 5,842 .*need at least 6,149\); use --val-frac 0 \(no validation\)",
        ),
        (["--data-dir", ""], "--data-dir is empty"),  # "$DATA" unset: it was ignored, and the text downloaded
        (["--cell", "gru", "--forget-bias", "3"], "--forget-bias .* has none"),  # was ignored in silence
        # past float32's largest value: said as the sizes' "--hidden-size 16 and --embedding-size 8 make no model"
        (
            ["--forget-bias", "1e308"],
            r"--forget-bias must lie in \[-3.40282e\+38, 3.40282e\+38\], .* got 1e\+308",
        ),
        # only the shakespeare corpus is looked for there: with a text file it was ignored in silence
        (["--data-dir", "."], "--data-dir is where the shakespeare corpus is found; .*drop --data-dir"),
        (["--lr-decay-after", "-2"], "--lr-decay-after must be >= 0"),  # was taken as 1
        # with the CORPUS default's --lr-decay 1 no rate ever decayed, in silence
        (["--lr-decay-after", "3"], "--lr-decay-after .* --lr-decay is 1 .*drop --lr-decay-after"),
        (["--lr-decay", "1", "--lr-decay-after", "3"], "--lr-decay is 1"),
        # sgd with lr x weight decay >= 2: the loss blew up advising 'set --clip-norm', after which the decay is added
        (
            ["--optimizer", "sgd", "--lr", "1", "--weight-decay", "5"],
            r"--weight-decay 5 with --optimizer sgd at --lr 1 grows the weights without bound: each step multiplies "
            r"them by 1 - lr x weight decay = -4, -1 or below, whatever the data; give a --weight-decay below 2,",
        ),
    ],
)
def test_bad_train_options(tmp_path, corpus, cli, args, message):
    code, _, err = cli("train", corpus, "--out", tmp_path / "run", *TINY, *args, "--dry-run")
    assert code == 2 and err.count("\n") == 1
    assert __import__("re").search(message, err), err


def test_bad_corpora(tmp_path, cli):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    for path, message in [
        (tmp_path / "missing.txt", "not found"),
        (tmp_path / "empty.txt", "empty"),
        (tmp_path / "latin1.txt", "byte offset 3"),
        (tmp_path, "is a folder; give one text file"),
    ]:
        code, _, err = cli("train", path, "--out", tmp_path / "run", *TINY, "--dry-run")
        assert code == 2 and message in err, err


def test_an_empty_corpus_argument_is_refused_not_read_as_the_built_in_corpus(tmp_path, corpus, cli):
    # "$CORPUS" of a script with the variable unset: the standard library's source was trained on, in silence
    for args in [["--dry-run"], ["--resume"]]:
        code, out, err = cli("train", "", "--out", tmp_path / "run", *TINY, *args)
        assert code == 2 and "CORPUS is empty" in err and not out, (out, err)
    assert not (tmp_path / "run").exists()
    assert cli("train", corpus, "--out", tmp_path / "run", *TINY, "--max-steps", "1")[0] == 0
    code, _, err = cli("train", " ", "--out", tmp_path / "run", "--resume", "--max-steps", "2")
    assert code == 2 and "CORPUS is empty" in err, err


def test_bad_sampling_options(trained, cli):
    for args, message in [
        (["--temperature", "0"], "--greedy"),
        (["--temperature", "-1"], "--greedy"),
        (["--length", "0"], "--length must be an integer >= 1"),
        (["--prime", "the ÆØ"], "never saw: 'ÆØ'"),
        (["--top-k", "-1"], "--top-k"),
        (["--temperature", "nan"], "--greedy"),
        (["--seed", str(10**30)], "--seed must lie in"),
    ]:
        code, _, err = cli("sample", trained, *args)
        assert code == 2 and message in err, err
    assert "--beam must be an integer >= 1" in cli("complete", trained, "the", "--beam", "0")[2]
    # a --length past 2^63 was tqdm's traceback, 'OverflowError: Python int too large to convert to C ssize_t'
    code, _, err = cli("complete", trained, "the", "--length", str(10**30))
    assert code == 2 and f"--length {10**30} is too large (past a 64-bit integer, 2^63)" in err, err
    assert "never saw" in cli("score", trained, "Ωmega")[2]
    # of several texts, the error names which: it said 'TEXT has characters ...' of any of them
    err = cli("score", trained, "the", "Ωmega", "and")[2]
    assert "TEXT 2 of 3 ('Ωmega') has characters the model never saw: 'Ω'" in err, err


@pytest.mark.parametrize("command", ["sample", "score", "complete", "eval"])
def test_an_empty_run_is_refused_not_read_as_the_current_folder(trained, corpus, cli, command, monkeypatch):
    """An empty RUN ("$RUN" unset in a script) is '.' to pathlib: in a run folder, `rnnkit sample ''` sampled that run
    in silence, exit 0; it is one line, as an empty CORPUS is."""
    monkeypatch.chdir(trained)
    more = {
        "sample": ["--length", "3"],
        "score": ["the"],
        "complete": ["the", "--length", "2"],
        "eval": [corpus],
    }
    code, out, err = cli(command, "", *more[command])
    assert code == 2 and out == "", out
    assert (
        err
        == "rnnkit: error: RUN is empty; give a run folder or a checkpoint file (`.` for the run in this folder)\n"
    )


@pytest.mark.parametrize("name", ["", " "])
def test_eval_of_an_empty_file_name_is_refused_not_read_as_the_current_folder(
    trained, cli, name, monkeypatch
):
    """An empty FILE ("$FILE" unset in a script) is '.' to pathlib: `rnnkit eval RUN ''` said 'file . is a folder', a
    '.' never typed (and ' ', 'file   not found'); it is one line, as an empty RUN or CORPUS is."""
    monkeypatch.chdir(trained)
    code, out, err = cli("eval", trained, name)
    assert code == 2 and out == "", out
    assert err == "rnnkit: error: FILE is empty; give a UTF-8 text file (or gzip of it) to evaluate\n"


def test_bad_checkpoint_from_the_command_line(tmp_path, cli):
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = cli("sample", tmp_path / "junk.pt")
    assert code == 2 and "not an rnnkit checkpoint" in err
    code, _, err = cli("sample", tmp_path)
    assert code == 2 and "holds no checkpoint" in err
    (tmp_path / "w2v").mkdir()  # word2vec's --out: it said "train first with `rnnkit train --out w2v`", which
    (tmp_path / "w2v" / "config.json").write_text('{"dim": 100}')  # refuses another command's folder
    code, _, err = cli("sample", tmp_path / "w2v")
    assert code == 2 and "holds another command's output, not a char-LM run; give a run folder" in err, err


def test_eval_reproduces_validation_and_reads_one_stream(tmp_path, corpus, cli):
    """By default eval cuts the file as validation in training does (the run's batch size and window): the run's
    own validation text gives its val_loss. --streams 1 predicts every character after the first, in order."""
    run = tmp_path / "run"
    assert (
        cli(
            "train", corpus, "--out", run, *TINY, "--max-steps", "3", "--eval-every", "3", "--val-frac", "0.1"
        )[0]
        == 0
    )
    text = corpus.read_text()
    val = tmp_path / "val.txt"
    val.write_text(text[len(text) - round(len(text) * 0.1) :])
    with open(run / "metrics.csv", newline="") as f:
        val_loss = float(list(csv.DictReader(f))[-1]["val_loss"])
    code, out, err = cli("eval", run, val, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["streams"] == 4 and abs(result["nats_per_char"] - val_loss) < 1e-4
    result = json.loads(cli("eval", run, val, "--json", "--streams", "1")[1])
    model, chars = load_model(run)
    ids = [chars.index(c) for c in val.read_text()]
    nats = -sum(model.log_probs(ids[1:], ids[:1])) / (len(ids) - 1)
    assert result["chars"] == len(ids) - 1 and abs(result["nats_per_char"] - nats) < 1e-5
    assert "rnnkit: error: file nope.txt not found; give a text file" in cli(
        "eval", run, tmp_path / "nope.txt"
    )[2].replace(str(tmp_path) + "/", "")
    assert "--streams must be >= 0" in cli("eval", run, val, "--streams", "-1")[2]


def test_score_a_model_without_newline(tmp_path, cli):
    """Such a model has nothing to predict a text's first character from: it is context, and a text of one
    character has nothing to score (it used to score 0 nats and rank first)."""
    text = tmp_path / "abc.txt"
    text.write_text("abcabcaabbcc" * 200)
    run = tmp_path / "run"
    assert cli("train", text, "--out", run, *TINY, "--dry-run")[0] == 0
    code, out, err = cli("score", run, "ab", "ca", "--json")
    assert code == 0 and "first character is context" in err
    rows = [json.loads(line) for line in out.splitlines()]
    assert all(r["chars"] == 1 and r["first_is_context"] and isinstance(r["nats"], float) for r in rows)
    assert (
        "TEXT 2 of 2 ('a') has nothing to score; give at least 2 characters"
        in cli("score", run, "ab", "a")[2]
    )
    assert "TEXT 'a' has nothing to score" in cli("score", run, "a")[2]


def test_a_certain_text_scores_zero_not_minus_zero(tmp_path, cli):
    """A one-character vocabulary: every character certain, and score printed -0.0000 nats/char."""
    text = tmp_path / "a.txt"
    text.write_text("a" * 400)
    run = tmp_path / "run"
    assert cli("train", text, "--out", run, *TINY, "--dry-run")[0] == 0
    code, out, err = cli("score", run, "aaaa", "--json")
    row = json.loads(out)
    assert code == 0 and math.copysign(1, row["nats"]) == 1 and math.copysign(1, row["log_prob"]) == 1


def test_score_empty_text_and_complete_json(trained, cli):
    assert "TEXT '' has nothing to score; give some text" in cli("score", trained, "")[2]
    code, out, _ = cli("complete", trained, "the quick", "--length", "6", "--beam", "3", "--json")
    result = json.loads(out)
    model, chars = load_model(trained)
    # the prefix starts a line, as score reads a text
    ids = [chars.index(c) for c in "\nthe quick" + result["completion"]]
    assert code == 0 and len(result["completion"]) == 6
    assert abs(sum(model.log_probs(ids[10:], ids[:10])) - result["log_prob"]) < 1e-4


def test_complete_and_sample_condition_the_prefix_as_score_does(trained, cli):
    """complete's log p of its continuation is score(PREFIX + continuation) - score(PREFIX): both read the text
    from a newline (the start of a line). complete fed the prefix from a bare zero state: its log p and its
    choice of continuation disagreed with score's, and sample --prime with sample's own default (a newline)."""
    model, chars = load_model(trained)
    for prefix in ["the quick", "jumps", "x"]:
        result = json.loads(cli("complete", trained, prefix, "--length", "5", "--beam", "3", "--json")[1])
        whole = score_text(model, chars, prefix + result["completion"])["log_prob"]
        assert abs(whole - score_text(model, chars, prefix)["log_prob"] - result["log_prob"]) < 1e-4
        greedy = cli("complete", trained, prefix, "--length", "8")[1]
        assert cli("sample", trained, "--prime", prefix, "--length", "8", "--greedy")[1] == greedy


def test_seeds_are_32_bit(trained, cli):
    """torch's generator keeps the low 32 bits of a seed: larger ones would repeat smaller ones' samples."""
    for seed in (2**32, -1):
        assert r"--seed must lie in [0, 2^32)" in cli("sample", trained, "--seed", seed)[2]


def test_python_api_checks_its_input(trained):
    model, _ = load_model(trained)
    for call in (
        lambda: model.log_probs([1], []),
        lambda: model.sample([], 3),
        lambda: model.beam_complete([], 3),
    ):
        with pytest.raises(RnnkitError, match="at least one character of context"):
            call()
    with pytest.raises(RnnkitError, match="beam must be an integer >= 1"):
        model.beam_complete([1], 3, 0)
    with pytest.raises(RnnkitError, match="temperature must be > 0"):
        model.sample([1], 3, temperature=-1.0)


def test_a_run_loads_in_eval_mode(trained, tmp_path):
    """load_run gives the model in eval mode, as it says: its own calls (model.run) of a run trained with dropout
    drop nothing, as a torch.nn model after .eval()."""
    model, _ = load_model(trained)
    assert not any(m.training for m in model.modules())
    ckpt = torch.load(trained / "latest.pt", weights_only=True)
    config = json.loads(ckpt["config"])
    config["model"]["dropout"] = 0.5
    torch.save({**ckpt, "config": json.dumps(config)}, tmp_path / "dropout.pt")
    model, _ = load_model(tmp_path / "dropout.pt")
    xs = torch.arange(model.cfg.vocab_size)[None]
    assert torch.equal(model.run(xs)[0], model.run(xs)[0])


def test_loading_a_run_leaves_the_random_stream_alone(trained):
    """load_run builds the model (random initial weights) and then loads its weights: the initialisation drew
    from torch's generator, so torch.manual_seed(s) followed by load_run sampled another stream than s's."""
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    load_model(trained)
    torch.testing.assert_close(torch.rand(3), want, rtol=0, atol=0)


def test_an_edited_vocab_json_is_said_to_change_nothing(trained, tmp_path, cli):
    """The model reads the vocabulary its checkpoint holds; a run folder's vocab.json edited (or from another run)
    was ignored in silence. It is said in one warning naming the file, and the checkpoint's vocabulary is used."""
    run = shutil.copytree(trained, tmp_path / "run")
    chars = json.loads((run / "vocab.json").read_text())
    (run / "vocab.json").write_text(json.dumps(chars[::-1]))
    with pytest.warns(
        UserWarning, match=r"vocab.json differs from the vocabulary saved in best.pt.*changes nothing"
    ):
        assert load_model(run)[1] == chars
    (run / "vocab.json").write_text("[")
    with pytest.warns(UserWarning, match="vocab.json differs"):
        assert load_model(run / "latest.pt")[1] == chars
    shutil.copy(
        run / "best.pt", run / "model.pt"
    )  # not the run's own: a vocab.json beside it may be another's
    assert load_model(run / "model.pt")[1] == chars
    (run / "vocab.json").unlink()  # a checkpoint holds all it needs
    assert load_model(run)[1] == chars


def test_a_vocab_json_saved_again_with_a_byte_order_mark_is_not_said_to_differ(trained, tmp_path):
    """vocab.json opened and saved unchanged by an editor that writes a UTF-8 byte-order mark was read as damaged,
    and every sample, score or load_run warned that it 'differs from the vocabulary saved in best.pt'."""
    import warnings

    run = shutil.copytree(trained, tmp_path / "run")
    (run / "vocab.json").write_bytes(b"\xef\xbb\xbf" + (run / "vocab.json").read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_model(run)[1] == json.loads((run / "vocab.json").read_text(encoding="utf-8-sig"))


def _damage(path, how, tmp_path):
    ckpt = torch.load(path, weights_only=True)
    how(ckpt)
    bad = tmp_path / "bad.pt"
    torch.save(ckpt, bad)
    return bad


@pytest.mark.parametrize(
    "how,message",
    [
        (lambda c: c.pop("model"), "it has no model"),
        (lambda c: c.update(config="{not json"), "its config cannot be read"),
        # an option added by a newer rnnkit (its format version this one's): 'its config cannot be read (unknown
        # option model.layer_norm; known: backend, cell, dropout, embedding_size, forget_bias, hidden_)', no fix named
        (lambda c: c.update(config=c["config"].replace('"cell": "lstm"', '"layer_norm": true, "cell": "lstm"')),
         r"bad\.pt was saved by a newer rnnkit \(its config holds model\.layer_norm, which this one does not know\); "
         "upgrade rnnkit to read it$"),
        (lambda c: c.update(config=c["config"].replace('"cell": "lstm"', '"cell": "nosuch"')), "its cell 'nosuch'"),
        (lambda c: c.update(chars=c["chars"] + "Ω"), r"its vocabulary \(31 characters\) does not match its model \(30"),
        (lambda c: c.update(config=c["config"].replace('"hidden_size": 16', '"hidden_size": 32')),
         "its weights do not fit its config \\(size mismatch for rnn.cells.0"),
        (lambda c: c.update(version="1"), "no valid checkpoint format version"),
        # a config that makes no model: a ValueError's traceback from torch.nn.Dropout, or a line naming no file
        (lambda c: c.update(config=c["config"].replace('"dropout": 0.0', '"dropout": 2.0')),
         r"bad\.pt is not a usable rnnkit checkpoint: its config makes no model \(dropout must be a number in \[0, 1\]"),
        (lambda c: c.update(config=c["config"].replace('"hidden_size": 16', '"hidden_size": -16')),
         r"bad\.pt is not a usable rnnkit checkpoint: its config makes no model \(hidden_size must be"),
        # loaded with torch's 'UserWarning: Casting complex values to real discards the imaginary part'
        (lambda c: c["model"].update({"head.weight": c["model"]["head.weight"] * (1 + 1j)}),
         r"bad\.pt is not a usable rnnkit checkpoint: its weights head\.weight are complex numbers"),
        # the model built first (11 TB): 'out of memory; choose smaller sizes (the model's --hidden-size ...)'
        (lambda c: c.update(config=c["config"].replace('"hidden_size": 16', '"hidden_size": 1000000')),
         r"bad\.pt is not a usable rnnkit checkpoint: its weights do not fit its config \(size mismatch for rnn"),
        # no weights to load ({} or not a mapping): the config's model was built for real first, 'out of memory: an
        # allocation of 14,901.2 GiB failed ...; choose smaller sizes (the model's --hidden-size ...)'
        (lambda c: c.update(model={}, config=c["config"].replace('"hidden_size": 16', '"hidden_size": 1000000')),
         r"bad\.pt is not a usable rnnkit checkpoint: its weights do not fit its config \(Missing key\(s\) in state_dict: "
         '"embedding.weight"'),
        (lambda c: c.update(model=[], config=c["config"].replace('"hidden_size": 16', '"hidden_size": 1000000')),
         r"its weights do not fit its config \(Expected state_dict to be dict-like, got <class 'list'>\.\)"),
        (lambda c: c.update(model={}, config=c["config"].replace('"hidden_size": 16', '"hidden_size": 2147483648')),
         r"its weights do not fit its config \(its sizes make no model: Storage size calculation overflowed"),
        # a size no tensor holds: torch's 'Storage size calculation overflowed' traceback
        (lambda c: c.update(config=c["config"].replace('"hidden_size": 16', '"hidden_size": 1000000000')),
         r"its weights do not fit its config \(its sizes make no model: Storage size calculation overflowed"),
        # past 2^63 rows: 'Overflow when unpacking long long', a TypeError's traceback
        (lambda c: c.update(config=c["config"].replace('"hidden_size": 16', '"hidden_size": 10000000000000000000')),
         r"its weights do not fit its config \(its sizes make no model: hidden_size 10000000000000000000 is too large "
         r"\(past a 64-bit integer, 2\^63\); give a smaller one\)"),
        # eval read its windows with it: "batch size (streams) must be a whole number >= 1, got 0", naming no file
        (lambda c: c.update(config=c["config"].replace('"batch_size": 4', '"batch_size": 0')),
         r"bad\.pt is not a usable rnnkit checkpoint: its config's data\.batch_size 0 is no number of streams"),
        (lambda c: c.update(config=c["config"].replace('"seq_len": 8', '"seq_len": 2.5')),
         r"bad\.pt is not a usable rnnkit checkpoint: its config's data\.seq_len 2\.5 is no window length"),
        # 100,000 layers built on the meta device first: 20-30 s before the line
        (lambda c: c.update(config=c["config"].replace('"num_layers": 1', '"num_layers": 100000')),
         r"its weights do not fit its config \(num_layers 100000 needs a layer's weights for each, it holds \d+ "),
        # weights without values: load_state_dict's line, cut at 160 characters, named neither ('While copying the
        # parameter named "head.weight", whose dimensions in the model are torch.Size([30, 16]) and ... torch.Size([3')
        (lambda c: c["model"].update({"head.weight": c["model"]["head.weight"].to("meta")}),
         r"bad\.pt is not a usable rnnkit checkpoint: its weights head\.weight hold no values \(meta tensors: their "
         r"shapes only\); retrain or use another file$"),
        (lambda c: c["model"].update({"head.weight": c["model"]["head.weight"].to_sparse()}),
         r"its weights head\.weight are sparse \(torch\.sparse_coo\); a model's are dense; retrain or use another file$"),
        # weights keyed by no name: load_state_dict's "'int' object has no attribute 'startswith'"
        (lambda c: c["model"].update({0: c["model"]["head.weight"]}),
         r"bad\.pt is not a usable rnnkit checkpoint: its weights are keyed by 0 \(int\), not by names; a model's "
         r"weights are named by strings; retrain or use another file$"),
        (lambda c: c.update(model={(k, 1): w for k, w in c["model"].items()}),
         r"its weights are keyed by \('embedding\.weight', 1\) \(tuple\), \('rnn\.cells.*, not by names"),
        (lambda c: c["model"].update({None: c["model"].pop("head.bias")}), r"its weights are keyed by None \(NoneType\)"),
        # a value no tensor: 'While copying the parameter named "head.weight", expected torch.Tensor or ...'
        (lambda c: c["model"].update({"head.weight": None}),
         r"bad\.pt is not a usable rnnkit checkpoint: its weights head\.weight are not tensors \(NoneType\); a "
         r"model's weights are tensors; retrain or use another file$"),
        (lambda c: c["model"].update({"head.bias": {"data": c["model"]["head.bias"]}, "head.weight": "w"}),
         r"its weights head\.weight, head\.bias are not tensors \(str\)"),
        # copied into the model in silence: another model's scores and samples
        (lambda c: c["model"].update({"head.weight": c["model"]["head.weight"] > 0}),
         r"bad\.pt is not a usable rnnkit checkpoint: its weights head\.weight are torch\.bool .*floating-point"),
        (lambda c: c["model"].update({k: (w * 100).long() for k, w in c["model"].items()}),
         r"its weights embedding\.weight, rnn\.cells\.0\.W_xh, .* are torch\.int64 \(whole numbers or bools\)"),
    ],
)  # fmt: skip
def test_inconsistent_checkpoints_are_one_line_errors(trained, tmp_path, cli, how, message):
    code, _, err = cli("score", _damage(trained / "best.pt", how, tmp_path), "the")
    assert code == 2 and re.search(message, err) and err.count("\n") == 1, err


def test_a_flipped_byte_in_a_checkpoint_is_caught(trained, tmp_path, cli):
    """torch.load does not check the zip's CRC-32s: a changed weight would load as another model."""
    bad = tmp_path / "flipped.pt"
    shutil.copy(trained / "best.pt", bad)
    with zipfile.ZipFile(bad) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(bad, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))
    code, _, err = cli("score", bad, "the")
    assert code == 2 and "is corrupt (the checksum of its data/" in err


def test_resume_with_a_damaged_config_uses_the_checkpoints(tmp_path, corpus, cli):
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", "3")[0] == 0
    (run / "config.json").write_text("garbage")
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "6")
    assert code == 0 and "config.json is unreadable; resuming with the config saved in latest.pt" in err
    (run / "config.json").unlink()
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "7")
    assert code == 0 and "config.json is missing" in err
    (run / "config.json").unlink()
    (run / "config.json").mkdir()
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "8")
    assert code == 2 and "config.json is a folder; remove it" in err


def test_resume_refuses_a_config_json_with_a_misspelled_option_not_drops_the_edit(tmp_path, corpus, cli):
    """config.json edited to raise a limit, with the option misspelled ("max_stpes"), was 'unreadable' (valid JSON):
    the run resumed with latest.pt's config, the edit dropped and config.json written over. It is refused, naming
    the option; the run and its config.json are left as they were."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", "2")[0] == 0
    config = json.loads((run / "config.json").read_text())
    config["train"]["max_stpes"] = 4
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = cli("train", "--out", run, "--resume")
    assert code == 2 and "config.json has an unknown option train.max_stpes" in err, err
    assert "max_stpes" in (run / "config.json").read_text()


def test_resume_of_a_newer_rnnkits_run_says_so_and_not_to_start_anew(tmp_path, corpus, cli):
    """A run of a newer rnnkit (an option this one lacks, in config.json and latest.pt alike): --resume said its
    config.json 'is unreadable and latest.pt holds no config; start a new run with --force', which deletes the run.
    It says a newer rnnkit saved it; the run is left as it was."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", "2")[0] == 0
    config = json.loads((run / "config.json").read_text())
    config["model"]["layer_norm"] = True
    (run / "config.json").write_text(json.dumps(config))
    ckpt = torch.load(run / "latest.pt", weights_only=True)
    ckpt["config"] = json.dumps(config)
    torch.save(ckpt, run / "latest.pt")
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "3")
    assert code == 2 and err.strip() == (
        f"rnnkit: error: cannot resume {run}: its latest.pt was saved by a newer rnnkit (its config holds "
        "model.layer_norm, which this one does not know); upgrade rnnkit to resume it"
    )


def test_resume_with_a_config_json_lacking_an_option_uses_the_checkpoints(tmp_path, corpus, cli):
    """A config.json with an option left out (edited by hand) was read with that option's default in its place: a
    run trained at --lr 0.01 resumed at 0.002 in silence, and config.json then recorded 0.002 for good. Such a
    config.json is incomplete, said so, and the config latest.pt holds is used, as for a damaged one."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--lr", "0.01", "--max-steps", "2")[0] == 0
    config = json.loads((run / "config.json").read_text())
    del config["train"]["lr"]
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "3")
    assert (
        code == 0
        and "config.json is incomplete (no train.lr); resuming with the config saved in latest.pt" in err
    )
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 0.01
    with open(run / "metrics.csv") as f:
        assert [float(r["lr"]) for r in csv.DictReader(f)] == [0.01] * 3


def test_resume_refuses_a_config_json_edited_where_no_flag_may_change(tmp_path, corpus, cli):
    """--lr on a resume is refused ('--lr cannot change when resuming'), but config.json edited to another lr (or
    clip, or sample_temperature, which no flag sets) was taken in silence: the run went on at another setting than
    latest.pt recorded. Such an edit is refused the same way, naming both values; a limit edited there (max_steps,
    which a flag may change too) is taken."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--lr", "0.01", "--max-steps", "2")[0] == 0
    config = json.loads((run / "config.json").read_text())
    files = {p.name: p.read_bytes() for p in run.iterdir() if p.name != "config.json"}
    edited = {**config, "train": {**config["train"], "lr": 0.05, "sample_temperature": 0.5}}
    (run / "config.json").write_text(json.dumps(edited))
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "3")
    assert (
        code == 2
        and "config.json was edited since latest.pt was saved: train.lr 0.05 (latest.pt: 0.01), " in err
    )
    assert "train.sample_temperature 0.5 (latest.pt: " in err and "put the run's values back" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.name != "config.json"} == files
    (run / "config.json").write_text(json.dumps({**config, "train": {**config["train"], "max_steps": 3}}))
    code, _, err = cli("train", "--out", run, "--resume")
    assert code == 0, err
    with open(run / "metrics.csv") as f:
        assert [float(r["lr"]) for r in csv.DictReader(f)] == [0.01] * 3


def test_resume_with_a_config_json_of_a_corpus_or_data_dir_of_another_type_says_so(tmp_path, corpus, cli):
    """A config.json edited to a corpus or data_dir that is no string (5, a list) ended --resume in a traceback from
    train's reading of it ('expected str, bytes or os.PathLike object, not int', "'int' object has no attribute
    'strip'"), where another option of the wrong type is one line; these are said in the same line."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", "2")[0] == 0
    config = json.loads((run / "config.json").read_text())
    for key, value, kind in [("corpus", 5, "5"), ("corpus", ["a"], "['a']"), ("data_dir", 5, "5")]:
        (run / "config.json").write_text(json.dumps({**config, "data": {**config["data"], key: value}}))
        code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "3")
        assert (code, err) == (2, f"rnnkit: error: option data.{key} must be a string or none, got {kind}\n")


def test_resume_with_a_folder_in_place_of_latest_pt_says_to_remove_it(tmp_path, corpus, cli):
    """A folder in place of latest.pt was read by --resume as a run folder: 'RUN/latest.pt holds no checkpoint ...;
    train first with `rnnkit train --out RUN/latest.pt`', a new run inside it. It says to remove the folder."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", "2")[0] == 0
    (run / "latest.pt").unlink()
    (run / "latest.pt").mkdir()
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "3")
    assert code == 2 and err.count("\n") == 1, err
    assert f"{run / 'latest.pt'} is a folder, not a checkpoint; remove it" in err and "--out" not in err, err


def test_a_run_file_that_is_a_folder_is_refused_before_any_work(tmp_path, corpus, cli):
    """run/metrics.csv a folder: train wrote config.json and vocab.json, then failed at the first row ('Is a
    directory'); with --force, in the unlink of the old run's files. One line, nothing written."""
    run = tmp_path / "run"
    (run / "metrics.csv").mkdir(parents=True)
    for extra in ([], ["--force"]):
        code, _, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", "2", *extra)
        assert code == 2 and err.count("\n") == 1, err
        assert f"{run / 'metrics.csv'} is a folder, where the run writes its metrics.csv" in err, err
        assert sorted(p.name for p in run.iterdir()) == ["metrics.csv"]


def test_force_replaces_a_run_file_that_is_a_link_to_a_folder_or_a_pipe(tmp_path, corpus, cli):
    """--force removes the old run's files, a link as a link (its target untouched), and wrote the new ones: a
    loss.png linked to a FIFO (or to /dev/null) or a metrics.csv linked to a folder was refused since a3e7d46 ('is
    a pipe (FIFO), not a file, where the run writes its loss.png'). Without --force it is refused, as it was."""
    run, fifo, folder = tmp_path / "run", tmp_path / "fifo", tmp_path / "folder"
    for d in (run, folder):
        d.mkdir()
    os.mkfifo(fifo)
    (run / "loss.png").symlink_to(fifo)
    (run / "metrics.csv").symlink_to(folder)
    code, _, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", "2")
    assert code == 2 and "is a folder, where the run writes its metrics.csv" in err, err
    code, _, err = cli("train", corpus, "--out", run, *TINY, "--max-steps", "2", "--force")
    assert code == 0, err
    assert (run / "metrics.csv").is_file() and not (run / "loss.png").is_symlink()
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and folder.is_dir() and not any(folder.iterdir())


def test_every_command_checks_its_seed_and_empty_out(tmp_path, trained, cli):
    for args in (["markov", "sample", "--seed", "-1"], ["sample", trained, "--seed", str(2**32)],
                 ["hopfield", "recall", "--dry-run", "--out", tmp_path / "h", "--seed", str(2**64)]):  # fmt: skip
        code, _, err = cli(*args)
        assert code == 2 and "--seed must lie in [0, 2^32)" in err, err
    assert not (tmp_path / "h").exists()
    for args in (["train", "--out", "", "--dry-run"], ["hopfield", "recall", "--dry-run", "--out", ""]):
        code, _, err = cli(*args)
        assert code == 2 and "--out is empty" in err, err


def test_greedy_ignores_temperature_and_nan_weights_are_refused(trained, tmp_path, cli):
    assert cli("sample", trained, "--greedy", "--temperature", "0", "--length", "5")[0] == 0
    ckpt = torch.load(trained / "best.pt", weights_only=True)
    ckpt["model"]["head.weight"][0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    code, _, err = cli("sample", tmp_path / "nan.pt")
    assert code == 2 and "its weights head.weight hold NaN or infinite values" in err


@pytest.mark.parametrize(
    "error, size",
    [
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                "you tried to allocate 640000000000 bytes. Error code 12"
            ),
            "596.0 GiB",
        ),  # fmt: skip
        (MemoryError("Unable to allocate 74.5 GiB for an array with shape (100000, 100000)"), "74.5 GiB"),
    ],
)
def test_a_model_too_big_for_memory_is_one_line(tmp_path, corpus, cli, monkeypatch, error, size):
    """--hidden-size 200000 asked torch for 640 GB: a traceback from its allocator. (Raised here by hand: a real
    allocation that size could succeed lazily under overcommit and then page the machine to death.)"""
    from rnnkit.models import charlm

    def too_big(*a, **k):
        raise error

    monkeypatch.setattr(charlm.CharLM, "__init__", too_big)
    code, _, err = cli("train", corpus, "--out", tmp_path / "run", *TINY, "--dry-run")
    assert code == 2 and err.count("\n") == 1
    assert f"out of memory: an allocation of {size} failed" in err and "--hidden-size" in err
    monkeypatch.setattr(
        charlm.CharLM, "__init__", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("other"))
    )
    with pytest.raises(RuntimeError, match="other"):  # any other error is not ours to word
        cli("train", corpus, "--out", tmp_path / "run2", *TINY, "--dry-run")


@pytest.mark.parametrize("flag", ["--hidden-size", "--embedding-size"])
@pytest.mark.parametrize("size", [10**17, 10**19, 2**63 + 1])
def test_sizes_no_tensor_holds_are_one_line(tmp_path, corpus, cli, flag, size):
    """--hidden-size 10**17 (a weight's bytes past 2^63: 'Storage size calculation overflowed') or 10**19 (its rows
    past 2^63: 'Overflow when unpacking long long', a TypeError) ended in torch's traceback of 40 C++ frames, where
    10**10 is said as out of memory. No tensor is allocated; nothing is written."""
    code, _, err = cli("train", corpus, "--out", tmp_path / "run", *TINY, flag, size, "--dry-run")
    assert code == 2 and err.count("\n") == 1 and f"{flag} {size}" in err and "no model" in err, err
    assert not (tmp_path / "run").exists()


def test_more_layers_than_memory_holds_are_one_line(tmp_path, corpus, cli):
    """--num-layers 10**20 built layers (each small enough to allocate) until the machine ran out: a hang, then the
    out-of-memory killer. The layers' W_hh alone is weighed against the machine's memory first."""
    code, _, err = cli("train", corpus, "--out", tmp_path / "run", *TINY, "--num-layers", 10**20, "--dry-run")
    assert code == 2 and err.count("\n") == 1 and "num_layers 100000000000000000000 of hidden_size" in err, (
        err
    )
    assert "choose fewer layers or units" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["stdlib", "default"])
def test_a_run_on_the_built_in_corpus_resumes_beside_a_file_of_its_name(tmp_path, cli, monkeypatch, name):
    """A run on the built-in corpus named 'stdlib' (kept so in its config; a file's path is kept absolute), resumed
    from a folder holding a file called stdlib, read that file, and was refused: 'the corpus has changed'."""
    from rnnkit.data import corpus

    monkeypatch.setattr(corpus, "STDLIB_CHARS", 150_000)
    monkeypatch.chdir(tmp_path)
    code, _, err = cli("train", name, "--out", tmp_path / "run", *TINY, "--max-steps", "1")
    assert code == 0, err
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / name).write_text("another text, another vocabulary\n" * 400)
    monkeypatch.chdir(tmp_path / "elsewhere")
    code, _, err = cli("train", "--out", tmp_path / "run", "--resume", "--max-steps", "2")
    assert code == 0, err


def test_ctrl_c_at_start_up_is_one_line(tmp_path, corpus, capsys, monkeypatch):
    """Ctrl-C before training's own handler is in place (while torch loads) printed a traceback. (The command line
    reads sys.argv, main(); a program's main(argv) raises it again.)"""
    import sys

    import rnnkit.train.loop
    from rnnkit.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rnnkit.train.loop, "load_corpus", interrupted)
    monkeypatch.setattr(sys, "argv", ["rnnkit", "train", str(corpus), "--out", str(tmp_path / "run"), *TINY])
    code = main()
    assert (code, *capsys.readouterr()) == (130, "", "rnnkit: interrupted\n")


@pytest.mark.parametrize("program", [False, True])
def test_ctrl_c_raised_as_another_error_is_said_as_the_interrupt(
    tmp_path, corpus, capsys, monkeypatch, program
):
    """Python 3.10 and 3.11 raise a Ctrl-C that comes while a class is made (a dataclass's field, as the imports of a
    command's first seconds make hundreds) as RuntimeError('Error calling __set_name__ ...') from it: a traceback,
    exit 1. It is the interrupt: 'rnnkit: interrupted', exit 130 (a program's main(argv): the KeyboardInterrupt)."""
    import sys

    import rnnkit.train.loop
    from rnnkit.cli import main

    def interrupted(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise RuntimeError(
                "Error calling __set_name__ on '_FieldDescriptor' instance 'x' in 'Made'"
            ) from e

    monkeypatch.setattr(rnnkit.train.loop, "load_corpus", interrupted)
    argv = ["train", str(corpus), "--out", str(tmp_path / "run"), *TINY]
    if program:
        with pytest.raises(KeyboardInterrupt):
            main(argv)
        return
    monkeypatch.setattr(sys, "argv", ["rnnkit", *argv])
    code = main()
    assert (code, *capsys.readouterr()) == (130, "", "rnnkit: interrupted\n")


def test_train_help_table_is_what_train_runs_with(capsys):
    """train --help's table of each preset's values holds what train_config builds for each column."""
    import argparse

    from rnnkit.cli import build_parser, main
    from rnnkit.cli.charlm import TRAIN_OPTIONS, train_config

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    table = out[out.index("A flag not given") :].splitlines()[2:]
    columns = table[0].split()
    assert columns == ["default", "min-char-rnn", "char-rnn", "shakespeare", "CORPUS"]
    rows = {line.split()[0]: line.split()[1:] for line in table[1:]}
    assert len(rows) == len(TRAIN_OPTIONS) - 3
    for k, column in enumerate(columns):
        given = ["some.txt"] if column == "CORPUS" else ["--preset", column]
        args = build_parser().parse_args(["train", "--out", "x", *given])
        assert isinstance(args, argparse.Namespace)
        cfg = train_config(args)
        for flag, cells in rows.items():
            section, name, _ = TRAIN_OPTIONS[flag]
            value = getattr(getattr(cfg, section), name)
            assert (f"{value:g}" if isinstance(value, float) else str(value)) == cells[k], (column, flag)


def test_each_train_flag_given_reaches_the_option_of_its_name():
    """`train --threads 3` sets the run's train.threads (which train() sets torch's thread count from), `--seed 29`
    its train.seed, and so on: each flag the config option named as it is, whatever the preset's value."""
    from rnnkit.cli import build_parser
    from rnnkit.cli.charlm import train_config

    given = {"--cell": "lstm", "--hidden-size": 11, "--num-layers": 2, "--dropout": 0.25, "--embedding-size": 13,
             "--forget-bias": 1.5, "--backend": "python", "--seq-len": 17, "--batch-size": 19, "--val-frac": 0.125,
             "--optimizer": "sgd", "--lr": 0.0625, "--lr-decay": 0.5, "--lr-decay-after": 3, "--clip-norm": 2.5,
             "--clip-value": 0.75, "--weight-decay": 0.001, "--max-steps": 23, "--max-epochs": 4.5,
             "--time-budget": 6.5, "--seed": 29, "--eval-every": 31, "--sample-every": 37, "--threads": 3}  # fmt: skip
    args = build_parser().parse_args(
        ["train", "some.txt", "--out", "x", *(str(a) for kv in given.items() for a in kv)]
    )
    cfg = train_config(args)
    for flag, value in given.items():
        name = flag[2:].replace("-", "_")
        (where,) = [part for part in (cfg.data, cfg.model, cfg.train) if hasattr(part, name)]
        assert getattr(where, name) == value, flag


def test_a_next_to_impossible_text_scores_with_an_infinite_perplexity(trained, tmp_path, cli):
    """exp(nats/char) overflowed (OverflowError traceback) beyond 709 nats/char; in JSON it is null (json.dumps
    would write Infinity, which JSON parsers refuse)."""
    import json

    chars = json.loads((trained / "vocab.json").read_text())
    ckpt = torch.load(trained / "best.pt", weights_only=True)
    sure = chars.index("e")  # a model certain that every character is "e"
    ckpt["model"]["head.weight"].zero_()
    ckpt["model"]["head.bias"].zero_()
    ckpt["model"]["head.bias"][sure] = 1e6
    torch.save(ckpt, tmp_path / "sure.pt")
    code, out, err = cli("score", tmp_path / "sure.pt", "eee", "tat", "--json")
    assert code == 0, err
    rows = [
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
        for line in out.splitlines()
    ]
    assert [r["text"] for r in rows] == ["eee", "tat"]
    assert rows[0]["perplexity"] == pytest.approx(1.0) and rows[1]["perplexity"] is None
    code, out, _ = cli("score", tmp_path / "sure.pt", "tat")
    assert code == 0 and "perplexity inf" in out


def test_output_its_encoding_cannot_write_is_one_line(tmp_path, corpus, capsys, monkeypatch):
    """A model of non-ASCII text sampled to an output in ASCII or latin-1 (a locale, a redirect on Windows) ended in
    a UnicodeEncodeError traceback."""
    import io
    import sys

    from rnnkit.cli import main

    text = tmp_path / "text.txt"
    text.write_text(corpus.read_text().replace("e", "é"))
    assert main(["train", str(text), "--out", str(tmp_path / "run"), *TINY, "--dry-run"]) == 0
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert main(["sample", str(tmp_path / "run"), "--prime", "thé", "--length", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its encoding, ascii, can't write; set PYTHONIOENCODING=utf-8" in err, err


@pytest.fixture(scope="module")
def trained_cjk(tmp_path_factory, corpus):
    """A dry run on the pangrams with every 'e' written 中 (in no 8-bit code page) and 'o' written 😀 (an astral
    character: a surrogate pair in JSON's escapes); its text file beside it, named 中文.txt."""
    folder = tmp_path_factory.mktemp("cjk")
    text = folder / "中文.txt"
    text.write_text(corpus.read_text().replace("e", "中").replace("o", "😀"), encoding="utf-8")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # (a failed dry run left the session on 1 thread)
        assert main(["train", str(text), "--out", str(folder / "run"), *TINY, "--dry-run"]) == 0
    finally:
        torch.set_num_threads(n)
    return folder / "run", text


def test_output_an_8_bit_code_page_cannot_write_is_one_line(trained_cjk, capsys, monkeypatch):
    """A model that writes 中 sampled to a cp1252 output (Windows' redirected output), cp1251, cp437 or koi8-r ended in
    a UnicodeEncodeError traceback, exit 1: their codec is called 'charmap', which main took for another stream's."""
    import io

    capsys.readouterr()
    for encoding in ("cp1252", "cp1251", "cp437", "koi8-r"):
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO(), encoding=encoding))
        assert main(["sample", str(trained_cjk[0]), "--prime", "th中", "--length", "3"]) == 2, encoding
        err = capsys.readouterr().err
        assert (
            err.count("\n") == 1 and f"its encoding, {encoding}, can't write; set PYTHONIOENCODING" in err
        ), err


@pytest.mark.parametrize("encoding", ["ascii", "cp1252"])
def test_scores_on_an_output_without_their_characters_are_written_in_escapes(
    trained_cjk, monkeypatch, encoding
):
    """score (--json too), complete --json and eval of a file named in Chinese scored the text, then stopped on an
    ASCII or cp1252 output, 'the output holds characters ...', exit 2. Their lines are written with the characters
    escaped: JSON's escapes (read back as the same text), repr's for score's quoted text, say()'s for a file's name.
    complete's and sample's text itself is still refused (test_output_its_encoding_cannot_write_is_one_line)."""
    import io

    run, text = trained_cjk

    def stdout_of(*args):
        out = io.BytesIO()
        monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(out, encoding=encoding))
        assert main([str(a) for a in args]) == 0
        sys.stdout.flush()
        return out.getvalue().decode("ascii")

    rows = [json.loads(line) for line in stdout_of("score", run, "th中 f😀x", "t中", "--json").splitlines()]
    assert {r["text"] for r in rows} == {"t中", "th中 f😀x"}
    assert stdout_of("score", run, "th中 f😀x").rstrip().endswith("'th\\u4e2d f\\U0001f600x'")
    assert json.loads(stdout_of("complete", run, "th中", "--json", "--length", "3"))["prefix"] == "th中"
    assert stdout_of("eval", run, text).startswith(f"{str(text)[:-6]}\\u4e2d\\u6587.txt: ")


def test_eval_holds_the_file_in_a_few_bytes_a_character(trained, corpus, tmp_path, cli, monkeypatch):
    """eval read the file a second time as one str and encoded it through UTF-32 and int64 indices: about 17 bytes
    a character at its peak (1 GB of text, which training memory-maps, took 17 GB), where training holds 1-4 bytes
    a character. It takes the tokens the file's check read (1 byte a character here), in the model's indices."""
    import tracemalloc

    import rnnkit.data.corpus

    monkeypatch.setattr(rnnkit.data.corpus, "CHUNK_BYTES", 1 << 16)  # (read in chunks of 16 MB: here 64 kB)
    big = tmp_path / "big.txt"
    big.write_text(corpus.read_text() * 100)  # 615,000 characters
    want = json.loads(
        cli("eval", trained, big, "--json", "--streams", "2000")[1]
    )  # (the engine's first call)
    assert want["chars"] == 615_000 - 615_000 % 2000
    tracemalloc.start()
    try:
        code, out, err = cli("eval", trained, big, "--json", "--streams", "2000")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0 and json.loads(out) == want, err
    assert peak < 4 * 615_000, f"{peak / 615_000:.1f} bytes a character"


def test_eval_maps_a_memory_mapped_file_in_place(trained, corpus, tmp_path, cli, monkeypatch):
    """eval mapped the file's tokens to the model's indices by a gather, a second array of the file's length in RAM:
    a file over 64 MB, which load_file memory-maps, was held in RAM after all (an 80 MB file: 80 MB more). The
    tokens are mapped in place, a block at a time, where the two vocabularies' tokens are of one dtype."""
    import numpy as np

    import rnnkit.data.bptt
    import rnnkit.data.corpus

    big = tmp_path / "big.txt"
    big.write_text(corpus.read_text() * 10)  # 61,500 characters
    want = json.loads(cli("eval", trained, big, "--json", "--streams", "50")[1])  # (in RAM: under 64 MB)
    monkeypatch.setattr(rnnkit.data.corpus, "MEMMAP_BYTES", 1000)
    read, streams = [], rnnkit.data.bptt.eval_streams

    def spy(tokens, *args):
        read.append(tokens)
        return streams(tokens, *args)

    monkeypatch.setattr(rnnkit.data.bptt, "eval_streams", spy)
    code, out, err = cli("eval", trained, big, "--json", "--streams", "50")
    assert code == 0 and json.loads(out) == want, err
    assert isinstance(read[0], np.memmap)  # (an ndarray in RAM)


def test_a_run_whose_output_is_closed_is_not_reported_a_success(tmp_path, corpus, capsys, monkeypatch):
    """`rnnkit train ... | head` (or a tee that went away): the run stopped at the first line it could not write
    and exited 0, in silence, as `sample | head` does, so that a script or a restart loop took a run cut short
    for one done. It says so in one line and exits 2; --resume then continues from its last checkpoint."""
    import errno
    import io
    import sys

    from rnnkit.cli import main

    class Closed(io.TextIOBase):
        def __init__(self, after):
            self.after = after  # the lines written before the reader goes away

        def write(self, s):
            self.after -= s == "\n"
            if self.after < 0:
                raise BrokenPipeError(errno.EPIPE, "Broken pipe")
            return len(s)

    run = tmp_path / "run"
    # closed at the header (before the first checkpoint), then at the first validation line (after it)
    for after, how in [(0, "start it again"), (1, "continue with --resume")]:
        closed = Closed(after)
        monkeypatch.setattr(sys, "stdout", closed)
        code = main(["train", str(corpus), "--out", str(run), *TINY, "--max-steps", "4", "--eval-every", "2"])
        if sys.stdout is not closed:  # /dev/null, put there so that Python's flush at exit says nothing
            sys.stdout.close()
        monkeypatch.undo()
        err = capsys.readouterr().err
        assert code == 2 and err.endswith(f"rnnkit: error: the output was closed (its reader went away) and the run "
                                          f"stopped; {how}\n"), err  # fmt: skip
    assert main(["train", "--out", str(run), "--resume"]) == 0
    rows = csv.DictReader((run / "metrics.csv").read_text().splitlines())
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    # a dry run's checkpoint is not resumed (--resume refuses it): it said 'continue with --resume' too
    monkeypatch.setattr(sys, "stdout", Closed(1))
    assert main(["train", str(corpus), "--out", str(tmp_path / "dry"), *TINY, "--dry-run"]) == 2
    sys.stdout.close()
    monkeypatch.undo()
    assert capsys.readouterr().err.endswith("the run stopped; start it again with --force\n")


def test_a_run_whose_terminal_hung_up_says_its_output_was_closed(tmp_path, corpus, capsys, monkeypatch):
    """A run whose terminal closed without a SIGHUP reaching it (`& disown`, a SIGHUP ignored): its line's write
    raised EIO, the step was saved, then the run said 'rnnkit: error: Input/output error; check the path, its
    permissions and the free space', a disk's fault for a closed output. It is said as the closed pipe's line, with
    both causes an EIO has (a log file's failing disk too: 'its reader went away' named the terminal's only)."""
    import errno
    import io
    import sys

    from rnnkit.cli import main

    class HungUp(io.TextIOBase):
        def write(self, s):
            if s.startswith("step "):  # the first validation line; the header before it is written
                raise OSError(errno.EIO, "Input/output error")
            return len(s)

    run = tmp_path / "run"
    monkeypatch.setattr(sys, "stdout", HungUp())
    code = main(["train", str(corpus), "--out", str(run), *TINY, "--max-steps", "4", "--eval-every", "2"])
    if not isinstance(sys.stdout, HungUp):
        sys.stdout.close()
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 2 and err.endswith("rnnkit: error: the output could not be written (input/output error: a "
                                      "terminal that hung up, or a failing disk) and the run stopped; continue with "
                                      "--resume\n"), err  # fmt: skip
    assert torch.load(run / "latest.pt", weights_only=True)["progress"]["step"] == 2


def test_a_config_json_saved_again_with_a_byte_order_mark_is_read(tmp_path, corpus, cli):
    """A config.json opened and saved unchanged by an editor that writes a UTF-8 byte-order mark was 'unreadable':
    --resume said so and fell back on latest.pt's config."""
    run = tmp_path / "run"
    assert cli("train", corpus, "--out", run, *TINY, "--max-steps", "2")[0] == 0
    config = run / "config.json"
    config.write_bytes(b"\xef\xbb\xbf" + config.read_bytes())
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "3")
    assert code == 0 and "unreadable" not in err, err


def test_a_corpus_too_short_for_one_window_is_said_at_once(tmp_path, cli):
    """A corpus of a few characters was told by the split "use --val-frac 0", and with --val-frac 0 that it was too
    short for the streams: two steps to learn the one thing wrong. The length is said first."""
    text = tmp_path / "two.txt"
    text.write_text("ab")
    for extra in ([], ["--val-frac", "0"]):
        code, _, err = cli("train", text, "--out", tmp_path / "run", *TINY, *extra, "--dry-run")
        assert code == 2 and err.count("\n") == 1, err
        assert "the corpus's 2 characters are too few for" in err and "use a longer corpus" in err, err


def test_text_given_in_another_encoding_than_utf8_is_told_so(trained, cli):
    """A TEXT, PREFIX or --prime of bytes that are not UTF-8 (a Latin-1 terminal's 'café', b'caf\\xe9') reaches
    Python as a stand-in character for each such byte, and was told 'never saw: '\\udce9'', a character the user
    never typed; the line now names the byte and says the text is not UTF-8."""
    for args in (["score", trained, "caf\udce9"], ["complete", trained, "caf\udce9"],
                 ["sample", trained, "--prime", "caf\udce9"]):  # fmt: skip
        code, _, err = cli(*args)
        assert code == 2 and "byte 0xe9" in err and "not UTF-8" in err, err


def test_a_full_disk_at_the_first_checkpoint_is_said_on_a_line_of_its_own(cli, corpus, tmp_path, monkeypatch):
    """The first latest.pt (saved before the first step) was written after the progress bar was drawn: a full disk
    there was said at the end of the bar's line, '0/5 [00:00<?, ?step/s]rnnkit: error: No space left on device'."""
    import errno

    from rnnkit.train import loop

    def full(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(loop, "save_checkpoint", full)
    code, _, err = cli(
        "train", corpus, "--out", tmp_path / "run", *TINY, "--max-steps", 5, "--sample-every", 0
    )
    assert code == 2
    line = next(line for line in err.split("\n") if "error" in line)
    assert line.startswith("rnnkit: error: No space left on device"), err


def test_a_leaky_alpha_outside_zero_one_in_a_checkpoint_is_refused(corpus, tmp_path, cli):
    """A checkpoint whose leaky α lay outside (0, 1] (damaged or edited) loaded in silence, and sample ran units
    that blow up; the cell's load_state_dict refuses it, and the command says so in one line."""
    run = tmp_path / "run"
    tiny = ["--cell", "leaky", *TINY[2:]]
    assert cli("train", corpus, "--out", run, *tiny, "--dry-run")[0] == 0
    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt["model"]["rnn.cells.0.alpha_fixed"][0] = 1.5
    torch.save(ckpt, tmp_path / "alpha.pt")
    code, _, err = cli("sample", tmp_path / "alpha.pt")
    assert (
        code == 2
        and "leaky alpha must lie in (0, 1], got 1.5 in the state_dict's rnn.cells.0.alpha_fixed" in err
    )
    assert len(err.strip().splitlines()) == 1, err


def test_a_warning_at_the_first_step_is_said_on_a_line_of_its_own(corpus, tmp_path):
    """The native engine that can't be built (a read-only cache) is said at the first forward, after the progress bar
    is drawn: 'rnnkit: warning: ...' came at the end of the bar's line, '0/2 [00:00<?, ?step/s]rnnkit: warning: ...'.
    A warning in the loop clears the bar first, as its validation lines do."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from rnnkit import cli\n"
        "from rnnkit.engine import native\n"
        "native.load = lambda: None\n"
        "native.unsupported = lambda *a: 'could not build the native engine: PermissionError; set TORCH_EXTENSIONS_DIR'\n"
        "native.build_failed = lambda reason: True\n"
        f"sys.exit(cli.main({['train', str(corpus), '--out', str(tmp_path / 'run'), *TINY, '--max-steps', '2', '--sample-every', '0', '--threads', '1']!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    before = out.stderr.split("rnnkit: warning: rnnkit native backend unavailable")
    assert len(before) == 2, out.stderr
    assert before[0].rstrip(" ").endswith(("\n", "\r")), repr(out.stderr)


def test_every_train_option_says_what_it_sets(capsys):
    """train --help listed --seq-len, --batch-size, --val-frac, --hidden-size, --lr-decay-after and others with no
    word of what they set (that --batch-size counts parallel streams, that --val-frac holds out the corpus's end);
    every option of train has a help text."""
    from rnnkit.cli import build_parser

    train = build_parser().commands["train"]
    bare = [a.option_strings[-1] for a in train._actions if a.option_strings and not a.help]
    assert bare == []


@pytest.mark.parametrize("name", ["shakespeare", "stdlib", "default"])
def test_a_corpus_name_that_is_also_a_file_here_is_refused(tmp_path, corpus, cli, monkeypatch, name):
    """`rnnkit train shakespeare` in a folder holding a file called shakespeare trained on that file in silence
    (the bare name can't tell the built-in corpus from the file; --preset shakespeare there read the file too, its
    config recording the built-in's name). One line names both and the fix; ./NAME is the file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).write_text(corpus.read_text())
    code, _, err = cli("train", name, "--out", tmp_path / "run", *TINY, "--max-steps", "1")
    assert (
        code == 2 and f"CORPUS {name} is both the built-in corpus and the file ./{name} in this folder" in err
    )
    assert not (tmp_path / "run").exists()
    if name == "shakespeare":
        code, _, err = cli("train", "--preset", "shakespeare", "--out", tmp_path / "run", "--max-steps", "1")
        assert code == 2 and "the preset's corpus shakespeare is the built-in corpus, but" in err, err
        assert not (tmp_path / "run").exists()
    code, _, err = cli("train", f"./{name}", "--out", tmp_path / "run", *TINY, "--max-steps", "1")
    assert code == 0, err


def test_a_built_in_shakespeare_run_resumed_beside_a_file_of_its_name_says_so(
    tmp_path, corpus, cli, monkeypatch
):
    """A run on the built-in shakespeare (kept by its name; a file's path is kept absolute), resumed from a folder
    holding a file called shakespeare, read that file and was refused as 'the corpus of RUN has changed'; it says
    which file would be read and to resume from another folder."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "tinyshakespeare.txt").write_text(corpus.read_text())
    run = tmp_path / "run"
    assert cli("train", "shakespeare", "--data-dir", data, "--out", run, *TINY, "--max-steps", "1")[0] == 0
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "shakespeare").write_text("another text\n" * 400)
    monkeypatch.chdir(tmp_path / "here")
    code, _, err = cli("train", "--out", run, "--resume", "--max-steps", "2")
    assert (
        code == 2 and "the run's corpus shakespeare is the built-in corpus, but the file ./shakespeare" in err
    )
    monkeypatch.chdir(tmp_path)
    assert cli("train", "--out", run, "--resume", "--max-steps", "2")[0] == 0


def test_a_folder_of_runs_or_of_other_files_is_not_said_to_train_into(tmp_path, cli):
    """`rnnkit sample runs` (the folder of runs, not a run) or `rnnkit sample .` said 'train first with `rnnkit
    train --out runs`', which trains a run into that folder among the others (or into the working directory); a
    folder of runs names them, a folder of other files says it is no run folder, an empty one or a run's own files
    without a checkpoint still say to train."""
    runs = tmp_path / "runs"
    for name in ("shk", "py"):
        (runs / name).mkdir(parents=True)
        (runs / name / "latest.pt").write_bytes(b"")
    code, _, err = cli("sample", runs)
    assert (
        code == 2
        and f"{runs} holds no checkpoint (best.pt or latest.pt), but {runs / 'py'}, {runs / 'shk'}" in err
    )
    assert "give one of them" in err and "train first" not in err, err
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "index.json").write_text("{}")
    code, _, err = cli("sample", tmp_path / "index")
    assert code == 2 and "holds no checkpoint" in err and "no run folder of `rnnkit train`" in err, err
    assert "train first" not in err
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "metrics.csv").write_text("step\n")
    code, _, err = cli("sample", tmp_path / "started")
    assert code == 2 and f"train first with `rnnkit train --out {tmp_path / 'started'}`" in err, err


def test_an_out_that_is_a_link_to_nothing_says_so(tmp_path, corpus, cli):
    """--out a symbolic link whose target is missing (a run folder moved away) was 'cannot make the --out folder
    RUN: File exists'; the line names the link and where it leads."""
    link = tmp_path / "run"
    link.symlink_to(tmp_path / "moved" / "run")
    code, _, err = cli("train", corpus, "--out", link, *TINY, "--dry-run")
    assert code == 2 and err.count("\n") == 1, err
    assert f"--out {link} is a symbolic link to {tmp_path / 'moved' / 'run'}, which leads to no folder" in err


def test_a_full_disk_at_config_json_leaves_no_folder_train_made(cli, corpus, tmp_path, monkeypatch):
    """A disk already full as the run writes config.json left the empty --out folder train had made, where word2vec,
    ngram, tfidf and the energy commands remove one they made; a folder that was there stays."""
    import errno

    from rnnkit.train import loop

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(loop, "write_text", full)
    code, _, err = cli("train", corpus, "--out", tmp_path / "run", *TINY, "--max-steps", 2)
    assert code == 2 and "No space left on device" in err, err
    assert not (tmp_path / "run").exists()
    (tmp_path / "kept").mkdir()
    code, _, err = cli("train", corpus, "--out", tmp_path / "kept", *TINY, "--max-steps", 2)
    assert code == 2 and (tmp_path / "kept").is_dir(), err


def test_train_help_says_which_corpus_an_omitted_corpus_reads():
    """train --help said an omitted CORPUS is the Python standard library's source, but --preset shakespeare without
    one trains on Tiny Shakespeare (its preset's corpus; downloaded where not found). The help says so, for every
    preset whose corpus is not the standard library's."""
    from rnnkit.cli import build_parser
    from rnnkit.cli.charlm import train_config
    from rnnkit.presets import PRESETS

    train = build_parser().commands["train"]
    (text,) = [a.help for a in train._actions if a.dest == "corpus"]
    for name in PRESETS:
        read = train_config(build_parser().parse_args(["train", "--out", "x", "--preset", name])).data.corpus
        if read not in (None, "stdlib", "default"):
            assert f"--preset {name}" in " ".join(text.split()), (name, read)


@pytest.mark.parametrize("command", ["sample", "score", "complete", "eval"])
def test_the_commands_that_use_a_model_take_threads_as_train_does(
    trained, cli, tmp_path, monkeypatch, command
):
    """sample, score, complete and eval ran at torch's thread count, with no --threads: on a busy 2-core machine
    `complete --beam 5` took 5.1-9.6 s at 2 threads against 0.07-0.13 s at 1 (threads waiting for each other)."""
    text = tmp_path / "t.txt"
    text.write_text("the lazy dog\n")
    rest = {
        "sample": ["--length", "5"],
        "score": ["the"],
        "complete": ["the", "--length", "3"],
        "eval": [text],
    }
    asked, before = [], torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", asked.append)  # (the test process keeps its own count)
    assert cli(command, trained, *rest[command], "--threads", "1")[0] == 0
    assert asked == [1, before]  # for the command only, the caller's count back after it (as train)
    assert cli(command, trained, *rest[command])[0] == 0 and asked == [1, before]  # 0, the default: torch's
    code, _, err = cli(command, trained, *rest[command], "--threads", "-1")
    assert code == 2 and err.count("\n") == 1 and "--threads must be a whole number from 0" in err, err


def test_commands_overlapping_in_threads_put_back_the_thread_count_of_before_both(trained, monkeypatch):
    """A command's --threads read torch's count as it started and put its reading back as it ended: a program running
    `sample --threads N` in two threads at once, the second started while the first held N, had the second read N
    (a new thread takes the count last set) and, ending last, leave every thread started after on N threads. The
    count of before the first of them is put back (as train() does)."""
    import threading

    from rnnkit.cli import charlm as cli_charlm

    before = torch.get_num_threads()
    other = 1 if before > 1 else 2
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    printed = cli_charlm.print_pieces

    def held(
        pieces, first=""
    ):  # inside the command, its threads set: a holds until b is in, b until a is out
        name = threading.current_thread().name
        (a_in if name == "a" else b_in).set()
        (b_in if name == "a" else a_out).wait(30)
        printed(pieces, first)

    monkeypatch.setattr(cli_charlm, "print_pieces", held)

    def run():
        try:
            main(["sample", str(trained), "--length", "3", "--threads", str(other)])
        finally:
            if threading.current_thread().name == "a":
                a_out.set()

    a = threading.Thread(target=run, name="a")
    a.start()
    assert a_in.wait(30)
    b = threading.Thread(target=run, name="b")
    b.start()
    a.join(60), b.join(60)
    seen = []
    fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    fresh.start()
    fresh.join()
    assert (torch.get_num_threads(), seen) == (before, [before])


def test_greedy_warns_of_top_k_and_seed(trained, cli):
    """`sample --greedy --top-k 3 --seed 1` ignored --top-k and --seed in silence (no draw takes either); each is now
    one warning line, the text the same as without them (--temperature stays accepted: 50e74ea)."""
    plain = cli("sample", trained, "--greedy", "--length", "5")
    code, out, err = cli("sample", trained, "--greedy", "--length", "5", "--top-k", "3", "--seed", "1")
    assert (code, out) == (0, plain[1]) and plain[2] == ""
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("rnnkit: warning: ") for line in lines)
    assert "--top-k does nothing with --greedy" in lines[0]
    assert "--seed does nothing with --greedy" in lines[1]
    assert cli("sample", trained, "--greedy", "--length", "5", "--temperature", "0.5")[2] == ""


def test_train_out_that_is_a_device_says_so(cli):
    """`train --out /dev/null` said '--out /dev/null is a file; give a folder', as the other commands did."""
    code, _, err = cli("train", "--out", "/dev/null", "--dry-run")
    assert code == 2 and err == "rnnkit: error: --out /dev/null is a device, not a file; give a folder\n", err
