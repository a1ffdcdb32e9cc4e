"""Selective Synaptic Dampening: shrink the weights far more important to the forget set than
to the training data as a whole. One shot, no training."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import OptimConfig, check_positive
from ..loop import select_parameters
from ..losses import cross_entropy
from . import MethodData, register_method


@dataclass
class SSDConfig(OptimConfig):
    """Defaults from the paper (alpha = 10, lambda = 1).

    Attributes:
        alpha: Selection weighting: a weight is selected when I_forget > alpha * I_all.
        dampening: lambda: a selected weight is multiplied by min(lambda I_all / I_forget, 1).
        importance_samples: Images of forget + retain the importance I_all is estimated on
            (``None``: all of them).
    """

    epochs: int = 1
    batch_size: int = 128
    alpha: float = 10.0
    dampening: float = 1.0
    importance_samples: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("alpha", self.alpha)
        check_positive("dampening", self.dampening)


def importances(model, names, batches) -> dict[str, torch.Tensor]:
    """Mean over batches of the squared gradient of the batch-mean cross-entropy (diagonal Fisher)."""
    params = dict(model.named_parameters())
    out = {n: torch.zeros_like(params[n]) for n in names}
    count = 0
    for images, labels in batches:
        grads = torch.autograd.grad(
            cross_entropy(model(images), labels), [params[n] for n in names]
        )
        for n, g in zip(names, grads, strict=True):
            out[n].add_(g.pow(2))
        count += 1
    return {n: v / max(1, count) for n, v in out.items()}


@register_method(
    "ssd",
    config=SSDConfig,
    needs=("forget", "retain"),
    paper="Foster, Schoepf, Brintrup. Fast Machine Unlearning Without Retraining Through Selective "
    "Synaptic Dampening. AAAI 2024",
)
def ssd(model, data: MethodData, cfg: SSDConfig, *, device, progress=None):
    """theta_i <- theta_i * min(lambda I_all,i / I_forget,i, 1) where I_forget,i > alpha I_all,i."""
    model.eval()
    names = [n for n, _ in select_parameters(model, cfg.params)]
    images = torch.cat([data.forget[0], data.retain[0]])
    labels = torch.cat([data.forget[1], data.retain[1]])
    if cfg.importance_samples is not None and cfg.importance_samples < len(labels):
        keep = torch.randperm(len(labels), generator=torch.Generator().manual_seed(cfg.seed))
        keep = keep[: cfg.importance_samples].to(labels.device)
        images, labels = images[keep], labels[keep]
    everything = MethodData((images, labels), None, data.num_classes, data.forget_classes)
    all_importance = importances(model, names, everything.batches("forget", cfg, shuffle=False))
    forget_importance = importances(model, names, data.batches("forget", cfg, shuffle=False))
    params = dict(model.named_parameters())
    selected = 0
    distance_sq = 0.0
    with torch.no_grad():
        for n in names:
            chosen = forget_importance[n] > cfg.alpha * all_importance[n]
            factor = (
                cfg.dampening * all_importance[n] / forget_importance[n].clamp_min(1e-30)
            ).clamp(max=1.0)
            new = torch.where(chosen, params[n] * factor, params[n])
            distance_sq += float((new - params[n]).double().pow(2).sum())
            params[n].copy_(new)
            selected += int(chosen.sum())
    if progress is not None:
        progress(1, 1)
    return [{"epoch": 1, "selected": float(selected), "distance": distance_sq**0.5}]
