"""Forget specifications: what to forget, and the splits evaluated against a retrained model.

A spec (:class:`ClassForget`, :class:`SampleForget`, :class:`RandomForget`) validates itself
against the data, builds :class:`Splits`, and round-trips through ``to_dict`` /
:func:`forget_spec_from_dict` so that results and audit records can name it exactly.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from .files import ImageFiles, rows, subset

# what a request removes, as each spec's ``to_dict`` names it (``Splits.kind``)
REQUEST_KINDS = ("classes", "samples", "random", "concept", "style")


@dataclass
class Splits:
    """The data sets of one forgetting request.

    Attributes:
        forget: Training examples to forget.
        retain: Training examples to keep (everything else in the training set).
        test_retain: Test examples of the retained classes.
        test_forget: Test examples of the forgotten classes (``None`` when there are none).
        forget_classes: The classes forgotten entirely (empty for sample forgetting).
        forget_indices: Sorted indices of the forgotten examples in the training set.
        kind: What the request removes, as its spec's ``to_dict`` names it (``"classes"``,
            ``"samples"``, ``"random"``, ``"concept"``, ``"style"``); ``None`` when unknown.
            ``famr``'s ``auto`` recipe resolves from it (:mod:`famr.methods.famr_auto`).
    """

    forget: Dataset
    retain: Dataset
    test_retain: Dataset
    test_forget: Dataset | None
    forget_classes: list[int]
    forget_indices: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))
    kind: str | None = None

    def forget_indices_sha256(self) -> str:
        """The sha256 of the sorted forget-index list (see :func:`indices_sha256`)."""
        return indices_sha256(self.forget_indices)

    def evaluation_sets(self) -> dict[str, Dataset | None]:
        """The four evaluation splits by name, as ``famr.evaluate`` takes them."""
        return {
            "forget": self.forget,
            "retain": self.retain,
            "test_retain": self.test_retain,
            "test_forget": self.test_forget,
        }


def _integer(value: Any, what: str) -> int:
    """``value`` as an int when it is an integer type (Python, NumPy or a 0-d integer tensor).

    A float (even 3.0), a bool, a string ("3", "٣") or anything else is a ``ValueError``: an
    index that is not an integer is a mistake somewhere upstream, not something to round.
    """
    if isinstance(value, (bool, str, bytes)) or type(value).__name__ == "bool_":
        raise ValueError(f"{what} {value!r} is not an integer")
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        raise ValueError(f"{what} {value!r} is not an integer")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{what} {value!r} is not an integer") from None
    if abs(number) >= 2**62:  # beyond any data set, and beyond what a tensor index holds
        raise ValueError(f"{what} {number} is out of range")
    return number


def _integers(values: Any, what: str) -> tuple[int, ...]:
    """A sequence of integer ``values`` as ints (see :func:`_integer`); a string is refused
    whole rather than read as a sequence of digits."""
    zero_d = isinstance(values, torch.Tensor) and values.dim() == 0
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable) or zero_d:
        raise ValueError(f"{what}: {values!r} is not a sequence of integers")
    return tuple(_integer(v, what) for v in values)


def _subset(images, labels: torch.Tensor, mask: torch.Tensor):
    # tensors, or image files that stay undecoded (famr.data.files)
    return subset(images, labels, mask)


@dataclass(frozen=True)
class ClassForget:
    """Forget every training example of one or more whole classes.

    Attributes:
        classes: The class indices to forget.
    """

    classes: tuple[int, ...]

    def __init__(self, classes: int | Sequence[int]) -> None:
        scalar = hasattr(classes, "__index__") or isinstance(classes, (float, bool))
        values = (classes,) if scalar else classes
        object.__setattr__(self, "classes", _integers(values, "class index"))

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
        x, y = rows(train, name="training")
        tx, ty = rows(test, name="test")
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
            forget_indices=torch.nonzero(in_forget).flatten(),
            kind="classes",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in results and checkpoints."""
        return {"kind": "classes", "classes": list(self.classes)}


def indices_sha256(indices: torch.Tensor | Sequence[int]) -> str:
    """sha256 of the sorted indices written as little-endian int64 (the audit record's hash)."""
    values = torch.as_tensor(indices, dtype=torch.int64).flatten().sort().values
    return hashlib.sha256(values.numpy().astype("<i8").tobytes()).hexdigest()


def _sample_splits(
    indices: torch.Tensor, train: TensorDataset, test: TensorDataset, label: str, kind: str
) -> Splits:
    x, y = rows(train, name="training")
    tx, ty = rows(test, name="test")
    n = len(y)
    if indices.numel() == 0:
        raise ValueError(f"{label}: no example to forget; give at least one training index")
    bad = indices[(indices < 0) | (indices >= n)]
    if bad.numel():
        raise ValueError(f"{label}: index {int(bad[0])} is out of range; valid indices: 0..{n - 1}")
    unique, counts = torch.unique(indices, return_counts=True)
    if bool((counts > 1).any()):
        raise ValueError(f"{label}: index {int(unique[counts > 1][0])} is listed more than once")
    if len(unique) == n:
        raise ValueError(f"{label}: forgetting all {n} training examples leaves nothing to retain")
    in_forget = torch.zeros(n, dtype=torch.bool)
    in_forget[unique] = True
    return Splits(
        forget=_subset(x, y, in_forget),
        retain=_subset(x, y, ~in_forget),
        test_retain=tx if isinstance(tx, ImageFiles) else TensorDataset(tx, ty),
        test_forget=None,
        forget_classes=[],
        forget_indices=unique,
        kind=kind,
    )


@dataclass(frozen=True)
class SampleForget:
    """Forget chosen training examples, given by their indices in the training set.

    The test set is evaluated whole (no class is removed); every class stays a retained class,
    so FAMR's ``"retained"`` target is uniform over all K classes here.

    Attributes:
        indices: Training-set indices to forget (no duplicates, all in range).
    """

    indices: tuple[int, ...]

    def __init__(self, indices: Sequence[int]) -> None:
        object.__setattr__(self, "indices", _integers(indices, "forget index"))

    def split(self, train: TensorDataset, test: TensorDataset, num_classes: int) -> Splits:
        """The forget / retain / test splits (raises ``ValueError`` for bad indices)."""
        del num_classes
        return _sample_splits(
            torch.tensor(self.indices, dtype=torch.long),
            train,
            test,
            "sample forget spec",
            "samples",
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the indices themselves, sorted; audit records store only their hash)."""
        return {"kind": "samples", "indices": sorted(self.indices)}


@dataclass(frozen=True)
class RandomForget:
    """Forget a random fraction of the training set (the SalUn protocol's "random 10 %").

    Attributes:
        fraction: Share of the training examples to forget, in (0, 1).
        seed: Seed of the choice; the same seed and training set give the same examples.
    """

    fraction: float
    seed: int = 0

    def validate(self) -> None:
        """Raise ``ValueError`` for a fraction outside (0, 1) or a negative seed."""
        if not (isinstance(self.fraction, (int, float)) and math.isfinite(self.fraction)):
            raise ValueError(f"random fraction {self.fraction!r} is not a finite number")
        if not 0 < self.fraction < 1:
            raise ValueError(
                f"random fraction {self.fraction!r} is not valid; it must lie in (0, 1)"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"forget seed {self.seed!r} is not valid; it must be an integer >= 0")

    def indices(self, num_train: int) -> torch.Tensor:
        """The chosen training indices (sorted)."""
        self.validate()
        count = max(1, round(self.fraction * num_train))
        order = torch.randperm(num_train, generator=torch.Generator().manual_seed(self.seed))
        return order[:count].sort().values

    def split(self, train: TensorDataset, test: TensorDataset, num_classes: int) -> Splits:
        """The forget / retain / test splits of this request."""
        del num_classes
        n = len(rows(train, name="training")[1])
        return _sample_splits(self.indices(n), train, test, "random forget spec", "random")

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in results and checkpoints."""
        return {"kind": "random", "fraction": self.fraction, "seed": self.seed}


def forget_spec_from_dict(data: dict[str, Any]) -> ClassForget | SampleForget | RandomForget:
    """Rebuild a spec from its ``to_dict`` form (older records without ``kind`` are classes).
    Concept and style specs need the relabelled / stylised data: see
    :func:`famr.data.request.spec_from_record`."""
    if not isinstance(data, dict):
        raise ValueError(f"forget spec {data!r} is not a JSON object")
    kind = data.get("kind", "classes")
    try:
        if kind == "classes":
            return ClassForget(data["classes"])
        if kind == "samples":
            return SampleForget(data["indices"])
        if kind == "random":
            spec = RandomForget(data["fraction"], data.get("seed", 0))
            spec.validate()  # a string or a bool in a record is refused, never converted
            return spec
    except (KeyError, TypeError) as err:
        raise ValueError(f"forget spec {data!r} is malformed: {err}") from None
    raise ValueError(
        f"forget spec kind {kind!r} is not known; choose from classes, samples, random"
    )
