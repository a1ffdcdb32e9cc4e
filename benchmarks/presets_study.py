"""Choose every method's digits configuration on the validation split: the presets the demo runs.

The demo's original (small_cnn, seed 0, trained on the 80 % of the digits training set that
the demo trains on) unlearns classes 3 and 8 with every configuration of each method's grid;
each is scored on the held-out 20 % (never on the test set, never against a retrained model):

    score = val forget acc + (original val retain acc - val retain acc)    (points, lower = better)

averaged over the two classes, and famr.experiment.choose_configs picks the lowest score (FAMR's
two forms: the smallest val retain drop among the configurations that reach the ceiling on
val forget acc, as in the CIFAR-10 study). famr.presets.PRESETS["digits"] must equal the
choices written here (a test checks it), so a rerun that changes a choice fails until the
preset is updated from this script's output.

    python benchmarks/presets_study.py          # a few minutes on 2 CPU cores
    python benchmarks/presets_study.py --methods famr famr_head   # rerun some grids, keep the rest
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import famr
from famr import bench, io
from famr.api import resolve_device
from famr.data import hold_out_validation
from famr.experiment import choose_configs, validation_study

DEMO_VALIDATION = 0.2  # the demo's held-out share (famr.cli.demo.DEMO_VALIDATION)
CLASSES = [3, 8]
FORGET_CEILING = {"famr": 1.0, "famr_head": 5.0, "famr_retain": 1.0}
GRID = {
    # famr with the demo's retain set: its last_stage recipe (named, so that the preset says
    # which recipe its numbers belong to); epochs are passes over the retain buffer
    "famr": [
        {"recipe": "last_stage", "lr": lr, "epochs": ep}
        for lr in (0.05, 0.1)
        for ep in (1, 3, 8, 20)
    ],
    # famr's no-retain tier (the demo runs it too, under this label)
    "famr_head": [
        {"method": "famr", "recipe": "head", "lam": lam, "lr": lr, "epochs": ep}
        for lam in (0.01, 0.1, 1.0)
        for lr in (0.01, 0.001)
        for ep in (10, 30)
    ]
    + [
        {"method": "famr", "recipe": "head", "params": "all", "lam": lam, "lr": lr, "epochs": 3}
        for lam in (0.1, 1.0)
        for lr in (1e-3, 1e-4)
    ],
    "famr_retain": [
        {"beta": beta, "lam": lam, "lr": lr, "epochs": ep}
        for beta in (1.0, 10.0)
        for lam in (0.0, 0.1)
        for lr in (3e-4, 1e-3)
        for ep in (5, 10)
    ],
    # every grid reaches past its chosen point where a first run chose an edge
    "uniform_kl": [{"lr": lr, "epochs": ep} for lr in (1e-3, 1e-4, 3e-5) for ep in (1, 5, 10)],
    "gradient_ascent": [
        {"lr": lr, "epochs": ep} for lr in (3e-2, 1e-2, 1e-3, 1e-4) for ep in (1, 5)
    ],
    "neggrad_plus": [
        {"lr": lr, "alpha": a, "epochs": ep}
        for lr in (0.01, 0.001)
        for a in (0.9, 0.99)
        for ep in (1, 5)
    ],
    "random_label": [{"lr": lr, "epochs": ep} for lr in (0.05, 0.01, 0.001) for ep in (2, 5, 10)],
    "salun": [{"lr": lr, "epochs": ep} for lr in (0.05, 0.01, 0.001) for ep in (2, 5, 10)],
    "scrub": [
        {"lr": lr, "max_epochs": m, "epochs": m + 1}
        for lr in (5e-4, 5e-3, 2e-2)
        for m in (2, 5, 10)
    ],
    "finetune": [{"lr": lr, "epochs": ep} for lr in (0.01, 0.05, 0.1, 0.2) for ep in (5, 10, 20)],
    "l1_sparse": [
        {"lr": lr, "l1": l1, "epochs": ep}
        for lr in (0.01, 0.05, 0.1)
        for l1 in (5e-4, 2e-3, 5e-3)
        for ep in (10, 20)
    ],
    "ssd": [{"alpha": a, "dampening": d} for a in (10.0, 30.0, 100.0, 300.0) for d in (0.1, 1.0)],
    "influence": [
        {"scale": s, "damping": d} for s in (0.3, 1.0, 3.0, 10.0) for d in (0.01, 0.1, 1.0)
    ],
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cache", default=str(Path(__file__).resolve().parent / "cache"))
    p.add_argument("--device")
    p.add_argument(
        "--methods",
        nargs="+",
        choices=sorted(GRID),
        help="rerun only these methods' grids; the other rows are kept from the existing results",
    )
    args = p.parse_args(argv)
    out = Path(__file__).resolve().parent / "results" / "presets_digits.json"
    previous = json.loads(out.read_text()) if args.methods else {}
    # rows of grids no longer here (a renamed label) are dropped, not carried along
    kept = [
        r
        for r in previous.get("rows", [])
        if r["method"] in GRID and r["method"] not in (args.methods or [])
    ]
    grid = {m: configs for m, configs in GRID.items() if not args.methods or m in args.methods}
    data = hold_out_validation(famr.load_dataset("digits"), DEMO_VALIDATION, seed=0)
    device = resolve_device(args.device)
    original, _ = bench.trained_model(
        Path(args.cache),
        data,
        arch="small_cnn",
        arch_args={"num_classes": data.num_classes, "in_channels": data.in_channels},
        train_config={},
        seed=0,
        data_label=f"digits, {DEMO_VALIDATION:.0%} of each class held out (seed 0)",
        device=device,
    )
    start = time.perf_counter()
    rows = kept + validation_study(
        original, data, CLASSES, grid, seed=0, device=device, log=bench.log
    )
    chosen = choose_configs(rows, GRID, FORGET_CEILING)
    command = " ".join(["python benchmarks/presets_study.py", *sys.argv[1:]])
    payload = {
        "benchmark": "presets_study",
        "data": "digits",
        "command": previous["command"] if args.methods else command,
        "reruns": [*previous.get("reruns", []), command] if args.methods else [],
        "date": time.strftime("%Y-%m-%d"),
        "environment": bench.environment(),
        "classes": CLASSES,
        "rule": __doc__.split("\n\n")[1],
        "forget_ceiling": FORGET_CEILING,
        # the first full run's time; a rerun of some grids does not replace it
        "seconds": previous["seconds"] if args.methods else time.perf_counter() - start,
        "chosen": chosen,
        "rows": rows,
    }
    io.write_text_atomic(out, io.json_text(payload))
    bench.update_benchmarks_md("presets_digits", markdown(payload, out.name))
    bench.log(f"wrote {out} and BENCHMARKS.md; famr.presets.PRESETS['digits'] must be:")
    print({method: choice["config"] for method, choice in chosen.items()})
    return 0


def markdown(payload: dict, name: str) -> str:
    env = payload["environment"]
    lines = [
        "## Presets chosen on the digits validation split (the demo's configurations)",
        "",
        f"Command: `{payload['command']}`"
        + "".join(f"; then `{c}`" for c in payload.get("reruns", []))
        + f"; {env['cpu_count']}-core {env['machine']} CPU "
        f"(kernels {env['cpu_capability']}), torch {env['torch']}, {payload['date']}; "
        f"{payload['seconds']:.0f} s. small_cnn trained as in the demo; forget classes "
        f"{payload['classes']}; score = val forget acc + drop in val retain acc (points, lower "
        "is better), mean over the classes; FAMR's forms: the smallest val retain drop "
        "with val forget acc at most "
        + ", ".join(f"{c:g} % (`{m}`)" for m, c in payload["forget_ceiling"].items())
        + f". The test set and the retrained model are never looked at ({name}). "
        "`famr.presets.PRESETS['digits']` holds these choices and `famr demo` runs them.",
        "",
        "| method | configurations tried | chosen | val forget acc | val retain drop | score |",
        "|---|---:|---|---:|---:|---:|",
    ]
    tried = {}
    for row in payload["rows"]:
        tried.setdefault(row["method"], set()).add(str(sorted(row["config"].items())))
    for method, c in payload["chosen"].items():
        shown = ", ".join(f"{k}={v}" for k, v in c["config"].items()) or "defaults"
        lines.append(
            f"| {method} | {len(tried[method])} | {shown} | {c['val_forget_acc']:.2f} | "
            f"{c['val_retain_drop']:.2f} | {c['score']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
