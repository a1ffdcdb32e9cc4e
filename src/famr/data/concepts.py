"""Concept (sub-class) and style requests.

**Concept.** :func:`coarsen` relabels a data set with coarse classes (groups of fine classes);
:class:`ConceptForget` forgets every training image of one fine class (the concept, e.g. "dog")
while its coarse class ("pets") keeps its other members ("cat"). The forgotten concept's test
images are ``test_forget``; everything else is ``test_retain``.

**Style.** :func:`sketch` renders images in one fixed, deterministic style (inverted Sobel edge
magnitude: dark strokes on white, like a pencil sketch); :func:`add_style` renders a seeded
fraction of the training, validation and test images in it; :class:`StyleForget` forgets the
stylised training images, evaluated on stylised (``test_forget``) vs natural (``test_retain``)
test images.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import TensorDataset

from . import ImageData
from .files import ImageFiles, rows
from .forget import Splits, _subset
from .tensors import to_tensors

# Documented coarse groupings (name -> fine class ids).
CIFAR10_COARSE = {
    "road vehicles": (1, 9),  # automobile, truck
    "air & sea": (0, 8),  # airplane, ship
    "pets": (3, 5),  # cat, dog
    "large animals": (4, 7),  # deer, horse
    "small animals": (2, 6),  # bird, frog
}
DIGITS_COARSE = {  # by shape, for tests on the embedded digits
    "loops": (0, 6, 8, 9),
    "strokes": (1, 4, 7),
    "curves": (2, 3, 5),
}


@dataclass
class CoarseData:
    """A data set relabelled with coarse classes, with the fine labels kept beside it."""

    data: ImageData
    fine_train: Tensor
    fine_validation: Tensor | None
    fine_test: Tensor
    fine_names: list[str]
    groups: dict[str, tuple[int, ...]]


def coarsen(data: ImageData, groups: dict[str, tuple[int, ...]]) -> CoarseData:
    """Relabel ``data`` with ``groups`` (coarse name -> fine classes; every fine class in
    exactly one group). Coarse class ids follow the order of ``groups``."""
    fine_ids = [c for members in groups.values() for c in members]
    if sorted(fine_ids) != list(range(data.num_classes)):
        raise ValueError(
            f"coarse groups must cover each of the {data.num_classes} classes exactly once; "
            f"got {sorted(fine_ids)}"
        )
    mapping = torch.empty(data.num_classes, dtype=torch.long)
    for coarse, members in enumerate(groups.values()):
        mapping[list(members)] = coarse

    def relabel(split):
        if split is None:
            return None, None
        x, y = rows(split)
        if isinstance(x, ImageFiles):  # relabelled without decoding
            return x.relabelled(mapping[y]), y
        return TensorDataset(x, mapping[y]), y

    train, fine_train = relabel(data.train)
    test, fine_test = relabel(data.test)
    validation, fine_validation = relabel(data.validation)
    coarse = replace(data, train=train, test=test, validation=validation, class_names=list(groups))
    return CoarseData(
        coarse, fine_train, fine_validation, fine_test, data.class_names, dict(groups)
    )


@dataclass(frozen=True)
class ConceptForget:
    """Forget one fine class (the concept) inside a coarse-labelled data set.

    Attributes:
        concept: The fine class id to forget.
        fine_train, fine_test: Fine labels of the coarse data's training and test images.
        name: Optional readable name for records.
    """

    concept: int
    fine_train: Tensor
    fine_test: Tensor
    name: str = ""

    def split(self, train: TensorDataset, test: TensorDataset, num_classes: int) -> Splits:
        x, y = rows(train, name="training")
        tx, ty = rows(test, name="test")
        in_forget = self.fine_train == self.concept
        in_test = self.fine_test == self.concept
        if not bool(in_forget.any()):
            raise ValueError(f"concept {self.concept} has no training image")
        concept_coarse = sorted(set(y[in_forget].tolist()))
        if bool((torch.isin(y[~in_forget], torch.tensor(concept_coarse))).sum() == 0):
            raise ValueError("the concept is a whole coarse class: use ClassForget instead")
        return Splits(
            forget=_subset(x, y, in_forget),
            retain=_subset(x, y, ~in_forget),
            test_retain=_subset(tx, ty, ~in_test),
            test_forget=_subset(tx, ty, in_test) if bool(in_test.any()) else None,
            forget_classes=[],  # the coarse class stays: only the concept goes
            forget_indices=torch.nonzero(in_forget).flatten(),
            kind="concept",
        )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "concept", "concept": self.concept, "name": self.name}


def sketch(images: Tensor) -> Tensor:
    """The fixed "sketch" style: inverted Sobel edge magnitude of the grey image, scaled per
    image to [0, 1], in every channel. uint8 in, uint8 out; float in, float out."""
    was_uint8 = images.dtype == torch.uint8
    x = images.float() / 255.0 if was_uint8 else images.float()
    grey = x.mean(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]).view(1, 1, 3, 3)
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, kx)
    gy = F.conv2d(padded, kx.transpose(2, 3))
    magnitude = (gx**2 + gy**2).sqrt()
    peak = magnitude.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    out = (1.0 - magnitude / peak).expand(-1, x.shape[1], -1, -1)
    return (out * 255.0).round().to(torch.uint8) if was_uint8 else out.contiguous()


@dataclass
class StyledData:
    """A data set with a fraction of its images rendered in the sketch style."""

    data: ImageData
    styled_train: Tensor
    styled_validation: Tensor | None
    styled_test: Tensor
    fraction: float
    seed: int


def add_style(data: ImageData, fraction: float, seed: int = 0) -> StyledData:
    """Render a seeded ``fraction`` of each split's images in the sketch style (labels kept)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"style fraction {fraction!r} is not valid; it must lie in (0, 1)")
    if isinstance(data.train, ImageFiles):
        raise ValueError(
            "--style renders images in memory, so it needs the tensor data path; pass "
            "--data-path tensors (the whole tree is decoded)"
        )
    generator = torch.Generator().manual_seed(seed)

    def render(split):
        if split is None:
            return None, None
        x, y = to_tensors(split)
        chosen = torch.rand(len(y), generator=generator) < fraction
        x = x.clone()
        x[chosen] = sketch(x[chosen])
        return TensorDataset(x, y), chosen

    train, styled_train = render(data.train)
    validation, styled_validation = render(data.validation)
    test, styled_test = render(data.test)
    styled = replace(data, train=train, validation=validation, test=test)
    return StyledData(styled, styled_train, styled_validation, styled_test, fraction, seed)


@dataclass(frozen=True)
class StyleForget:
    """Forget the stylised training images; evaluate stylised vs natural test images."""

    styled_train: Tensor
    styled_test: Tensor

    def split(self, train: TensorDataset, test: TensorDataset, num_classes: int) -> Splits:
        x, y = to_tensors(train, name="training")
        tx, ty = to_tensors(test, name="test")
        if not bool(self.styled_train.any()):
            raise ValueError("no stylised training image to forget")
        return Splits(
            forget=_subset(x, y, self.styled_train),
            retain=_subset(x, y, ~self.styled_train),
            test_retain=_subset(tx, ty, ~self.styled_test),
            test_forget=_subset(tx, ty, self.styled_test),
            forget_classes=[],
            forget_indices=torch.nonzero(self.styled_train).flatten(),
            kind="style",
        )

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "style", "style": "sketch", "count": int(self.styled_train.sum())}
