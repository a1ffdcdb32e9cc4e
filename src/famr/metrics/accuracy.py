"""Accuracy on each split, and UA = 100 - forget accuracy. All values in percent."""

from __future__ import annotations

from . import Outputs, register_metric


def accuracy(outputs: Outputs, split: str) -> float:
    """Percentage of examples of ``split`` whose arg-max prediction is the true label."""
    return 100.0 * float(outputs[split].correct.float().mean())


@register_metric(
    "forget_acc",
    splits=("forget",),
    direction="lower = more forgotten",
    retrain="~0 when whole classes are forgotten; close to test accuracy for random samples",
)
def forget_acc(outputs: Outputs) -> float:
    """Accuracy on the forget set (the training images being forgotten)."""
    return accuracy(outputs, "forget")


@register_metric(
    "retain_acc",
    splits=("retain",),
    direction="higher = better retention",
    retrain="the retrained model's training accuracy on the retain set",
)
def retain_acc(outputs: Outputs) -> float:
    """Accuracy on the retain set."""
    return accuracy(outputs, "retain")


@register_metric(
    "test_retain_acc",
    splits=("test_retain",),
    direction="higher = better generalisation on what is kept",
    retrain="the retrained model's test accuracy on the retained classes",
)
def test_retain_acc(outputs: Outputs) -> float:
    """Accuracy on test images of the retained classes."""
    return accuracy(outputs, "test_retain")


@register_metric(
    "test_forget_acc",
    splits=("test_forget",),
    direction="lower = the forgotten classes are no longer recognised",
    retrain="0 for forgotten classes (the model never saw them)",
)
def test_forget_acc(outputs: Outputs) -> float:
    """Accuracy on test images of the forgotten classes."""
    return accuracy(outputs, "test_forget")


@register_metric(
    "ua",
    splits=("forget",),
    direction="higher = more forgotten",
    retrain="~100 for class forgetting",
)
def unlearning_accuracy(outputs: Outputs) -> float:
    """Unlearning accuracy UA = 100 - forget accuracy (the literature's convention)."""
    return 100.0 - accuracy(outputs, "forget")
