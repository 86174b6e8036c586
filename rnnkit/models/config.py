"""The character language model's configuration (rnnkit.models.charlm.CharLMConfig), in a module without torch:
rnnkit.train.config nests it in a RunConfig, whose defaults `rnnkit train --help` prints in its table of presets
(importing torch for them took that help 3-5 s where every other help takes 0.2)."""

from dataclasses import dataclass


@dataclass
class CharLMConfig:
    vocab_size: int = 0
    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 2
    dropout: float = 0.0
    embedding_size: int = 0  # 0 = one-hot input, as in the lectures
    forget_bias: float = 1.0  # Jozefowicz et al. 2015; char-rnn initialises it to 1
    backend: str | None = None  # rnnkit engine backend; None = fastest available
    torch_rnn: bool = False  # build the recurrent part on torch.nn (for comparison)
