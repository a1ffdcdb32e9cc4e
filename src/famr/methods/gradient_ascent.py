"""Gradient ascent: maximise the cross-entropy of the forget set."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import OptimConfig
from ..loop import Streams, optimise
from ..losses import cross_entropy
from . import MethodData, register_method


@dataclass
class GradientAscentConfig(OptimConfig):
    """Few, small steps: the objective is unbounded, so longer runs destroy the model."""

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    grad_clip: float | None = 5.0


@register_method(
    "gradient_ascent",
    config=GradientAscentConfig,
    paper="Thudi et al. Unrolling SGD. EuroS&P 2022; Graves et al. Amnesiac ML. AAAI 2021",
)
def gradient_ascent(model, data: MethodData, cfg: GradientAscentConfig, *, device, progress=None):
    """Minimise -CE(forget): push the forget labels' probability down."""

    def objective(batch):
        images, labels = batch["forget"]
        ce = cross_entropy(model(images), labels)
        return {"loss": -ce, "forget_cross_entropy": ce}

    streams = Streams("forget", data.batches("forget", cfg))
    return optimise(model, objective, streams, cfg, device=device, progress=progress)
