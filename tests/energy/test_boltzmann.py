import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from rnnkit.energy import exact
from rnnkit.energy.boltzmann import BoltzmannMachine
from rnnkit.errors import RnnkitError


def machine(V, H=0, scale=1.0, seed=0):
    return BoltzmannMachine(V, H, init_scale=scale, generator=torch.Generator().manual_seed(seed))


def test_exact_partition_function_is_the_brute_force_sum():
    bm = machine(3, 2, scale=0.8)
    bm.b += torch.tensor([0.3, -0.2, 0.1, 0.5, -0.4])
    terms = []
    for bits in itertools.product([0.0, 1.0], repeat=5):
        x = torch.tensor([bits])
        terms.append(-bm.energy(x).item())
    assert bm.log_partition() == pytest.approx(math.log(sum(math.exp(t) for t in terms)), rel=1e-6)
    assert bm.visible_log_probs().exp().sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("V, H", [(4, 0), (3, 2)])
def test_gibbs_sampling_matches_the_enumerated_distribution(V, H):
    bm = machine(V, H, scale=1.0, seed=V + H)
    g = torch.Generator().manual_seed(1)
    x = bm.sample(20000, sweeps=30, generator=g)  # independent chains: independent samples
    counts = torch.bincount(exact.state_index(x[:, :V]), minlength=2**V).double()
    expected = bm.visible_log_probs().exp() * len(x)
    assert chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3


def test_learning_lowers_the_kl_divergence_to_a_known_target():
    g = torch.Generator().manual_seed(0)
    teacher = machine(5, 0, scale=2.1, seed=3)  # std 2.1: what scale=1.5 gave before init_scale was the std
    target = teacher.visible_log_probs().exp()
    data = exact.binary_states(5)[torch.multinomial(target, 2000, replacement=True, generator=g)].float()
    for H in (0, 2):
        student = machine(5, H, seed=4)
        before = student.kl_from(target)
        student.fit(data, epochs=30, lr=0.05, batch_size=100, generator=g)
        after = student.kl_from(target)
        assert before > 1.0 and after < 0.1, (H, before, after)  # from ~4 nats to below 0.1
        assert student.log_likelihood(data) > -math.log(32)  # better than the uniform distribution


def test_weights_stay_symmetric_with_zero_diagonal():
    bm = machine(4, 2).fit((torch.rand(50, 4) < 0.5).float(), epochs=2, batch_size=10)
    torch.testing.assert_close(bm.W, bm.W.T)
    assert (bm.W.diagonal() == 0).all()


def test_bad_input():
    with pytest.raises(RnnkitError):
        machine(0)
    with pytest.raises(RnnkitError):
        machine(3).fit([[0, 1, 0.5]])
    with pytest.raises(RnnkitError):
        machine(3).fit([[0, 1]])
    with pytest.raises(RnnkitError):
        machine(15, 6).log_partition()


@pytest.mark.parametrize("setting", [{"sweeps": 0}, {"sweeps": -1}, {"sweeps": 1.5}, {"positive_sweeps": 0},
                                     {"positive_sweeps": -2}, {"positive_sweeps": 2.0}])  # fmt: skip
def test_sweeps_must_be_integers_of_at_least_one(setting):
    # sweeps=0 used to train silently with frozen negative chains; 1.5 raised a TypeError
    with pytest.raises(RnnkitError) as e:
        machine(3, 1).fit([[1, 0, 1]] * 8, epochs=1, **setting)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "target",
    [
        torch.ones(8),  # counts, not probabilities
        torch.tensor([1.5, -0.5, 0, 0, 0, 0, 0, 0]),
        torch.ones(16) / 16,  # the wrong number of states
        torch.ones(2, 4) / 8,
        torch.full((8,), float("nan")),
        "uniform",
    ],
)
def test_kl_from_needs_a_probability_vector_over_the_visible_states(target):
    with pytest.raises(RnnkitError) as e:
        machine(3, 1).kl_from(target)
    assert "\n" not in str(e.value)


def test_kl_from_takes_arrays_and_lists():
    bm = machine(3, 1)
    expected = bm.kl_from(torch.ones(8) / 8)
    assert bm.kl_from(np.ones(8) / 8) == pytest.approx(expected)
    assert bm.kl_from([0.125] * 8) == pytest.approx(expected)


def test_energy_checks_its_states():
    bm = machine(3, 1)
    assert bm.energy([1, 0, 1, 1]).shape == (1,)
    torch.testing.assert_close(
        bm.energy(torch.tensor([[1, 0, 1, 1]])), bm.energy(torch.tensor([[1.0, 0, 1, 1]]))
    )
    for bad in ([[1, 0, 1]], [[1, 0, 2, 1]]):
        with pytest.raises(RnnkitError):
            bm.energy(bad)


def test_kl_from_a_target_rounded_off_one_is_normalised():
    """A target summing to 1 + 1e-4 passed the check, and KL(target || model) came out 1e-4 too high:
    as large as the KL of a trained model. The model's own distribution is at KL 0."""
    bm = machine(3, 1)
    p = bm.visible_log_probs().exp()
    assert bm.kl_from(p * (1 + 9e-5)) == pytest.approx(0, abs=1e-12)


def test_init_scale_is_the_standard_deviation_of_the_weights():
    # W was built as A + Aᵀ from N(0, init_scale²) draws: its weights had std √2 · init_scale
    bm = machine(150, 50, scale=0.1)
    off = ~torch.eye(200, dtype=torch.bool)
    assert torch.equal(bm.W, bm.W.T) and not bm.W.diagonal().any()
    assert bm.W[off].std().item() == pytest.approx(0.1, rel=0.02)


def test_numpy_integer_sizes_work_and_booleans_are_refused():
    """BoltzmannMachine(3, np.int64(2)) was refused ('must be a positive integer'), while
    BoltzmannMachine(3, True) was taken as one hidden unit with num_hidden = True."""
    bm = BoltzmannMachine(np.int64(3), np.int64(2))
    assert (bm.num_visible, bm.num_hidden, bm.W.shape) == (3, 2, (5, 5))
    with pytest.raises(RnnkitError, match="hidden units"):
        BoltzmannMachine(3, True)


@pytest.mark.parametrize("hidden", [-1, 1.5, True])
def test_a_bad_number_of_hidden_units_says_that_zero_is_allowed(hidden):
    """0 hidden units is the default (a visible-only machine): the error said 'must be an integer >= 1'."""
    with pytest.raises(RnnkitError, match=r"^number of hidden units must be an integer >= 0, got "):
        BoltzmannMachine(3, hidden)
    assert BoltzmannMachine(3, 0).W.shape == (3, 3)


@pytest.mark.parametrize(
    "states, units",
    [
        (torch.tensor([[1.0, 0, 0.5, 0, 1]]), None),  # not a 0/1 state: was sampled from as it stood
        (torch.tensor([[1, 0, 1, 0, 0]]), None),  # int64: was 'addmv input tensors must have the same dtype'
        ([[1.0, 0, 1, 0, 0]], None),  # a list, not updated in place: was "unsupported operand type(s) for @"
        (torch.zeros(2, 4), None),  # was 'size mismatch, got input (2), mat (2x4), vec (5)'
        (torch.zeros(2, 5), [7]),  # was 'index 7 is out of bounds for dimension 1 with size 5'
        (torch.zeros(2, 5), [1.0]),
    ],
)
def test_gibbs_sweep_checks_its_states_in_one_line(states, units):
    with pytest.raises(RnnkitError) as e:
        machine(3, 2).gibbs_sweep(states, units)
    assert "\n" not in str(e.value)


def test_gibbs_sweep_of_one_state_resamples_it_in_place():
    bm = machine(3, 2)
    bm.b += 50  # every unit on
    x = torch.zeros(5)  # was 'IndexError: too many indices for tensor of dimension 1'
    assert bm.gibbs_sweep(x, [0, 3]) is x and x.tolist() == [1, 0, 0, 1, 0]


@pytest.mark.parametrize(
    "v, sweeps",
    [
        ([[1, 0, 0.5]], 2),  # a grey value was clamped as it stood, in silence
        ([[1, 0]], 2),  # was 'size mismatch'
        ([[1, 0, 1]], 0),  # random hidden states, no Gibbs sweep: fit refuses positive_sweeps=0
        ([[1, 0, 1]], 1.5),  # was "'float' object cannot be interpreted as an integer"
    ],
)
def test_positive_states_checks_the_clamped_data(v, sweeps):
    with pytest.raises(RnnkitError) as e:
        machine(3, 2).positive_states(v, sweeps)
    assert "\n" not in str(e.value)


def test_positive_states_clamps_the_data_and_samples_the_exact_posterior():
    bm = machine(2, 3, seed=5)
    v = torch.tensor([1, 0])  # one row, as a list or int tensor: was 'expected Tensor as element 0'
    x = bm.positive_states(v.repeat(20000, 1), 20, torch.Generator().manual_seed(0))
    assert x.dtype == bm.W.dtype and (x[:, :2] == v).all()
    assert bm.positive_states([1, 0], 1).shape == (1, 5)
    p = exact.log_probs_states(bm._log_weight, 5).exp().view(8, 4)[:, 1]  # h states with v = (1, 0)
    counts = torch.bincount(exact.state_index(x[:, 2:]), minlength=8).double()
    assert chisquare(counts.numpy(), (p / p.sum() * len(x)).numpy()).pvalue > 1e-3


@pytest.mark.parametrize("call", ["log_partition", "log_likelihood", "kl_from", "visible_log_probs"])
def test_too_many_units_to_enumerate_does_not_point_to_ais(call):
    """'use AIS instead' was the fix named for a Boltzmann machine of 21+ units: ais.py estimates an RBM's log Z,
    and this model has no such estimate."""
    bm = BoltzmannMachine(3, 18)
    args = {"log_likelihood": ([[1, 0, 1]],), "kl_from": (torch.ones(8) / 8,)}.get(call, ())
    with pytest.raises(RnnkitError, match=r"at most 20 units, got 21; .*keep V \+ H <= 20") as e:
        getattr(bm, call)(*args)
    assert "AIS instead" not in str(e.value) and "\n" not in str(e.value)


def test_enumerated_probabilities_are_computed_in_chunks():
    """log_probs_states (visible_log_probs, log_likelihood, kl_from) took all 2^N states at once: at N = 20 its
    states and temporaries peaked ~0.5 GB above the start, for an answer of 8 MB; log_sum_exp_states chunks."""
    bm = machine(6, 10, seed=2)
    rows = []

    def log_weight(x):
        rows.append(len(x))
        return bm._log_weight(x)

    logp = exact.log_probs_states(log_weight, 16)
    assert max(rows) <= exact.CHUNK and sum(rows) == 2**16
    everything = bm._log_weight(exact.binary_states(16))
    torch.testing.assert_close(logp, everything - torch.logsumexp(everything, 0), rtol=0, atol=1e-12)
    assert bm.log_partition() == pytest.approx(torch.logsumexp(everything, 0).item(), abs=1e-12)


def test_kl_from_stays_finite_where_the_model_probability_underflows():
    """kl_from exponentiated log q before taking its log again: a visible state of log q = -800 (exp gives 0 in
    float64) made KL(target || model) inf, where it is 400 nats."""
    bm = BoltzmannMachine(2, 0, dtype=torch.float64)
    bm.W.zero_()  # (its draw made the exact value below depend on the global seed)
    bm.b += 400
    target = torch.tensor([0.5, 0, 0, 0.5], dtype=torch.float64)
    log_q = bm.visible_log_probs()
    assert bm.kl_from(target) == pytest.approx((0.5 * (math.log(0.5) - log_q[[0, 3]])).sum().item())
    assert bm.kl_from(target) == pytest.approx(400 + math.log(0.5), abs=1e-9)  # log q = -800 and 0


def test_a_callback_that_is_no_function_is_refused_before_training():
    """fit(callback='x') trained a whole epoch and then failed with Python's "'str' object is not callable"
    (RBM and DBN fit alike); it is now refused before any work, in one line."""
    from rnnkit.energy.dbn import DBN
    from rnnkit.energy.rbm import RBM

    data = torch.randint(0, 2, (8, 4)).double()
    with pytest.raises(RnnkitError, match=r"^callback must be a function called as callback\(epoch\) after"):
        BoltzmannMachine(4, 2).fit(data, epochs=1, callback="x")
    with pytest.raises(RnnkitError, match=r"^callback must be a function called as callback\(epoch, rbm\)"):
        RBM(4, 2).fit(data.float(), callback=3)
    with pytest.raises(
        RnnkitError, match=r"^callback must be a function called as callback\(layer, epoch, rbm\)"
    ):
        DBN([4, 3, 2]).fit(data.float(), callback="x")


@pytest.mark.parametrize("count", [-1, 2.5, "3"])
def test_random_states_names_a_count_that_is_none(count):
    with pytest.raises(RnnkitError, match=r"^count must be an integer >= 0"):
        BoltzmannMachine(3, 1).random_states(count)


def test_gibbs_sweep_takes_units_as_a_tensor_of_indices():
    """units=torch.arange(V, N) (the hidden units) was refused as 'units must be unit indices in 0..4, got
    tensor(3)': a tensor's entries are 0-d tensors, not integers; a float tensor is still refused."""
    bm = machine(3, 2)
    bm.b += 50  # every unit on
    x = torch.zeros(2, 5)
    assert bm.gibbs_sweep(x, torch.arange(3, 5)) is x and x.tolist() == [[0, 0, 0, 1, 1]] * 2
    assert bm.gibbs_sweep(torch.zeros(5), torch.tensor(1)).tolist() == [0, 1, 0, 0, 0]
    with pytest.raises(RnnkitError, match=r"units must be unit indices in 0..4, got 1.0$"):
        bm.gibbs_sweep(x, torch.tensor([1.0]))


def test_a_learning_rate_beyond_the_models_float_range_is_one_error():
    """lr=1e39 passed the positive-number check as a Python float and, in float32, the first update made the
    weights NaN: fit returned, and log_likelihood read nan, in silence (RBM.fit refuses such a rate)."""
    bm = machine(3, 1)
    with pytest.raises(RnnkitError, match=r"^learning rate 1e\+39 is beyond the range of torch.float32 "):
        bm.fit([[0, 1, 1], [1, 0, 1]], epochs=1, lr=1e39)
    assert torch.isfinite(bm.W).all()
    BoltzmannMachine(3, 1, dtype=torch.float64).fit([[0, 1, 1]], epochs=1, lr=1e39)  # float64 holds it


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_boltzmann_machine_is_refused(dtype):
    """its Gibbs sweep drew uniforms of the model's dtype: in bfloat16 steps of 2^-8, unlikely units on too often."""
    with pytest.raises(RnnkitError, match=r"samples in float32 or float64.*dtype=torch.float32"):
        BoltzmannMachine(2, 2, dtype=dtype)


def test_a_uniform_of_zero_switches_no_unlikely_unit_on(monkeypatch):
    """torch.rand returns exactly 0 one draw in 2^24 (float32), and u < p then switched on a unit of any p > 0: one
    of p = σ(-69) = 1e-30 came on at a rate of 6e-8."""
    bm = BoltzmannMachine(3, 2, init_scale=0, dtype=torch.float32)
    bm.b.fill_(-69.0)
    monkeypatch.setattr(torch, "rand", lambda *shape, generator=None, **kw: torch.zeros(*shape, **kw))
    assert not bm.gibbs_sweep(torch.ones(4, 5)).any()
    assert not bm.sample(4, sweeps=2).any()


def test_an_update_from_unit_probabilities_keeps_w_symmetric():
    """update() of mean-field statistics (probabilities, not 0/1 states): a float32 pᵀp is not symmetric to the bit,
    and W drifted from symmetric (W != Wᵀ after one update, B, N = 100, 10). Of 0/1 states the update is the same
    bits as before."""
    g = torch.Generator().manual_seed(0)
    bm = BoltzmannMachine(6, 4, generator=g)
    pos, neg = torch.rand(100, 10, generator=g), torch.rand(37, 10, generator=g)
    bm.update(pos, neg, lr=0.1)
    assert torch.equal(bm.W, bm.W.T) and not bm.W.diagonal().any()
    states = (torch.rand(100, 10, generator=g) < 0.5).float(), (torch.rand(37, 10, generator=g) < 0.5).float()
    W = bm.W.clone()
    bm.update(*states, lr=0.1)
    dW = states[0].T @ states[0] / 100 - states[1].T @ states[1] / 37
    assert torch.equal(bm.W, W + 0.1 * (dW - torch.diag(torch.diagonal(dW))))


def test_fit_runs_the_sweeps_asked_and_keeps_its_free_chains_between_fits(monkeypatch):
    """Per update, positive_sweeps sweeps of the clamped hidden units and `sweeps` sweeps of the persistent free
    chains (Tieleman 2008), which a second fit takes up where the first left them: 8 rows in batches of 4 are
    2 updates an epoch."""
    bm = machine(3, 2, seed=5)
    calls, sweep = [], BoltzmannMachine._gibbs_sweep

    def counted(self, x, units=None, generator=None):
        calls.append((x, units))
        return sweep(self, x, units, generator)

    monkeypatch.setattr(BoltzmannMachine, "_gibbs_sweep", counted)
    data = (torch.rand(8, 3, generator=torch.Generator().manual_seed(6)) < 0.5).float()
    g = torch.Generator().manual_seed(7)
    bm.fit(data, epochs=1, batch_size=4, num_chains=5, sweeps=3, positive_sweeps=2, generator=g)
    free = [x for x, units in calls if units is None]
    assert [list(u) for _, u in calls if u is not None] == [[3, 4]] * 4 and len(free) == 6
    assert all(x is bm.chains for x in free)
    chains, calls[:] = bm.chains, []
    bm.fit(data, epochs=1, batch_size=4, num_chains=5, sweeps=1, positive_sweeps=1, generator=g)
    assert len(calls) == 4 and bm.chains is chains and calls[1][0] is chains


def test_kl_from_refuses_a_target_that_sums_to_more_than_rounding_off_one():
    """Within 1e-4 of 1 a target is rounded numbers and normalised; 1.005 is not a probability vector."""
    bm = machine(3, 1)
    p = bm.visible_log_probs().exp()
    for total in (1.005, 0.995):
        with pytest.raises(RnnkitError, match=f"target probabilities must sum to 1, got {total:g}"):
            bm.kl_from(p * total)
