"""Data sets, forget specifications and the tensor data path.

``load_dataset(name, root)`` returns an :class:`ImageData` (train/test tensors and class
names); a forget spec turns it into :class:`Splits` (forget / retain / test sets).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import TensorDataset

from ..registry import Registry

DATASETS: Registry = Registry("data set")
register_dataset = DATASETS.register


@dataclass
class ImageData:
    """A loaded image classification data set held as tensors.

    Attributes:
        name: Registry name.
        train: Training images and labels.
        test: Test images and labels.
        class_names: Name of each class index.
        in_channels: Image channels.
        image_size: Image height (= width).
    """

    name: str
    train: TensorDataset
    test: TensorDataset
    class_names: list[str]
    in_channels: int
    image_size: int

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_dataset(name: str, root: str | Path | None = None) -> ImageData:
    """Load registered data set ``name`` from local files under ``root`` (never downloads).

    Args:
        name: A registered data set (see :func:`list_datasets`).
        root: Folder holding the data, for data sets that are not embedded.

    Returns:
        The data set as tensors.
    """
    return DATASETS.get(name).obj(root)


def list_datasets() -> list[str]:
    """Registered data set names."""
    return DATASETS.names()


from . import digits  # noqa: E402,F401  (registers the data sets)
from .forget import ClassForget, Splits  # noqa: E402

__all__ = ["ClassForget", "DATASETS", "ImageData", "Splits", "list_datasets", "load_dataset"]
