"""scikit-learn's 8x8 handwritten digits: 1797 images shipped inside scikit-learn (no download)."""

import torch

SHAPE = (8, 8)


def load_digits():
    """Pixels scaled from 0..16 to [0, 1]: images (1797, 64) float32, labels (1797,)."""
    from sklearn.datasets import load_digits as sklearn_digits

    x, y = sklearn_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
