"""Tensor data path: a data set held as two tensors, batched by index on the device.

Following cifar10-airbench: the split lives as one tensor, a batch is an index slice, and
augmentation runs on whole batches, so no per-image Python work sits in the hot loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

Transform = Callable[[Tensor, torch.Generator | None], Tensor]


def to_tensors(dataset: Dataset, *, name: str = "dataset") -> tuple[Tensor, Tensor]:
    """Materialise a ``Dataset`` of ``(image, label)`` pairs as ``(images, labels)`` tensors.

    A ``TensorDataset`` is returned as is (no copy); an :class:`famr.data.files.ImageFiles` is
    decoded (by its worker processes; sharded under ``torchrun``); any other data set is read
    once in order through a ``DataLoader``.

    Args:
        dataset: The data set; items must be ``(tensor image, int label)``.
        name: What to call it in error messages.

    Returns:
        ``images`` of shape ``(N, C, H, W)`` and ``labels`` of shape ``(N,)`` (int64).

    Raises:
        ValueError: The data set is empty or its items are not ``(image, label)`` pairs.
    """
    from .files import ImageFiles, decode

    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        images, labels = dataset.tensors
    elif isinstance(dataset, ImageFiles):  # decoded once, by worker processes
        if len(dataset) == 0:
            raise ValueError(f"the {name} set is empty")
        images, labels = decode(dataset)
    else:
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise ValueError(
                f"the {name} set must be a map-style Dataset (with __len__ and __getitem__) of "
                "(image tensor, integer label) pairs"
            )
        if len(dataset) == 0:  # type: ignore[arg-type]
            raise ValueError(f"the {name} set is empty")
        try:
            parts = list(DataLoader(dataset, batch_size=512, shuffle=False))
            images = torch.cat([p[0] for p in parts])
            labels = torch.cat([torch.as_tensor(p[1]) for p in parts])
        except (TypeError, IndexError, KeyError, ValueError, RuntimeError) as err:
            first = " ".join(str(err).split())[:200]
            raise ValueError(
                f"the {name} set must yield (image tensor, integer label) pairs ({first})"
            ) from None
    if len(images) == 0:
        raise ValueError(f"the {name} set is empty")
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"the {name} set's labels must be integers, got {labels.dtype}")
    if images.is_floating_point() and not bool(torch.isfinite(images).all()):
        raise ValueError(f"the {name} set's images hold NaN or infinite values")
    return images, labels.long()


@dataclass
class TensorBatches:
    """Iterate ``(images, labels)`` batches of a tensor data set.

    Attributes:
        images: ``(N, ...)`` tensor, kept on ``device``.
        labels: ``(N,)`` int64 tensor.
        batch_size: Batch size; the last batch may be smaller.
        shuffle: Shuffle each pass with ``generator``.
        generator: CPU generator that drives shuffling and augmentation.
        transform: Batched augmentation applied to each image batch before it is converted
            to float (uint8 images are scaled to [0, 1]); ``None`` for no augmentation.
    """

    images: Tensor
    labels: Tensor
    batch_size: int
    shuffle: bool = False
    generator: torch.Generator | None = None
    transform: Transform | None = None

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.images.device)
        else:
            order = torch.arange(n, device=self.images.device)
        for start in range(0, n, self.batch_size):
            index = order[start : start + self.batch_size]
            x = self.images[index]
            if self.transform is not None:
                x = self.transform(x, self.generator)
            yield to_float(x), self.labels[index]


def to_float(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] become float32 in [0, 1]; float images pass unchanged."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def crop_flip(images: Tensor, generator: torch.Generator | None, padding: int = 4) -> Tensor:
    """Per-sample random crop (zero padding ``padding``) and horizontal flip, on a whole batch.

    Each image gets its own offset and flip, drawn from ``generator``; the work is a handful
    of tensor ops for the whole batch (no per-image Python loop).

    Args:
        images: ``(B, C, H, W)`` batch, uint8 or float.
        generator: CPU generator for the random draws.
        padding: Maximum shift in pixels.

    Returns:
        The augmented batch, same dtype and shape.
    """
    b, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(images.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(images.device)
    rows = torch.arange(h, device=images.device)[None, :] + dy[:, None]  # (B, H)
    cols = torch.arange(w, device=images.device)[None, :].expand(b, w)
    cols = torch.where(flip[:, None], (w - 1) - cols, cols) + dx[:, None]  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    # Advanced indexing with (B,1,1), (B,H,1), (B,1,W) picks padded[b, :, rows, cols].
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def augmentation(name: str) -> Transform | None:
    """The batched augmentation called ``name`` (``"none"`` or ``"crop_flip"``)."""
    if name == "none":
        return None
    if name == "crop_flip":
        return crop_flip
    raise ValueError(f"augment={name!r} is not valid; choose one of: none, crop_flip")
