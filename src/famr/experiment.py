"""Class-forgetting experiment: train, retrain, unlearn with every method, evaluate, compare.

This is the demo's and the benchmarks' pipeline. It returns plain data (metrics, per-class
accuracies, confidences); the CLI and the benchmark scripts write it out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .api import Result, evaluate, metrics_from_outputs, predict, resolve_device, train, unlearn
from .attacks import AttackData, attack, attack_values
from .config import config_dict
from .data import ClassForget, ImageData, Splits, hold_out_validation
from .data.files import rows as split_rows
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


def _same_metrics(name: str, measured: dict[str, Any], row: dict[str, Any]) -> None:
    """Raise unless ``row`` holds every metric of ``measured`` at the same value (1e-6 %):
    the row was measured on the same model and request."""
    for key, value in measured.items():
        if not isinstance(value, (float, list)):
            continue
        stored = row.get(key)
        if stored == "nan":  # famr.io writes NaN as the string "nan"
            stored = float("nan")
        same = (
            isinstance(stored, type(value))
            and np.shape(stored) == np.shape(value)
            and np.allclose(stored, value, rtol=0.0, atol=1e-6, equal_nan=True)
        )
        if not same:
            raise ValueError(
                f"known row {name!r}: {key} is {stored!r}, measured now {value!r}; "
                "not the same model or request, so its attack values cannot be reused"
            )


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
    probe_data: Dataset | None = None,
    attack_config: dict[str, dict[str, Any]] | None = None,
    known: dict[str, dict[str, Any]] | None = None,
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
            that calibrate against unseen data (``famr_quantile``, ``famr`` on a sample request).
        probe_data: Examples none of the models trained on that still hold the forgotten
            data (a validation split): with it every run is also attacked (linear probe and
            relearning, :mod:`famr.attacks`), the retrained model included.
        attack_config: ``{attack name: {field: value}}`` for those attacks (every run alike),
            e.g. ``{"relearn": {"lr": (0.01, 0.03, 0.1)}}``.
        known: ``{"original": row, "retrain": row}`` (either or both): result rows measured
            earlier on these same models, request and attack configuration (a results file's).
            Their metrics are measured again and must equal the row's; their attack values,
            the expensive part, are taken from the row instead of being measured again.

    Returns:
        An :class:`Experiment` whose ``runs`` hold metrics, gaps, ``seconds``, ``time_ratio``
        and, with ``probe_data``, the attacks' values.

    Raises:
        ValueError: ``known`` names another run than ``original`` / ``retrain``, is given
            without ``probe_data``, or a row's metrics differ from the ones measured now (not
            the same models or request) or it lacks an attack's values.
    """
    known = known or {}
    stray = sorted(set(known) - {"original", "retrain"})
    if stray:
        raise ValueError(f"known rows {stray}: only 'original' and 'retrain' can be given")
    if known and probe_data is None:
        raise ValueError("known rows reuse attack values: give probe_data as well")
    dev = resolve_device(device)
    track = progress or (lambda label: None)
    experiment = Experiment(results={}, models={})
    runs: dict[str, dict[str, Any]] = {}

    def record(name: str, result: Result, reference: dict | None) -> dict[str, Any]:
        entry, confidences = _evaluate_run(result.model, splits, data, dev, reference)
        if probe_data is not None:
            given = AttackData(splits, probe_data, original=original.model)
            if name in known:
                _same_metrics(name, entry, known[name])
                entry.update(attack_values(known[name], given))
            else:
                entry.update(attack(result.model, given, device=dev, config=attack_config))
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
                kind=splits.kind,
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


def comparable_methods() -> list[str]:
    """Every method that needs only forget / retain data: the demo's and
    :func:`run_class_forgetting`'s default set (famr_quantile calibrates on
    held-out data, which that comparison does not hold back; retrain is the reference)."""
    return [
        name
        for name in METHODS.names()
        if name != "retrain" and "holdout" not in METHODS.get(name).meta["needs"]
    ]


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
    validation: float | None = None,
) -> Experiment:
    """Train, retrain without ``classes``, and compare every method in ``methods`` to retraining.

    Args:
        data: The data set.
        classes: Class indices to forget.
        arch: Architecture name; ``arch_args`` its extra arguments.
        train_config: :class:`famr.config.TrainConfig` fields for the original model and the
            retrained reference (the same schedule for both).
        methods: ``{run name: config}`` as in :func:`compare_methods` (default: every method
            but ``retrain`` and those that need held-out data, with its default config).
        seed: Seed of the original model's initialisation and of every run.
        device: Where to run.
        progress: ``progress(label)`` returns a ``(step, total)`` callback for that run.
        validation: Hold this share of every training class out of all training (seeded by
            ``seed``). With a validation split (this one, or ``data.validation``) the attacks'
            linear probe is fit on it, and every run is attacked.

    Returns:
        An :class:`Experiment`.
    """
    dev = resolve_device(device)
    if validation is not None:
        data = hold_out_validation(data, validation, seed=seed)
    splits = ClassForget(classes).split(data.train, data.test, data.num_classes)
    train_config = {"seed": seed, **(train_config or {})}
    if methods is None:
        methods = {name: {} for name in comparable_methods()}
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
        original,
        retrained,
        splits,
        data,
        methods,
        seed=seed,
        device=dev,
        progress=progress,
        probe_data=data.validation,
    )
    experiment.results = {
        **experiment.results,
        "arch": arch,
        "arch_args": arch_args,
        "validation": None if validation is None else {"fraction": validation, "seed": seed},
        "validation_size": 0 if data.validation is None else len(data.validation),
    }
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

    ``famr`` runs its head recipe unless ``config`` names another: the path traces the
    anchored objective the certificate bounds (the last_stage recipe anchors re-initialised
    weights, with no certificate).

    Returns:
        One row per lambda: forgetting (``forget_acc``, ``test_forget_acc``, ``mia_efficacy``),
        retention (``retain_acc``, ``test_retain_acc``), ``distance`` = ||theta - theta_0||, the
        certificate's ``a_priori_bound`` and ``final_bound``, ``certified`` and ``seconds``.
    """
    if method == "famr" and config.get("recipe") in (None, "auto"):  # the CLI passes "auto"
        config["recipe"] = "head"
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


def _protocol_outputs(model: nn.Module, splits: Splits, device) -> dict[str, Any]:
    """What the epsilon score needs of one model: its forget-set logits, retain and test
    accuracy."""
    forget = predict(model, splits.forget, device=device)
    retain = predict(model, splits.retain, device=device)
    test = predict(model, splits.test_retain, device=device)
    return {
        "logits": forget.logits,
        "retain_acc": 100.0 * float(retain.correct.float().mean()),
        "test_acc": 100.0 * float(test.correct.float().mean()),
    }


EPSILON_PROTOCOLS = ("one_original", "n_originals")


def epsilon_study(
    data: ImageData,
    splits: Splits,
    methods: dict[str, dict[str, Any]],
    *,
    n: int,
    arch: str,
    arch_args: dict[str, Any],
    train_config: dict[str, Any],
    holdout: Dataset | None = None,
    device: str | torch.device | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The NeurIPS 2023 challenge's epsilon score for every method, under both protocols.

    Trains N originals (seeds 0..N-1) and 2N models retrained without the forget set (seeds
    0..2N-1). ``one_original``: N runs of each method from the seed-0 original, with seeds
    0..N-1 (the challenge's protocol). ``n_originals``: one run from each original, seed i.
    Both are scored against the retrained models 0..N-1; ``retrain`` scores the retrained
    models N..2N-1 against them, the best any method can reach at this N (see
    docs/epsilon.md). A method that refuses the request (a kind it does not handle) is
    recorded with its one-line reason.

    Returns:
        ``{"n": N, "rows": {name: {protocol: epsilon_report summary}}}``; per-example epsilons
        are kept in each report.
    """
    from .attacks.epsilon import epsilon_report

    dev = resolve_device(device)
    say = log or (lambda message: None)

    def trained(seed: int, dataset: Dataset) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            initial = create_model(arch, **arch_args)
        return train(initial, dataset, device=dev, **{**train_config, "seed": seed}).model

    originals = [trained(seed, data.train) for seed in range(n)]
    say(f"trained {n} originals")
    retrained = [
        _protocol_outputs(trained(seed, splits.retain), splits, dev) for seed in range(2 * n)
    ]
    say(f"trained {2 * n} retrained models")
    reference, calibration = retrained[:n], retrained[n:]
    labels = split_rows(splits.forget, name="forget")[1]

    def summary(outputs: list[dict[str, Any]]) -> dict[str, Any]:
        return epsilon_report(
            [o["logits"] for o in outputs],
            [r["logits"] for r in reference],
            labels,
            retain_acc=([o["retain_acc"] for o in outputs], [r["retain_acc"] for r in reference]),
            test_acc=([o["test_acc"] for o in outputs], [r["test_acc"] for r in reference]),
        ) | {
            "retain_acc": float(np.mean([o["retain_acc"] for o in outputs])),
            "test_acc": float(np.mean([o["test_acc"] for o in outputs])),
        }

    rows: dict[str, dict[str, Any]] = {"retrain": {"calibration": summary(calibration)}}
    for name, overrides in methods.items():
        config = dict(overrides)
        method = config.pop("method", name)
        rows[name] = {}
        for protocol in EPSILON_PROTOCOLS:
            outputs, start = [], time.perf_counter()
            try:
                for i in range(n):
                    origin = originals[0] if protocol == "one_original" else originals[i]
                    result = unlearn(
                        origin,
                        splits,
                        method=method,
                        device=dev,
                        holdout=holdout,
                        **{**config, "seed": i},
                    )
                    outputs.append(_protocol_outputs(result.model, splits, dev))
            except (ValueError, DivergenceError) as err:
                rows[name][protocol] = {"refused": " ".join(str(err).split())}
                say(f"{name} ({protocol}): {rows[name][protocol]['refused']}")
                continue
            rows[name][protocol] = summary(outputs) | {"seconds": time.perf_counter() - start}
            say(
                f"{name} ({protocol}): forget quality {rows[name][protocol]['forget_quality']:.3f}, "
                f"score {rows[name][protocol]['score']:.3f}"
            )
    return {"n": n, "rows": rows, "protocols": list(EPSILON_PROTOCOLS)}


# --- choosing configurations on the validation split ----------------------------------------


def validation_study(
    original: nn.Module,
    data: ImageData,
    classes: Sequence[int],
    grid: dict[str, list[dict[str, Any]]],
    *,
    seed: int = 0,
    device: str | torch.device | None = None,
    configure: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
    relearn: Sequence[str] = (),
    relearn_config: dict[str, Any] | None = None,
    probe: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Run every configuration in ``grid`` on each forget class and score it on the validation
    split, never on the test set or a retrained model.

    For the labels in ``relearn`` the relearning attack (:mod:`famr.attacks.relearn`, its
    defaults: a few of the class's training images, 30 steps) is run on each unlearned model and
    scored on the validation split's images of the class: ``val_relearned`` (%), added to the
    score, so that a configuration that only hides the class is not chosen for a form meant to
    forget it in the weights. With several learning rates (``relearn_config``) it is the mean
    of the rates' runs (each in ``val_relearned_by_lr``), not the strongest: the mean less a
    retrained model's mean is the mean excess over that model at each rate, so the study ranks
    by it without seeing the retrained model; the largest excess at any one rate, what the
    test protocol reports, would need the retrained model's level at each rate (on CIFAR-10's
    cat, 29.8 % at lr 0.01 and 85.5 % at 0.03), and the strongest run alone weighs one rate.

    For the labels in ``probe`` the linear probe (:mod:`famr.attacks.probe`) is measured on the
    validation split alone: the split is halved, class by class (seed ``seed``), the probe is
    fit on the frozen features of one half and scored on the other half's images of the class:
    ``val_probe`` (%), beside ``val_probe_original``, the original's on the same halves.
    Not added to ``score`` (no rule here can say how low is low enough: the level real
    forgetting reaches is a retrained model's, which the study never sees; on CIFAR-10 a
    retrained model's probe still finds about half of the cats); :func:`choose_config` counts
    it in its cost, where that level, one constant per class, changes no ranking.

    For each class the forget set is its training images; *val forget acc* is the accuracy on
    its validation images, *val retain drop* the fall in accuracy on the other classes'
    validation images; ``score`` is their sum (points, lower is better). Certificates are
    switched off (they are reported by the benchmarks, not needed to choose).

    Args:
        original: The trained model.
        data: The data set with its validation split (:func:`famr.data.hold_out_validation`).
        classes: The forget classes to average over.
        grid: ``{method: [config, ...]}``; a key may also be a run's label whose configs name
            their ``"method"`` (a configuration family of one method, chosen on its own).
        configure: ``configure(method, config) -> config`` adds run-only settings (speed flags)
            that are not part of the configuration recorded.
        log: Progress messages.
        relearn_config: Options of the relearning attack for ``relearn``'s labels (e.g.
            several learning rates, their mean scored: ``{"lr": (0.01, 0.03, 0.1)}``).

    Returns:
        One row per class and configuration: ``class``, ``method``, ``config``, ``seconds``,
        ``val_forget_acc``, ``val_retain_drop``, ``score`` (and ``val_relearned``, with
        ``val_relearned_by_lr`` at several rates; ``val_probe`` and ``val_probe_original``).
    """
    if data.validation is None:
        raise ValueError("a validation study needs a validation split (hold_out_validation)")
    dev = resolve_device(device)
    say = log or (lambda message: None)
    if probe:  # one half of the validation split fits the probe, the other is scored
        probe_fit, probe_scored = probe_halves(data, seed)
    rows = []
    for cls in classes:
        splits = ClassForget(cls).split(data.train, data.validation, data.num_classes)
        if probe:
            halved = AttackData(
                ClassForget(cls).split(data.train, probe_scored, data.num_classes), probe_fit
            )

            def probed(model: nn.Module, halved: AttackData = halved) -> float:
                found = attack(model, halved, ["linear_probe"], device=dev)
                return found["probe_test_forget_acc"]

            probe_original = probed(original)

        def score(model: nn.Module, splits: Splits = splits) -> dict[str, float]:
            return evaluate(
                model,
                test_retain=splits.test_retain,
                test_forget=splits.test_forget,
                metrics=["test_retain_acc", "test_forget_acc"],
                device=dev,
            )

        base = score(original)
        for label, configs in grid.items():
            for config in configs:
                run = dict(config)
                method = run.pop("method", label)
                if hasattr(METHODS.get(method).meta["config"](), "certificate"):
                    run["certificate"] = False
                result = unlearn(
                    original,
                    splits.forget,
                    splits.retain,
                    method=method,
                    device=dev,
                    seed=seed,
                    **(configure(method, run) if configure else run),
                )
                m = score(result.model)
                row = {
                    "class": cls,
                    "method": label,
                    "config": config,
                    "seconds": result.seconds,
                    "val_forget_acc": m["test_forget_acc"],
                    "val_retain_drop": base["test_retain_acc"] - m["test_retain_acc"],
                }
                row["score"] = row["val_forget_acc"] + row["val_retain_drop"]
                if label in relearn:  # splits' "test" images are the validation split's
                    found = attack(
                        result.model,
                        AttackData(splits),
                        ["relearn"],
                        device=dev,
                        config={"relearn": relearn_config or {}},
                    )
                    by_rate = found.get("relearn_by_lr")
                    if by_rate:  # several rates: their mean, and each
                        row["val_relearned"] = sum(by_rate.values()) / len(by_rate)
                        row["val_relearned_by_lr"] = by_rate
                    else:
                        row["val_relearned"] = found["relearn_forget_acc"]
                    row["score"] += row["val_relearned"]
                if label in probe:
                    row["val_probe"] = probed(result.model)
                    row["val_probe_original"] = probe_original
                rows.append(row)
                say(
                    f"class {cls} {label} {config}: val forget {row['val_forget_acc']:.2f}, "
                    f"retain drop {row['val_retain_drop']:.2f}, {result.seconds:.1f} s"
                )
    return rows


def probe_halves(data: ImageData, seed: int = 0) -> tuple[Any, Any]:
    """``(fit, scored)``: the halves of ``data``'s validation split (class by class, seeded)
    on which :func:`validation_study` fits its linear probe and scores it."""
    halves = hold_out_validation(replace(data, train=data.validation), 0.5, seed=seed)
    return halves.validation, halves.train


def choose_config(
    configs: list[dict[str, Any]],
    mean: Callable[[str, dict[str, Any]], float],
    ceiling: float | None = None,
    standard_error: Callable[[dict[str, Any]], float] | None = None,
    drop_ceiling: float | None = None,
) -> dict[str, Any]:
    """The validation study's choice among ``configs``: the lowest mean ``score`` (val forget
    acc + val retain drop [+ val relearned], points; ties: the faster); with a ``ceiling``,
    among those whose mean ``val_forget_acc`` is at most ``ceiling`` (the lowest score when
    none is), the one whose *cost* is lowest: the mean ``val_retain_drop`` + ``val_relearned``
    + ``val_probe`` (each counted where the study measured it), points on the validation
    images of what the request costs the retained classes and of what the relearning attack
    and the linear probe bring back of the forgotten one. A retrained model's own relearning
    and probe levels are one constant per class, so they change no ranking and the study need
    not see them. With ``standard_error``, every configuration within one standard error of
    the lowest cost (``standard_error(lowest)``, points: the sampling noise of the validation
    probe) counts as tied, and of those the smallest val retain drop + val relearned is
    chosen (then the faster). Lower is taken as better for the two attacks: a configuration
    that relearns less, or whose probe finds less, than a retrained model would is not
    penalised for it. With a ``drop_ceiling``, only configurations whose mean
    ``val_retain_drop`` is at most it are candidates under the ``ceiling`` (all of them when
    none is): the attacks cannot buy back what the request costs the retained classes.

    Args:
        configs: The grid.
        mean: ``mean(key, config)``: the mean over the study's forget classes of ``key``
            (``score``, ``seconds``, ``val_forget_acc``, ``val_retain_drop``,
            ``val_relearned``, ``val_probe``) for ``config``; 0 where not measured.
        ceiling: The form's target on the validation forget accuracy, %.
        standard_error: The standard error of a configuration's cost, points.
        drop_ceiling: The form's bound on the validation retain drop, points.
    """
    ranked = sorted(configs, key=lambda c: (mean("score", c), mean("seconds", c)))
    if ceiling is None:
        return ranked[0]
    meeting = [c for c in ranked if mean("val_forget_acc", c) <= ceiling]
    if not meeting:
        return ranked[0]
    if drop_ceiling is not None:
        meeting = [c for c in meeting if mean("val_retain_drop", c) <= drop_ceiling] or meeting

    def drop(c: dict[str, Any]) -> float:
        return mean("val_retain_drop", c) + mean("val_relearned", c)

    def cost(c: dict[str, Any]) -> float:
        return drop(c) + mean("val_probe", c)

    lowest = min(meeting, key=lambda c: (cost(c), mean("seconds", c)))
    tolerance = standard_error(lowest) if standard_error is not None else 0.0
    tied = [c for c in meeting if cost(c) <= cost(lowest) + tolerance]
    return min(tied, key=lambda c: (drop(c), mean("seconds", c)))


def choose_configs(
    rows: list[dict[str, Any]],
    grid: dict[str, list[dict[str, Any]]],
    ceilings: dict[str, float] | None = None,
    probe_images: dict[int, int] | None = None,
    drop_ceilings: dict[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per method of ``grid``, the :func:`choose_config` choice over :func:`validation_study`'s
    ``rows`` (means over the classes), with its mean validation numbers. With
    ``probe_images`` (``{class: images the validation probe is scored on}``), a method whose
    rows hold ``val_probe`` is chosen with that probe's binomial standard error as the
    tolerance: ``sqrt(sum_c p_c (1 - p_c) / n_c) / C`` at the lowest-cost configuration.
    ``drop_ceilings``: per method, :func:`choose_config`'s ``drop_ceiling``."""
    return {
        method: _choose_one(
            [r for r in rows if r["method"] == method],
            method,
            configs,
            (ceilings or {}).get(method),
            probe_images,
            (drop_ceilings or {}).get(method),
        )
        for method, configs in grid.items()
    }


def _choose_one(rows, method, configs, ceiling, probe_images, drop_ceiling=None) -> dict[str, Any]:
    """:func:`choose_configs` for one method's ``rows``."""
    optional = ("val_relearned", "val_probe")  # 0 where the study did not measure them

    def members(config: dict[str, Any]) -> list[dict[str, Any]]:
        return [r for r in rows if r["config"] == config]

    measured = [c for c in configs if members(c)]  # one without rows is named by mean()
    for key in optional:  # a configuration measured without the attack would score it as 0
        lacking = [c for c in measured if any(key not in r for r in members(c))]
        if lacking and len(lacking) < len(measured):
            raise ValueError(
                f"the study's rows for {method} hold {key} for some configurations but not "
                f"for {lacking}: rerun them (benchmarks/famr_study.py --methods {method})"
            )
    # and the relearning attack at the same rates in every row (one rate: no by-rate record)
    rates = {tuple(r.get("val_relearned_by_lr", ())) for r in rows if "val_relearned" in r}
    if len(rates) > 1:
        said = " and ".join(", ".join(x) if x else "one rate" for x in sorted(rates))
        raise ValueError(
            f"the study's rows for {method} hold the relearning attack at different rates "
            f"({said}): rerun them (benchmarks/famr_study.py --methods {method})"
        )

    def mean(key: str, config: dict[str, Any]) -> float:
        values = [r.get(key, 0.0) if key in optional else r[key] for r in members(config)]
        if not values:
            raise ValueError(f"the study has no rows for {method} {config}: run its grid")
        return sum(values) / len(values)

    used = {}  # the tolerance choose_config took (at the lowest-cost configuration)

    def standard_error(config: dict[str, Any]) -> float:
        found = [r for r in members(config) if "val_probe" in r]
        if not found:
            return 0.0
        variance = sum(
            (r["val_probe"] / 100) * (1 - r["val_probe"] / 100) / probe_images[r["class"]]
            for r in found
        )
        used["tolerance"] = 100 * math.sqrt(variance) / len(found)
        return used["tolerance"]

    best = choose_config(
        configs, mean, ceiling, standard_error if probe_images else None, drop_ceiling
    )
    chosen = {"config": best} | {
        k: mean(k, best) for k in ("score", "val_forget_acc", "val_retain_drop", "seconds")
    }
    for key in optional:
        if any(key in r for r in rows):
            chosen[key] = mean(key, best)
    if "tolerance" in used:
        chosen["tolerance"] = used["tolerance"]
    return chosen
