"""Gaps to a reference model (normally the retrained one): |delta| of each metric, and ToW.

These compare two metric dicts rather than reading model outputs, so they are plain functions
and not registry entries.
"""

from __future__ import annotations

from collections.abc import Mapping

GAP_KEYS = {
    "ua": "ua_gap",
    "retain_acc": "ra_gap",
    "test_retain_acc": "ta_gap",
    "mia_efficacy": "mia_gap",
}


def gaps(run: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """Absolute differences to the reference, their mean, and Tug-of-War.

    Args:
        run: Metrics of the evaluated model (``ua``, ``retain_acc``, ``test_retain_acc``,
            ``mia_efficacy``, ``forget_acc``), in percent.
        reference: The same metrics of the reference (retrained) model.

    Returns:
        ``ua_gap``, ``ra_gap``, ``ta_gap``, ``mia_gap`` (points; lower = closer to retraining),
        ``avg_gap`` (their mean; the retrained model scores 0), and ``tow`` =
        (1 - |dFA|/100)(1 - |dRA|/100)(1 - |dTA|/100) in [0, 1] (higher = closer; 1 for the
        reference itself).
    """
    bad = {
        k: v
        for k, v in reference.items()
        if k in GAP_KEYS or k == "forget_acc"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v
    }
    if bad:
        raise ValueError(f"reference metrics {bad} are not numbers; pass famr.evaluate's output")
    out = {
        gap: abs(run[key] - reference[key])
        for key, gap in GAP_KEYS.items()
        if key in run and key in reference
    }
    if out:
        out["avg_gap"] = sum(out.values()) / len(out)
    if all(k in run and k in reference for k in ("forget_acc", "retain_acc", "test_retain_acc")):
        tow = 1.0
        for key in ("forget_acc", "retain_acc", "test_retain_acc"):
            tow *= 1.0 - abs(run[key] - reference[key]) / 100.0
        out["tow"] = tow
    return out
