"""FAMR images/s with 1 vs N processes under torchrun (gloo on CPU, NCCL on GPUs).

The parent launches ``torchrun --standalone --nproc_per_node=N`` on this same script (worker
mode) for each N, several times, and reports the median images/s of the whole-network FAMR
run (the literal form: every parameter moves, so every step is a full forward/backward) on the
CIFAR-10 class-3 forget set with ResNet-20. On a CPU the processes share the machine's cores:
1 process uses every core as threads, N processes split them (``cores / N`` threads each).

    python benchmarks/ddp_scaling.py --data-root ../shared/data/cifar10
    python benchmarks/ddp_scaling.py --processes 1 2 4 --device cuda     # on a multi-GPU host

Results: benchmarks/results/ddp_scaling_<device>.json and BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from famr import bench

HERE = Path(__file__).resolve()


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-root", default=str(HERE.parents[2] / "shared/data/cifar10"))
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=40, help="optimiser steps per run (batch 256)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: rank 0 writes JSON here
    return p.parse_args(argv)


def worker(args) -> None:
    import torch
    import torch.distributed as dist

    import famr
    from famr import distributed

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if args.device.startswith("cuda"):
            local = int(os.environ["LOCAL_RANK"])
            torch.cuda.set_device(local)
            args.device = f"cuda:{local}"
            dist.init_process_group("nccl", device_id=torch.device(args.device))
        else:
            dist.init_process_group("gloo")
    data = famr.load_dataset("cifar10", args.data_root)
    splits = famr.ClassForget(3).split(data.train, data.test, 10)
    torch.manual_seed(0)
    model = famr.create_model("resnet20", 10, mean=data.mean, std=data.std)
    config = dict(
        method="famr_literal",
        epochs=100,
        max_steps=args.steps,
        batch_size=256,
        bf16=True,
        channels_last=True,
        certificate=False,
    )
    famr.unlearn(model, splits.forget, device=args.device, **{**config, "max_steps": 3})  # warm-up
    result = famr.unlearn(model, splits.forget, device=args.device, **config)
    if distributed.is_main():
        images = args.steps * 256
        record = {
            "processes": distributed.world()[1],
            "threads_per_process": torch.get_num_threads(),
            "seconds": result.seconds,
            "images_per_s": images / result.seconds,
        }
        Path(args.worker).write_text(json.dumps(record))
    if dist.is_initialized():
        dist.destroy_process_group()


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    cores = os.cpu_count() or 1
    runs = []
    for repeat in range(args.repeats):
        for n in args.processes:  # interleaved, so drift hits every setting alike
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "result.json"
                env = dict(os.environ)
                if args.device == "cpu":
                    env["OMP_NUM_THREADS"] = str(max(1, cores // n))
                argv = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
                argv += [f"--nproc_per_node={n}", str(HERE), "--worker", str(out)]
                argv += ["--data-root", args.data_root, "--steps", str(args.steps)]
                argv += ["--device", args.device]
                done = subprocess.run(argv, env=env, capture_output=True, text=True)
                if done.returncode != 0:
                    raise SystemExit(f"torchrun with {n} processes failed:\n{done.stderr[-3000:]}")
                record = json.loads(out.read_text())
            record["repeat"] = repeat
            runs.append(record)
            print(f"{n} process(es): {record['images_per_s']:.0f} images/s", flush=True)
    summary = {}
    for n in args.processes:
        values = [r["images_per_s"] for r in runs if r["processes"] == n]
        summary[n] = {"median_images_per_s": statistics.median(values), "runs": values}
    base = summary[args.processes[0]]["median_images_per_s"]
    for n in args.processes:
        summary[n]["speedup"] = summary[n]["median_images_per_s"] / base
    command = "python benchmarks/ddp_scaling.py " + " ".join(sys.argv[1:])
    env = bench.environment()
    payload = {
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "environment": env,
        "steps": args.steps,
        "runs": runs,
        "summary": summary,
    }
    kind = "cpu" if args.device == "cpu" else "gpu"
    out = HERE.parent / "results" / f"ddp_scaling_{kind}.json"
    from famr import io

    io.write_text_atomic(out, io.json_text(payload))
    lines = [
        f"## Data-parallel FAMR ({kind}): images/s with 1 vs N processes under torchrun",
        "",
        f"Command: `{command}`; {env['cpu_count']}-core {env['machine']} CPU, torch {env['torch']}, "
        f"{payload['date']}. Whole-network FAMR (`famr_literal`, ResNet-20, bf16 + channels_last, "
        f"batch 256, {args.steps} steps) on the CIFAR-10 class-3 forget set; median of "
        f"{args.repeats} interleaved runs. On the CPU, N processes share the {cores} cores "
        f"({cores} // N threads each), so this measures the cost of the gloo gradient all-reduce "
        "at a fixed core budget, not added hardware.",
        "",
        "| processes | images/s (median) | speed-up vs 1 |",
        "|---:|---:|---:|",
    ]
    for n in args.processes:
        s = summary[n]
        lines.append(f"| {n} | {s['median_images_per_s']:.0f} | {s['speedup']:.2f}x |")
    bench.update_benchmarks_md(f"ddp_scaling_{kind}", "\n".join(lines))
    print(f"wrote {out} and BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
