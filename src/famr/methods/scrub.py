"""SCRUB: a student (the model) distilled from the original teacher, alternating max steps on
the forget set (move away from the teacher) with min steps on the retain set (stay close, fit
the labels)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..config import OptimConfig, check_positive
from ..loop import Streams, optimise
from ..losses import cross_entropy, kl_from_reference
from . import MethodData, register_method


@dataclass
class ScrubConfig(OptimConfig):
    """Defaults from the SCRUB paper's CIFAR settings.

    Attributes:
        max_epochs: Epochs (of ``epochs``) that start with a max pass over the forget set.
        alpha: Weight of the retain distillation term in min steps.
        gamma: Weight of the retain cross-entropy in min steps.
        temperature: Distillation temperature T (KL on logits / T, scaled by T^2).
        retain_steps: Retain batches per epoch (``None``: a full pass).
        batchnorm: ``eval``: forget-only max passes would otherwise re-estimate BatchNorm
            statistics from one class.
        grad_clip: The max passes maximise an unbounded divergence from the teacher, and with
            BatchNorm in eval mode nothing bounds the activations: unclipped, the gradient
            norm grows exponentially from the teacher (a stationary point) and the objective
            became NaN within 21-41 steps on a CIFAR-10 ResNet-20 at lr 1e-4 to 5e-4. Clipping
            the global norm at 1 keeps those passes stable (the paper uses no clipping and
            BatchNorm in train mode: ``batchnorm=train grad_clip=none``).
    """

    epochs: int = 3
    max_epochs: int = 2
    lr: float = 5e-4
    weight_decay: float = 5e-4
    batch_size: int = 64
    alpha: float = 0.001
    gamma: float = 0.99
    temperature: float = 4.0
    retain_steps: int | None = None
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("alpha", "gamma"):
            check_positive(name, getattr(self, name), allow_zero=True)
        check_positive("temperature", self.temperature)
        if not (isinstance(self.max_epochs, int) and 0 <= self.max_epochs):
            raise ValueError(
                f"max_epochs={self.max_epochs!r} is not valid; it must be an integer >= 0"
            )


class _Phases:
    """One SCRUB epoch: a max pass over the forget set (early epochs only), then a min pass."""

    def __init__(self, forget, retain, cfg: ScrubConfig) -> None:
        self.forget, self.retain, self.cfg = forget, retain, cfg
        self.epoch = 0
        steps = len(retain)
        self.retain_steps = steps if cfg.retain_steps is None else min(steps, cfg.retain_steps)

    def total_steps(self, epochs: int) -> int:
        return sum(
            (len(self.forget) if e < self.cfg.max_epochs else 0) + self.retain_steps
            for e in range(epochs)
        )

    def __iter__(self):
        epoch, self.epoch = self.epoch, self.epoch + 1
        if epoch < self.cfg.max_epochs:
            for batch in self.forget:
                yield {"forget": batch}
        for i, batch in enumerate(self.retain):
            if i >= self.retain_steps:
                break
            yield {"retain": batch}


@register_method(
    "scrub",
    config=ScrubConfig,
    needs=("forget", "retain"),
    paper="Kurmanji, Triantafillou, Hayes, Triantafillou. Towards Unbounded Machine Unlearning. NeurIPS 2023",
)
def scrub(model, data: MethodData, cfg: ScrubConfig, *, device, progress=None):
    """Max: -KL(teacher || student) on forget. Min: gamma CE + alpha KL on retain."""
    teacher = copy.deepcopy(model).eval()
    t = cfg.temperature

    def distillation(logits, images):
        with torch.no_grad():
            reference = teacher(images)
        return kl_from_reference(logits / t, reference / t) * t * t

    def objective(batch):
        if "forget" in batch:
            images, _ = batch["forget"]
            kl = distillation(model(images), images)
            return {"loss": -kl, "forget_kl": kl}
        images, labels = batch["retain"]
        logits = model(images)
        kl = distillation(logits, images)
        ce = cross_entropy(logits, labels)
        return {
            "loss": cfg.gamma * ce + cfg.alpha * kl,
            "retain_kl": kl,
            "retain_cross_entropy": ce,
        }

    phases = _Phases(data.batches("forget", cfg), data.batches("retain", cfg), cfg)
    return optimise(
        model, objective, Streams("phases", phases), cfg, device=device, progress=progress
    )
