"""Whole-network FAMR with the retain-buffer output anchor and the held-out stopping rule.

For a random share of the training set, what separates a forgotten example from an unseen one
is memorisation, and memorisation lives in the whole network, not in the classifier head: a
head-only run (``famr_matched``) can lower every example's confidence a little but cannot
single out the memorised ones. This method lets every parameter move and keeps the retained
behaviour in place with the KL anchor of ``famr_retain`` on a retain buffer:

    min_theta  mean_{D_f} CE(u, p_theta)  +  beta * mean_{B_r} KL(p_theta0 || p_theta)
               + (lam/2) ||theta - theta_0||^2

and stops, like ``famr_matched``, at the first check where the forget set's mean true-label
confidence has fallen to the held-out examples' level under the original model. The rule uses
the original model and held-out data only, never a retrained model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..config import check_choice, check_positive
from ..loop import Streams
from ..losses import cross_entropy, kl_from_reference, uniform_cross_entropy
from . import MethodData, optimise_anchored, register_method
from .famr import PAPER, target_support
from .famr_matched import FamrMatchedConfig, true_label_statistic
from .famr_retain import with_retain_buffer

RETAIN_LOSSES = ("kl", "cross_entropy")


@dataclass
class FamrMatchedRetainConfig(FamrMatchedConfig):
    """Every parameter, the retain KL anchor, the held-out confidence stopping rule.

    Attributes:
        params: Every parameter by default (memorisation is not in the head alone).
        beta: Weight of the retain term.
        retain_loss: ``"kl"``: KL to the original model's predictions on the buffer (holds
            the outputs in place); ``"cross_entropy"``: the buffer's labels (keeps fitting the
            retained data, as retraining does).
        buffer_size: Retain images kept in the buffer (a seeded random subset).
        check_every: Steps between two checks of the rule; each check is one forward pass
            over the forget set, so checking every step would double the cost.
    """

    params: str = "all"
    optimizer: str = "adam"
    lr: float = 3e-4
    lam: float = 0.1
    epochs: int = 10
    beta: float = 10.0
    retain_loss: str = "kl"
    buffer_size: int = 5000
    check_every: int = 10
    cache_features: bool = False
    certificate: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("beta", self.beta, allow_zero=True)
        check_choice("retain_loss", self.retain_loss, RETAIN_LOSSES)
        if not (isinstance(self.buffer_size, int) and self.buffer_size >= 1):
            raise ValueError(
                f"buffer_size={self.buffer_size!r} is not valid; it must be an integer >= 1"
            )


@register_method(
    "famr_matched_retain",
    config=FamrMatchedRetainConfig,
    needs=("forget", "retain", "holdout"),
    paper=PAPER + "; stopping rule: held-out confidence matching (famr)",
    certificate=False,
    summary="whole-network FAMR + retain KL anchor, stopped at the held-out confidence (samples)",
)
def famr_matched_retain(
    model, data: MethodData, cfg: FamrMatchedRetainConfig, *, device, progress=None
):
    """Whole-network FAMR with a retain KL anchor until the forget set is as confident as
    held-out data."""
    level = true_label_statistic(model, *data.holdout, statistic=cfg.statistic) + cfg.margin
    forget_x, forget_y = data.forget
    start_level = true_label_statistic(model, forget_x, forget_y, statistic=cfg.statistic)
    if start_level <= level:  # already as unsure as on unseen data: nothing to do
        return [
            {
                "loss": 0.0,
                "stopped_at": 0,
                "holdout_level": level,
                "forget_level": start_level,
                "epoch": 0,
            }
        ]
    buffer = with_retain_buffer(data, cfg.buffer_size, cfg.seed)
    support = target_support(cfg, data)
    original = copy.deepcopy(model).eval() if cfg.retain_loss == "kl" else None
    trace: list[float] = []

    def stop(step: int) -> bool:
        if step % cfg.check_every:
            return False
        trace.append(true_label_statistic(model, forget_x, forget_y, statistic=cfg.statistic))
        return trace[-1] <= level

    def objective(batch):
        forget_images, _ = batch["forget"]
        retain_images, retain_labels = batch["retain"]
        uniform = uniform_cross_entropy(model(forget_images), support)
        logits = model(retain_images)
        if cfg.retain_loss == "kl":
            with torch.no_grad():
                reference = original(retain_images)
            retain = kl_from_reference(logits, reference)
        else:
            retain = cross_entropy(logits, retain_labels)
        return {"loss": uniform + cfg.beta * retain, "uniform_loss": uniform, "retain_loss": retain}

    streams = Streams(
        "forget", buffer.batches("forget", cfg), {"retain": buffer.batches("retain", cfg)}
    )
    history = optimise_anchored(
        model, objective, streams, cfg, data, device=device, progress=progress, stop=stop
    )
    if history:
        history[-1]["holdout_level"] = level
        history[-1]["forget_level"] = trace[-1] if trace else start_level
        history[-1]["forget_level_start"] = start_level
    return history
