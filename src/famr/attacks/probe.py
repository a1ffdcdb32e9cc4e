"""Linear-probe recovery: is the forgotten class still linearly readable in the features?

The model is frozen; a fresh multinomial logistic regression is fit on the inputs of its
classifier (or of a named layer) over labelled examples that still contain what was forgotten
and that no model trained on (a validation split), then scored on the forgotten class's test
images. A last-layer edit leaves the features as they were, so the probe finds the class as
well as in the original; a model retrained without the class has features that never learned
to separate it, and the probe finds it far less often. That retrained level is what real
forgetting reaches.

Solver: scikit-learn's ``LogisticRegression`` (L-BFGS, multinomial) on standardised
features, its regularisation ``C`` chosen by stratified cross-validation on the probe's own
training set, never on the images it is scored on.

References:
    Alain & Bengio, "Understanding intermediate layers using linear classifier probes",
    ICLR 2017 workshop; "An Illusion of Unlearning?" (2026) for probes after unlearning.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.tensors import to_tensors
from ..features import layer_inputs
from ..models.adapt import in_float32, plain_logits
from . import AttackData, register_attack


@dataclass
class ProbeConfig:
    """Options of the linear probe.

    Attributes:
        layer: Name of the submodule whose input is probed (default: the classifier, the
            model's last ``nn.Linear``: the penultimate features).
        cs: Inverse regularisation strengths tried by cross-validation on the probe's
            training set.
        folds: Cross-validation folds.
        max_train: At most this many probe-training examples (a seeded, stratified-by-chance
            subsample when there are more).
        max_iter: L-BFGS iterations.
        seed: Seed of the subsample and of the folds.
    """

    layer: str | None = None
    cs: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    folds: int = 3
    max_train: int = 20_000
    max_iter: int = 2_000
    seed: int = 0

    def __post_init__(self) -> None:
        given = self.cs
        if isinstance(given, str):  # the command line: linear_probe.cs=0.1,1,10
            try:
                given = tuple(float(c) for c in given.split(","))
            except ValueError:
                given = (given,)
        elif isinstance(given, (int, float)):
            given = (given,)
        ok = isinstance(given, (tuple, list)) and len(given) > 0
        ok = ok and all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and 0 < c < float("inf")
            for c in given
        )
        if not ok:
            raise ValueError(f"cs={self.cs!r} is not valid; give positive numbers, e.g. 0.1,1,10")
        self.cs = tuple(float(c) for c in given)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed={self.seed!r} is not valid; it must be an integer >= 0")
        for name in ("folds", "max_train", "max_iter"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 2):
                raise ValueError(f"{name}={value!r} is not valid; it must be an integer >= 2")


@register_attack(
    "linear_probe",
    config=ProbeConfig,
    needs=("probe_train",),
    values="probe_",
    direction="probe accuracy in %: on the forgotten class's test images "
    "(probe_test_forget_acc), the forget set itself (probe_forget_acc) and the retained test "
    "images (probe_test_acc); lower on the forgotten data = less recoverable",
    retrain="well below the original on a forgotten class (CIFAR-10 cat, ResNet-20: 49 vs "
    "69 %), at the original's level on retained data",
)
def linear_probe(model: nn.Module, data: AttackData, cfg: ProbeConfig, *, device) -> dict:
    """Fit a logistic-regression probe on the frozen features of ``probe_train``; report its
    accuracy on the forgotten and the retained data."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.preprocessing import StandardScaler

    work = copy.deepcopy(model).to(device)
    x, y = to_tensors(data.probe_train, name="probe training")
    if len(x) > cfg.max_train:
        keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(cfg.seed))
        x, y = x[keep[: cfg.max_train]], y[keep[: cfg.max_train]]

    def features(images):
        with in_float32(work), plain_logits(work):
            return layer_inputs(work, cfg.layer, images.to(device)).cpu().double().numpy()

    scaler = StandardScaler().fit(features(x))
    folds = min(cfg.folds, int(np.bincount(y.numpy()).min(initial=cfg.folds)))
    if folds < 2:
        raise ValueError("the probe's training set needs at least 2 examples of every class")
    train_x, train_y = scaler.transform(features(x)), y.numpy()
    splitter = StratifiedKFold(folds, shuffle=True, random_state=cfg.seed)

    def probe(c: float):
        return LogisticRegression(C=c, max_iter=cfg.max_iter)

    cv = {c: cross_val_score(probe(c), train_x, train_y, cv=splitter).mean() for c in cfg.cs}
    best = max(cfg.cs, key=lambda c: (cv[c], -c))  # ties go to the stronger regularisation
    probe = probe(best).fit(train_x, train_y)

    def score(dataset) -> float:
        images, labels = to_tensors(dataset)
        predicted = probe.predict(scaler.transform(features(images)))
        return 100.0 * float(np.mean(predicted == labels.numpy()))

    request = data.request
    out = {
        "probe_forget_acc": score(request.forget),
        "probe_test_acc": score(request.test_retain),
        "probe_c": float(best),
        "probe_cv_acc": 100.0 * float(cv[best]),
    }
    if request.test_forget is not None:
        out["probe_test_forget_acc"] = score(request.test_forget)
    return out
