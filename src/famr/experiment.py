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

from .api import Result, evaluate, predict, resolve_device, train, unlearn
from .config import config_dict
from .data import ClassForget, ImageData, Splits
from .loop import Progress
from .methods import METHODS
from .metrics.gaps import gaps
from .models import create_model

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


def per_class_accuracy(model: nn.Module, data: ImageData, device: torch.device) -> list[float]:
    """Test accuracy (percent) of each class."""
    out = predict(model, data.test, device=device)
    correct = out.correct.float()
    return [100.0 * float(correct[out.labels == k].mean()) for k in range(data.num_classes)]


def _metrics(model: nn.Module, splits: Splits, device, reference=None) -> dict[str, float]:
    return evaluate(
        model,
        forget=splits.forget,
        retain=splits.retain,
        test_retain=splits.test_retain,
        test_forget=splits.test_forget,
        reference=reference,
        device=device,
    )


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
    """Forget ``classes`` with every method in ``methods`` and compare against retraining.

    Args:
        data: The data set.
        classes: Class indices to forget.
        arch: Architecture name; ``arch_args`` its extra arguments.
        train_config: :class:`famr.TrainConfig` fields for the original model and the
            retrained reference (the same schedule for both).
        methods: ``{method name: config overrides}`` (default: every method but ``retrain``
            with its default config).
        seed: Seed of the original model's initialisation and of every run.
        device: Where to run.
        progress: ``progress(label)`` returns a ``(step, total)`` callback for that run.

    Returns:
        An :class:`Experiment`.
    """
    dev = resolve_device(device)
    spec = ClassForget(classes)
    splits = spec.split(data.train, data.test, data.num_classes)
    train_config = {"seed": seed, **(train_config or {})}
    if methods is None:
        methods = {name: {} for name in METHODS.names() if name != "retrain"}
    arch_args = {
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        **(arch_args or {}),
    }
    track = progress or (lambda label: None)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        initial = create_model(arch, **arch_args)
    runs: dict[str, dict[str, Any]] = {}
    experiment = Experiment(results={}, models={})

    def record(name: str, result: Result, reference: dict | None) -> dict[str, Any]:
        metrics = _metrics(result.model, splits, dev, reference)
        entry = {**metrics, "seconds": result.seconds, "config": config_dict(result.config)}
        entry["per_class_test_acc"] = per_class_accuracy(result.model, data, dev)
        entry["history"] = result.history
        if result.certificate is not None:
            entry["certificate"] = result.certificate
        experiment.models[name] = result.model
        forget_out = predict(result.model, splits.forget, device=dev)
        conf = {"forget": forget_out.true_label_confidence}
        if splits.test_forget is not None:
            conf["test_forget"] = predict(
                result.model, splits.test_forget, device=dev
            ).true_label_confidence
        conf["test_retain"] = predict(
            result.model, splits.test_retain, device=dev
        ).true_label_confidence
        experiment.confidences[name] = conf
        runs[name] = entry
        return entry

    original = train(initial, data.train, device=dev, progress=track("original"), **train_config)
    record("original", original, None)
    retrained = unlearn(
        original.model,
        splits.forget,
        splits.retain,
        method="retrain",
        device=dev,
        progress=track("retrain"),
        **train_config,
    )
    reference = record("retrain", retrained, None)
    reference_metrics = {k: v for k, v in reference.items() if isinstance(v, float)}
    for name in ("original", "retrain"):
        runs[name].update(gaps(runs[name], reference_metrics))
    for name, overrides in methods.items():
        result = unlearn(
            original.model,
            splits.forget,
            splits.retain,
            method=name,
            device=dev,
            progress=track(name),
            **{"seed": seed, **overrides},
        )
        record(name, result, reference_metrics)
    for entry in runs.values():
        entry["time_ratio"] = entry["seconds"] / runs["retrain"]["seconds"]

    experiment.results = {
        "dataset": data.name,
        "arch": arch,
        "arch_args": arch_args,
        "forget": spec.to_dict(),
        "class_names": data.class_names,
        "seed": seed,
        "device": str(dev),
        "runs": runs,
    }
    return experiment
