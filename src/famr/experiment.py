"""Class-forgetting experiment: train, retrain, unlearn with every method, evaluate, compare.

This is the demo's and the benchmarks' pipeline. It returns plain data (metrics, per-class
accuracies, confidences); the CLI and the benchmark scripts write it out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from .api import Result, evaluate, metrics_from_outputs, predict, resolve_device, train, unlearn
from .config import config_dict
from .data import ClassForget, ImageData, Splits
from .loop import DivergenceError, Progress
from .methods import METHODS
from .metrics.gaps import gaps
from .models import create_model
from .theory import parameter_distances

ProgressFactory = Callable[[str], Progress | None]


@dataclass
class Experiment:
    """Everything a class-forgetting run produced.

    Attributes:
        results: The JSON-ready results: ``dataset``, ``arch``, ``forget``, ``runs``.
        models: The trained / unlearned models by run name.
        confidences: True-label confidences on the forget and test-forget sets, by run name.
    """

    results: dict[str, Any]
    models: dict[str, nn.Module] = field(default_factory=dict)
    confidences: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)


def _evaluate_run(
    model: nn.Module, splits: Splits, data: ImageData, device: torch.device, reference: dict | None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metrics, per-class test accuracy and confidences, from one forward pass per split."""
    named = splits.evaluation_sets()
    outputs = {k: predict(model, ds, device=device) for k, ds in named.items() if ds is not None}
    entry: dict[str, Any] = metrics_from_outputs(outputs, reference=reference)
    per_class = [0.0] * data.num_classes
    for split in ("test_retain", "test_forget"):
        if split in outputs:
            out = outputs[split]
            for k in out.labels.unique().tolist():
                per_class[k] = 100.0 * float(out.correct[out.labels == k].float().mean())
    entry["per_class_test_acc"] = per_class
    confidences = {
        k: outputs[k].true_label_confidence
        for k in ("forget", "test_forget", "test_retain")
        if k in outputs
    }
    return entry, confidences


def compare_methods(
    original: Result,
    retrained: Result,
    splits: Splits,
    data: ImageData,
    methods: dict[str, dict[str, Any]],
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: ProgressFactory | None = None,
    log: Callable[[str], None] | None = None,
    holdout: Dataset | None = None,
) -> Experiment:
    """Evaluate the original and retrained models, run every method, compare all to retraining.

    Args:
        original: The trained model (its ``seconds`` is the training time).
        retrained: The reference retrained without the forget set.
        splits: The request's splits.
        data: The data set (for class names and per-class accuracy).
        methods: ``{run name: config}``; a config may name its method with ``"method"``
            (default: the run name), so one method can appear under several configurations.
        seed: Seed of every run (unless a config sets one).
        device: Where to run.
        progress: ``progress(label)`` returns a ``(step, total)`` callback for that run.
        log: Optional ``log(message)`` called after each run.
        holdout: Examples the original never trained on (a validation split), for methods
            that calibrate against unseen data (``famr_matched``).

    Returns:
        An :class:`Experiment` whose ``runs`` hold metrics, gaps, ``seconds`` and ``time_ratio``.
    """
    dev = resolve_device(device)
    track = progress or (lambda label: None)
    experiment = Experiment(results={}, models={})
    runs: dict[str, dict[str, Any]] = {}

    def record(name: str, result: Result, reference: dict | None) -> dict[str, Any]:
        entry, confidences = _evaluate_run(result.model, splits, data, dev, reference)
        entry.update(
            method=result.method,
            seconds=result.seconds,
            config=config_dict(result.config),
            history=result.history,
        )
        if result.certificate is not None:
            entry["certificate"] = result.certificate
        experiment.models[name] = result.model
        experiment.confidences[name] = confidences
        runs[name] = entry
        if log is not None:
            log(
                f"{name}: "
                + ", ".join(
                    f"{k} {entry[k]:.2f}"
                    for k in ("forget_acc", "test_retain_acc", "mia_efficacy", "avg_gap", "seconds")
                    if k in entry
                )
            )
        return entry

    record("original", original, None)
    reference = record("retrain", retrained, None)
    reference_metrics = {k: v for k, v in reference.items() if isinstance(v, float)}
    for name in ("original", "retrain"):
        runs[name].update(gaps(runs[name], reference_metrics))
    for name, overrides in methods.items():
        config = dict(overrides)
        method = config.pop("method", name)
        try:
            result = unlearn(
                original.model,
                splits.forget,
                splits.retain,
                method=method,
                device=dev,
                progress=track(name),
                forget_classes=splits.forget_classes,
                holdout=holdout,
                **{"seed": seed, **config},
            )
        except DivergenceError as err:
            # a baseline that diverges is a result to report, not a reason to lose the others
            runs[name] = {"method": method, "config": config, "diverged": str(err)}
            if log is not None:
                log(f"{name}: diverged: {err}")
            continue
        record(name, result, reference_metrics)
    for entry in runs.values():
        if "seconds" in entry:
            entry["time_ratio"] = entry["seconds"] / runs["retrain"]["seconds"]
    experiment.results = {
        "dataset": data.name,
        "forget": {
            "classes": list(splits.forget_classes),
            "count": len(splits.forget),
            "indices_sha256": splits.forget_indices_sha256(),
        },
        "class_names": data.class_names,
        "seed": seed,
        "device": str(dev),
        "runs": runs,
    }
    return experiment


def run_class_forgetting(
    data: ImageData,
    classes: Sequence[int],
    *,
    arch: str,
    arch_args: dict[str, Any] | None = None,
    train_config: dict[str, Any] | None = None,
    methods: dict[str, dict[str, Any]] | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: ProgressFactory | None = None,
) -> Experiment:
    """Train, retrain without ``classes``, and compare every method in ``methods`` to retraining.

    Args:
        data: The data set.
        classes: Class indices to forget.
        arch: Architecture name; ``arch_args`` its extra arguments.
        train_config: :class:`famr.TrainConfig` fields for the original model and the
            retrained reference (the same schedule for both).
        methods: ``{run name: config}`` as in :func:`compare_methods` (default: every method
            but ``retrain`` and those that need held-out data, with its default config).
        seed: Seed of the original model's initialisation and of every run.
        device: Where to run.
        progress: ``progress(label)`` returns a ``(step, total)`` callback for that run.

    Returns:
        An :class:`Experiment`.
    """
    dev = resolve_device(device)
    splits = ClassForget(classes).split(data.train, data.test, data.num_classes)
    train_config = {"seed": seed, **(train_config or {})}
    if methods is None:
        # every method that needs only forget / retain data (famr_matched calibrates on
        # held-out data, which this comparison does not hold back)
        methods = {
            name: {}
            for name in METHODS.names()
            if name != "retrain" and "holdout" not in METHODS.get(name).meta["needs"]
        }
    arch_args = {
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        **(arch_args or {}),
    }
    track = progress or (lambda label: None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        initial = create_model(arch, **arch_args)
    original = train(initial, data.train, device=dev, progress=track("original"), **train_config)
    retrained = unlearn(
        original.model,
        splits.forget,
        splits.retain,
        method="retrain",
        device=dev,
        progress=track("retrain"),
        **train_config,
    )
    experiment = compare_methods(
        original, retrained, splits, data, methods, seed=seed, device=dev, progress=progress
    )
    experiment.results = {**experiment.results, "arch": arch, "arch_args": arch_args}
    return experiment


def lambda_path(
    model: nn.Module,
    splits: Splits,
    lams: Sequence[float],
    *,
    method: str = "famr",
    device: str | torch.device | None = None,
    **config: Any,
) -> list[dict[str, Any]]:
    """Run ``method`` (a FAMR variant) at every anchor strength in ``lams`` and measure the trade-off.

    Returns:
        One row per lambda: forgetting (``forget_acc``, ``test_forget_acc``, ``mia_efficacy``),
        retention (``retain_acc``, ``test_retain_acc``), ``distance`` = ||theta - theta_0||, the
        certificate's ``a_priori_bound`` and ``final_bound``, ``certified`` and ``seconds``.
    """
    rows = []
    for lam in lams:
        result = unlearn(
            model, splits.forget, splits.retain, method=method, device=device, lam=lam, **config
        )
        metrics = evaluate(
            result.model,
            **splits.evaluation_sets(),
            device=device,
        )
        cert = result.certificate or {}
        rows.append(
            {
                "lam": lam,
                **metrics,
                "seconds": result.seconds,
                **{k: cert.get(k) for k in ("a_priori_bound", "final_bound", "certified")},
                # measured on the weights: methods without a certificate have a distance too
                "distance": parameter_distances(model, result.model)[0],
            }
        )
    return rows
