"""Forget specifications: what to forget, and the splits evaluated against a retrained model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import TensorDataset

from .tensors import to_tensors


@dataclass
class Splits:
    """The data sets of one forgetting request.

    Attributes:
        forget: Training examples to forget.
        retain: Training examples to keep (everything else in the training set).
        test_retain: Test examples of the retained classes.
        test_forget: Test examples of the forgotten classes (``None`` when there are none).
        forget_classes: The forgotten class indices.
    """

    forget: TensorDataset
    retain: TensorDataset
    test_retain: TensorDataset
    test_forget: TensorDataset | None
    forget_classes: list[int]

    def evaluation_sets(self) -> dict[str, TensorDataset | None]:
        """The four evaluation splits by name, as ``famr.evaluate`` takes them."""
        return {
            "forget": self.forget,
            "retain": self.retain,
            "test_retain": self.test_retain,
            "test_forget": self.test_forget,
        }


def _subset(images: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> TensorDataset:
    return TensorDataset(images[mask], labels[mask])


@dataclass(frozen=True)
class ClassForget:
    """Forget every training example of one or more whole classes.

    Attributes:
        classes: The class indices to forget.
    """

    classes: tuple[int, ...]

    def __init__(self, classes: int | Sequence[int]) -> None:
        values = (classes,) if isinstance(classes, int) else tuple(classes)
        object.__setattr__(self, "classes", tuple(int(c) for c in values))

    def validate(self, num_classes: int) -> None:
        """Raise ``ValueError`` for an empty, duplicated, out-of-range or all-class request."""
        if not self.classes:
            raise ValueError("no class to forget; give at least one class index")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"duplicate class index in {list(self.classes)}")
        bad = [c for c in self.classes if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"unknown class id {bad[0]}; valid class ids: 0..{num_classes - 1}")
        if len(set(self.classes)) == num_classes:
            raise ValueError(
                f"forgetting all {num_classes} classes leaves nothing to retain; "
                "forget at most num_classes - 1 classes"
            )

    def split(self, train: TensorDataset, test: TensorDataset, num_classes: int) -> Splits:
        """The forget / retain / test splits of this request.

        Raises:
            ValueError: The request is invalid or selects no training example.
        """
        self.validate(num_classes)
        x, y = to_tensors(train, name="training")
        tx, ty = to_tensors(test, name="test")
        chosen = torch.tensor(self.classes)
        in_forget = torch.isin(y, chosen)
        if not bool(in_forget.any()):
            raise ValueError(
                f"the forget set is empty: no training example has class {list(self.classes)}"
            )
        in_test_forget = torch.isin(ty, chosen)
        return Splits(
            forget=_subset(x, y, in_forget),
            retain=_subset(x, y, ~in_forget),
            test_retain=_subset(tx, ty, ~in_test_forget),
            test_forget=_subset(tx, ty, in_test_forget) if bool(in_test_forget.any()) else None,
            forget_classes=sorted(self.classes),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in results and checkpoints."""
        return {"classes": list(self.classes)}
