"""The front door: ``unlearn``, ``train``, ``evaluate``. Validate, copy, seed, time, dispatch."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from . import distributed
from .config import OptimConfig, TrainConfig, make_config
from .data.tensors import to_float, to_tensors
from .loop import Progress
from .methods import METHODS, MethodData
from .metrics import METRICS, SplitOutputs
from .metrics.gaps import gaps
from .registry import Entry
from .theory import certify
from .training import fit_cross_entropy


@dataclass
class Result:
    """The outcome of one unlearning (or training) run.

    Attributes:
        model: The new model (the input model is never modified).
        method: Method name.
        config: The config used, with every default filled in.
        history: Per-epoch records from the loop.
        seconds: Wall time of the method itself (data already on the device).
        certificate: For methods minimising the anchored FAMR objective, the deviation
            certificate (see :mod:`famr.theory`); ``None`` otherwise.
    """

    model: nn.Module
    method: str
    config: OptimConfig
    history: list[dict[str, float]]
    seconds: float
    certificate: dict[str, Any] | None = field(default=None)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device={device!r} is not valid: {err}") from None


def _check_finite(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise ValueError(f"the model's parameter {name!r} holds NaN or infinite values")


@torch.no_grad()
def num_outputs(model: nn.Module, sample: Tensor) -> int:
    """The number of classes K a classifier outputs (one forward pass in eval mode)."""
    was_training = model.training
    model.eval()
    k = int(model(to_float(sample[:1])).shape[1])
    model.train(was_training)
    return k


def _tensors_on(dataset: Dataset, name: str, device: torch.device) -> tuple[Tensor, Tensor]:
    images, labels = to_tensors(dataset, name=name)
    return images.to(device), labels.to(device)


def _check_labels(labels: Tensor, name: str, k: int) -> None:
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        raise ValueError(
            f"the {name} set has labels outside 0..{k - 1} (the model has {k} outputs)"
        )


def _method(method: str | Entry) -> Entry:
    return method if isinstance(method, Entry) else METHODS.get(method)


def _seeded_run(seed: int, device: torch.device, fn):
    # fork_rng keeps the caller's global RNG state untouched while the run seeds it.
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return out, time.perf_counter() - start


def unlearn(
    model: nn.Module,
    forget: Dataset,
    retain: Dataset | None = None,
    *,
    method: str | Entry = "famr",
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    forget_classes: Sequence[int] | None = None,
    anchor: nn.Module | None = None,
    holdout: Dataset | None = None,
    **config: Any,
) -> Result:
    """Remove what ``model`` learned from ``forget``.

    Args:
        model: A trained classifier returning logits ``(batch, K)``. Never modified.
        forget: Data set of ``(image, label)`` pairs to forget.
        retain: Data set of pairs to keep; required by methods that need it.
        method: A registered method name (see :func:`list_methods`) or its registry entry.
        device: Where to run (default: CUDA if available, else CPU).
        progress: Optional ``progress(step, total)`` callback.
        forget_classes: The classes removed entirely (FAMR's ``"retained"`` target spreads over
            the others). Default: the labels present in ``forget`` (right for class requests);
            pass ``[]`` (``Splits.forget_classes``) for sample forgetting, where every class stays.
        anchor: The l2 anchor point of anchored methods (``famr*``, ``neggrad_plus``), when it
            is not ``model`` itself: for a sequential request, pass the original model to
            anchor the second step to it (the certificate then bounds the distance from it).
            Same architecture as ``model``.
        holdout: Examples the model never trained on (a validation split), for methods that
            calibrate against unseen data (``famr_matched``).
        **config: Fields of the method's config dataclass; unknown keys raise ``ValueError``
            listing the valid ones.

    Returns:
        A :class:`Result` holding the new model, the config, history, time and certificate.

    Raises:
        ValueError: Unknown method or config key, bad values, missing retain data, empty
            data, labels outside the model's outputs, or non-finite model weights.
        famr.DivergenceError: The objective became NaN/inf during the run.
    """
    entry = _method(method)
    cfg = make_config(entry.meta["config"], config)
    if "retain" in entry.meta["needs"] and retain is None:
        raise ValueError(f"method {entry.name!r} needs retain data; pass retain=...")
    if "holdout" in entry.meta["needs"] and holdout is None:
        raise ValueError(
            f"method {entry.name!r} needs holdout data (examples the model never trained on); "
            "pass holdout=... (CLI: --holdout test)"
        )
    dev = resolve_device(device)
    _check_finite(model)
    work = copy.deepcopy(model).to(dev)
    forget_t = _tensors_on(forget, "forget", dev)
    k = num_outputs(work, forget_t[0])
    _check_labels(forget_t[1], "forget", k)
    retain_t = _tensors_on(retain, "retain", dev) if retain is not None else None
    if retain_t is not None:
        _check_labels(retain_t[1], "retain", k)
    if forget_classes is None:
        forget_classes = sorted(set(forget_t[1].tolist()))
    else:
        forget_classes = sorted({int(c) for c in forget_classes})
        if forget_classes:
            _check_labels(torch.tensor(forget_classes, dtype=torch.long), "forget_classes", k)
    anchor_state = None
    if anchor is not None:
        own = dict(work.named_parameters())
        anchor_state = {n: p.detach().to(dev) for n, p in anchor.named_parameters()}
        if set(own) != set(anchor_state) or any(own[n].shape != anchor_state[n].shape for n in own):
            raise ValueError("the anchor model's parameters do not match the model's")
        if not all(bool(v.isfinite().all()) for v in anchor_state.values()):
            raise ValueError("the anchor model has non-finite weights")
    holdout_t = None
    if holdout is not None:
        holdout_t = _tensors_on(holdout, "holdout", dev)
        _check_labels(holdout_t[1], "holdout", k)
    data = MethodData(forget_t, retain_t, k, forget_classes, anchor_state, holdout_t)
    wants_certificate = entry.meta["certificate"] and getattr(cfg, "certificate", True)
    original = copy.deepcopy(work) if wants_certificate else None
    history, seconds = _seeded_run(
        cfg.seed, dev, lambda: entry.obj(work, data, cfg, device=dev, progress=progress)
    )
    work.eval()
    certificate = None
    if original is not None:
        from .methods.famr import target_support

        start = time.perf_counter()
        checks = {}
        if retain_t is not None:  # output deviation on (a sample of) retained images
            keep = torch.randperm(
                len(retain_t[1]), generator=torch.Generator().manual_seed(cfg.seed)
            )[:2000]
            checks["retain"] = retain_t[0][keep.to(dev)]
        support = target_support(cfg, data)
        certificate = certify(
            original,
            work,
            forget_t[0],
            cfg.lam,
            support,
            k,
            check_images=checks,
            anchor=copy.deepcopy(anchor).to(dev) if anchor is not None else None,
        )
        certificate["seconds"] = time.perf_counter() - start
    return Result(work, entry.name, cfg, history, seconds, certificate)


def train(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    **config: Any,
) -> Result:
    """Train ``model`` (a copy of it) with cross-entropy on ``dataset``.

    Args:
        model: The classifier to train; never modified.
        dataset: Data set of ``(image, label)`` pairs.
        device: Where to run.
        progress: Optional ``progress(step, total)`` callback.
        **config: Fields of :class:`famr.TrainConfig`.

    Returns:
        A :class:`Result` with method ``"train"``.
    """
    cfg = make_config(TrainConfig, config)
    dev = resolve_device(device)
    work = copy.deepcopy(model).to(dev)
    data = _tensors_on(dataset, "training", dev)
    _check_labels(data[1], "training", num_outputs(work, data[0]))
    history, seconds = _seeded_run(
        cfg.seed, dev, lambda: fit_cross_entropy(work, data, cfg, device=dev, progress=progress)
    )
    work.eval()
    return Result(work, "train", cfg, history, seconds)


@torch.no_grad()
def predict(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> SplitOutputs:
    """The model's logits on ``dataset`` (eval mode, float32, on the CPU) with its labels."""
    dev = resolve_device(device)
    images, labels = to_tensors(dataset)
    was_training = model.training
    model.eval()

    def logits(part: Tensor) -> Tensor:
        chunks = [
            model(to_float(part[start : start + batch_size].to(dev))).float()
            for start in range(0, len(part), batch_size)
        ]
        return torch.cat(chunks)

    try:
        # under torchrun each rank predicts its share; every rank gets all the logits
        out = distributed.gather_rows(logits, images)
    finally:
        model.train(was_training)
    return SplitOutputs(out.cpu(), labels.cpu())


def choose_metrics(available: set[str], metrics: list[str] | None = None) -> list[Entry]:
    """The metric entries to compute given the available splits (all that fit, or ``metrics``)."""
    if metrics is None:
        return [e for e in METRICS if set(e.meta["splits"]) <= available]
    chosen = [METRICS.get(name) for name in metrics]
    for e in chosen:
        missing = sorted(set(e.meta["splits"]) - available)
        if missing:
            raise ValueError(f"metric {e.name!r} needs the split(s) {missing}")
    return chosen


def metrics_from_outputs(
    outputs: dict[str, SplitOutputs],
    metrics: list[str] | None = None,
    reference: dict[str, float] | None = None,
) -> dict[str, float]:
    """Compute metrics from precomputed model outputs per split (see :func:`evaluate`)."""
    results: dict[str, float] = {}
    for e in choose_metrics(set(outputs), metrics):
        value = e.obj(outputs)
        results.update(value if isinstance(value, dict) else {e.name: value})
    if reference is not None:
        results.update(gaps(results, reference))
    return results


def evaluate(
    model: nn.Module,
    *,
    forget: Dataset | None = None,
    retain: Dataset | None = None,
    test_retain: Dataset | None = None,
    test_forget: Dataset | None = None,
    metrics: list[str] | None = None,
    reference: dict[str, float] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 512,
) -> dict[str, float]:
    """Compute unlearning metrics of ``model`` on the given splits.

    Args:
        model: The classifier to evaluate (not modified).
        forget, retain, test_retain, test_forget: The evaluation splits; metrics whose splits
            are missing are skipped (or, when named in ``metrics``, raise).
        metrics: Metric names (default: every registered metric the splits allow).
        reference: Metrics of the reference (retrained) model; adds the gaps and ToW.
        device: Where to run the forward passes.
        batch_size: Evaluation batch size.

    Returns:
        ``{metric name: value}``; see ``famr.list_metrics()`` for directions.
    """
    given = {
        "forget": forget,
        "retain": retain,
        "test_retain": test_retain,
        "test_forget": test_forget,
    }
    available = {name for name, ds in given.items() if ds is not None}
    chosen = choose_metrics(available, metrics)
    needed = {s for e in chosen for s in e.meta["splits"]}
    dev = resolve_device(device)
    model_device = next(model.parameters()).device
    model = model if model_device == dev else copy.deepcopy(model).to(dev)
    outputs = {
        s: predict(model, given[s], device=dev, batch_size=batch_size) for s in sorted(needed)
    }
    return metrics_from_outputs(outputs, [e.name for e in chosen], reference)
