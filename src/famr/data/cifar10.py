"""CIFAR-10 from a local ``cifar-10-batches-py`` folder (never downloaded).

The five training batches and the test batch are read with ``pickle`` from the standard python
layout (as torchvision does; those files are plain numpy arrays and label lists) and kept as
uint8 tensors ``(N, 3, 32, 32)``: the fast data path converts and augments whole batches.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from . import ImageData, register_dataset

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{k}" for k in range(1, 6)]
TEST_FILES = ["test_batch"]
CLASS_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
# Per-channel statistics of the CIFAR-10 training images (well-known values).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _folder(root: str | Path | None) -> Path:
    if root is None:
        raise ValueError(
            "data set 'cifar10' needs --data-root: a folder holding cifar-10-batches-py/"
        )
    root = Path(root)
    for candidate in (root / FOLDER, root):
        if all((candidate / f).is_file() for f in TRAIN_FILES + TEST_FILES):
            return candidate
    if not root.exists():
        raise FileNotFoundError(f"data root {str(root)!r} does not exist")
    missing = [f for f in TRAIN_FILES + TEST_FILES if not (root / FOLDER / f).is_file()]
    raise FileNotFoundError(
        f"data root {str(root)!r} lacks CIFAR-10 files {missing} (expected {FOLDER}/data_batch_1..5 and test_batch)"
    )


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")  # noqa: S301 - the standard CIFAR format
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    except (
        pickle.UnpicklingError,
        EOFError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as err:
        raise ValueError(f"CIFAR-10 file {str(path)!r} is malformed: {err}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise ValueError(
            f"CIFAR-10 file {str(path)!r} is malformed: data shape {data.shape}, {len(labels)} labels"
        )
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"CIFAR-10 file {str(path)!r} has labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def _split(folder: Path, files: list[str]) -> TensorDataset:
    parts = [_read_batch(folder / f) for f in files]
    images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
    labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
    return TensorDataset(images, labels)


@register_dataset("cifar10")
def load_cifar10(root: str | Path | None = None) -> ImageData:
    """CIFAR-10 (50,000 train / 10,000 test, 32x32 RGB, uint8) from ``root``.

    Args:
        root: The folder holding ``cifar-10-batches-py/``, or that folder itself.
    """
    folder = _folder(root)
    return ImageData(
        name="cifar10",
        train=_split(folder, TRAIN_FILES),
        test=_split(folder, TEST_FILES),
        class_names=list(CLASS_NAMES),
        in_channels=3,
        image_size=32,
        mean=MEAN,
        std=STD,
    )
