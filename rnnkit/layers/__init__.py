from rnnkit.layers.recurrent import Recurrent

__all__ = ["Recurrent"]
