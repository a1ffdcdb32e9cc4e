"""famr's last_stage recipe with the original's predictions cached before the run
(``cache_reference=True``, the default) against computing them on every batch (``False``).

On the CIFAR-10 class-wise request (ResNet-20, the cached original, the class-wise benchmark's
speed flags): the wall time of each run, interleaved (on, off, on, off, ...), and the retained
test accuracy of each model, so that the saving is read beside proof that the two paths train
the same model.

    python benchmarks/reference_cache.py --data-root ../shared/data/cifar10 --repeats 2

Results: benchmarks/results/reference_cache_cpu.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

import famr
from famr import bench, io
from famr.api import resolve_device
from famr.bench import log

HERE = Path(__file__).resolve()


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-root", default=str(HERE.parents[2] / "shared/data/cifar10"))
    p.add_argument("--cache", default=str(HERE.parent / "cache"))
    p.add_argument("--forget-class", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="runs of each path (interleaved)")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats {args.repeats}: give an integer >= 1")
    return args


def main(argv=None) -> int:
    bench.reexec_with_tcmalloc(argv)
    args = parse_args(argv)
    device = resolve_device(args.device)
    model, data = bench.cifar10_original(Path(args.cache), args.data_root, device)
    splits = famr.ClassForget(args.forget_class).split(data.train, data.test, data.num_classes)
    runs: dict[str, list[dict]] = {"cached": [], "per batch": []}
    for i in range(args.repeats):
        for label, flag in (("cached", True), ("per batch", False)):
            config = bench.with_speed("famr", {"method": "famr", "cache_reference": flag})
            start = time.perf_counter()
            result = famr.unlearn(model, splits, device=device, **config)
            seconds = time.perf_counter() - start
            scores = famr.evaluate(
                result.model,
                test_retain=splits.test_retain,
                test_forget=splits.test_forget,
                metrics=["test_retain_acc", "test_forget_acc"],
                device=device,
            )
            runs[label].append({"seconds": seconds, **scores})
            log(
                f"{label} #{i + 1}: {seconds:.1f} s, retained test acc {scores['test_retain_acc']:.2f}"
            )
    payload = {
        "benchmark": "reference_cache",
        "command": "python benchmarks/reference_cache.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "environment": bench.environment(),
        "threads": torch.get_num_threads(),
        "forget_class": args.forget_class,
        "runs": runs,
    }
    out = HERE.parent / "results" / "reference_cache_cpu.json"
    io.write_text_atomic(out, io.json_text(payload))
    bench.update_benchmarks_md("reference_cache_cpu", markdown(payload))
    log(f"wrote {out} and BENCHMARKS.md")
    return 0


def markdown(payload: dict) -> str:
    env = payload["environment"]
    runs = payload["runs"]
    median = {label: statistics.median(r["seconds"] for r in rs) for label, rs in runs.items()}
    lines = [
        "## famr's last_stage recipe: the original's predictions cached or per batch (CPU)",
        "",
        f"Command: `{payload['command']}`; {env['cpu_count']}-core {env['machine']} CPU, kernels "
        f"{env['cpu_capability']}, torch {env['torch']} ({payload['threads']} threads), "
        f"{payload['date']}. CIFAR-10 class {payload['forget_class']}, ResNet-20 (the class-wise "
        "benchmark's cached original), `famr` given the retain set (its last_stage recipe) with "
        "the class-wise benchmark's speed flags (bf16, channels-last); the runs interleaved. "
        "Seconds are the whole `famr.unlearn` call.",
        "",
        "| references | runs | seconds (median) | seconds (each) | retained test acc | "
        "forgotten test acc |",
        "|---|---:|---:|---|---|---|",
    ]
    for label, rs in runs.items():
        lines.append(
            f"| {label} | {len(rs)} | {median[label]:.1f} | "
            + ", ".join(f"{r['seconds']:.1f}" for r in rs)
            + " | "
            + ", ".join(f"{r['test_retain_acc']:.2f}" for r in rs)
            + " | "
            + ", ".join(f"{r['test_forget_acc']:.2f}" for r in rs)
            + " |"
        )
    lines += [
        "",
        f"Per batch / cached: **{median['per batch'] / median['cached']:.2f}x** (medians).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
