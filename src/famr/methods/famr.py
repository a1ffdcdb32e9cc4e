"""FAMR without retain data, on the classifier head (the ``head`` recipe of the one ``famr``,
:mod:`famr.methods.famr_auto`), and its literal paper form ``famr_literal``.

    min_theta  mean_{x in D_f} CE(u, softmax f_theta(x))  +  (lam/2) ||theta - theta_0||^2

References:
    FAMR (Forget-Aligned Model Reconstruction); see ``docs/theory.md`` for the anchored
    optimum as a damped influence (Newton) step.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import OptimConfig, check_choice, check_positive
from ..loop import Streams
from ..losses import uniform_cross_entropy
from . import MethodData, optimise_anchored, register_method
from .head import cached_head_problem

TARGETS = ("uniform", "retained")
PAPER = "FAMR: Forget-Aligned Model Reconstruction (uniform-prediction loss + l2 weight anchor)"


@dataclass
class FamrHeadConfig(OptimConfig):
    """FAMR's no-retain configuration (``famr``'s ``head`` recipe).

    Attributes:
        lam: Anchor strength lambda of ``(lam/2)||theta - theta_0||^2`` (>= 0).
        target: ``"uniform"`` over all K classes (the paper) or ``"retained"``: uniform over
            the classes absent from the forget set, which drives the forgotten classes'
            probability to zero instead of to 1/K.
        params: Only the classifier head by default: an isotropic weight anchor does not stop
            a fully trainable network from shrinking every logit at once, which costs the
            retained classes (see the README's measurements).
        cache_features: With ``params="head"``, BatchNorm in eval mode and no augmentation,
            compute the frozen body's features once and optimise the head on them (same
            objective, one forward pass instead of one per step).
        certificate: Compute the deviation certificate after the run (``unlearn`` attaches it
            to the result; its cost, one forward pass over the forget set and the check
            images, is reported separately from the method's time).
    """

    epochs: int = 30
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 0.01
    params: str = "head"
    lam: float = 0.1
    target: str = "retained"
    cache_features: bool = True
    certificate: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive("lam", self.lam, allow_zero=True)
        check_choice("target", self.target, TARGETS)


@dataclass
class FamrLiteralConfig(FamrHeadConfig):
    """The paper's literal form: uniform over all K classes, every parameter, SGD + momentum."""

    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    params: str = "all"
    lam: float = 10.0
    target: str = "uniform"
    epochs: int = 10


def target_support(cfg: FamrHeadConfig, data: MethodData):
    """The uniform target's support mask (``None`` = all K classes)."""
    if cfg.target == "uniform":
        return None
    support = data.retained_classes()
    if not bool(support.any()):
        raise ValueError("target='retained' needs a forget set that leaves some class out")
    return support


def refuse_classless_request(cfg: FamrHeadConfig, data: MethodData) -> None:
    """FAMR without retain data, aimed at the retained classes, is for requests that remove
    whole classes. On a request that removes none (chosen samples, a concept, a style) its
    target becomes the uniform prediction over all K classes, and with nothing holding the
    rest of the data it forgot little while it cost the rest (digits, five images: test
    accuracy 99.6 -> 49.7 %). It is refused, with what to give instead."""
    if cfg.target == "retained" and not data.forget_classes and data.retain is None:
        raise ValueError(
            "this request removes no whole class (chosen samples, a concept or a style), and "
            "FAMR without retain data (famr's head recipe, famr_newton) is for class requests: "
            "use method='famr' with the retain set (retain=... or the request object, without "
            "recipe='head'; it then re-initialises and distills the last stage), or "
            "target='uniform' to push these examples to the uniform prediction knowingly"
        )


def run_famr(model, data: MethodData, cfg: FamrHeadConfig, *, device, progress=None):
    """Minimise the anchored uniform-prediction objective on the forget set (no retain data)."""
    refuse_classless_request(cfg, data)
    support = target_support(cfg, data)
    cached = cached_head_problem(model, data, cfg) if cfg.cache_features else None
    if cached is not None:
        model, data, cfg = cached  # the head on frozen features: same objective, far cheaper

    def objective(batch):
        images, _ = batch["forget"]
        loss = uniform_cross_entropy(model(images), support)
        return {"loss": loss, "uniform_loss": loss}

    streams = Streams("forget", data.batches("forget", cfg))
    return optimise_anchored(model, objective, streams, cfg, data, device=device, progress=progress)


register_method(
    "famr_literal",
    config=FamrLiteralConfig,
    paper=PAPER,
    certificate=True,
    summary="FAMR as written in the paper: all parameters, uniform over K classes, SGD, l2 anchor",
)(run_famr)
