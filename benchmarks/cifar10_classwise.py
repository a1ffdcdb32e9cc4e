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
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

common.reexec_with_tcmalloc()

import json  # noqa: E402

import torch  # noqa: E402

import famr  # noqa: E402
from famr import io  # noqa: E402
from famr.data import hold_out_validation  # noqa: E402
from famr.experiment import compare_methods  # noqa: E402

TRAIN_CPU = {
    "epochs": 30,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "schedule": "onecycle",
    "augment": "crop_flip",
    "bf16": True,
    "channels_last": True,
    "batchnorm": "train",
}
PROFILES = {
    "cpu": {"arch": "resnet20", "train": TRAIN_CPU},
    "gpu": {
        "arch": "resnet18_cifar",
        "train": {**TRAIN_CPU, "epochs": 15, "batch_size": 256, "lr": 0.1},
    },
}
TRAINING_CODE_VERSION = 1  # bump when the training code changes in a way that changes models


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
    p.add_argument("--stage", choices=["train", "all"], default="all")
    p.add_argument("--device", default=None)
    p.add_argument("--cache", default=str(Path(__file__).resolve().parent / "cache"))
    p.add_argument(
        "--out",
        default=None,
        help="results JSON (default benchmarks/results/cifar10_classwise_<profile>.json)",
    )
    return p.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def setup(args):
    profile = PROFILES[args.profile]
    train_cfg = dict(profile["train"])
    classes = args.classes
    if args.quick:
        train_cfg["epochs"] = 2
        classes = classes[:1]
    data = hold_out_validation(famr.load_dataset("cifar10", args.data_root), fraction=0.1, seed=0)
    arch_args = {
        "num_classes": 10,
        "in_channels": 3,
        "mean": list(data.mean),
        "std": list(data.std),
    }
    return profile["arch"], arch_args, train_cfg, classes, data


def training_key(arch, arch_args, train_cfg, seed, excluded, device):
    return {
        "label": f"{arch} seed {seed} excluding {excluded}",
        "arch": arch,
        "arch_args": arch_args,
        "train": train_cfg,
        "seed": seed,
        "excluded": excluded,
        "data": "cifar10 45k/5k/10k, validation seed 0",
        "code": TRAINING_CODE_VERSION,
        "device": device.type,
    }


def trained_model(args, arch, arch_args, train_cfg, data, device, seed, excluded=None):
    """The original (``excluded=None``) or the model retrained without class ``excluded``,
    from the cache when it is there, else trained now and cached."""
    cache = Path(args.cache)
    key = training_key(
        arch, arch_args, train_cfg, seed, [] if excluded is None else [excluded], device
    )
    if excluded is None:

        def build():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                initial = famr.create_model(arch, **arch_args)
            log(f"training original, seed {seed}")
            result = famr.train(initial, data.train, device=device, seed=seed, **train_cfg)
            return result.model, {"seconds": result.seconds, "history": result.history}

    else:

        def build():
            # the original is needed only to retrain (its architecture and init scheme), so a
            # cache hit never loads or re-evaluates it
            original, _ = trained_model(args, arch, arch_args, train_cfg, data, device, seed)
            splits = famr.ClassForget(excluded).split(data.train, data.test, 10)
            log(f"retraining without class {excluded}, seed {seed}")
            result = famr.unlearn(
                original,
                splits.forget,
                splits.retain,
                method="retrain",
                device=device,
                seed=seed,
                **train_cfg,
            )
            return result.model, {"seconds": result.seconds, "history": result.history}

    model, record = common.cached_training(cache, key, build, log)
    acc = famr.evaluate(model, test_retain=data.test, metrics=["test_retain_acc"], device=device)[
        "test_retain_acc"
    ]
    record["test_acc_all_classes"] = acc
    log(
        f"seed {seed} excluding {excluded}: test accuracy {acc:.2f} % (all classes), trained in {record['seconds']:.0f} s"
    )
    return model, record


def main(argv=None) -> int:
    args = parse_args(argv)
    device = famr.resolve_device(args.device)
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
                as_result(original, original_record, "train"),
                as_result(retrained, retrain_record, "retrain"),
                splits,
                data,
                runs,
                seed=seed,
                device=device,
                log=log,
                probe_data=data.validation,  # the attacks: linear probe and relearning
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


def as_result(model, record, method):
    """A trained (possibly cached) model as a famr Result, with its measured training time."""
    from famr.config import TrainConfig

    return famr.Result(
        model.eval(), method, TrainConfig(), record.get("history", []), record["seconds"]
    )


QUICK = ("famr", "famr_no_retain", "famr_retain", "gradient_ascent", "ssd")
SPEED = {"bf16": True, "channels_last": True}  # measured 2.6x faster conv training on this CPU
DEFAULTS = ("finetune", "l1_sparse", "influence", "ssd")


def method_configs(args) -> dict[str, dict]:
    """Run name -> config, from the validation study (famr_study.py) plus the baselines' defaults."""
    study_path = Path(__file__).resolve().parent / "results" / f"famr_study_{args.profile}.json"
    if not study_path.exists():
        raise SystemExit(
            f"{study_path} is missing: run benchmarks/famr_study.py first (it picks the configs)"
        )
    chosen = json.loads(study_path.read_text())["chosen"]
    no_retain = {"method": "famr", **chosen["famr"]["config"]}
    with_retain = {"method": "famr_retain", **chosen["famr_retain"]["config"]}
    recommended = min((no_retain, with_retain), key=lambda c: chosen[c["method"]]["score"])
    runs = {"famr": recommended, "famr_no_retain": no_retain}
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
    return {name: with_speed(config["method"], config) for name, config in runs.items()}


def with_speed(method: str, config: dict) -> dict:
    """Speed flags: bf16 + channels_last for whole-network runs; bf16 feature extraction for
    head-only FAMR runs (their body runs once, under autocast)."""
    cfg = famr.METHODS.get(method).meta["config"]()
    if config.get("params", cfg.params) == "head":
        return (
            {**config, "bf16": True} if hasattr(cfg, "cache_features") else config
        )  # bf16 features
    return {**config, **SPEED}


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


def write_results(args, arch, train_cfg, runs, blocks) -> None:
    names = list(blocks[0]["runs"])
    summary = {}
    for name in names:
        values = {
            k: [b["runs"][name][k] for b in blocks if k in b["runs"][name]] for k in SUMMARY_KEYS
        }
        summary[name] = {k: common.mean_std(v) for k, v in values.items() if v}
        diverged = sum("diverged" in b["runs"][name] for b in blocks)
        if diverged:
            summary[name]["diverged_blocks"] = diverged
    original = summary["original"]["test_retain_acc"]["mean"]
    command = "python benchmarks/cifar10_classwise.py " + " ".join(sys.argv[1:])
    payload = {
        "benchmark": "cifar10_classwise",
        "profile": args.profile,
        "quick": args.quick,
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "environment": common.environment(),
        "arch": arch,
        "train_config": train_cfg,
        "configs": runs,
        "blocks": blocks,
        "summary": summary,
        # the whole process so far: data set, original, retrained models, every method's run
        "peak_rss_mib": common.peak_rss_mib(),
    }
    out = Path(
        args.out
        or Path(__file__).resolve().parent
        / "results"
        / f"cifar10_classwise_{args.profile}{'_quick' if args.quick else ''}.json"
    )
    io.write_text_atomic(out, io.json_text(payload))
    env = payload["environment"]
    lines = [
        f"## CIFAR-10 class-wise forgetting ({args.profile} profile{', quick' if args.quick else ''})",
        "",
        f"Command: `{command}`; {env['cpu_count']}-core {env['machine']} CPU (kernels "
        f"{env['cpu_capability']}), torch {env['torch']}, "
        f"{payload['date']}; {arch}, forget classes {sorted({c for b in blocks for c in b['forget']['classes']})}, "
        f"seeds {args.seeds}. Mean ± std over {len(blocks)} class/seed blocks; every number from one run "
        f"({out.name}). The original model's test accuracy: {blocks[0]['original_test_acc_all_classes']:.2f} % "
        f"on all 10 classes, {original:.2f} % on the retained ones. Configurations: `configs` in the JSON; "
        "UA, RA, TA, MIA-efficacy in %, avg gap in points against `retrain`, TA forgotten = test "
        "accuracy on the forgotten class, seconds of the method alone (training time for `original` "
        "and `retrain`). The attacks (famr.attacks): *probe* = test accuracy on the forgotten "
        "(retained) classes of a logistic-regression probe fit on the frozen penultimate features "
        "of the 5k validation split; *relearned* = test accuracy on the forgotten class after 30 "
        "full-batch SGD steps (lr 0.01, momentum 0.9) on 1 % of its training images mixed with 3x "
        "as many retained ones; *steps to half* = steps until half the original's level, per "
        "block. The `retrain` row is the level real forgetting reaches; attack time is not in "
        "*seconds*. Peak resident memory of the benchmark process: "
        f"{payload['peak_rss_mib']:.0f} MiB (the uint8 data set on the device, models, every run).",
        "",
        "| run | " + " | ".join(t for _, t in TABLE) + " |",
        "|---|" + "---:|" * len(TABLE),
    ]
    for name in names:
        cells = []
        if "diverged_blocks" in summary[name] and len(summary[name]) == 1:
            lines.append(f"| {name} | diverged (NaN objective) |" + " |" * (len(TABLE) - 1))
            continue
        for key, _ in TABLE:
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
    common.update_benchmarks_md(
        f"cifar10_classwise_{args.profile}{'_quick' if args.quick else ''}", "\n".join(lines)
    )
    log(f"wrote {out} and BENCHMARKS.md")


if __name__ == "__main__":
    sys.exit(main())
