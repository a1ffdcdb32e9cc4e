"""A transformer through the same command line: a timm ViT on the Tiny-ImageNet subset (CPU).

Trains ``timm:vit_tiny_patch16_224`` rebuilt for 64 px images (``--arch-arg img_size=64
patch_size=8 depth=6``: 64 tokens of 8x8 patches, 6 of its 12 blocks, so that a CPU trains it
in minutes) on the 10-class Tiny-ImageNet subset with 10 % of each class held out, retrains it
without class 0 as the reference, then forgets class 0 with ``famr forget`` for each method
(against the reference) and attacks every model with ``famr attack`` (linear probe on the
held-out split, relearning). Every step is the command line a user runs.

    python benchmarks/vit_tiny_imagenet.py                 # ~20 min on a 2-core CPU
    python benchmarks/vit_tiny_imagenet.py --epochs 1 --methods famr --work /tmp/v --quick

Results: benchmarks/results/vit_tiny_imagenet.json and its BENCHMARKS.md section.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from famr import bench, io

HERE = Path(__file__).resolve()
ARCH = "timm:vit_tiny_patch16_224"
ARCH_ARGS = ("img_size=64", "patch_size=8", "depth=6")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-root", default=str(HERE.parents[2] / "shared/data/tiny-imagenet-200-sub10")
    )
    p.add_argument("--work", default="/tmp/famr-vit", help="checkpoints and attack outputs")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--methods", nargs="+", default=["famr", "famr_retain", "neggrad_plus", "scrub"])
    p.add_argument("--quick", action="store_true", help="a smoke run: no BENCHMARKS.md update")
    p.add_argument(
        "--render", action="store_true", help="rewrite the BENCHMARKS.md section from --out"
    )
    p.add_argument("--out", default=str(HERE.parent / "results" / "vit_tiny_imagenet.json"))
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        payload = json.loads(Path(args.out).read_text())
        # the run used bf16 exactly when its machine had native bf16 (see main)
        payload.setdefault("bf16", payload["environment"]["native_bf16"])
        write_section(payload)
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = ["--data", "imagefolder", "--data-root", args.data_root]
    speed = ["--set", "bf16=true"] if io.native_bf16() else []
    schedule = ["--epochs", str(args.epochs), "--lr", "0.001", "--batch-size", "128"]
    schedule += [
        "--set",
        "optimizer=adam",
        "--set",
        "schedule=cosine",
        "--set",
        "augment=crop_flip",
    ]
    schedule += ["--validation", "0.1", *speed]
    arch = ["--arch", ARCH] + [x for a in ARCH_ARGS for x in ("--arch-arg", a)]
    models = {"original": work / "original.safetensors", "retrain": work / "retrain.safetensors"}
    rows: dict[str, dict] = {}
    for role, path in models.items():
        bench.log(f"training the {role} ViT ({args.epochs} epochs)")
        extra = ["--exclude-classes", "0"] if role == "retrain" else []
        wall, _ = bench.run_famr(
            ["train", *data, *arch, *schedule, *extra, "--out", str(path)]
            + ["--quiet", "--overwrite"]
        )
        meta = io.read_json(io.sidecar_path(path), "metadata")
        rows[role] = {"seconds": meta["metrics"]["seconds"], "wall_seconds": wall}
    for method in args.methods:
        bench.log(f"famr forget --method {method}")
        out = work / f"{method}.safetensors"
        wall, _ = bench.run_famr(
            ["forget", *data, "--checkpoint", str(models["original"]), "--classes", "0"]
            + ["--method", method, "--reference", str(models["retrain"]), *speed]
            + ["--out", str(out), "--quiet", "--overwrite", "--write-anyway"]
        )
        meta = io.read_json(io.sidecar_path(out), "metadata")
        rows[method] = {
            **meta["metrics"],
            "wall_seconds": wall,
            "refused": meta["checks"]["refused"],
        }
        models[method] = out
    for i, method in enumerate(args.methods):
        bench.log(f"famr attack on {method}")
        folder = work / f"attack-{method}"
        reference = ["--retrained", str(models["retrain"])] if i == 0 else []
        bench.run_famr(
            ["attack", *data, "--original", str(models["original"])]
            + ["--unlearned", str(models[method]), *reference, "--classes", "0"]
            + ["--out", str(folder), "--overwrite"]
        )
        result = json.loads((folder / "attack.json").read_text())["results"]
        rows[method].update(result["unlearned"])
        if i == 0:  # the original and the retrained model, attacked once
            rows["original"].update(result["original"])
            rows["retrain"].update(result["retrained"])
    env = bench.environment()
    command = "python benchmarks/vit_tiny_imagenet.py " + " ".join(sys.argv[1:])
    payload = {
        "benchmark": "vit_tiny_imagenet",
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "environment": env,
        "arch": ARCH,
        "arch_args": ARCH_ARGS,
        "epochs": args.epochs,
        "bf16": bool(speed),
        "rows": rows,
    }
    out = Path(args.out)
    io.write_text_atomic(out, io.json_text(payload))
    if not args.quick:
        write_section(payload)
        bench.log(f"wrote {out} and BENCHMARKS.md")
    return 0


def write_section(payload: dict) -> None:
    """The BENCHMARKS.md section of a results file (``--render`` rewrites it from the file)."""
    env, rows, command = payload["environment"], payload["rows"], payload["command"]
    keys = [
        ("forget_acc", "forget acc"),
        ("test_retain_acc", "TA"),
        ("test_forget_acc", "TA forgotten"),
        ("avg_gap", "avg gap"),
        ("probe_test_forget_acc", "probe forgotten"),
        ("probe_test_acc", "probe retained"),
        ("relearn_forget_acc", "relearned"),
        ("seconds", "seconds"),
    ]
    lines = [
        "## A transformer: timm ViT on the Tiny-ImageNet subset (CPU, through the CLI)",
        "",
        f"Command: `{command}`; {env['cpu_count']}-core {env['machine']} CPU (kernels "
        f"{env['cpu_capability']}), torch {env['torch']}, {payload['date']}. Model: `{ARCH}` "
        f"with `{' '.join(ARCH_ARGS)}` (64 px, 64 tokens, 6 blocks), trained {payload['epochs']} "
        "epochs (Adam, lr 1e-3, cosine, crop + flip"
        + (", bf16" if payload.get("bf16") else "")
        + ") on 90 % of the 10-class subset; `retrain` = the same without class 0. Rows: "
        "`famr forget --classes 0 --method M --reference retrain` at each method's defaults "
        "(`--write-anyway`: a result the retained-accuracy check would refuse is still "
        "measured; `refused` says so), then `famr attack` (probe fit on the held-out 10 %, "
        "relearning as in the CIFAR-10 table). Accuracies in %; seconds of the method alone "
        "(training time for `original` and `retrain`).",
        "",
        "| run | " + " | ".join(t for _, t in keys) + " | refused |",
        "|---|" + "---:|" * len(keys) + "---|",
    ]
    for name, r in rows.items():
        cells = [f"{r[k]:.2f}" if isinstance(r.get(k), (int, float)) else "-" for k, _ in keys]
        refused = r.get("refused") or "-"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {refused} |")
    bench.update_benchmarks_md("vit_tiny_imagenet", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
