"""Training: the loop (truncated BPTT, validation, samples), optimisers and clipping, atomic
checkpoints, metrics. The loop only calls `model(batch) -> (logits, loss)`.

The names are imported on first use (rnnkit._lazy), so that rnnkit.train.config, which needs no torch, is read
without it (`rnnkit train --help`'s table of presets)."""

from rnnkit._lazy import lazy_names

__all__ = ["DataConfig", "RunConfig", "TrainConfig", "load_checkpoint", "save_checkpoint", "train"]
_WHERE = {
    "DataConfig": "config",
    "RunConfig": "config",
    "TrainConfig": "config",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "train": "loop",
}

__getattr__, __dir__ = lazy_names(__name__, _WHERE, globals())
