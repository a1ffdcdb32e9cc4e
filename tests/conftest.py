"""Shared fixtures: a tiny synthetic problem and a trained digits model (built once)."""

from __future__ import annotations

import getpass
import os
import tempfile

import pytest
import torch
from torch.utils.data import TensorDataset

import famr

# Two threads unless told otherwise; OMP_NUM_THREADS=1 must really give one thread, because
# summation order changes with the thread count and every test has to hold with 1 or 2.
torch.set_num_threads(
    int(os.environ.get("FAMR_TEST_THREADS") or os.environ.get("OMP_NUM_THREADS") or "2")
)
# One torch.compile cache per CPU capability: with the shared default cache
# (/tmp/torchinductor_<user>), code that inductor built under one ATEN_CPU_CAPABILITY crashed a
# later run under another (segmentation fault), or failed to compile in it ("'at::vec' has not
# been declared", from a precompiled header built for other kernels).
os.environ.setdefault(
    "TORCHINDUCTOR_CACHE_DIR",
    os.path.join(
        tempfile.gettempdir(),
        f"famr-inductor-{getpass.getuser()}-{torch.backends.cpu.get_cpu_capability().lower()}",
    ),
)


@pytest.fixture(scope="session")
def digits():
    return famr.load_dataset("digits")


@pytest.fixture(scope="session")
def digits_splits(digits):
    return famr.ClassForget(3).split(digits.train, digits.test, digits.num_classes)


@pytest.fixture(scope="session")
def digits_model(digits):
    """A small CNN trained on digits (seeded; ~3 s)."""
    torch.manual_seed(0)
    model = famr.create_model("small_cnn", 10, in_channels=1, width=16)
    return famr.train(model, digits.train, epochs=15, seed=0).model


@pytest.fixture()
def tiny():
    """Four classes of 4x4 two-channel images: forget class 0, retain the rest."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, 4, 4, generator=g)
    y = torch.arange(64) % 4
    x[:, 0] += y.view(-1, 1, 1).float()  # make the classes learnable
    forget = TensorDataset(x[y == 0], y[y == 0])
    retain = TensorDataset(x[y != 0], y[y != 0])
    torch.manual_seed(0)
    model = famr.create_model("small_cnn", 4, in_channels=2, width=4)
    return model, forget, retain
