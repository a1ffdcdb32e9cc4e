"""Speed facts behind the CIFAR-10 numbers: the data path alone vs a whole training step, and
one FAMR step (uniform loss + fused l2-anchor gradient) vs one plain SGD step on the same batch;
with ``--cache``, also one whole ``famr`` class-3 request (its last_stage recipe, 5,000-image
retain buffer) with the frozen prefix computed once (``cache_prefix``, the default) and without.

    python benchmarks/speed.py --data-root ../shared/data/cifar10 --cache ~/famr-bench-cache

Medians over repeated steps, measured side by side in one run; results go to
benchmarks/results/speed_cpu.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import famr
from famr import bench, io
from famr.config import OptimConfig
from famr.data.tensors import TensorBatches, crop_flip, to_float
from famr.loop import Streams, optimise
from famr.losses import anchor_penalty, cross_entropy, uniform_cross_entropy
from famr.parts import L2Anchor


def step_times(model, images, labels, objective_kind, cfg, anchor_lam=0.0, steps=30):
    """Median seconds per optimiser step (after 5 warm-up steps)."""
    stamps = []
    batches = TensorBatches(images, labels, cfg.batch_size, True, torch.Generator().manual_seed(0))
    params = [p for p in model.parameters()]
    start = [p.detach().clone() for p in params]

    def objective(batch):
        x, y = batch["train"]
        logits = model(x)
        if objective_kind == "sgd":
            loss = cross_entropy(logits, y)
        elif objective_kind == "famr":
            loss = uniform_cross_entropy(logits)
        else:  # the anchor as a plain autograd term over every parameter
            loss = uniform_cross_entropy(logits) + anchor_penalty(params, start, 0.1)
        return {"loss": loss}

    optimise(
        model,
        objective,
        Streams("train", batches),
        OptimConfig(**{**cfg.__dict__, "max_steps": steps + 5}),
        device=torch.device("cpu"),
        parts=[L2Anchor(anchor_lam)] if anchor_lam else [],
        progress=lambda s, t: stamps.append(time.perf_counter()),
    )
    return statistics.median(b - a for a, b in zip(stamps[5:-1], stamps[6:], strict=True))


def whole_runs(args) -> dict:
    """One famr class-3 request on the class-wise benchmark's original, prefix cached and not,
    alternated (on, off, on, off, ...) so that drift on a shared machine falls on both."""
    device = torch.device("cpu")
    model, data = bench.cifar10_original(Path(args.cache).expanduser(), args.data_root, device)
    splits = famr.ClassForget(3).split(data.train, data.test, data.num_classes)
    seconds = {True: [], False: []}
    same = []  # per repeat: the two runs' state (parameters and buffers) equal to the bit
    for _ in range(args.repeats):
        state = {}
        for cached in (True, False):
            result = famr.unlearn(
                model,
                splits.forget,
                splits.retain,
                method="famr",
                forget_classes=[3],
                device=device,
                cache_prefix=cached,
            )
            assert result.history[-1]["prefix_cached"] is cached
            seconds[cached].append(result.seconds)
            state[cached] = result.model.state_dict()
            print({"cache_prefix": cached, "seconds": result.seconds}, flush=True)
        same.append(
            state[True].keys() == state[False].keys()
            and all(torch.equal(state[True][k], state[False][k]) for k in state[True])
        )
    on, off = statistics.median(seconds[True]), statistics.median(seconds[False])
    return {
        "request": "class 3, famr (last_stage recipe), retain set given",
        "seconds_cached": seconds[True],
        "seconds_full": seconds[False],
        "median_cached_s": on,
        "median_full_s": off,
        "full_over_cached": off / on,
        "same_state_each_repeat": same,
        "same_weights": all(same),
    }


def whole_run_lines(w: dict) -> list[str]:
    return [
        "",
        f"Whole `famr` runs ({w['request']}; the class-wise benchmark's cached original), "
        f"alternated, {len(w['seconds_cached'])} each: frozen prefix computed once "
        f"(`cache_prefix`, the default) **{w['median_cached_s']:.1f} s**, every pass through "
        f"the whole network {w['median_full_s']:.1f} s: **{w['full_over_cached']:.2f}x**; "
        "in every repeat the two runs' parameters and buffers "
        + ("are equal to the bit." if w["same_weights"] else "DIFFER in some repeat."),
    ]


def main() -> int:
    bench.reexec_with_tcmalloc()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument(
        "--data-root", default=str(Path(__file__).resolve().parents[2] / "shared/data/cifar10")
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument(
        "--cache",
        help="the benchmarks' model cache (the class-wise benchmark's original is read from it, "
        "or trained there, ~20 min): adds the whole-run comparison",
    )
    p.add_argument("--repeats", type=int, default=2, help="whole runs per setting, alternated")
    args = p.parse_args()
    data = famr.load_dataset("cifar10", args.data_root)
    x, y = data.train.tensors
    n = args.batch_size * 40
    x, y = x[:n], y[:n]
    g = torch.Generator().manual_seed(0)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for i in range(0, n, args.batch_size):
            to_float(crop_flip(x[i : i + args.batch_size], g))
        times.append(time.perf_counter() - t)
    data_path = n / statistics.median(times)
    results = {"data_path_images_per_s": data_path, "batch_size": args.batch_size, "rows": []}
    for label, flags in (
        ("fp32", {}),
        ("fp32 + channels_last", {"channels_last": True}),
        ("bf16 + channels_last", {"bf16": True, "channels_last": True}),
    ):
        cfg = OptimConfig(batch_size=args.batch_size, lr=1e-3, epochs=1, **flags)
        torch.manual_seed(0)
        model = famr.create_model("resnet20", 10, mean=data.mean, std=data.std)
        sgd = step_times(model, x, y, "sgd", cfg)
        famr_fused = step_times(model, x, y, "famr", cfg, anchor_lam=0.1)
        famr_graph = step_times(model, x, y, "famr_graph", cfg)
        row = {
            "precision": label,
            "sgd_step_s": sgd,
            "famr_step_s": famr_fused,
            "famr_autograd_anchor_step_s": famr_graph,
            "train_images_per_s": args.batch_size / sgd,
            "famr_over_sgd": famr_fused / sgd,
            "autograd_anchor_over_sgd": famr_graph / sgd,
        }
        results["rows"].append(row)
        print(row, flush=True)
    if args.cache:
        results["whole_runs"] = whole_runs(args)
    env = bench.environment()
    payload = {
        "command": "python benchmarks/speed.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "environment": env,
        **results,
    }
    # one block per kind of CPU kernels: AVX-512 with native bf16 and AVX2 differ several-fold
    kind = env["cpu_capability"].lower()
    out = Path(__file__).resolve().parent / "results" / f"speed_cpu_{kind}.json"
    io.write_text_atomic(out, io.json_text(payload))
    lines = [
        f"## Speed: data path, training step, FAMR step (ResNet-20, CPU, {env['cpu_capability']} kernels)",
        "",
        f"Command: `{payload['command']}`; {env['cpu_count']}-core {env['machine']} CPU, "
        f"kernels {env['cpu_capability']} (native bf16: {'yes' if env['native_bf16'] else 'no'}), "
        f"torch {env['torch']}, {payload['date']}, LD_PRELOAD={env['ld_preload'] or 'none'}. "
        f"Medians over 30 steps of batch {args.batch_size}."
        + (
            f" Kernels capped with `ATEN_CPU_CAPABILITY={cap}` (oneDNN and MKL likewise) on a CPU "
            "that has AVX-512, an approximation of an "
            "AVX2-only CPU."
            if (cap := os.environ.get("ATEN_CPU_CAPABILITY"))
            else ""
        ),
        "",
        f"Data path alone (batched random crop + flip + uint8->float): **{data_path:,.0f} images/s**.",
        "",
        "| precision | train step (images/s) | plain SGD step (ms) | FAMR step, fused anchor (ms) | ratio | FAMR step, autograd anchor (ms) | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['precision']} | {r['train_images_per_s']:,.0f} | {1e3 * r['sgd_step_s']:.1f} | "
            f"{1e3 * r['famr_step_s']:.1f} | {r['famr_over_sgd']:.3f} | {1e3 * r['famr_autograd_anchor_step_s']:.1f} | "
            f"{r['autograd_anchor_over_sgd']:.3f} |"
        )
    if "whole_runs" in results:
        lines += whole_run_lines(results["whole_runs"])
    bench.update_benchmarks_md(f"speed_cpu_{kind}", "\n".join(lines))
    print(f"wrote {out} and BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
