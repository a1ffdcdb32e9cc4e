"""The per-example epsilon score of the NeurIPS 2023 Machine Unlearning Challenge.

N models unlearned with a method are compared with N models retrained without the forget set.
For every forget example, each model gives one number, the logit-scaled confidence of the true
label ``log p_y - log(1 - p_y)``; a family of threshold attacks tries to tell the unlearned
sample of N numbers from the retrained one, and the best attack's false-positive and
false-negative rates bound the example's privacy loss ``epsilon`` (at ``delta = 1e-5``). An
example whose two samples cannot be told apart has epsilon 0 and earns a full point; each
half-unit of epsilon halves the points; an example the attacks separate completely earns none.
The forgetting quality is the mean of the points over the forget set, and the challenge's final
score multiplies it by the utility ratios (retain and test accuracy, unlearned over retrained).

This is famr's own implementation of the definition in the organisers' scoring code
(``google-deepmind/unlearning_evaluation``, ``metric.py`` and ``main.py``); docs/epsilon.md
writes it out in full, with the points where famr differs from that code and where the
challenge's write-up and the code are said to differ.

A method that returns the same model on every run gives every forget example an unlearned
sample of N equal numbers: the code treats such a "peaky" sample as maximally
distinguishable (epsilon 50, no points), so a deterministic method scores 0 forgetting quality
under the challenge's protocol (N runs from one original), however close its one model is to
the retrained ones. famr also runs a second protocol, one run from each of N originals trained
with different seeds, where a deterministic method varies with its starting point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

DELTA = 1e-5
EPSILON_CAP = 50.0  # the value given to perfectly separable or peaky examples (no points)
THRESHOLDS_PER_UNIT = 100
PEAKY_RATIO = 0.01
INTERVAL_BUFFER = 2.0


def logit_confidence(logits: Tensor, labels: Tensor) -> Tensor:
    """``log p_y - log(1 - p_y)`` per example, computed as ``z_y - logsumexp_{j != y} z_j``
    in float64 (exact where the organisers' code saturates: it adds 1e-45 inside both logs,
    which caps the value near 103.6 once ``1 - p_y`` underflows)."""
    z = logits.detach().double()
    true = z.gather(1, labels.view(-1, 1)).squeeze(1)
    others = z.scatter(1, labels.view(-1, 1), float("-inf"))
    return true - torch.logsumexp(others, dim=1)


def _rates_epsilon(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> float:
    """The largest epsilon over a set of attacks given by their error rates (``nan`` if none
    is usable): perfect separation is infinite; an attack with exactly one zero rate is
    discarded (too few models to estimate it); the rest give
    ``max(log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)``, at least 0."""
    perfect = (fpr + fnr) == 0
    if bool(perfect.any()):
        return math.inf
    usable = (fpr * fnr) != 0
    fpr, fnr = fpr[usable], fnr[usable]
    if fpr.size == 0:
        return math.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.log(1 - delta - fpr) - np.log(fnr)
        b = np.log(1 - delta - fnr) - np.log(fpr)
    values = np.fmax(a, b)  # fmax skips the nan of a log of a negative number
    values = values[~np.isnan(values)]
    return float(max(0.0, values.max())) if values.size else math.nan


def _count_between(sorted_values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """How many of ``sorted_values`` lie in ``[low, high]`` (both ends included), for each
    pair of bounds (two binary searches instead of comparing every value with every pair)."""
    counts = np.searchsorted(sorted_values, high, side="right") - np.searchsorted(
        sorted_values, low, side="left"
    )
    return np.maximum(counts, 0)  # an interval with low > high holds nothing


def example_epsilon(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> float:
    """Epsilon for one forget example from its two samples of logit-scaled confidences.

    Args:
        unlearned: The example's value under each of N unlearned models.
        retrained: Its value under each of N retrained models.
        delta: The delta of (epsilon, delta)-indistinguishability.

    Returns:
        Epsilon in ``[0, 50]``: 0 when no attack tells the samples apart, 50 when one separates
        them completely or when one sample is far narrower than the other (see module doc).
    """
    u = np.asarray(unlearned, dtype=np.float64)
    r = np.asarray(retrained, dtype=np.float64)
    # the "positive" side is the one with the larger median (ties: the unlearned side)
    pos, neg = (r, u) if np.median(r) > np.median(u) else (u, r)
    width_pos, width_neg = np.ptp(pos), np.ptp(neg)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = min(width_pos, width_neg) / max(width_pos, width_neg)
    if ratio < PEAKY_RATIO:  # nan (both samples constant) does not count as peaky
        return EPSILON_CAP
    if width_pos == 0 and width_neg == 0:
        # famr's addition: two constant samples leave no usable attack (the organisers' code
        # stops on an assertion); equal values cannot be told apart, different ones always
        return 0.0 if pos[0] == neg[0] else EPSILON_CAP
    fprs, fnrs = [], []
    # family A: "positive when the value is at least t", over an even grid of thresholds
    everything = np.concatenate([pos, neg])
    lo, hi = everything.min(), everything.max()
    grid = np.linspace(lo, hi, math.ceil((hi - lo) * THRESHOLDS_PER_UNIT))
    if grid.size:
        pos_sorted, neg_sorted = np.sort(pos), np.sort(neg)
        tpr = 1 - np.searchsorted(pos_sorted, grid, side="left") / pos.size
        fprs.append(1 - np.searchsorted(neg_sorted, grid, side="left") / neg.size)
        fnrs.append(1 - tpr)
    # family B: "positive inside [l, r]", an interval as wide as the narrower sample, slid
    # and stretched around it by up to INTERVAL_BUFFER on each side
    narrow, wide = (pos, neg) if width_pos < width_neg else (neg, pos)
    w = np.ptp(narrow)
    steps = math.ceil(2 * INTERVAL_BUFFER * THRESHOLDS_PER_UNIT)
    rights = np.linspace(narrow.min() + w - INTERVAL_BUFFER, narrow.max() + INTERVAL_BUFFER, steps)
    offsets = np.linspace(-INTERVAL_BUFFER, INTERVAL_BUFFER, steps)
    right = np.repeat(rights, steps)
    left = (rights[:, None] - w + offsets[None, :]).reshape(-1)
    inside_narrow = _count_between(np.sort(narrow), left, right) / narrow.size
    inside_wide = _count_between(np.sort(wide), left, right) / wide.size
    fprs.append(inside_wide)
    fnrs.append(1 - inside_narrow)
    eps = _rates_epsilon(np.concatenate(fprs), np.concatenate(fnrs), delta)
    if math.isnan(eps):
        raise ValueError(
            "no threshold attack has usable error rates for this example; with N models the "
            "rates move in steps of 1/N, so N must be larger"
        )
    return min(max(eps, 0.0), EPSILON_CAP)


def epsilons(unlearned: np.ndarray, retrained: np.ndarray, delta: float = DELTA) -> np.ndarray:
    """Per-example epsilon for confidences of shape ``(N models, forget examples)`` each."""
    u, r = np.asarray(unlearned), np.asarray(retrained)
    if u.ndim != 2 or r.ndim != 2 or u.shape[1] != r.shape[1]:
        raise ValueError(
            f"confidences must be (models, examples) with the same examples; got {u.shape} "
            f"and {r.shape}"
        )
    if len(u) != len(r):  # the bins assume N on both sides (see bin_edges)
        raise ValueError(f"the score needs N models on each side; got {len(u)} and {len(r)}")
    if len(u) < 3:
        raise ValueError(f"the score needs at least 3 models per side; got {len(u)}")
    return np.array([example_epsilon(u[:, i], r[:, i], delta) for i in range(u.shape[1])])


def bin_edges(n_models: int) -> np.ndarray:
    """Upper edges of the half-unit epsilon bins: 0.5, 1, ..., up to ``ceil(ln(N - 1))``
    (the largest finite epsilon N models can show is ``ln(N - 1)``). N = 512 gives 14 bins."""
    top = math.ceil(math.log(n_models - 1))
    return np.arange(1, int(2 * top) + 1) * 0.5


def points(eps: np.ndarray, n_models: int) -> np.ndarray:
    """The points each example earns: ``2 / 2^n`` in the n-th bin (1, 1/2, 1/4, ...), 0 at or
    beyond the last edge."""
    edges = bin_edges(n_models)
    index = np.searchsorted(edges, np.asarray(eps, dtype=np.float64), side="right")  # 0-based
    return np.where(index < len(edges), 2.0 / 2.0 ** (index + 1), 0.0)


def forget_quality(eps: np.ndarray, n_models: int) -> float:
    """The mean of :func:`points` over the forget set: 1 = indistinguishable from retraining."""
    return float(points(eps, n_models).mean())


def challenge_score(
    quality: float,
    retain_unlearned: Sequence[float],
    retain_retrained: Sequence[float],
    test_unlearned: Sequence[float],
    test_retrained: Sequence[float],
) -> float:
    """``F * (RA_u / RA_r) * (TA_u / TA_r)``: the accuracies are means over each side's models;
    the ratios are not capped (an unlearned model more accurate than retraining raises it)."""
    ra = float(np.mean(retain_unlearned)) / float(np.mean(retain_retrained))
    ta = float(np.mean(test_unlearned)) / float(np.mean(test_retrained))
    return quality * ra * ta


def epsilon_report(
    unlearned_logits: Sequence[Tensor],
    retrained_logits: Sequence[Tensor],
    labels: Tensor,
    *,
    retain_acc: tuple[Sequence[float], Sequence[float]] | None = None,
    test_acc: tuple[Sequence[float], Sequence[float]] | None = None,
    delta: float = DELTA,
) -> dict:
    """The whole score from the models' forget-set logits (and their accuracies).

    Args:
        unlearned_logits: One ``(forget examples, K)`` logits tensor per unlearned model.
        retrained_logits: The same for each retrained model.
        labels: The forget examples' labels.
        retain_acc: ``(unlearned models' retain accuracies, retrained models')``.
        test_acc: The same for test accuracy.
        delta: See :func:`example_epsilon`.

    Returns:
        ``n_models``, ``epsilons`` (per example), ``points``, ``forget_quality``, the bin
        edges, a histogram of epsilon over the bins, the share of examples capped at 50
        (``peaky_or_separated``) and, with both accuracy pairs, ``score``.
    """
    u = torch.stack([logit_confidence(z, labels) for z in unlearned_logits]).numpy()
    r = torch.stack([logit_confidence(z, labels) for z in retrained_logits]).numpy()
    n = min(len(u), len(r))
    eps = epsilons(u, r, delta)
    edges = bin_edges(n)
    counts = np.bincount(np.searchsorted(edges, eps, side="right"), minlength=len(edges) + 1)
    out = {
        "n_models": n,
        "delta": delta,
        "epsilons": eps.tolist(),
        "points": points(eps, n).tolist(),
        "forget_quality": forget_quality(eps, n),
        "bin_edges": edges.tolist(),
        "histogram": counts.tolist(),  # per bin, then the last entry: at or beyond the edge
        "peaky_or_separated": float(np.mean(eps >= EPSILON_CAP)),
        "unlearned_spread": float(np.median(np.ptp(u, axis=0))),
        "retrained_spread": float(np.median(np.ptp(r, axis=0))),
    }
    if retain_acc is not None and test_acc is not None:
        out["score"] = challenge_score(out["forget_quality"], *retain_acc, *test_acc)
    return out
