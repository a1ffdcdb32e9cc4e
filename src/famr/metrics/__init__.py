"""Unlearning metrics: one registry, one file per family, each documenting its direction.

A metric is a plain function of the model's outputs on the evaluation splits
(``forget``, ``retain``, ``test_retain``, ``test_forget``) returning a float (or a dict of
floats). ``famr.evaluate`` runs the model once per split and calls every metric on the result.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..registry import Registry

METRICS: Registry = Registry("metric")
SPLITS = ("forget", "retain", "test_retain", "test_forget")


@dataclass
class SplitOutputs:
    """A model's logits on one split, with the true labels (float32 / int64, on the CPU)."""

    logits: Tensor
    labels: Tensor

    @property
    def probabilities(self) -> Tensor:
        return torch.softmax(self.logits.float(), dim=1)

    @property
    def true_label_confidence(self) -> Tensor:
        """Softmax probability of the true label, per example."""
        return self.probabilities.gather(1, self.labels[:, None]).squeeze(1)

    @property
    def correct(self) -> Tensor:
        return self.logits.argmax(dim=1) == self.labels


Outputs = dict[str, SplitOutputs]


def register_metric(name: str, *, splits: Sequence[str], direction: str, retrain: str) -> Callable:
    """Register a metric.

    Args:
        name: Registry key.
        splits: The splits it reads.
        direction: What its values mean (which way is "forgotten").
        retrain: What a model retrained without the forget set scores.
    """
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise ValueError(f"splits={bad} is not valid; choose from {SPLITS}")
    return METRICS.register(name, splits=tuple(splits), direction=direction, retrain=retrain)


def list_metrics() -> list[str]:
    """Registered metric names."""
    return METRICS.names()


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")


_discover()
