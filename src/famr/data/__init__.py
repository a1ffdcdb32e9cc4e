"""Data sets, forget specifications and the tensor data path.

``load_dataset(name, root)`` returns an :class:`ImageData` (train/test tensors and class
names); a forget spec turns it into :class:`Splits` (forget / retain / test sets).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..registry import Registry

DATASETS: Registry = Registry("data set")
register_dataset = DATASETS.register


@dataclass
class ImageData:
    """A loaded image classification data set: held as tensors, or (ImageFolder trees too large
    to hold, see :mod:`famr.data.files`) as image files decoded when a request needs them.

    Attributes:
        name: Registry name.
        train: Training images and labels (a ``TensorDataset`` or an ``ImageFiles``).
        test: Test images and labels (the same kind as ``train``).
        class_names: Name of each class index.
        in_channels: Image channels.
        image_size: Image height (= width).
        mean, std: Recommended per-channel input normalisation (``None``: none).
        validation: Training examples held out for choosing hyperparameters (``None`` until
            :func:`hold_out_validation` is applied).
    """

    name: str
    train: Dataset
    test: Dataset
    class_names: list[str]
    in_channels: int
    image_size: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    validation: Dataset | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def path(self) -> str:
        """``"files"`` when the images stay on disk until a request needs them
        (:mod:`famr.data.files`), ``"tensors"`` when the data set is held decoded."""
        from .files import ImageFiles

        return "files" if isinstance(self.train, ImageFiles) else "tensors"


def load_dataset(name: str, root: str | Path | None = None, **options: Any) -> ImageData:
    """Load registered data set ``name`` from local files under ``root`` (never downloads).

    Args:
        name: A registered data set (see :func:`list_datasets`).
        root: Folder holding the data, for data sets that are not embedded.
        **options: Loader options (e.g. ``classes_file``, ``image_size`` for
            ``imagefolder``); an option the loader does not take is a ``ValueError``.

    Returns:
        The data set: tensors, or for ``imagefolder`` trees above its ``files_above_gib`` (or
        with ``data_path="files"``) image files decoded where a request needs them
        (:class:`famr.data.files.ImageFiles`; ``ImageData.path`` says which).
    """
    loader = DATASETS.get(name).obj
    given = {k: v for k, v in options.items() if v is not None}
    accepted = set(inspect.signature(loader).parameters) - {"root"}
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ValueError(
            f"data set {name!r} takes no option {', '.join(unknown)}"
            + (f"; its options: {', '.join(sorted(accepted))}" if accepted else "")
        )
    return loader(root, **given)


def hold_out_validation(data: ImageData, fraction: float = 0.1, seed: int = 0) -> ImageData:
    """Move ``fraction`` of each training class into ``validation`` (a fixed, seeded draw).

    With CIFAR-10 and ``fraction=0.1`` this is the 45k / 5k / 10k protocol of SalUn and
    Unlearn-Sparse. Hyperparameters are chosen on ``validation``, never on the test set.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction {fraction!r} is not valid; it must lie in (0, 1)")
    from .files import rows, subset

    images, labels = rows(data.train, name="training")  # image files stay undecoded
    generator = torch.Generator().manual_seed(seed)
    held = torch.zeros(len(labels), dtype=torch.bool)
    for k in range(data.num_classes):
        members = torch.nonzero(labels == k).flatten()
        count = int(round(fraction * len(members)))
        held[members[torch.randperm(len(members), generator=generator)[:count]]] = True
    return replace(
        data,
        train=subset(images, labels, ~held),
        validation=subset(images, labels, held),
    )


def per_class_subset(data: ImageData, per_class: int, seed: int = 0) -> ImageData:
    """Keep at most ``per_class`` training images of each class (a fixed, seeded draw); the
    validation and test splits are unchanged. For reduced-budget studies that train many
    models (the epsilon score on CIFAR-10)."""
    if not (isinstance(per_class, int) and not isinstance(per_class, bool) and per_class >= 1):
        raise ValueError(f"per_class={per_class!r} is not valid; give an integer >= 1")
    from .files import rows, subset

    images, labels = rows(data.train, name="training")
    generator = torch.Generator().manual_seed(seed)
    kept = torch.zeros(len(labels), dtype=torch.bool)
    for k in range(data.num_classes):
        members = torch.nonzero(labels == k).flatten()
        kept[members[torch.randperm(len(members), generator=generator)[:per_class]]] = True
    return replace(data, train=subset(images, labels, kept))


def list_datasets() -> list[str]:
    """Registered data set names."""
    return DATASETS.names()


from . import cifar10, digits, imagefolder  # noqa: E402,F401  (registers the data sets)
from .concepts import (  # noqa: E402
    CIFAR10_COARSE,
    DIGITS_COARSE,
    ConceptForget,
    StyleForget,
    add_style,
    coarsen,
    sketch,
)
from .forget import (  # noqa: E402
    ClassForget,
    RandomForget,
    SampleForget,
    Splits,
    forget_spec_from_dict,
    indices_sha256,
)

# every kind of request: whole classes, chosen samples, a random share, a concept, a style
ForgetSpec = ClassForget | SampleForget | RandomForget | ConceptForget | StyleForget

__all__ = [
    "CIFAR10_COARSE",
    "DIGITS_COARSE",
    "ConceptForget",
    "StyleForget",
    "add_style",
    "coarsen",
    "sketch",
    "DATASETS",
    "ClassForget",
    "ForgetSpec",
    "RandomForget",
    "SampleForget",
    "forget_spec_from_dict",
    "indices_sha256",
    "ImageData",
    "Splits",
    "hold_out_validation",
    "list_datasets",
    "per_class_subset",
    "load_dataset",
]
