"""l1-sparse: fine-tune on the retain set with an l1 penalty decaying linearly to zero."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import OptimConfig, check_positive
from ..loop import Streams, optimise, select_parameters
from ..losses import cross_entropy
from ..parts import EachStep
from . import MethodData, register_method


@dataclass
class L1SparseConfig(OptimConfig):
    """Attributes:
    l1: Initial weight gamma of ``gamma_t * ||theta||_1``; it decays linearly to 0 over the run.
    """

    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 128
    batchnorm: str = "train"
    l1: float = 5e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("l1", self.l1, allow_zero=True)


@register_method(
    "l1_sparse",
    config=L1SparseConfig,
    needs=("retain",),
    paper="Jia et al. Model Sparsity Can Simplify Machine Unlearning. NeurIPS 2023",
)
def l1_sparse(model, data: MethodData, cfg: L1SparseConfig, *, device, progress=None):
    """CE(retain) + gamma_t ||theta||_1 with gamma_t = l1 * (1 - t / T)."""
    params = [p for _, p in select_parameters(model, cfg.params)]
    schedule = {"gamma": cfg.l1}

    def decay(step: int, total: int) -> None:
        schedule["gamma"] = cfg.l1 * (1.0 - step / total)

    def objective(batch):
        images, labels = batch["retain"]
        ce = cross_entropy(model(images), labels)
        l1 = sum(p.abs().sum() for p in params)
        return {
            "loss": ce + schedule["gamma"] * l1,
            "retain_cross_entropy": ce,
            "l1_norm": l1.detach(),
            "l1_weight": torch.tensor(schedule["gamma"]),
        }

    streams = Streams("retain", data.batches("retain", cfg))
    return optimise(
        model, objective, streams, cfg, device=device, progress=progress, parts=[EachStep(decay)]
    )
