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

from ..config import check_choice
from ..loop import Streams
from ..losses import cross_entropy, kl_from_reference, uniform_cross_entropy
from . import MethodData, register_method
from .famr import PAPER, target_support
from .famr_matched import FamrMatchedConfig, true_label_statistic, until_held_out_level
from .famr_retain import FamrRetainConfig, with_retain_buffer

RETAIN_LOSSES = ("kl", "cross_entropy")


@dataclass
class FamrMatchedRetainConfig(FamrMatchedConfig, FamrRetainConfig):
    """Every parameter, the retain anchor (``beta``, ``buffer_size`` as in ``famr_retain``),
    the held-out confidence stopping rule.

    Attributes:
        params: Every parameter by default (memorisation is not in the head alone).
        retain_loss: ``"kl"``: KL to the original model's predictions on the buffer (holds
            the outputs in place); ``"cross_entropy"``: the buffer's labels (keeps fitting the
            retained data, as retraining does).
        check_every: Steps between two checks of the rule; each check is one forward pass
            over the forget set, so checking every step would double the cost.
    """

    params: str = "all"
    optimizer: str = "adam"
    lr: float = 3e-4
    lam: float = 0.1
    epochs: int = 10
    retain_loss: str = "kl"
    check_every: int = 10
    cache_features: bool = False
    certificate: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("retain_loss", self.retain_loss, RETAIN_LOSSES)
        if self.reset:  # a field of famr_retain's config that this method has no use for
            raise ValueError(
                "reset=True is not valid here: this method moves the trained weights toward "
                "the held-out level and never re-initialises them (reset is famr_retain's, and "
                "famr's last_stage recipe's)"
            )


def retain_term(logits, images, labels, original) -> torch.Tensor:
    """The retain anchor on one buffer batch: KL to ``original``'s predictions, or the labels'
    cross-entropy when ``original`` is ``None`` (``retain_loss="cross_entropy"``)."""
    if original is None:
        return cross_entropy(logits, labels)
    with torch.no_grad():
        reference = original(images)
    return kl_from_reference(logits, reference)


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
    support = target_support(cfg, data)

    def prepare():  # built only when the rule lets the run start
        buffer = with_retain_buffer(data, cfg.buffer_size, cfg.seed)
        original = copy.deepcopy(model).eval() if cfg.retain_loss == "kl" else None

        def objective(batch):
            forget_images, _ = batch["forget"]
            retain_images, retain_labels = batch["retain"]
            uniform = uniform_cross_entropy(model(forget_images), support)
            retain = retain_term(model(retain_images), retain_images, retain_labels, original)
            loss = uniform + cfg.beta * retain
            return {"loss": loss, "uniform_loss": uniform, "retain_loss": retain}

        streams = Streams(
            "forget", buffer.batches("forget", cfg), {"retain": buffer.batches("retain", cfg)}
        )
        return objective, streams

    return until_held_out_level(model, data, level, cfg, prepare, device=device, progress=progress)
