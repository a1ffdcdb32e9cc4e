"""CIFAR-10 class-wise forgetting: FAMR and every baseline against retraining from scratch.

Protocol (SalUn / Unlearn-Sparse): 45k train / 5k validation (10 % of each class, seed 0) /
10k test. Per seed: train the original once; per forgotten class: retrain once on the retain
set with the same schedule, run every method with its documented configuration (chosen on the
validation split, see BENCHMARKS.md), evaluate all against the retrained model.

    python benchmarks/cifar10_classwise.py --data-root ../shared/data/cifar10            # CPU profile
    python benchmarks/cifar10_classwise.py --quick                                         # smoke run
    python benchmarks/cifar10_classwise.py --profile gpu --device cuda                     # ResNet-18

Trained models are cached under --cache by a hash of their full configuration, so an
interrupted or repeated run skips finished trainings.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import famr
from famr import bench, io
from famr.api import resolve_device
from famr.bench import CIFAR10_PROFILES as PROFILES
from famr.bench import log, with_speed
from famr.experiment import compare_methods


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-root", default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10")
    )
    p.add_argument("--profile", choices=sorted(PROFILES), default="cpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--classes", type=int, nargs="+", default=[3, 8])
    p.add_argument("--quick", action="store_true", help="2-epoch trainings, one class: a smoke run")
    p.add_argument(
        "--methods", nargs="+", help="run only these of the table's runs (default: every one)"
    )
    p.add_argument(
        "--epochs",
        type=int,
        help="training epochs of the original and retrained models "
        "(default: the profile's; a reduced budget is stated in the results)",
    )
    p.add_argument("--arch", help="another architecture than the profile's (smoke runs)")
    p.add_argument(
        "--subset",
        type=int,
        help="keep this many training images and a fifth as many validation and test images "
        "(seeded samples): a smoke run of the whole pipeline",
    )
    p.add_argument(
        "--study",
        choices=sorted(PROFILES),
        help="whose validation study picks the configurations (default: this profile's)",
    )
    bench.add_relearn_argument(p)
    bench.add_run_argument(p, 'famr_lr005 \'{"method": "famr", "lr": 0.05}\'')
    p.add_argument(
        "--table-only",
        metavar="JSON",
        help="rewrite the BENCHMARKS.md section of a results file from the file (no run)",
    )
    p.add_argument("--stage", choices=["train", "all"], default="all")
    p.add_argument("--device", default=None)
    p.add_argument("--cache", default=str(Path(__file__).resolve().parent / "cache"))
    p.add_argument(
        "--out",
        default=None,
        help="results JSON (default benchmarks/results/cifar10_classwise_<profile>.json); its "
        "name is also the BENCHMARKS.md section written",
    )
    return p.parse_args(argv)


def setup(args):
    arch, arch_args, train_cfg, data = bench.cifar10_protocol(
        args.data_root, args.profile, args.quick
    )
    if args.epochs:
        train_cfg["epochs"] = args.epochs
    arch = args.arch or arch
    if args.subset:
        from dataclasses import replace

        from famr.data.files import sample

        small = max(1, args.subset // 5)
        data = replace(
            data,
            train=sample(data.train, args.subset),
            validation=sample(data.validation, small),
            test=sample(data.test, small),
        )
    classes = args.classes[:1] if args.quick else args.classes
    return arch, arch_args, train_cfg, classes, data


def data_label(args) -> str:
    """The data's part of the model cache key (a subset is another data set)."""
    label = bench.CIFAR10_DATA_LABEL
    return label + (f", subset {args.subset}" if args.subset else "")


def trained_model(args, arch, arch_args, train_cfg, data, device, seed, excluded=None):
    """The original (``excluded=None``) or the model retrained without class ``excluded``
    (famr.bench.trained_model: cached by configuration)."""
    return bench.trained_model(
        Path(args.cache),
        data,
        arch=arch,
        arch_args=arch_args,
        train_config=train_cfg,
        seed=seed,
        data_label=data_label(args),
        device=device,
        without=None if excluded is None else famr.ClassForget(excluded),
    )


def main(argv=None) -> int:
    bench.reexec_with_tcmalloc(argv)
    args = parse_args(argv)
    if args.table_only:
        stored = json.loads(Path(args.table_only).read_text())
        args.out = args.table_only
        args.profile, args.quick = stored["profile"], stored["quick"]
        args.seeds = sorted({b["seed"] for b in stored["blocks"]})
        rates = stored.get("relearn_lr", 0.01)
        args.relearn_lr = list(rates) if isinstance(rates, list) else [rates]
        write_results(
            args,
            stored["arch"],
            stored["train_config"],
            stored["configs"],
            stored["blocks"],
            stored,
        )
        return 0
    device = resolve_device(args.device)
    arch, arch_args, train_cfg, classes, data = setup(args)
    if args.stage == "train":
        for seed in args.seeds:
            for cls in [None, *classes]:
                trained_model(args, arch, arch_args, train_cfg, data, device, seed, cls)
        return 0
    runs = method_configs(args)  # fails early when the validation study has not been run
    blocks = []
    for seed in args.seeds:
        original, original_record = trained_model(
            args, arch, arch_args, train_cfg, data, device, seed
        )
        for cls in classes:
            # retrained lazily, so each class's results are written before the next retraining
            retrained, retrain_record = trained_model(
                args, arch, arch_args, train_cfg, data, device, seed, cls
            )
            splits = famr.ClassForget(cls).split(data.train, data.test, 10)
            log(f"seed {seed}, forgetting class {cls} ({data.class_names[cls]}): {len(runs)} runs")
            experiment = compare_methods(
                bench.as_result(original, original_record, "train"),
                bench.as_result(retrained, retrain_record, "retrain"),
                splits,
                data,
                runs,
                seed=seed,
                device=device,
                log=log,
                probe_data=data.validation,  # the attacks: linear probe and relearning
                attack_config={"relearn": {"lr": relearn_lr(args)}},
            )
            for run in experiment.results["runs"].values():
                run.pop("history", None)  # kept out of the results file: it is large
            blocks.append(
                {
                    **experiment.results,
                    "arch": arch,
                    "seed": seed,
                    "original_test_acc_all_classes": original_record["test_acc_all_classes"],
                }
            )
            write_results(args, arch, train_cfg, runs, blocks)  # after every block: nothing is lost
    return 0


def relearn_lr(args):
    return bench.relearn_lr(args.relearn_lr)


QUICK = ("famr", "famr_head", "famr_retain", "gradient_ascent", "ssd")
DEFAULTS = ("finetune", "l1_sparse", "influence", "ssd")


def method_configs(args) -> dict[str, dict]:
    """Run name -> config, from the validation study (famr_study.py) plus the baselines' defaults."""
    study = args.study or args.profile
    study_path = Path(__file__).resolve().parent / "results" / f"famr_study_{study}.json"
    if not study_path.exists():
        raise SystemExit(
            f"{study_path} is missing: run benchmarks/famr_study.py first (it picks the configs)"
        )
    chosen = json.loads(study_path.read_text())["chosen"]
    runs = {
        # the one famr at its defaults: given the retain set, its last_stage recipe (whose
        # values a test keeps equal to the study's famr_last_stage choice)
        "famr": {"method": "famr"},
        # famr without retain data: its head recipe at the study's choice
        "famr_head": dict(chosen["famr_head"]["config"]),
    }
    for lam in (1.0, 10.0, 100.0, 1000.0):
        runs[f"famr_literal_lam{lam:g}"] = {"method": "famr_literal", "lam": lam}
    for name in (
        "famr_retain",
        "uniform_kl",
        "gradient_ascent",
        "neggrad_plus",
        "random_label",
        "salun",
        "scrub",
    ):
        runs[name] = {"method": name, **chosen[name]["config"]}
    for name in DEFAULTS:
        runs[name] = {"method": name}
    if args.quick:  # a smoke run: FAMR's three forms and two cheap baselines
        runs = {k: v for k, v in runs.items() if k in QUICK}
    runs.update(bench.parse_runs(args.run, list(runs)))
    if args.methods:
        unknown = sorted(set(args.methods) - set(runs))
        if unknown:
            raise SystemExit(f"--methods {unknown}: not among the table's runs {sorted(runs)}")
        runs = {k: v for k, v in runs.items() if k in args.methods or k in dict(args.run)}
    return {name: with_speed(config["method"], config) for name, config in runs.items()}


SUMMARY_KEYS = (
    "forget_acc",
    "retain_acc",
    "test_retain_acc",
    "test_forget_acc",
    "ua",
    "mia_efficacy",
    "avg_gap",
    "tow",
    "seconds",
    "time_ratio",
    "probe_test_forget_acc",
    "probe_test_acc",
    "relearn_forget_acc",
)
TABLE = [
    ("ua", "UA"),
    ("retain_acc", "RA"),
    ("test_retain_acc", "TA"),
    ("test_forget_acc", "TA forgotten"),
    ("mia_efficacy", "MIA-efficacy"),
    ("avg_gap", "avg gap"),
    ("tow", "ToW"),
    ("probe_test_forget_acc", "probe forgotten"),
    ("probe_test_acc", "probe retained"),
    ("relearn_forget_acc", "relearned"),
    ("relearn_steps_to_half", "steps to half"),
    ("seconds", "seconds"),
    ("time_ratio", "time / retrain"),
]


def relearn_text(args) -> str:
    if len(args.relearn_lr) == 1:
        return f"lr {args.relearn_lr[0]:g}"
    rates = ", ".join(f"{r:g}" for r in args.relearn_lr)
    return f"one run at each lr of {rates}, the strongest reported"


def rate_key(rate) -> str:
    return f"relearn_lr_{float(rate):g}"


def write_results(args, arch, train_cfg, runs, blocks, stored=None) -> None:
    """Write the results file and its BENCHMARKS.md section (``stored``: a results file being
    rewritten, whose date, environment and memory are kept)."""
    names = list(blocks[0]["runs"])
    rates = args.relearn_lr if len(args.relearn_lr) > 1 else []
    table = TABLE + [(rate_key(r), f"relearned at lr {r:g}") for r in rates]
    summary = {}
    for name in names:
        values = {
            k: [b["runs"][name][k] for b in blocks if k in b["runs"][name]] for k in SUMMARY_KEYS
        }
        for r in rates:  # the sweep's runs, one column per rate (relearn_by_lr keys str(rate))
            found = [b["runs"][name].get("relearn_by_lr", {}).get(str(r)) for b in blocks]
            values[rate_key(r)] = [v for v in found if v is not None]
        summary[name] = {k: bench.mean_std(v) for k, v in values.items() if v}
        diverged = sum("diverged" in b["runs"][name] for b in blocks)
        if diverged:
            summary[name]["diverged_blocks"] = diverged
    original = summary["original"]["test_retain_acc"]["mean"]
    command = (
        stored["command"]
        if stored
        else "python benchmarks/cifar10_classwise.py " + shlex.join(sys.argv[1:])
    )
    payload = {
        "benchmark": "cifar10_classwise",
        "profile": args.profile,
        "quick": args.quick,
        "command": command,
        "date": stored["date"] if stored else time.strftime("%Y-%m-%d"),
        "environment": stored["environment"] if stored else bench.environment(),
        "arch": arch,
        "train_config": train_cfg,
        "configs": runs,
        "relearn_lr": relearn_lr(args),
        "blocks": blocks,
        "summary": summary,
        # the whole process so far: data set, original, retrained models, every method's run
        "peak_rss_mib": stored["peak_rss_mib"] if stored else bench.peak_rss_mib(),
    }
    out = Path(
        args.out
        or Path(__file__).resolve().parent
        / "results"
        / f"cifar10_classwise_{args.profile}{'_quick' if args.quick else ''}.json"
    )
    if not stored:  # a rewrite of the section leaves the file as it was measured
        io.write_text_atomic(out, io.json_text(payload))
    env = payload["environment"]
    lines = [
        f"## CIFAR-10 class-wise forgetting ({args.profile} profile{', quick' if args.quick else ''})",
        "",
        f"Command: `{command}`; "
        + (f"GPU {env['cuda']} (device {args.device}), " if env.get("cuda") else "")
        + f"{env['cpu_count']}-core {env['machine']} CPU (kernels "
        f"{env['cpu_capability']}), torch {env['torch']}, "
        f"{payload['date']}; {arch}, forget classes {sorted({c for b in blocks for c in b['forget']['classes']})}, "
        f"seeds {args.seeds}; originals and retrained models trained {train_cfg['epochs']} epochs"
        + (f" on a {args.subset}-image subset" if args.subset else "")
        + f". Mean ± std over {len(blocks)} class/seed blocks; every number from one run "
        f"({out.name}). The original model's test accuracy: {blocks[0]['original_test_acc_all_classes']:.2f} % "
        f"on all 10 classes, {original:.2f} % on the retained ones. Configurations: `configs` in the JSON; "
        "UA, RA, TA, MIA-efficacy in %, avg gap in points against `retrain`, TA forgotten = test "
        "accuracy on the forgotten class, seconds of the method alone (training time for `original` "
        "and `retrain`). The attacks (famr.attacks): *probe* = test accuracy on the forgotten "
        "(retained) classes of a logistic-regression probe fit on the frozen penultimate features "
        "of the 5k validation split; *relearned* = test accuracy on the forgotten class after 30 "
        f"full-batch SGD steps ({relearn_text(args)}, momentum 0.9) on 1 % of its training images "
        "mixed with 3x as many retained ones; *steps to half* = steps until half the original's "
        "level (of the strongest run), per "
        "block. The `retrain` row is the level real forgetting reaches; attack time is not in "
        "*seconds*. Peak resident memory of the benchmark process: "
        f"{payload['peak_rss_mib']:.0f} MiB (the uint8 data set on the device, models, every run).",
        "",
        "| run | " + " | ".join(t for _, t in table) + " |",
        "|---|" + "---:|" * len(table),
    ]
    for name in names:
        cells = []
        if "diverged_blocks" in summary[name] and len(summary[name]) == 1:
            lines.append(f"| {name} | diverged (NaN objective) |" + " |" * (len(table) - 1))
            continue
        for key, _ in table:
            if key == "relearn_steps_to_half":  # per block: a count of steps, or never
                steps = [b["runs"][name].get(key, "-") for b in blocks]
                cells.append(" / ".join("never" if s is None else str(s) for s in steps))
                continue
            if key not in summary[name]:
                cells.append("-")
                continue
            m, sd = summary[name][key]["mean"], summary[name][key]["std"]
            fmt = "{:.3f}" if key in ("tow", "time_ratio") else "{:.2f}"
            cells.append(fmt.format(m) + (f" ± {fmt.format(sd)}" if len(blocks) > 1 else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if out.resolve().parent == Path(__file__).resolve().parent / "results":
        bench.update_benchmarks_md(out.stem, "\n".join(lines))  # its own section per file
        log(f"wrote {'' if stored else f'{out} and '}BENCHMARKS.md")
    elif stored:
        log("\n".join(lines))  # BENCHMARKS.md holds only results in benchmarks/results
    else:
        log(f"wrote {out} (BENCHMARKS.md is written only for results in benchmarks/results)")


if __name__ == "__main__":
    sys.exit(main())
