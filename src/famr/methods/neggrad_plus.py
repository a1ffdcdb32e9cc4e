"""NegGrad+: descend on the retain set while ascending on the forget set, with the l2 anchor."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import OptimConfig, check_positive
from ..loop import Streams
from ..losses import cross_entropy
from . import MethodData, optimise_anchored, register_method


@dataclass
class NegGradPlusConfig(OptimConfig):
    """Attributes:
    alpha: Weight of the retain term; the forget term gets ``1 - alpha``.
    lam: Strength of the same l2 weight anchor as FAMR.
    """

    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 64
    grad_clip: float | None = 5.0
    alpha: float = 0.9
    lam: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha!r} is not valid; it must lie in [0, 1]")
        check_positive("lam", self.lam, allow_zero=True)


@register_method(
    "neggrad_plus",
    config=NegGradPlusConfig,
    needs=("forget", "retain"),
    paper="Kurmanji et al. Towards Unbounded Machine Unlearning (SCRUB paper, NegGrad+). NeurIPS 2023",
)
def neggrad_plus(model, data: MethodData, cfg: NegGradPlusConfig, *, device, progress=None):
    """alpha * CE(retain) - (1 - alpha) * CE(forget) + (lam/2)||theta - theta_0||^2."""

    def objective(batch):
        forget_images, forget_labels = batch["forget"]
        retain_images, retain_labels = batch["retain"]
        forget_ce = cross_entropy(model(forget_images), forget_labels)
        retain_ce = cross_entropy(model(retain_images), retain_labels)
        loss = cfg.alpha * retain_ce - (1.0 - cfg.alpha) * forget_ce
        return {"loss": loss, "retain_cross_entropy": retain_ce, "forget_cross_entropy": forget_ce}

    streams = Streams(
        "forget", data.batches("forget", cfg), {"retain": data.batches("retain", cfg)}
    )
    return optimise_anchored(model, objective, streams, cfg, data, device=device, progress=progress)
