"""The NeurIPS 2023 unlearning challenge's per-example epsilon score, for every method.

N models unlearned with each method against N retrained without the forget set, under both
protocols (docs/epsilon.md): ``one_original`` (N runs from one original, the challenge's) and
``n_originals`` (one run from each of N originals trained with different seeds). The
``retrain`` row scores N more retrained models against the N: the best score reachable at this
N. Every method at its default configuration, or at the one a ``--run`` gives (on CIFAR-10
with bf16 and channels-last for whole-network runs); the table lists the configurations that
differ from the defaults.

    python benchmarks/epsilon.py --data digits --request random:0.1 --n 32      # ~30 min, CPU
    python benchmarks/epsilon.py --data digits --request classes:3 --n 32
    python benchmarks/epsilon.py --data cifar10 --n 8 --methods famr,famr_quantile,finetune

CIFAR-10 runs at a reduced budget, since 3N + 1 ResNet-20s are trained (N originals, 2N
retrained): a seeded subset of ``--per-class`` training images per class (default 1,000) of
the 45k/5k/10k protocol, trained ``--epochs`` epochs (default 10) with the class-wise
benchmark's CPU recipe (SGD + Nesterov, one-cycle, crop + flip, bf16, channels-last).

Results: benchmarks/results/epsilon_<data>_<request>.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import famr
from famr import bench, io
from famr.data import hold_out_validation, per_class_subset
from famr.experiment import EPSILON_PROTOCOLS, epsilon_study
from famr.methods import METHODS

SETUPS = {
    "digits": {
        "arch": "small_cnn",
        "arch_args": {"width": 16},
        "train": {"epochs": 15},
        "validation": 0.2,
    },
    "cifar10": {
        "arch": "resnet20",
        "arch_args": {},
        "train": {**bench.TRAIN_CPU, "epochs": 10},
        "validation": 0.1,
        "per_class": 1000,
    },
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", choices=sorted(SETUPS), default="digits")
    p.add_argument("--data-root")
    p.add_argument("--request", default="random:0.1", help="random:FRACTION or classes:C[,C]")
    p.add_argument("--n", type=int, default=32, help="models per side (N)")
    p.add_argument("--methods", help="comma-separated (default: every method but retrain)")
    bench.add_run_argument(p, 'famr_head \'{"method": "famr", "recipe": "head"}\'')
    p.add_argument("--device")
    p.add_argument(
        "--join",
        action="store_true",
        help="add this command's rows to the results file's earlier ones (same data, request, "
        "N and setup, checked before any work; the retrained models' calibration must come out "
        "the same, or nothing is joined); the table lists the rows rerun, with the command",
    )
    p.add_argument(
        "--epochs", type=int, help="training epochs of every model (default: the setup's)"
    )
    p.add_argument(
        "--per-class",
        type=int,
        help="training images kept per class (CIFAR-10 default 1000; digits: all)",
    )
    return p.parse_args(argv)


def runs_for(args) -> dict[str, dict]:
    """``{label: config}``: every method named (default: every method but retrain) and every
    ``--run``; on CIFAR-10 with the class-wise benchmark's speed flags (bf16, channels-last)."""
    if args.methods:
        names = args.methods.split(",")
    elif args.run:  # only the labelled runs
        names = []
    else:
        names = [n for n in METHODS.names() if n != "retrain"]
    for name in names:  # checked before hours of training (parse_runs checks each --run)
        try:
            METHODS.get(name)
        except (KeyError, ValueError) as err:
            raise SystemExit(f"--methods {name}: {' '.join(str(err).split())}") from None
    runs: dict[str, dict] = {name: {"method": name} for name in names}
    runs.update(bench.parse_runs(args.run, [*runs, "retrain"]))  # retrain: calibration row
    if args.data == "cifar10":
        runs = {label: bench.with_speed(c["method"], c) for label, c in runs.items()}
    return runs


def setup_for(args) -> dict:
    """The data set's setup with the command line's overrides."""
    setup = {**SETUPS[args.data], "train": dict(SETUPS[args.data]["train"])}
    if args.epochs is not None:
        if args.epochs < 1:
            raise SystemExit(f"--epochs {args.epochs}: give an integer >= 1")
        setup["train"]["epochs"] = args.epochs
    if args.per_class is not None:
        if args.per_class < 1:
            raise SystemExit(f"--per-class {args.per_class}: give an integer >= 1")
        setup["per_class"] = args.per_class
    return setup


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def request_spec(text: str):
    kind, _, value = text.partition(":")
    if kind == "random":
        return famr.RandomForget(float(value), seed=0)
    if kind == "classes":
        return famr.ClassForget([int(c) for c in value.split(",")])
    raise SystemExit(f"--request {text!r}: use random:FRACTION or classes:C[,C]")


def main(argv=None) -> int:
    bench.reexec_with_tcmalloc(argv)
    args = parse_args(argv)
    setup = setup_for(args)
    runs = runs_for(args)  # checked before any data is read
    earlier = earlier_results(args, setup)  # --join: checked before any data is read
    root = args.data_root
    if args.data == "cifar10" and root is None:
        root = str(Path(__file__).resolve().parents[2] / "shared/data/cifar10")
    data = hold_out_validation(famr.load_dataset(args.data, root), setup["validation"], seed=0)
    if "per_class" in setup:
        data = per_class_subset(data, setup["per_class"], seed=0)
    splits = request_spec(args.request).split(data.train, data.test, data.num_classes)
    arch_args = {"num_classes": data.num_classes, "in_channels": data.in_channels}
    if data.mean is not None:  # the class-wise benchmark's normalisation (CIFAR-10)
        arch_args.update(mean=list(data.mean), std=list(data.std))
    arch_args.update(setup["arch_args"])
    log(f"{args.data}, {args.request}: {len(splits.forget)} forget examples, N = {args.n}")
    study = epsilon_study(
        data,
        splits,
        runs,
        n=args.n,
        arch=setup["arch"],
        arch_args=arch_args,
        train_config=setup["train"],
        holdout=data.validation,
        device=args.device,
        log=log,
    )
    command = "python benchmarks/epsilon.py " + " ".join(sys.argv[1:])
    env = bench.environment()
    payload = {
        "benchmark": "epsilon",
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "environment": env,
        "data": args.data,
        "request": args.request,
        "forget_count": len(splits.forget),
        "train_count": len(data.train),
        "runs": runs,
        "setup": setup,
        **study,
    }
    if earlier is not None:
        payload = joined(earlier, payload)
    out = results_path(args)
    io.write_text_atomic(out, io.json_text(payload))
    bench.update_benchmarks_md(out.stem, markdown(payload, out.name))
    log(f"wrote {out} and BENCHMARKS.md")
    return 0


def results_path(args) -> Path:
    tag = f"{args.data}_{args.request.replace(':', '').replace('.', '').replace(',', '_')}"
    return Path(__file__).resolve().parent / "results" / f"epsilon_{tag}.json"


def earlier_results(args, setup: dict) -> dict | None:
    """``--join``: the results file this command's rows join, which must have been measured on
    the same data, request, N and setup (else the command stops before any work)."""
    if not args.join:
        return None
    out = results_path(args)
    if not out.exists():
        raise SystemExit(f"--join: {out} does not exist; run without --join first")
    earlier = json.loads(out.read_text())
    mine = {"data": args.data, "request": args.request, "n": args.n, "setup": setup}
    theirs = {k: earlier.get(k) for k in mine}
    if json.loads(json.dumps(mine)) != theirs:
        raise SystemExit(
            f"--join: {out.name} was measured with {json.dumps(theirs)}, this command would "
            f"measure {json.dumps(mine)}; its rows would not compare"
        )
    return earlier


def joined(earlier: dict, payload: dict) -> dict:
    """``payload``'s rows added to ``earlier``'s (a method measured again replaces its row),
    provided the retrained models score the same calibration (the same models, trained again
    from the same seeds); the file keeps its command and date and lists each rerun."""
    mine = payload["rows"]["retrain"]["calibration"]
    theirs = earlier["rows"]["retrain"]["calibration"]
    if any(abs(mine[k] - theirs[k]) > 1e-9 for k in ("forget_quality", "score")):
        raise SystemExit(
            f"--join: the retrained models' calibration came out F = "
            f"{mine['forget_quality']:.6f}, not the file's {theirs['forget_quality']:.6f}: "
            "they are not the same models (another machine or library?), so nothing is joined"
        )
    rows = {k: v for k, v in payload["rows"].items() if k != "retrain"}
    rerun = {
        "rows": list(rows),
        **{k: payload[k] for k in ("command", "date", "environment")},
    }
    return {
        **earlier,
        "rows": {**earlier["rows"], **rows},
        "runs": {**earlier.get("runs", {}), **payload["runs"]},
        "reruns": [*earlier.get("reruns", []), rerun],
    }


def _cells(report: dict) -> list[str]:
    if "refused" in report:
        return ["refuses this request", "-", "-", "-", "-", "-"]
    return [
        f"{report['forget_quality']:.3f}",
        f"{report['score']:.3f}",
        f"{report['retain_acc']:.1f}",
        f"{report['test_acc']:.1f}",
        f"{100 * report['peaky_or_separated']:.0f}",
        f"{report['unlearned_spread']:.2f}",
    ]


def markdown(payload: dict, name: str) -> str:
    env = payload["environment"]
    rows = payload["rows"]
    n = payload["n"]
    calibration = rows["retrain"]["calibration"]
    setup = payload["setup"]
    if "per_class" in setup:
        trained_on = (
            f"{payload['train_count']} training images ({setup['per_class']} per class, a seeded "
            f"draw from the {100 - 100 * setup['validation']:.0f} % not held out)"
        )
    else:
        trained_on = f"{100 - 100 * setup['validation']:.0f} % of the training set"
    lines = [
        f"## Per-example epsilon score ({payload['data']}, {payload['request']}, N = {n})",
        "",
        f"Command: `{payload['command']}`; {env['cpu_count']}-core {env['machine']} CPU, kernels "
        f"{env['cpu_capability']}, torch {env['torch']}, {payload['date']}; "
        f"{payload['setup']['arch']} trained {payload['setup']['train']['epochs']} epochs on "
        f"{trained_on}; "
        f"{payload['forget_count']} forget examples; every method at its default configuration "
        f"but where listed under the tables ({name}). Definition and protocols: docs/epsilon.md. *F* = forgetting quality (mean "
        "points over the forget set: 1 = indistinguishable from retraining), *score* = F × "
        "RA ratio × TA ratio to the retrained models, *eps = 50* = share of examples separated "
        "completely or with a far narrower unlearned sample (no points), *spread* = median over "
        "examples of the range of the unlearned models' confidences (0 = the same model every "
        "run).",
        "",
        f"Calibration: {n} more retrained models (seeds {n}..{2 * n - 1}) against the {n} reference "
        f"ones score F = {calibration['forget_quality']:.3f}, score "
        f"{calibration['score']:.3f}: the best a method can reach at N = {n} (with few models "
        "the attacks find spurious separation even between two samples of one distribution).",
    ]
    for protocol in EPSILON_PROTOCOLS:
        title = {
            "one_original": f"{n} runs from one original (the challenge's protocol)",
            "n_originals": f"one run from each of {n} originals (seeds 0..{n - 1})",
        }[protocol]
        lines += [
            "",
            f"**{title}**",
            "",
            "| method | F | score | RA | TA | eps = 50 (%) | spread |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for method, reports in rows.items():
            if method == "retrain":
                continue
            lines.append(f"| {method} | " + " | ".join(_cells(reports[protocol])) + " |")
    for rerun in payload.get("reruns", []):
        env = rerun["environment"]
        lines += [
            "",
            f"Rows measured again on {rerun['date']} ({env['cpu_count']}-core {env['machine']} "
            f"CPU, kernels {env['cpu_capability']}, torch {env['torch']}), against the same "
            f"retrained models (the calibration came out the same): "
            f"{', '.join(f'`{r}`' for r in rerun['rows'])}, with `{rerun['command']}`.",
        ]
    configured = {
        label: {k: v for k, v in config.items() if k != "method" or v != label}
        for label, config in payload.get("runs", {}).items()
    }
    configured = {label: config for label, config in configured.items() if config}
    if configured:
        lines += ["", "Configurations other than the defaults:"]
        lines += [
            f"- `{label}`: `{json.dumps(c, sort_keys=True)}`" for label, c in configured.items()
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
