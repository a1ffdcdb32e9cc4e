"""Supervised cross-entropy fitting, shared by ``famr.train``, ``retrain`` and ``finetune``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .config import OptimConfig
from .data.tensors import TensorBatches, augmentation
from .loop import Progress, Streams, optimise
from .losses import cross_entropy


def fit_cross_entropy(
    model: nn.Module,
    data: tuple[Tensor, Tensor],
    cfg: OptimConfig,
    *,
    device: torch.device,
    stream: str = "train",
    progress: Progress | None = None,
) -> list[dict[str, float]]:
    """Minimise cross-entropy of ``model`` on ``(images, labels)`` with loop options ``cfg``.

    Returns:
        The per-epoch history (``cross_entropy``, ``distance``, ``lr``).
    """
    images, labels = data
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + 7)
    batches = TensorBatches(
        images, labels, cfg.batch_size, True, generator, augmentation(cfg.augment)
    )

    smoothing = float(getattr(cfg, "label_smoothing", 0.0))

    def objective(batch):
        x, y = batch[stream]
        loss = cross_entropy(model(x), y, smoothing)
        return {"loss": loss, "cross_entropy": loss}

    return optimise(
        model, objective, Streams(stream, batches), cfg, device=device, progress=progress
    )
