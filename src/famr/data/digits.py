"""The 8x8 handwritten digits that ship inside scikit-learn: the embedded default (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from . import ImageData, register_dataset

TEST_FRACTION = 0.3
SPLIT_SEED = 0


@register_dataset("digits")
def load_digits(root: str | Path | None = None) -> ImageData:
    """scikit-learn's digits (1,797 images, 8x8, 10 classes) with a fixed stratified split.

    70 % train / 30 % test, stratified by class with seed 0 (1,257 / 540 images). Pixels are
    scaled from 0..16 to [0, 1]; ``root`` is ignored (the data ships with scikit-learn).
    """
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    test_index = []
    for k in range(10):
        members = np.flatnonzero(bunch.target == k)
        count = int(round(TEST_FRACTION * len(members)))
        test_index.extend(rng.choice(members, size=count, replace=False).tolist())
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[test_index] = True
    return ImageData(
        name="digits",
        train=TensorDataset(images[~is_test], labels[~is_test]),
        test=TensorDataset(images[is_test], labels[is_test]),
        class_names=[str(k) for k in range(10)],
        in_channels=1,
        image_size=8,
    )
