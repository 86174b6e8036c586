import pytest
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from rnnkit.energy.dbn import DBN
from rnnkit.energy.digits import load_digits
from rnnkit.energy.rbm_train import RBMTrainConfig
from rnnkit.errors import RnnkitError


def test_stacked_features_classify_digits():
    x, y = load_digits()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order].numpy()
    dbn = DBN([64, 64, 32], generator=torch.Generator().manual_seed(1))
    seen = []
    cfg = RBMTrainConfig(epochs=10, lr=0.1, momentum=0.5)
    dbn.fit(x[:1400], cfg, torch.Generator().manual_seed(2), lambda *a: seen.append(a[:2]))
    assert seen[0] == (0, 0) and seen[-1] == (1, 9)
    top, both = dbn.transform(x, "top"), dbn.transform(x, "all")
    assert top.shape == (len(x), 32) and both.shape == (len(x), 96)
    with threadpool_limits(1):  # a small fit; extra threads only stall on a busy machine
        clf = LogisticRegression(C=100, max_iter=2000).fit(both[:1400].numpy(), y[:1400])
    assert clf.score(both[1400:].numpy(), y[1400:]) > 0.9


def test_bad_layer_sizes():
    with pytest.raises(RnnkitError):
        DBN([64])
    with pytest.raises(RnnkitError):
        DBN([64, 0])
    with pytest.raises(RnnkitError):
        DBN([8, 4, 2]).fit(torch.rand(10, 8), [RBMTrainConfig()])
    with pytest.raises(RnnkitError):
        DBN(5)  # was TypeError: object of type 'int' has no len()


def test_an_empty_list_of_configs_is_an_error_not_the_defaults():
    """configs=[] counts no layers; `configs or RBMTrainConfig()` read it as None and trained every layer
    for the default 10 epochs instead of saying the count was wrong."""
    with pytest.raises(RnnkitError, match="got 0 training configs for 2 layers"):
        DBN([8, 4, 2]).fit(torch.rand(10, 8), [])


def test_each_layer_trains_on_the_hidden_probabilities_of_the_layer_below():
    """Greedy stacking: layer 2 is fitted to P(h_1 = 1 | x) (layer 1's transform, probabilities, not samples) after
    layer 1 is fitted to the data, with the one generator carried through; layers above the first are Bernoulli."""
    import copy

    x = torch.rand(30, 6, generator=torch.Generator().manual_seed(0))
    dbn = DBN([6, 4, 3], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    first, second = copy.deepcopy(dbn.rbms)
    cfg = RBMTrainConfig(epochs=2, batch_size=5, lr=0.1)
    dbn.fit(x, cfg, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    first.fit(x, cfg, g)
    second.fit(first.transform(x), cfg, g)
    for ours, ref in zip(dbn.rbms, (first, second)):
        for a, b in zip((ours.W, ours.b, ours.c), (ref.W, ref.b, ref.c)):
            assert torch.equal(a, b)
    assert [r.visible for r in DBN([6, 4, 3], "gaussian").rbms] == ["gaussian", "bernoulli"]


def test_digits_are_scikit_learns_pixels_over_16():
    from sklearn.datasets import load_digits as sklearn_digits

    x, y = load_digits()
    pixels, labels = sklearn_digits(return_X_y=True)
    assert x.dtype == torch.float32 and x.shape == (1797, 64) and y.tolist() == labels.tolist()
    assert torch.equal(x * 16, torch.tensor(pixels, dtype=torch.float32))
