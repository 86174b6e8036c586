"""Presets for `rnnkit train --preset NAME`: small dicts of overrides of the RunConfig defaults.

min-char-rnn  Karpathy's 112-line gist (deck 002): vanilla tanh RNN, 100 units, one-hot input,
              windows of 25, one stream, Adagrad 0.1, every gradient element of the window's summed
              loss clipped to [-5, 5]: rnnkit's loss is the mean over the 25 characters, so [-0.2, 0.2];
              validates every 10,000 steps (the gist has no validation; a sample every 1,000): its 5% held
              out is read as one stream, 6,000 windows of the 3 MB default corpus, which every 1,000 steps
              took longer than the training between (58% of the run's time; now about 12%)
char-rnn      karpathy/char-rnn's defaults: 2x128 LSTM, one-hot input, seq 50, batch 50,
              RMSprop 2e-3 (α 0.95), decay 0.97 per epoch after epoch 10, 95/5 split, forget bias 1, every
              gradient element of the loss summed over the window's 50 steps (each a mean over the batch)
              clipped to [-5, 5]: rnnkit's loss is the mean over them, so [-0.1, 0.1] (with --seq-len N
              of either preset, give --clip-value 5/N to keep that clip)
shakespeare   the best validation loss on Tiny Shakespeare in 20 minutes on a 2-core CPU
default       `make demo`: the standard library's source, progress within seconds, readable
              samples within about 5 minutes on 2 cores

shakespeare and default run on one torch thread: on a 2-core machine shared with other jobs, two
spinning OpenMP threads were 5-10x slower than one; raise it with --threads on a quiet machine.
Measured (2026-12, 2-core Sapphire Rapids, train steps of the default model): --threads 2 is 1.8x
faster than one thread on an idle machine (127k vs 70k chars/s) and 1.7-2.8x slower with one core
busy with another job (25-41k chars/s); the shakespeare model likewise 1.85x faster when idle.
"""

import copy

from rnnkit.errors import RnnkitError

PRESETS = {
    "min-char-rnn": {
        "data": {"seq_len": 25, "batch_size": 1, "val_frac": 0.05},
        "model": {"cell": "rnn_tanh", "hidden_size": 100, "num_layers": 1, "embedding_size": 0},
        "train": {"optimizer": "adagrad", "lr": 0.1, "clip_value": 5.0 / 25, "clip_norm": 0.0,
                  "eval_every": 10_000, "sample_every": 1000, "sample_temperature": 1.0},
    },
    "char-rnn": {
        "data": {"seq_len": 50, "batch_size": 50, "val_frac": 0.05},
        "model": {"cell": "lstm", "hidden_size": 128, "num_layers": 2, "embedding_size": 0,
                  "dropout": 0.0, "forget_bias": 1.0},
        "train": {"optimizer": "rmsprop", "lr": 2e-3, "lr_decay": 0.97, "lr_decay_after": 10,
                  "clip_value": 5.0 / 50, "clip_norm": 0.0, "max_epochs": 50, "eval_every": 1000, "sample_every": 1000},
    },
    "shakespeare": {
        "data": {"corpus": "shakespeare", "seq_len": 100, "batch_size": 32, "val_frac": 0.1},
        "model": {"cell": "lstm", "hidden_size": 512, "num_layers": 1, "embedding_size": 64, "dropout": 0.1},
        "train": {"optimizer": "adam", "lr": 3e-3, "lr_decay": 0.85, "lr_decay_after": 3, "clip_norm": 1.0,
                  "clip_value": 0.0, "time_budget": 20, "max_epochs": 0, "eval_every": 250, "sample_every": 1000,
                  "threads": 1},
    },
    "default": {
        "data": {"corpus": None, "seq_len": 64, "batch_size": 32, "val_frac": 0.02},
        "model": {"cell": "lstm", "hidden_size": 256, "num_layers": 1, "embedding_size": 32},
        "train": {"optimizer": "adam", "lr": 3e-3, "clip_norm": 1.0, "clip_value": 0.0, "time_budget": 5,
                  "max_epochs": 0, "eval_every": 200, "sample_every": 200, "sample_temperature": 0.7,
                  "threads": 1},
    },
}  # fmt: skip


def preset(name: str) -> dict:
    """A copy of the preset's overrides (a caller's edits don't change the preset)."""
    if name not in PRESETS:
        raise RnnkitError(f"unknown --preset '{name}'; choose one of {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])
