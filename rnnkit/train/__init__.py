"""Training: the loop (truncated BPTT, validation, samples), optimisers and clipping, atomic
checkpoints, metrics. The loop only calls `model(batch) -> (logits, loss)`."""

from rnnkit.train.checkpoint import load_checkpoint, save_checkpoint
from rnnkit.train.config import DataConfig, RunConfig, TrainConfig
from rnnkit.train.loop import train

__all__ = ["DataConfig", "RunConfig", "TrainConfig", "load_checkpoint", "save_checkpoint", "train"]
