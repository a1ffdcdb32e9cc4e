"""FAMR with a function-space anchor on a small retain buffer.

    min_theta  mean_{D_f} CE(u, p_theta)  +  beta * mean_{B_r} KL(p_theta0 || p_theta)
               + (lam/2) ||theta - theta_0||^2

The KL term anchors the model's *outputs* on retained images to the original model's, which
the weight anchor alone cannot: a small weight change can still shift every logit.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch

from ..config import check_positive
from ..loop import Streams
from ..losses import kl_from_reference, uniform_cross_entropy
from . import MethodData, buffer_rows, optimise_anchored, register_method
from .famr import PAPER, FamrConfig, target_support
from .head import cached_head_problem


@dataclass
class FamrRetainConfig(FamrConfig):
    """FAMR + output anchor.

    Attributes:
        beta: Weight of the retain KL term (10: with 1, ten epochs left the retained classes
            up to 8.6 points down on a digits validation split; with 10, 0.45 at most).
        buffer_size: Retain images kept in the buffer (a random subset, drawn with ``seed``).
        params: All parameters: the KL term keeps retained outputs in place, so the whole
            network may move.
    """

    epochs: int = 10
    params: str = "all"
    optimizer: str = "adam"
    lr: float = 3e-4
    lam: float = 0.1
    beta: float = 10.0
    buffer_size: int = 5000

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("beta", self.beta, allow_zero=True)
        if not (isinstance(self.buffer_size, int) and self.buffer_size >= 1):
            raise ValueError(
                f"buffer_size={self.buffer_size!r} is not valid; it must be an integer >= 1"
            )


def with_retain_buffer(data: MethodData, size: int, seed: int) -> MethodData:
    """``data`` with its retain set cut to a seeded random buffer of at most ``size`` examples."""
    if data.retain_is_buffer:  # drawn by famr.unlearn before the files were decoded
        return data
    images, labels = data.retain
    keep = buffer_rows(len(labels), size, seed).to(images.device)
    return replace(data, retain=(images[keep], labels[keep]))


@register_method(
    "famr_retain",
    config=FamrRetainConfig,
    needs=("forget", "retain"),
    paper=PAPER,
    certificate=False,
    summary="FAMR + KL(p_original || p) on a retain buffer: the output-space anchor",
)
def famr_retain(model, data: MethodData, cfg: FamrRetainConfig, *, device, progress=None):
    """FAMR plus a KL anchor to the original predictions on a retain buffer."""
    support = target_support(cfg, data)
    buffer = with_retain_buffer(data, cfg.buffer_size, cfg.seed)
    cached = cached_head_problem(model, buffer, cfg, retain=True) if cfg.cache_features else None
    if cached is not None:
        model, buffer, cfg = cached  # the head on frozen features of the forget set and buffer
    original = copy.deepcopy(model).eval()

    def objective(batch):
        forget_images, _ = batch["forget"]
        retain_images, _ = batch["retain"]
        uniform = uniform_cross_entropy(model(forget_images), support)
        with torch.no_grad():
            reference = original(retain_images)
        kl = kl_from_reference(model(retain_images), reference)
        return {"loss": uniform + cfg.beta * kl, "uniform_loss": uniform, "retain_kl": kl}

    streams = Streams(
        "forget", buffer.batches("forget", cfg), {"retain": buffer.batches("retain", cfg)}
    )
    return optimise_anchored(model, objective, streams, cfg, data, device=device, progress=progress)
