"""Configurations chosen per data set on its validation split, so that every method runs at
its best and no baseline is a strawman.

``PRESETS[data][method]`` is the configuration ``benchmarks/presets_study.py`` chose for
``method`` on ``data``'s validation split (the demo's model; classes 3 and 8; score = val
forget acc + val retain drop, FAMR's two forms under a ceiling on val forget acc; never the
test set, never a retrained model). Its results file is
``benchmarks/results/presets_<data>.json``, and a test checks that these dictionaries equal
its choices, so a rerun that changes a choice cannot leave a stale preset here. A method
without a preset runs at its defaults.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

PRESETS_SOURCE = (
    "chosen on the digits validation split by benchmarks/presets_study.py "
    "(famr.presets.PRESETS; BENCHMARKS.md, 'Presets'); methods not listed run at their defaults"
)

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    # python benchmarks/presets_study.py (2026-11-30; BENCHMARKS.md, "Presets")
    "digits": {
        # python benchmarks/presets_study.py --methods famr famr_head (2026-12-03): famr's
        # last_stage recipe (the demo hands famr the retain set; rerun on 2026-12-07 with
        # --methods famr at the recipe's mirrored buffer, at its feature pull, at its
        # temperature 4 over 16 plain passes, where 3 passes replaced 8, and with its forget
        # set unread, unchanged) and, under its own label, its head recipe (no retain data)
        "famr": {"recipe": "last_stage", "lr": 0.1, "epochs": 3},
        "famr_head": {"method": "famr", "recipe": "head", "lam": 0.1, "lr": 0.01, "epochs": 30},
        "famr_retain": {"beta": 10.0, "lam": 0.0, "lr": 0.0003, "epochs": 5},
        "uniform_kl": {"lr": 0.0001, "epochs": 10},
        "gradient_ascent": {"lr": 0.01, "epochs": 1},
        "neggrad_plus": {"lr": 0.01, "alpha": 0.9, "epochs": 5},
        "random_label": {"lr": 0.01, "epochs": 10},
        "salun": {"lr": 0.01, "epochs": 10},
        "scrub": {"lr": 0.005, "max_epochs": 5, "epochs": 6},
        "finetune": {"lr": 0.1, "epochs": 20},
        "l1_sparse": {"lr": 0.1, "l1": 0.0005, "epochs": 20},
        "ssd": {"alpha": 10.0, "dampening": 1.0},
        "influence": {"scale": 10.0, "damping": 1.0},
    },
}


def configs_for(data: str, methods: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``{run label: config}`` for ``methods`` on ``data``: the preset where there is one, else
    ``{}`` (the method's defaults); after each method, the presets labelled otherwise whose
    config names it (``"famr_head": {"method": "famr", "recipe": "head", ...}``)."""
    chosen = PRESETS.get(data, {})
    out: dict[str, dict[str, Any]] = {}
    for name in methods:
        out[name] = dict(chosen.get(name, {}))
        for label, config in chosen.items():
            if config.get("method") == name and label != name:
                out[label] = dict(config)
    return out
