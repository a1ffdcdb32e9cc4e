"""FAMR and the retrain-free baselines on a torchvision model over an ImageFolder tree (GPU).

Trains ``--arch`` (default torchvision ResNet-50, random init: nothing is downloaded) on the
Tiny-ImageNet subset for a few epochs, then forgets one class with every method but
``retrain`` and reports, per method: seconds, training images/s, peak GPU memory, and the
forget / retain / test accuracies. Sized for one 10-minute H100 session
(``benchmarks/gpu_imagefolder.sh``); ``--device cpu --arch torchvision:resnet18
--image-size 32 --epochs 1 --max-steps 2`` is a smoke run anywhere.

Results: benchmarks/results/gpu_imagefolder.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from famr import bench

HERE = Path(__file__).resolve()
# every method but retraining; influence and famr_newton (Hessian-vector products over a
# ResNet-50) and the methods that need held-out data (famr_quantile) are left to their own runs
SKIPPED = ("retrain", "influence", "famr_newton")


def retrain_free() -> list[str]:
    import famr
    from famr.methods import METHODS

    return [
        m
        for m in famr.list_methods()
        if m not in SKIPPED and "holdout" not in METHODS.get(m).meta["needs"]
    ]


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--data-root", default=str(HERE.parents[2] / "shared/data/tiny-imagenet-200-sub10")
    )
    p.add_argument("--arch", default="torchvision:resnet50")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=15, help="training epochs of the original")
    p.add_argument("--forget-class", type=int, default=0)
    p.add_argument("--methods", nargs="+", default=None, help="default: every retrain-free method")
    p.add_argument("--max-steps", type=int, default=None, help="cap every run (smoke runs)")
    p.add_argument("--device", default="cuda")
    p.add_argument(
        "--data-path",
        choices=["tensors", "files"],
        default="tensors",
        help="'files': the file data path (images decoded by DataLoader workers where a run "
        "needs them; evaluation streams batch by batch)",
    )
    p.add_argument("--workers", type=int, default=8, help="image-decoding worker processes")
    p.add_argument("--out", default=str(HERE.parent / "results" / "gpu_imagefolder.json"))
    return p.parse_args(argv)


def peak_gib(torch, device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    import famr
    from famr import io
    from famr.api import resolve_device
    from famr.methods import METHODS, takes_retain

    device = resolve_device(args.device)
    speed = {"bf16": True, "channels_last": True}
    data = famr.load_dataset(
        "imagefolder",
        args.data_root,
        image_size=args.image_size,
        workers=args.workers,
        data_path=args.data_path,
    )
    splits = famr.ClassForget(args.forget_class).split(data.train, data.test, data.num_classes)
    torch.manual_seed(0)
    model = famr.create_model(args.arch, data.num_classes, mean=data.mean, std=data.std)
    cap = {"max_steps": args.max_steps} if args.max_steps else {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trained = famr.train(
        model,
        data.train,
        device=device,
        epochs=args.epochs,
        batch_size=128,
        lr=0.1,
        weight_decay=5e-4,
        schedule="onecycle",
        nesterov=True,
        augment="crop_flip",
        **speed,
        **cap,
    )
    steps = sum(1 for _ in range(args.epochs)) * -(-len(data.train) // 128)
    steps = min(steps, args.max_steps) if args.max_steps else steps
    rows = {
        "train": {
            "seconds": trained.seconds,
            "images_per_s": steps * 128 / trained.seconds,
            "peak_gib": peak_gib(torch, device),
            **famr.evaluate(
                trained.model,
                **splits.evaluation_sets(),
                device=device,
                metrics=["forget_acc", "retain_acc", "test_retain_acc", "test_forget_acc"],
            ),
        }
    }
    print(f"train: {rows['train']}", flush=True)
    # the file path's evaluation: decode (worker processes) and forward, batch by batch
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    outputs = famr.predict(trained.model, data.test, device=device)
    seconds = time.perf_counter() - start
    rows[f"predict ({args.data_path} path)"] = {
        "seconds": seconds,
        "images_per_s": len(outputs.labels) / seconds,
        "peak_gib": peak_gib(torch, device),
        "forget_acc": float("nan"),
        "retain_acc": float("nan"),
        "test_retain_acc": 100.0
        * float((outputs.logits.argmax(1) == outputs.labels).float().mean()),
    }
    # every image through the whole network (forward passes of the run, on any copy of it)
    seen = [0]
    trained.model.register_forward_pre_hook(
        lambda _, inputs: seen.__setitem__(0, seen[0] + inputs[0].shape[0])
    )
    for method in args.methods or retrain_free():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        entry = METHODS.get(method)
        needs_retain = takes_retain(entry)  # famr: the retain set selects its last_stage recipe
        seen[0] = 0
        # the certificate's own forward passes would count as the method's images
        no_certificate = (
            {"certificate": False}
            if "certificate" in entry.meta["config"].__dataclass_fields__
            else {}
        )
        result = famr.unlearn(
            trained.model,
            splits.forget,
            splits.retain if needs_retain else None,
            forget_classes=splits.forget_classes,
            method=method,
            device=device,
            **speed,
            **cap,
            **no_certificate,
        )
        images = seen[0]
        rows[method] = {
            "seconds": result.seconds,
            "images_per_s": images / result.seconds,
            "peak_gib": peak_gib(torch, device),
            **famr.evaluate(
                result.model,
                **splits.evaluation_sets(),
                device=device,
                metrics=["forget_acc", "retain_acc", "test_retain_acc", "test_forget_acc"],
            ),
        }
        print(f"{method}: {rows[method]}", flush=True)
    env = bench.environment()
    command = "python benchmarks/gpu_imagefolder.py " + " ".join(sys.argv[1:])
    payload = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "environment": env,
        "arch": args.arch,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "forget_class": args.forget_class,
        "rows": rows,
    }
    io.write_text_atomic(args.out, io.json_text(payload))
    lines = [
        "## ImageFolder on the GPU: FAMR and the retrain-free baselines",
        "",
        f"Command: `{command}`; {env.get('cuda') or 'CPU'}, torch {env['torch']}, {payload['date']}; "
        f"{args.arch} at {args.image_size} px on the Tiny-ImageNet subset ({args.data_path} data "
        f"path, {args.workers} decoding workers), {args.epochs} training epochs, forget class "
        f"{args.forget_class}. images/s = images through the whole network (every forward pass "
        "of the run, teacher passes included) per second of the run; head-only FAMR passes "
        "each image once, then trains the head on features. Peak memory = "
        "torch.cuda.max_memory_allocated.",
        "",
        "| run | seconds | images/s | peak GiB | forget acc | retain acc | test acc (retained) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        ips = f"{r['images_per_s']:.0f}" if r["images_per_s"] else "-"
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        acc = [
            f"{r[k]:.2f}" if r[k] == r[k] else "-"  # NaN: not measured for that row
            for k in ("forget_acc", "retain_acc", "test_retain_acc")
        ]
        lines.append(f"| {name} | {r['seconds']:.1f} | {ips} | {peak} | " + " | ".join(acc) + " |")
    out = Path(args.out)
    if out.resolve().parent == HERE.parent / "results":
        bench.update_benchmarks_md(out.stem, "\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
