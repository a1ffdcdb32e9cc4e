"""The retain-buffer anchor of famr's ``quantile`` recipe, and its config's options.

For a random share of the training set, what separates a forgotten example from an unseen one
is memorisation, and memorisation lives in the whole network, not in the classifier head. The
quantile recipe (:mod:`famr.methods.famr_quantile`) lets every parameter move and keeps the
retained behaviour in place with :func:`retain_term` (``famr_retain``'s KL anchor on a retain
buffer, or the buffer's labels), under the held-out stopping rule of
:mod:`famr.methods.famr_matched`.

``famr_matched_retain``, the method that pushed the forget set to the uniform prediction under
this anchor, is retired (see :mod:`famr.methods.famr_presets`): the quantile recipe's
per-example targets supersede it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import check_choice
from ..losses import cross_entropy, kl_from_reference
from .famr_matched import FamrMatchedConfig
from .famr_retain import FamrRetainConfig

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
