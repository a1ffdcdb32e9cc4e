"""Shared fixtures: a tiny synthetic problem and a trained digits model (built once)."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import TensorDataset

import famr

torch.set_num_threads(int(os.environ.get("FAMR_TEST_THREADS", "2")))


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
