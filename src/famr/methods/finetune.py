"""Fine-tune: keep training on the retain set and let catastrophic forgetting erase the rest."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import OptimConfig
from ..training import fit_cross_entropy
from . import MethodData, register_method


@dataclass
class FinetuneConfig(OptimConfig):
    """A few epochs of SGD on the retain set (Golatkar et al. 2020; SalUn's FT baseline)."""

    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 128
    batchnorm: str = "train"


@register_method(
    "finetune",
    config=FinetuneConfig,
    needs=("retain",),
    paper="Golatkar, Achille, Soatto. Eternal Sunshine of the Spotless Net. CVPR 2020 (fine-tune baseline)",
)
def finetune(model, data: MethodData, cfg: FinetuneConfig, *, device, progress=None):
    """Cross-entropy on the retain set, starting from the trained weights."""
    return fit_cross_entropy(
        model, data.retain, cfg, device=device, stream="retain", progress=progress
    )
