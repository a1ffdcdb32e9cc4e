"""KL to uniform on the forget set, unanchored: FAMR with lambda = 0 over every parameter.

The first stage of the NeurIPS 2023 Machine Unlearning Challenge winning entry; minimising
KL(u || p) = CE(u, p) - log K is the same optimisation as FAMR's uniform loss. It is FAMR
with ``lam = 0``: no anchor, so no certificate bound exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import register_method
from .famr import FamrHeadConfig, run_famr


@dataclass
class UniformKLConfig(FamrHeadConfig):
    """FAMR with lam = 0, uniform over all K classes, every parameter."""

    lam: float = 0.0
    target: str = "uniform"
    params: str = "all"
    optimizer: str = "sgd"
    lr: float = 1e-3
    epochs: int = 5


register_method(
    "uniform_kl",
    config=UniformKLConfig,
    paper="NeurIPS 2023 Machine Unlearning Challenge, winning entry (first stage: KL to uniform on forget)",
    summary="KL(uniform || p) on the forget set with no anchor (= FAMR with lam = 0, all parameters)",
)(run_famr)
