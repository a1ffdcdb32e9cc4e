"""The file data path: images stay on disk until a request needs them.

An :class:`ImageFiles` is a map-style data set of image files and their labels. Indexing it
with an integer decodes that one image; indexing it with a boolean mask or an index tensor
gives another ``ImageFiles`` (nothing decoded), so a forget spec splits a tree of a million
files by its labels alone. :func:`decode` turns the rows a run needs (the forget set, a retain
buffer, an evaluation sample) into uint8 tensors, decoded by DataLoader worker processes with
prefetching (and pinned memory when a GPU is present); under ``torchrun`` each rank decodes its
strided share and the shares are gathered, so no file is read twice. :func:`famr.predict` reads
an ``ImageFiles`` batch by batch and never holds more than a few batches of images.

Why by hand: torchvision's ``ImageFolder`` decodes to PIL images for per-image transforms and
has no way to take a subset by a label mask without building a new data set; here a subset is a
view (paths and labels), the decode is the one centre-crop recipe of
:mod:`famr.data.imagefolder`, and the result is the uint8 tensor the tensor path trains on, so
both paths give the same numbers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .. import distributed

# Files this process asked its decoders for since it started (a diagnostic for run records
# and benchmarks: the file path's promise is that this grows with the request, not the tree).
_DECODED = [0]


def images_decoded() -> int:
    """How many images this process has decoded through the file path so far."""
    return _DECODED[0]


def read_image(path: str, image_size: int, resize: int) -> Tensor:
    """One image file as a uint8 ``(3, image_size, image_size)`` tensor: its shorter side
    resized to ``resize`` (bilinear, Pillow), then centre-cropped.

    Raises:
        ValueError: The file cannot be read, or is smaller than ``image_size`` after resizing.
    """
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        w, h = img.size
        if min(w, h) != resize:
            scale = resize / min(w, h)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            img = img.resize(size, Image.Resampling.BILINEAR)
        w, h = img.size
        s = image_size
        if w < s or h < s:
            raise ValueError(f"smaller than {s}x{s} after resizing ({w}x{h})")
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
        data = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return data.view(s, s, 3).permute(2, 0, 1).contiguous()


class ImageFiles(Dataset):
    """Image files and their labels, decoded only when asked.

    Attributes:
        paths: One file path per example.
        labels: ``(N,)`` int64 labels.
        image_size: Side of the square uint8 images an example decodes to.
        resize: Shorter side before the centre crop.
        workers: DataLoader worker processes :func:`decode` and :func:`famr.predict` use.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        labels: Tensor | Sequence[int],
        image_size: int,
        resize: int,
        workers: int = 2,
    ) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        self.image_size = image_size
        self.resize = resize
        self.workers = workers

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: Any) -> Any:
        """An integer decodes one example, ``(uint8 image, label)``; a boolean mask, an index
        tensor (or list) or a slice gives the ``ImageFiles`` of those rows, in that order."""
        scalar = hasattr(index, "__index__") and not isinstance(index, (Tensor, bool))
        if scalar or (isinstance(index, Tensor) and index.dim() == 0):
            i = int(index)
            return read_image(self.paths[i], self.image_size, self.resize), int(self.labels[i])
        rows = (
            torch.arange(len(self))[index] if isinstance(index, slice) else torch.as_tensor(index)
        )
        if rows.dtype == torch.bool:
            if rows.shape != self.labels.shape:
                raise IndexError(f"a mask of shape {tuple(rows.shape)} for {len(self)} files")
            rows = torch.nonzero(rows).flatten()
        rows = rows.long().reshape(-1)
        picked = rows.tolist()
        return ImageFiles(
            [self.paths[i] for i in picked],
            self.labels[rows],
            self.image_size,
            self.resize,
            self.workers,
        )

    def relabelled(self, labels: Tensor) -> ImageFiles:
        """The same files with other labels (a coarse relabelling)."""
        return ImageFiles(self.paths, labels, self.image_size, self.resize, self.workers)

    def decoded_gib(self) -> float:
        """The size of these images once decoded to uint8, in GiB."""
        return len(self) * 3 * self.image_size**2 / 2**30


class _Rows(Dataset):
    """Decoding worker's view: ``(image or None, error)`` per row, so the main process can name
    a file that fails in a one-line error instead of a worker traceback."""

    def __init__(self, files: ImageFiles) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Any, str]:
        path = self.files.paths[i]
        try:
            return read_image(path, self.files.image_size, self.files.resize), ""
        except Exception as err:  # noqa: BLE001 - any decoding failure is reported with the file
            return None, f"{path}: {type(err).__name__}: {err}"


def _collate(items):
    failed = [error for _, error in items if error]
    if failed:
        return None, failed
    return torch.stack([x for x, _ in items]), []


def batches(files: ImageFiles, batch_size: int = 256, pin: bool = False):
    """Iterate the uint8 image batches of ``files`` in order, decoded by ``files.workers``
    DataLoader workers (prefetching two batches each; in pinned memory with ``pin``, for
    batches copied to a GPU one at a time: never for batches that are kept).

    Raises:
        ValueError: A file could not be decoded (the first one is named).
    """
    workers = files.workers
    loader = DataLoader(
        _Rows(files),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin,
        prefetch_factor=2 if workers > 0 else None,
        persistent_workers=False,
    )
    for images, failed in loader:
        if failed:
            raise ValueError(
                f"unreadable image {failed[0]}"
                + (f" (and {len(failed) - 1} more in its batch)" if len(failed) > 1 else "")
            )
        _DECODED[0] += len(images)
        yield images


def _decode_rows(files: ImageFiles, rows: Tensor) -> Tensor:
    part = files[rows]
    if len(part) == 0:
        return torch.empty((0, 3, files.image_size, files.image_size), dtype=torch.uint8)
    return torch.cat(list(batches(part)))


def decode(files: ImageFiles) -> tuple[Tensor, Tensor]:
    """``(uint8 images, labels)`` of every row of ``files``, decoded once.

    Under ``torchrun`` each rank decodes its strided share of the rows and the shares are
    gathered on every rank, so each file is read by exactly one process.
    """
    images = distributed.gather_rows(
        lambda rows: _decode_rows(files, rows), torch.arange(len(files))
    )
    return images, files.labels.clone()


def rows(dataset: Dataset, *, name: str = "dataset") -> tuple[Any, Tensor]:
    """``(images, labels)`` of a data set for splitting by label: an ``ImageFiles`` stays
    undecoded (indexing it with a mask gives its subset), anything else becomes tensors."""
    if isinstance(dataset, ImageFiles):
        if len(dataset) == 0:
            raise ValueError(f"the {name} set is empty")
        return dataset, dataset.labels
    from .tensors import to_tensors

    return to_tensors(dataset, name=name)


def subset(images: Any, labels: Tensor, index: Tensor) -> Dataset:
    """The rows ``index`` (a mask or indices) of ``(images, labels)`` as a data set: an
    ``ImageFiles`` for files, a ``TensorDataset`` for tensors."""
    if isinstance(images, ImageFiles):
        return images[index]
    return TensorDataset(images[index], labels[index])


def sample(dataset: Dataset | None, size: int | None, seed: int = 0) -> Dataset | None:
    """At most ``size`` rows of ``dataset``, a seeded draw kept in the data set's order
    (``size=None``: all of it). Files stay undecoded."""
    if dataset is None or size is None or len(dataset) <= size:
        return dataset
    keep = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]
    keep = keep.sort().values
    if isinstance(dataset, ImageFiles):
        return dataset[keep]
    from .tensors import to_tensors

    images, labels = to_tensors(dataset)
    return TensorDataset(images[keep], labels[keep])


def materialise(dataset: Dataset | None) -> Dataset | None:
    """An ``ImageFiles`` decoded into a ``TensorDataset`` (once); anything else as it is."""
    if isinstance(dataset, ImageFiles):
        return TensorDataset(*decode(dataset))
    return dataset


# The file path's defaults (famr forget --eval-sample / --retain-limit): enough images for an
# accuracy within about +-2 points (95 %) per split, and a retain set that fits in memory at
# 224 px (10,000 images = 1.4 GiB as uint8), whatever the size of the tree.
EVAL_SAMPLE = 2000
RETAIN_LIMIT = 10000


# The evaluation sample's own seed: a draw independent of the methods' retain buffers (which
# use the run's seed, 0 by default), so that retain accuracy is not read on the buffer itself
# (the two overlap only by chance; an image in both is decoded for each).
EVAL_SEED = 7919


def evaluation_sets(
    splits: Any, size: int | None, seed: int = EVAL_SEED
) -> dict[str, Dataset | None]:
    """The request's evaluation splits with at most ``size`` images each (a seeded sample,
    :func:`sample`), except the forget set, which is always scored whole."""
    sets = splits.evaluation_sets()
    return {
        name: dataset if name == "forget" else sample(dataset, size, seed)
        for name, dataset in sets.items()
    }
