"""FAMR with a curvature-weighted anchor: the diagonal Fisher of a retain buffer.

    min_theta  mean_{x in D_f} CE(u, softmax f_theta(x))  +  (lam/2) sum_i w_i (theta_i - theta0_i)^2

with w the diagonal (empirical) Fisher information of the retain buffer, normalised to mean 1
(plus a floor of 1e-3, which keeps the objective strongly convex in the head case). Weights
that matter for the retained predictions are held firmly; weights they do not use may move
freely. With the Fisher as the metric, the anchored optimum is the second-order (influence
function) approximation of retraining on the retain data that the plain l2 anchor only
approximates isotropically.

Head only: the per-example Fisher of the classifier is exact and cheap on cached features,
g_{kj}(x) = (p_k(x) - [y = k]) phi_j(x), so F_W = mean_x g^2 and F_b = mean_x (p - e_y)^2.
The deviation certificate bounds the Fisher-weighted distance, not the Euclidean one, so no
Euclidean certificate is attached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import check_positive
from ..loop import Streams
from ..losses import uniform_cross_entropy
from . import MethodData, optimise_anchored, register_method
from .famr import PAPER, FamrHeadConfig, target_support
from .famr_retain import with_retain_buffer
from .head import cached_head_problem

FLOOR = 1e-3


@dataclass
class FamrFisherConfig(FamrHeadConfig):
    """FAMR with the diagonal-Fisher anchor (head only).

    Attributes:
        buffer_size: Retain images the Fisher is estimated on (a seeded random subset).
        certificate: Off: the bound holds in the Fisher norm (see the module docstring).
    """

    buffer_size: int = 5000
    certificate: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("buffer_size", self.buffer_size)


@torch.no_grad()
def head_fisher(head: torch.nn.Linear, features: torch.Tensor, labels: torch.Tensor):
    """Exact diagonal empirical Fisher of a linear classifier on ``features``."""
    p = head(features).float().softmax(dim=1)
    residual = p - torch.nn.functional.one_hot(labels, p.shape[1]).float()
    fisher = {"weight": (residual.pow(2).T @ features.float().pow(2)) / len(labels)}
    if head.bias is not None:
        fisher["bias"] = residual.pow(2).mean(dim=0)
    total = sum(v.sum() for v in fisher.values())
    count = sum(v.numel() for v in fisher.values())
    scale = (total / count).clamp_min(1e-12)
    return {k: v / scale + FLOOR for k, v in fisher.items()}


@register_method(
    "famr_fisher",
    config=FamrFisherConfig,
    needs=("forget", "retain"),
    paper=PAPER + "; diagonal-Fisher (EWC-style) anchor",
    summary="FAMR with the anchor weighted by the diagonal Fisher of a retain buffer (head)",
)
def famr_fisher(model, data: MethodData, cfg: FamrFisherConfig, *, device, progress=None):
    """FAMR with the l2 anchor weighted by the retain buffer's diagonal Fisher."""
    if cfg.params != "head":
        raise ValueError(
            f"params={cfg.params!r} is not valid for famr_fisher; it supports 'head' "
            "(the exact per-example Fisher of the classifier)"
        )
    support = target_support(cfg, data)
    buffer = with_retain_buffer(data, cfg.buffer_size, cfg.seed)
    cached = cached_head_problem(model, buffer, cfg, retain=True)
    if cached is None:
        raise ValueError(
            "famr_fisher needs the head-only fast path (the last nn.Linear as the final "
            "operation, BatchNorm in eval mode, no augmentation)"
        )
    head, buffer, cfg = cached
    weights = head_fisher(head, *buffer.retain)

    def objective(batch):
        images, _ = batch["forget"]
        loss = uniform_cross_entropy(head(images), support)
        return {"loss": loss, "uniform_loss": loss}

    streams = Streams("forget", buffer.batches("forget", cfg))
    return optimise_anchored(
        head,
        objective,
        streams,
        cfg,
        buffer,
        device=device,
        progress=progress,
        weights=weights,
    )
