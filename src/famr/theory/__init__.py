"""FAMR's theory in code: the certificate (:mod:`.certificate`) and the second-order tools it
and the Newton-step methods use (:mod:`.curvature`). Derivations: docs/theory.md."""

from .certificate import (
    bounds_report,
    certify,
    deviation_certificate,
    head_logit_bound,
    mean_uniform_loss,
    output_deviation,
    parameter_distances,
    solve_head_exactly,
)
from .curvature import (
    conjugate_gradient,
    displacement,
    loss_hvp,
    mean_gradient,
    newton_step,
    step_agreement,
)

__all__ = [
    "bounds_report",
    "certify",
    "conjugate_gradient",
    "deviation_certificate",
    "displacement",
    "head_logit_bound",
    "loss_hvp",
    "mean_gradient",
    "mean_uniform_loss",
    "newton_step",
    "output_deviation",
    "parameter_distances",
    "solve_head_exactly",
    "step_agreement",
]
