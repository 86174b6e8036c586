"""The same models on a GPU: run where CUDA is available, skipped elsewhere."""

import pytest
import torch

from rnnkit.energy import ais, capacity, hopfield, ising, rbm_exact, rbm_train
from rnnkit.energy.boltzmann import BoltzmannMachine
from rnnkit.energy.rbm import RBM
from rnnkit.energy.rbm_train import RBMTrainConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def gen(seed=0):
    return torch.Generator(device="cuda").manual_seed(seed)


def test_hopfield_recall_and_capacity_on_the_gpu():
    xi = hopfield.random_patterns(10, 200, gen(), "cuda")
    net = hopfield.Hopfield(200, device="cuda").store(xi)
    for mode in ("async", "sync"):
        result = net.recall(hopfield.corrupt(xi, 0.1, gen(1)), mode, generator=gen(2))
        assert torch.equal(result.states, xi) and (result.energies.diff(dim=-1) <= 1e-3).all()
    cfg = capacity.CapacityConfig(sizes=(100,), loads=(0.05, 0.3), random_starts=4, min_patterns=20)
    low, high = capacity.capacity_experiment(cfg, "cuda")
    assert low["recalled"] == 1.0 and high["recalled"] < 0.5


def test_rbm_torch_loop_on_the_gpu_matches_the_cpu_given_the_same_noise():
    cpu = RBM(20, 12, init_scale=0.5, generator=torch.Generator().manual_seed(0))
    gpu = RBM(20, 12).cuda()
    gpu.load_state_dict(cpu.state_dict())
    cfg = RBMTrainConfig(k=2, momentum=0.5)
    xs = torch.rand(5, 10, 20, generator=torch.Generator().manual_seed(1))
    u0, u = rbm_train.draw_noise(cpu, 5, 10, 10, 2, True, torch.Generator().manual_seed(2))
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        state = rbm_train.TrainState.start(model, 10)
        rbm_train.torch_pass(model, xs.to(device), None, u.to(device), state, cfg)
    torch.testing.assert_close(gpu.W.cpu(), cpu.W, rtol=1e-4, atol=1e-5)


def test_rbm_training_sampling_and_log_z_on_the_gpu():
    g = gen(3)
    x = (torch.rand(500, 16, generator=g, device="cuda") < 0.3).float()
    rbm = RBM(16, 10, generator=g, device="cuda")
    before = rbm.log_likelihood(x)
    rbm.fit(x, RBMTrainConfig(epochs=5, lr=0.05), g)
    assert rbm.log_likelihood(x) > before
    samples, _ = rbm.sample(50, 20, generator=g)
    assert samples.is_cuda
    estimate, _ = ais.log_partition(rbm, 100, 500, x, g)
    assert estimate == pytest.approx(rbm_exact.log_partition(rbm), abs=0.05)


def test_boltzmann_machine_and_ising_on_the_gpu():
    bm = BoltzmannMachine(4, 1, init_scale=1.0, generator=gen(4), device="cuda")
    x = bm.sample(4000, 20, generator=gen(5))
    assert x.is_cuda and bm.visible_log_probs().exp().sum().item() == pytest.approx(1.0)
    results = ising.Ising(32, [1.0, 4.0], generator=gen(6), device="cuda").run(200, 200)
    low, high = results["abs_magnetisation"].tolist()
    assert low > 0.99 and high < 0.1
