"""The held-out stopping rule of famr's ``quantile`` recipe: stop when the forgotten examples
look like examples the model never saw.

For a random share of the training set, a model retrained without those examples still
classifies most of them correctly (they resemble the rest of their class): the retrained model
treats them like held-out data, not like noise. Pushing them all the way to the uniform
prediction over-forgets, and makes them stand out to a membership attack. The rule
(:func:`until_held_out_level`) measures the forget set's true-label statistic (mean confidence,
or accuracy) during the run and stops at the first check where it has fallen to the held-out
examples' level under the original model. It uses the original model and held-out data only,
never a retrained model.

``famr_matched``, the head-only method this rule was first written for, is retired (see
:mod:`famr.methods.famr_presets`): the quantile recipe, which moves every parameter toward
per-example targets, supersedes it on every request it was measured on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import check_choice, check_positive
from ..data.tensors import to_float
from ..parts import StopWhen
from . import MethodData, optimise_anchored
from .famr import FamrHeadConfig

STATISTICS = ("confidence", "accuracy")


@dataclass
class FamrMatchedConfig(FamrHeadConfig):
    """FAMR with the held-out confidence stopping rule.

    Attributes:
        target: Uniform over all K classes (for sample requests every class is retained).
        epochs: An upper limit: the rule usually stops the run much earlier.
        check_every: Steps between two checks of the rule (each check is one forward pass over
            the forget set, or over its cached features for head-only runs).
        statistic: What the rule compares: ``"confidence"``, the mean softmax probability of
            the true label, or ``"accuracy"``, the share classified correctly. A run that lowers
            every example's confidence a little reaches the held-out confidence while still
            classifying the forget set as well as before; matching the accuracy asks for the
            forget set to be recognised only as often as unseen data.
        margin: Stop once the forget statistic is at most the held-out one plus this (a
            probability or a fraction; 0 = exactly the held-out level).
    """

    target: str = "uniform"
    epochs: int = 50
    lr: float = 1e-3
    check_every: int = 1
    statistic: str = "confidence"
    margin: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.check_every, int) and self.check_every >= 1):
            raise ValueError(
                f"check_every={self.check_every!r} is not valid; it must be an integer >= 1"
            )
        check_positive("margin", self.margin, allow_zero=True)
        check_choice("statistic", self.statistic, STATISTICS)


@torch.no_grad()
def true_label_outputs(
    model: nn.Module, images: Tensor, labels: Tensor, batch: int = 512
) -> tuple[Tensor, Tensor]:
    """Each example's softmax probability of its true label and whether its top prediction is
    the true label (eval mode, float32, on the CPU; each module's own train/eval flag is
    restored afterwards, so BatchNorm kept in eval by the loop stays so)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    confidences, correct = [], []
    try:
        for start in range(0, len(labels), batch):
            p = model(to_float(images[start : start + batch])).float().softmax(dim=1)
            y = labels[start : start + batch]
            confidences.append(p.gather(1, y.view(-1, 1)).squeeze(1).cpu())
            correct.append((p.argmax(dim=1) == y).cpu())
    finally:
        for module, flag in flags:
            module.training = flag
    return torch.cat(confidences), torch.cat(correct)


def true_label_statistic(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    batch: int = 512,
    statistic: str = "confidence",
) -> float:
    """Mean softmax probability of the true label, or with ``statistic="accuracy"`` the share
    of examples whose top prediction is the true label (see :func:`true_label_outputs`)."""
    check_choice("statistic", statistic, STATISTICS)
    confidences, correct = true_label_outputs(model, images, labels, batch)
    chosen = correct.float() if statistic == "accuracy" else confidences
    return float(chosen.double().sum()) / len(labels)


def until_held_out_level(
    model, data: MethodData, level: float, cfg: FamrMatchedConfig, prepare, *, device, progress
):
    """One anchored optimisation run under the held-out stopping rule.

    ``prepare()`` returns the run's ``(objective, streams)``; it is called only when the run
    starts, so a method's set-up (a retain buffer, per-example targets) is skipped when the
    forget set already starts at or below ``level`` and nothing runs. During the run the forget
    set's true-label statistic is measured every ``cfg.check_every`` steps and the run ends once
    it is at most ``level``. The last history record gets the held-out level and the forget
    set's levels at the start and at the end.
    """
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
    trace: list[float] = []

    def stop(step: int) -> bool:
        if step % cfg.check_every:
            return False
        trace.append(true_label_statistic(model, forget_x, forget_y, statistic=cfg.statistic))
        return trace[-1] <= level

    objective, streams = prepare()
    history = optimise_anchored(
        model,
        objective,
        streams,
        cfg,
        data,
        device=device,
        progress=progress,
        parts=[StopWhen(stop)],
    )
    if history:
        history[-1]["holdout_level"] = level
        history[-1]["forget_level"] = trace[-1] if trace else start_level
        history[-1]["forget_level_start"] = start_level
    return history
