"""Shared fixtures: tiny random-weight models and hand-computable linear worlds."""

from __future__ import annotations

import os
import resource

import pytest
import torch
from torch import nn

from captum_cfx import AutoencoderGenerator, VAEGenerator

# One thread unless the caller chose (CPU budget: the suite is timed in CPU seconds on a 2-core machine, where a
# second intra-op thread only spins). The environment variables reach the subprocesses tests launch.
if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    torch.set_num_threads(1)
THREADS = torch.get_num_threads()


def pytest_addoption(parser):
    parser.addoption("--cpu-durations", type=int, default=0, metavar="N",
                     help="list the N tests that took the most CPU time (user + sys of pytest and the processes it "
                          "waited for): what the suite's CPU budget counts, unlike --durations' wall time")


_CPU: list[tuple[float, str]] = []


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    start = _cpu_seconds()
    yield
    _CPU.append((_cpu_seconds() - start, item.nodeid))


def pytest_terminal_summary(terminalreporter, config):
    n = config.getoption("--cpu-durations")
    if n > 0 and _CPU:
        total = sum(c for c, _ in _CPU)
        terminalreporter.write_sep("=", f"most CPU time: {n} of {len(_CPU)} tests, {total:.1f}s in all")
        for cpu, nodeid in sorted(_CPU, reverse=True)[:n]:
            terminalreporter.write_line(f"{cpu:7.2f}s CPU  {nodeid}")


@pytest.fixture(autouse=True)
def _restore_threads():
    """A test (or a CLI it calls) that changes torch's thread count does not change it for the tests after it."""
    yield
    if torch.get_num_threads() != THREADS:
        torch.set_num_threads(THREADS)


class TinyVAE(nn.Module):
    def __init__(self, d: int = 3, c: int = 1, s: int = 8) -> None:
        super().__init__()
        self.c, self.s = c, s
        self.enc = nn.Linear(c * s * s, 2 * d)
        self.dec = nn.Linear(d, c * s * s)

    def encode(self, x):
        return self.enc(x.flatten(1)).chunk(2, dim=1)

    def decode(self, z):
        return torch.sigmoid(self.dec(z)).view(-1, self.c, self.s, self.s)


class TinyClassifier(nn.Module):
    def __init__(self, c: int = 1, s: int = 8, k: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * s * s, k))

    def forward(self, x):
        return self.net(x)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    vae, clf = TinyVAE(), TinyClassifier()
    gen = VAEGenerator(vae, input_range=(0.0, 1.0), image_shape=(1, 8, 8))
    x = torch.rand(6, 1, 8, 8)
    return vae, clf, gen, x


def linear_world():
    """Decoder D(z) = A z with orthonormal columns (so E = A^T inverts it) and a 2-class linear model."""
    torch.manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(4, 2, dtype=torch.float64))
    A = q.float()  # (4 pixels, 2 latents)
    W = torch.tensor([[1.0, -0.5, 0.25, 0.0], [-1.0, 0.5, 0.0, 0.5]])
    gen = AutoencoderGenerator(lambda x: x.flatten(1) @ A, lambda z: (z @ A.T).view(-1, 1, 2, 2),
                               input_range=None, image_shape=(1, 2, 2))
    model = lambda x: x.flatten(1) @ W.T  # noqa: E731
    return A, W, gen, model


@pytest.fixture(scope="session")
def mnist_test():
    from captum_cfx.datasets import load_mnist

    return load_mnist("test")


@pytest.fixture(scope="session")
def shipped():
    from captum_cfx.zoo import load_generator, load_pretrained

    return load_pretrained("mnist-classifier"), load_pretrained("mnist-oracle"), load_generator("mnist-vae")
