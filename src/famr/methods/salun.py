"""SalUn: random labels restricted to the weights most salient for the forget set.

Fixes the public code's defect: there the mask only zeroed gradients, so momentum and weight
decay still moved "frozen" weights. Here the loop's ``UpdateMask`` part (famr.parts) restores
them after every step (pinned by a test).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import check_positive
from ..loop import select_parameters
from ..losses import cross_entropy
from . import MethodData, register_method
from .random_label import RandomLabelConfig, run_random_label


@dataclass
class SalUnConfig(RandomLabelConfig):
    """Attributes:
    fraction: Share of the weights (by forget-gradient magnitude, over all updated
        parameters) that may move.
    """

    fraction: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("fraction", self.fraction)
        if self.fraction > 1:
            raise ValueError(f"fraction={self.fraction!r} is not valid; it must lie in (0, 1]")


def saliency_mask(model, data: MethodData, cfg: SalUnConfig) -> dict[str, torch.Tensor]:
    """True for the top ``fraction`` of weights by |gradient of CE on the forget set|."""
    chosen = select_parameters(model, cfg.params)
    model.eval()
    grads = {n: torch.zeros_like(p) for n, p in chosen}
    for images, labels in data.batches("forget", cfg, shuffle=False):
        model.zero_grad(set_to_none=True)
        cross_entropy(model(images), labels).backward()
        for n, p in chosen:
            grads[n].add_(p.grad.abs())
    model.zero_grad(set_to_none=True)
    flat = torch.cat([g.flatten() for g in grads.values()])
    k = max(1, int(round(cfg.fraction * flat.numel())))
    threshold = torch.topk(flat, k, sorted=True).values[-1]
    return {n: g >= threshold for n, g in grads.items()}


@register_method(
    "salun",
    config=SalUnConfig,
    needs=("forget", "retain"),
    paper="Fan et al. SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency. ICLR 2024",
)
def salun(model, data: MethodData, cfg: SalUnConfig, *, device, progress=None):
    """Random-label unlearning on the salient weights only; the rest never move."""
    mask = saliency_mask(model, data, cfg)
    return run_random_label(model, data, cfg, device=device, progress=progress, update_mask=mask)
