"""Random labels: train the forget set towards random wrong labels, and the retain set as usual."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import OptimConfig
from ..loop import Streams, optimise
from ..losses import cross_entropy
from ..parts import UpdateMask
from . import MethodData, register_method


def random_other_labels(labels: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """A uniformly random label different from each true label (never the true one)."""
    shift = torch.randint(1, num_classes, labels.shape, generator=generator).to(labels.device)
    return (labels + shift) % num_classes


@dataclass
class RandomLabelConfig(OptimConfig):
    """Relabelled forget batches plus retain batches, a few epochs (SalUn's RL)."""

    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 64
    batchnorm: str = "train"


def run_random_label(
    model, data: MethodData, cfg: RandomLabelConfig, *, device, progress=None, update_mask=None
):
    """CE(forget with fresh random other labels each batch) + CE(retain), optionally masked."""
    generator = torch.Generator().manual_seed(cfg.seed + 17)

    def objective(batch):
        forget_images, forget_labels = batch["forget"]
        retain_images, retain_labels = batch["retain"]
        wrong = random_other_labels(forget_labels, data.num_classes, generator)
        forget_ce = cross_entropy(model(forget_images), wrong)
        retain_ce = cross_entropy(model(retain_images), retain_labels)
        return {
            "loss": forget_ce + retain_ce,
            "forget_cross_entropy": forget_ce,
            "retain_cross_entropy": retain_ce,
        }

    streams = Streams(
        "forget", data.batches("forget", cfg), {"retain": data.batches("retain", cfg)}
    )
    parts = [] if update_mask is None else [UpdateMask(update_mask)]
    return optimise(model, objective, streams, cfg, device=device, parts=parts, progress=progress)


@register_method(
    "random_label",
    config=RandomLabelConfig,
    needs=("forget", "retain"),
    paper="Golatkar et al. CVPR 2020; Fan et al. SalUn, ICLR 2024 (RL baseline)",
)
def random_label(model, data: MethodData, cfg: RandomLabelConfig, *, device, progress=None):
    """CE(forget with fresh random other labels each batch) + CE(retain)."""
    return run_random_label(model, data, cfg, device=device, progress=progress)
