"""Known answers for the benchmarks' selection rules (they decide what a table reports)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name, monkeypatch):
    # the benchmarks re-execute themselves with tcmalloc preloaded unless told not to
    monkeypatch.setenv("FAMR_NO_TCMALLOC", "1")
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_quantile_choice_is_the_smallest_estimated_gap_without_the_retrained_model(monkeypatch):
    scenarios = _load("scenarios", monkeypatch)
    fast, slow = list(scenarios.QUANTILE_RUNS)[:2]
    runs = {
        "original": {"retain_acc": 93.5},
        # reached the held-out level but overshot and lost the retained data
        fast: {"forget_acc": 82.5, "retain_acc": 83.5, "history": [{"stopped_at": 40}]},
        # stayed above the level, retain kept: (|89.5 - 86.5| + |92.5 - 93.5|) / 2 = 2
        slow: {"forget_acc": 89.5, "retain_acc": 92.5, "history": [{"stopped_at": None}]},
        "retrain": {"forget_acc": 0.0, "retain_acc": 0.0},  # must not matter
    }
    chosen = scenarios.choose_quantile(runs, holdout_acc=86.5)
    assert chosen["run"] == slow
    assert chosen["estimated_gap"][slow] == pytest.approx(2.0)
    assert chosen["estimated_gap"][fast] == pytest.approx((4.0 + 10.0) / 2)
    assert chosen["reached_level"] == [fast]
    # a diverged run is never chosen
    runs[slow] = {"diverged": "step 3"}
    assert scenarios.choose_quantile(runs, holdout_acc=86.5)["run"] == fast
