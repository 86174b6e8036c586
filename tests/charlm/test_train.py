import math
import zipfile

import pytest
import torch

from rnnkit.errors import RnnkitError
from rnnkit.train import checkpoint as ckpt_mod
from rnnkit.train.checkpoint import load_checkpoint, save_checkpoint
from rnnkit.train.config import RunConfig
from rnnkit.train.loop import train
from rnnkit.train.metrics import read_metrics


def tiny_config(corpus, **train):
    cfg = RunConfig.from_dict({
        "data": {"corpus": str(corpus), "seq_len": 16, "batch_size": 8, "val_frac": 0.1},
        "model": {"cell": "lstm", "hidden_size": 32, "num_layers": 1, "embedding_size": 16},
        "train": {"optimizer": "adam", "lr": 1e-2, "clip_norm": 1.0, "clip_value": 0.0, "max_epochs": 0,
                  "eval_every": 20, "sample_every": 0, "seed": 7, **train},
    })  # fmt: skip
    return cfg


def test_learning_loss_falls_from_ln_v(tmp_path, corpus):
    assert train(tiny_config(corpus, max_steps=120), tmp_path / "run", log=lambda s: None) == 0
    rows = read_metrics(tmp_path / "run" / "metrics.csv")
    V = len(set(corpus.read_text()))
    first, last_val = float(rows[0]["train_loss"]), float(rows[-1]["val_loss"])
    assert abs(first - math.log(V)) < 0.3  # starts near ln V (uniform guess)
    assert last_val < 0.5 * math.log(V)  # and learns the pangrams well below it
    for name in ["config.json", "vocab.json", "metrics.csv", "loss.png", "latest.pt", "best.pt"]:
        assert (tmp_path / "run" / name).is_file()


def test_resume_equals_uninterrupted(tmp_path, corpus):
    quiet = lambda s: None  # noqa: E731
    cfg = tiny_config(corpus, max_steps=30, eval_every=10)
    cfg.model.dropout = 0.1  # the random state must be restored too
    train(cfg, tmp_path / "whole", log=quiet)
    cfg.train.max_steps = 20
    train(cfg, tmp_path / "split", log=quiet)
    cfg.train.max_steps = 30
    train(cfg, tmp_path / "split", resume=True, log=quiet)
    whole, split = (
        read_metrics(tmp_path / "whole" / "metrics.csv"),
        read_metrics(tmp_path / "split" / "metrics.csv"),
    )
    assert [r["step"] for r in split] == [str(s) for s in range(1, 31)]
    assert [r["train_loss"] for r in whole] == [r["train_loss"] for r in split]
    assert [r["val_loss"] for r in whole] == [r["val_loss"] for r in split]


def test_out_folder_with_a_run_is_refused(tmp_path, corpus):
    train(tiny_config(corpus, max_steps=2), tmp_path / "run", log=lambda s: None)
    with pytest.raises(RnnkitError, match="already holds a run.*--resume.*--force"):
        train(tiny_config(corpus, max_steps=2), tmp_path / "run", log=lambda s: None)
    assert train(tiny_config(corpus, max_steps=2), tmp_path / "run", force=True, log=lambda s: None) == 0
    with pytest.raises(RnnkitError, match="nothing to resume"):
        train(tiny_config(corpus, max_steps=2), tmp_path / "other", resume=True, log=lambda s: None)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus):
    cfg = tiny_config(corpus, max_steps=10, eval_every=2, lr=1e30, optimizer="sgd", clip_norm=0.0)
    with pytest.raises(RnnkitError, match=r"(became nan|exploded).*last good checkpoint"):
        train(cfg, tmp_path / "run", log=lambda s: None)
    ckpt = load_checkpoint(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in ckpt["model"].values())


def test_ctrl_c_saves_and_exits_cleanly(tmp_path, corpus, monkeypatch):
    from rnnkit.train import loop

    calls = {"n": 0}
    real = loop.clip_gradients

    def interrupt_at_5(*a):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a)

    monkeypatch.setattr(loop, "clip_gradients", interrupt_at_5)
    assert train(tiny_config(corpus, max_steps=50), tmp_path / "run", log=lambda s: None) == 130
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["progress"]["step"] == 4


def test_bad_checkpoints(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"config": "{}", "chars": "ab"})
    assert load_checkpoint(good)["chars"] == "ab"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    text = tmp_path / "text.pt"
    text.write_text("hello")
    for path in (truncated, other, text):
        with pytest.raises(RnnkitError, match="not an rnnkit|cannot be read"):
            load_checkpoint(path)
    newer = tmp_path / "newer.pt"
    torch.save({"format": ckpt_mod.FORMAT, "version": ckpt_mod.VERSION + 1}, newer)
    with pytest.raises(RnnkitError, match="newer rnnkit"):
        load_checkpoint(newer)
    corrupt = tmp_path / "corrupt.pt"
    data = bytearray(good.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    corrupt.write_bytes(bytes(data))
    with pytest.raises(RnnkitError):
        load_checkpoint(corrupt)
    assert zipfile.is_zipfile(good)


def test_checkpoint_does_not_unpickle_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": ckpt_mod.FORMAT, "version": 1, "x": Evil()}, path)
    with pytest.raises(RnnkitError, match="cannot be read"):
        load_checkpoint(path)
